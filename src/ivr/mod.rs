//! The IVR that lets a phone's user key in the extension (DN) the phone should become.
//!
//! Two front ends share one dialogue:
//! * the **built-in IVR**: sipdm answers the INVITE itself ([`call::IvrCall`]), speaks G.711
//!   over RTP ([`media`], [`rtp`], [`g711`], [`prompts`]) and hears DTMF as RFC 4733
//!   telephone-events or SIP INFO ([`dtmf`]); the SDP offer/answer is in [`sdp`];
//! * **VoiceXML** for an external media server ([`vxml`]): `GET /fs/dm/ivr` and
//!   `POST /fs/dm/ivr/assign`.
//!
//! The dialogue itself is [`machine`], a pure state machine; the one service it needs is an
//! [`assign::Assigner`], which the service layer implements. This module knows nothing of SIP
//! (the SIP layer hands it the offer and BYE/INFO events) nor of SQL.

pub mod app_url;
pub mod assign;
pub mod call;
pub mod dtmf;
pub mod g711;
pub mod machine;
pub mod media;
pub mod prompts;
pub mod rtp;
pub mod sdp;
pub mod settings;
pub mod vxml;

pub use assign::{AssignRefusal, Assigner, CallerIdentity};
pub use call::{CallEnded, CallOutcome, IvrCall, IvrCallHandle, IvrControl, IvrError};
pub use prompts::{PromptError, PromptLibrary};
pub use settings::IvrSettings;
