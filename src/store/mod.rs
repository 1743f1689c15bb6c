//! The store: the only module that speaks SQL.
//!
//! One schema, two backends: an embedded SQLite file (WAL) for a single box, PostgreSQL when
//! several instances or sites share state. Queries go through sqlx's `Any` driver with `$N`
//! placeholders, which both backends accept, so every query is written once; only the DDL in
//! `migrations/{sqlite,postgres}` differs.
//!
//! Every write that changes what a phone would be served commits its typed change events in
//! the same transaction ([`events`]: NOTIFY on PostgreSQL, an outbox row on SQLite), and bumps
//! `meta.version` (the generation `/healthz` reads).

mod bindings;
mod catalog;
mod devices;
pub mod events;
mod link;
pub mod model;
pub mod primary;
mod receipts;
mod switch_credentials;

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

pub use primary::Access;

pub use bindings::StoredBinding;
pub use devices::{AssignOutcome, FreedDn, ImportLine, ImportReport};
pub use events::{Change, ChangeBus, ChangeFeed, Listener, Notification, Source};
pub use receipts::Receipt;
pub use switch_credentials::{SwitchSubscriber, SwitchSync};

/// Why a store operation failed; each maps to one HTTP status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{key}` not found")]
    NotFound { what: &'static str, key: String },
    #[error("{what} `{key}` already exists")]
    Conflict { what: &'static str, key: String },
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl crate::fault::HasFault for StoreError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            StoreError::NotFound { .. } => Fault::NotFound,
            StoreError::Conflict { .. } => Fault::Conflict,
            StoreError::Invalid(_) => Fault::Invalid,
            e if e.is_unavailable() => Fault::Unavailable,
            StoreError::Db(_) | StoreError::Migrate(_) => Fault::Internal,
        }
    }
}

impl StoreError {
    /// The database could not be reached (down, restarting, every connection busy): a
    /// condition to retry, not a fault of the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed => true,
                // Class 08 (connection exception), 57P01–57P03 (shutdown, starting up),
                // 25006 (a write on a standby: the primary moved or is gone, see `primary`).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0") || c == "25006"),
                _ => false,
            },
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    /// The pool, on the writable host when `store.url` names several ([`link`]).
    link: std::sync::Arc<link::Link>,
    backend: Backend,
    /// The schema written to (PostgreSQL; empty on SQLite): change events name it.
    scope: String,
    /// This store's id, random per open: its own change events are not delivered back to it.
    origin: String,
    /// This process's subscribers to committed changes.
    bus: std::sync::Arc<events::ChangeBus>,
}

static DRIVERS: Once = Once::new();

/// Now, in Unix milliseconds: the store's unit of time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long a request waits for a database connection. sqlx's default (30 s) made every
/// request hang that long while PostgreSQL was down or restarting, past phones' HTTP timeouts
/// and load balancers' health checks; an answer (503) within a few seconds is what they can
/// act on.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long PostgreSQL lets one of our sessions sit idle inside a transaction before ending
/// it (see `Store::open`).
pub const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates. A PostgreSQL URL may name
    /// several hosts ([`primary`]): the store uses the writable one and follows it.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let hosts = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                primary::HostList {
                    urls: vec![format!(
                        "{url}{}mode=rwc",
                        if url.contains('?') { '&' } else { '?' }
                    )],
                    attrs: primary::SessionAttrs::Any,
                    connect_timeout: primary::DEFAULT_CONNECT_TIMEOUT,
                }
            }
            Backend::Sqlite => primary::HostList {
                urls: vec![url.to_owned()],
                attrs: primary::SessionAttrs::Any,
                connect_timeout: primary::DEFAULT_CONNECT_TIMEOUT,
            },
            Backend::Postgres => primary::parse(url).map_err(StoreError::Invalid)?,
        };
        // Several hosts: start on the writable one, or (degraded) a standby that answers.
        let (host, access) = if hosts.is_multi() {
            primary::choose(&hosts).await.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "no database host of store.url answers ({})",
                    hosts
                        .urls
                        .iter()
                        .map(|u| primary::host_of(u))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?
        } else {
            (0, primary::Access::Writable)
        };
        let url = hosts.urls[host].clone();
        let pool = pool_options(backend, max_connections).connect(&url).await?;
        if access == primary::Access::Writable {
            migrate(backend, &url, &pool).await?;
        } else {
            tracing::warn!(
                host = primary::host_of(&url),
                "no writable database host: starting degraded, schema not migrated"
            );
        }
        let scope = match backend {
            Backend::Postgres => {
                sqlx::query_scalar::<_, String>(
                    "SELECT COALESCE(CAST(current_schema() AS TEXT), '')",
                )
                .fetch_one(&pool)
                .await?
            }
            Backend::Sqlite => String::new(),
        };
        let link = link::Link::new(
            pool,
            host,
            access,
            hosts,
            Box::new(move |url| Ok(pool_options(backend, max_connections).connect_lazy(url)?)),
        );
        if backend == Backend::Postgres {
            link.spawn_watcher();
        }
        Ok(Store {
            link,
            backend,
            scope,
            origin: hex::encode(rand::random::<[u8; 8]>()),
            bus: Default::default(),
        })
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that read first and then tries to write
    /// fails at once with "database is locked" when another writer got there in between,
    /// whereas an immediate one waits its turn under `busy_timeout`.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool().begin().await?,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The current pool: on the writable host, or a standby while the store is degraded.
    fn pool(&self) -> AnyPool {
        self.link.pool()
    }

    /// Whether writes can succeed now ([`Access::Writable`]), only reads (a standby: the
    /// node is degraded), or nothing. Always writable on SQLite and a single-host URL whose
    /// server answers; kept current by the host watcher.
    pub fn access(&self) -> Access {
        self.link.access()
    }

    /// Waits up to `limit` for a writable database; whether there is one. What a caller
    /// who must not give up at the first failover (an IVR assignment) waits on. A database
    /// already unwritable for longer than `limit` is an outage, not a failover under way: no
    /// wait then.
    pub async fn wait_writable(&self, limit: std::time::Duration) -> bool {
        if self.access() != Access::Writable && self.link.unchanged_for() >= limit {
            return false;
        }
        let mut rx = self.link.watch_access();
        tokio::time::timeout(limit, rx.wait_for(|a| *a == Access::Writable))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// `host:port` of the database host in use (for health and logs).
    pub fn host(&self) -> String {
        primary::host_of(&self.link.url()).to_owned()
    }

    /// `NOTIFY channel, payload` (PostgreSQL only): how instances hand work to each other,
    /// see `crate::sipside::checksync::handover`.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS n")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool())
            .await?;
        Ok(())
    }

    /// Whether a session named `application_name` is connected (PostgreSQL only): each
    /// instance's listener carries its id as that name, so this is "is that instance up".
    pub async fn session_alive(&self, application_name: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application_name)
                .fetch_one(&self.pool())
                .await?;
        Ok(n > 0)
    }

    pub async fn close(&self) {
        self.pool().close().await;
    }

    /// The generation of served data; see the module doc.
    pub async fn version(&self) -> Result<u64> {
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'version'")
            .fetch_one(&self.pool())
            .await?;
        Ok(v.parse().unwrap_or(0))
    }

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool())
            .await?)
    }

    /// Sets a key only if absent and returns the value that won, so that two instances starting
    /// at once agree on one generated secret.
    pub async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool())
            .await?;
        Ok(self
            .meta_get(key)
            .await?
            .unwrap_or_else(|| value.to_owned()))
    }
}

/// The pool settings of every host: short acquire timeout, and the session settings below.
fn pool_options(backend: Backend, max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL lets the CLI and the server use one file at once; NORMAL sync is
                    // durable across application crashes, which is what WAL promises.
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous=NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys=ON")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout=5000")
                        .execute(&mut *conn)
                        .await?;
                }
                if backend == Backend::Postgres {
                    // An instance that stalls inside a transaction (a hung process, a
                    // network cut between it and the database) would otherwise hold its
                    // row locks, and the version row every write updates, for as long as
                    // its connection stays open, blocking every other instance. sipdm
                    // never waits inside a transaction, so a session idle in one this
                    // long is stuck: PostgreSQL ends it and the locks go.
                    sqlx::query(&format!(
                        "SET idle_in_transaction_session_timeout = {}",
                        IDLE_IN_TRANSACTION.as_millis()
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
}

/// Brings the schema up to date.
async fn migrate(backend: Backend, url: &str, pool: &AnyPool) -> Result<()> {
    match backend {
        Backend::Sqlite => {
            // sqlx takes no lock when migrating SQLite, so two processes opening a fresh
            // file at once (the server and the CLI) would both create the tables. A file
            // lock beside the database serialises them.
            let _guard = match sqlite_path(url) {
                Some(path) => Some(lock_beside(&path).await?),
                None => None,
            };
            sqlx::migrate!("migrations/sqlite").run(pool).await?
        }
        // PostgreSQL migrations take an advisory lock of their own.
        Backend::Postgres => sqlx::migrate!("migrations/postgres").run(pool).await?,
    }
    Ok(())
}

/// The file of a `sqlite:` URL, unless it is in memory.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// Holds an exclusive OS lock on `<db>.lock` until dropped.
async fn lock_beside(db: &std::path::Path) -> Result<std::fs::File> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Invalid(format!(
                "cannot open {}: {e}",
                std::path::Path::new(&lock_path).display()
            ))
        })?;
    tokio::task::spawn_blocking(move || file.lock().map(|_| file))
        .await
        .map_err(|e| StoreError::Invalid(format!("migration lock: {e}")))?
        .map_err(|e| StoreError::Invalid(format!("migration lock: {e}")))
}

/// Bumps the served-data generation inside a transaction.
async fn bump_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
    sqlx::query(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'version'",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Maps a unique-key violation to `Conflict` and a foreign-key violation to `Invalid`.
fn classify(err: sqlx::Error, what: &'static str, key: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return StoreError::Conflict {
                what,
                key: key.to_owned(),
            };
        }
        if db.is_foreign_key_violation() {
            return StoreError::Invalid(format!(
                "{what} `{key}` refers to something that does not exist"
            ));
        }
    }
    StoreError::Db(err)
}
