//! Requests outside any dialog (RFC 3261 §8.1.1): NOTIFY check-sync, OPTIONS, and the INVITE
//! that starts a dialog. A fresh Call-ID and From tag, CSeq 1 unless told, Max-Forwards 70.
//! The top Via is the transaction layer's.

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request};

use crate::headers::{new_tag, NameAddr};

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("unusable Request-URI {uri}: {reason}")]
    RequestUri { uri: String, reason: String },
    #[error("unusable {header} address {value}")]
    Address { header: &'static str, value: String },
}

/// The Request-URI as rsip's type, from URI text (no angle brackets).
pub(crate) fn request_uri(uri: &str) -> Result<rsip::Uri, BuildError> {
    rsip::Uri::try_from(uri).map_err(|e| BuildError::RequestUri {
        uri: uri.to_owned(),
        reason: e.to_string(),
    })
}

/// An out-of-dialog request: `RequestBuilder::new(Method::Notify, contact).from(..).build()`.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: Method,
    uri: String,
    from: Option<String>,
    to: Option<String>,
    contact: Option<String>,
    call_id: Option<String>,
    cseq: u32,
    max_forwards: u32,
    routes: Vec<String>,
    headers: Vec<Header>,
    body: Option<(String, Vec<u8>)>,
}

impl RequestBuilder {
    /// `request_uri`: URI text such as a binding's contact (`sip:phone@10.0.0.5:5062`).
    /// The To defaults to `<request_uri>`, the From to `<sip:sipdm@localhost>`.
    pub fn new(method: Method, request_uri: &str) -> RequestBuilder {
        RequestBuilder {
            method,
            uri: request_uri.trim().to_owned(),
            from: None,
            to: None,
            contact: None,
            call_id: None,
            cseq: 1,
            max_forwards: 70,
            routes: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Our address (`sip:sipdm@10.0.0.1:5060` or `"Name" <sip:…>`); a new tag is added unless
    /// it has one.
    pub fn from(mut self, addr: &str) -> Self {
        self.from = Some(addr.to_owned());
        self
    }

    /// The callee's address (no tag: out of dialog).
    pub fn to(mut self, addr: &str) -> Self {
        self.to = Some(addr.to_owned());
        self
    }

    /// Our Contact URI.
    pub fn contact(mut self, uri: &str) -> Self {
        self.contact = Some(uri.to_owned());
        self
    }

    /// A Call-ID of the caller's choosing (default: a new one).
    pub fn call_id(mut self, call_id: &str) -> Self {
        self.call_id = Some(call_id.to_owned());
        self
    }

    pub fn cseq(mut self, n: u32) -> Self {
        self.cseq = n;
        self
    }

    pub fn max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = n;
        self
    }

    /// A pre-loaded route (§8.1.2; e.g. the switch a phone registered through), appended in
    /// order as a Route header. Name-addr, or a bare URI whose parameters (`;lr`) stay in it.
    pub fn route(mut self, route: &str) -> Self {
        self.routes.push(route.to_owned());
        self
    }

    /// Any further header (`Event`, `Subscription-State`, `User-Agent`, …), in order.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push(Header::Other(name.to_owned(), value.to_owned()));
        self
    }

    /// A body and its Content-Type (Content-Length is written by the encoder).
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Some((content_type.to_owned(), body));
        self
    }

    pub fn build(self) -> Result<Request, BuildError> {
        let uri = request_uri(&self.uri)?;
        let mut headers: Vec<Header> = Vec::with_capacity(10 + self.headers.len());
        for r in &self.routes {
            let text = if r.contains('<') {
                r.clone()
            } else {
                format!("<{}>", r.trim())
            };
            let na = NameAddr::parse(&text).map_err(|_| BuildError::Address {
                header: "Route",
                value: r.clone(),
            })?;
            headers.push(Header::Route(rsip::headers::Route::new(na.to_string())));
        }
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new(
            self.max_forwards.to_string(),
        )));
        let mut from = match &self.from {
            Some(f) => NameAddr::parse(f).map_err(|_| BuildError::Address {
                header: "From",
                value: f.clone(),
            })?,
            None => NameAddr::parse("<sip:sipdm@localhost>").expect("constant address"),
        };
        if from.tag().is_none() {
            from.params.set("tag", Some(new_tag()));
        }
        headers.push(Header::From(rsip::headers::From::new(from.to_string())));
        let to = match &self.to {
            Some(t) => NameAddr::parse(t).map_err(|_| BuildError::Address {
                header: "To",
                value: t.clone(),
            })?,
            None => {
                NameAddr::parse(&format!("<{}>", self.uri)).map_err(|_| BuildError::Address {
                    header: "To",
                    value: self.uri.clone(),
                })?
            }
        };
        headers.push(Header::To(rsip::headers::To::new(to.to_string())));
        let call_id = self
            .call_id
            .unwrap_or_else(|| format!("{}{}@sipdm", new_tag(), new_tag()));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{} {}",
            self.cseq, self.method
        ))));
        if let Some(c) = &self.contact {
            let c = NameAddr::parse(c).map_err(|_| BuildError::Address {
                header: "Contact",
                value: c.clone(),
            })?;
            headers.push(Header::Contact(rsip::headers::Contact::new(c.to_string())));
        }
        headers.extend(self.headers);
        let mut body = Vec::new();
        if let Some((ct, b)) = self.body {
            headers.push(Header::ContentType(rsip::headers::ContentType::new(ct)));
            body = b;
        }
        Ok(Request {
            method: self.method,
            uri,
            version: rsip::Version::V2,
            headers: headers.into(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::MessageExt;

    #[test]
    fn notify_check_sync() {
        let req = RequestBuilder::new(
            Method::Notify,
            "sip:gcti_provisioning@10.0.0.5:5062;transport=tcp",
        )
        .from("<sip:sipdm@10.0.0.1:5060>")
        .contact("sip:sipdm@10.0.0.1:5060")
        .header("Event", "check-sync;reboot=false")
        .header("Subscription-State", "terminated")
        .build()
        .unwrap();
        let text = String::from_utf8(crate::wire::encode_request(&req).to_vec()).unwrap();
        // rsip prints the transport parameter upper-case (compared case-insensitively).
        assert!(
            text.to_ascii_lowercase().starts_with(
                "notify sip:gcti_provisioning@10.0.0.5:5062;transport=tcp sip/2.0\r\n"
            ),
            "{text}"
        );
        assert_eq!(req.cseq(), Some((1, "NOTIFY")));
        assert_eq!(
            req.header_value("To"),
            Some("<sip:gcti_provisioning@10.0.0.5:5062;transport=tcp>")
        );
        let from = NameAddr::parse(req.header_value("From").unwrap()).unwrap();
        assert_eq!(from.uri, "sip:sipdm@10.0.0.1:5060");
        assert_eq!(from.tag().map(str::len), Some(12));
        assert!(req.call_id().unwrap().ends_with("@sipdm"));
        assert_eq!(req.header_value("Event"), Some("check-sync;reboot=false"));
        assert_eq!(req.header_value("Max-Forwards"), Some("70"));
        // Reparses as what it printed.
        let again = Request::try_from(text.as_str()).unwrap();
        assert_eq!(again.header_value("Call-ID"), req.header_value("Call-ID"));
    }

    #[test]
    fn fresh_call_id_and_tag_each_time() {
        let a = RequestBuilder::new(Method::Options, "sip:10.0.0.9")
            .build()
            .unwrap();
        let b = RequestBuilder::new(Method::Options, "sip:10.0.0.9")
            .build()
            .unwrap();
        assert_ne!(a.call_id(), b.call_id());
        assert_ne!(a.header_value("From"), b.header_value("From"));
    }

    #[test]
    fn routes_and_bad_addresses() {
        let req = RequestBuilder::new(Method::Options, "sip:10.0.0.9")
            .route("<sip:10.0.0.2;lr>")
            .route("sip:10.0.0.3;lr")
            .build()
            .unwrap();
        let routes: Vec<_> = req.header_values("Route").collect();
        assert_eq!(routes, ["<sip:10.0.0.2;lr>", "<sip:10.0.0.3;lr>"]);
        assert!(RequestBuilder::new(Method::Options, "not a uri")
            .build()
            .is_err());
        assert!(RequestBuilder::new(Method::Options, "sip:h")
            .from("junk")
            .build()
            .is_err());
    }
}
