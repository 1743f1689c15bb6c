//! Provisioning files carry SIP credentials, so the provisioning URL is guarded against MAC
//! scanning: a source that asks for more distinct files within a window than a phone (or a
//! site behind one NAT address) ever would is locked out for a while, and only configured
//! networks are served at all. Each lockout is logged once, not once per request.
//!
//! Wrong HTTP credentials count per (source, MAC): one phone with a wrong password behind a
//! NAT is refused its own files, not its neighbours'. A higher ceiling counts per source, and
//! `trusted-networks` (a proxy or a site's NAT) are never locked out as a whole.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::ProvSecurityConfig;

/// Sources remembered at most; past it the oldest windows are forgotten.
const MAX_SOURCES: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// Not from an allowed network: 403.
    Forbidden,
    /// Locked out after scanning: 429 with Retry-After.
    Locked {
        retry_after: Duration,
    },
}

struct Source {
    window_start: Instant,
    names: HashSet<u64>,
    auth_failures: u32,
    locked_until: Option<Instant>,
}

/// Wrong credentials for one MAC from one source.
struct PairFailures {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

pub struct ScanGuard {
    cfg: ProvSecurityConfig,
    sources: Mutex<HashMap<IpAddr, Source>>,
    pairs: Mutex<HashMap<(IpAddr, String), PairFailures>>,
    /// Whether any source was ever locked out: spares the hot path the lock when nothing is
    /// limited and nobody failed.
    any_locked: std::sync::atomic::AtomicBool,
}

impl ScanGuard {
    pub fn new(cfg: ProvSecurityConfig) -> Self {
        ScanGuard {
            cfg,
            sources: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            any_locked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.cfg.trusted_networks.iter().any(|n| n.contains(&ip))
    }

    /// Decides on one request for `file` from `ip`, and counts it.
    pub fn check(&self, ip: IpAddr, file: &str) -> Verdict {
        let ip = canonical(ip);
        if !self.cfg.allowed_networks.is_empty()
            && !self.cfg.allowed_networks.iter().any(|n| n.contains(&ip))
        {
            return Verdict::Forbidden;
        }
        // A proxy or a whole site's NAT: never locked out as a whole.
        let max = match self.trusted(ip) {
            true => 0,
            false => self.cfg.max_files_per_source,
        };
        if max == 0 && !self.any_locked.load(std::sync::atomic::Ordering::Relaxed) {
            return Verdict::Serve;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.window_seconds.max(1));
        let lockout = Duration::from_secs(self.cfg.lockout_seconds);
        let mut sources = self.sources.lock();
        if max == 0 {
            // No file limit, but a lockout for failed credentials still holds.
            return match sources.get(&ip).and_then(|s| s.locked_until) {
                Some(until) if until > now => Verdict::Locked {
                    retry_after: until - now,
                },
                _ => Verdict::Serve,
            };
        }
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&ip) {
            sources.retain(|_, s| {
                s.locked_until.is_some_and(|t| t > now)
                    || now.duration_since(s.window_start) < window
            });
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let s = sources.entry(ip).or_insert_with(|| Source {
            window_start: now,
            names: HashSet::new(),
            auth_failures: 0,
            locked_until: None,
        });
        if let Some(until) = s.locked_until {
            if until > now {
                return Verdict::Locked {
                    retry_after: until - now,
                };
            }
            s.locked_until = None;
            s.window_start = now;
            s.names.clear();
            s.auth_failures = 0;
        }
        if now.duration_since(s.window_start) >= window {
            s.window_start = now;
            s.names.clear();
            s.auth_failures = 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        file.to_ascii_lowercase().hash(&mut h);
        s.names.insert(h.finish());
        if s.names.len() as u32 > max {
            self.any_locked
                .store(true, std::sync::atomic::Ordering::Relaxed);
            s.locked_until = Some(now + lockout);
            s.names.clear();
            tracing::warn!(source = %ip, files = max + 1, window_s = window.as_secs(), lockout_s = lockout.as_secs(),
                "provisioning: source locked out (asked for more distinct files than a phone would; MAC scanning?)");
            metrics::counter!("sipdm_prov_lockouts_total").increment(1);
            return Verdict::Locked {
                retry_after: lockout,
            };
        }
        Verdict::Serve
    }

    /// How long `ip` is still refused `mac`'s files after repeated wrong credentials.
    pub fn auth_locked(&self, ip: IpAddr, mac: &str) -> Option<Duration> {
        if self.cfg.max_auth_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let pairs = self.pairs.lock();
        let until = pairs.get(&(canonical(ip), mac.to_owned()))?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts wrong credentials for `mac` from `ip`: too many in a window refuse `ip` that
    /// phone's files; too many for any MACs lock the whole source out (not a trusted one).
    /// Each lockout is logged once.
    pub fn auth_failed(&self, ip: IpAddr, mac: &str) {
        let max = self.cfg.max_auth_failures;
        if max == 0 {
            return;
        }
        let ip = canonical(ip);
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.window_seconds.max(1));
        let lockout = Duration::from_secs(self.cfg.lockout_seconds);
        {
            let mut pairs = self.pairs.lock();
            if pairs.len() >= MAX_SOURCES {
                pairs.retain(|_, p| {
                    p.locked_until.is_some_and(|t| t > now)
                        || now.duration_since(p.window_start) < window
                });
                if pairs.len() >= MAX_SOURCES {
                    pairs.clear();
                }
            }
            let p = pairs
                .entry((ip, mac.to_owned()))
                .or_insert_with(|| PairFailures {
                    window_start: now,
                    failures: 0,
                    locked_until: None,
                });
            if now.duration_since(p.window_start) >= window
                && p.locked_until.is_none_or(|t| t <= now)
            {
                *p = PairFailures {
                    window_start: now,
                    failures: 0,
                    locked_until: None,
                };
            }
            p.failures += 1;
            if p.failures >= max && p.locked_until.is_none() {
                p.locked_until = Some(now + lockout);
                tracing::warn!(source = %ip, mac, failures = p.failures, "provisioning: source refused this phone's files after failed credentials");
                metrics::counter!("sipdm_prov_lockouts_total").increment(1);
            }
        }
        let ceiling = self.cfg.max_auth_failures_per_source;
        if ceiling == 0 || self.trusted(ip) {
            return;
        }
        let mut sources = self.sources.lock();
        let s = sources.entry(ip).or_insert_with(|| Source {
            window_start: now,
            names: HashSet::new(),
            auth_failures: 0,
            locked_until: None,
        });
        s.auth_failures += 1;
        if s.auth_failures >= ceiling && s.locked_until.is_none() {
            self.any_locked
                .store(true, std::sync::atomic::Ordering::Relaxed);
            s.locked_until = Some(now + lockout);
            tracing::warn!(source = %ip, failures = s.auth_failures, "provisioning: source locked out after failed credentials for many phones");
            metrics::counter!("sipdm_prov_lockouts_total").increment(1);
        }
    }
}

/// IPv4-mapped IPv6 sources (a dual-stack socket) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}
