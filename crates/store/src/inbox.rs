//! Inbox: at-most-once application of incoming messages.
//!
//! In the transaction that applies a message, call [`record_once`] first; when it returns
//! `false` the message was already applied and must be skipped (then commit, and acknowledge).

use crate::error::Result;
use crate::store::{Backend, Tx};

/// Record that `consumer` received `message_id`. `true` the first time, `false` for a
/// duplicate. On PostgreSQL a concurrent transaction recording the same message waits for this
/// one and then gets `false`.
pub async fn record_once(tx: &mut Tx, consumer: &str, message_id: &str) -> Result<bool> {
    let sql = format!(
        "INSERT INTO inbox (consumer, message_id, received_at) VALUES ($1, $2, {}) \
         ON CONFLICT (consumer, message_id) DO NOTHING",
        Backend::of(tx).now_expr()
    );
    let done = sqlx::query(&sql)
        .bind(consumer)
        .bind(message_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// [`record_once`] that also answers the database clock (microseconds) it recorded the
/// message at: `Some(now)` the first time, `None` for a duplicate. One statement where a
/// handler needs both.
pub async fn record_once_at(tx: &mut Tx, consumer: &str, message_id: &str) -> Result<Option<i64>> {
    let sql = format!(
        "INSERT INTO inbox (consumer, message_id, received_at) VALUES ($1, $2, {}) \
         ON CONFLICT (consumer, message_id) DO NOTHING RETURNING received_at",
        Backend::of(tx).now_expr()
    );
    let row: Option<(i64,)> = sqlx::query_as(&sql)
        .bind(consumer)
        .bind(message_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|(t,)| t))
}
