//! Fleet operations: every change that alters a phone's file reaches that phone.
//!
//! - [`out_of_date`]: which devices' receipts (the file each last downloaded) no longer match
//!   the file they would be served now;
//! - [`selection`]: which devices an operator means (site, profile, model, firmware, MACs);
//! - [`pacing`]: check-sync rates per site and per source address, jittered;
//! - [`campaign`]: check-sync in growing waves that wait for the phones to re-fetch, and stop
//!   themselves when too many do not come back; started by hand or after every change.

pub mod campaign;
pub mod out_of_date;
pub mod pacing;
pub mod selection;

pub use campaign::{CampaignSettings, CampaignView, Campaigns, StartError};
pub use out_of_date::{FleetState, Stale};
pub use selection::Selection;
