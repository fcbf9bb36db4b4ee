//! Connection pool, configuration, transactions, durability check and database clock.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use serde::Deserialize;
use sqlx::Any;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool};

use crate::error::{Error, Result};

/// A transaction on the store. `&mut *tx` (or `&mut **tx` through a `&mut Tx`) is a
/// `&mut AnyConnection` executor.
pub type Tx = sqlx::Transaction<'static, Any>;

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Embedded SQLite (WAL, synchronous=FULL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// Backend named by a URL's scheme: `sqlite:` or `postgres://`/`postgresql://`.
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => {
                // Only the scheme, and only if it looks like one: the URL may hold a password.
                let shown: String = scheme
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                    .take(20)
                    .collect();
                Err(Error::UnsupportedUrl(if shown.is_empty() {
                    "(none)".to_string()
                } else {
                    shown
                }))
            }
        }
    }

    /// Backend of an open connection.
    pub fn of(conn: &AnyConnection) -> Backend {
        if conn.backend_name().eq_ignore_ascii_case("PostgreSQL") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// SQL expression for the database clock in unix microseconds (`BIGINT`).
    pub fn now_expr(self) -> &'static str {
        match self {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        }
    }

    fn select_now(self) -> &'static str {
        match self {
            Backend::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
            }
            Backend::Sqlite => {
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
            }
        }
    }
}

fn default_acquire_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}

/// How to reach the database.
///
/// Deserializes from e.g. TOML:
/// ```toml
/// url = "sqlite://var/fengqiao.db"
/// max_connections = 4        # optional; 0 or absent = backend default (SQLite 4, PostgreSQL 8)
/// acquire_timeout = "5s"     # optional; integer milliseconds or "<n>ms" / "<n>s"
/// busy_timeout = 5000        # optional; SQLite only
/// ```
#[derive(Clone, Deserialize)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://user@host/db`.
    pub url: String,
    /// Pool size; 0 means the backend default (SQLite 4, PostgreSQL 8).
    #[serde(default)]
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    #[serde(default = "default_acquire_timeout", deserialize_with = "de_duration")]
    pub acquire_timeout: Duration,
    /// SQLite `busy_timeout`: how long a writer waits for the write lock.
    #[serde(default = "default_busy_timeout", deserialize_with = "de_duration")]
    pub busy_timeout: Duration,
    /// Allow `sqlite::memory:` (no durability). Unit tests only.
    #[serde(default)]
    pub allow_memory: bool,
}

impl StoreConfig {
    /// Configuration with defaults for `url`'s backend.
    pub fn new(url: impl Into<String>) -> StoreConfig {
        let url = url.into();
        let max_connections = match Backend::from_url(&url) {
            Ok(b) => default_max_connections(b),
            Err(_) => 0,
        };
        StoreConfig {
            url,
            max_connections,
            acquire_timeout: default_acquire_timeout(),
            busy_timeout: default_busy_timeout(),
            allow_memory: false,
        }
    }

    fn is_memory(&self) -> bool {
        let url = self.url.to_ascii_lowercase();
        url.contains(":memory:") || url.contains("mode=memory")
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("allow_memory", &self.allow_memory)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

fn default_max_connections(backend: Backend) -> u32 {
    match backend {
        Backend::Sqlite => 4,
        Backend::Postgres => 8,
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(s) => {
            let s = s.trim();
            let (num, unit) = s
                .find(|c: char| !c.is_ascii_digit())
                .map(|i| s.split_at(i))
                .unwrap_or((s, "ms"));
            let n: u64 = num
                .parse()
                .map_err(|_| serde::de::Error::custom("expected a duration like 500ms or 5s"))?;
            match unit.trim() {
                "ms" => Ok(Duration::from_millis(n)),
                "s" => Ok(Duration::from_secs(n)),
                "m" | "min" => Ok(Duration::from_secs(n.saturating_mul(60))),
                _ => Err(serde::de::Error::custom(
                    "expected a duration like 500ms, 5s or 1m",
                )),
            }
        }
    }
}

/// The store: a connection pool and the backend it talks to. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    config: Arc<StoreConfig>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("config", &self.config)
            .finish()
    }
}

/// Install the sqlx `Any` drivers (SQLite, PostgreSQL) once per process. [`Store::connect`]
/// calls it; call it yourself before opening a bare `AnyConnection`. Idempotent.
pub fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// For a file-backed SQLite URL: create the parent directory, and add `mode=rwc` (create if
/// missing) unless a mode is given.
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let rest = url
        .get("sqlite:".len()..)
        .ok_or_else(|| Error::UnsupportedUrl("sqlite".to_string()))?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::UnsupportedUrl("sqlite (empty path)".to_string()));
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let has_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    Ok(match (query, has_mode) {
        (_, true) => url.to_string(),
        (Some(_), false) => format!("{url}&mode=rwc"),
        (None, false) => format!("{url}?mode=rwc"),
    })
}

impl Store {
    /// Connect, configure every connection, and check durability ([`Store::check_durability`]).
    pub async fn connect(config: StoreConfig) -> Result<Store> {
        install_drivers();
        let backend = Backend::from_url(&config.url)?;
        let memory = backend == Backend::Sqlite && config.is_memory();
        if memory && !config.allow_memory {
            return Err(Error::MemoryRefused);
        }
        // Bodies that may hold personal information are sealed (`crate::seal`); without a key
        // they could be neither written safely nor read.
        if !crate::seal::installed() {
            return Err(Error::NoSealKey);
        }
        let max = match config.max_connections {
            0 => default_max_connections(backend),
            n => n,
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(config.acquire_timeout);
        let url = match backend {
            Backend::Sqlite if memory => {
                // Every connection to `:memory:` is a separate database: keep exactly one,
                // forever.
                options = options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
                config.url.clone()
            }
            Backend::Sqlite => prepare_sqlite_url(&config.url)?,
            Backend::Postgres => config.url.clone(),
        };
        if backend == Backend::Sqlite {
            let busy_ms = u64::try_from(config.busy_timeout.as_millis()).unwrap_or(u64::MAX);
            options = options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    let busy = format!("PRAGMA busy_timeout = {busy_ms}");
                    conn.execute(busy.as_str()).await?;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let store = Store {
            pool,
            backend,
            config: Arc::new(config),
        };
        if let Err(e) = store.check_durability().await {
            store.pool.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// The backend this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The underlying pool, for queries outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begin a write transaction: `BEGIN IMMEDIATE` on SQLite (takes the write lock up front,
    /// waiting up to `busy_timeout`, so the transaction cannot fail later on lock upgrade);
    /// plain `BEGIN` (READ COMMITTED) on PostgreSQL.
    ///
    /// Cancel-safe: if the caller goes away while the transaction is beginning, it is rolled
    /// back and its connection returned clean (see [`Store::begin_detached`]).
    pub async fn write(&self) -> Result<Tx> {
        self.begin_detached(match self.backend {
            Backend::Sqlite => Some("BEGIN IMMEDIATE"),
            Backend::Postgres => None,
        })
        .await
    }

    /// Begin a read transaction (deferred `BEGIN`). Do not write in it: on SQLite a deferred
    /// transaction that starts writing can fail with `SQLITE_BUSY` without waiting.
    /// Cancel-safe like [`Store::write`].
    pub async fn read(&self) -> Result<Tx> {
        self.begin_detached(None).await
    }

    /// Begins a transaction on a task of its own, so that a caller cancelled meanwhile (a
    /// client deadline cutting a call off, a `select!`) cannot leave it half-begun. sqlx 0.8
    /// constructs its `Transaction`, whose drop rolls back, only after the last await of the
    /// begin; a future dropped before that — on SQLite after `BEGIN IMMEDIATE` already took
    /// the write lock, on PostgreSQL after `BEGIN` reached the server — put the connection back
    /// into the pool inside a transaction nobody ends. On SQLite that connection kept the write
    /// lock: every later write failed ("database is locked", or a nested custom `BEGIN`
    /// refused) until the connection was recycled. Here the begin always runs to the end; if
    /// no one waits for it any more, the finished `Transaction` is dropped and rolls back.
    async fn begin_detached(&self, statement: Option<&'static str>) -> Result<Tx> {
        let pool = self.pool.clone();
        let begin = tokio::spawn(async move {
            match statement {
                Some(s) => pool.begin_with(s).await,
                None => pool.begin().await,
            }
        });
        match begin.await {
            Ok(r) => Ok(r?),
            // Only if the runtime is shutting down (or the begin panicked).
            Err(_) => Err(Error::Database(sqlx::Error::PoolClosed)),
        }
    }

    /// Check that the database runs durably (see [`check_durability`]); in-memory SQLite
    /// (only with `allow_memory`) is exempt from the WAL requirement.
    pub async fn check_durability(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let memory = self.backend == Backend::Sqlite && self.config.is_memory();
        check(&mut conn, memory).await
    }

    /// The database clock in unix microseconds, read on `conn` (e.g. `&mut *tx`).
    pub async fn now_micros(&self, conn: &mut AnyConnection) -> Result<i64> {
        db_now_micros(conn).await
    }

    /// The database clock in unix microseconds, on a pooled connection.
    pub async fn now_micros_pool(&self) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        db_now_micros(&mut conn).await
    }

    /// Close the pool, waiting for checked-out connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The database clock in unix microseconds (PostgreSQL `clock_timestamp()`, SQLite
/// `julianday('now')`, millisecond resolution). Use it for every stored timestamp so that all
/// replicas of a service agree on one clock.
pub async fn db_now_micros(conn: &mut AnyConnection) -> Result<i64> {
    let sql = Backend::of(conn).select_now();
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(conn).await?)
}

/// Check that `conn`'s database is durable, or fail with [`Error::Durability`] naming the
/// setting.
///
/// * SQLite: `journal_mode` must be `wal` and `synchronous` at least `FULL` (2).
/// * PostgreSQL: `fsync` = `on`, `synchronous_commit` not `off`, `full_page_writes` = `on`.
pub async fn check_durability(conn: &mut AnyConnection) -> Result<()> {
    check(conn, false).await
}

async fn check(conn: &mut AnyConnection, memory: bool) -> Result<()> {
    match Backend::of(conn) {
        Backend::Sqlite => {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await?;
            if !memory && !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Durability(format!(
                    "SQLite journal_mode is {mode}, must be wal"
                )));
            }
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await?;
            if sync < 2 {
                return Err(Error::Durability(format!(
                    "SQLite synchronous is {sync}, must be FULL (2) or EXTRA (3)"
                )));
            }
        }
        Backend::Postgres => {
            let (fsync, sync_commit, fpw): (String, String, String) = sqlx::query_as(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
                 current_setting('full_page_writes')",
            )
            .fetch_one(&mut *conn)
            .await?;
            if fsync != "on" {
                return Err(Error::Durability(format!(
                    "PostgreSQL fsync is {fsync}, must be on"
                )));
            }
            if sync_commit == "off" {
                return Err(Error::Durability(
                    "PostgreSQL synchronous_commit is off".to_string(),
                ));
            }
            if fpw != "on" {
                return Err(Error::Durability(format!(
                    "PostgreSQL full_page_writes is {fpw}, must be on"
                )));
            }
        }
    }
    Ok(())
}

/// PostgreSQL advisory-lock classes (first key of `pg_advisory_xact_lock(int, int)`).
pub mod lock_class {
    /// Serialises migrators.
    pub const MIGRATIONS: i32 = 0x4651_0001;
    /// Serialises requests with the same idempotency key.
    pub const IDEMPOTENCY: i32 = 0x4651_0002;
    /// Serialises enqueuers of the same outbox ordering key.
    pub const OUTBOX_KEY: i32 = 0x4651_0003;
    /// Serialises appenders of a gap-free sequence (events, audit chain), keyed by its name.
    pub const SEQUENCE: i32 = 0x4651_0004;
}

/// The second advisory-lock key of `parts` (hashed).
fn lock_key(parts: &[&str]) -> i32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p.as_bytes());
    }
    let digest = ctx.finish();
    let mut key = [0u8; 4];
    key.copy_from_slice(&digest.as_ref()[..4]);
    i32::from_le_bytes(key)
}

/// [`pg_xact_lock`] on several single-part keys of one class in one statement, in the order
/// given (callers that may take overlapping sets concurrently should sort them). Keys already
/// held in this transaction are skipped.
pub async fn pg_xact_lock_each(conn: &mut AnyConnection, class: i32, keys: &[&str]) -> Result<()> {
    if Backend::of(conn) != Backend::Postgres {
        return Ok(());
    }
    let mut wanted: Vec<i32> = Vec::with_capacity(keys.len());
    for k in keys {
        let key = lock_key(&[k]);
        if !crate::group::lock_held(conn, class, key) && !wanted.contains(&key) {
            wanted.push(key);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    // pg_advisory_xact_lock returns `void`, which the Any driver cannot decode: cast to text.
    let calls: Vec<String> = (0..wanted.len())
        .map(|i| format!("CAST(pg_advisory_xact_lock($1, ${}) AS TEXT)", i + 2))
        .collect();
    let sql = format!("SELECT {}", calls.join(", "));
    let mut q = sqlx::query(&sql).bind(class);
    for key in &wanted {
        q = q.bind(*key);
    }
    q.execute(&mut *conn).await?;
    for key in wanted {
        crate::group::note_lock(conn, class, key);
    }
    Ok(())
}

/// Take a transaction-scoped advisory lock on PostgreSQL (no-op on SQLite, whose write
/// transactions are already serialised). `parts` are hashed into the second key.
pub async fn pg_xact_lock(conn: &mut AnyConnection, class: i32, parts: &[&str]) -> Result<()> {
    if Backend::of(conn) != Backend::Postgres {
        return Ok(());
    }
    let key = lock_key(parts);
    if crate::group::lock_held(conn, class, key) {
        // Taken earlier in this same shared transaction (group commit): still held.
        return Ok(());
    }
    // pg_advisory_xact_lock returns `void`, which the Any driver cannot decode: cast to text.
    sqlx::query("SELECT CAST(pg_advisory_xact_lock($1, $2) AS TEXT)")
        .bind(class)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    crate::group::note_lock(conn, class, key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url() {
        assert_eq!(
            Backend::from_url("sqlite://a.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/d").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/d").ok(),
            Some(Backend::Postgres)
        );
        match Backend::from_url("mysql://u:secret@h/d") {
            Err(Error::UnsupportedUrl(s)) => assert_eq!(s, "mysql"),
            other => panic!("unexpected {other:?}"),
        }
        match Backend::from_url("nonsense") {
            Err(Error::UnsupportedUrl(s)) => assert_eq!(s, "(none)"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn config_defaults_and_redaction() {
        let c = StoreConfig::new("postgres://u:pw@h/d");
        assert_eq!(c.max_connections, 8);
        assert_eq!(StoreConfig::new("sqlite://x.db").max_connections, 4);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("pw"), "{dbg}");
        assert!(dbg.contains("u:***@h/d"), "{dbg}");
    }

    #[test]
    fn sqlite_url_gets_create_mode() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("fq-store-url-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sub/x.db", dir.display());
        assert_eq!(prepare_sqlite_url(&url)?, format!("{url}?mode=rwc"));
        assert!(dir.join("sub").is_dir());
        assert_eq!(
            prepare_sqlite_url(&format!("{url}?cache=shared"))?,
            format!("{url}?cache=shared&mode=rwc")
        );
        assert_eq!(
            prepare_sqlite_url(&format!("{url}?mode=ro"))?,
            format!("{url}?mode=ro")
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[tokio::test]
    async fn memory_refused_unless_allowed() -> Result<()> {
        match Store::connect(StoreConfig::new("sqlite::memory:")).await {
            Err(Error::MemoryRefused) => {}
            other => panic!("unexpected {other:?}"),
        }
        let mut cfg = StoreConfig::new("sqlite::memory:");
        cfg.allow_memory = true;
        crate::seal::install_for_tests();
        let store = Store::connect(cfg).await?;
        let now = store.now_micros_pool().await?;
        assert!(now > 1_600_000_000_000_000);
        store.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn unsupported_url_refused() {
        match Store::connect(StoreConfig::new("mysql://root:pw@localhost/db")).await {
            Err(e @ Error::UnsupportedUrl(_)) => assert!(!e.to_string().contains("pw")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn duration_deserialize() {
        #[derive(Deserialize)]
        struct W {
            #[serde(deserialize_with = "de_duration")]
            d: Duration,
        }
        let parse = |s: &str| serde_json::from_str::<W>(s).map(|w| w.d).ok();
        assert_eq!(parse(r#"{"d": 250}"#), Some(Duration::from_millis(250)));
        assert_eq!(parse(r#"{"d": "5s"}"#), Some(Duration::from_secs(5)));
        assert_eq!(parse(r#"{"d": "750ms"}"#), Some(Duration::from_millis(750)));
        assert_eq!(parse(r#"{"d": "2m"}"#), Some(Duration::from_secs(120)));
        assert_eq!(parse(r#"{"d": "soon"}"#), None);
    }
}
