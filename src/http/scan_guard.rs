//! Provisioning files carry SIP credentials, so the provisioning URL is guarded against MAC
//! scanning, and only configured networks are served at all. Each lockout is logged once, not
//! once per request.
//!
//! A scan is told from a fleet by what it asks for, not by how much: a phone asks for the files
//! of its own MAC, which is a device sipdm knows (imported, or recorded at its first fetch); a
//! scanner guesses MACs and nearly all of its guesses are nobody's. So the guard counts, per
//! source and window, the MACs that were no known device when first asked for
//! (`max-unknown-macs-per-source`, on by default): thousands of known phones behind one NAT or
//! relay booting at once count nothing, a source probing unknown MACs is locked out. Only a
//! phone's file whose MAC is new for its source is looked up in the store (one query per
//! source, MAC and window), and not the first MAC of a source (one phone per address costs no
//! query). What this cannot tell from a fleet is a scanner that guesses only existing MACs;
//! `url-key` and `http-auth` are the guards against that. An optional ceiling on distinct files
//! per source (`max-files-per-source`, off by default) counts everything.
//!
//! Wrong HTTP credentials count per (source, MAC): one phone with a wrong password behind a
//! NAT is refused its own files, not its neighbours'. A higher ceiling counts per source, and
//! `trusted-networks` (a proxy or a site's NAT) are never locked out as a whole.

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::ProvSecurityConfig;
use crate::provisioning::mac::Mac;

/// Sources remembered at most; past it the oldest windows are forgotten.
const MAX_SOURCES: usize = 100_000;

/// File names and MACs remembered per source and window, past which the memo starts again.
/// Forgetting costs a repeated look-up, never a wrong verdict: a MAC asked for once is a
/// device from then on (its first fetch recorded it), so it is not counted twice.
const MAX_SEEN_PER_SOURCE: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// A phone's file of a MAC this source has not asked for in this window (and not its
    /// first): serve it if the MAC is a known device; if it is not, the caller reports
    /// [`ScanGuard::unknown_mac`] and follows that verdict instead.
    LookUp(Mac),
    /// Not from an allowed network: 403.
    Forbidden,
    /// Locked out after scanning: 429 with Retry-After.
    Locked {
        retry_after: Duration,
    },
}

struct Source {
    window_start: Instant,
    /// Hashes of the file names asked for in this window.
    names: HashSet<u64>,
    /// The first MAC asked for in this window: taken for the source's own phone.
    first_mac: Option<Mac>,
    /// Other MACs asked for in this window.
    macs: HashSet<Mac>,
    /// Of those, the ones that were no known device.
    unknown_macs: u32,
    auth_failures: u32,
    locked_until: Option<Instant>,
}

impl Source {
    fn new(now: Instant) -> Source {
        Source {
            window_start: now,
            names: HashSet::new(),
            first_mac: None,
            macs: HashSet::new(),
            unknown_macs: 0,
            auth_failures: 0,
            locked_until: None,
        }
    }

    /// A new window: nothing counted.
    fn restart(&mut self, now: Instant) {
        *self = Source::new(now);
    }
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
    /// Whether any source was ever locked out: spares a trusted source's request the lock
    /// when nobody failed.
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

    fn window(&self) -> Duration {
        Duration::from_secs(self.cfg.window_seconds.max(1))
    }

    /// Decides on one request for `file` from `ip`, and counts it. `mac_of` names the MAC of
    /// a phone's own file (`None` for common files and names nobody serves); it is asked only
    /// for a name this source has not asked for in this window.
    pub fn check(
        &self,
        ip: IpAddr,
        file: &str,
        mac_of: impl FnOnce(&str) -> Option<Mac>,
    ) -> Verdict {
        let ip = canonical(ip);
        if !self.cfg.allowed_networks.is_empty()
            && !self.cfg.allowed_networks.iter().any(|n| n.contains(&ip))
        {
            return Verdict::Forbidden;
        }
        // A proxy or a whole site's NAT: never locked out as a whole.
        let (max_files, max_unknown) = match self.trusted(ip) {
            true => (0, 0),
            false => (
                self.cfg.max_files_per_source,
                self.cfg.max_unknown_macs_per_source,
            ),
        };
        let counting = max_files > 0 || max_unknown > 0;
        if !counting && !self.any_locked.load(std::sync::atomic::Ordering::Relaxed) {
            return Verdict::Serve;
        }
        let now = Instant::now();
        let window = self.window();
        let mut sources = self.sources.lock();
        if !counting {
            // No limit for this source, but a lockout for failed credentials still holds.
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
        let s = sources.entry(ip).or_insert_with(|| Source::new(now));
        if let Some(until) = s.locked_until {
            if until > now {
                return Verdict::Locked {
                    retry_after: until - now,
                };
            }
            s.restart(now);
        }
        if now.duration_since(s.window_start) >= window {
            s.restart(now);
        }
        if max_files == 0 && s.names.len() >= MAX_SEEN_PER_SOURCE {
            s.names.clear();
        }
        if !s.names.insert(name_hash(file)) {
            // Asked for before in this window, and judged then.
            return Verdict::Serve;
        }
        if max_files > 0 && s.names.len() as u32 > max_files {
            return self.lock_out(
                s,
                ip,
                now,
                "asked for more distinct files than phones would",
            );
        }
        if max_unknown == 0 {
            return Verdict::Serve;
        }
        let Some(mac) = mac_of(file) else {
            return Verdict::Serve;
        };
        match s.first_mac {
            None => {
                s.first_mac = Some(mac);
                Verdict::Serve
            }
            Some(first) if first == mac => Verdict::Serve,
            Some(_) => {
                if s.macs.len() >= MAX_SEEN_PER_SOURCE {
                    s.macs.clear();
                }
                match s.macs.insert(mac) {
                    true => Verdict::LookUp(mac),
                    false => Verdict::Serve,
                }
            }
        }
    }

    /// The MAC of a [`Verdict::LookUp`] is no known device: counts it against its source, and
    /// locks the source out past `max-unknown-macs-per-source`.
    pub fn unknown_mac(&self, ip: IpAddr, mac: Mac) -> Verdict {
        let ip = canonical(ip);
        let max = self.cfg.max_unknown_macs_per_source;
        if max == 0 || self.trusted(ip) {
            return Verdict::Serve;
        }
        let now = Instant::now();
        let mut sources = self.sources.lock();
        // Forgotten meanwhile (the memo was full): counted from a new window.
        let s = sources.entry(ip).or_insert_with(|| Source::new(now));
        if let Some(until) = s.locked_until.filter(|t| *t > now) {
            return Verdict::Locked {
                retry_after: until - now,
            };
        }
        s.unknown_macs += 1;
        if s.unknown_macs > max {
            tracing::debug!(source = %ip, %mac, "the unknown MAC over the limit");
            return self.lock_out(
                s,
                ip,
                now,
                "asked for the files of more unknown MACs than a site would; MAC scanning?",
            );
        }
        Verdict::Serve
    }

    /// Locks `s` (the source `ip`) out now; logged once per lockout.
    fn lock_out(&self, s: &mut Source, ip: IpAddr, now: Instant, why: &str) -> Verdict {
        let lockout = Duration::from_secs(self.cfg.lockout_seconds);
        self.any_locked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        s.locked_until = Some(now + lockout);
        s.names.clear();
        s.macs.clear();
        tracing::warn!(source = %ip, window_s = self.window().as_secs(), lockout_s = lockout.as_secs(),
            "provisioning: source locked out ({why})");
        metrics::counter!("sipdm_prov_lockouts_total").increment(1);
        Verdict::Locked {
            retry_after: lockout,
        }
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
        let window = self.window();
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
        let s = sources.entry(ip).or_insert_with(|| Source::new(now));
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

/// A file name as the guard remembers it: case does not make another file.
fn name_hash(file: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for b in file.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(extra: impl FnOnce(&mut ProvSecurityConfig)) -> ScanGuard {
        let mut cfg = ProvSecurityConfig::default();
        extra(&mut cfg);
        ScanGuard::new(cfg)
    }

    fn mac(i: u32) -> Mac {
        Mac::parse(&format!("0004f2{i:06x}")).unwrap()
    }

    /// One request for `i`'s own file, the store answering `known`.
    fn fetch(g: &ScanGuard, ip: IpAddr, i: u32, known: bool) -> Verdict {
        let file = format!("{}.cfg", mac(i));
        match g.check(ip, &file, |_| Some(mac(i))) {
            Verdict::LookUp(m) if !known => g.unknown_mac(ip, m),
            Verdict::LookUp(_) => Verdict::Serve,
            v => v,
        }
    }

    const NAT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn known_phones_behind_one_address_are_never_counted() {
        let g = guard(|_| {});
        for round in 0..2 {
            for i in 1..=5000 {
                assert_eq!(fetch(&g, NAT, i, true), Verdict::Serve, "{round} {i}");
            }
        }
    }

    #[test]
    fn unknown_macs_lock_the_source_out_past_the_default() {
        let g = guard(|_| {});
        let max = ProvSecurityConfig::default().max_unknown_macs_per_source;
        assert_eq!(max, 100);
        // The first MAC is the source's own phone; then `max` unknown ones are served.
        for i in 1..=max + 1 {
            assert_eq!(fetch(&g, NAT, i, false), Verdict::Serve, "{i}");
        }
        assert!(matches!(
            fetch(&g, NAT, max + 2, false),
            Verdict::Locked { .. }
        ));
        // Locked out whole: a known phone's file too, from that address, not from another.
        assert!(matches!(fetch(&g, NAT, 1, true), Verdict::Locked { .. }));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(fetch(&g, other, 1, true), Verdict::Serve);
    }

    #[test]
    fn a_name_or_mac_asked_again_is_not_looked_up_again() {
        let g = guard(|_| {});
        let first = g.check(NAT, "0004f2000001.cfg", |_| Some(mac(1)));
        assert_eq!(first, Verdict::Serve, "the source's first MAC");
        let second = g.check(NAT, "0004f2000002.cfg", |_| Some(mac(2)));
        assert_eq!(second, Verdict::LookUp(mac(2)));
        let again = g.check(NAT, "0004F2000002.cfg", |_| panic!("not parsed again"));
        assert_eq!(again, Verdict::Serve);
        let own_other_file = g.check(NAT, "0004f2000002-phone.cfg", |_| Some(mac(2)));
        assert_eq!(own_other_file, Verdict::Serve);
        let common = g.check(NAT, "000000000000.cfg", |_| None);
        assert_eq!(common, Verdict::Serve);
    }

    #[test]
    fn trusted_networks_and_zero_turn_it_off() {
        let g = guard(|c| c.trusted_networks = vec!["192.0.2.0/24".parse().unwrap()]);
        for i in 1..=500 {
            assert_eq!(
                g.check(NAT, &format!("{}.cfg", mac(i)), |_| Some(mac(i))),
                Verdict::Serve
            );
        }
        let g = guard(|c| c.max_unknown_macs_per_source = 0);
        for i in 1..=500 {
            assert_eq!(fetch(&g, NAT, i, false), Verdict::Serve);
        }
    }

    #[test]
    fn the_distinct_file_ceiling_still_counts_everything() {
        let g = guard(|c| c.max_files_per_source = 20);
        for i in 1..=20 {
            assert_eq!(fetch(&g, NAT, i, true), Verdict::Serve, "{i}");
        }
        assert!(matches!(fetch(&g, NAT, 21, true), Verdict::Locked { .. }));
    }

    #[test]
    fn no_section_means_the_same_defaults_as_an_empty_one() {
        let empty: ProvSecurityConfig = toml::from_str("").unwrap();
        let none = ProvSecurityConfig::default();
        assert_eq!(
            toml::to_string(&empty).unwrap(),
            toml::to_string(&none).unwrap()
        );
        assert_eq!(none.window_seconds, 600);
        assert_eq!(none.lockout_seconds, 900);
    }
}
