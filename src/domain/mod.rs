//! The typed domain: values parsed once at the edge (configuration, admin API, CLI, CSV) and
//! carried as types afterwards. No I/O here.
//!
//! - [`auth_policy`]: [`AuthPolicy`], which requests a DN's SIP credentials are asked for.
//! - [`profile_kind`]: [`ProfileKind`], what a profile is for.
//! - [`dn_range`]: [`DnRange`], the DNs a switch owns (`1000-1999`).
//! - [`sip_server`]: [`SipServer`], where phones register and check-sync sends
//!   (`host[:port][;transport=x]`).
//! - [`Mac`]: a device's MAC address (lives in `provisioning::mac`, re-exported here).

pub mod auth_policy;
pub mod dn_range;
pub mod profile_kind;
pub mod sip_server;

pub use crate::provisioning::mac::{Mac, MacError};
pub use auth_policy::{AuthPolicy, AuthPolicyError};
pub use dn_range::{DnRange, DnRangeError};
pub use profile_kind::{ProfileKind, ProfileKindError};
pub use sip_server::{SipServer, SipServerError, Transport};
