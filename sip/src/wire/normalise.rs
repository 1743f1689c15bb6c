//! Normalisation: split a message into start line, headers and body, accepting the forms real
//! phones send that rsip 0.4 rejects on its own — compact header names (`i f t v m l …`),
//! folded header lines, bare LF line ends, and whitespace before the colon (`Call-ID : x`).
//!
//! The result is a [`RawMessage`] that borrows from the input where it can. Everything above
//! (rsip construction, error replies for requests we cannot parse) works from it, so a message
//! is scanned once.

use std::borrow::Cow;

use super::WireError;

/// The start line, still as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request {
        method: &'a str,
        uri: &'a str,
        version: &'a str,
    },
    Response {
        version: &'a str,
        code: u16,
        reason: &'a str,
    },
}

/// One header line after unfolding, with its name in canonical long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// A message split into its parts, before any typed parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage<'a> {
    pub start: StartLine<'a>,
    pub headers: Vec<RawHeader<'a>>,
    pub body: &'a [u8],
}

impl<'a> RawMessage<'a> {
    /// First value of a header (name compared case-insensitively, canonical long form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_ref())
    }

    /// All values of a header, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_ref())
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The declared Content-Length; several disagreeing values are an error.
    pub fn content_length(&self) -> Result<Option<usize>, WireError> {
        let mut found: Option<usize> = None;
        for v in self.headers_named("Content-Length") {
            let n: usize = v.trim().parse().map_err(|_| WireError::BadHeader {
                name: "Content-Length",
                reason: "not a number",
            })?;
            if found.is_some_and(|f| f != n) {
                return Err(WireError::BadHeader {
                    name: "Content-Length",
                    reason: "conflicting values",
                });
            }
            found = Some(n);
        }
        Ok(found)
    }
}

/// RFC 3261 §7.3.3 and later RFCs: single-letter compact forms.
pub fn expand_compact(c: u8) -> Option<&'static str> {
    Some(match c.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

const KNOWN: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Canonical spelling of a header name: compact forms expanded, known names in their RFC case.
/// This runs for every header line: the name is lower-cased on the stack and looked up in a
/// map built once (a scan of [`KNOWN`] was a visible share of a registration's CPU).
pub fn canonical_name(name: &str) -> Cow<'_, str> {
    if name.len() == 1 {
        if let Some(full) = expand_compact(name.as_bytes()[0]) {
            return Cow::Borrowed(full);
        }
    }
    static BY_LOWER: std::sync::LazyLock<crate::fastmap::FastMap<Vec<u8>, &'static str>> =
        std::sync::LazyLock::new(|| {
            let mut m = crate::fastmap::with_capacity(KNOWN.len());
            for k in KNOWN {
                m.insert(k.to_ascii_lowercase().into_bytes(), *k);
            }
            m
        });
    let mut buf = [0u8; 32];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return Cow::Borrowed(name); // longer than any known name
    };
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    match BY_LOWER.get(&*lower) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Borrowed(name),
    }
}

/// RFC 3261 §25.1 `token` characters, as a table (checked for every byte of every name).
static TOKEN_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

fn is_token_char(c: u8) -> bool {
    TOKEN_CHAR[c as usize]
}

/// Splits `input` into lines ending in LF (CR before LF dropped), returning each line and the
/// offset just past its terminator.
fn next_line(input: &[u8], from: usize) -> Option<(&[u8], usize)> {
    if from >= input.len() {
        return None;
    }
    let rest = &input[from..];
    match memchr::memchr(b'\n', rest) {
        Some(i) => {
            let line = &rest[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Some((line, from + i + 1))
        }
        // A header section without its terminating empty line.
        None => None,
    }
}

/// Best effort for a message [`normalise`] refused: keeps the start line and every header
/// line that reads, skipping the rest, so that a malformed request can still be answered 400
/// (it needs Via, From, To, Call-ID and CSeq). Never used to process a request.
pub fn salvage(input: &[u8]) -> Option<RawMessage<'_>> {
    let mut pos = input.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let end = input[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(input.len(), |i| pos + i);
    let line = &input[pos..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = parse_start_line(std::str::from_utf8(line).ok()?).ok()?;
    pos = (end + 1).min(input.len());
    let mut headers = Vec::new();
    while pos < input.len() {
        let end = input[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(input.len(), |i| pos + i);
        let line = &input[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = end + 1;
        if line.is_empty() {
            break;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some(colon) = line.find(':') else {
            continue;
        };
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            continue;
        }
        headers.push(RawHeader {
            name: canonical_name(name),
            value: Cow::Borrowed(line[colon + 1..].trim_matches([' ', '\t'])),
        });
    }
    Some(RawMessage {
        start,
        headers,
        body: &input[pos.min(input.len())..],
    })
}

/// Splits and normalises a whole message (header section and body must both be in `input`).
pub fn normalise(input: &[u8]) -> Result<RawMessage<'_>, WireError> {
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let mut pos = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(WireError::Empty)?;

    let (start_bytes, next) = next_line(input, pos).ok_or(WireError::NoHeaderEnd)?;
    pos = next;
    let start_str = std::str::from_utf8(start_bytes).map_err(|_| WireError::BadStartLine)?;
    let start = parse_start_line(start_str)?;

    let mut headers: Vec<RawHeader<'_>> = Vec::with_capacity(16);
    loop {
        let (line, next) = next_line(input, pos).ok_or(WireError::NoHeaderEnd)?;
        pos = next;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| WireError::BadEncoding)?;
        if line.starts_with(' ') || line.starts_with('\t') {
            // RFC 3261 §7.3.1: a continuation line; fold into the previous value with one SP.
            let last = headers.last_mut().ok_or(WireError::BadHeader {
                name: "?",
                reason: "continuation without header",
            })?;
            let cont = line.trim();
            if !cont.is_empty() {
                let v = last.value.to_mut();
                v.push(' ');
                v.push_str(cont);
            }
            continue;
        }
        let colon = memchr::memchr(b':', line.as_bytes()).ok_or(WireError::BadHeader {
            name: "?",
            reason: "missing colon",
        })?;
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(WireError::BadHeader {
                name: "?",
                reason: "invalid header name",
            });
        }
        let value = line[colon + 1..].trim_matches([' ', '\t']);
        headers.push(RawHeader {
            name: canonical_name(name),
            value: Cow::Borrowed(value),
        });
    }
    Ok(RawMessage {
        start,
        headers,
        body: &input[pos..],
    })
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, WireError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = rest.splitn(3, ' ');
        let version_num = parts.next().ok_or(WireError::BadStartLine)?;
        let code = parts.next().ok_or(WireError::BadStartLine)?;
        let reason = parts.next().unwrap_or("");
        if version_num != "2.0" {
            return Err(WireError::BadVersion);
        }
        let code: u16 = code.parse().map_err(|_| WireError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(WireError::BadStartLine);
        }
        return Ok(StartLine::Response {
            version: &line[..7],
            code,
            reason,
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WireError::BadStartLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_char) || uri.is_empty() {
        return Err(WireError::BadStartLine);
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(WireError::BadVersion);
    }
    Ok(StartLine::Request {
        method,
        uri,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_are_all_found_in_any_case() {
        for k in KNOWN {
            assert_eq!(canonical_name(&k.to_ascii_lowercase()), *k);
            assert_eq!(canonical_name(&k.to_ascii_uppercase()), *k);
        }
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        assert_eq!(canonical_name("Vias"), "Vias");
        let long = "X-".repeat(40);
        assert_eq!(canonical_name(&long), long);
        assert!(is_token_char(b'\'') && is_token_char(b'~') && !is_token_char(b':'));
        assert!(!is_token_char(b' ') && !is_token_char(0xff));
    }

    #[test]
    fn compact_names_are_expanded() {
        let m = normalise(b"REGISTER sip:a.example SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni: abc\r\nf: <sip:a@a.example>;tag=1\r\nt: <sip:a@a.example>\r\nm: <sip:a@1.2.3.4>\r\nl: 0\r\n\r\n").unwrap();
        let names: Vec<_> = m.headers.iter().map(|h| h.name.as_ref()).collect();
        assert_eq!(
            names,
            ["Via", "Call-ID", "From", "To", "Contact", "Content-Length"]
        );
        assert_eq!(m.header("call-id"), Some("abc"));
    }

    #[test]
    fn folded_lines_are_unfolded() {
        let m = normalise(b"OPTIONS sip:a SIP/2.0\r\nSubject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n\r\n").unwrap();
        assert_eq!(
            m.header("Subject"),
            Some("I know you're there, pick up the phone and talk to me!")
        );
    }

    #[test]
    fn bare_lf_is_accepted() {
        let m = normalise(b"OPTIONS sip:a SIP/2.0\nCall-ID: x\nContent-Length: 4\n\nbody").unwrap();
        assert_eq!(m.header("Call-ID"), Some("x"));
        assert_eq!(m.body, b"body");
    }

    #[test]
    fn whitespace_before_colon() {
        let m = normalise(b"OPTIONS sip:a SIP/2.0\r\nCall-ID : x\r\nCSeq\t: 1 OPTIONS\r\n\r\n")
            .unwrap();
        assert_eq!(m.header("Call-ID"), Some("x"));
        assert_eq!(m.header("CSeq"), Some("1 OPTIONS"));
    }

    #[test]
    fn leading_crlf_ignored_and_response_line() {
        let m = normalise(b"\r\n\r\nSIP/2.0 401 Unauthorized\r\n\r\n").unwrap();
        assert_eq!(
            m.start,
            StartLine::Response {
                version: "SIP/2.0",
                code: 401,
                reason: "Unauthorized"
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(normalise(b""), Err(WireError::Empty)));
        assert!(normalise(b"HELLO\r\n\r\n").is_err());
        assert!(normalise(b"OPTIONS sip:a SIP/2.0\r\nno colon here\r\n\r\n").is_err());
        assert!(normalise(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n").is_err());
        assert!(normalise(b"OPTIONS sip:a SIP/3.0\r\n\r\n").is_err());
        assert!(normalise(b"SIP/2.0 99 x\r\n\r\n").is_err());
        assert!(normalise(b"OPTIONS sip:a SIP/2.0\r\n folded-first\r\n\r\n").is_err());
        assert!(normalise(b"OPTIONS sip:a SIP/2.0\r\nBad Name: x\r\n\r\n").is_err());
    }

    #[test]
    fn salvage_skips_bad_lines() {
        let input =
            b"REGISTER sip:a SIP/2.0\r\nCall-ID: x\r\nthis line is broken\r\nCSeq: 1 REGISTER\r\n";
        assert!(normalise(input).is_err());
        let m = salvage(input).unwrap();
        assert_eq!(m.header("CSeq"), Some("1 REGISTER"));
        assert!(salvage(b"garbage").is_none());
        assert!(salvage(b"").is_none());
    }

    #[test]
    fn conflicting_content_length() {
        let m = normalise(b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(m.content_length().is_err());
    }
}
