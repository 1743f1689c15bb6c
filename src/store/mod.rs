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
pub mod model;
mod receipts;
mod switch_credentials;

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

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
                // Class 08 (connection exception) and 57P01–57P03 (shutdown, starting up).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
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
    pool: AnyPool,
    backend: Backend,
    /// The URL it was opened with (a listener opens its own connection to it).
    url: String,
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
    /// Opens (creating a SQLite file if needed) and migrates.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
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
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => {
                // sqlx takes no lock when migrating SQLite, so two processes opening a fresh
                // file at once (the server and the CLI) would both create the tables. A file
                // lock beside the database serialises them.
                let _guard = match sqlite_path(&url) {
                    Some(path) => Some(lock_beside(&path).await?),
                    None => None,
                };
                sqlx::migrate!("migrations/sqlite").run(&pool).await?
            }
            // PostgreSQL migrations take an advisory lock of their own.
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
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
        Ok(Store {
            pool,
            backend,
            url,
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
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `NOTIFY channel, payload` (PostgreSQL only): how instances hand work to each other,
    /// see `crate::sipside::checksync::handover`.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS n")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a session named `application_name` is connected (PostgreSQL only): each
    /// instance's listener carries its id as that name, so this is "is that instance up".
    pub async fn session_alive(&self, application_name: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application_name)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The generation of served data; see the module doc.
    pub async fn version(&self) -> Result<u64> {
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'version'")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.parse().unwrap_or(0))
    }

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sets a key only if absent and returns the value that won, so that two instances starting
    /// at once agree on one generated secret.
    pub async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(self
            .meta_get(key)
            .await?
            .unwrap_or_else(|| value.to_owned()))
    }
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
