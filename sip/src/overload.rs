//! Overload: a request sipdm will not take on now is answered `503 Service Unavailable` with a
//! `Retry-After` (RFC 3261 §21.5.4), never dropped in silence.
//!
//! Two measures, either of which makes the endpoint overloaded:
//!
//! * **in progress** — requests handed to the handler chain whose handling has not finished
//!   (waiting for a credential look-up, a full binding-store queue, a ringing trunk…), plus
//!   stream messages queued for the dispatchers. Above [`OverloadConfig::max_in_progress`];
//! * **queued in the kernel** — a UDP datagram that waited in the socket's receive buffer
//!   longer than [`OverloadConfig::max_queue_delay`] before a receiver thread read it (the
//!   kernel's receive timestamp): the receiver threads are behind, whatever is in progress.
//!
//! Only new out-of-dialog requests are refused (REGISTER, INVITE, SUBSCRIBE, OPTIONS…): an ACK,
//! a CANCEL and requests inside a dialog (a To tag) finish work already taken on, and a
//! retransmission of a request in progress is absorbed by its transaction as always. The 503
//! is stateless: nothing is kept for it. Its `Retry-After` is drawn at random from
//! [`OverloadConfig::retry_after`], so that phones refused in the same second come back
//! spread over several instead of together.
//!
//! What the kernel drops when the receive buffer is full never reaches sipdm and cannot be
//! answered; the socket's drop count is read with each datagram (`SO_RXQ_OVFL`) into
//! [`crate::stats::Stats::udp_kernel_drops`]. The receive buffer should therefore hold more
//! than `max_queue_delay` of traffic, so that sipdm sheds first (see
//! [`crate::transport::TransportConfig::udp_buffer`]).

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Most requests in progress (and stream messages queued) before new ones get 503;
    /// 0: no limit.
    pub max_in_progress: usize,
    /// Longest a datagram may have waited in the receive buffer before a new request in it
    /// gets 503; zero: not checked.
    pub max_queue_delay: Duration,
    /// Seconds, `Retry-After` of the 503 drawn uniformly from this range.
    pub retry_after: RangeInclusive<u32>,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            max_in_progress: DEFAULT_MAX_IN_PROGRESS,
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

/// A REGISTER normally finishes within its first poll; what waits is a credential look-up
/// (a cold credential cache: one PostgreSQL query per REGISTER), a full store queue or a call
/// through a trunk. Five thousand of those is a second or two of work for a store answering a
/// few thousand look-ups a second: more is a store or a peer that no longer keeps up. (With
/// 1000, a storm of 2000 phones on a cold cache was answered 850 503s for work that took 2 s:
/// testbed/bench/boot_storm.sh with COLD=1.)
pub const DEFAULT_MAX_IN_PROGRESS: usize = 5000;
/// Under Timer A/E's first retransmission (T1, 500 ms): the 503 reaches the phone before it
/// sends the request again, which would double the load that made the queue.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(200);
pub const DEFAULT_RETRY_AFTER: RangeInclusive<u32> = 5..=15;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// This many requests were in progress or queued.
    InProgress(usize),
    /// The datagram waited this long in the receive buffer.
    Queued(Duration),
}

/// The endpoint's overload state: the in-progress count and the policy.
#[derive(Debug)]
pub struct Overload {
    cfg: OverloadConfig,
    in_progress: AtomicUsize,
    /// Unix second of the last warning logged.
    logged: AtomicU64,
}

impl Overload {
    pub fn new(cfg: OverloadConfig) -> Arc<Overload> {
        Arc::new(Overload {
            cfg,
            in_progress: AtomicUsize::new(0),
            logged: AtomicU64::new(0),
        })
    }

    /// Counts a request as in progress until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// Requests whose handling has started and not finished.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// Whether a new request is to be refused: `queued` stream messages wait for the
    /// dispatchers, and the request itself waited `waited` in a receive buffer.
    pub fn check(&self, queued: impl FnOnce() -> usize, waited: Duration) -> Option<Shed> {
        let max_delay = self.cfg.max_queue_delay;
        if !max_delay.is_zero() && waited > max_delay {
            return Some(Shed::Queued(waited));
        }
        let max = self.cfg.max_in_progress;
        if max == 0 {
            return None;
        }
        let busy = self.in_progress();
        // The queue is only looked at when the count alone is near the limit.
        if busy >= max {
            return Some(Shed::InProgress(busy));
        }
        let total = busy + queued();
        (total >= max).then_some(Shed::InProgress(total))
    }

    /// Logs that requests are being refused, at most once every ten seconds (an overload
    /// lasts, and the log must not add to it). `total`: 503s sent so far.
    pub fn log(&self, why: Shed, total: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.logged.load(Ordering::Relaxed);
        if now < last + 10
            || self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match why {
            Shed::InProgress(n) => tracing::warn!(
                in_progress = n,
                limit = self.cfg.max_in_progress,
                total,
                "overloaded: answering new requests 503 with Retry-After"
            ),
            Shed::Queued(d) => tracing::warn!(
                waited_ms = d.as_millis() as u64,
                limit_ms = self.cfg.max_queue_delay.as_millis() as u64,
                total,
                "overloaded (datagrams wait in the receive buffer): answering new requests 503 with Retry-After"
            ),
        }
    }

    /// A `Retry-After` value, seconds.
    pub fn retry_after(&self) -> u32 {
        let r = &self.cfg.retry_after;
        if r.start() >= r.end() {
            return *r.start();
        }
        rand::thread_rng().gen_range(r.clone())
    }
}

/// A request in progress (see [`Overload::begin`]).
#[derive(Debug)]
pub struct InProgress(Arc<Overload>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overload(max: usize, delay_ms: u64) -> Arc<Overload> {
        Overload::new(OverloadConfig {
            max_in_progress: max,
            max_queue_delay: Duration::from_millis(delay_ms),
            retry_after: 5..=15,
        })
    }

    #[test]
    fn in_progress_at_the_limit_sheds_until_a_request_finishes() {
        let o = overload(2, 0);
        assert_eq!(o.check(|| 0, Duration::ZERO), None);
        let a = o.begin();
        let _b = o.begin();
        assert_eq!(o.check(|| 0, Duration::ZERO), Some(Shed::InProgress(2)));
        drop(a);
        assert_eq!(o.check(|| 0, Duration::ZERO), None);
        // Queued stream messages count with those in progress.
        assert_eq!(o.check(|| 1, Duration::ZERO), Some(Shed::InProgress(2)));
    }

    #[test]
    fn a_long_wait_in_the_receive_buffer_sheds_whatever_is_in_progress() {
        let o = overload(0, 100);
        assert_eq!(o.check(|| 0, Duration::from_millis(99)), None);
        assert_eq!(
            o.check(|| 0, Duration::from_millis(150)),
            Some(Shed::Queued(Duration::from_millis(150)))
        );
        // Zero turns either measure off.
        let off = overload(0, 0);
        let _g = off.begin();
        assert_eq!(off.check(|| 10_000, Duration::from_secs(5)), None);
    }

    #[test]
    fn retry_after_is_spread_over_the_range() {
        let o = overload(1, 0);
        let seen: std::collections::BTreeSet<u32> = (0..500).map(|_| o.retry_after()).collect();
        assert!(seen.iter().all(|s| (5..=15).contains(s)), "{seen:?}");
        assert!(seen.len() >= 8, "spread: {seen:?}");
        let fixed = Overload::new(OverloadConfig {
            retry_after: 7..=7,
            ..OverloadConfig::default()
        });
        assert_eq!(fixed.retry_after(), 7);
    }
}
