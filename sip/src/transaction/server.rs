//! Server transactions (RFC 3261 §17.2).
//!
//! Non-INVITE (§17.2.2, Figure 8) — the REGISTER hot path — is kept in sharded maps rather
//! than as one task per transaction: Trying → Proceeding → Completed, then forgotten after
//! Timer J. Expiry is generational: each shard keeps a current and a previous map and rotates
//! every J, so an entry lives between J and 2·J and no timer is armed per request. A
//! retransmitted request finds its entry and gets the last response again (or nothing while
//! the TU is still working), so it is never processed twice.
//!
//! INVITE (§17.2.1, Figure 7) is rarer and has real timers (G, H, I), so each one that
//! reaches Completed gets a small task.

use crate::fastmap::{self, FastMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::key::TsxKey;
use crate::transport::Flow;

const SHARDS: usize = 32;

/// Non-INVITE server transaction states (Figure 8). Terminated = absent from the table.
#[derive(Debug, Clone)]
enum NonInviteState {
    Trying,
    Proceeding { last: Kept },
    Completed { last: Kept },
}

/// The last response of a non-INVITE server transaction, kept to answer retransmissions.
///
/// Under a registration storm the table holds two responses per registration for up to
/// 2·J, and their memory (fresh pages, paid in page faults) was a visible share of the CPU.
/// About half of a response to REGISTER is the Via, From, To, Call-ID and CSeq copied from the
/// request; a retransmission is the same request and brings them again, so they are left out
/// and put back from it ([`super::TransactionLayer`] does, with the same To tag, which is why
/// non-INVITE tags are derived from the transaction).
#[derive(Debug, Clone)]
pub enum Kept {
    /// The whole message.
    Whole(Bytes),
    /// The message without the headers copied from the request, which go back in at `at`.
    Elided { rest: Bytes, at: u16 },
}

impl Kept {
    /// The size of what is kept (for tests and sizing).
    pub fn kept_len(&self) -> usize {
        match self {
            Kept::Whole(b) => b.len(),
            Kept::Elided { rest, .. } => rest.len(),
        }
    }
}

/// A transaction's key in the table: 128 bits of a per-table seeded hash of its [`TsxKey`].
/// Under a registration storm the table holds two entries per registration for up to 2·J,
/// and keeping the key's strings (and the flow, which a retransmission brings again) took
/// more memory than the response itself; fresh memory is paid in page faults. With seeded
/// 128 bits a collision is out of reach, for chance and for a peer crafting branches alike.
type Digest = u128;

struct Generations {
    current: FastMap<Digest, NonInviteState>,
    previous: FastMap<Digest, NonInviteState>,
    rotated: Instant,
}

/// What to do with an incoming non-INVITE request.
#[derive(Debug)]
pub enum Arrival {
    /// A new transaction: hand the request to the TU.
    New,
    /// A retransmission: send this again (or nothing while Trying), to where the
    /// retransmission came from.
    Retransmission(Option<(Kept, Flow)>),
}

pub struct NonInviteServerTable {
    shards: Vec<Mutex<Generations>>,
    timer_j: Duration,
    /// Entries per shard generation before an early rotation: bounds memory under a flood of
    /// distinct transactions (at the price of a shorter absorption window then).
    per_shard_cap: usize,
    seeds: (
        foldhash::quality::RandomState,
        foldhash::quality::RandomState,
    ),
}

/// Default bound on remembered non-INVITE server transactions (two generations): about
/// 0.5 GB with responses to REGISTER. Timer J (32 s) at 30 000 REGISTER/s needs up to 1.9 M; above that rate the
/// absorption window shortens rather than memory growing.
pub const DEFAULT_MAX_TRANSACTIONS: usize = 2_000_000;

impl NonInviteServerTable {
    pub fn new(timer_j: Duration) -> Self {
        Self::with_capacity(timer_j, DEFAULT_MAX_TRANSACTIONS)
    }

    /// `max` bounds the transactions remembered (current and previous generation together).
    pub fn with_capacity(timer_j: Duration, max: usize) -> Self {
        let now = Instant::now();
        NonInviteServerTable {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Generations {
                        current: fastmap::with_capacity(0),
                        previous: fastmap::with_capacity(0),
                        rotated: now,
                    })
                })
                .collect(),
            timer_j: timer_j.max(Duration::from_millis(1)),
            per_shard_cap: (max / SHARDS / 2).max(16),
            seeds: Default::default(),
        }
    }

    fn digest(&self, key: &TsxKey) -> Digest {
        use std::hash::BuildHasher;
        ((self.seeds.0.hash_one(key) as u128) << 64) | self.seeds.1.hash_one(key) as u128
    }

    fn shard(&self, d: Digest) -> &Mutex<Generations> {
        &self.shards[(d as usize) % SHARDS]
    }

    fn rotate(&self, g: &mut Generations) {
        let now = Instant::now();
        if now.duration_since(g.rotated) >= self.timer_j || g.current.len() >= self.per_shard_cap {
            // Pre-size the new generation like the last one: no rehash storms under load.
            let cap = g.current.len();
            let cur = std::mem::replace(&mut g.current, fastmap::with_capacity(cap));
            // After two rotation periods with no traffic both generations are stale.
            let next_previous = if now.duration_since(g.rotated) >= self.timer_j * 2 {
                fastmap::with_capacity(0)
            } else {
                cur
            };
            let old = std::mem::replace(&mut g.previous, next_previous);
            g.rotated = now;
            // Freeing tens of thousands of entries takes milliseconds: not under the shard lock
            // and not on a worker that is answering requests.
            if old.len() > 1024 && tokio::runtime::Handle::try_current().is_ok() {
                tokio::task::spawn_blocking(move || drop(old));
            }
        }
    }

    /// `flow` is where this request came from (and where a response to it goes).
    pub fn arrive(&self, key: &TsxKey, flow: Flow) -> Arrival {
        let d = self.digest(key);
        let mut g = self.shard(d).lock();
        self.rotate(&mut g);
        let existing = g.current.get(&d).or_else(|| g.previous.get(&d));
        if let Some(state) = existing {
            return Arrival::Retransmission(match state {
                NonInviteState::Trying => None,
                NonInviteState::Proceeding { last } | NonInviteState::Completed { last } => {
                    Some((last.clone(), flow))
                }
            });
        }
        g.current.insert(d, NonInviteState::Trying);
        Arrival::New
    }

    /// Records a response sent by the TU. A final response on a reliable transport ends the
    /// transaction at once (Timer J = 0).
    pub fn respond(&self, key: &TsxKey, data: Kept, is_final: bool, reliable: bool) {
        let d = self.digest(key);
        let mut g = self.shard(d).lock();
        self.rotate(&mut g);
        if is_final && reliable {
            if g.current.remove(&d).is_none() {
                g.previous.remove(&d);
            }
            return;
        }
        let state = if is_final {
            NonInviteState::Completed { last: data }
        } else {
            NonInviteState::Proceeding { last: data }
        };
        // Updated where it is: most transactions are answered within the generation they
        // arrived in, so this costs one lookup instead of a removal and a reinsertion. One
        // answered from the previous generation moves to the current one, so it still lives
        // a whole Timer J after its response.
        if let Some(e) = g.current.get_mut(&d) {
            *e = state;
        } else if g.previous.remove(&d).is_some() {
            g.current.insert(d, state);
        }
    }

    /// The response kept for a transaction, if it has one.
    pub fn kept(&self, key: &TsxKey) -> Option<Kept> {
        let d = self.digest(key);
        let g = self.shard(d).lock();
        match g.current.get(&d).or_else(|| g.previous.get(&d))? {
            NonInviteState::Trying => None,
            NonInviteState::Proceeding { last } | NonInviteState::Completed { last } => {
                Some(last.clone())
            }
        }
    }

    /// Whether a transaction with this key is remembered (its retransmissions are absorbed).
    pub fn contains(&self, key: &TsxKey) -> bool {
        let d = self.digest(key);
        let g = self.shard(d).lock();
        g.current.contains_key(&d) || g.previous.contains_key(&d)
    }

    /// Forgets a transaction (TU gave up without answering).
    pub fn remove(&self, key: &TsxKey) {
        let d = self.digest(key);
        let mut g = self.shard(d).lock();
        g.current.remove(&d);
        g.previous.remove(&d);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let g = s.lock();
                g.current.len() + g.previous.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// INVITE server transaction states (Figure 7 with RFC 6026's Accepted state: after a 2xx the
/// transaction stays to absorb INVITE retransmissions — otherwise a retransmitted INVITE
/// would reach the TU as a new call — and retransmits the 2xx until the ACK arrives).
#[derive(Debug, Clone)]
pub enum InviteState {
    Proceeding { last: Option<Bytes> },
    Accepted { last: Bytes },
    Completed { last: Bytes },
    Confirmed,
    Terminated,
}

/// One INVITE server transaction.
#[derive(Debug)]
pub struct ServerInvTsx {
    pub key: TsxKey,
    pub flow: Flow,
    /// Call-ID and CSeq number: how the ACK for a 2xx (a transaction of its own, with a new
    /// branch) is matched to this INVITE.
    pub dialog: (String, u32),
    pub state: Mutex<InviteState>,
    /// Signalled when a matching ACK arrives in Completed or Accepted.
    pub acked: Notify,
    /// Signalled when a CANCEL matched while Proceeding.
    pub cancelled: Notify,
    pub cancel_flag: std::sync::atomic::AtomicBool,
}

impl ServerInvTsx {
    pub fn new(key: TsxKey, flow: Flow, dialog: (String, u32)) -> Arc<ServerInvTsx> {
        Arc::new(ServerInvTsx {
            key,
            flow,
            dialog,
            state: Mutex::new(InviteState::Proceeding { last: None }),
            acked: Notify::new(),
            cancelled: Notify::new(),
            cancel_flag: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel_flag.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: &str) -> TsxKey {
        let via = crate::headers::Via::parse(&format!("SIP/2.0/UDP h:5060;branch={b}")).unwrap();
        let req = match crate::wire::parse::parse_bytes(b"REGISTER sip:a SIP/2.0\r\n\r\n").unwrap()
        {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        TsxKey::server(&via, &req)
    }

    #[tokio::test(start_paused = true)]
    async fn absorbs_then_forgets_after_timer_j() {
        let flow = Flow::udp(
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5070".parse().unwrap(),
        );
        let t = NonInviteServerTable::new(Duration::from_secs(32));
        let k = key("z9hG4bK1");
        assert!(matches!(t.arrive(&k, flow), Arrival::New));
        assert!(matches!(t.arrive(&k, flow), Arrival::Retransmission(None)));
        t.respond(&k, Kept::Whole(Bytes::from_static(b"200")), true, false);
        match t.arrive(&k, flow) {
            Arrival::Retransmission(Some((Kept::Whole(b), _))) => assert_eq!(&b[..], b"200"),
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(33)).await;
        assert!(matches!(t.arrive(&key("z9hG4bK2"), flow), Arrival::New));
        // Still within 2·J of its completion: absorbed.
        assert!(matches!(
            t.arrive(&k, flow),
            Arrival::Retransmission(Some(_))
        ));
        tokio::time::advance(Duration::from_secs(65)).await;
        assert!(matches!(t.arrive(&k, flow), Arrival::New));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_under_a_flood() {
        let flow = Flow::udp(
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5070".parse().unwrap(),
        );
        let t = NonInviteServerTable::with_capacity(Duration::from_secs(32), 32 * 2 * 16);
        for i in 0..100_000 {
            let _ = t.arrive(&key(&format!("z9hG4bK{i}")), flow);
        }
        assert!(t.len() <= 32 * 2 * 16 + 32, "{}", t.len());
    }

    #[tokio::test(start_paused = true)]
    async fn reliable_final_ends_at_once() {
        let flow = Flow::udp(
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5070".parse().unwrap(),
        );
        let t = NonInviteServerTable::new(Duration::from_secs(32));
        let k = key("z9hG4bK1");
        assert!(matches!(t.arrive(&k, flow), Arrival::New));
        t.respond(&k, Kept::Whole(Bytes::from_static(b"200")), true, true);
        assert!(t.is_empty());
    }
}
