//! Deadlines (期限) stored in the database, and one timer per store that fires each once.
//!
//! A service [`schedule`]s a deadline in the same transaction as the change that starts it
//! (e.g. a 司法确认 application accepted: review due in 15 days, 民事诉讼法 Art 187 /
//! 法释〔2011〕5号 Art 5), [`cancel`]s it in the transaction of the event that makes it moot,
//! and runs a [`DeadlineTimer`] that calls its [`DeadlineHandler`] for each deadline that
//! falls due. Deadlines are keyed by `(owner, key)`: `owner` is the service (one timer per
//! owner), `key` the thing that is due, e.g. `cases/{id}/review`. Keys and payloads are
//! stored as given: keep personal information out of keys (they appear in logs).
//!
//! # Exactly once
//!
//! Time is always the **database's** time ([`crate::db_now_micros`]): every replica agrees on
//! what is due. For each due deadline the timer opens one write transaction, re-reads the row
//! there (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so another timer busy with the same row is
//! skipped rather than waited for; on SQLite the write transaction is `IMMEDIATE`, so writers
//! are serialised), checks that it is still unfired and due, calls the handler with that
//! transaction, marks the row fired (`fired_at`) and commits. The handler's writes and the
//! mark commit together, so with any number of timers (processes) on one database each expiry
//! takes effect once. A handler error rolls the transaction back: the row stays unfired and is
//! tried again on a later pass (`attempts` counts the tries).
//!
//! Rescheduling ([`schedule`] on an existing key) replaces the due time and payload and arms
//! the deadline again, even if it had fired. Fired rows are kept as a record until
//! [`purge_fired`] removes them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::error::Result;
use crate::store::{Backend, Store, Tx};

/// A boxed future, as [`DeadlineHandler::fire`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler may fail with. It is logged (with the deadline's owner and key), so it must
/// not carry personal information, as the store's own [`crate::Error`] does not.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Default pause between two passes of a [`DeadlineTimer`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of due deadlines one pass looks at.
pub const DEFAULT_BATCH: u32 = 100;

/// A stored deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// The service that owns it (one timer per owner).
    pub owner: String,
    /// What is due, e.g. `cases/{id}/review`.
    pub key: String,
    /// When it falls due, unix µs (database clock).
    pub due_at: i64,
    /// Whatever the owner stored with it.
    pub payload: Option<Vec<u8>>,
    /// When it was first scheduled.
    pub created_at: i64,
    /// When it was last (re)scheduled.
    pub updated_at: i64,
    /// When it fired; `None` while pending.
    pub fired_at: Option<i64>,
    /// How many times a handler was called for it since it was last scheduled (failed tries
    /// included).
    pub attempts: i64,
}

const COLUMNS: &str = "owner, key, due_at, payload, created_at, updated_at, fired_at, attempts";

fn row_to_deadline(row: &AnyRow) -> Result<Deadline> {
    Ok(Deadline {
        owner: row.try_get("owner")?,
        key: row.try_get("key")?,
        due_at: row.try_get("due_at")?,
        payload: row
            .try_get::<Option<Vec<u8>>, _>("payload")?
            .map(|p| crate::seal::open("deadlines.payload", &p))
            .transpose()?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        fired_at: row.try_get("fired_at")?,
        attempts: row.try_get("attempts")?,
    })
}

/// Schedules the deadline `(owner, key)` at `due_at` (unix µs, database clock) with an
/// optional `payload`, in the caller's transaction. Rescheduling an existing key replaces its
/// due time and payload, arms it again if it had fired, and resets its attempts.
pub async fn schedule(
    tx: &mut AnyConnection,
    owner: &str,
    key: &str,
    due_at: i64,
    payload: Option<&[u8]>,
) -> Result<()> {
    let now = Backend::of(tx).now_expr();
    sqlx::query(&format!(
        "INSERT INTO deadlines (owner, key, due_at, payload, created_at, updated_at, fired_at, \
         attempts) VALUES ($1, $2, $3, $4, {now}, {now}, NULL, 0) \
         ON CONFLICT (owner, key) DO UPDATE SET due_at = excluded.due_at, \
         payload = excluded.payload, updated_at = excluded.updated_at, fired_at = NULL, \
         attempts = 0"
    ))
    .bind(owner)
    .bind(key)
    .bind(due_at)
    .bind(
        payload
            .map(|p| crate::seal::seal("deadlines.payload", p))
            .transpose()?,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Cancels the deadline `(owner, key)` in the caller's transaction. Returns whether a pending
/// (unfired) deadline was cancelled; a fired one's record is removed too.
pub async fn cancel(tx: &mut AnyConnection, owner: &str, key: &str) -> Result<bool> {
    let pending: Option<Option<i64>> = sqlx::query_scalar(
        "DELETE FROM deadlines WHERE owner = $1 AND key = $2 RETURNING fired_at",
    )
    .bind(owner)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(matches!(pending, Some(None)))
}

/// The deadline `(owner, key)`, if scheduled (pending or fired).
pub async fn get(conn: &mut AnyConnection, owner: &str, key: &str) -> Result<Option<Deadline>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM deadlines WHERE owner = $1 AND key = $2"
    ))
    .bind(owner)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(row_to_deadline).transpose()
}

/// Removes `owner`'s fired deadlines that fired before `before` (unix µs). Returns how many.
pub async fn purge_fired(conn: &mut AnyConnection, owner: &str, before: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM deadlines WHERE owner = $1 AND fired_at IS NOT NULL AND fired_at < $2",
    )
    .bind(owner)
    .bind(before)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// What a service does when one of its deadlines falls due. `fire` runs inside the write
/// transaction that marks the deadline fired: write the consequences through `tx` (not
/// through another connection) so they commit, or roll back, with the mark. Return an error
/// to have the deadline tried again on a later pass.
pub trait DeadlineHandler: Send + Sync + 'static {
    /// Carries out the consequences of `deadline` falling due.
    fn fire<'a>(
        &'a self,
        tx: &'a mut Tx,
        deadline: &'a Deadline,
    ) -> BoxFuture<'a, std::result::Result<(), HandlerError>>;
}

/// What one pass of a [`DeadlineTimer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Deadlines fired (handler succeeded, committed).
    pub fired: usize,
    /// Deadlines whose handler failed (rolled back, tried again later).
    pub failed: usize,
    /// Due deadlines another timer had fired or was firing, that were rescheduled or
    /// cancelled meanwhile, or that met a busy database (they stay for the next pass).
    pub skipped: usize,
}

/// The timer of one owner's deadlines on one store: every `interval` it reads the database's
/// time and fires what is due, each exactly once (see the [module docs](self)).
pub struct DeadlineTimer {
    store: Store,
    owner: String,
    handler: Arc<dyn DeadlineHandler>,
    interval: Duration,
    batch: u32,
}

impl std::fmt::Debug for DeadlineTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineTimer")
            .field("owner", &self.owner)
            .field("interval", &self.interval)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl DeadlineTimer {
    /// A timer for `owner`'s deadlines on `store`, calling `handler`; runs every
    /// [`DEFAULT_INTERVAL`] and looks at up to [`DEFAULT_BATCH`] due deadlines per pass.
    pub fn new(store: Store, owner: impl Into<String>, handler: impl DeadlineHandler) -> Self {
        DeadlineTimer {
            store,
            owner: owner.into(),
            handler: Arc::new(handler),
            interval: DEFAULT_INTERVAL,
            batch: DEFAULT_BATCH,
        }
    }

    /// Sets the pause between passes.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets how many due deadlines one pass looks at (at least 1).
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// One pass: fires every deadline of the owner due at the database's current time (up to
    /// the batch size), each in its own transaction. A handler error is counted in
    /// [`Pass::failed`] and logged; the other deadlines still fire. Errors only when the
    /// store cannot be read.
    pub async fn run_once(&self) -> Result<Pass> {
        let now_expr = self.store.backend().now_expr();
        let keys: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT key FROM deadlines WHERE owner = $1 AND fired_at IS NULL \
             AND due_at <= {now_expr} ORDER BY due_at, key LIMIT {}",
            self.batch
        ))
        .bind(&self.owner)
        .fetch_all(self.store.pool())
        .await?;
        let mut pass = Pass::default();
        for key in keys {
            match self.fire_one(&key).await {
                Ok(true) => pass.fired += 1,
                Ok(false) => pass.skipped += 1,
                Err(FireError::Handler(e)) => {
                    pass.failed += 1;
                    tracing::warn!(owner = %self.owner, key = %key, error = %e,
                        "deadline handler failed; the deadline is tried again on a later pass");
                }
                // Another writer won a race (serialization failure, busy database): the
                // deadline is still unfired if nobody fired it, and the next pass sees it.
                Err(FireError::Store(e)) if e.is_retryable() => pass.skipped += 1,
                Err(FireError::Store(e)) => return Err(e),
            }
        }
        Ok(pass)
    }

    /// Fires `key` if it is still unfired and due: Ok(true) if it fired, Ok(false) if there
    /// was nothing (any more) to fire.
    async fn fire_one(&self, key: &str) -> std::result::Result<bool, FireError> {
        let mut tx = self.store.write().await?;
        let backend = self.store.backend();
        let lock = match backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM deadlines WHERE owner = $1 AND key = $2 \
             AND fired_at IS NULL AND due_at <= {}{lock}",
            backend.now_expr()
        ))
        .bind(&self.owner)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(crate::Error::from)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let mut deadline = row_to_deadline(&row)?;
        // The handler sees this try counted (1 on the first).
        deadline.attempts += 1;
        if let Err(e) = self.handler.fire(&mut tx, &deadline).await {
            // Everything the handler wrote goes; the row stays unfired for a later pass.
            let _ = tx.rollback().await;
            self.count_failed_attempt(key).await;
            return Err(FireError::Handler(e));
        }
        let done = sqlx::query(&format!(
            "UPDATE deadlines SET fired_at = {}, attempts = attempts + 1 \
             WHERE owner = $1 AND key = $2 AND fired_at IS NULL",
            backend.now_expr()
        ))
        .bind(&self.owner)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(crate::Error::from)?;
        if done.rows_affected() != 1 {
            // Cannot happen while we hold the row (lock or IMMEDIATE); never commit a handler's
            // work without the mark.
            return Ok(false);
        }
        tx.commit().await.map_err(crate::Error::from)?;
        Ok(true)
    }

    /// Records a failed try (best effort: the count is bookkeeping, not correctness).
    async fn count_failed_attempt(&self, key: &str) {
        let counted = async {
            let mut tx = self.store.write().await?;
            sqlx::query(
                "UPDATE deadlines SET attempts = attempts + 1 \
                 WHERE owner = $1 AND key = $2 AND fired_at IS NULL",
            )
            .bind(&self.owner)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, crate::Error>(())
        };
        if let Err(e) = counted.await {
            tracing::debug!(owner = %self.owner, error = %e, "cannot count a failed deadline try");
        }
    }

    /// Runs passes every `interval` until `shutdown` resolves (e.g.
    /// `async move { shutdown.wait().await }` with the kit's `Shutdown`). A pass that fails
    /// (store unreachable) is logged and retried on the next tick.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if let Err(e) = self.run_once().await {
                tracing::warn!(owner = %self.owner, error = %e, "deadline pass failed; will retry");
            }
        }
    }

    /// Spawns [`DeadlineTimer::run`] on the current tokio runtime; stop it with
    /// [`TimerHandle::stop`].
    pub fn spawn(self) -> TimerHandle {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(self.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));
        TimerHandle { stop: tx, task }
    }
}

/// A running [`DeadlineTimer`] (see [`DeadlineTimer::spawn`]).
#[derive(Debug)]
pub struct TimerHandle {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TimerHandle {
    /// Stops the timer and waits for its current pass to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

enum FireError {
    Handler(HandlerError),
    Store(crate::Error),
}

impl From<crate::Error> for FireError {
    fn from(e: crate::Error) -> Self {
        FireError::Store(e)
    }
}
