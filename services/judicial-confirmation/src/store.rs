//! Persistence of the court's applications: the protobuf, its clocks (JSON) and the columns
//! lists and authorisation need. Every read is scoped to the caller's court: another agency's
//! application is the same as a missing one (NOT_FOUND).
//!
//! The body holds the parties (names, identity numbers, phones, addresses) and is sealed
//! ([`fengqiao_store::seal`], context [`BODY`]; 个人信息保护法 Art 51). The clocks (JSON) hold
//! the rule, reason codes and times only — no personal information — and stay plain, as do
//! the ids, states and the 调确 number beside them.

use fengqiao_kit::records::{self, Page, Schema};
use fengqiao_kit::{Error, Reason};
use fengqiao_proto::judicialconfirmation::{ApplicationState, ConfirmationApplication};
use fengqiao_store::bind::Bind;
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx};

use crate::application::Record;

/// Name under which this service's migrations are recorded.
pub const SERVICE: &str = "judicial_confirmation";

/// This service's own migrations, applied after the shared ones (one portable script: SQLite DDL, PostgreSQL derived).
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [(
        1,
        "judicial_confirmation",
        "migrations/0001_judicial_confirmation.sql"
    ),]
);

/// Applies the shared migrations, then this service's.
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    SCHEMA.migrate(store).await
}

/// An application as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The record.
    pub record: Record,
    /// Owning court (`agencies/{agency}`).
    pub court: String,
    /// Row version (the etag).
    pub version: i64,
}

const COLUMNS: &str = "court, version, body, clocks";

/// Seal context of `jc_applications.body`.
pub const BODY: &str = "jc_applications.body";

fn sealed_body(a: &ConfirmationApplication) -> Result<Vec<u8>, Error> {
    records::seal_message(BODY, a)
}

fn stored_of(row: &AnyRow) -> Result<Stored, Error> {
    let application: ConfirmationApplication =
        records::open_message(BODY, &row.try_get::<Vec<u8>, _>("body")?)?;
    let clocks = records::clocks_of("application", &row.try_get::<String, _>("clocks")?)?;
    Ok(Stored {
        record: Record {
            application,
            clocks,
        },
        court: row.try_get("court")?,
        version: row.try_get("version")?,
    })
}

fn id_of(name: &str) -> &str {
    name.trim_start_matches("applications/")
}

fn clocks_json(r: &Record) -> Result<String, Error> {
    records::clocks_json(&r.clocks)
}

fn number(r: &Record) -> Option<&str> {
    Some(r.application.confirmation_number.as_str()).filter(|n| !n.is_empty())
}

/// What makes an application unique (the `transfer` column): its router transfer, or for a
/// pre-filing application the court diversion case (`cases/{case}`) it came from; one
/// application per source, so a redelivered or retried handover writes nothing.
pub fn source_key(a: &ConfirmationApplication) -> &str {
    if a.transfer.is_empty() {
        &a.pre_filing_case
    } else {
        &a.transfer
    }
}

/// Inserts a received application of `court` at version 1. `false` when its transfer is
/// already recorded (a redelivered application: nothing written).
pub async fn insert(tx: &mut Tx, court: &str, r: &Record) -> Result<bool, Error> {
    let mut a = r.application.clone();
    a.etag = fengqiao_kit::etag::etag(1);
    let done = sqlx::query(
        "INSERT INTO jc_applications (id, court, case_id, transfer, state, confirmation_number, \
         overdue, body, clocks, create_time, update_time, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, 1) \
         ON CONFLICT (transfer) DO NOTHING",
    )
    .bind(id_of(&a.name))
    .bind(court)
    .bind(&a.case_id)
    .bind(source_key(&a))
    .bind(i64::from(a.state))
    .bind(number(r))
    .bind(i64::from(a.overdue))
    .bind(sealed_body(&a)?)
    .bind(clocks_json(r)?)
    .bind(
        a.create_time
            .as_ref()
            .map_or(0, fengqiao_kit::time::from_timestamp),
    )
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Loads `applications/{id}` of `court`; another court's is `None`, like a missing one.
pub async fn load(tx: &mut Tx, court: &str, name: &str) -> Result<Option<Stored>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM jc_applications WHERE id = $1 AND court = $2");
    let binds = [Bind::Text(id_of(name).into()), Bind::Text(court.into())];
    records::fetch_one(tx, &sql, &binds, stored_of).await
}

/// Loads the application carried by a router transfer (`transfers/{transfer}`), or handed
/// over from a court diversion case (`cases/{case}`): its [`source_key`].
pub async fn load_by_transfer(tx: &mut Tx, transfer: &str) -> Result<Option<Stored>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM jc_applications WHERE transfer = $1");
    records::fetch_one(tx, &sql, &[Bind::Text(transfer.into())], stored_of).await
}

/// Writes a changed record when the row is still at `s.version` (optimistic: a concurrent
/// writer makes this ETAG_MISMATCH); returns the stored form at the new version. A 调确 number
/// another application of the court holds is CONFIRMATION_NUMBER_REUSED.
pub async fn save(tx: &mut Tx, s: &Stored, r: &Record, now: i64) -> Result<Stored, Error> {
    let version = s.version + 1;
    let mut record = r.clone();
    record.application.etag = fengqiao_kit::etag::etag(version);
    record.application.update_time = Some(fengqiao_kit::time::to_timestamp(now));
    let a = &record.application;
    let done = sqlx::query(
        "UPDATE jc_applications SET state = $1, confirmation_number = $2, overdue = $3, \
         body = $4, clocks = $5, update_time = $6, version = $7 \
         WHERE id = $8 AND court = $9 AND version = $10",
    )
    .bind(i64::from(a.state))
    .bind(number(&record))
    .bind(i64::from(a.overdue))
    .bind(sealed_body(a)?)
    .bind(clocks_json(&record)?)
    .bind(now)
    .bind(version)
    .bind(id_of(&a.name))
    .bind(&s.court)
    .bind(s.version)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        records::unique_as(e, || {
            Error::Refused(
                Reason::ConfirmationNumberReused,
                "another application of this court holds this 调确 number".into(),
            )
        })
    })?;
    if done.rows_affected() != 1 {
        return Err(Error::EtagMismatch(a.name.clone()));
    }
    Ok(Stored {
        record,
        court: s.court.clone(),
        version,
    })
}

/// The court's applications, newest first (ties by name), optionally in `states` and only
/// overdue, after the cursor `(create_time, id)`; at most `limit`.
/// Applications whose decision clock runs and which are not marked overdue yet (RECEIVED or
/// UNDER_REVIEW, `overdue = 0`), by id after `after_id`, at most `limit`: what the deadline
/// sweep looks at, page by page. `(court, id)` pairs.
pub async fn sweep_candidates(
    tx: &mut Tx,
    after_id: &str,
    limit: u32,
) -> Result<Vec<(String, String)>, Error> {
    let sql = format!(
        "SELECT court, id FROM jc_applications WHERE state IN ({}, {}) AND overdue = 0 \
         AND id > $1 ORDER BY id LIMIT {limit}",
        ApplicationState::Received as i32,
        ApplicationState::UnderReview as i32,
    );
    let rows = sqlx::query(&sql)
        .bind(after_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            Ok((r.try_get("court")?, id))
        })
        .collect()
}

pub async fn list(
    tx: &mut Tx,
    court: &str,
    states: &[ApplicationState],
    overdue_only: bool,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<Stored>, Error> {
    let select = format!("SELECT {COLUMNS}, create_time, id FROM jc_applications WHERE court = $1");
    let page = Page::of(states, overdue_only, after, limit);
    let rows = records::list(tx, &select, "", court, &page).await?;
    rows.iter().map(stored_of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::tests::{COURT, OTHER_COURT, at, cal, doc, received};
    use crate::application::{accept, rule};
    use fengqiao_proto::judicialconfirmation::RulingOutcome;
    use fengqiao_store::both_backends;

    fn named(id: &str, transfer: &str, now: i64) -> Record {
        let mut r = received(now);
        r.application.name = format!("applications/{id}");
        r.application.transfer = transfer.into();
        r
    }

    both_backends!(
        applications_round_trip_scoped_to_their_court,
        |store: Store| async move {
            migrate(&store).await?;
            let c = cal();
            let r = named("a1", "transfers/t1", at(2026, 3, 2, 9));
            let mut tx = store.write().await?;
            assert!(insert(&mut tx, COURT, &r).await?);
            // A redelivered application (same transfer) writes nothing.
            assert!(
                !insert(
                    &mut tx,
                    COURT,
                    &named("a9", "transfers/t1", at(2026, 3, 2, 9))
                )
                .await?
            );
            let s = load(&mut tx, COURT, "applications/a1")
                .await?
                .expect("stored");
            assert_eq!(s.version, 1);
            assert_eq!(s.record.clocks, r.clocks);
            assert_eq!(s.record.application.etag, "\"1\"");
            // Another court sees nothing: NOT_FOUND, like a missing one.
            assert!(
                load(&mut tx, OTHER_COURT, "applications/a1")
                    .await?
                    .is_none()
            );
            assert!(load(&mut tx, COURT, "applications/nope").await?.is_none());
            assert_eq!(
                load_by_transfer(&mut tx, "transfers/t1")
                    .await?
                    .map(|s| s.version),
                Some(1)
            );

            // Optimistic writes: the first wins, a stale version is ETAG_MISMATCH.
            let a = accept(&s.record, "(2026)辽0203民特调确12号", at(2026, 3, 3, 9), &c)?;
            let s2 = save(&mut tx, &s, &a, at(2026, 3, 3, 9)).await?;
            assert_eq!(s2.version, 2);
            assert!(matches!(
                save(&mut tx, &s, &a, at(2026, 3, 3, 9)).await,
                Err(Error::EtagMismatch(_))
            ));
            let back = load(&mut tx, COURT, "applications/a1")
                .await?
                .expect("stored");
            assert_eq!(back.record.state(), ApplicationState::UnderReview);
            assert_eq!(back.record.application.etag, "\"2\"");
            assert_eq!(back.record.clocks.len(), 2);

            let other = named("a2", "transfers/t2", at(2026, 3, 2, 10));
            assert!(insert(&mut tx, COURT, &other).await?);
            tx.commit().await?;

            // A 调确 number is the court's once (in its own transaction: on PostgreSQL the
            // violation aborts the transaction, so the change is rolled back whole).
            let mut tx = store.write().await?;
            let o = load(&mut tx, COURT, "applications/a2")
                .await?
                .expect("stored");
            let dup = accept(&o.record, "(2026)辽0203民特调确12号", at(2026, 3, 3, 9), &c)?;
            match save(&mut tx, &o, &dup, at(2026, 3, 3, 9)).await {
                Err(Error::Refused(Reason::ConfirmationNumberReused, _)) => {}
                other => panic!("{other:?}"),
            }
            tx.rollback().await?;

            // Lists: newest first, by state, paged by cursor.
            let mut tx = store.write().await?;
            let o = load(&mut tx, COURT, "applications/a2")
                .await?
                .expect("stored");
            let ok = accept(&o.record, "(2026)辽0203民特调确13号", at(2026, 3, 3, 9), &c)?;
            let ruled = rule(
                &ok,
                RulingOutcome::Confirmed,
                "",
                Some(&doc()),
                at(2026, 3, 4, 9),
                &c,
            )?;
            let o = save(&mut tx, &o, &ok, at(2026, 3, 3, 9)).await?;
            save(&mut tx, &o, &ruled, at(2026, 3, 4, 9)).await?;
            tx.commit().await?;
            let mut tx = store.read().await?;
            let all = list(&mut tx, COURT, &[], false, None, 10).await?;
            let names: Vec<&str> = all
                .iter()
                .map(|s| s.record.application.name.as_str())
                .collect();
            assert_eq!(names, ["applications/a2", "applications/a1"]);
            let confirmed = list(
                &mut tx,
                COURT,
                &[ApplicationState::Confirmed],
                false,
                None,
                10,
            )
            .await?;
            assert_eq!(confirmed.len(), 1);
            let page = list(&mut tx, COURT, &[], false, None, 1).await?;
            assert_eq!(page.len(), 1);
            let t = at(2026, 3, 2, 10);
            let rest = list(&mut tx, COURT, &[], false, Some((t, "a2".into())), 10).await?;
            assert_eq!(rest.len(), 1);
            assert!(
                list(&mut tx, OTHER_COURT, &[], false, None, 10)
                    .await?
                    .is_empty()
            );
            assert!(list(&mut tx, COURT, &[], true, None, 10).await?.is_empty());
            Ok::<(), Error>(())
        }
    );
}
