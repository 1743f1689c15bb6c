//! Instances sharing one PostgreSQL: hand-over of the work only one of them can do.
//!
//! A registrar holds in memory only the bindings that REGISTERed to it, and only it holds their
//! flows (a TCP connection, the UDP socket the phone's NAT binding points at). So a check-sync
//! asked of instance A for a phone registered on instance B must leave from B. Every binding
//! row names the instance that holds it (`bindings.holder`, this module's [`Cluster::id`]);
//! A hands the check-sync to B through PostgreSQL's own LISTEN/NOTIFY, not through a protocol
//! of our own:
//!
//! 1. A checks that B is alive: B's listener connection carries B's id as its
//!    `application_name`, so `pg_stat_activity` shows it exactly as long as B is up (the
//!    kernel closes a killed process's connection, and PostgreSQL drops the row).
//! 2. A sends `NOTIFY sipdm_checksync, '{"id","from","to","mac","actor"}'`.
//! 3. B, which LISTENs, answers `NOTIFY sipdm_checksync_reply` with `accepted` at once, runs
//!    the check-sync down its own flow, then answers `done` (the report) or `failed`.
//! 4. A waits [`ACK_WAIT`] for `accepted`; without it, B counts as gone and A sends the NOTIFY
//!    to the stored contact itself. Once accepted, A waits [`RESULT_WAIT`] (longer than a UDP
//!    client transaction's 32 s timeout) for the outcome, and never sends a second NOTIFY.
//!
//! Requests carry the target instance's id, and every instance ignores what is not addressed
//! to it, so several deployments (or test schemas) sharing one database do not interfere.
//! On SQLite (one instance) nothing listens and nothing is handed over.
//!
//! The listening connection itself is the store's ([`Store::listener`]): this module speaks
//! no SQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::notify::{CheckSyncError, CheckSyncReport};
use crate::fault::{Fault, HasFault};
use crate::store::{Listener, Store, StoreError};
use crate::BoxFuture;

/// The channel hand-over requests travel on.
pub const REQUESTS: &str = "sipdm_checksync";
/// The channel the holders' answers travel on.
pub const REPLIES: &str = "sipdm_checksync_reply";
/// How long a live holder has to acknowledge a request before it counts as gone.
pub const ACK_WAIT: Duration = Duration::from_secs(2);
/// How long an acknowledged check-sync may take (a UDP NOTIFY gives up after 64·T1 = 32 s).
pub const RESULT_WAIT: Duration = Duration::from_secs(40);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A hand-over request, as sent on [`REQUESTS`].
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: String,
    from: String,
    to: String,
    mac: String,
    actor: String,
}

/// An answer, as sent on [`REPLIES`].
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    id: String,
    to: String,
    from: String,
    outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
enum Outcome {
    Accepted,
    Done { report: CheckSyncReport },
    Failed { fault: Fault, message: String },
}

/// What became of a hand-over.
pub enum Handover {
    /// The holder took it; this is its result.
    Done(Result<CheckSyncReport, CheckSyncError>),
    /// Nobody took it: the caller sends the NOTIFY itself.
    HolderGone,
}

/// Runs a check-sync handed to this instance down its own flows only (so that a hand-over
/// can never bounce back); implemented by the check-sync service, which owns the endpoint.
pub trait Taker: Send + Sync + 'static {
    fn check_sync_here<'a>(
        &'a self,
        mac: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<CheckSyncReport, CheckSyncError>>;
}

/// This instance's identity among those sharing the database, and its pending hand-overs.
pub struct Cluster {
    id: String,
    store: Store,
    /// Whether the listener is up (PostgreSQL only); without it no answer could be heard.
    listening: AtomicBool,
    pending: parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Outcome>>>,
}

impl Cluster {
    /// A new identity, random per start: a restarted instance holds no flow of its past life.
    pub fn new(store: Store) -> Arc<Cluster> {
        let id = format!("sipdm-{}", hex::encode(rand::random::<[u8; 8]>()));
        Arc::new(Cluster {
            id,
            store,
            listening: AtomicBool::new(false),
            pending: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// On PostgreSQL, connects a dedicated listener (named by this instance's id, which is how
    /// the others tell it is alive) and serves hand-over requests until `stop`. Returns once
    /// listening, so that no request sent after start is missed. Nothing on SQLite.
    pub async fn listen(
        self: &Arc<Self>,
        taker: Arc<dyn Taker>,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<JoinHandle<()>>, ClusterError> {
        let Some(mut listener) = self.store.listener(&self.id, &[REQUESTS, REPLIES]).await? else {
            return Ok(None);
        };
        self.listening.store(true, Ordering::Release);
        let me = self.clone();
        Ok(Some(tokio::spawn(async move {
            me.serve(taker, &mut listener, stop).await;
            me.listening.store(false, Ordering::Release);
            listener.close().await;
        })))
    }

    async fn serve(
        self: &Arc<Self>,
        taker: Arc<dyn Taker>,
        listener: &mut Listener,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut lost = false;
        loop {
            let n = tokio::select! {
                n = listener.recv() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            match n {
                Ok(n) if n.channel == REQUESTS => {
                    match serde_json::from_str::<Request>(&n.payload) {
                        Ok(req) if req.to == self.id => {
                            let me = self.clone();
                            let taker = taker.clone();
                            tokio::spawn(async move { me.take(taker.as_ref(), req).await });
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable check-sync hand-over ignored")
                        }
                    }
                }
                Ok(n) if n.channel == REPLIES => match serde_json::from_str::<Reply>(&n.payload) {
                    Ok(reply) if reply.to == self.id => {
                        if let Some(tx) = self.pending.lock().get(&reply.id) {
                            let _ = tx.send(reply.outcome);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable check-sync answer ignored"),
                },
                Ok(n) if n.channel.is_empty() => {
                    tracing::info!("check-sync listener connected again");
                    lost = false;
                }
                Ok(_) => {}
                Err(e) => {
                    // The listener reconnects and re-subscribes on the next recv; logged once
                    // per outage.
                    if !lost {
                        tracing::warn!(error = %e, "check-sync listener lost its connection; reconnecting");
                        lost = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    /// Runs a check-sync handed to this instance, down its own flow, and answers.
    async fn take(&self, taker: &dyn Taker, req: Request) {
        self.answer(&req, Outcome::Accepted).await;
        let actor = format!("{} via {}", req.actor, self.id);
        let outcome = match taker.check_sync_here(&req.mac, &actor).await {
            Ok(report) => Outcome::Done { report },
            Err(e) => Outcome::Failed {
                fault: e.fault(),
                message: e.to_string(),
            },
        };
        self.answer(&req, outcome).await;
    }

    async fn answer(&self, req: &Request, outcome: Outcome) {
        let reply = Reply {
            id: req.id.clone(),
            to: req.from.clone(),
            from: self.id.clone(),
            outcome,
        };
        let payload = match serde_json::to_string(&reply) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "check-sync answer not encodable"),
        };
        if let Err(e) = self.store.notify(REPLIES, &payload).await {
            tracing::warn!(error = %e, to = %req.from, "check-sync answer not sent");
        }
    }

    /// Asks instance `holder` to send check-sync to `mac`; see the module doc for the bounds.
    pub async fn hand_over(&self, holder: &str, mac: &str, actor: &str) -> Handover {
        if !self.listening.load(Ordering::Acquire) {
            return Handover::HolderGone;
        }
        match self.store.session_alive(holder).await {
            Ok(false) => return Handover::HolderGone,
            Ok(true) => {}
            // Cannot tell: ask anyway; the acknowledgement bound decides.
            Err(e) => tracing::debug!(error = %e, holder, "liveness of the holder unknown"),
        }
        let id = hex::encode(rand::random::<[u8; 12]>());
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let _forget = Forget(&self.pending, &id);
        let req = Request {
            id: id.clone(),
            from: self.id.clone(),
            to: holder.to_owned(),
            mac: mac.to_owned(),
            actor: actor.to_owned(),
        };
        let payload = match serde_json::to_string(&req) {
            Ok(p) => p,
            Err(_) => return Handover::HolderGone,
        };
        if let Err(e) = self.store.notify(REQUESTS, &payload).await {
            tracing::warn!(error = %e, holder, "check-sync hand-over not sent");
            return Handover::HolderGone;
        }
        match tokio::time::timeout(ACK_WAIT, rx.recv()).await {
            Ok(Some(Outcome::Accepted)) => {}
            Ok(Some(other)) => return finished(holder, other),
            Ok(None) | Err(_) => return Handover::HolderGone,
        }
        match tokio::time::timeout(RESULT_WAIT, rx.recv()).await {
            Ok(Some(outcome)) => finished(holder, outcome),
            Ok(None) | Err(_) => Handover::Done(Err(CheckSyncError::Holder {
                holder: holder.to_owned(),
                fault: Fault::PeerTimeout,
                message: format!(
                    "took the check-sync but reported nothing within {} s",
                    RESULT_WAIT.as_secs()
                ),
            })),
        }
    }
}

fn finished(holder: &str, outcome: Outcome) -> Handover {
    Handover::Done(match outcome {
        Outcome::Done { report } => Ok(report),
        Outcome::Failed { fault, message } => Err(CheckSyncError::Holder {
            holder: holder.to_owned(),
            fault,
            message,
        }),
        Outcome::Accepted => Err(CheckSyncError::Holder {
            holder: holder.to_owned(),
            fault: Fault::PeerRefused,
            message: "accepted twice".into(),
        }),
    })
}

/// Removes a pending hand-over however its wait ends.
struct Forget<'a>(
    &'a parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Outcome>>>,
    &'a str,
);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(self.1);
    }
}
