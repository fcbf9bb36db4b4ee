//! The referrals, their history, documents and investigation tasks as stored: every body
//! sealed (PIPL Art 51), rows read, locked and written for the handlers and the inbox.

use crate::domain::*;
use crate::error::{Error, Result};
use fengqiao_kit::Identity;
use fengqiao_kit::time::{from_timestamp as from_ts, to_timestamp as to_ts};
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::Transfer;
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Tx, seal};

/// Seals a body for the column `ctx` (`"<table>.<column>"`): every body of this service can
/// hold personal information (parties, free text), so none is stored in the clear (PIPL
/// Art 51; the format and keys are the store's, [`fengqiao_store::seal`]).
pub(crate) fn sealed(ctx: &str, m: &impl prost::Message) -> Result<Vec<u8>> {
    Ok(seal::seal(ctx, &m.encode_to_vec())?)
}

/// Opens and decodes what [`sealed`] wrote for `ctx`.
pub(crate) fn opened<M: prost::Message + Default>(ctx: &str, body: &[u8], what: &str) -> Result<M> {
    let plain = seal::open(ctx, body)?;
    M::decode(plain.as_slice()).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// Opens and decodes the `body` column of `row`, sealed for `ctx` (see [`opened`]).
pub(crate) fn body_of<M: prost::Message + Default>(
    row: &AnyRow,
    ctx: &str,
    what: &str,
) -> Result<M> {
    let body: Vec<u8> = row.try_get("body")?;
    opened(ctx, &body, what)
}

pub(crate) const REFERRALS_BODY: &str = "referrals.body";

pub(crate) const EVENTS_BODY: &str = "referral_events.body";

pub(crate) const DOCUMENTS_BODY: &str = "referral_documents.body";

pub(crate) const TASKS_BODY: &str = "investigation_tasks.body";

/// A referral as stored, with what authorisation needs.
pub(crate) struct Stored {
    pub(crate) referral: Referral,
    pub(crate) creator: String,
    pub(crate) version: i64,
    pub(crate) content_hash: String,
    /// The router event sequence the referral last reflected.
    pub(crate) event_seq: u64,
}

impl Stored {
    pub(crate) fn visible_to(&self, who: &Identity) -> bool {
        who.agency == self.creator || who.agency == self.referral.police_station
    }
}

pub(crate) const COLUMNS: &str = "id, creator_agency, version, content_hash, event_seq, body";

pub(crate) fn stored_of(row: &AnyRow) -> Result<Stored> {
    Ok(Stored {
        referral: body_of(row, REFERRALS_BODY, "referral")?,
        creator: row.try_get("creator_agency")?,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        event_seq: fengqiao_kit::transfers::event_seq_of(row)?,
    })
}

pub(crate) async fn load(tx: &mut Tx, id: &str) -> Result<Option<Stored>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM referrals WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(stored_of).transpose()
}

/// Locks the referral rows with `column = value` for the rest of a write transaction on
/// PostgreSQL (SQLite write transactions are serialised already), so that a caller's change
/// and a router message apply one after the other instead of one overwriting the other.
pub(crate) async fn lock_referral(tx: &mut Tx, column: &str, value: &str) -> Result<()> {
    if fengqiao_store::Backend::of(tx) == fengqiao_store::Backend::Postgres {
        sqlx::query(&format!(
            "SELECT id FROM referrals WHERE {column} = $1 FOR UPDATE"
        ))
        .bind(value)
        .fetch_all(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Loads a referral for a write, locked (see [`lock_referral`]).
pub(crate) async fn load_visible_locked(tx: &mut Tx, who: &Identity, name: &str) -> Result<Stored> {
    let id = fengqiao_kit::validate::parse_name("name", "referrals", name)?;
    lock_referral(tx, "id", id).await?;
    load_visible(tx, who, name).await
}

/// Records the router's answer's last event in the referral's history, in the transaction of
/// the call that made it, once per event (the router's copy of the same event finds it there
/// and is then answered from a read, see `Inbox::is_stale`).
pub(crate) async fn record_answer_event(
    tx: &mut Tx,
    referral_id: &str,
    t: Option<&Transfer>,
    now: i64,
) -> Result<()> {
    let Some(e) = t.and_then(|t| t.last_event.as_ref()) else {
        return Ok(());
    };
    if e.event_id.is_empty() {
        return Ok(());
    }
    insert_event(
        tx,
        referral_id,
        e,
        e.occurred_at.as_ref().map_or(now, from_ts),
    )
    .await?;
    Ok(())
}

/// Inserts one router event into a referral's history unless it is there already; `true`
/// when it was not.
pub(crate) async fn insert_event(
    tx: &mut Tx,
    referral_id: &str,
    event: &fengqiao_proto::router::TransferEvent,
    occurred: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO referral_events (referral_id, event_id, sequence, occurred_at, body) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (referral_id, event_id) DO NOTHING",
    )
    .bind(referral_id)
    .bind(&event.event_id)
    .bind(fengqiao_kit::transfers::seq_column(event.sequence))
    .bind(occurred)
    .bind(sealed(EVENTS_BODY, event)?)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn load_visible(tx: &mut Tx, who: &Identity, name: &str) -> Result<Stored> {
    let id = fengqiao_kit::validate::parse_name("name", "referrals", name)?;
    match load(tx, id).await? {
        Some(s) if s.visible_to(who) => Ok(s),
        _ => Err(Error::NotFound(name.to_string())),
    }
}

/// Writes a changed referral: bumps the version and etag, sets `update_time`.
pub(crate) async fn save(tx: &mut Tx, s: &mut Stored, now: i64) -> Result<()> {
    s.version += 1;
    s.referral.etag = fengqiao_kit::etag::etag(s.version);
    s.referral.update_time = Some(to_ts(now));
    let r = &s.referral;
    let id = r.name.trim_start_matches("referrals/");
    let (due, overdue) = feedback_columns(r);
    sqlx::query(
        "UPDATE referrals SET state = $1, screening_result = $2, transfer = $3, \
         feedback_due = $4, feedback_overdue = $5, body = $6, update_time = $7, version = $8, \
         event_seq = $10 WHERE id = $9",
    )
    .bind(i64::from(r.state))
    .bind(i64::from(r.screening.as_ref().map_or(0, |sc| sc.result)))
    .bind((!r.transfer.is_empty()).then(|| r.transfer.clone()))
    .bind(due)
    .bind(overdue)
    .bind(sealed(REFERRALS_BODY, r)?)
    .bind(now)
    .bind(s.version)
    .bind(id)
    .bind(fengqiao_kit::transfers::seq_column(s.event_seq))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn add_documents(
    tx: &mut Tx,
    referral_id: &str,
    docs: &[EvidenceRef],
    now: i64,
) -> Result<()> {
    let rows = docs
        .iter()
        .map(|d| Ok((now, sealed(DOCUMENTS_BODY, d)?)))
        .collect::<Result<Vec<_>>>()?;
    let referral = ("referral_id", referral_id);
    fengqiao_kit::sequenced::append(tx, "referral_documents", referral, "added_at", rows).await
}

/// An investigation task as stored.
pub(crate) struct StoredTask {
    pub(crate) task: InvestigationTask,
    pub(crate) referral_id: String,
    pub(crate) version: i64,
}

pub(crate) fn task_of(row: &AnyRow) -> Result<StoredTask> {
    Ok(StoredTask {
        task: body_of(row, TASKS_BODY, "investigation task")?,
        referral_id: row.try_get("referral_id")?,
        version: row.try_get("version")?,
    })
}

pub(crate) async fn save_task(tx: &mut Tx, t: &mut StoredTask) -> Result<()> {
    t.version += 1;
    t.task.etag = fengqiao_kit::etag::etag(t.version);
    let id = t
        .task
        .name
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    sqlx::query("UPDATE investigation_tasks SET state = $1, body = $2, version = $3 WHERE id = $4")
        .bind(i64::from(t.task.state))
        .bind(sealed(TASKS_BODY, &t.task)?)
        .bind(t.version)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
