//! Check-sync campaigns: the phones of a selection that are out of date get check-sync in
//! waves. A wave sends at the paced rate ([`super::pacing`]), then waits for its phones to
//! re-fetch (their receipts match the files they would be served now); the next wave is twice
//! as large, up to a ceiling. A wave in which more than the failure budget does not come back
//! stops the campaign, which says why and which phones failed, and the rest are left alone: a
//! change that breaks phones reaches a few of them, not the site.
//!
//! Campaigns start by hand (a selection) or, in `auto` mode, a short while after every change
//! (over every out-of-date phone). Two campaigns never hold the same phone at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use sip::Endpoint;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::out_of_date::stale_files;
use super::pacing::Pacer;
use super::selection::{Selection, SiteOf};
pub use crate::config::CampaignMode;
use crate::config::CampaignsConfig;
use crate::fault::{Fault, HasFault};
use crate::service::{Dm, DmError};
use crate::sipside::checksync::CheckSync;
use crate::store::{now_ms, Change, Source};

/// `[campaigns]` of the configuration, validated.
#[derive(Debug, Clone)]
pub struct CampaignSettings {
    pub mode: CampaignMode,
    /// Check-syncs per second to the phones of one site.
    pub site_rate: f64,
    /// Check-syncs per second to the phones behind one source address.
    pub source_rate: f64,
    /// Up to this much is added at random to each interval.
    pub jitter: Duration,
    pub first_wave: usize,
    pub max_wave: usize,
    /// The share of a wave that may fail before the campaign stops (0.2 = 20 %).
    pub failure_budget: f64,
    /// How long a wave waits for its phones to re-fetch.
    pub wave_timeout: Duration,
    /// How long after a change an automatic campaign starts (changes in between join it).
    pub settle: Duration,
}

impl From<&CampaignsConfig> for CampaignSettings {
    fn from(c: &CampaignsConfig) -> Self {
        CampaignSettings {
            mode: c.mode,
            site_rate: c.rate_per_site,
            source_rate: c.rate_per_source,
            jitter: Duration::from_millis(c.jitter_ms),
            first_wave: c.first_wave,
            max_wave: c.max_wave,
            failure_budget: c.failure_budget,
            wave_timeout: Duration::from_secs(c.wave_timeout_seconds),
            settle: Duration::from_secs(c.settle_seconds),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    Running,
    /// Every phone was reached and re-fetched (or failed within the budget).
    Done,
    /// A wave failed beyond the budget; the phones not yet sent were left alone.
    Halted,
    /// Stopped by an operator.
    Stopped,
}

/// A phone that did not come back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Failure {
    pub mac: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WaveView {
    pub number: usize,
    pub size: usize,
    pub updated: usize,
    pub failed: usize,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// A campaign as the API, the CLI and the console show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    pub id: u64,
    /// `auto` (after a change) or `manual`.
    pub origin: String,
    pub selection: Selection,
    pub state: CampaignState,
    /// Phones the campaign holds.
    pub devices: usize,
    /// Check-syncs sent so far.
    pub sent: usize,
    /// Phones that re-fetched the new file.
    pub updated: usize,
    pub failed: usize,
    /// Phones not reached yet.
    pub pending: usize,
    pub waves: Vec<WaveView>,
    /// Why it halted, when it did.
    pub reason: Option<String>,
    pub failures: Vec<Failure>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// The rates it runs at (check-syncs per second per site and per source address).
    pub site_rate: f64,
    pub source_rate: f64,
    /// The most check-syncs that left for one site, and for one source address, within any
    /// one second (as sent, measured here): never above the rates.
    pub peak_site_per_second: usize,
    pub peak_source_per_second: usize,
}

/// Check-syncs sent in the last second, per site and per source address.
#[derive(Default)]
struct Peaks {
    recent: std::collections::HashMap<(bool, String), std::collections::VecDeque<Instant>>,
}

impl Peaks {
    /// Notes a check-sync sent now; the counts within the last second for its site and source.
    fn sent(&mut self, t: &Target, now: Instant) -> (usize, usize) {
        let mut count = |key: (bool, String)| {
            let q = self.recent.entry(key).or_default();
            q.push_back(now);
            while q
                .front()
                .is_some_and(|f| now - *f >= Duration::from_secs(1))
            {
                q.pop_front();
            }
            q.len()
        };
        (
            count((true, t.site.clone())),
            count((false, t.source.clone())),
        )
    }
}

/// Why a campaign did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the selection matches no device")]
    NothingSelected,
    #[error("none of the {0} selected devices is out of date")]
    NothingOutOfDate(usize),
    #[error("{count} of the selected devices are in campaign {campaign} already (e.g. {example})")]
    Busy {
        campaign: u64,
        count: usize,
        example: String,
    },
    #[error(transparent)]
    Dm(#[from] DmError),
}

impl HasFault for StartError {
    fn fault(&self) -> Fault {
        match self {
            StartError::NothingSelected | StartError::NothingOutOfDate(_) => Fault::Invalid,
            StartError::Busy { .. } => Fault::Conflict,
            StartError::Dm(e) => e.fault(),
        }
    }
}

/// A check-sync sent: when, and the phone's registrations here at that moment.
#[derive(Debug, Clone)]
struct Sent {
    at: i64,
    registered: Vec<(String, u32)>,
}

/// A phone of a campaign: where its check-sync is paced.
#[derive(Debug, Clone)]
struct Target {
    mac: String,
    site: String,
    source: String,
}

struct Campaign {
    view: Mutex<CampaignView>,
    stop: watch::Sender<bool>,
    macs: Vec<String>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    all: BTreeMap<u64, Arc<Campaign>>,
    /// Phone → the running campaign holding it.
    busy: BTreeMap<String, u64>,
}

/// The campaigns of this instance.
pub struct Campaigns {
    dm: Arc<Dm>,
    check_sync: Arc<CheckSync>,
    ep: Endpoint,
    settings: CampaignSettings,
    registry: Mutex<Registry>,
}

/// Finished campaigns kept for the API.
const KEEP_FINISHED: usize = 50;
/// How often a wave looks at its phones' receipts.
const RECEIPT_POLL: Duration = Duration::from_millis(250);

impl Campaigns {
    pub fn new(
        dm: Arc<Dm>,
        check_sync: Arc<CheckSync>,
        ep: Endpoint,
        settings: CampaignSettings,
    ) -> Arc<Campaigns> {
        Arc::new(Campaigns {
            dm,
            check_sync,
            ep,
            settings,
            registry: Mutex::new(Registry::default()),
        })
    }

    pub fn settings(&self) -> &CampaignSettings {
        &self.settings
    }

    /// Starts a campaign over the devices of `selection` (only the out-of-date ones when
    /// `only_out_of_date`).
    pub async fn start(
        self: &Arc<Self>,
        selection: Selection,
        only_out_of_date: bool,
        origin: &str,
    ) -> Result<CampaignView, StartError> {
        let store = &self.dm.store;
        let devices = store
            .devices(None, i64::MAX, 0)
            .await
            .map_err(DmError::from)?;
        let sites = SiteOf::new(
            &store.dns().await.map_err(DmError::from)?,
            &store.switches().await.map_err(DmError::from)?,
        );
        let mut selection = selection;
        selection.macs = selection
            .macs
            .iter()
            .map(|m| Dm::parse_mac(m))
            .collect::<Result<_, _>>()?;
        let chosen: Vec<_> = devices
            .iter()
            .filter(|d| selection.matches(d, &sites))
            .collect();
        if chosen.is_empty() {
            return Err(StartError::NothingSelected);
        }
        let mut macs: Vec<String> = chosen.iter().map(|d| d.mac.clone()).collect();
        if only_out_of_date {
            let receipts = store.receipts(Some(&macs)).await.map_err(DmError::from)?;
            let stale = stale_files(&self.dm, &receipts, self.ep.local_addr().port()).await?;
            let stale: HashSet<&str> = stale.iter().map(|s| s.mac.as_str()).collect();
            macs.retain(|m| stale.contains(m.as_str()));
            if macs.is_empty() {
                return Err(StartError::NothingOutOfDate(chosen.len()));
            }
        }
        let targets: Vec<Target> = chosen
            .iter()
            .filter(|d| macs.contains(&d.mac))
            .map(|d| Target {
                mac: d.mac.clone(),
                site: sites.site_of(d).unwrap_or("").to_owned(),
                source: d.last_seen_ip.clone().unwrap_or_default(),
            })
            .collect();
        let (stop, stop_rx) = watch::channel(false);
        let campaign = {
            let mut reg = self.registry.lock();
            // Automatic campaigns leave busy phones to the campaign holding them; an
            // operator's is refused, so that it never silently covers less than asked.
            let busy: Vec<(&String, u64)> = macs
                .iter()
                .filter_map(|m| reg.busy.get(m).map(|c| (m, *c)))
                .collect();
            let targets: Vec<Target> = if busy.is_empty() {
                targets
            } else if origin == "auto" {
                let held: HashSet<&String> = busy.iter().map(|(m, _)| *m).collect();
                let free: Vec<Target> = targets
                    .into_iter()
                    .filter(|t| !held.contains(&t.mac))
                    .collect();
                if free.is_empty() {
                    return Err(StartError::NothingOutOfDate(chosen.len()));
                }
                free
            } else {
                return Err(StartError::Busy {
                    campaign: busy[0].1,
                    count: busy.len(),
                    example: busy[0].0.clone(),
                });
            };
            reg.next_id += 1;
            let id = reg.next_id;
            let view = CampaignView {
                id,
                origin: origin.to_owned(),
                selection,
                state: CampaignState::Running,
                devices: targets.len(),
                sent: 0,
                updated: 0,
                failed: 0,
                pending: targets.len(),
                waves: Vec::new(),
                reason: None,
                failures: Vec::new(),
                started_at: now_ms(),
                ended_at: None,
                site_rate: self.settings.site_rate,
                source_rate: self.settings.source_rate,
                peak_site_per_second: 0,
                peak_source_per_second: 0,
            };
            for t in &targets {
                reg.busy.insert(t.mac.clone(), id);
            }
            let campaign = Arc::new(Campaign {
                view: Mutex::new(view),
                stop,
                macs: targets.iter().map(|t| t.mac.clone()).collect(),
            });
            reg.all.insert(id, campaign.clone());
            let finished: Vec<u64> = reg
                .all
                .iter()
                .filter(|(_, c)| c.view.lock().state != CampaignState::Running)
                .map(|(id, _)| *id)
                .collect();
            for old in finished
                .iter()
                .take(finished.len().saturating_sub(KEEP_FINISHED))
            {
                reg.all.remove(old);
            }
            tokio::spawn(self.clone().run(campaign.clone(), targets, stop_rx));
            campaign
        };
        metrics::gauge!("sipdm_campaigns_running").increment(1.0);
        let view = campaign.view.lock().clone();
        tracing::info!(
            id = view.id,
            origin,
            devices = view.devices,
            "check-sync campaign started"
        );
        Ok(view)
    }

    /// How many phones are out of date, in all and per site, profile and model.
    pub async fn fleet_state(&self) -> Result<super::FleetState, DmError> {
        let store = &self.dm.store;
        let devices = store.devices(None, i64::MAX, 0).await?;
        let sites = SiteOf::new(&store.dns().await?, &store.switches().await?);
        let receipts = store.receipts(None).await?;
        let stale = stale_files(&self.dm, &receipts, self.ep.local_addr().port()).await?;
        Ok(super::FleetState::new(&devices, &receipts, &stale, &sites))
    }

    pub fn list(&self) -> Vec<CampaignView> {
        let reg = self.registry.lock();
        reg.all
            .values()
            .rev()
            .map(|c| c.view.lock().clone())
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<CampaignView> {
        let c = self.registry.lock().all.get(&id)?.clone();
        let view = c.view.lock().clone();
        Some(view)
    }

    /// Stops a running campaign after the check-syncs in flight; `None` for an unknown id.
    pub fn stop(&self, id: u64) -> Option<CampaignView> {
        let c = self.registry.lock().all.get(&id)?.clone();
        let _ = c.stop.send(true);
        let view = c.view.lock().clone();
        Some(view)
    }

    /// In `auto` mode: a campaign over every out-of-date phone, [`CampaignSettings::settle`]
    /// after a change (the changes in between join it). Nothing in `manual` mode. The
    /// instance that made a change runs its campaign (a peer's changes are its own to follow
    /// up), and so does a server for the CLI that shares its SQLite file.
    pub fn follow_changes(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        if self.settings.mode != CampaignMode::Auto {
            return None;
        }
        let (tx, mut rx) = mpsc::channel::<()>(1);
        self.dm
            .store
            .changes()
            .subscribe(Arc::new(move |changes: &[Change], source| {
                if !changes.is_empty() && source != Source::Peer {
                    let _ = tx.try_send(());
                }
            }));
        let me = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(me.settings.settle) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                while rx.try_recv().is_ok() {}
                match me.start(Selection::default(), true, "auto").await {
                    Ok(_) | Err(StartError::NothingOutOfDate(_) | StartError::NothingSelected) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "automatic check-sync campaign not started")
                    }
                }
            }
        }))
    }

    async fn run(
        self: Arc<Self>,
        campaign: Arc<Campaign>,
        targets: Vec<Target>,
        mut stop: watch::Receiver<bool>,
    ) {
        let s = &self.settings;
        let mut pacer = Pacer::new(s.site_rate, s.source_rate, s.jitter);
        let mut peaks = Peaks::default();
        let mut rest = targets.as_slice();
        let mut size = s.first_wave.max(1);
        let mut number = 0;
        let (state, reason) = loop {
            if rest.is_empty() {
                break (CampaignState::Done, None);
            }
            if *stop.borrow() {
                break (
                    CampaignState::Stopped,
                    Some("stopped by an operator".to_owned()),
                );
            }
            number += 1;
            let (wave, later) = rest.split_at(size.min(rest.len()));
            rest = later;
            let failed = self
                .wave(&campaign, number, wave, &mut pacer, &mut peaks, &mut stop)
                .await;
            if failed as f64 > s.failure_budget * wave.len() as f64 {
                break (
                    CampaignState::Halted,
                    Some(format!(
                        "wave {number}: {failed} of {} phones did not come back (budget {:.0} %); {} phones left alone",
                        wave.len(),
                        s.failure_budget * 100.0,
                        rest.len()
                    )),
                );
            }
            size = (size * 2).min(s.max_wave.max(1));
        };
        {
            let mut v = campaign.view.lock();
            v.state = state;
            v.reason = reason.clone();
            v.ended_at = Some(now_ms());
        }
        {
            let mut reg = self.registry.lock();
            for m in &campaign.macs {
                if reg.busy.get(m) == Some(&campaign.view.lock().id) {
                    reg.busy.remove(m);
                }
            }
        }
        metrics::gauge!("sipdm_campaigns_running").decrement(1.0);
        let v = campaign.view.lock().clone();
        match state {
            CampaignState::Halted => tracing::warn!(
                id = v.id,
                updated = v.updated,
                failed = v.failed,
                reason = reason.as_deref().unwrap_or(""),
                "check-sync campaign halted"
            ),
            _ => {
                tracing::info!(id = v.id, state = ?state, updated = v.updated, failed = v.failed, "check-sync campaign ended")
            }
        }
    }

    /// Sends one wave at the paced rate and waits for its phones; returns how many failed.
    async fn wave(
        &self,
        campaign: &Campaign,
        number: usize,
        wave: &[Target],
        pacer: &mut Pacer,
        peaks: &mut Peaks,
        stop: &mut watch::Receiver<bool>,
    ) -> usize {
        let id = campaign.view.lock().id;
        campaign.view.lock().waves.push(WaveView {
            number,
            size: wave.len(),
            updated: 0,
            failed: 0,
            started_at: now_ms(),
            ended_at: None,
        });
        let actor = format!("campaign {id}");
        let mut sends = Vec::new();
        let mut sent_at: Vec<(String, Sent)> = Vec::new();
        for t in wave {
            let at = pacer.slot(&t.site, &t.source, Instant::now());
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            pacer.sent(&t.site, &t.source, Instant::now());
            let registered = self.registrations(&t.mac).await;
            sent_at.push((
                t.mac.clone(),
                Sent {
                    at: now_ms(),
                    registered,
                },
            ));
            let (site, source) = peaks.sent(t, Instant::now());
            let (cs, ep, mac, actor) = (
                self.check_sync.clone(),
                self.ep.clone(),
                t.mac.clone(),
                actor.clone(),
            );
            sends.push(tokio::spawn(async move {
                cs.send(&ep, &mac, &actor).await.map_err(|e| e.to_string())
            }));
            metrics::counter!("sipdm_campaign_checksyncs_total").increment(1);
            let mut v = campaign.view.lock();
            v.peak_site_per_second = v.peak_site_per_second.max(site);
            v.peak_source_per_second = v.peak_source_per_second.max(source);
            v.sent += 1;
            v.pending = v.pending.saturating_sub(1);
        }
        // Phones whose NOTIFY failed are done with; the others have until the deadline to
        // re-fetch.
        let mut failures: Vec<Failure> = Vec::new();
        let mut waiting: Vec<(String, Sent)> = Vec::new();
        for (send, (mac, at)) in sends.into_iter().zip(sent_at) {
            match send.await {
                Ok(Ok(_)) => waiting.push((mac, at)),
                Ok(Err(reason)) => failures.push(Failure {
                    mac,
                    reason: format!("check-sync: {reason}"),
                }),
                Err(e) => failures.push(Failure {
                    mac,
                    reason: format!("check-sync task: {e}"),
                }),
            }
        }
        let deadline = Instant::now() + self.settings.wave_timeout;
        let mut updated = 0;
        loop {
            let (done, still) = self.refetched(waiting).await;
            updated += done;
            {
                let mut v = campaign.view.lock();
                v.updated += done;
                if let Some(w) = v.waves.last_mut() {
                    w.updated += done;
                }
            }
            metrics::counter!("sipdm_campaign_phones_updated_total").increment(done as u64);
            waiting = still;
            if waiting.is_empty() || Instant::now() >= deadline || *stop.borrow() {
                break;
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
        failures.extend(waiting.into_iter().map(|(mac, _)| Failure {
            mac,
            reason: format!(
                "did not re-fetch its file and register again within {} s of the check-sync",
                self.settings.wave_timeout.as_secs()
            ),
        }));
        let failed = failures.len();
        metrics::counter!("sipdm_campaign_phones_failed_total").increment(failed as u64);
        let mut v = campaign.view.lock();
        v.failed += failed;
        if let Some(w) = v.waves.last_mut() {
            w.failed = failed;
            w.ended_at = Some(now_ms());
        }
        for f in &failures {
            tracing::info!(campaign = id, mac = %f.mac, reason = %f.reason, "phone did not come back");
        }
        v.failures.extend(failures);
        let _ = updated;
        failed
    }

    /// The registrations this instance holds for a phone (its provisioning identity, its DN),
    /// as (Call-ID, CSeq): a REGISTER after the check-sync shows as a pair not among them.
    /// Empty where the phone registers to a switch, which sipdm cannot see.
    async fn registrations(&self, mac: &str) -> Vec<(String, u32)> {
        let registrar = self.ep.registrar();
        let mut out: Vec<(String, u32)> = registrar
            .binding_of_device(&self.dm.credentials.auth_user(mac))
            .into_iter()
            .map(|b| (b.call_id.clone(), b.cseq))
            .collect();
        if let Ok(device) = self.dm.store.device(mac).await {
            if let Some(dn) = &device.dn {
                out.extend(
                    registrar
                        .bindings(dn)
                        .iter()
                        .map(|b| (b.call_id.clone(), b.cseq)),
                );
            }
        }
        out
    }

    /// Of the phones sent check-sync: how many have since fetched files that match what they
    /// would be served now and, where this instance holds their registration, registered
    /// again; and the rest.
    async fn refetched(&self, waiting: Vec<(String, Sent)>) -> (usize, Vec<(String, Sent)>) {
        if waiting.is_empty() {
            return (0, waiting);
        }
        let macs: Vec<String> = waiting.iter().map(|(m, _)| m.clone()).collect();
        let receipts = match self.dm.store.receipts(Some(&macs)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "receipts unreadable; looking again");
                return (0, waiting);
            }
        };
        let stale = match stale_files(&self.dm, &receipts, self.ep.local_addr().port()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "current files not rendered; looking again");
                return (0, waiting);
            }
        };
        let stale: HashSet<&str> = stale.iter().map(|s| s.mac.as_str()).collect();
        let mut done = 0;
        let mut still = Vec::new();
        for (mac, sent) in waiting {
            let fetched_since = receipts
                .iter()
                .any(|r| r.mac == mac && r.fetched_at >= sent.at);
            let refetched = fetched_since && !stale.contains(mac.as_str());
            // Looked at only once the file is in: a store read per phone.
            let registered_again = refetched
                && (sent.registered.is_empty()
                    || self
                        .registrations(&mac)
                        .await
                        .iter()
                        .any(|r| !sent.registered.contains(r)));
            if registered_again {
                done += 1;
            } else {
                still.push((mac, sent));
            }
        }
        (done, still)
    }
}
