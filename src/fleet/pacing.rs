//! How fast check-syncs go out: a budget per site (its switch and provisioning node) and per
//! source address (many phones behind one NAT share it, and a burst from it looks like an
//! attack to the site's own fail2ban), each a steady rate with jitter, never a burst.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When the next check-sync of each key may leave.
#[derive(Debug)]
pub struct Pacer {
    per_site: Duration,
    per_source: Duration,
    jitter: Duration,
    next: HashMap<(Kind, String), Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Site,
    Source,
}

impl Pacer {
    /// `site_rate` and `source_rate` in check-syncs per second (> 0).
    pub fn new(site_rate: f64, source_rate: f64, jitter: Duration) -> Pacer {
        Pacer {
            per_site: Duration::from_secs_f64(1.0 / site_rate),
            per_source: Duration::from_secs_f64(1.0 / source_rate),
            jitter,
            next: HashMap::new(),
        }
    }

    /// The instant a check-sync to a phone of `site` behind `source` may leave (now or later).
    pub fn slot(&self, site: &str, source: &str, now: Instant) -> Instant {
        [(Kind::Site, site), (Kind::Source, source)]
            .iter()
            .filter_map(|(k, v)| self.next.get(&(*k, (*v).to_owned())))
            .fold(now, |a, b| a.max(*b))
    }

    /// A check-sync left at `sent` (at or after its slot): the next of its site and of its
    /// source wait one interval from then, plus up to `jitter`. Counting from when it really
    /// left, not from the slot, a late wake-up never lets the next ones bunch up: no key ever
    /// has more than its rate within any one second.
    pub fn sent(&mut self, site: &str, source: &str, sent: Instant) {
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(rand::random::<f64>())
        };
        self.next
            .insert((Kind::Site, site.to_owned()), sent + self.per_site + jitter);
        self.next.insert(
            (Kind::Source, source.to_owned()),
            sent + self.per_source + jitter,
        );
    }

    /// [`Pacer::slot`] and [`Pacer::sent`] in one, for a send that leaves exactly on its slot.
    #[cfg(test)]
    fn book(&mut self, site: &str, source: &str, now: Instant) -> Instant {
        let at = self.slot(site, source, now);
        self.sent(site, source, at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_goes_faster_than_its_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0, 2.0, Duration::ZERO);
        // Ten phones of one site behind ten sources: 100 ms apart.
        let slots: Vec<Instant> = (0..10)
            .map(|i| p.book("site1", &format!("10.0.0.{i}"), t0))
            .collect();
        for w in slots.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(100));
        }
        // Two phones behind one NAT, on another site: 500 ms apart.
        let a = p.book("site2", "192.0.2.1", t0);
        let b = p.book("site2", "192.0.2.1", t0);
        assert!(b - a >= Duration::from_millis(500));
        // Another site is not held up by the first.
        assert_eq!(p.book("site3", "198.51.100.1", t0), t0);
    }

    #[test]
    fn jitter_only_ever_adds() {
        let t0 = Instant::now();
        let mut p = Pacer::new(5.0, 5.0, Duration::from_millis(50));
        let mut last = p.book("s", "x", t0);
        for _ in 0..20 {
            let next = p.book("s", "x", t0);
            let gap = next - last;
            assert!(gap >= Duration::from_millis(200) && gap < Duration::from_millis(250));
            last = next;
        }
    }
}
