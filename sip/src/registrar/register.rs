//! REGISTER processing (RFC 3261 §10.3), with digest authentication before any change.

use std::sync::{Arc, Weak};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, StatusCode};
use tokio::sync::broadcast;

use super::binding::{Binding, BindingEvent};
use super::store::{BindingChange, BindingStore, StoreError, WriteBehind};
use super::table::{BindingTable, Op, Outcome};
use super::{RegistrarConfig, RegistrarError};
use crate::auth::nonce::now_secs;
use crate::auth::{AuthOutcome, DigestGuard};
use crate::handler::{IncomingRequest, RequestHandler};
use crate::headers::params::{split_top_level, Params};
use crate::headers::{ContactList, MessageExt, NameAddr};
use crate::stats::Stats;
use crate::BoxFuture;

/// Option tags the registrar implements (RFC 3327 Path).
pub const SUPPORTED: &[&str] = &["path"];

pub struct Registrar {
    cfg: RegistrarConfig,
    table: BindingTable,
    events: broadcast::Sender<BindingEvent>,
    writer: WriteBehind,
    guard: Arc<DigestGuard>,
    stats: Arc<Stats>,
}

enum Verdict {
    Challenge { stale: bool },
    Throttled,
    Done(Outcome, Vec<String>),
}

impl Registrar {
    /// Loads persisted bindings, starts the write-behind writer and the expiry sweeper.
    pub async fn start(
        cfg: RegistrarConfig,
        store: Arc<dyn BindingStore>,
        guard: Arc<DigestGuard>,
        stats: Arc<Stats>,
    ) -> Result<Arc<Registrar>, StoreError> {
        let loaded = store.load_all().await?;
        let table = BindingTable::default();
        let n = table.load(loaded, now_secs());
        tracing::info!(bindings = n, "bindings loaded");
        let writer =
            WriteBehind::start(store, cfg.write_batch, cfg.write_interval, cfg.write_queue);
        let r = Arc::new(Registrar {
            events: super::new_events(cfg.event_capacity),
            cfg,
            table,
            writer,
            guard,
            stats,
        });
        tokio::spawn(sweeper(Arc::downgrade(&r), r.cfg.sweep_interval));
        Ok(r)
    }

    /// Current bindings of an AOR key (see [`RegistrarConfig::use_domain`]).
    pub fn bindings(&self, aor: &str) -> Vec<Arc<Binding>> {
        self.table.get(aor, now_secs())
    }

    /// The newest binding authenticated by digest user `device` (and with it, its flow).
    pub fn binding_of_device(&self, device: &str) -> Option<Arc<Binding>> {
        self.table.by_device(device, now_secs())
    }

    /// Every current binding.
    pub fn all_bindings(&self) -> Vec<Arc<Binding>> {
        self.table.all(now_secs())
    }

    /// Number of bindings held (including expired ones not yet swept), for metrics.
    pub fn binding_count(&self) -> usize {
        self.table.len()
    }

    /// Binding events: insert, refresh, remove, expire.
    pub fn subscribe(&self) -> broadcast::Receiver<BindingEvent> {
        self.events.subscribe()
    }

    /// Makes every change so far durable.
    pub async fn flush(&self) {
        self.writer.flush().await
    }

    fn contact_limit(&self, aor: &str) -> usize {
        if self.cfg.shared_aors.iter().any(|a| a == aor) {
            usize::MAX
        } else {
            self.cfg.max_contacts_per_aor
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// The AOR key of a SIP URI: `user` (or `user@host`), parameters and port dropped
    /// (RFC 3261 §10.3 step 5, canonical form).
    pub fn aor_of_uri(&self, uri: &str) -> Option<(String, String)> {
        let rest = uri
            .split_once(':')
            .filter(|(s, _)| s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips"))?
            .1;
        let rest = rest.split([';', '?']).next()?;
        let (user, hostport) = rest.rsplit_once('@')?;
        if user.is_empty() {
            return None;
        }
        let host = crate::headers::via::split_host_port(hostport)?
            .0
            .to_ascii_lowercase();
        let user = user.split(':').next()?.to_string(); // drop a password part
        let key = if self.cfg.use_domain {
            format!("{user}@{host}")
        } else {
            user.clone()
        };
        Some((key, user))
    }

    async fn process(&self, inc: &IncomingRequest, now: u64) -> Result<Verdict, RegistrarError> {
        let req = &inc.request;
        // §10.3 step 2: extensions the client requires must be understood.
        let unsupported: Vec<&str> = req
            .header_values("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            return Err(RegistrarError::BadExtension(unsupported.join(", ")));
        }
        let to = req
            .header_value("To")
            .and_then(|v| NameAddr::parse(v).ok())
            .ok_or(RegistrarError::BadTo)?;
        let (aor, user) = self.aor_of_uri(&to.uri).ok_or(RegistrarError::BadTo)?;

        // A hung credential store must not hold the transaction (and the phone) forever.
        let check = self.guard.check(req, inc.flow.remote.ip(), &user, false);
        let verdict = tokio::time::timeout(self.cfg.auth_timeout, check)
            .await
            .map_err(|_| {
                RegistrarError::Auth(crate::auth::AuthError::new(
                    503,
                    "credential lookup timed out",
                ))
            })?;
        let device = match verdict? {
            AuthOutcome::NotRequired => None,
            AuthOutcome::Authenticated { username } => Some(username),
            AuthOutcome::Challenge { stale } => return Ok(Verdict::Challenge { stale }),
            AuthOutcome::Throttled => return Ok(Verdict::Throttled),
        };

        let call_id = req
            .call_id()
            .ok_or(RegistrarError::MissingHeader)?
            .to_string();
        let cseq = req.cseq().ok_or(RegistrarError::MissingHeader)?.0;
        // An Expires that is no number was refused with 400 before the registrar saw it (the
        // endpoint's request checks); 3600 s stays the fallback for a registrar used without
        // them. Huge values are capped like any other.
        let header_expires = req
            .header_value("Expires")
            .map(|v| parse_expires(v).unwrap_or(3600));
        let contacts = ContactList::parse(req.header_values("Contact"))
            .map_err(|e| RegistrarError::BadContact(e.to_string()))?;
        let path: Vec<String> = req
            .header_values("Path")
            .flat_map(|v| split_top_level(v, b','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let user_agent = req.header_value("User-Agent").map(str::to_string);

        let ops = match contacts {
            ContactList::Star => {
                if header_expires != Some(0) {
                    return Err(RegistrarError::BadStar);
                }
                vec![Op::RemoveAll { call_id, cseq }]
            }
            ContactList::Addresses(addrs) => {
                let mut ops = Vec::with_capacity(addrs.len());
                for a in addrs {
                    let expires = match a.params.get("expires") {
                        Some(v) => v.and_then(parse_expires).unwrap_or(3600),
                        None => header_expires.unwrap_or(self.cfg.default_expires),
                    };
                    if expires != 0 && expires < self.cfg.min_expires {
                        return Err(RegistrarError::IntervalTooBrief {
                            aor,
                            requested: expires,
                            min: self.cfg.min_expires,
                        });
                    }
                    let expires = expires.min(self.cfg.max_expires);
                    let q = match a.params.value("q") {
                        Some(v) => Some(parse_q(v).ok_or(RegistrarError::BadQ)?),
                        None => None,
                    };
                    let instance = a.params.value("+sip.instance").map(str::to_string);
                    let reg_id = a.params.value("reg-id").and_then(|v| v.parse().ok());
                    let mut rest = Params(a.params.0.clone());
                    rest.remove("expires");
                    rest.remove("q");
                    ops.push(Op::Upsert {
                        remove: expires == 0,
                        binding: Binding {
                            aor: aor.clone(),
                            contact: a.uri,
                            contact_params: rest.to_string(),
                            q,
                            expires_at: now + expires as u64,
                            call_id: call_id.clone(),
                            cseq,
                            instance,
                            reg_id,
                            path: path.clone(),
                            user_agent: user_agent.clone(),
                            device: device.clone(),
                            flow: Some(inc.flow),
                            updated_at: now,
                        },
                    });
                }
                ops
            }
        };
        let outcome = if ops.is_empty() {
            // A query (§10.3 step 8 with no Contact): list the bindings.
            Outcome {
                current: self.table.get(&aor, now),
                ..Default::default()
            }
        } else {
            self.table.apply(&aor, ops, now, self.contact_limit(&aor))?
        };
        Ok(Verdict::Done(outcome, path))
    }

    async fn register(&self, inc: IncomingRequest) {
        let now = now_secs();
        match self.process(&inc, now).await {
            Ok(Verdict::Challenge { stale }) => {
                Stats::inc(&self.stats.challenges);
                let mut r = inc.response(StatusCode::Unauthorized);
                for h in self.guard.challenge(stale, false) {
                    r.headers.push(h);
                }
                // Kept in the transaction (not `respond_stateless`): a retransmitted REGISTER
                // must get the same 401, or a client already past it sees a second challenge
                // with another nonce as an unexpected response (sipp fails the call).
                inc.respond(r);
            }
            Ok(Verdict::Throttled) => inc.reply(StatusCode::Forbidden),
            Ok(Verdict::Done(outcome, path)) => {
                let mut r = inc.response(StatusCode::OK);
                // A shared AOR (every unassigned phone under `gcti_provisioning`) would list
                // thousands of other phones' contacts — too big for UDP and none of this
                // phone's business: list only the requester's own bindings there.
                let shared = outcome
                    .current
                    .first()
                    .is_some_and(|b| self.cfg.shared_aors.iter().any(|a| *a == b.aor));
                let call_id = inc.request.call_id().unwrap_or_default();
                let mine = |b: &Binding| -> bool {
                    b.call_id == call_id || b.flow.is_some_and(|f| f.remote == inc.flow.remote)
                };
                for b in outcome.current.iter().filter(|b| !shared || mine(b)) {
                    r.headers.push(Header::Contact(rsip::headers::Contact::new(
                        b.contact_header(now),
                    )));
                }
                let wants_path = inc
                    .request
                    .header_values("Supported")
                    .any(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("path")));
                if wants_path {
                    for p in &path {
                        r.headers.push(Header::Other("Path".into(), p.clone()));
                    }
                }
                r.headers
                    .push(Header::Date(rsip::headers::Date::new(date_of_second(now))));
                Stats::inc(&self.stats.registrations_ok);
                inc.respond(r);
                self.publish(outcome).await;
            }
            Err(e) => {
                let (code, reason) = e.status();
                tracing::debug!(error = %e, code, "REGISTER refused");
                let mut r = inc.response(StatusCode::from(code));
                if let StatusCode::Other(c, _) = r.status_code {
                    r.status_code = StatusCode::Other(c, reason.into());
                }
                match &e {
                    RegistrarError::Auth(a) if a.status == 503 => {
                        r.headers
                            .push(Header::RetryAfter(rsip::headers::RetryAfter::new(
                                super::RETRY_AFTER_UNAVAILABLE.to_string(),
                            )));
                    }
                    RegistrarError::IntervalTooBrief { min, .. } => {
                        r.headers
                            .push(Header::MinExpires(rsip::headers::MinExpires::new(
                                min.to_string(),
                            )));
                    }
                    RegistrarError::BadExtension(list) => {
                        r.headers
                            .push(Header::Unsupported(rsip::headers::Unsupported::new(
                                list.clone(),
                            )));
                    }
                    _ => {}
                }
                inc.respond(r);
            }
        }
    }

    async fn publish(&self, o: Outcome) {
        for b in o.inserted {
            let _ = self.events.send(BindingEvent::Inserted(b.clone()));
            self.writer.push(BindingChange::Upsert(b)).await;
        }
        for b in o.refreshed {
            let _ = self.events.send(BindingEvent::Refreshed(b.clone()));
            self.writer.push(BindingChange::Upsert(b)).await;
        }
        for b in o.removed {
            let _ = self.events.send(BindingEvent::Removed(b.clone()));
            self.writer
                .push(BindingChange::Remove {
                    aor: b.aor.clone(),
                    id: b.id(),
                })
                .await;
        }
    }

    /// Removes every binding of the AOR key `aor` as if each had been unregistered (events,
    /// store removals behind), and returns them: the AOR was taken from whoever registered it
    /// (a DN unassigned or given to another phone), so requests for it must not reach them.
    pub async fn remove_bindings(&self, aor: &str) -> Vec<Arc<Binding>> {
        let gone = self.table.remove_aor(aor);
        for b in &gone {
            let _ = self.events.send(BindingEvent::Removed(b.clone()));
            self.writer
                .push(BindingChange::Remove {
                    aor: b.aor.clone(),
                    id: b.id(),
                })
                .await;
        }
        gone
    }

    /// Expires bindings now (the sweeper calls this every `sweep_interval`).
    pub async fn sweep(&self) -> usize {
        let gone = self.table.sweep(now_secs());
        let n = gone.len();
        for b in gone {
            let _ = self.events.send(BindingEvent::Expired(b.clone()));
            self.writer
                .push(BindingChange::Remove {
                    aor: b.aor.clone(),
                    id: b.id(),
                })
                .await;
        }
        n
    }
}

async fn sweeper(r: Weak<Registrar>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(r) = r.upgrade() else { return };
        r.sweep().await;
    }
}

impl RequestHandler for Registrar {
    fn handle<'a>(
        &'a self,
        _ep: &'a crate::Endpoint,
        req: IncomingRequest,
    ) -> BoxFuture<'a, Option<IncomingRequest>> {
        Box::pin(async move {
            if req.request.method != Method::Register {
                return Some(req);
            }
            self.register(req).await;
            None
        })
    }
}

/// Delta-seconds, capped at `u32::MAX`; `None` when not a number.
fn parse_expires(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

/// q-value (RFC 3261 §25.1: `0[.ddd]` or `1[.000]`) in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut f = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        f += (b - b'0') as u16 * [100, 10, 1][i];
    }
    let q = whole * 1000 + f;
    (q <= 1000).then_some(q)
}

/// [`http_date`] of `secs`, formatted once per second per thread: every 200 to a REGISTER
/// carries it, and at thousands of registrations a second they share a few values.
fn date_of_second(secs: u64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    LAST.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = http_date(secs);
        }
        text.clone()
    })
}

/// RFC 1123 date (`Date:` header) from Unix seconds.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(aor: &str, contact: &str, device: &str) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            contact_params: String::new(),
            q: None,
            expires_at: now_secs() + 600,
            call_id: format!("{contact}-call"),
            cseq: 1,
            instance: None,
            reg_id: None,
            path: vec![],
            user_agent: None,
            device: Some(device.into()),
            flow: None,
            updated_at: now_secs(),
        }
    }

    #[tokio::test]
    async fn remove_bindings_drops_the_aor_from_memory_store_and_device_index() {
        let store = Arc::new(super::super::MemoryStore::default());
        for b in [
            stored("1001", "sip:1001@10.0.0.1:5062", "1001"),
            stored("1001", "sip:1001@10.0.0.2:5062", "1001"),
            stored("1002", "sip:1002@10.0.0.3:5062", "1002"),
        ] {
            store
                .bindings
                .lock()
                .insert((b.aor.clone(), b.id()), Arc::new(b));
        }
        let users = crate::auth::StaticUsers {
            users: Default::default(),
            methods: vec![],
        };
        let guard = Arc::new(DigestGuard::new(Default::default(), Arc::new(users)));
        let r = Registrar::start(
            RegistrarConfig::default(),
            store.clone(),
            guard,
            Arc::new(Stats::default()),
        )
        .await
        .unwrap();
        let mut events = r.subscribe();
        let gone = r.remove_bindings("1001").await;
        assert_eq!(gone.len(), 2);
        assert!(r.bindings("1001").is_empty());
        assert!(r.binding_of_device("1001").is_none());
        assert_eq!(r.bindings("1002").len(), 1, "another AOR is left alone");
        for _ in 0..2 {
            assert!(matches!(events.try_recv(), Ok(BindingEvent::Removed(b)) if b.aor == "1001"));
        }
        r.flush().await;
        let left: Vec<String> = store.bindings.lock().keys().map(|k| k.0.clone()).collect();
        assert_eq!(left, ["1002"], "the store follows");
        assert!(r.remove_bindings("1001").await.is_empty());
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.0"), Some(1000));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("2"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("abc"), None);
    }

    #[test]
    fn expires_values() {
        assert_eq!(parse_expires(" 60 "), Some(60));
        assert_eq!(parse_expires("99999999999999999999999"), Some(u32::MAX));
        assert_eq!(parse_expires("Thu, 01 Dec 1994 16:00:00 GMT"), None);
        assert_eq!(parse_expires("-1"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_000_000_000), "Sun, 09 Sep 2001 01:46:40 GMT");
        assert_eq!(date_of_second(1_000_000_000), http_date(1_000_000_000));
        assert_eq!(date_of_second(0), http_date(0));
    }
}
