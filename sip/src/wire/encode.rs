//! Printing rsip messages to bytes, with Content-Length always equal to the body (any
//! Content-Length header in the model is ignored and recomputed).

use bytes::{BufMut, Bytes, BytesMut};
use rsip::{Header, Request, Response};

use crate::headers::name_value;

/// Appends one header line; a Content-Length in the model is skipped (it is recomputed).
fn put_line(out: &mut BytesMut, h: &Header) {
    if matches!(h, Header::ContentLength(_)) {
        return;
    }
    let (n, v) = name_value(h);
    out.put_slice(n.as_bytes());
    out.put_slice(b": ");
    out.put_slice(v.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_headers(out: &mut BytesMut, headers: &rsip::Headers, body: &[u8]) {
    for h in headers.iter() {
        put_line(out, h);
    }
    out.put_slice(b"Content-Length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

/// Bytes needed for the headers and body, so the buffer is allocated once at its size (a
/// response is kept for the transaction's lifetime: no slack in it).
fn encoded_len(headers: &rsip::Headers, body: &[u8]) -> usize {
    headers
        .iter()
        .map(|h| {
            let (n, v) = name_value(h);
            n.len() + v.len() + 4
        })
        .sum::<usize>()
        + body.len()
        + 40
}

/// Appends header lines (`Name: value\r\n`), in order.
pub fn put_header_lines(out: &mut BytesMut, headers: &[Header]) {
    for h in headers {
        put_line(out, h);
    }
}

/// [`encode_response`], and where in it the status line ends and where the first `lead`
/// header lines end (`lead` must not count a Content-Length header).
pub fn encode_response_marked(r: &Response, lead: usize) -> (Bytes, usize, usize) {
    let mut out = BytesMut::with_capacity(48 + encoded_len(&r.headers, &r.body));
    out.put_slice(b"SIP/2.0 ");
    out.put_slice(r.status_code.to_string().as_bytes());
    out.put_slice(b"\r\n");
    let status_end = out.len();
    let mut lead_end = out.len();
    for (i, h) in r.headers.iter().enumerate() {
        if i == lead {
            lead_end = out.len();
        }
        put_line(&mut out, h);
    }
    if lead >= r.headers.iter().count() {
        lead_end = out.len();
    }
    out.put_slice(b"Content-Length: ");
    out.put_slice(r.body.len().to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(&r.body);
    (out.freeze(), status_end, lead_end)
}

pub fn encode_response(r: &Response) -> Bytes {
    let mut out = BytesMut::with_capacity(48 + encoded_len(&r.headers, &r.body));
    out.put_slice(b"SIP/2.0 ");
    out.put_slice(r.status_code.to_string().as_bytes());
    out.put_slice(b"\r\n");
    put_headers(&mut out, &r.headers, &r.body);
    out.freeze()
}

pub fn encode_request(r: &Request) -> Bytes {
    let mut out = BytesMut::with_capacity(160 + encoded_len(&r.headers, &r.body));
    out.put_slice(r.method.to_string().as_bytes());
    out.put_slice(b" ");
    out.put_slice(r.uri.to_string().as_bytes());
    out.put_slice(b" SIP/2.0\r\n");
    put_headers(&mut out, &r.headers, &r.body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::parse_bytes;

    #[test]
    fn marked_response_is_the_plain_encoding() {
        let m =
            parse_bytes(b"SIP/2.0 200 OK\r\nVia: a\r\nCall-ID: x\r\nServer: s\r\n\r\n").unwrap();
        let rsip::SipMessage::Response(r) = m else {
            panic!()
        };
        for lead in 0..=4 {
            let (b, status_end, lead_end) = encode_response_marked(&r, lead);
            assert_eq!(b, encode_response(&r));
            assert_eq!(&b[..status_end], b"SIP/2.0 200 OK\r\n");
            let want = ["", "Via: a\r\n", "Via: a\r\nCall-ID: x\r\n"][lead.min(2)];
            if lead <= 2 {
                assert_eq!(&b[status_end..lead_end], want.as_bytes());
            } else {
                assert!(b[status_end..lead_end].ends_with(b"Server: s\r\n"));
            }
        }
    }

    #[test]
    fn content_length_recomputed() {
        let m =
            parse_bytes(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
        let rsip::SipMessage::Request(mut r) = m else {
            panic!()
        };
        r.body = b"hi".to_vec();
        assert_eq!(
            &encode_request(&r)[..],
            b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 2\r\n\r\nhi"
        );
    }
}
