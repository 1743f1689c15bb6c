//! Persistence of bindings behind [`BindingStore`] (implemented with SQL by the server crate),
//! with write-behind batching.
//!
//! Changes are queued by the registrar and written in batches (coalesced per binding, last
//! write wins) every `write_interval` or `write_batch` changes, whichever comes first. A clean
//! shutdown flushes the queue; a crash loses at most the changes of one batch window while the
//! store keeps up. When it falls behind (or fails and is retried), what is queued is lost too —
//! bounded by `write_queue`, beyond which REGISTER handling waits for the store. Lost bindings
//! come back at the phones' next refresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::binding::Binding;
use crate::BoxFuture;

#[derive(Debug, Clone, thiserror::Error)]
#[error("binding store: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    /// Store failures never reach a peer directly (writes are behind); at start-up they stop
    /// the endpoint. Were one to answer a request, it would be this.
    pub fn status(&self) -> u16 {
        500
    }
}

/// One change to persist.
#[derive(Debug, Clone)]
pub enum BindingChange {
    Upsert(Arc<Binding>),
    /// Remove the binding with this AOR and [`Binding::id`].
    Remove {
        aor: String,
        id: String,
    },
}

impl BindingChange {
    fn key(&self) -> (String, String) {
        match self {
            BindingChange::Upsert(b) => (b.aor.clone(), b.id()),
            BindingChange::Remove { aor, id } => (aor.clone(), id.clone()),
        }
    }
}

/// Durable storage of bindings. Implementations must apply a batch atomically or not at all
/// (a failed batch is retried whole), and must not block the calling thread: the writer runs
/// on the runtime that also answers REGISTERs (use async I/O, or `spawn_blocking` for heavy
/// synchronous work).
pub trait BindingStore: Send + Sync + 'static {
    /// Every stored binding (expired ones are skipped by the caller).
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>>;
    /// Applies upserts and removals, in order.
    fn apply(&self, batch: Vec<BindingChange>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// An in-memory store, for tests and for running without a database.
/// Holds `Arc`s so that growing the map moves pointers, not whole bindings (a resize at a
/// million bindings otherwise stalls the writer for seconds).
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub bindings: Mutex<HashMap<(String, String), Arc<Binding>>>,
    /// Number of `apply` calls (tests check batching).
    pub batches: std::sync::atomic::AtomicUsize,
}

impl BindingStore for MemoryStore {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>> {
        let v = self
            .bindings
            .lock()
            .values()
            .map(|b| (**b).clone())
            .collect();
        Box::pin(std::future::ready(Ok(v)))
    }

    fn apply(&self, batch: Vec<BindingChange>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut m = self.bindings.lock();
        for c in batch {
            match c {
                BindingChange::Upsert(b) => {
                    m.insert((b.aor.clone(), b.id()), b);
                }
                BindingChange::Remove { aor, id } => {
                    m.remove(&(aor, id));
                }
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<T: BindingStore> BindingStore for Arc<T> {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>> {
        (**self).load_all()
    }
    fn apply(&self, batch: Vec<BindingChange>) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).apply(batch)
    }
}

pub(crate) enum WbMsg {
    Change(BindingChange),
    Flush(oneshot::Sender<()>),
}

/// The write-behind queue's sending side.
#[derive(Clone)]
pub(crate) struct WriteBehind {
    tx: mpsc::Sender<WbMsg>,
}

impl WriteBehind {
    pub fn start(
        store: Arc<dyn BindingStore>,
        batch: usize,
        interval: Duration,
        queue: usize,
    ) -> WriteBehind {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(store, rx, batch.max(1), interval));
        WriteBehind { tx }
    }

    /// Queues a change; waits when the queue is full (backpressure from a slow database).
    pub async fn push(&self, c: BindingChange) {
        let _ = self.tx.send(WbMsg::Change(c)).await;
    }

    /// Writes everything queued so far; returns when it is durable (or the writer failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WbMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Arc<dyn BindingStore>,
    mut rx: mpsc::Receiver<WbMsg>,
    batch: usize,
    interval: Duration,
) {
    let mut pending: Vec<BindingChange> = Vec::new();
    let mut index: crate::fastmap::FastMap<(String, String), usize> =
        crate::fastmap::with_capacity(0);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    loop {
        // Collect until the batch is full, the window ends, a flush is asked for, or close.
        let window_end = tokio::time::Instant::now() + interval;
        while pending.len() < batch && waiters.is_empty() && !closed {
            let msg = if pending.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout_at(window_end, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            match msg {
                Some(WbMsg::Change(c)) => {
                    let k = c.key();
                    match index.get(&k) {
                        Some(&i) => pending[i] = c,
                        None => {
                            index.insert(k, pending.len());
                            pending.push(c);
                        }
                    }
                }
                Some(WbMsg::Flush(w)) => waiters.push(w),
                None => closed = true,
            }
        }
        if !pending.is_empty() {
            let batch_vec = std::mem::take(&mut pending);
            index.clear();
            if let Err(e) = store.apply(batch_vec.clone()).await {
                tracing::error!(error = %e, changes = batch_vec.len(), "binding store write failed; retrying");
                // Put the batch back, newer changes (none yet) take precedence.
                for c in batch_vec {
                    index.insert(c.key(), pending.len());
                    pending.push(c);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if closed {
                    // Give up on shutdown after one retry rather than hang.
                    let _ = store.apply(std::mem::take(&mut pending)).await;
                }
            }
        }
        if pending.is_empty() || closed {
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn binding(aor: &str, cseq: u32) -> Arc<Binding> {
        Arc::new(Binding {
            aor: aor.into(),
            contact: format!("sip:{aor}@10.0.0.1"),
            contact_params: String::new(),
            q: None,
            expires_at: u64::MAX,
            call_id: "c".into(),
            cseq,
            instance: None,
            reg_id: None,
            path: vec![],
            user_agent: None,
            device: None,
            flow: None,
            updated_at: 0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn batches_coalesce_and_flush_is_durable() {
        let store = Arc::new(MemoryStore::default());
        let wb = WriteBehind::start(store.clone(), 100, Duration::from_millis(200), 1000);
        for cseq in 1..=3 {
            wb.push(BindingChange::Upsert(binding("a", cseq))).await;
        }
        wb.push(BindingChange::Upsert(binding("b", 1))).await;
        wb.push(BindingChange::Remove {
            aor: "b".into(),
            id: "sip:b@10.0.0.1".into(),
        })
        .await;
        wb.flush().await;
        let m = store.bindings.lock();
        assert_eq!(m.len(), 1);
        assert_eq!(m.values().next().unwrap().cseq, 3, "last write wins");
        assert_eq!(store.batches.load(Ordering::Relaxed), 1, "one batch");
    }

    /// Fails the first `n` batches.
    struct Flaky {
        inner: MemoryStore,
        fail: std::sync::atomic::AtomicUsize,
    }

    impl BindingStore for Flaky {
        fn load_all(&self) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>> {
            self.inner.load_all()
        }
        fn apply(&self, batch: Vec<BindingChange>) -> BoxFuture<'_, Result<(), StoreError>> {
            if self.fail.load(Ordering::Relaxed) > 0 {
                self.fail.fetch_sub(1, Ordering::Relaxed);
                return Box::pin(std::future::ready(Err(StoreError("down".into()))));
            }
            self.inner.apply(batch)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_batches_are_retried() {
        let store = Arc::new(Flaky {
            inner: MemoryStore::default(),
            fail: 2.into(),
        });
        let wb = WriteBehind::start(store.clone(), 100, Duration::from_millis(50), 1000);
        wb.push(BindingChange::Upsert(binding("a", 1))).await;
        wb.flush().await;
        assert_eq!(store.inner.bindings.lock().len(), 1);
    }
}
