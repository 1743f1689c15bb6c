//! Provisioning files carry SIP credentials, so the provisioning URL is guarded against MAC
//! scanning: a source that asks for more distinct files within a window than a phone (or a
//! site behind one NAT address) ever would is locked out for a while, and only configured
//! networks are served at all. Each lockout is logged once, not once per request.

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
    Locked { retry_after: Duration },
}

struct Source {
    window_start: Instant,
    names: HashSet<u64>,
    locked_until: Option<Instant>,
}

pub struct ScanGuard {
    cfg: ProvSecurityConfig,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

impl ScanGuard {
    pub fn new(cfg: ProvSecurityConfig) -> Self {
        ScanGuard { cfg, sources: Mutex::new(HashMap::new()) }
    }

    /// Decides on one request for `file` from `ip`, and counts it.
    pub fn check(&self, ip: IpAddr, file: &str) -> Verdict {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        if !self.cfg.allowed_networks.is_empty() && !self.cfg.allowed_networks.iter().any(|n| n.contains(&ip)) {
            return Verdict::Forbidden;
        }
        let max = self.cfg.max_files_per_source;
        if max == 0 {
            return Verdict::Serve;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.window_seconds.max(1));
        let lockout = Duration::from_secs(self.cfg.lockout_seconds);
        let mut sources = self.sources.lock();
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&ip) {
            sources.retain(|_, s| s.locked_until.is_some_and(|t| t > now) || now.duration_since(s.window_start) < window);
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let s = sources.entry(ip).or_insert_with(|| Source { window_start: now, names: HashSet::new(), locked_until: None });
        if let Some(until) = s.locked_until {
            if until > now {
                return Verdict::Locked { retry_after: until - now };
            }
            s.locked_until = None;
            s.window_start = now;
            s.names.clear();
        }
        if now.duration_since(s.window_start) >= window {
            s.window_start = now;
            s.names.clear();
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        file.to_ascii_lowercase().hash(&mut h);
        s.names.insert(h.finish());
        if s.names.len() as u32 > max {
            s.locked_until = Some(now + lockout);
            s.names.clear();
            tracing::warn!(source = %ip, files = max + 1, window_s = window.as_secs(), lockout_s = lockout.as_secs(),
                "provisioning: source locked out (asked for more distinct files than a phone would; MAC scanning?)");
            metrics::counter!("sipdm_prov_lockouts_total").increment(1);
            return Verdict::Locked { retry_after: lockout };
        }
        Verdict::Serve
    }
}
