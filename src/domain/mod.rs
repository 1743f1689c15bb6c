//! The typed domain: values parsed once at the edge (configuration, admin API, CLI, CSV) and
//! carried as types afterwards. No I/O here.
//!
//! - [`auth_policy`]: [`AuthPolicy`], which requests a DN's SIP credentials are asked for.
//! - [`profile_kind`]: [`ProfileKind`], what a profile is for.
//! - [`Mac`]: a device's MAC address (lives in `provisioning::mac`, re-exported here).

pub mod auth_policy;
pub mod profile_kind;

pub use crate::provisioning::mac::{Mac, MacError};
pub use auth_policy::{AuthPolicy, AuthPolicyError};
pub use profile_kind::{ProfileKind, ProfileKindError};
