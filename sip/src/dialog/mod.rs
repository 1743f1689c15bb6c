//! Dialogs (RFC 3261 §12) and request building: the user-agent layer's state between
//! transactions.
//!
//! * [`route_set`] — [`RouteSet`]: Record-Route values in visiting order, loose or strict next
//!   hop, the [`crate::Target`] a dialog's requests go to;
//! * [`uas`] — the dialog a received INVITE and our 2xx make (§12.1.1), and the response that
//!   copies the INVITE's Record-Route ([`uas::dialog_response`]);
//! * [`uac`] — the dialog our INVITE and its 2xx make (§12.1.2);
//! * [`request`] — requests within a dialog (§12.2.1.1): From/To/Call-ID/CSeq/Max-Forwards/Route,
//!   loose and strict routing, the ACK of a 2xx (§13.2.2.4);
//! * [`builder`] — [`RequestBuilder`]: requests outside any dialog (NOTIFY check-sync,
//!   OPTIONS, INVITE of a new dialog) with a fresh Call-ID and From tag (§8.1.1).

pub mod builder;
pub mod request;
pub mod route_set;
pub mod uac;
pub mod uas;

pub use builder::{BuildError, RequestBuilder};
pub use route_set::RouteSet;
pub use uas::dialog_response;

use crate::headers::NameAddr;
use crate::transport::Flow;
use crate::Target;

/// Why a dialog could not be made from a request and its response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("missing or malformed {0}")]
    Header(&'static str),
    #[error("the response's To has no tag")]
    NoRemoteTag,
    #[error("the response's To has no tag of ours")]
    NoLocalTag,
}

/// Which side of the dialog-creating INVITE we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uac,
    Uas,
}

/// One dialog as seen from our side (§12): what every request we send in it carries.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub role: Role,
    pub call_id: String,
    /// Our URI with our tag: the From of the requests we send.
    pub local: NameAddr,
    /// The peer's URI with its tag: the To of the requests we send.
    pub remote: NameAddr,
    /// The peer's Contact URI: where requests go when there is no route set.
    pub remote_target: String,
    pub route_set: RouteSet,
    /// Our Contact URI (the Contact of target-refresh requests we send), if any.
    pub local_contact: Option<String>,
    /// The last CSeq number we used (§12.2.1.1); the next request gets one more.
    pub local_cseq: u32,
    /// The last CSeq number the peer used.
    pub remote_cseq: Option<u32>,
    /// The flow the dialog-creating message came in on (a UAS: the caller's connection or
    /// NAT binding), used when no route set names an address.
    pub flow: Option<Flow>,
}

impl Dialog {
    pub fn local_tag(&self) -> Option<&str> {
        self.local.tag()
    }

    pub fn remote_tag(&self) -> Option<&str> {
        self.remote.tag()
    }

    /// Where requests of this dialog go first (see [`RouteSet::next_hop`]): the first route's
    /// address, else the remote target or the flow the dialog came in on. `None` only when
    /// none of them names a literal address.
    pub fn target(&self) -> Option<Target> {
        self.route_set.next_hop(&self.remote_target, self.flow)
    }
}
