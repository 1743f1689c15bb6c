//! The wire layer: bytes in, rsip messages out, and nothing about transactions.
//!
//! * [`framing`] — where a message ends: a whole datagram, or a stream cut by Content-Length
//!   (with `Incomplete` kept apart from malformed input);
//! * [`normalise`] — start line, unfolded headers with canonical names, body;
//! * [`parse`] — rsip types built from the normalised parts, Content-Length enforced;
//! * [`encode`] — printing with a Content-Length that always matches the body;
//! * [`reply`] — an error response built from raw parts when a request cannot be parsed.

pub mod encode;
pub mod framing;
pub mod normalise;
pub mod parse;
pub mod reply;

pub use encode::{encode_request, encode_response};
pub use framing::{Framed, StreamFramer};
pub use normalise::{normalise, RawMessage, StartLine};
pub use parse::{parse_datagram, parse_raw};

/// Everything that can be wrong with a message on the wire. Each variant maps to the status a
/// request carrying it is answered with (responses are dropped instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("header section not terminated")]
    NoHeaderEnd,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("header section is not UTF-8")]
    BadEncoding,
    #[error("malformed {name} header: {reason}")]
    BadHeader {
        name: &'static str,
        reason: &'static str,
    },
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("Content-Length {declared} disagrees with body of {actual} bytes")]
    ContentLengthMismatch { declared: usize, actual: usize },
    #[error("Content-Length missing on a stream transport")]
    MissingContentLength,
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed Request-URI")]
    BadUri,
    #[error("unknown method {0}")]
    UnknownMethod(String),
    #[error("rsip rejected the message: {0}")]
    Rsip(String),
}

impl WireError {
    /// The status and reason phrase a request with this defect is answered with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            WireError::TooLarge { .. } => (513, "Message Too Large"),
            WireError::BadVersion => (505, "Version Not Supported"),
            WireError::UnknownMethod(_) => (501, "Not Implemented"),
            WireError::ContentLengthMismatch { .. } => (400, "Content-Length Mismatch"),
            WireError::MissingContentLength => (400, "Missing Content-Length"),
            WireError::BadUri => (400, "Bad Request-URI"),
            WireError::MissingHeader(_) => (400, "Missing Mandatory Header"),
            WireError::BadHeader { .. } => (400, "Malformed Header"),
            _ => (400, "Bad Request"),
        }
    }
}
