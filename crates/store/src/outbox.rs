//! Transactional outbox.
//!
//! A service that changes state and must tell another service [`enqueue`]s the message in the
//! same transaction, so the change and its message commit (or roll back) together. A delivery
//! worker then [`claim`]s messages, delivers them, and marks them [`mark_delivered`],
//! [`mark_failed`] (retry later, see [`backoff`]) or [`mark_dead`] (an incident; an operator
//! may [`retry_dead`]).
//!
//! Claiming is by **state**, never by an increasing-id cursor: on PostgreSQL sequence values
//! are assigned at insert time but become visible at commit time, in any order, so a cursor on
//! "highest id seen" silently skips a message whose transaction commits late. A message is
//! claimable when it is `pending`, due (`next_attempt_at <= now`), not leased (or its lease
//! expired), and it is the lowest `seq` among the not-yet-delivered messages of its
//! `ordering_key` (per-key FIFO: a later message of a key waits while an earlier one is pending
//! or dead).
//!
//! Per-key order is `seq` order. On PostgreSQL [`enqueue`] takes a transaction-scoped advisory
//! lock on the ordering key, so two transactions enqueueing for the same key commit in `seq`
//! order (a transaction enqueueing for several keys should do so in a consistent order, or it
//! may be aborted as a deadlock — `Error::is_serialization_failure` — and must be retried).

use std::time::Duration;

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::error::{Error, Result};
use crate::store::{Backend, Store, Tx, db_now_micros, lock_class, pg_xact_lock};

/// Longest `last_error` stored, in bytes.
const MAX_ERROR_LEN: usize = 1000;

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Unique message id (a UUID); receivers deduplicate on it (see [`crate::inbox`]).
    pub id: String,
    /// Where it goes (e.g. a service name).
    pub destination: String,
    /// Messages with the same key are delivered one at a time, in order (e.g. a case id).
    pub ordering_key: String,
    /// Message type, for the receiver to dispatch on.
    pub kind: String,
    /// Encoded message body.
    pub payload: Vec<u8>,
}

impl NewMessage {
    /// A message with a fresh time-ordered UUID (v7) as its id.
    pub fn new(
        destination: impl Into<String>,
        ordering_key: impl Into<String>,
        kind: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        NewMessage {
            id: uuid::Uuid::now_v7().to_string(),
            destination: destination.into(),
            ordering_key: ordering_key.into(),
            kind: kind.into(),
            payload: payload.into(),
        }
    }
}

/// Delivery state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for (re)delivery.
    Pending,
    /// Delivered; done.
    Delivered,
    /// Given up on; blocks later messages of its ordering key until retried.
    Dead,
}

impl Status {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<Status> {
        match s {
            "pending" => Ok(Status::Pending),
            "delivered" => Ok(Status::Delivered),
            "dead" => Ok(Status::Dead),
            _ => Err(Error::Database(sqlx::Error::Decode(
                "unknown outbox status".into(),
            ))),
        }
    }
}

/// A stored outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Insertion order (per-key FIFO order).
    pub seq: i64,
    /// Unique message id.
    pub id: String,
    /// Destination.
    pub destination: String,
    /// Ordering key.
    pub ordering_key: String,
    /// Message type.
    pub kind: String,
    /// Encoded body.
    pub payload: Vec<u8>,
    /// Enqueue time, unix µs (database clock).
    pub created_at: i64,
    /// Delivery state.
    pub status: Status,
    /// Delivery attempts so far (claims).
    pub attempts: i64,
    /// Not claimable before this time, unix µs.
    pub next_attempt_at: i64,
    /// Leased to a worker until this time, unix µs.
    pub lease_until: Option<i64>,
    /// Worker holding (or last holding) the lease.
    pub lease_owner: Option<String>,
    /// Last delivery error.
    pub last_error: Option<String>,
    /// Delivery time, unix µs.
    pub delivered_at: Option<i64>,
}

const COLUMNS: &str = "seq, id, destination, ordering_key, kind, payload, created_at, status, \
                       attempts, next_attempt_at, lease_until, lease_owner, last_error, delivered_at";

/// Seal context of `outbox.payload` (envelopes carry parties' personal information).
const PAYLOAD: &str = "outbox.payload";

fn from_row(row: &AnyRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        destination: row.try_get("destination")?,
        ordering_key: row.try_get("ordering_key")?,
        kind: row.try_get("kind")?,
        payload: crate::seal::open(PAYLOAD, &row.try_get::<Vec<u8>, _>("payload")?)?,
        created_at: row.try_get("created_at")?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        lease_until: row.try_get("lease_until")?,
        lease_owner: row.try_get("lease_owner")?,
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_ERROR_LEN {
        return s;
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Add `msg` to the outbox in the caller's transaction; returns its `seq`.
pub async fn enqueue(tx: &mut Tx, msg: &NewMessage) -> Result<i64> {
    pg_xact_lock(tx, lock_class::OUTBOX_KEY, &[&msg.ordering_key]).await?;
    let now = Backend::of(tx).now_expr();
    let sql = format!(
        "INSERT INTO outbox (id, destination, ordering_key, kind, payload, created_at, status, \
         attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, {now}, 'pending', 0, {now}) \
         RETURNING seq"
    );
    let seq: i64 = sqlx::query_scalar(&sql)
        .bind(&msg.id)
        .bind(&msg.destination)
        .bind(&msg.ordering_key)
        .bind(&msg.kind)
        .bind(crate::seal::seal(PAYLOAD, &msg.payload)?)
        .fetch_one(&mut **tx)
        .await?;
    Ok(seq)
}

/// [`enqueue`] of several messages in the caller's transaction, with one lock statement and
/// one insert: the ordering keys are locked in the order of first appearance (as one
/// [`enqueue`] per message would), and the messages get increasing `seq` in the order given.
pub async fn enqueue_many(tx: &mut Tx, msgs: &[NewMessage]) -> Result<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = msgs.iter().map(|m| m.ordering_key.as_str()).collect();
    crate::store::pg_xact_lock_each(tx, lock_class::OUTBOX_KEY, &keys).await?;
    enqueue_many_serialised(tx, msgs).await
}

/// [`enqueue_many`] without the ordering keys' locks: one insert. Only for a caller whose
/// transaction already holds, until it ends, a lock that every enqueuer of these ordering keys
/// takes before it inserts (e.g. a row lock on a per-case counter it updates first): messages
/// of one key then commit in `seq` order, which is what the keys' locks are for.
pub async fn enqueue_many_serialised(tx: &mut Tx, msgs: &[NewMessage]) -> Result<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let now = Backend::of(tx).now_expr();
    let rows: Vec<String> = (0..msgs.len())
        .map(|i| {
            let b = i * 5;
            format!(
                "(${}, ${}, ${}, ${}, ${}, {now}, 'pending', 0, {now})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO outbox (id, destination, ordering_key, kind, payload, created_at, status, \
         attempts, next_attempt_at) VALUES {}",
        rows.join(", ")
    );
    let sealed = msgs
        .iter()
        .map(|m| crate::seal::seal(PAYLOAD, &m.payload))
        .collect::<Result<Vec<_>>>()?;
    let mut q = sqlx::query(&sql);
    for (m, payload) in msgs.iter().zip(sealed) {
        q = q
            .bind(&m.id)
            .bind(&m.destination)
            .bind(&m.ordering_key)
            .bind(&m.kind)
            .bind(payload);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Claim up to `limit` deliverable messages for `worker_id`, leasing them for `lease`
/// (attempts + 1). A claimed message is not handed out again until its lease expires or it is
/// marked failed. Returns them in `seq` order, at most one per ordering key.
pub async fn claim(
    store: &Store,
    worker_id: &str,
    limit: u32,
    lease: Duration,
) -> Result<Vec<OutboxMessage>> {
    claim_filtered(store, worker_id, limit, lease, &[]).await
}

/// Most destinations one [`claim_for`] statement names (bind-parameter limits); longer lists
/// are claimed in chunks.
const DESTINATION_CHUNK: usize = 500;

/// [`claim`], restricted to messages whose `destination` is one of `destinations` (e.g. the
/// receivers a push worker can reach, or the one agency a pull stream serves). Per-key FIFO is
/// unchanged: an earlier undelivered message of the same ordering key blocks a later one even if
/// the earlier one goes to a destination not listed. An empty list claims nothing.
pub async fn claim_for(
    store: &Store,
    worker_id: &str,
    destinations: &[String],
    limit: u32,
    lease: Duration,
) -> Result<Vec<OutboxMessage>> {
    let mut claimed = Vec::new();
    for chunk in destinations.chunks(DESTINATION_CHUNK) {
        let left = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
        if left == 0 {
            break;
        }
        claimed.extend(claim_filtered(store, worker_id, left, lease, chunk).await?);
    }
    Ok(claimed)
}

/// The claim query; `destinations` empty means no destination filter.
async fn claim_filtered(
    store: &Store,
    worker_id: &str,
    limit: u32,
    lease: Duration,
    destinations: &[String],
) -> Result<Vec<OutboxMessage>> {
    let mut tx = store.write().await?;
    let now = db_now_micros(&mut tx).await?;
    let lease_until = now.saturating_add(micros(lease));
    let filter = if destinations.is_empty() {
        String::new()
    } else {
        let params: Vec<String> = (0..destinations.len())
            .map(|i| format!("${}", i + 3))
            .collect();
        format!("AND o.destination IN ({}) ", params.join(", "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox o \
         WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
           AND (o.lease_until IS NULL OR o.lease_until < $1) \
           {filter}\
           AND NOT EXISTS (SELECT 1 FROM outbox p \
                           WHERE p.ordering_key = o.ordering_key AND p.seq < o.seq \
                             AND p.status <> 'delivered') \
         ORDER BY o.seq LIMIT $2"
    );
    let mut query = sqlx::query(&sql).bind(now).bind(i64::from(limit));
    for d in destinations {
        query = query.bind(d);
    }
    let rows = query.fetch_all(&mut *tx).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let mut selected = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    // One guarded update for all of them: on PostgreSQL a concurrent claimer may have leased a
    // row since our snapshot; the re-checked WHERE then skips it (RETURNING says which won).
    let params: Vec<String> = (0..selected.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "UPDATE outbox SET lease_until = $1, lease_owner = $2, attempts = attempts + 1 \
         WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < $3) \
           AND seq IN ({}) RETURNING seq",
        params.join(", ")
    );
    let mut update = sqlx::query_scalar::<_, i64>(&sql)
        .bind(lease_until)
        .bind(worker_id)
        .bind(now);
    for m in &selected {
        update = update.bind(m.seq);
    }
    let won: std::collections::HashSet<i64> =
        update.fetch_all(&mut *tx).await?.into_iter().collect();
    tx.commit().await?;
    selected.retain(|m| won.contains(&m.seq));
    for msg in &mut selected {
        msg.lease_until = Some(lease_until);
        msg.lease_owner = Some(worker_id.to_string());
        msg.attempts += 1;
    }
    Ok(selected)
}

/// Release every unexpired lease held by `worker_id` on pending messages (e.g. a pull stream
/// whose client went away, or a worker shutting down), so they are claimable at once. Returns
/// how many were released. Attempts are not given back.
pub async fn release_leases(store: &Store, worker_id: &str) -> Result<u64> {
    let mut tx = store.write().await?;
    let done = sqlx::query(
        "UPDATE outbox SET lease_until = NULL \
         WHERE lease_owner = $1 AND status = 'pending' AND lease_until IS NOT NULL",
    )
    .bind(worker_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Make every pending message to `destination` that waits out a backoff due now (the
/// receiver is reachable again: a push succeeded, it opened a pull stream or acknowledged).
/// Leases, attempts and dead messages are left as they are (a dead message is an incident for
/// a human; per-key order still holds). Returns how many became due.
pub async fn expedite(store: &Store, destination: &str) -> Result<u64> {
    let mut tx = store.write().await?;
    let n = expedite_in(&mut tx, destination).await?;
    tx.commit().await?;
    Ok(n)
}

/// [`expedite`] in the caller's transaction.
pub async fn expedite_in(tx: &mut Tx, destination: &str) -> Result<u64> {
    let now = db_now_micros(tx).await?;
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $2 \
         WHERE status = 'pending' AND destination = $1 AND next_attempt_at > $2",
    )
    .bind(destination)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Number of pending messages `worker_id` holds an unexpired lease on (e.g. a pull stream's
/// sent but unacknowledged messages).
pub async fn count_leased(store: &Store, worker_id: &str) -> Result<i64> {
    let now = store.now_micros_pool().await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox \
         WHERE lease_owner = $1 AND status = 'pending' AND lease_until >= $2",
    )
    .bind(worker_id)
    .bind(now)
    .fetch_one(store.pool())
    .await?;
    Ok(n)
}

/// Why an update matched no row: the message is missing, or in another state.
async fn no_match(tx: &mut Tx, id: &str) -> Error {
    match sqlx::query("SELECT status FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
    {
        Ok(None) => Error::NotFound("outbox message"),
        Ok(Some(_)) => Error::ConcurrentModification,
        Err(e) => e.into(),
    }
}

/// Mark message `id` delivered (from pending, or from dead if it got through after all).
/// Marking a delivered message again is a no-op. `Error::NotFound` if there is no such message.
pub async fn mark_delivered(store: &Store, id: &str) -> Result<()> {
    let mut tx = store.write().await?;
    mark_delivered_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// [`mark_delivered`] in the caller's transaction (so a receipt and its consequences commit
/// together). `true` when this call delivered it, `false` when it already was delivered.
pub async fn mark_delivered_in(tx: &mut Tx, id: &str) -> Result<bool> {
    let sql = format!(
        "UPDATE outbox SET status = 'delivered', delivered_at = {}, lease_until = NULL \
         WHERE id = $1 AND status <> 'delivered'",
        Backend::of(tx).now_expr()
    );
    let done = sqlx::query(&sql).bind(id).execute(&mut **tx).await?;
    if done.rows_affected() == 0 {
        let exists = sqlx::query("SELECT 1 FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound("outbox message"));
        }
        return Ok(false);
    }
    Ok(true)
}

/// [`mark_delivered_in`], also telling whether a failed attempt was ever recorded for the
/// message (`last_error` set, by [`mark_failed`] or [`mark_dead`]): `None` when it already
/// was delivered, `Some(failed_before)` when this call delivered it. Lets a caller skip
/// bookkeeping that only failed messages have, without another statement.
/// `Error::NotFound` if there is no such message.
pub async fn mark_delivered_noting_failures_in(tx: &mut Tx, id: &str) -> Result<Option<bool>> {
    let sql = format!(
        "UPDATE outbox SET status = 'delivered', delivered_at = {}, lease_until = NULL \
         WHERE id = $1 AND status <> 'delivered' RETURNING last_error",
        Backend::of(tx).now_expr()
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    if let Some(row) = row {
        let last_error: Option<String> = row.try_get(0)?;
        return Ok(Some(last_error.is_some()));
    }
    let exists = sqlx::query("SELECT 1 FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_none() {
        return Err(Error::NotFound("outbox message"));
    }
    Ok(None)
}

/// [`mark_delivered_noting_failures_in`] for several messages in one statement (receipts of
/// pushes that finished together): for each id in `ids`, `Some(failed_before)` when this call
/// delivered it, `None` when it already was delivered. `Error::NotFound` if one of them does
/// not exist (nothing is marked then: the caller's transaction should be rolled back).
pub async fn mark_delivered_many_noting_failures_in(
    tx: &mut Tx,
    ids: &[&str],
) -> Result<Vec<Option<bool>>> {
    let mut out: Vec<Option<bool>> = vec![None; ids.len()];
    let mut missing: Vec<usize> = Vec::new();
    for (start, chunk) in (0..ids.len()).step_by(500).zip(ids.chunks(500)) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE outbox SET status = 'delivered', delivered_at = {}, lease_until = NULL \
             WHERE id IN ({}) AND status <> 'delivered' RETURNING id, last_error",
            Backend::of(tx).now_expr(),
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut **tx).await?;
        let mut done: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            let last_error: Option<String> = row.try_get(1)?;
            done.insert(id, last_error.is_some());
        }
        for (i, id) in chunk.iter().enumerate() {
            // `remove`: an id given twice is delivered by its first place only.
            match done.remove(*id) {
                Some(failed) => out[start + i] = Some(failed),
                None => missing.push(start + i),
            }
        }
    }
    // Not updated: delivered already, or no such message (rare: look them up together).
    if !missing.is_empty() {
        for chunk in missing.chunks(500) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT COUNT(*) FROM outbox WHERE id IN ({})",
                params.join(", ")
            );
            let mut q = sqlx::query_scalar::<_, i64>(&sql);
            let mut distinct: Vec<&str> = chunk.iter().map(|&i| ids[i]).collect();
            distinct.sort_unstable();
            distinct.dedup();
            for id in &distinct {
                q = q.bind(*id);
            }
            let found = q.fetch_one(&mut **tx).await?;
            if usize::try_from(found).unwrap_or(0) != distinct.len() {
                return Err(Error::NotFound("outbox message"));
            }
        }
    }
    Ok(out)
}

/// Record a failed delivery of pending message `id` and schedule the next attempt at
/// `next_attempt_at_micros` (database clock; see [`backoff`]). Releases the lease.
/// `Error::ConcurrentModification` if the message is no longer pending.
pub async fn mark_failed(
    store: &Store,
    id: &str,
    error: &str,
    next_attempt_at_micros: i64,
) -> Result<()> {
    let mut tx = store.write().await?;
    mark_failed_in(&mut tx, id, error, next_attempt_at_micros).await?;
    tx.commit().await?;
    Ok(())
}

/// [`mark_failed`] in the caller's transaction.
pub async fn mark_failed_in(
    tx: &mut Tx,
    id: &str,
    error: &str,
    next_attempt_at_micros: i64,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE outbox SET last_error = $2, next_attempt_at = $3, lease_until = NULL \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(truncate(error))
    .bind(next_attempt_at_micros)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(no_match(tx, id).await);
    }
    Ok(())
}

/// Give up on pending message `id`: it becomes `dead` and blocks later messages of its ordering
/// key until [`retry_dead`]. This is an incident and is logged at error level (ids only).
pub async fn mark_dead(store: &Store, id: &str, error: &str) -> Result<()> {
    let mut tx = store.write().await?;
    mark_dead_in(&mut tx, id, error).await?;
    tx.commit().await?;
    Ok(())
}

/// [`mark_dead`] in the caller's transaction (logged when the update succeeds; the caller's
/// commit makes it effective).
pub async fn mark_dead_in(tx: &mut Tx, id: &str, error: &str) -> Result<()> {
    let row = sqlx::query(
        "UPDATE outbox SET status = 'dead', last_error = $2, lease_until = NULL \
         WHERE id = $1 AND status = 'pending' RETURNING destination, kind, attempts",
    )
    .bind(id)
    .bind(truncate(error))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Err(no_match(tx, id).await);
    };
    let destination: String = row.try_get(0)?;
    let kind: String = row.try_get(1)?;
    let attempts: i64 = row.try_get(2)?;
    tracing::error!(
        outbox_id = id,
        destination,
        kind,
        attempts,
        "outbox message is dead; later messages of its ordering key are blocked"
    );
    Ok(())
}

/// Dead messages, oldest first.
pub async fn list_dead(store: &Store, limit: u32) -> Result<Vec<OutboxMessage>> {
    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE status = 'dead' ORDER BY seq LIMIT $1");
    let rows = sqlx::query(&sql)
        .bind(i64::from(limit))
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

/// Put dead message `id` back to pending, due now, with attempts reset (`last_error` is kept).
/// `Error::NotFound` if there is no dead message with that id.
pub async fn retry_dead(store: &Store, id: &str) -> Result<()> {
    let mut tx = store.write().await?;
    retry_dead_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// [`retry_dead`] in the caller's transaction.
pub async fn retry_dead_in(tx: &mut Tx, id: &str) -> Result<()> {
    let sql = format!(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = {}, \
         lease_until = NULL WHERE id = $1 AND status = 'dead'",
        Backend::of(tx).now_expr()
    );
    let done = sqlx::query(&sql).bind(id).execute(&mut **tx).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("dead outbox message"));
    }
    Ok(())
}

/// Message `id`, in any state.
pub async fn get(store: &Store, id: &str) -> Result<Option<OutboxMessage>> {
    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Message `id`, in any state, read in the caller's transaction.
pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<OutboxMessage>> {
    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(from_row).transpose()
}

/// Exponential backoff for delivery attempt `attempt` (1-based): `base · 2^(attempt-1)`, capped
/// at `max`, then jittered uniformly by ±`jitter_fraction` (clamped to 0..=1) and capped at
/// `max` again. `jitter_fraction = 0` is deterministic; `1` spreads over `[0, 2·d]` ∩ `[0, max]`.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter_fraction: f64) -> Duration {
    backoff_with(attempt, base, max, jitter_fraction, random_unit())
}

/// [`backoff`] with the random draw supplied: `unit` in `[0, 1]` (0 = shortest, 1 = longest).
pub fn backoff_with(
    attempt: u32,
    base: Duration,
    max: Duration,
    jitter_fraction: f64,
    unit: f64,
) -> Duration {
    let exp = i32::try_from(attempt.saturating_sub(1).min(62)).unwrap_or(62);
    let cap = max.as_secs_f64();
    let d = (base.as_secs_f64() * 2f64.powi(exp)).min(cap);
    let f = if jitter_fraction.is_nan() {
        0.0
    } else {
        jitter_fraction.clamp(0.0, 1.0)
    };
    let u = if unit.is_nan() {
        0.5
    } else {
        unit.clamp(0.0, 1.0)
    };
    let v = d * (1.0 - f + 2.0 * f * u);
    if v.is_finite() {
        Duration::from_secs_f64(v.clamp(0.0, cap))
    } else {
        max
    }
}

/// A uniform draw in `[0, 1)` from the system RNG (0.5 if it is unavailable).
fn random_unit() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_without_jitter_doubles_and_caps() {
        let max = Duration::from_secs(60);
        let d = |a| backoff_with(a, S, max, 0.0, 0.9);
        assert_eq!(d(0), S);
        assert_eq!(d(1), S);
        assert_eq!(d(2), 2 * S);
        assert_eq!(d(3), 4 * S);
        assert_eq!(d(6), 32 * S);
        assert_eq!(d(7), max);
        assert_eq!(d(u32::MAX), max);
    }

    #[test]
    fn backoff_jitter_bounds() {
        let max = Duration::from_secs(100);
        for attempt in 1..12 {
            let nominal = (S.as_secs_f64() * 2f64.powi(attempt as i32 - 1)).min(100.0);
            for f in [0.1, 0.25, 0.5, 1.0] {
                let lo = backoff_with(attempt, S, max, f, 0.0).as_secs_f64();
                let hi = backoff_with(attempt, S, max, f, 1.0).as_secs_f64();
                assert!(
                    (lo - nominal * (1.0 - f)).abs() < 1e-6,
                    "lo {lo} {nominal} {f}"
                );
                assert!((hi - (nominal * (1.0 + f)).min(100.0)).abs() < 1e-6);
                for _ in 0..50 {
                    let v = backoff(attempt, S, max, f).as_secs_f64();
                    assert!(v >= lo - 1e-9 && v <= hi + 1e-9, "{v} not in [{lo}, {hi}]");
                    assert!(v <= 100.0);
                }
            }
        }
    }

    #[test]
    fn backoff_degenerate_inputs() {
        assert_eq!(backoff_with(3, S, Duration::ZERO, 0.5, 1.0), Duration::ZERO);
        assert_eq!(
            backoff_with(1, S, Duration::from_secs(9), f64::NAN, f64::NAN),
            S
        );
        let v = backoff(1, S, Duration::from_secs(9), 7.0);
        assert!(v <= 2 * S);
    }

    #[test]
    fn random_unit_in_range() {
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(MAX_ERROR_LEN);
        let t = truncate(&s);
        assert!(t.len() <= MAX_ERROR_LEN);
        assert!(t.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short"), "short");
    }
}
