//! Error replies built straight from a [`RawMessage`], for requests rsip could not be built
//! from. RFC 3261 §8.2.6.2: a response copies Via, From, To, Call-ID and CSeq; without them a
//! request cannot be answered and is dropped (and counted) instead.

use super::normalise::{RawMessage, StartLine};

/// Text of an error response to `raw`, or `None` when it cannot be answered (a response, an
/// ACK, or missing the headers a response must copy).
pub fn error_response(
    raw: &RawMessage<'_>,
    code: u16,
    reason: &str,
    server: &str,
) -> Option<Vec<u8>> {
    let StartLine::Request { method, .. } = raw.start else {
        return None;
    };
    if method == "ACK" {
        return None;
    }
    let from = raw.header("From")?;
    let to = raw.header("To")?;
    let call_id = raw.header("Call-ID")?;
    let cseq = raw.header("CSeq")?;
    let mut vias = raw.headers_named("Via").peekable();
    vias.peek()?;
    let mut out = String::with_capacity(512);
    out.push_str("SIP/2.0 ");
    out.push_str(&code.to_string());
    out.push(' ');
    out.extend(reason.chars().filter(|c| *c != '\r' && *c != '\n'));
    out.push_str("\r\n");
    for via in vias {
        out.push_str("Via: ");
        out.push_str(via);
        out.push_str("\r\n");
    }
    out.push_str("From: ");
    out.push_str(from);
    out.push_str("\r\nTo: ");
    out.push_str(to);
    if !crate::headers::has_param(to, "tag") {
        out.push_str(";tag=");
        out.push_str(&crate::headers::new_tag());
    }
    out.push_str("\r\nCall-ID: ");
    out.push_str(call_id);
    out.push_str("\r\nCSeq: ");
    out.push_str(cseq);
    if code == 405 || code == 501 {
        out.push_str("\r\nAllow: ");
        out.push_str(crate::headers::ALLOW);
    }
    if !server.is_empty() {
        out.push_str("\r\nServer: ");
        out.push_str(server);
    }
    out.push_str("\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::normalise;

    #[test]
    fn answers_request_with_mandatory_headers() {
        let raw = normalise(b"FOO sip:a SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nCSeq: 1 FOO\r\n\r\n").unwrap();
        let r =
            String::from_utf8(error_response(&raw, 501, "Not Implemented", "").unwrap()).unwrap();
        assert!(
            r.starts_with("SIP/2.0 501 Not Implemented\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n")
        );
        assert!(r.contains("To: <sip:a@b>;tag="));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn cannot_answer_without_headers_or_to_ack() {
        let raw = normalise(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n").unwrap();
        assert!(error_response(&raw, 400, "Bad Request", "").is_none());
        let raw = normalise(b"ACK sip:a SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nCSeq: 1 ACK\r\n\r\n").unwrap();
        assert!(error_response(&raw, 400, "Bad Request", "").is_none());
    }
}
