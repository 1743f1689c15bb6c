//! RFC 3261 §17 timer values (Table 4 of §A), derived from T1, T2 and T4.

use std::time::Duration;

use crate::transport::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Configured values are clamped to this range so a typo cannot overflow timer arithmetic.
const MIN: Duration = Duration::from_millis(1);
const MAX: Duration = Duration::from_secs(3600);

impl Timers {
    fn t1c(&self) -> Duration {
        self.t1.clamp(MIN, MAX)
    }
    fn t2c(&self) -> Duration {
        self.t2.clamp(MIN, MAX)
    }
    fn t4c(&self) -> Duration {
        self.t4.clamp(MIN, MAX)
    }
    /// T2 as used for capping retransmit intervals.
    pub fn t2_capped(&self) -> Duration {
        self.t2c()
    }

    /// A: INVITE request retransmit, initially T1 (doubling), unreliable transports only.
    pub fn a(&self) -> Duration {
        self.t1c()
    }
    /// B: INVITE transaction timeout.
    pub fn b(&self) -> Duration {
        self.t1c() * 64
    }
    /// D: wait for response retransmits after ACK for non-2xx (≥ 32 s unreliable, 0 reliable).
    pub fn d(&self, p: Protocol) -> Duration {
        if p.is_reliable() {
            Duration::ZERO
        } else {
            (self.t1c() * 64).max(Duration::from_secs(32))
        }
    }
    /// E: non-INVITE request retransmit, initially T1, capped at T2.
    pub fn e(&self) -> Duration {
        self.t1c()
    }
    /// F: non-INVITE transaction timeout.
    pub fn f(&self) -> Duration {
        self.t1c() * 64
    }
    /// G: INVITE final response retransmit, initially T1, capped at T2.
    pub fn g(&self) -> Duration {
        self.t1c()
    }
    /// H: wait for ACK.
    pub fn h(&self) -> Duration {
        self.t1c() * 64
    }
    /// I: wait for ACK retransmits (T4 unreliable, 0 reliable).
    pub fn i(&self, p: Protocol) -> Duration {
        if p.is_reliable() {
            Duration::ZERO
        } else {
            self.t4c()
        }
    }
    /// J: wait for non-INVITE request retransmits (64·T1 unreliable, 0 reliable).
    pub fn j(&self, p: Protocol) -> Duration {
        if p.is_reliable() {
            Duration::ZERO
        } else {
            self.t1c() * 64
        }
    }
    /// K: wait for response retransmits (T4 unreliable, 0 reliable).
    pub fn k(&self, p: Protocol) -> Duration {
        if p.is_reliable() {
            Duration::ZERO
        } else {
            self.t4c()
        }
    }
    /// M (RFC 6026 §8.4): an INVITE client transaction answered 2xx stays Accepted this
    /// long, passing retransmitted 2xx (and 2xx from other forks) to the UAC core.
    pub fn m(&self) -> Duration {
        self.t1c() * 64
    }
}
