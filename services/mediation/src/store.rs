//! Case rows: loading with authorisation, saving with optimistic concurrency, case-file
//! entries and case numbers.

use fengqiao_kit::{Identity, validate};
use fengqiao_proto::mediation::{CaseFileEntry, MediationCase, MediationCaseState};
use fengqiao_proto::router::Route;
use fengqiao_store::Tx;
use fengqiao_store::bind::Bind;
use fengqiao_store::sqlx::{self, Row as _};

use crate::error::{Error, Result};
use crate::util::{CASES_BODY, CASES_ROUTE, ENTRIES_BODY, etag, opened, sealed, to_timestamp};

/// A loaded case with its row version.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The row id (`cases/{id}`).
    pub id: String,
    /// The case.
    pub case: MediationCase,
    /// Row version.
    pub version: i64,
    /// The receiving agency.
    pub agency: String,
    /// The case number reserved on receipt, published on acceptance.
    pub reserved_number: String,
    /// Whether the caller named the version it saw (an `etag`): only then must a change apply
    /// to exactly that version.
    pub etag_checked: bool,
    /// The route version the case's transfer pinned, as the offer carried it: its feedback
    /// outcomes and escalation reasons are the codes the case reports with (`None` for a
    /// case offered before offers carried the route).
    pub route: Option<Route>,
    /// The router event sequence (`TransferEvent.sequence`) the case last reflected.
    pub event_seq: u64,
    /// The event sequence of the router's answer to the call being made (0: no router call);
    /// the commit records it, so the router's message for the same event changes nothing.
    pub answer_seq: u64,
}

/// The state's enum name, for errors.
pub fn state_name(s: i32) -> String {
    MediationCaseState::try_from(s)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| "UNKNOWN".into())
}

/// The state of a case.
pub fn state_of(c: &MediationCase) -> MediationCaseState {
    MediationCaseState::try_from(c.state).unwrap_or(MediationCaseState::Unspecified)
}

const COLS: &str = "id, agency, version, reserved_number, event_seq, body, route";

fn decode(r: &fengqiao_store::sqlx::any::AnyRow) -> Result<Loaded> {
    let id: String = r.try_get("id")?;
    let agency: String = r.try_get("agency")?;
    let version: i64 = r.try_get("version")?;
    let reserved_number: String = r.try_get("reserved_number")?;
    let event_seq: i64 = r.try_get("event_seq")?;
    let body: Vec<u8> = r.try_get("body")?;
    let mut case: MediationCase = opened(CASES_BODY, &body)?;
    case.etag = etag(version);
    let route: Option<Vec<u8>> = r.try_get("route")?;
    let route = route
        .map(|b| opened::<Route>(CASES_ROUTE, &b))
        .transpose()?;
    Ok(Loaded {
        id,
        case,
        version,
        agency,
        reserved_number,
        etag_checked: false,
        route,
        event_seq: u64::try_from(event_seq).unwrap_or(0),
        answer_seq: 0,
    })
}

/// Loads the case `name` visible to `who` (its receiving agency); others get NOT_FOUND.
pub async fn load_for(tx: &mut Tx, who: &Identity, name: &str) -> Result<Loaded> {
    load_for_sql(tx, who, name, "").await
}

/// [`load_for`] with the row locked for the rest of the write transaction on PostgreSQL (SQLite
/// write transactions are serialised already), so that concurrent changes — a caller's and a
/// router message's — apply one after the other instead of failing on the version.
pub async fn load_for_update(tx: &mut Tx, who: &Identity, name: &str) -> Result<Loaded> {
    let lock = fengqiao_kit::records::for_update(tx);
    load_for_sql(tx, who, name, lock).await
}

/// What the first, advisory phase of a change reads: the stored answer of an earlier call
/// with the same key, or the case.
#[derive(Debug)]
pub enum Peeked<R> {
    /// A replay: the first answer.
    Replay(R),
    /// The case `name` as [`load_for`] loads it.
    Case(Box<Loaded>),
}

/// The first, advisory phase of a change in one statement outside any transaction: the case
/// `name` visible to `who` and the stored answer of `idem`, if any (a replay needs the case:
/// the first call changed it). The write transaction checks both again under the row lock. A
/// case whose organisation is still empty is read again in a read transaction, which fills it
/// in from the roster.
pub async fn peek_and_load<R: prost::Message + Default>(
    store: &fengqiao_store::Store,
    who: &Identity,
    name: &str,
    idem: &fengqiao_kit::idem::Idem,
) -> Result<Peeked<R>> {
    let id = validate::parse_name("name", "cases", name)?;
    let sql = format!(
        "SELECT {COLS}, {} FROM mediation_cases {} WHERE id = $1",
        fengqiao_store::idempotency::JOINED_COLUMNS,
        fengqiao_store::idempotency::join_sql(2)
    );
    let [caller, method, request_id] = idem.join_binds();
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(caller)
        .bind(method)
        .bind(request_id)
        .fetch_optional(store.pool())
        .await?;
    let Some(r) = row else {
        return Err(Error::NotFound(name.to_string()));
    };
    if let Some(resp) = idem.replay_in_row::<R>(&r)? {
        return Ok(Peeked::Replay(resp));
    }
    let l = decode(&r)?;
    if l.agency != who.agency {
        return Err(Error::NotFound(name.to_string()));
    }
    if !l.case.organization.is_empty() {
        return Ok(Peeked::Case(Box::new(l)));
    }
    let mut tx = store.read().await?;
    let l = load_for(&mut tx, who, name).await?;
    tx.commit().await?;
    Ok(Peeked::Case(Box::new(l)))
}

async fn load_for_sql(tx: &mut Tx, who: &Identity, name: &str, lock: &str) -> Result<Loaded> {
    let id = validate::parse_name("name", "cases", name)?;
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM mediation_cases WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(r) => {
            let mut l = decode(&r)?;
            if l.agency != who.agency {
                return Err(Error::NotFound(name.to_string()));
            }
            // An organisation registered after the offer arrived handles the case from now on.
            if l.case.organization.is_empty()
                && let Some(o) = crate::roster::org_of_agency(tx, &l.agency).await?
            {
                l.case.organization = o.name;
            }
            Ok(l)
        }
        None => Err(Error::NotFound(name.to_string())),
    }
}

/// Loads the case that a transfer brought, without authorisation (router messages).
pub async fn load_by_transfer(tx: &mut Tx, transfer: &str) -> Result<Option<Loaded>> {
    let sql = format!("SELECT {COLS} FROM mediation_cases WHERE transfer = $1");
    fengqiao_kit::records::fetch_one(tx, &sql, &[Bind::Text(transfer.into())], decode).await
}

/// The router event sequence the case of `transfer` reflects, if there is such a case. One
/// statement outside any transaction (the inbox's check for a message that is not newer).
pub async fn event_seq_of_transfer(pool: &sqlx::AnyPool, transfer: &str) -> Result<Option<u64>> {
    let row = sqlx::query("SELECT event_seq FROM mediation_cases WHERE transfer = $1")
        .bind(transfer)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let seq: i64 = row.try_get("event_seq")?;
    Ok(Some(u64::try_from(seq).unwrap_or(0)))
}

/// The cases of `agency` with the shared case id `case_id`, rows locked for the rest of the
/// transaction on PostgreSQL (router messages on the committee's own transfers).
pub async fn load_by_case_id_locked(
    tx: &mut Tx,
    agency: &str,
    case_id: &str,
) -> Result<Vec<Loaded>> {
    let lock = if fengqiao_store::Backend::of(tx) == fengqiao_store::Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM mediation_cases WHERE case_id = $1 AND agency = $2 ORDER BY id{lock}"
    ))
    .bind(case_id)
    .bind(agency)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(decode).collect()
}

/// [`load_by_transfer`] with the row locked for the rest of the transaction on PostgreSQL
/// (see [`load_for_update`]).
pub async fn load_by_transfer_locked(tx: &mut Tx, transfer: &str) -> Result<Option<Loaded>> {
    let lock = fengqiao_kit::records::for_update(tx);
    let sql = format!("SELECT {COLS} FROM mediation_cases WHERE transfer = $1{lock}");
    fengqiao_kit::records::fetch_one(tx, &sql, &[Bind::Text(transfer.into())], decode).await
}

/// What [`list_page`] selects by column (the other list filters look into the case).
#[derive(Debug, Default)]
pub struct CaseQuery<'a> {
    /// The receiving agency (always required).
    pub agency: &'a str,
    /// Only this case id, if set.
    pub case_id: Option<&'a str>,
    /// Only these states, if any.
    pub states: &'a [i32],
    /// Only cases assigned to this mediator, if set.
    pub mediator: Option<&'a str>,
    /// Keyset position: rows strictly after this `(create_time, id)`, newest first.
    pub after: Option<(i64, String)>,
    /// At most this many rows.
    pub limit: usize,
}

/// A page of an agency's cases, newest first, with each row's `create_time` (the keyset).
/// Served by `mediation_cases_agency (agency, create_time, id)` or, with a case id,
/// `mediation_cases_case (agency, case_id)`.
pub async fn list_page(
    conn: &mut sqlx::AnyConnection,
    q: &CaseQuery<'_>,
) -> Result<Vec<(i64, Loaded)>> {
    let mut sql = format!(
        "SELECT {COLS}, create_time AS list_create_time FROM mediation_cases WHERE agency = $1"
    );
    let mut n = 1;
    if q.case_id.is_some() {
        n += 1;
        sql.push_str(&format!(" AND case_id = ${n}"));
    }
    if !q.states.is_empty() {
        // Integers only: safe to inline.
        let list: Vec<String> = q.states.iter().map(|s| s.to_string()).collect();
        sql.push_str(&format!(" AND state IN ({})", list.join(",")));
    }
    if q.mediator.is_some() {
        n += 1;
        sql.push_str(&format!(" AND mediator = ${n}"));
    }
    if q.after.is_some() {
        let (t, i) = (n + 1, n + 2);
        sql.push_str(&format!(
            " AND (create_time < ${t} OR (create_time = ${t} AND id < ${i}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY create_time DESC, id DESC LIMIT {}",
        q.limit.max(1)
    ));
    let mut query = sqlx::query(&sql).bind(q.agency);
    if let Some(c) = q.case_id {
        query = query.bind(c);
    }
    if let Some(m) = q.mediator {
        query = query.bind(m);
    }
    if let Some((t, id)) = &q.after {
        query = query.bind(*t).bind(id.clone());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<i64, _>("list_create_time")?, decode(r)?)))
        .collect()
}

/// Appends case-file entries in filing order, numbered after the case's last entry, in one
/// statement ([`fengqiao_kit::sequenced::append`]).
pub async fn add_entries(tx: &mut Tx, case_ref: &str, entries: &[CaseFileEntry]) -> Result<()> {
    let rows = entries
        .iter()
        .map(|e| {
            let t = e
                .record_time
                .as_ref()
                .map(crate::util::from_timestamp)
                .unwrap_or(0);
            Ok((t, sealed(ENTRIES_BODY, e)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let case = ("case_ref", case_ref);
    fengqiao_kit::sequenced::append(tx, "mediation_case_entries", case, "record_time", rows).await
}

/// The case-file entries, in time order (then filing order).
pub async fn entries(tx: &mut Tx, case_ref: &str) -> Result<Vec<CaseFileEntry>> {
    let rows = sqlx::query(
        "SELECT body FROM mediation_case_entries WHERE case_ref = $1 ORDER BY record_time, seq",
    )
    .bind(case_ref)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let b: Vec<u8> = r.try_get("body")?;
            opened::<CaseFileEntry>(ENTRIES_BODY, &b)
        })
        .collect()
}

/// Inserts a new case, with the route its transfer pinned (from the offer), reflecting the
/// router's events up to `event_seq`.
#[allow(clippy::too_many_arguments)]
pub async fn insert(
    tx: &mut Tx,
    id: &str,
    agency: &str,
    reserved_number: &str,
    case: &mut MediationCase,
    route: Option<&Route>,
    now: i64,
    event_seq: u64,
) -> Result<()> {
    case.etag = etag(1);
    case.create_time = Some(to_timestamp(now));
    case.update_time = Some(to_timestamp(now));
    sqlx::query(
        "INSERT INTO mediation_cases (id, agency, transfer, case_id, state, mediator, \
         reserved_number, create_time, update_time, version, body, route, event_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 1, $9, $10, $11)",
    )
    .bind(id)
    .bind(agency)
    .bind(&case.transfer)
    .bind(&case.case_id)
    .bind(i64::from(case.state))
    .bind(current_mediator(case))
    .bind(reserved_number)
    .bind(now)
    .bind(sealed(CASES_BODY, case)?)
    .bind(route.map(|r| sealed(CASES_ROUTE, r)).transpose()?)
    .bind(fengqiao_kit::transfers::seq_column(event_seq))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn current_mediator(c: &MediationCase) -> String {
    c.assignment
        .as_ref()
        .map(|a| a.mediator.clone())
        .unwrap_or_default()
}

/// Saves a changed case if its version is still `l.version`, recording that it reflects the
/// router's events up to `event_seq` (never lowering what is recorded).
pub async fn save_seq(
    tx: &mut Tx,
    l: &Loaded,
    case: &mut MediationCase,
    now: i64,
    event_seq: u64,
) -> Result<()> {
    case.etag = etag(l.version + 1);
    case.update_time = Some(to_timestamp(now));
    let seq = fengqiao_kit::transfers::seq_column(event_seq);
    let done = sqlx::query(
        "UPDATE mediation_cases SET state = $1, mediator = $2, update_time = $3, \
         version = version + 1, body = $4, \
         event_seq = CASE WHEN event_seq < $7 THEN $7 ELSE event_seq END \
         WHERE id = $5 AND version = $6",
    )
    .bind(i64::from(case.state))
    .bind(current_mediator(case))
    .bind(now)
    .bind(sealed(CASES_BODY, case)?)
    .bind(&l.id)
    .bind(l.version)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::EtagMismatch(case.name.clone()));
    }
    Ok(())
}

/// Records that the case reflects the router's events up to `event_seq` without changing the
/// case (no new version: a client's etag stays valid across messages that change nothing).
pub async fn note_seq(tx: &mut Tx, id: &str, event_seq: u64) -> Result<()> {
    sqlx::query(
        "UPDATE mediation_cases SET event_seq = CASE WHEN event_seq < $1 THEN $1 ELSE event_seq END \
         WHERE id = $2",
    )
    .bind(fengqiao_kit::transfers::seq_column(event_seq))
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reserves the next case number of an agency for the year of `now` (调解案号), e.g.
/// `调〔2026〕0007号`.
pub async fn reserve_number(tx: &mut Tx, agency: &str, now: i64) -> Result<String> {
    // Year in China Standard Time (UTC+8); civil-from-days (H. Hinnant).
    let days = (now / 1_000_000 + 8 * 3600).div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // One statement takes the number and moves the counter on (the row is locked by the
    // upsert), so concurrent reservations never read the same value.
    let row = sqlx::query(
        "INSERT INTO mediation_case_numbers (agency, year, next) VALUES ($1, $2, 2) \
         ON CONFLICT (agency, year) DO UPDATE SET next = mediation_case_numbers.next + 1 \
         RETURNING next",
    )
    .bind(agency)
    .bind(year)
    .fetch_one(&mut **tx)
    .await?;
    let n = row.try_get::<i64, _>("next")? - 1;
    Ok(format!("调〔{year}〕{n:04}号"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_proto::mediation::CaseFileEntryKind;
    use fengqiao_store::{Store, both_backends};

    fn case(id: &str) -> MediationCase {
        MediationCase {
            name: format!("cases/{id}"),
            transfer: format!("transfers/{id}"),
            case_id: format!("case-{id}"),
            ..Default::default()
        }
    }

    fn agency(agency: &str) -> Identity {
        Identity {
            agency: agency.into(),
            actor: "mediator-1".into(),
            roles: vec!["mediator".into()],
            method: fengqiao_kit::auth::AuthMethod::Token,
            person: None,
        }
    }

    fn who() -> Identity {
        agency("agencies/committee")
    }

    async fn peek(
        store: &Store,
        who: Identity,
        idem: &fengqiao_kit::idem::Idem,
    ) -> Result<Peeked<MediationCase>> {
        peek_and_load::<MediationCase>(store, &who, "cases/c2", idem).await
    }

    both_backends!(
        entries_numbered_after_the_last_in_one_statement,
        |store: Store| async move {
            crate::migrate(&store).await?;
            let mut tx = store.write().await?;
            for id in ["c1", "c2"] {
                insert(
                    &mut tx,
                    id,
                    &who().agency,
                    "调〔2026〕0001号",
                    &mut case(id),
                    None,
                    5,
                    0,
                )
                .await?;
            }
            let e = |title: &str, at: i64| {
                crate::cases::entry(CaseFileEntryKind::Other, title, at, String::new())
            };
            add_entries(&mut tx, "c1", &[e("一", 10)]).await?;
            add_entries(&mut tx, "c2", &[e("其他案件", 10)]).await?;
            // Several at once: numbered in filing order after the last; the same time is
            // ordered by number.
            add_entries(&mut tx, "c1", &[e("二", 20), e("三", 20), e("四", 15)]).await?;
            add_entries(&mut tx, "c1", &[]).await?;
            tx.commit().await?;
            let seqs: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT seq, record_time FROM mediation_case_entries WHERE case_ref = 'c1' ORDER BY seq",
            )
            .fetch_all(store.pool())
            .await?;
            assert_eq!(seqs, vec![(1, 10), (2, 20), (3, 20), (4, 15)]);
            let mut tx = store.write().await?;
            let titles: Vec<String> = entries(&mut tx, "c1")
                .await?
                .into_iter()
                .map(|e| e.title)
                .collect();
            assert_eq!(titles, ["一", "四", "二", "三"]);
            assert_eq!(entries(&mut tx, "c2").await?.len(), 1);
            // The locked load sees the case, and only its own agency does.
            let l = load_for_update(&mut tx, &who(), "cases/c1").await?;
            assert_eq!((l.id.as_str(), l.version), ("c1", 1));
            let other = agency("agencies/other");
            assert!(matches!(
                load_for_update(&mut tx, &other, "cases/c1").await,
                Err(Error::NotFound(_))
            ));
            tx.rollback().await?;
            // The advisory read: the case, or the first answer of the same call.
            let rid = "3f1d3c4e-8d2b-4a57-9a57-1c0c2e1c8b11";
            let req = fengqiao_proto::mediation::GetCaseRequest {
                name: "cases/c2".into(),
            };
            let idem = fengqiao_kit::idem::Idem::new(&who(), "Accept", rid, &req)?;
            match peek(&store, who(), &idem).await? {
                Peeked::Case(l) => assert_eq!(l.case.case_id, "case-c2"),
                Peeked::Replay(_) => panic!("no answer stored yet"),
            }
            assert!(matches!(
                peek(&store, other.clone(), &idem).await,
                Err(Error::NotFound(_))
            ));
            let answer = MediationCase {
                name: "cases/c2".into(),
                summary: "the first answer".into(),
                ..Default::default()
            };
            let mut tx = store.write().await?;
            let l = load_for_update(&mut tx, &who(), "cases/c2").await?;
            let (none, now) = idem.replay_under_row_lock::<MediationCase>(&mut tx).await?;
            assert!(none.is_none() && now > 0 && l.version == 1);
            idem.save(&mut tx, &answer).await?;
            tx.commit().await?;
            match peek(&store, who(), &idem).await? {
                Peeked::Replay(r) => assert_eq!(r, answer),
                Peeked::Case(_) => panic!("the stored answer is the answer"),
            }
            // The same request id for another request is refused.
            let other_req = fengqiao_kit::idem::Idem::new(
                &who(),
                "Accept",
                rid,
                &fengqiao_proto::mediation::GetCaseRequest {
                    name: "cases/c1".into(),
                },
            )?;
            assert!(peek(&store, who(), &other_req).await.is_err());
            Ok::<_, Error>(())
        }
    );
}
