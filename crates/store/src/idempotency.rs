//! Idempotent request handling (AIP `request_id`).
//!
//! Inside the same write transaction as the change:
//!
//! ```no_run
//! # use fengqiao_store::{Store, Result, idempotency::{self, IdempotencyKey}};
//! # async fn handle(store: &Store, request_bytes: &[u8]) -> Result<Vec<u8>> {
//! let key = IdempotencyKey::new("agency-a/alice", "CreateCase", "9b7e…");
//! let hash = idempotency::hash_request(request_bytes);
//! let mut tx = store.write().await?;
//! if let Some(stored) = idempotency::lookup(&mut tx, &key, &hash).await? {
//!     return Ok(stored); // a replay: answer exactly as the first time
//! }
//! let response: Vec<u8> = Vec::new(); // … do the work in `tx`, encode the response …
//! idempotency::record(&mut tx, &key, &hash, &response).await?;
//! tx.commit().await?;
//! # Ok(response) }
//! ```
//!
//! A replay with a different payload fails with [`Error::IdempotencyConflict`]. On PostgreSQL
//! [`lookup`] also takes a transaction-scoped advisory lock on the key, so two concurrent
//! requests with the same key run one after the other and the second sees the first's response
//! (SQLite's `BEGIN IMMEDIATE` serialises them already).

use sqlx::Row as _;

use crate::error::{Error, Result};
use crate::migrate::checksum;
use crate::store::{Backend, Store, Tx, lock_class, pg_xact_lock};

/// Identifies one logical request: who sent it, to which method, with which `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The verified caller (e.g. agency and actor).
    pub caller: String,
    /// Fully qualified method name.
    pub method: String,
    /// The client-chosen request id.
    pub request_id: String,
}

impl IdempotencyKey {
    /// Build a key.
    pub fn new(
        caller: impl Into<String>,
        method: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        IdempotencyKey {
            caller: caller.into(),
            method: method.into(),
            request_id: request_id.into(),
        }
    }
}

/// Seal context of `idempotency_keys.response` (answers carry personal information).
const RESPONSE: &str = "idempotency_keys.response";

/// Keyed hash (HMAC-SHA-256, [`crate::seal::keyed_hash`]) of the canonical request bytes: a
/// plain hash of a request that holds an identity number could be reversed by trying every
/// number. Without an installed key ring (no store can be open then) a plain SHA-256.
pub fn hash_request(bytes: &[u8]) -> String {
    crate::seal::keyed_hash("idempotency_keys.request_hash", bytes)
        .unwrap_or_else(|_| checksum(bytes))
}

/// The stored response for `key`, if the request was already handled.
///
/// `Err(Error::IdempotencyConflict)` when `key` was recorded with a different `request_hash`.
pub async fn lookup(
    tx: &mut Tx,
    key: &IdempotencyKey,
    request_hash: &str,
) -> Result<Option<Vec<u8>>> {
    pg_xact_lock(
        tx,
        lock_class::IDEMPOTENCY,
        &[&key.caller, &key.method, &key.request_id],
    )
    .await?;
    lookup_unlocked(tx, key, request_hash).await
}

/// Like [`lookup`], without the key's lock, on any connection (in a transaction or not): a
/// hint that lets a retried call skip its work early. It can miss an answer that commits
/// right after it; the change itself must still call [`lookup`] in its write transaction.
pub async fn lookup_unlocked(
    conn: &mut sqlx::AnyConnection,
    key: &IdempotencyKey,
    request_hash: &str,
) -> Result<Option<Vec<u8>>> {
    let row = sqlx::query(
        "SELECT request_hash, response FROM idempotency_keys \
         WHERE caller = $1 AND method = $2 AND request_id = $3",
    )
    .bind(&key.caller)
    .bind(&key.method)
    .bind(&key.request_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored_hash: String = row.try_get(0)?;
    if stored_hash != request_hash {
        return Err(Error::IdempotencyConflict);
    }
    Ok(Some(crate::seal::open(
        RESPONSE,
        &row.try_get::<Vec<u8>, _>(1)?,
    )?))
}

/// A `LEFT JOIN` of the key's row (alias `idem_k`) for a statement that reads something else
/// too: the key's three parameters are numbered from `$first`; select [`JOINED_COLUMNS`] and
/// read them with [`stored_in_row`]. Like [`lookup_unlocked`], no lock: an advisory read.
pub fn join_sql(first: usize) -> String {
    format!(
        "LEFT JOIN idempotency_keys idem_k ON idem_k.caller = ${} AND idem_k.method = ${} \
         AND idem_k.request_id = ${}",
        first,
        first + 1,
        first + 2
    )
}

/// The columns a statement with [`join_sql`] selects.
pub const JOINED_COLUMNS: &str =
    "idem_k.request_hash AS idem_hash, idem_k.response AS idem_response";

/// The stored response in a row read with [`join_sql`] and [`JOINED_COLUMNS`], as
/// [`lookup_unlocked`] answers it.
pub fn stored_in_row(row: &sqlx::any::AnyRow, request_hash: &str) -> Result<Option<Vec<u8>>> {
    let Some(stored_hash) = row.try_get::<Option<String>, _>("idem_hash")? else {
        return Ok(None);
    };
    if stored_hash != request_hash {
        return Err(Error::IdempotencyConflict);
    }
    let response: Vec<u8> = row.try_get("idem_response")?;
    Ok(Some(crate::seal::open(RESPONSE, &response)?))
}

/// Like [`lookup_unlocked`], and the database clock (microseconds, [`Backend::now_expr`]) read
/// in the same statement: one round trip for a change that needs both.
///
/// Takes no lock on the key: use it in the write transaction of a change only when a lock the
/// transaction already holds serialises every call with this key — e.g. the row the request
/// names, locked before this lookup (a call with the same key and request names the same
/// row). Under READ COMMITTED this statement's snapshot is taken after that lock was granted,
/// so it sees the answer of a concurrent call that held the lock first.
pub async fn lookup_unlocked_with_now(
    conn: &mut sqlx::AnyConnection,
    key: &IdempotencyKey,
    request_hash: &str,
) -> Result<(Option<Vec<u8>>, i64)> {
    let sql = format!(
        "SELECT {} AS db_now, k.request_hash, k.response FROM (SELECT 1 AS one) o \
         LEFT JOIN idempotency_keys k \
         ON k.caller = $1 AND k.method = $2 AND k.request_id = $3",
        Backend::of(conn).now_expr()
    );
    let row = sqlx::query(&sql)
        .bind(&key.caller)
        .bind(&key.method)
        .bind(&key.request_id)
        .fetch_one(&mut *conn)
        .await?;
    let now: i64 = row.try_get(0)?;
    let Some(stored_hash) = row.try_get::<Option<String>, _>(1)? else {
        return Ok((None, now));
    };
    if stored_hash != request_hash {
        return Err(Error::IdempotencyConflict);
    }
    let response: Vec<u8> = row.try_get(2)?;
    Ok((Some(crate::seal::open(RESPONSE, &response)?), now))
}

/// Record the response for `key`, in the transaction that made the change.
///
/// If the key was recorded concurrently (only possible when [`lookup`] was skipped), fails with
/// [`Error::ConcurrentModification`]: roll back and retry, and the retry's lookup will find it.
pub async fn record(
    tx: &mut Tx,
    key: &IdempotencyKey,
    request_hash: &str,
    response: &[u8],
) -> Result<()> {
    let sql = format!(
        "INSERT INTO idempotency_keys (caller, method, request_id, request_hash, response, created_at) \
         VALUES ($1, $2, $3, $4, $5, {})",
        Backend::of(tx).now_expr()
    );
    let result = sqlx::query(&sql)
        .bind(&key.caller)
        .bind(&key.method)
        .bind(&key.request_id)
        .bind(request_hash)
        .bind(crate::seal::seal(RESPONSE, response)?)
        .execute(&mut **tx)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = Error::from(e);
            if e.is_unique_violation() {
                Err(Error::ConcurrentModification)
            } else {
                Err(e)
            }
        }
    }
}

/// Delete keys recorded before `cutoff_micros` (database clock); returns how many.
pub async fn purge_older_than(store: &Store, cutoff_micros: i64) -> Result<u64> {
    let mut tx = store.write().await?;
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(cutoff_micros)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
