//! Throttling of repeated authentication failures per source address, so a misconfigured or
//! hostile phone cannot make us hash and look up credentials at line rate. Each source is
//! logged once per window, not once per failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failures allowed per source within `window` before requests are refused (0 disables).
    pub max_failures: u32,
    pub window: Duration,
    /// Sources remembered at most (oldest windows dropped first).
    pub max_sources: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 20,
            window: Duration::from_secs(60),
            max_sources: 100_000,
        }
    }
}

struct Entry {
    window_start: Instant,
    failures: u32,
    logged: bool,
}

pub struct Throttle {
    cfg: ThrottleConfig,
    sources: Mutex<HashMap<IpAddr, Entry>>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Throttle {
            cfg,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` is currently refused.
    pub fn is_blocked(&self, source: IpAddr) -> bool {
        if self.cfg.max_failures == 0 {
            return false;
        }
        let map = self.sources.lock();
        map.get(&source).is_some_and(|e| {
            e.window_start.elapsed() < self.cfg.window && e.failures >= self.cfg.max_failures
        })
    }

    /// Counts a failed authentication from `source`.
    pub fn record_failure(&self, source: IpAddr) {
        if self.cfg.max_failures == 0 {
            return;
        }
        let mut map = self.sources.lock();
        if map.len() >= self.cfg.max_sources && !map.contains_key(&source) {
            let window = self.cfg.window;
            map.retain(|_, e| e.window_start.elapsed() < window);
            if map.len() >= self.cfg.max_sources {
                map.clear();
            }
        }
        let now = Instant::now();
        let e = map.entry(source).or_insert(Entry {
            window_start: now,
            failures: 0,
            logged: false,
        });
        if now.duration_since(e.window_start) >= self.cfg.window {
            *e = Entry {
                window_start: now,
                failures: 0,
                logged: false,
            };
        }
        e.failures += 1;
        if e.failures >= self.cfg.max_failures && !e.logged {
            e.logged = true;
            tracing::warn!(%source, failures = e.failures, window_secs = self.cfg.window.as_secs(), "authentication failures throttled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let t = Throttle::new(ThrottleConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
            max_sources: 10,
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            t.record_failure(ip);
        }
        assert!(!t.is_blocked(ip));
        t.record_failure(ip);
        assert!(t.is_blocked(ip));
        assert!(!t.is_blocked(other));
    }
}
