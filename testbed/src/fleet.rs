//! Many simulated phones at once: the load generator behind `phone-sim fleet` and the
//! "2000-extension switch" benchmark.
//!
//! Each phone has its own SIP and RTP sockets and its own MAC (vendor OUI + index, so a rerun
//! asks for the same files), keys DN `dn_start + index`, and is bounded by its own overall
//! timeout; the fleet as a whole is bounded too, so a run always ends by itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;

use crate::phone::{Mac, Phone, PhoneOptions, PhoneSpec, Step, StepTiming, Vendor};

/// Which phone families the fleet is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorChoice {
    One(Vendor),
    /// Round-robin over the six families.
    Mix,
}

impl VendorChoice {
    pub fn for_index(self, i: u32) -> Vendor {
        match self {
            VendorChoice::One(v) => v,
            VendorChoice::Mix => Vendor::ALL[i as usize % Vendor::ALL.len()],
        }
    }
}

impl std::str::FromStr for VendorChoice {
    type Err = crate::phone::vendor::UnknownVendor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("mix") {
            Ok(VendorChoice::Mix)
        } else {
            s.parse().map(VendorChoice::One)
        }
    }
}

/// What each phone does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetMode {
    /// Unassigned phones keyed to `dn_start + index` through the IVR.
    Ivr,
    /// Phones already assigned: fetch and register only.
    ZeroTouch,
}

/// A fleet run.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub count: u32,
    pub prov_url: String,
    /// More provisioning servers of the same deployment (the other node of a pair).
    pub fallback_prov_urls: Vec<String>,
    /// Spread the phones over `prov_url` and the fallbacks: phone `i` starts at URL
    /// `i mod n` and falls back to the others in order, as phones picking one address of a
    /// name that resolves to every node.
    pub spread: bool,
    pub local_ip: IpAddr,
    /// The DNS server the phones' DHCP lease names (option 6), `ip:port`: host names in the
    /// provisioning URLs their files give are resolved there. `None`: `options.dns` (by
    /// default the system's resolver).
    pub dns: Option<SocketAddr>,
    pub dn_start: u32,
    /// Phones in flight at once.
    pub concurrency: usize,
    pub vendor: VendorChoice,
    pub mode: FleetMode,
    /// Added to the index to make MACs, so two fleets on one server do not collide.
    pub mac_offset: u32,
    pub options: PhoneOptions,
    /// Bound of the whole run; phones still running then are stopped and counted unfinished.
    pub overall_timeout: Duration,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
    /// After booting, each phone stays up until the fleet has run this long: it answers every
    /// check-sync as a phone does (it re-fetches its files and registers again with them) and
    /// refreshes its registration when due (at a random point of the granted expiry).
    pub follow: Option<Duration>,
    /// Phone `i` binds its own loopback address, 127.1.(i / 250).(i % 250 + 1), for SIP and
    /// HTTP alike (instead of `local_ip` for all): the server sees one source per phone. `i`
    /// counts from `mac_offset - 1`, so fleets side by side with disjoint MAC offsets (several
    /// processes, each under its own open-file limit) use disjoint addresses.
    pub spread_ips: bool,
}

impl FleetSpec {
    /// A fleet of `count` mixed-vendor phones doing IVR provisioning, 64 at a time.
    pub fn new(count: u32, prov_url: impl Into<String>) -> FleetSpec {
        FleetSpec {
            count,
            prov_url: prov_url.into(),
            fallback_prov_urls: Vec::new(),
            spread: false,
            local_ip: IpAddr::from([127, 0, 0, 1]),
            dns: None,
            dn_start: 1000,
            concurrency: 64,
            vendor: VendorChoice::Mix,
            mode: FleetMode::Ivr,
            mac_offset: 1,
            options: PhoneOptions::default(),
            overall_timeout: Duration::from_secs(600),
            progress: false,
            follow: None,
            spread_ips: false,
        }
    }
}

/// How one phone of the fleet ended.
#[derive(Debug, Clone)]
pub struct PhoneOutcome {
    pub index: u32,
    pub mac: Mac,
    pub vendor: Vendor,
    /// The DN keyed (IVR mode) or found in the file (zero touch).
    pub dn: String,
    /// Time-to-provisioned on success; the failed step and why otherwise.
    pub result: Result<Duration, (Step, String)>,
    pub timings: Vec<StepTiming>,
    pub check_syncs: usize,
    /// Check-syncs followed by a successful re-fetch and registration (follow mode).
    pub refetches: usize,
    /// Registration refreshes that succeeded (follow mode).
    pub refreshes: usize,
    /// 503s with Retry-After the phone waited out before asking again.
    pub retry_after_waits: u32,
    /// Attempts made again after a failed one (no answer, refused), by the step that failed.
    pub retries: BTreeMap<Step, u32>,
}

/// The run's numbers.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub outcomes: Vec<PhoneOutcome>,
    /// From the first phone's start to the last phone's end.
    pub wall: Duration,
    /// Phones that did not finish before the fleet's overall timeout.
    pub unfinished: u32,
    /// What the phones did (a zero-touch phone gets no check-sync).
    pub mode: FleetMode,
}

/// Nearest-rank percentile of sorted `v`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

impl FleetReport {
    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }

    /// Successful phones' time-to-provisioned, ascending.
    pub fn times(&self) -> Vec<Duration> {
        let mut t: Vec<Duration> = self
            .outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok().copied())
            .collect();
        t.sort();
        t
    }

    /// Failed phones per step (every step listed, zeros included).
    pub fn failures_by_step(&self) -> BTreeMap<Step, usize> {
        let mut m: BTreeMap<Step, usize> = Step::ALL.iter().map(|s| (*s, 0)).collect();
        for o in &self.outcomes {
            if let Err((s, _)) = &o.result {
                *m.entry(*s).or_default() += 1;
            }
        }
        m
    }

    /// Phones that did not get exactly one NOTIFY (IVR mode expects one each; zero touch
    /// none is counted).
    pub fn notify_anomalies(&self) -> usize {
        if self.mode != FleetMode::Ivr {
            return 0;
        }
        self.outcomes
            .iter()
            .filter(|o| o.result.is_ok() && o.check_syncs != 1)
            .count()
    }

    /// Human-readable summary, as `phone-sim fleet` prints it.
    pub fn summary(&self) -> String {
        let t = self.times();
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1000.0)
            })
        };
        let mut s = format!(
            "phones: {}  provisioned: {}  failed: {}  unfinished: {}  wall: {:.2} s\n\
             time-to-provisioned  p50 {}  p95 {}  max {}\n",
            self.outcomes.len(),
            self.succeeded(),
            self.outcomes.len() - self.succeeded(),
            self.unfinished,
            self.wall.as_secs_f64(),
            ms(percentile(&t, 50.0)),
            ms(percentile(&t, 95.0)),
            ms(t.last().copied()),
        );
        let waits: u64 = self
            .outcomes
            .iter()
            .map(|o| u64::from(o.retry_after_waits))
            .sum();
        let mut by_step: BTreeMap<Step, u64> = BTreeMap::new();
        for (step, n) in self.outcomes.iter().flat_map(|o| o.retries.iter()) {
            *by_step.entry(*step).or_default() += u64::from(*n);
        }
        let retries: u64 = by_step.values().sum();
        let refreshes: usize = self.outcomes.iter().map(|o| o.refreshes).sum();
        s.push_str(&format!(
            "503 Retry-After waits: {waits}  retries after a failure: {retries}"
        ));
        for (step, n) in &by_step {
            s.push_str(&format!("  {step} retries: {n}"));
        }
        s.push_str(&format!("  registration refreshes: {refreshes}\n"));
        s.push_str("failures by step:");
        for (step, n) in self.failures_by_step() {
            s.push_str(&format!("  {step} {n}"));
        }
        s.push('\n');
        if self.outcomes.iter().any(|o| o.refetches > 0) {
            let followed: usize = self.outcomes.iter().map(|o| o.refetches).sum();
            let reached = self.outcomes.iter().filter(|o| o.check_syncs > 0).count();
            s.push_str(&format!(
                "followed: {reached} phones got check-sync, {followed} re-fetches and registrations\n"
            ));
        }
        let anomalies = self.notify_anomalies();
        if anomalies > 0 {
            s.push_str(&format!(
                "provisioned phones without exactly one check-sync: {anomalies}\n"
            ));
        }
        // A few first errors, so a failed run says why without a log level.
        for o in self.outcomes.iter().filter(|o| o.result.is_err()).take(5) {
            if let Err((step, e)) = &o.result {
                s.push_str(&format!(
                    "  {} {} dn {}: {step}: {e}\n",
                    o.vendor, o.mac, o.dn
                ));
            }
        }
        s
    }
}

/// Until `until`, does what a booted phone does: answers every check-sync (re-fetch,
/// register again) and refreshes its registration when due. Returns the check-syncs followed
/// through and the refreshes that succeeded.
pub async fn follow(phone: &mut Phone, until: Instant) -> (usize, usize) {
    let (mut followed, mut refreshed) = (0, 0);
    loop {
        let now = Instant::now();
        if now >= until {
            return (followed, refreshed);
        }
        let wake = phone.refresh_due().map_or(until, |r| r.min(until));
        let next = phone.check_sync_count() + 1;
        match phone
            .wait_check_sync(next, wake.saturating_duration_since(now))
            .await
        {
            Ok(_) => {
                if let Ok(Some(cfg)) = phone.fetch_config().await {
                    if phone.register(&cfg).await.is_ok() {
                        followed += 1;
                    }
                }
            }
            Err(_) if phone.refresh_due().is_some_and(|r| r <= Instant::now()) => {
                match phone.refresh().await {
                    Ok(_) => refreshed += 1,
                    Err(e) => {
                        tracing::info!(mac = %phone.spec().mac, "registration refresh failed: {e}")
                    }
                }
            }
            Err(_) => {}
        }
    }
}

/// Runs the fleet to completion (or to its overall timeout).
pub async fn run_fleet(spec: FleetSpec) -> FleetReport {
    let started = Instant::now();
    let bar = if spec.progress {
        let b = ProgressBar::new(u64::from(spec.count));
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} provisioned {msg}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for index in 0..spec.count {
        let vendor = spec.vendor.for_index(index);
        let mac = Mac::generated(vendor, spec.mac_offset.wrapping_add(index));
        let dn = (spec.dn_start + index).to_string();
        let mut urls: Vec<String> = std::iter::once(spec.prov_url.clone())
            .chain(spec.fallback_prov_urls.iter().cloned())
            .collect();
        if spec.spread {
            let n = urls.len();
            urls.rotate_left(index as usize % n);
        }
        let phone_spec = PhoneSpec {
            mac,
            vendor,
            prov_url: urls.remove(0),
            fallback_prov_urls: urls,
            local_ip: if spec.spread_ips {
                let i = spec.mac_offset.saturating_sub(1).wrapping_add(index);
                IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8])
            } else {
                spec.local_ip
            },
        };
        let follow_until = spec.follow.map(|f| started + f);
        let mut options = spec.options.clone();
        options.dns = spec.dns.or(options.dns);
        let mode = spec.mode;
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let permit = sem.acquire_owned().await;
            let mut outcome = PhoneOutcome {
                index,
                mac,
                vendor,
                dn: dn.clone(),
                result: Err((Step::Fetch, String::new())),
                timings: Vec::new(),
                check_syncs: 0,
                refetches: 0,
                refreshes: 0,
                retry_after_waits: 0,
                retries: BTreeMap::new(),
            };
            let mut phone = match Phone::with_options(phone_spec, options).await {
                Ok(p) => p,
                Err(e) => {
                    outcome.result = Err((Step::Fetch, format!("cannot start phone: {e}")));
                    return outcome;
                }
            };
            let r = match mode {
                FleetMode::Ivr => phone.run_ivr_provisioning(&dn).await,
                FleetMode::ZeroTouch => phone.run_zero_touch().await,
            };
            match r {
                Ok(p) => {
                    outcome.dn = p.config.user.clone();
                    outcome.result = Ok(p.total);
                    outcome.timings = p.timings;
                }
                Err(e) => {
                    outcome.result = Err((e.step, e.error.to_string()));
                    outcome.timings = e.timings;
                }
            }
            if let (Some(until), true) = (follow_until, outcome.result.is_ok()) {
                // Booted: the next phone may start; this one follows its check-syncs.
                drop(permit);
                (outcome.refetches, outcome.refreshes) = follow(&mut phone, until).await;
            }
            outcome.check_syncs = phone.check_sync_count();
            outcome.retry_after_waits = phone.retry_after_waits();
            outcome.retries = phone.retries().clone();
            phone.shutdown();
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(spec.count as usize);
    let mut failed = 0u64;
    let deadline = tokio::time::Instant::now() + spec.overall_timeout;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(o))) => {
                if o.result.is_err() {
                    failed += 1;
                    bar.set_message(format!("({failed} failed)"));
                }
                bar.inc(1);
                outcomes.push(o);
            }
            Ok(Some(Err(e))) => tracing::error!("phone task: {e}"),
            Ok(None) => break,
            Err(_) => {
                set.abort_all();
                break;
            }
        }
    }
    bar.finish();
    let unfinished = spec.count.saturating_sub(outcomes.len() as u32);
    outcomes.sort_by_key(|o| o.index);
    FleetReport {
        outcomes,
        wall: started.elapsed(),
        unfinished,
        mode: spec.mode,
    }
}
