//! Which phones are out of date: the file a device would be served now differs from the one
//! its receipt says it downloaded. Each file is recomputed for the phone as it asked (its
//! User-Agent, the host and URL it used), through the render cache, so an unchanged fleet
//! costs a cache look-up per file.

use std::collections::BTreeMap;

use serde::Serialize;

use super::selection::SiteOf;
use crate::service::{Dm, DmError, Requester};
use crate::store::model::Device;
use crate::store::{Receipt, StoreError};

/// One file of one phone that changed since it was downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stale {
    pub mac: String,
    pub file: String,
    /// The ETag the phone has.
    pub has: String,
    /// The ETag it would be served now.
    pub now: String,
}

/// The files of `receipts` that changed, recomputed for each phone as it asked. A device
/// deleted meanwhile has nothing to fetch and is left out.
pub async fn stale_files(
    dm: &Dm,
    receipts: &[Receipt],
    sip_port: u16,
) -> Result<Vec<Stale>, DmError> {
    let mut out = Vec::new();
    // Another site's node rendered these: its own files are its to judge.
    for r in receipts.iter().filter(|r| r.renderer == dm.renderer_tag()) {
        let who = Requester {
            ip: r.ip.clone(),
            user_agent: r.user_agent.clone(),
            host: r.host.clone(),
            base_url: r.base_url.clone(),
            sip_port: Some(sip_port),
        };
        match dm.current_file(&r.file, &who).await {
            Ok(now) if now.etag != r.etag => out.push(Stale {
                mac: r.mac.clone(),
                file: r.file.clone(),
                has: r.etag.clone(),
                now: now.etag,
            }),
            Ok(_) => {}
            Err(DmError::Store(StoreError::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// How many devices are out of date, in all and per site, profile and model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FleetState {
    pub devices: usize,
    /// Devices that downloaded at least one file.
    pub with_receipts: usize,
    pub out_of_date: usize,
    pub by_site: BTreeMap<String, usize>,
    pub by_profile: BTreeMap<String, usize>,
    pub by_model: BTreeMap<String, usize>,
    /// The out-of-date devices (at most 1000, by MAC).
    pub macs: Vec<String>,
}

impl FleetState {
    pub fn new(devices: &[Device], receipts: &[Receipt], stale: &[Stale], sites: &SiteOf) -> Self {
        let stale_macs: std::collections::BTreeSet<&str> =
            stale.iter().map(|s| s.mac.as_str()).collect();
        let with_receipts: std::collections::BTreeSet<&str> =
            receipts.iter().map(|r| r.mac.as_str()).collect();
        let mut state = FleetState {
            devices: devices.len(),
            with_receipts: with_receipts.len(),
            ..Default::default()
        };
        for d in devices
            .iter()
            .filter(|d| stale_macs.contains(d.mac.as_str()))
        {
            state.out_of_date += 1;
            let site = sites.site_of(d).unwrap_or("(no site)").to_owned();
            *state.by_site.entry(site).or_default() += 1;
            let profile = d.profile.clone().unwrap_or_else(|| "default".into());
            *state.by_profile.entry(profile).or_default() += 1;
            let model = d.model.clone().unwrap_or_else(|| "(unknown)".into());
            *state.by_model.entry(model).or_default() += 1;
            if state.macs.len() < 1000 {
                state.macs.push(d.mac.clone());
            }
        }
        state
    }
}
