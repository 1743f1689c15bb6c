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
use tokio::sync::{oneshot, Notify};

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

/// What the registrar has queued for the writer.
#[derive(Default)]
struct Queued {
    changes: Vec<BindingChange>,
    flushes: Vec<oneshot::Sender<()>>,
    closed: bool,
}

/// The queue shared by the registrar (pushing) and the writer task (taking batches).
///
/// A lock and a vector rather than a channel: with a channel every registration woke the
/// writer (a task wake-up, often on the other core, and a new window timer), which under a
/// registration storm cost more than writing the batch. Here the writer is woken by the
/// first change of a window, a full batch, a flush or the close, and otherwise sleeps out
/// its window.
struct Shared {
    queued: Mutex<Queued>,
    /// Wakes the writer.
    wake: Notify,
    /// Wakes pushers waiting for room.
    room: Notify,
    capacity: usize,
    batch: usize,
}

/// Closes the queue when the last [`WriteBehind`] handle goes: the writer writes what is
/// left and ends.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.queued.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// The write-behind queue's sending side.
#[derive(Clone)]
pub(crate) struct WriteBehind {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl WriteBehind {
    pub fn start(
        store: Arc<dyn BindingStore>,
        batch: usize,
        interval: Duration,
        queue: usize,
    ) -> WriteBehind {
        let shared = Arc::new(Shared {
            queued: Mutex::new(Queued::default()),
            wake: Notify::new(),
            room: Notify::new(),
            capacity: queue.max(1),
            batch: batch.max(1),
        });
        tokio::spawn(run(store, shared.clone(), interval));
        WriteBehind {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        }
    }

    /// Queues a change; waits when the queue is full (backpressure from a slow database).
    pub async fn push(&self, c: BindingChange) {
        let sh = &self.shared;
        loop {
            let room = sh.room.notified();
            tokio::pin!(room);
            {
                let mut q = sh.queued.lock();
                if q.changes.len() < sh.capacity {
                    q.changes.push(c);
                    let n = q.changes.len();
                    drop(q);
                    if n == 1 || n == sh.batch {
                        sh.wake.notify_one();
                    }
                    return;
                }
                // Registered before the lock is released, so a drain in between is not missed.
                room.as_mut().enable();
            }
            room.await;
        }
    }

    /// Writes everything queued so far; returns when it is durable (or the writer failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.shared.queued.lock().flushes.push(tx);
        self.shared.wake.notify_one();
        let _ = rx.await;
    }
}

/// The last change of each binding, in first-seen order.
fn coalesce(changes: Vec<BindingChange>) -> Vec<BindingChange> {
    let mut index: crate::fastmap::FastMap<(String, String), usize> =
        crate::fastmap::with_capacity(changes.len());
    let mut out: Vec<BindingChange> = Vec::with_capacity(changes.len());
    for c in changes {
        match index.entry(c.key()) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = c,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(c);
            }
        }
    }
    out
}

async fn run(store: Arc<dyn BindingStore>, shared: Arc<Shared>, interval: Duration) {
    // A failed batch waits here, ahead of anything queued after it.
    let mut retry: Vec<BindingChange> = Vec::new();
    loop {
        // Sleep until there is something to do.
        loop {
            {
                let q = shared.queued.lock();
                if !q.changes.is_empty() || !q.flushes.is_empty() || q.closed || !retry.is_empty() {
                    break;
                }
            }
            shared.wake.notified().await;
        }
        // Collect for one window, unless the batch fills, a flush is asked for, or close.
        let window_end = tokio::time::Instant::now() + interval;
        loop {
            {
                let q = shared.queued.lock();
                if q.changes.len() >= shared.batch || !q.flushes.is_empty() || q.closed {
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(window_end) => break,
                _ = shared.wake.notified() => {}
            }
        }
        let (changes, flushes, closed) = {
            let mut q = shared.queued.lock();
            (
                std::mem::take(&mut q.changes),
                std::mem::take(&mut q.flushes),
                q.closed,
            )
        };
        shared.room.notify_waiters();
        let mut batch = std::mem::take(&mut retry);
        batch.extend(changes);
        let batch = coalesce(batch);
        if !batch.is_empty() {
            if let Err(e) = store.apply(batch.clone()).await {
                tracing::error!(error = %e, changes = batch.len(), "binding store write failed; retrying");
                if closed {
                    // Give up on shutdown after one retry rather than hang.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = store.apply(batch).await;
                } else {
                    // Newer changes queued meanwhile take precedence when coalesced.
                    retry = batch;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // A flush is answered once what was queued before it is written (or given up).
        if retry.is_empty() || closed {
            for w in flushes {
                let _ = w.send(());
            }
        } else {
            shared.queued.lock().flushes.extend(flushes);
        }
        if closed && shared.queued.lock().changes.is_empty() {
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

    /// Holds every batch until released.
    struct Gate {
        inner: MemoryStore,
        open: tokio::sync::Semaphore,
    }

    impl BindingStore for Gate {
        fn load_all(&self) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>> {
            self.inner.load_all()
        }
        fn apply(&self, batch: Vec<BindingChange>) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                self.open.acquire().await.expect("open").forget();
                self.inner.apply(batch).await
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_holds_pushers_until_the_writer_drains_it() {
        let store = Arc::new(Gate {
            inner: MemoryStore::default(),
            open: tokio::sync::Semaphore::new(0),
        });
        let wb = WriteBehind::start(store.clone(), 100, Duration::from_millis(10), 2);
        wb.push(BindingChange::Upsert(binding("a", 1))).await;
        // The writer takes "a" after its window and waits at the gate.
        tokio::time::sleep(Duration::from_millis(50)).await;
        wb.push(BindingChange::Upsert(binding("b", 1))).await;
        wb.push(BindingChange::Upsert(binding("c", 1))).await;
        let wb2 = wb.clone();
        let blocked = tokio::spawn(async move {
            wb2.push(BindingChange::Upsert(binding("d", 1))).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !blocked.is_finished(),
            "a push beyond the queue's capacity waits"
        );
        store.open.add_permits(10);
        blocked.await.unwrap();
        wb.flush().await;
        assert_eq!(store.inner.bindings.lock().len(), 4);
        assert_eq!(store.inner.batches.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_last_handle_writes_what_is_queued() {
        let store = Arc::new(MemoryStore::default());
        let wb = WriteBehind::start(store.clone(), 100, Duration::from_secs(60), 1000);
        wb.push(BindingChange::Upsert(binding("a", 1))).await;
        drop(wb);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.bindings.lock().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_written_before_the_window_ends() {
        let store = Arc::new(MemoryStore::default());
        let wb = WriteBehind::start(store.clone(), 3, Duration::from_secs(60), 1000);
        for aor in ["a", "b", "c"] {
            wb.push(BindingChange::Upsert(binding(aor, 1))).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.bindings.lock().len(), 3);
    }
}
