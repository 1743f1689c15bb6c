//! Parsing: rsip types built from a [`RawMessage`]. rsip is used for its message model and
//! printer; its own top-level tokenizer is bypassed because normalisation has already split the
//! message, which saves a second scan and lets us accept forms its tokenizer refuses.
//!
//! Header values stay untyped here (rsip's design); typed access that rsip gets wrong (digest
//! parameters such as `algorithm=SHA-256`, `nc`, `cnonce`) lives in [`crate::headers`] and
//! [`crate::auth`].

use std::convert::TryFrom;

use rsip::headers::{self as h, UntypedHeader};
use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode, Uri, Version};

use super::normalise::{normalise, RawMessage, StartLine};
use super::WireError;

/// Parses one datagram: size limit (513), normalisation, Content-Length agreement (400).
///
/// RFC 3261 §18.3 lets a receiver discard bytes past Content-Length; we only do that for a
/// trailing run of CR/LF (padding some phones add) and otherwise refuse the datagram, because a
/// disagreeing length usually means a truncated or spliced message.
pub fn parse_datagram(buf: &[u8], limit: usize) -> Result<SipMessage, WireError> {
    if buf.len() > limit {
        return Err(WireError::TooLarge {
            size: buf.len(),
            limit,
        });
    }
    let raw = normalise(buf)?;
    check_datagram_length(&raw)?;
    parse_raw(&raw)
}

/// Checks a datagram's Content-Length against its body and returns the body length to use.
pub fn check_datagram_length(raw: &RawMessage<'_>) -> Result<usize, WireError> {
    let actual = raw.body.len();
    match raw.content_length()? {
        None => Ok(actual),
        Some(declared) if declared == actual => Ok(actual),
        Some(declared)
            if declared < actual
                && raw.body[declared..]
                    .iter()
                    .all(|b| *b == b'\r' || *b == b'\n') =>
        {
            Ok(declared)
        }
        Some(declared) => Err(WireError::ContentLengthMismatch { declared, actual }),
    }
}

/// Builds the rsip message. The body is cut at Content-Length when one is declared (stream
/// framing has already guaranteed there are enough bytes).
pub fn parse_raw(raw: &RawMessage<'_>) -> Result<SipMessage, WireError> {
    let body_len = match raw.content_length()? {
        Some(n) if n <= raw.body.len() => n,
        Some(n) => {
            return Err(WireError::ContentLengthMismatch {
                declared: n,
                actual: raw.body.len(),
            })
        }
        None => raw.body.len(),
    };
    let body = raw.body[..body_len].to_vec();
    let headers = build_headers(raw);
    match raw.start {
        StartLine::Request { method, uri, .. } => {
            let method = parse_method(method)?;
            let uri = request_uri(uri)?;
            Ok(SipMessage::Request(Request {
                method,
                uri,
                version: Version::V2,
                headers,
                body,
            }))
        }
        StartLine::Response { code, reason, .. } => {
            let status = match StatusCode::from(code) {
                StatusCode::Other(c, _) => StatusCode::Other(c, reason.to_string()),
                known => known,
            };
            Ok(SipMessage::Response(Response {
                status_code: status,
                version: Version::V2,
                headers,
                body,
            }))
        }
    }
}

/// The Request-URI. The common `sip:host[:port]` (what phones put in a REGISTER) is built
/// here: rsip's tokenizer tries a user part first and, failing, formats an error message,
/// which was a visible share of a registration's CPU. Everything else is rsip's.
fn request_uri(s: &str) -> Result<Uri, WireError> {
    match plain_host_uri(s) {
        Some(uri) => Ok(uri),
        None => Uri::try_from(s).map_err(|_| WireError::BadUri),
    }
}

/// `sip:` or `sips:`, a host of letters, digits, dots and dashes, an optional port; nothing
/// else. The result is what rsip builds from the same text (tested below).
fn plain_host_uri(s: &str) -> Option<Uri> {
    use rsip::common::uri::{HostWithPort, Scheme};
    let (scheme, rest) = if let Some(r) = s.strip_prefix("sip:") {
        (Scheme::Sip, r)
    } else {
        (Scheme::Sips, s.strip_prefix("sips:")?)
    };
    let (host, port) = match rest.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
    {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some(Uri {
        scheme: Some(scheme),
        auth: None,
        host_with_port: HostWithPort {
            host: host.into(),
            port: port.map(Into::into),
        },
        params: Vec::new(),
        headers: Vec::new(),
    })
}

/// Method names are case-sensitive (RFC 3261 §7.1); an unknown one is a 501, not a 400.
pub fn parse_method(m: &str) -> Result<Method, WireError> {
    Ok(match m {
        "REGISTER" => Method::Register,
        "INVITE" => Method::Invite,
        "ACK" => Method::Ack,
        "BYE" => Method::Bye,
        "CANCEL" => Method::Cancel,
        "OPTIONS" => Method::Options,
        "NOTIFY" => Method::Notify,
        "SUBSCRIBE" => Method::Subscribe,
        "INFO" => Method::Info,
        "MESSAGE" => Method::Message,
        "PRACK" => Method::PRack,
        "PUBLISH" => Method::Publish,
        "REFER" => Method::Refer,
        "UPDATE" => Method::Update,
        other => return Err(WireError::UnknownMethod(other.to_string())),
    })
}

fn build_headers(raw: &RawMessage<'_>) -> Headers {
    let mut out = Vec::with_capacity(raw.headers.len());
    for hdr in &raw.headers {
        out.push(to_rsip_header(&hdr.name, hdr.value.as_ref()));
    }
    out.into()
}

/// Maps a canonical name to rsip's untyped header variant; anything rsip lacks is `Other`.
pub fn to_rsip_header(name: &str, value: &str) -> Header {
    let v = value.to_string();
    match name {
        "Via" => Header::Via(h::Via::new(v)),
        "From" => Header::From(h::From::new(v)),
        "To" => Header::To(h::To::new(v)),
        "Call-ID" => Header::CallId(h::CallId::new(v)),
        "CSeq" => Header::CSeq(h::CSeq::new(v)),
        "Contact" => Header::Contact(h::Contact::new(v)),
        "Content-Length" => Header::ContentLength(h::ContentLength::new(v)),
        "Content-Type" => Header::ContentType(h::ContentType::new(v)),
        "Max-Forwards" => Header::MaxForwards(h::MaxForwards::new(v)),
        "Expires" => Header::Expires(h::Expires::new(v)),
        "Min-Expires" => Header::MinExpires(h::MinExpires::new(v)),
        "Authorization" => Header::Authorization(h::Authorization::new(v)),
        "WWW-Authenticate" => Header::WwwAuthenticate(h::WwwAuthenticate::new(v)),
        "Proxy-Authorization" => Header::ProxyAuthorization(h::ProxyAuthorization::new(v)),
        "Proxy-Authenticate" => Header::ProxyAuthenticate(h::ProxyAuthenticate::new(v)),
        "User-Agent" => Header::UserAgent(h::UserAgent::new(v)),
        "Server" => Header::Server(h::Server::new(v)),
        "Allow" => Header::Allow(h::Allow::new(v)),
        "Accept" => Header::Accept(h::Accept::new(v)),
        "Supported" => Header::Supported(h::Supported::new(v)),
        "Require" => Header::Require(h::Require::new(v)),
        "Route" => Header::Route(h::Route::new(v)),
        "Record-Route" => Header::RecordRoute(h::RecordRoute::new(v)),
        "Event" => Header::Event(h::Event::new(v)),
        "Subscription-State" => Header::SubscriptionState(h::SubscriptionState::new(v)),
        "Date" => Header::Date(h::Date::new(v)),
        "Warning" => Header::Warning(h::Warning::new(v)),
        "Unsupported" => Header::Unsupported(h::Unsupported::new(v)),
        "Proxy-Require" => Header::ProxyRequire(h::ProxyRequire::new(v)),
        "Subject" => Header::Subject(h::Subject::new(v)),
        "Content-Encoding" => Header::ContentEncoding(h::ContentEncoding::new(v)),
        "Content-Disposition" => Header::ContentDisposition(h::ContentDisposition::new(v)),
        other => Header::Other(other.to_string(), v),
    }
}

/// Parses a message from text, for tests and fixtures: no size limit, length checked.
pub fn parse_bytes(buf: &[u8]) -> Result<SipMessage, WireError> {
    parse_datagram(buf, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::MessageExt;

    #[test]
    fn plain_host_uris_are_what_rsip_builds() {
        for s in [
            "sip:127.0.0.1:25091",
            "sip:127.0.0.1",
            "sips:pbx.example.com:5061",
            "sip:a-b.example",
            "sip:1.2.3",
            "sip:999.1.1.1:0",
            "sip:h:65535",
        ] {
            let fast = plain_host_uri(s).unwrap_or_else(|| panic!("{s} not on the fast path"));
            assert_eq!(Some(&fast), Uri::try_from(s).ok().as_ref(), "{s}");
            assert_eq!(fast.to_string(), s);
        }
        for s in [
            "sip:1000@127.0.0.1",
            "sip:h;transport=tcp",
            "sip:[::1]:5060",
            "sip:h:65536",
            "sip:h:",
            "sip:",
            "SIP:h",
            "tel:+123",
            "sip:h?x=y",
        ] {
            assert!(plain_host_uri(s).is_none(), "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_host_uris_match_rsip(host in "[a-zA-Z0-9.-]{1,24}", port in proptest::option::of(0u32..70000), sips: bool) {
            let s = format!("{}:{host}{}", if sips { "sips" } else { "sip" }, port.map(|p| format!(":{p}")).unwrap_or_default());
            if let Some(fast) = plain_host_uri(&s) {
                proptest::prop_assert_eq!(Some(fast), Uri::try_from(s.as_str()).ok());
            }
        }
    }

    #[test]
    fn content_length_disagreeing_is_400() {
        let e =
            parse_bytes(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert_eq!(e.status().0, 400);
        let e =
            parse_bytes(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\n\r\nabc").unwrap_err();
        assert_eq!(e.status().0, 400);
        // CRLF padding past the body is tolerated.
        let m = parse_bytes(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n\r\n").unwrap();
        assert!(m.body().is_empty());
    }

    #[test]
    fn oversize_is_513() {
        let e = parse_datagram(&[b'x'; 100], 50).unwrap_err();
        assert_eq!(e.status().0, 513);
    }

    #[test]
    fn unknown_method_is_501() {
        let e = parse_bytes(b"FOO sip:a@b SIP/2.0\r\n\r\n").unwrap_err();
        assert_eq!(e.status().0, 501);
    }

    #[test]
    fn sha256_authorization_survives() {
        let m = parse_bytes(b"REGISTER sip:b SIP/2.0\r\nAuthorization: Digest username=\"a\", realm=\"b\", nonce=\"n\", uri=\"sip:b\", response=\"r\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"c\"\r\nl: 0\r\n\r\n").unwrap();
        assert!(m.header_value("Authorization").unwrap().contains("SHA-256"));
    }

    #[test]
    fn request_round_trip_through_rsip_printer() {
        let text = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\r\nFrom: <sip:1000@example.com>;tag=a\r\nTo: <sip:1000@example.com>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContact: <sip:1000@10.0.0.1>\r\nX-Custom: yes\r\nContent-Length: 0\r\n\r\n";
        let m = parse_bytes(text.as_bytes()).unwrap();
        assert_eq!(m.to_string(), text);
    }
}
