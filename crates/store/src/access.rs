//! The access log: every full read of personal information and every refused call, one row
//! each, written in the transaction of the read (个人信息保护法 Art 51 (5): 安全审计; 等保 2.0
//! level 3 audit of access to personal information).
//!
//! A row names who (agency, actor, the person behind the actor), what (service, method,
//! resource, case) and which personal-information fields — never the values.

use sqlx::Row as _;

use crate::error::Result;
use crate::store::{Backend, Store, Tx};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Personal information was returned unmasked.
    FullRead,
    /// The call was refused (unauthenticated or permission denied).
    Denied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::FullRead => "full_read",
            Outcome::Denied => "denied",
        }
    }
}

/// One access-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Service that served the call (`police-referral`, …).
    pub service: String,
    /// Agency of the caller (empty when unauthenticated).
    pub agency: String,
    /// Actor id of the caller (empty when unauthenticated).
    pub actor: String,
    /// The person behind the actor (e.g. a 警号), when the token names one.
    pub person: String,
    /// gRPC method, `/package.Service/Method`.
    pub method: String,
    /// Resource name read or asked for (empty when unknown).
    pub resource: String,
    /// Case the resource belongs to.
    pub case_id: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Personal-information fields returned in full (`party_id_number`, …), comma-separated.
    pub fields: String,
    /// Stable reason of a refusal; empty for reads.
    pub reason: String,
    /// Database time of the row, unix µs (set by [`record`]).
    pub recorded_at: i64,
}

/// Appends `a` in the caller's transaction.
pub async fn record(tx: &mut Tx, a: &Access) -> Result<()> {
    let sql = format!(
        "INSERT INTO access_log (id, recorded_at, service, agency, actor, person, method, \
         resource, case_id, outcome, fields, reason) \
         VALUES ($1, {}, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        Backend::of(tx).now_expr()
    );
    sqlx::query(&sql)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&a.service)
        .bind(&a.agency)
        .bind(&a.actor)
        .bind(&a.person)
        .bind(&a.method)
        .bind(&a.resource)
        .bind(a.case_id.as_deref())
        .bind(a.outcome.as_str())
        .bind(&a.fields)
        .bind(&a.reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Appends `a` in its own transaction.
pub async fn record_now(store: &Store, a: &Access) -> Result<()> {
    let mut tx = store.write().await?;
    record(&mut tx, a).await?;
    tx.commit().await?;
    Ok(())
}

/// The most recent `limit` rows, newest first, optionally of one case.
pub async fn recent(store: &Store, case_id: Option<&str>, limit: i64) -> Result<Vec<Access>> {
    let rows =
        match case_id {
            Some(c) => sqlx::query(
                "SELECT * FROM access_log WHERE case_id = $1 ORDER BY recorded_at DESC, id DESC \
                 LIMIT $2",
            )
            .bind(c)
            .bind(limit)
            .fetch_all(store.pool())
            .await?,
            None => {
                sqlx::query("SELECT * FROM access_log ORDER BY recorded_at DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(store.pool())
                    .await?
            }
        };
    rows.iter()
        .map(|r| {
            Ok(Access {
                service: r.try_get("service")?,
                agency: r.try_get("agency")?,
                actor: r.try_get("actor")?,
                person: r.try_get("person")?,
                method: r.try_get("method")?,
                resource: r.try_get("resource")?,
                case_id: r.try_get("case_id")?,
                outcome: if r.try_get::<String, _>("outcome")? == "denied" {
                    Outcome::Denied
                } else {
                    Outcome::FullRead
                },
                fields: r.try_get("fields")?,
                reason: r.try_get("reason")?,
                recorded_at: r.try_get("recorded_at")?,
            })
        })
        .collect()
}
