//! Throttling of repeated authentication failures, so a misconfigured or hostile phone cannot
//! make us hash and look up credentials at line rate.
//!
//! Failures count per (source address, digest user): every phone behind a NAT, a switch or an
//! SBC shares one address, and one phone with a wrong password must not lock out the others.
//! A second, higher ceiling counts per source alone (a scanner trying many user names from one
//! address); trusted peers (switches, SBCs) are never throttled as a whole. Each key is logged
//! once per window, not once per failure.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use parking_lot::Mutex;

#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures allowed per (source, user) within `window` before that user is refused from
    /// that source (0 disables all throttling).
    pub max_failures: u32,
    /// Failures allowed per source, whatever the users, within `window` (0: no such ceiling).
    pub max_failures_per_source: u32,
    pub window: Duration,
    /// Keys remembered at most (oldest windows dropped first).
    pub max_sources: usize,
    /// Sources never throttled as a whole (switches and SBCs that many phones share).
    pub trusted: Vec<IpNet>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 20,
            max_failures_per_source: 200,
            window: Duration::from_secs(60),
            max_sources: 100_000,
            trusted: Vec::new(),
        }
    }
}

struct Entry {
    window_start: Instant,
    failures: u32,
    logged: bool,
}

/// Failure counts per key within a window.
struct Counter<K> {
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new() -> Self {
        Counter {
            entries: HashMap::new(),
        }
    }

    fn reached(&self, key: &K, max: u32, window: Duration) -> bool {
        max != 0
            && self
                .entries
                .get(key)
                .is_some_and(|e| e.window_start.elapsed() < window && e.failures >= max)
    }

    /// Counts one failure; true when this one reached `max` (the moment to log).
    fn count(&mut self, key: &K, max: u32, window: Duration, capacity: usize) -> bool {
        if self.entries.len() >= capacity && !self.entries.contains_key(key) {
            self.entries
                .retain(|_, e| e.window_start.elapsed() < window);
            if self.entries.len() >= capacity {
                self.entries.clear();
            }
        }
        let now = Instant::now();
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            window_start: now,
            failures: 0,
            logged: false,
        });
        if now.duration_since(e.window_start) >= window {
            *e = Entry {
                window_start: now,
                failures: 0,
                logged: false,
            };
        }
        e.failures += 1;
        if max != 0 && e.failures >= max && !e.logged {
            e.logged = true;
            return true;
        }
        false
    }
}

struct State {
    pairs: Counter<(IpAddr, String)>,
    sources: Counter<IpAddr>,
}

pub struct Throttle {
    cfg: ThrottleConfig,
    state: Mutex<State>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Throttle {
            cfg,
            state: Mutex::new(State {
                pairs: Counter::new(),
                sources: Counter::new(),
            }),
        }
    }

    fn trusted(&self, source: IpAddr) -> bool {
        self.cfg.trusted.iter().any(|n| n.contains(&source))
    }

    /// Whether `user` from `source` is currently refused.
    pub fn is_blocked(&self, source: IpAddr, user: &str) -> bool {
        if self.cfg.max_failures == 0 {
            return false;
        }
        let state = self.state.lock();
        let window = self.cfg.window;
        state
            .pairs
            .reached(&(source, user.to_owned()), self.cfg.max_failures, window)
            || (!self.trusted(source)
                && state
                    .sources
                    .reached(&source, self.cfg.max_failures_per_source, window))
    }

    /// Counts a failed authentication of `user` from `source`.
    pub fn record_failure(&self, source: IpAddr, user: &str) {
        if self.cfg.max_failures == 0 {
            return;
        }
        let (window, capacity) = (self.cfg.window, self.cfg.max_sources);
        let mut state = self.state.lock();
        if state.pairs.count(
            &(source, user.to_owned()),
            self.cfg.max_failures,
            window,
            capacity,
        ) {
            tracing::warn!(%source, user, failures = self.cfg.max_failures, window_secs = window.as_secs(), "authentication failures throttled for this user from this source");
        }
        if !self.trusted(source)
            && state
                .sources
                .count(&source, self.cfg.max_failures_per_source, window, capacity)
        {
            tracing::warn!(%source, failures = self.cfg.max_failures_per_source, window_secs = window.as_secs(), "authentication failures throttled for every user from this source");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_pair: u32, per_source: u32, trusted: &[&str]) -> Throttle {
        Throttle::new(ThrottleConfig {
            max_failures: per_pair,
            max_failures_per_source: per_source,
            window: Duration::from_secs(60),
            max_sources: 10,
            trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn blocks_the_user_from_that_source_only() {
        let t = throttle(3, 100, &[]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            t.record_failure(ip, "1000");
        }
        assert!(!t.is_blocked(ip, "1000"));
        t.record_failure(ip, "1000");
        assert!(t.is_blocked(ip, "1000"));
        // Another phone behind the same address, and the same user elsewhere, go on.
        assert!(!t.is_blocked(ip, "1001"));
        assert!(!t.is_blocked(other, "1000"));
    }

    #[test]
    fn a_source_trying_many_users_hits_the_source_ceiling() {
        let t = throttle(3, 5, &[]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for u in 0..5 {
            t.record_failure(ip, &format!("{}", 2000 + u));
        }
        assert!(t.is_blocked(ip, "9999"), "the scanner's next user");
    }

    #[test]
    fn a_trusted_switch_is_never_blocked_as_a_whole() {
        let t = throttle(3, 5, &["127.0.0.31/32"]);
        let sw: IpAddr = "127.0.0.31".parse().unwrap();
        for u in 0..50 {
            t.record_failure(sw, &format!("{}", 2000 + u));
        }
        assert!(!t.is_blocked(sw, "1000"));
        // Its one misbehaving user still is.
        for _ in 0..3 {
            t.record_failure(sw, "2000");
        }
        assert!(t.is_blocked(sw, "2000"));
    }

    #[test]
    fn zero_disables() {
        let t = throttle(0, 0, &[]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            t.record_failure(ip, "1000");
        }
        assert!(!t.is_blocked(ip, "1000"));
    }
}
