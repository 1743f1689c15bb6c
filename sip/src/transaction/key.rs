//! Transaction keys (RFC 3261 §17.1.3 and §17.2.3).

use rsip::Method;

use crate::headers::{MessageExt, Via};

/// Branches starting with this cookie are unique per transaction (RFC 3261 §8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Server transaction key: branch + sent-by + method (ACK and CANCEL look up the INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TsxKey {
    pub branch: String,
    pub sent_by: String,
    method: u8,
}

impl TsxKey {
    pub fn server(via: &Via, req: &rsip::Request) -> TsxKey {
        let method = if req.method == Method::Ack {
            Method::Invite
        } else {
            req.method
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.to_string(),
            // RFC 2543 peers: no unique branch, so key on the dialog-ish identifiers.
            _ => {
                let from_tag = req
                    .header_value("From")
                    .and_then(|f| crate::headers::NameAddr::parse(f).ok())
                    .and_then(|f| f.tag().map(str::to_string))
                    .unwrap_or_default();
                let cseq = req.cseq().map(|c| c.0).unwrap_or(0);
                format!("2543;{};{};{}", req.call_id().unwrap_or(""), cseq, from_tag)
            }
        };
        TsxKey {
            branch,
            sent_by: via.sent_by(),
            method: method as u8,
        }
    }

    /// The key of the INVITE transaction a CANCEL or ACK with this key refers to.
    pub fn invite_of(&self) -> TsxKey {
        TsxKey {
            method: Method::Invite as u8,
            ..self.clone()
        }
    }

    pub fn is_invite(&self) -> bool {
        self.method == Method::Invite as u8
    }
}

/// Client transaction key: our branch + CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    method: u8,
}

impl ClientKey {
    pub fn new(branch: &str, method: Method) -> ClientKey {
        ClientKey {
            branch: branch.to_string(),
            method: method as u8,
        }
    }

    /// The key of the client transaction a response belongs to.
    pub fn of_response(resp: &rsip::Response) -> Option<ClientKey> {
        let via = resp.top_via()?;
        let method = crate::wire::parse::parse_method(resp.cseq()?.1).ok()?;
        let method = if method == Method::Ack {
            Method::Invite
        } else {
            method
        };
        Some(ClientKey::new(via.branch()?, method))
    }
}
