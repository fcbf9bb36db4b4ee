//! Persistence of the disputes: the protobuf, its clocks (JSON), its participants and the
//! columns lists and authorisation need. Every read is scoped to a participant agency:
//! another agency's view of a dispute is the same as a missing one (NOT_FOUND, 行诉解释
//! Art 86).
//!
//! The body holds the applicants (names, identity numbers, phones, addresses) and is sealed
//! ([`fengqiao_store::seal`], context [`BODY`]; 个人信息保护法 Art 51). The clocks (JSON) hold
//! rules, reason codes and times only and stay plain; `facts_digest` is a keyed hash with the
//! key file's lookup key ([`crate::rules::facts_digest`]).

use fengqiao_kit::Error;
use fengqiao_kit::records::{self, Page, Schema};
use fengqiao_proto::admindispute::{Dispute, DisputeState};
use fengqiao_store::bind::Bind;
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx};

use crate::dispute::Record;

/// Name under which this service's migrations are recorded.
pub const SERVICE: &str = "admin_dispute";

/// This service's own migrations, applied after the shared ones (one portable script: SQLite DDL, PostgreSQL derived).
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [
        (1, "admin_dispute", "migrations/0001_admin_dispute.sql"),
        (
            2,
            "admin_dispute_drop_keys",
            "migrations/0002_drop_ad_keys.sql"
        ),
    ]
);

/// Seal context of `ad_disputes.body`.
pub const BODY: &str = "ad_disputes.body";

fn sealed_body(d: &Dispute) -> Result<Vec<u8>, Error> {
    records::seal_message(BODY, d)
}

/// Applies the shared migrations, then this service's.
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    SCHEMA.migrate(store).await
}

/// A dispute as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The record.
    pub record: Record,
    /// The keyed digest of its facts (行政复议法 Art 74).
    pub facts_digest: String,
    /// Row version (the etag).
    pub version: i64,
}

const COLUMNS: &str = "d.version, d.body, d.clocks, d.facts_digest";

fn stored_of(row: &AnyRow) -> Result<Stored, Error> {
    let dispute: Dispute = records::open_message(BODY, &row.try_get::<Vec<u8>, _>("body")?)?;
    let clocks = records::clocks_of("dispute", &row.try_get::<String, _>("clocks")?)?;
    Ok(Stored {
        record: Record { dispute, clocks },
        facts_digest: row.try_get("facts_digest")?,
        version: row.try_get("version")?,
    })
}

fn id_of(name: &str) -> &str {
    name.trim_start_matches("disputes/")
}

fn clocks_json(r: &Record) -> Result<String, Error> {
    records::clocks_json(&r.clocks)
}

fn transfer_of(r: &Record) -> Option<String> {
    r.dispute
        .procuratorate
        .as_ref()
        .map(|p| p.transfer.clone())
        .filter(|t| !t.is_empty())
}

async fn add_participants(tx: &mut Tx, r: &Record) -> Result<(), Error> {
    if let Some(t) = transfer_of(r) {
        sqlx::query(
            "INSERT INTO ad_transfers (transfer, dispute_id) VALUES ($1, $2) \
             ON CONFLICT (transfer) DO NOTHING",
        )
        .bind(t)
        .bind(id_of(&r.dispute.name))
        .execute(&mut **tx)
        .await?;
    }
    for agency in r.participants() {
        sqlx::query(
            "INSERT INTO ad_participants (dispute_id, agency) VALUES ($1, $2) \
             ON CONFLICT (dispute_id, agency) DO NOTHING",
        )
        .bind(id_of(&r.dispute.name))
        .bind(agency)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts a new dispute at version 1 with its participants. `false` when a dispute with
/// the same procuratorate transfer is already recorded (a redelivered referral).
pub async fn insert(tx: &mut Tx, r: &Record, facts_digest: &str) -> Result<bool, Error> {
    let mut d = r.dispute.clone();
    d.etag = fengqiao_kit::etag::etag(1);
    let created = d
        .create_time
        .as_ref()
        .map_or(0, fengqiao_kit::time::from_timestamp);
    let done = sqlx::query(
        "INSERT INTO ad_disputes (id, centre, case_id, state, overdue, facts_digest, \
         procuratorate_transfer, body, clocks, create_time, update_time, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, 1) ON CONFLICT DO NOTHING",
    )
    .bind(id_of(&d.name))
    .bind(r.centre())
    .bind(&d.case_id)
    .bind(i64::from(d.state))
    .bind(i64::from(d.overdue))
    .bind(facts_digest)
    .bind(transfer_of(r))
    .bind(sealed_body(&d)?)
    .bind(clocks_json(r)?)
    .bind(created)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    add_participants(tx, r).await?;
    Ok(true)
}

/// Loads `disputes/{id}` as seen by `agency`: `None` unless the agency takes part (the same
/// as a missing dispute).
pub async fn load(tx: &mut Tx, agency: &str, name: &str) -> Result<Option<Stored>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM ad_disputes d JOIN ad_participants p ON p.dispute_id = d.id \
         WHERE d.id = $1 AND p.agency = $2"
    );
    let binds = [Bind::Text(id_of(name).into()), Bind::Text(agency.into())];
    records::fetch_one(tx, &sql, &binds, stored_of).await
}

/// Loads the dispute the procuratorate transfer `transfer` (current or earlier) belongs to
/// (for the inbox).
pub async fn load_by_transfer(tx: &mut Tx, transfer: &str) -> Result<Option<Stored>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM ad_disputes d JOIN ad_transfers t ON t.dispute_id = d.id \
         WHERE t.transfer = $1"
    );
    records::fetch_one(tx, &sql, &[Bind::Text(transfer.into())], stored_of).await
}

/// Writes a changed record when the row is still at `s.version` (optimistic: a concurrent
/// writer makes this ETAG_MISMATCH); returns the stored form at the new version. New
/// participants (the procuratorate once asked) are added.
pub async fn save(tx: &mut Tx, s: &Stored, r: &Record, now: i64) -> Result<Stored, Error> {
    let version = s.version + 1;
    let mut record = r.clone();
    record.dispute.etag = fengqiao_kit::etag::etag(version);
    record.dispute.update_time = Some(fengqiao_kit::time::to_timestamp(now));
    let d = &record.dispute;
    let done = sqlx::query(
        "UPDATE ad_disputes SET state = $1, overdue = $2, procuratorate_transfer = $3, \
         body = $4, clocks = $5, update_time = $6, version = $7 WHERE id = $8 AND version = $9",
    )
    .bind(i64::from(d.state))
    .bind(i64::from(d.overdue))
    .bind(transfer_of(&record))
    .bind(sealed_body(d)?)
    .bind(clocks_json(&record)?)
    .bind(now)
    .bind(version)
    .bind(id_of(&d.name))
    .bind(s.version)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::EtagMismatch(d.name.clone()));
    }
    add_participants(tx, &record).await?;
    Ok(Stored {
        record,
        facts_digest: s.facts_digest.clone(),
        version,
    })
}

/// The disputes `agency` takes part in, newest first (ties by id), optionally in `states`
/// and only overdue, after the cursor `(create_time, id)`; at most `limit`.
pub async fn list(
    tx: &mut Tx,
    agency: &str,
    states: &[DisputeState],
    overdue_only: bool,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<Stored>, Error> {
    let select = format!(
        "SELECT {COLUMNS} FROM ad_disputes d JOIN ad_participants p ON p.dispute_id = d.id \
         WHERE p.agency = $1"
    );
    let page = Page::of(states, overdue_only, after, limit);
    let rows = records::list(tx, &select, "d.", agency, &page).await?;
    rows.iter().map(stored_of).collect()
}

/// Whether a dispute with the shared case id `case_id` is recorded.
pub async fn case_exists(tx: &mut Tx, case_id: &str) -> Result<bool, Error> {
    let row = sqlx::query("SELECT id FROM ad_disputes WHERE case_id = $1")
        .bind(case_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

/// Records that the facts with `digest` were withdrawn after a settlement (行政复议法 Art 74).
pub async fn record_withdrawn_facts(tx: &mut Tx, digest: &str, name: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ad_withdrawn_facts (digest, dispute_id) VALUES ($1, $2) \
         ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest)
    .bind(id_of(name))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether facts with `digest` were withdrawn after a settlement.
pub async fn facts_withdrawn(tx: &mut Tx, digest: &str) -> Result<bool, Error> {
    let row = sqlx::query("SELECT dispute_id FROM ad_withdrawn_facts WHERE digest = $1")
        .bind(digest)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispute::tests::{CENTRE, ORGAN, REVIEWER, at, cal, doc, taken_in};
    use crate::dispute::{ask_procuratorate, start_coordination};
    use fengqiao_proto::admindispute::{
        ClaimKind, CoordinationMethod, DisputeStage, ProcuratorateRequestKind,
    };
    use fengqiao_store::both_backends;

    fn named(id: &str, stage: DisputeStage, now: i64) -> Record {
        let mut r = taken_in(stage, &[ClaimKind::Compensation], now);
        r.dispute.name = format!("disputes/{id}");
        r
    }

    both_backends!(
        disputes_round_trip_seen_only_by_their_participants,
        |store: Store| async move {
            migrate(&store).await?;
            let _ = doc();
            let r = named("d1", DisputeStage::InReview, at(2026, 3, 2, 9));
            let mut tx = store.write().await?;
            assert!(insert(&mut tx, &r, "dg1").await?);
            assert!(!insert(&mut tx, &r, "dg1").await?);
            for agency in [CENTRE, ORGAN, REVIEWER] {
                let s = load(&mut tx, agency, "disputes/d1")
                    .await?
                    .expect("visible");
                assert_eq!(s.version, 1);
                assert_eq!(s.facts_digest, "dg1");
                assert_eq!(s.record.clocks, r.clocks);
            }
            let p = "agencies/xigang-procuratorate";
            assert!(load(&mut tx, p, "disputes/d1").await?.is_none());
            assert!(load(&mut tx, CENTRE, "disputes/nope").await?.is_none());

            // Asking the procuratorate makes it a participant, findable by the transfer.
            let s = load(&mut tx, CENTRE, "disputes/d1").await?.expect("stored");
            let now = at(2026, 3, 3, 9);
            let a = ask_procuratorate(
                &s.record,
                p,
                "transfers/t1",
                ProcuratorateRequestKind::Participate,
                now,
                cal(),
            )?;
            let s2 = save(&mut tx, &s, &a, now).await?;
            assert_eq!(s2.version, 2);
            assert_eq!(s2.record.dispute.etag, "\"2\"");
            assert!(matches!(
                save(&mut tx, &s, &a, now).await,
                Err(Error::EtagMismatch(_))
            ));
            assert!(load(&mut tx, p, "disputes/d1").await?.is_some());
            assert_eq!(
                load_by_transfer(&mut tx, "transfers/t1")
                    .await?
                    .map(|s| s.version),
                Some(2)
            );

            let other = named("d2", DisputeStage::BeforeReview, at(2026, 3, 2, 10));
            assert!(insert(&mut tx, &other, "dg2").await?);
            let o = load(&mut tx, CENTRE, "disputes/d2").await?.expect("stored");
            let c = start_coordination(&o.record, CoordinationMethod::Explanation, now, cal())?;
            save(&mut tx, &o, &c, now).await?;

            // Withdrawn facts by digest only.
            assert!(!facts_withdrawn(&mut tx, "dg1").await?);
            record_withdrawn_facts(&mut tx, "dg1", "disputes/d1").await?;
            record_withdrawn_facts(&mut tx, "dg1", "disputes/d1").await?;
            assert!(facts_withdrawn(&mut tx, "dg1").await?);
            tx.commit().await?;

            let mut tx = store.read().await?;
            let all = list(&mut tx, CENTRE, &[], false, None, 10).await?;
            let names: Vec<&str> = all.iter().map(|s| s.record.dispute.name.as_str()).collect();
            assert_eq!(names, ["disputes/d2", "disputes/d1"]);
            assert_eq!(
                list(&mut tx, REVIEWER, &[], false, None, 10).await?.len(),
                1
            );
            assert_eq!(list(&mut tx, p, &[], false, None, 10).await?.len(), 1);
            assert!(
                list(&mut tx, "agencies/x", &[], false, None, 10)
                    .await?
                    .is_empty()
            );
            let coord = list(
                &mut tx,
                CENTRE,
                &[DisputeState::Coordinating],
                false,
                None,
                10,
            )
            .await?;
            assert_eq!(coord.len(), 1);
            let page = list(&mut tx, CENTRE, &[], false, None, 1).await?;
            assert_eq!(page.len(), 1);
            let rest = list(
                &mut tx,
                CENTRE,
                &[],
                false,
                Some((at(2026, 3, 2, 10), "d2".into())),
                10,
            )
            .await?;
            assert_eq!(rest.len(), 1);
            assert!(list(&mut tx, CENTRE, &[], true, None, 10).await?.is_empty());
            Ok::<(), Error>(())
        }
    );
}
