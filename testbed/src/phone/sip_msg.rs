//! SIP messages as the simulated phone sees them: rsip does the framing and tokenising, and the
//! phone works on a flat list of `(name, value)` headers, which is all a user agent this simple
//! needs and keeps rsip's typed API (and its gaps) out of the call flows.

use std::net::SocketAddr;

use rsip::{Header, Headers};

/// A datagram that is not a SIP message rsip can read (compact headers, folded lines, garbage).
#[derive(Debug, thiserror::Error)]
#[error("unparsable SIP message: {0}")]
pub struct ParseError(pub String);

/// Start line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16 },
}

/// A received message.
#[derive(Debug, Clone)]
pub struct SipMsg {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Header name and value of an rsip header, whatever variant rsip chose for it.
fn split_header(h: &Header) -> (String, String) {
    let s = h.to_string();
    match s.split_once(':') {
        Some((n, v)) => (n.trim().to_string(), v.trim().to_string()),
        None => (s, String::new()),
    }
}

impl SipMsg {
    /// Parses one datagram. Never panics; rsip's error is reported as text.
    pub fn parse(bytes: &[u8]) -> Result<SipMsg, ParseError> {
        let msg = rsip::SipMessage::try_from(bytes).map_err(|e| ParseError(e.to_string()))?;
        Ok(match msg {
            rsip::SipMessage::Request(r) => SipMsg {
                start: StartLine::Request {
                    method: r.method.to_string(),
                    uri: r.uri.to_string(),
                },
                headers: r.headers.iter().map(split_header).collect(),
                body: r.body,
            },
            rsip::SipMessage::Response(r) => SipMsg {
                start: StartLine::Response {
                    code: r.status_code.code(),
                },
                headers: r.headers.iter().map(split_header).collect(),
                body: r.body,
            },
        })
    }

    /// First value of header `name` (case-insensitive; the compact forms the phone may receive
    /// from other servers are recognised too).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next()
    }

    /// Every value of header `name`, in order.
    pub fn headers_named(&self, name: &str) -> impl Iterator<Item = &str> + '_ {
        let compact = compact_form(name);
        let name = name.to_string();
        self.headers
            .iter()
            .filter(move |(n, _)| {
                n.eq_ignore_ascii_case(&name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
            })
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// `branch` parameter of the top Via: the transaction a response belongs to.
    pub fn top_branch(&self) -> Option<String> {
        self.header("Via").and_then(|v| param(v, "branch"))
    }

    /// Sequence number and method of CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?.to_string();
        Some((n, m))
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<String> {
        self.header("To").and_then(|v| param(v, "tag"))
    }
}

fn compact_form(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-type" => "c",
        "content-length" => "l",
        "event" => "o",
        _ => return None,
    })
}

/// Value of `;name=value` in a header value (outside any `<…>`), if present.
pub fn param(header_value: &str, name: &str) -> Option<String> {
    let after_uri = match header_value.rfind('>') {
        Some(i) => &header_value[i + 1..],
        None => header_value,
    };
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The URI inside `<…>` of a name-addr, or the whole value up to `;` for an addr-spec.
pub fn uri_of(header_value: &str) -> &str {
    if let (Some(a), Some(b)) = (header_value.find('<'), header_value.find('>')) {
        if a < b {
            return &header_value[a + 1..b];
        }
    }
    header_value
        .split(';')
        .next()
        .unwrap_or(header_value)
        .trim()
}

/// A request or response to send, built as rsip values and serialised by rsip.
pub struct Outgoing {
    headers: Headers,
    body: Vec<u8>,
}

impl Outgoing {
    pub fn new() -> Outgoing {
        Outgoing {
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Outgoing {
        self.headers
            .push(Header::Other(name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Outgoing {
        self = self.header("Content-Type", content_type);
        self.body = body;
        self
    }

    fn finish_headers(mut self) -> (Headers, Vec<u8>) {
        self.headers.push(Header::Other(
            "Content-Length".into(),
            self.body.len().to_string(),
        ));
        (self.headers, self.body)
    }

    /// Serialises a request. `uri` must be a SIP URI rsip can read.
    pub fn request(self, method: &str, uri: &str) -> Result<Vec<u8>, ParseError> {
        let method: rsip::Method = method
            .parse()
            .map_err(|e: rsip::Error| ParseError(e.to_string()))?;
        let uri = rsip::Uri::try_from(uri).map_err(|e| ParseError(e.to_string()))?;
        let (headers, body) = self.finish_headers();
        let req = rsip::Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body,
        };
        Ok(req.into())
    }

    /// Serialises a response with status `code`.
    pub fn response(self, code: u16) -> Vec<u8> {
        let (headers, body) = self.finish_headers();
        let resp = rsip::Response {
            status_code: rsip::StatusCode::from(code),
            version: rsip::Version::V2,
            headers,
            body,
        };
        resp.into()
    }
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing::new()
    }
}

/// A response to `req` that copies Via, From, To (adding `to_tag` when To has none), Call-ID
/// and CSeq, as RFC 3261 §8.2.6.2 requires.
pub fn response_to(req: &SipMsg, code: u16, to_tag: &str) -> Vec<u8> {
    let mut out = Outgoing::new();
    for v in req.headers_named("Via") {
        out = out.header("Via", v);
    }
    if let Some(f) = req.header("From") {
        out = out.header("From", f);
    }
    if let Some(t) = req.header("To") {
        let t = if param(t, "tag").is_some() {
            t.to_string()
        } else {
            format!("{t};tag={to_tag}")
        };
        out = out.header("To", t);
    }
    if let Some(c) = req.call_id() {
        out = out.header("Call-ID", c);
    }
    if let Some(c) = req.header("CSeq") {
        out = out.header("CSeq", c);
    }
    out.response(code)
}

/// Random token for branches (with the RFC 3261 magic cookie), tags and Call-IDs.
pub fn token() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

pub fn new_branch() -> String {
    format!("z9hG4bK{}", token())
}

/// `host:port` as it appears in a SIP URI (IPv6 bracketed).
pub fn hostport(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}
