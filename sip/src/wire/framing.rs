//! Framing: where one message ends. A UDP datagram is one message; on TCP messages are cut by
//! Content-Length (RFC 3261 §18.3), which is mandatory there.

use bytes::{Buf, Bytes, BytesMut};

use super::WireError;

/// The outcome of looking at a stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// Not enough bytes yet: read more. Not an error.
    Incomplete,
    /// A CRLF keep-alive (RFC 5626 §4.4.1: a double CRLF ping is answered with one CRLF pong).
    KeepAlive { pong: bool },
    /// One whole message (header section and exactly Content-Length bytes of body).
    Message(Bytes),
}

/// Cuts a byte stream into messages with a hard size limit, so one peer cannot make us buffer
/// without bound.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message: usize,
}

impl StreamFramer {
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_message,
        }
    }

    /// The buffer to read into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A copy of the first `n` buffered bytes (to try an error reply after a framing error).
    pub fn head(&self, n: usize) -> Bytes {
        Bytes::copy_from_slice(&self.buf[..n.min(self.buf.len())])
    }

    /// Takes the next frame off the buffer. An error means the stream cannot be resynchronised
    /// and the connection should be closed (after answering, if possible).
    pub fn next_frame(&mut self) -> Result<Framed, WireError> {
        // Keep-alives between messages.
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.advance(4);
            return Ok(Framed::KeepAlive { pong: true });
        }
        if self.buf.starts_with(b"\r\n") {
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf[..]) {
                // Could be the start of a double-CRLF ping: wait for the rest... unless a
                // message follows, which the next read tells.
                if self.buf.len() == 2 {
                    self.buf.advance(2);
                    return Ok(Framed::KeepAlive { pong: false });
                }
                return Ok(Framed::Incomplete);
            }
            self.buf.advance(2);
            return Ok(Framed::KeepAlive { pong: false });
        }
        if self.buf.first() == Some(&b'\n') {
            self.buf.advance(1);
            return Ok(Framed::KeepAlive { pong: false });
        }
        let Some(head_end) = find_header_end(&self.buf) else {
            if self.buf.len() > self.max_message {
                return Err(WireError::TooLarge {
                    size: self.buf.len(),
                    limit: self.max_message,
                });
            }
            return Ok(Framed::Incomplete);
        };
        let declared =
            scan_content_length(&self.buf[..head_end])?.ok_or(WireError::MissingContentLength)?;
        let total = head_end.checked_add(declared).ok_or(WireError::TooLarge {
            size: usize::MAX,
            limit: self.max_message,
        })?;
        if total > self.max_message {
            return Err(WireError::TooLarge {
                size: total,
                limit: self.max_message,
            });
        }
        if self.buf.len() < total {
            return Ok(Framed::Incomplete);
        }
        Ok(Framed::Message(self.buf.split_to(total).freeze()))
    }
}

/// Offset just past the empty line ending the header section (CRLFCRLF, or bare LF forms).
pub fn find_header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// Finds Content-Length (or compact `l`) in a header section without a full parse.
pub fn scan_content_length(head: &[u8]) -> Result<Option<usize>, WireError> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = std::str::from_utf8(trim(&line[colon + 1..]))
                .map_err(|_| WireError::BadEncoding)?;
            let n: usize = v.parse().map_err(|_| WireError::BadHeader {
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
    }
    Ok(found)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &[u8] = b"REGISTER sip:a SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn pipelined_messages_split() {
        let mut f = StreamFramer::new(4096);
        f.buffer().extend_from_slice(REG);
        f.buffer().extend_from_slice(REG);
        f.buffer().extend_from_slice(&REG[..10]);
        assert_eq!(
            f.next_frame().unwrap(),
            Framed::Message(Bytes::from_static(REG))
        );
        assert_eq!(
            f.next_frame().unwrap(),
            Framed::Message(Bytes::from_static(REG))
        );
        assert_eq!(f.next_frame().unwrap(), Framed::Incomplete);
        f.buffer().extend_from_slice(&REG[10..]);
        assert_eq!(
            f.next_frame().unwrap(),
            Framed::Message(Bytes::from_static(REG))
        );
    }

    #[test]
    fn incomplete_body_is_not_an_error() {
        let mut f = StreamFramer::new(4096);
        f.buffer().extend_from_slice(&REG[..REG.len() - 1]);
        assert_eq!(f.next_frame().unwrap(), Framed::Incomplete);
    }

    #[test]
    fn keepalives() {
        let mut f = StreamFramer::new(4096);
        f.buffer().extend_from_slice(b"\r\n\r\n");
        assert_eq!(f.next_frame().unwrap(), Framed::KeepAlive { pong: true });
        f.buffer().extend_from_slice(b"\r\n");
        assert_eq!(f.next_frame().unwrap(), Framed::KeepAlive { pong: false });
    }

    #[test]
    fn compact_length_and_bare_lf() {
        let mut f = StreamFramer::new(4096);
        f.buffer()
            .extend_from_slice(b"OPTIONS sip:a SIP/2.0\nl: 2\n\nhiX");
        assert_eq!(
            f.next_frame().unwrap(),
            Framed::Message(Bytes::from_static(b"OPTIONS sip:a SIP/2.0\nl: 2\n\nhi"))
        );
    }

    #[test]
    fn limits_and_missing_length() {
        let mut f = StreamFramer::new(32);
        f.buffer().extend_from_slice(&[b'a'; 40]);
        assert!(matches!(f.next_frame(), Err(WireError::TooLarge { .. })));
        let mut f = StreamFramer::new(4096);
        f.buffer()
            .extend_from_slice(b"OPTIONS sip:a SIP/2.0\r\n\r\n");
        assert_eq!(f.next_frame(), Err(WireError::MissingContentLength));
        let mut f = StreamFramer::new(100);
        f.buffer()
            .extend_from_slice(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(WireError::TooLarge { .. })));
    }
}
