//! Persistence of the court's pre-filing cases, roster and event log, and the seed of the
//! sample roster. Cases and roster entries are stored as encoded protobufs beside the columns
//! that lists, authorisation and look-ups need.
//!
//! Every body is sealed ([`fengqiao_store::seal`], context `"<table>.body"`): a case holds
//! the parties' names, identity numbers, phones and addresses (个人信息保护法 Art 51); the
//! plain columns beside it hold ids, states and times only, and the content hash over the
//! parties is a keyed hash ([`content_hash`]).

use fengqiao_kit::records::Schema;
use fengqiao_proto::common::{
    Actor, ClockExpiryAction, ClockState, ClockUnit as ProtoUnit, DisputeCategory,
};
use fengqiao_proto::courtdiversion::{
    CaseEvent, CaseEventType, InvitedMediator, InvitedOrganization, PreFilingCase,
    PreFilingCaseState as S,
};
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx};
use prost::Message;

use crate::error::{Error, Result};
use crate::lifecycle::{self, Action};
use crate::rules;
use fengqiao_kit::time::{from_timestamp as from_ts, to_timestamp as to_ts};

/// Name under which this service's migrations and deadlines are recorded.
pub const SERVICE: &str = "court_diversion";

/// This service's own migrations, applied after the shared ones.
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [(1, "court_diversion", "migrations/0001_court_diversion.sql"),]
);

/// Applies the shared migrations, then this service's.
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    SCHEMA.migrate(store).await
}

/// The actor of deadline events and router-driven changes.
pub fn system_actor(court: &str) -> Actor {
    Actor {
        agency: court.to_string(),
        actor_id: "court-diversion".into(),
        display_name: "诉前调解系统".into(),
        roles: vec![],
        person: String::new(),
    }
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// A case as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The case.
    pub case: PreFilingCase,
    /// Owning court (`agencies/{agency}`).
    pub court: String,
    /// Row version (the etag).
    pub version: i64,
    /// Hash of the client's content at intake.
    pub content_hash: String,
    /// The router event sequence the case last reflected.
    pub event_seq: u64,
}

impl Stored {
    /// The id part of `cases/{id}`.
    pub fn id(&self) -> &str {
        self.case.name.trim_start_matches("cases/")
    }

    /// The state.
    pub fn state(&self) -> S {
        S::try_from(self.case.state).unwrap_or_default()
    }
}

/// Seal context of `court_cases.body`.
pub const CASE_BODY: &str = "court_cases.body";
/// Seal context of `court_case_events.body`.
pub const EVENT_BODY: &str = "court_case_events.body";
/// Seal context of `court_organizations.body`.
pub const ORGANIZATION_BODY: &str = "court_organizations.body";
/// Seal context of `court_mediators.body`.
pub const MEDIATOR_BODY: &str = "court_mediators.body";

/// Seals an encoded body for the column `context`.
pub fn seal_body(context: &str, msg: &impl Message) -> Result<Vec<u8>> {
    fengqiao_kit::records::seal_message(context, msg)
}

/// Opens and decodes a body sealed for `context`.
pub fn open_body<M: Message + Default>(context: &str, sealed: &[u8]) -> Result<M> {
    fengqiao_kit::records::open_message(context, sealed)
}

/// The keyed hash (HMAC, [`fengqiao_store::seal::keyed_hash`]) of a case's client content
/// at intake, compared when the pre-filing number is registered again: a plain hash over
/// the parties could be reversed by trying identity numbers.
pub fn content_hash(input: &PreFilingCase) -> Result<String> {
    Ok(fengqiao_store::seal::keyed_hash(
        "court_cases.content_hash",
        &input.encode_to_vec(),
    )?)
}

/// Columns read for a case.
pub const COLUMNS: &str = "id, court, version, content_hash, event_seq, body";

/// Decodes a case row.
pub fn stored_of(row: &AnyRow) -> Result<Stored> {
    let body: Vec<u8> = row.try_get("body")?;
    let case: PreFilingCase = open_body(CASE_BODY, &body)?;
    Ok(Stored {
        case,
        court: row.try_get("court")?,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        event_seq: fengqiao_kit::transfers::event_seq_of(row)?,
    })
}

/// Locks the case rows with `column = value` for the rest of a write transaction on
/// PostgreSQL (SQLite write transactions are serialised already), so a caller's change, a
/// router message and a deadline apply one after the other.
pub async fn lock_case(tx: &mut Tx, column: &str, value: &str) -> Result<()> {
    fengqiao_kit::records::lock_rows(tx, "court_cases", column, value).await
}

/// Loads the case `cases/{id}`.
pub async fn load(tx: &mut Tx, id: &str) -> Result<Option<Stored>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM court_cases WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(stored_of).transpose()
}

/// The earliest deadline of the case's running clocks, for the overdue list.
fn next_due(c: &PreFilingCase) -> Option<i64> {
    c.clocks
        .iter()
        .filter(|k| k.stopped_at.is_none() && (!k.paused || k.expired))
        // A clock marked expired is overdue whatever its due time says.
        .filter_map(|k| {
            if k.expired {
                Some(0)
            } else {
                k.due_at.as_ref().map(from_ts)
            }
        })
        .min()
}

/// The current delegation's organisation and mediator (while the case is with one).
fn with_whom(c: &PreFilingCase) -> (Option<String>, Option<String>) {
    let state = S::try_from(c.state).unwrap_or_default();
    match c.delegations.last() {
        Some(d) if lifecycle::is_with_organisation(state) => (
            Some(d.organization.clone()),
            (!d.mediator.is_empty()).then(|| d.mediator.clone()),
        ),
        _ => (None, None),
    }
}

/// Inserts a new case (version 1).
pub async fn insert(tx: &mut Tx, s: &Stored, now: i64) -> Result<()> {
    let c = &s.case;
    let (org, med) = with_whom(c);
    sqlx::query(
        "INSERT INTO court_cases (id, court, pre_filing_number, case_id, state, category, \
         organization, mediator, next_due, content_hash, event_seq, body, create_time, \
         update_time, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $12, 1)",
    )
    .bind(s.id())
    .bind(&s.court)
    .bind(&c.pre_filing_number)
    .bind(&c.case_id)
    .bind(i64::from(c.state))
    .bind(i64::from(c.category))
    .bind(org)
    .bind(med)
    .bind(next_due(c))
    .bind(&s.content_hash)
    .bind(seal_body(CASE_BODY, c)?)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        // Registered concurrently under the same number: the retry gets the replay (or
        // PRE_FILING_NUMBER_REUSED).
        fengqiao_kit::records::unique_as(e, || {
            Error::Store(fengqiao_store::Error::ConcurrentModification)
        })
    })?;
    Ok(())
}

/// Writes a changed case: bumps the version and etag, sets `update_time`.
pub async fn save(tx: &mut Tx, s: &mut Stored, now: i64) -> Result<()> {
    s.version += 1;
    s.case.etag = fengqiao_kit::etag::etag(s.version);
    s.case.update_time = Some(to_ts(now));
    let c = &s.case;
    let (org, med) = with_whom(c);
    sqlx::query(
        "UPDATE court_cases SET state = $1, organization = $2, mediator = $3, next_due = $4, \
         event_seq = $5, body = $6, update_time = $7, version = $8 WHERE id = $9",
    )
    .bind(i64::from(c.state))
    .bind(org)
    .bind(med)
    .bind(next_due(c))
    .bind(fengqiao_kit::transfers::seq_column(s.event_seq))
    .bind(seal_body(CASE_BODY, c)?)
    .bind(now)
    .bind(s.version)
    .bind(s.id())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Output form: `overdue` and each running clock's `expired` from the database's time.
pub fn present(mut c: PreFilingCase, now: i64) -> PreFilingCase {
    let mut overdue = false;
    for k in &mut c.clocks {
        let running = k.stopped_at.is_none() && !k.paused;
        if running && k.due_at.as_ref().is_some_and(|d| from_ts(d) <= now) {
            k.expired = true;
        }
        if k.stopped_at.is_none() && k.expired {
            overdue = true;
        }
    }
    c.overdue = overdue;
    c
}

// ---------------------------------------------------------------------------
// Changes: transitions, the court's own clocks and the event log
// ---------------------------------------------------------------------------

/// What a change does besides the case row: the court's deadlines to schedule or cancel and
/// the events to append, written in the change's transaction by [`Change::write`].
#[derive(Debug, Default)]
pub struct Change {
    schedule: Vec<(&'static str, i64)>,
    cancel: Vec<&'static str>,
    events: Vec<CaseEvent>,
}

fn clock_key(case_name: &str, clock: &str) -> String {
    format!("{case_name}/{clock}")
}

impl Change {
    /// Records an event of the case.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        c: &PreFilingCase,
        event_type: CaseEventType,
        from: S,
        clock: &str,
        actor: &Actor,
        reason_code: &str,
        now: i64,
    ) {
        self.events.push(CaseEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            sequence: 0,
            pre_filing_case: c.name.clone(),
            pre_filing_number: c.pre_filing_number.clone(),
            event_type: event_type as i32,
            from_state: from as i32,
            to_state: c.state,
            clock: clock.to_string(),
            actor: Some(actor.clone()),
            reason_code: reason_code.to_string(),
            occur_time: Some(to_ts(now)),
            resume_token: String::new(),
        });
    }

    /// Whether the change recorded any event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.schedule.is_empty() && self.cancel.is_empty()
    }

    /// Writes the deadlines and events of the change for case `s`.
    pub async fn write(self, tx: &mut Tx, s: &Stored) -> Result<()> {
        for clock in self.cancel {
            fengqiao_store::deadline::cancel(tx, SERVICE, &clock_key(&s.case.name, clock)).await?;
        }
        for (clock, due) in self.schedule {
            fengqiao_store::deadline::schedule(
                tx,
                SERVICE,
                &clock_key(&s.case.name, clock),
                due,
                None,
            )
            .await?;
        }
        if self.events.is_empty() {
            return Ok(());
        }
        // Gap-free sequence: appenders serialise (advisory lock on PostgreSQL, the write
        // lock on SQLite), so commit order is sequence order and a watcher never skips one.
        fengqiao_store::pg_xact_lock(
            tx,
            fengqiao_store::lock_class::SEQUENCE,
            &["court_case_events"],
        )
        .await?;
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM court_case_events")
            .fetch_one(&mut **tx)
            .await?
            .try_get("m")?;
        for (i, mut e) in self.events.into_iter().enumerate() {
            let seq = last + 1 + i as i64;
            e.sequence = u64::try_from(seq).unwrap_or(0);
            e.resume_token = seq.to_string();
            sqlx::query(
                "INSERT INTO court_case_events (seq, event_id, court, case_name, event_type, \
                 occurred_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(seq)
            .bind(&e.event_id)
            .bind(&s.court)
            .bind(&e.pre_filing_case)
            .bind(i64::from(e.event_type))
            .bind(e.occur_time.as_ref().map_or(0, from_ts))
            .bind(seal_body(EVENT_BODY, &e)?)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

fn state_label(s: S) -> String {
    s.as_str_name().to_string()
}

/// Applies `action` to the case: the transition table decides, the court's own clocks start
/// and stop with the states they run in (their deadlines scheduled or cancelled in the same
/// transaction), and the event is recorded. Refused: FAILED_PRECONDITION naming the state.
pub fn step(
    c: &mut PreFilingCase,
    action: Action,
    now: i64,
    actor: &Actor,
    reason_code: &str,
    ch: &mut Change,
) -> Result<()> {
    let from = S::try_from(c.state).unwrap_or_default();
    let to = lifecycle::next(from, action).ok_or_else(|| Error::WrongState {
        resource: c.name.clone(),
        state: state_label(from),
        action: action.verb(),
    })?;
    c.state = to as i32;
    let court = rules::court_deadlines();
    let (started, stopped) = rules::clock_changes(&court, from, to);
    for name in stopped {
        if let Some(k) = c
            .clocks
            .iter_mut()
            .find(|k| k.name == name && k.stopped_at.is_none())
        {
            k.stopped_at = Some(to_ts(now));
        }
        ch.cancel.push(name);
    }
    // The router's clocks (acceptance, contact, mediation) stop with the transfer; a case
    // that leaves their states shows them stopped even before the router's message.
    for k in &mut c.clocks {
        let router_clock = matches!(k.name.as_str(), "acceptance" | "contact" | "mediation");
        let runs = match k.name.as_str() {
            "acceptance" => to == S::Delegated,
            "contact" => to == S::Contacting,
            "mediation" => matches!(to, S::Contacting | S::InMediation | S::Suspended),
            _ => true,
        };
        if router_clock && !runs && k.stopped_at.is_none() {
            k.stopped_at = Some(to_ts(now));
        }
    }
    for name in started {
        let Some(d) = court.iter().find(|d| d.name == name) else {
            continue;
        };
        let unit = fengqiao_clock::ClockUnit::from_proto(d.rule.unit)
            .unwrap_or(fengqiao_clock::ClockUnit::CalendarDay);
        let due = fengqiao_clock::add_duration(
            now,
            unit,
            d.rule.length,
            fengqiao_clock::HolidayCalendar::builtin(),
        );
        let clock = ClockState {
            name: name.to_string(),
            unit: d.rule.unit,
            length: d.rule.length,
            started_at: Some(to_ts(now)),
            due_at: Some(to_ts(due)),
            expiry_action: d.rule.expiry_action,
            ..ClockState::default()
        };
        c.clocks.retain(|k| k.name != name);
        c.clocks.push(clock);
        ch.schedule.push((name, due));
    }
    let etype = if from == to {
        CaseEventType::Recorded
    } else {
        CaseEventType::StateChanged
    };
    ch.event(c, etype, from, "", actor, reason_code, now);
    Ok(())
}

/// Whether `unit` is working days (for messages and tests).
pub fn is_working_days(k: &ClockState) -> bool {
    k.unit == ProtoUnit::WorkingDay as i32
}

/// Marks a court clock expired (notification only, e.g. the 7-day registration decision,
/// CPL Art 126) and records the OVERDUE event.
pub fn mark_overdue(c: &mut PreFilingCase, clock: &str, now: i64, actor: &Actor, ch: &mut Change) {
    if let Some(k) = c
        .clocks
        .iter_mut()
        .find(|k| k.name == clock && k.stopped_at.is_none())
    {
        k.expired = true;
        k.expiry_action = ClockExpiryAction::NotifyOnly as i32;
    }
    c.overdue = true;
    let state = S::try_from(c.state).unwrap_or_default();
    ch.event(
        c,
        CaseEventType::Overdue,
        state,
        clock,
        actor,
        &format!("{}_OVERDUE", clock.to_ascii_uppercase()),
        now,
    );
}

// ---------------------------------------------------------------------------
// Roster
// ---------------------------------------------------------------------------

/// An organisation row.
pub fn organization_of(row: &AnyRow) -> Result<InvitedOrganization> {
    let body: Vec<u8> = row.try_get("body")?;
    open_body(ORGANIZATION_BODY, &body)
}

/// A mediator row.
pub fn mediator_of(row: &AnyRow) -> Result<InvitedMediator> {
    let body: Vec<u8> = row.try_get("body")?;
    open_body(MEDIATOR_BODY, &body)
}

/// The court's organisation `id`, if on the roster.
pub async fn organization(
    conn: &mut sqlx::AnyConnection,
    court: &str,
    id: &str,
) -> Result<Option<InvitedOrganization>> {
    let row = sqlx::query("SELECT body FROM court_organizations WHERE court = $1 AND id = $2")
        .bind(court)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(organization_of).transpose()
}

/// The court's mediator `org/id`, if on the roster.
pub async fn mediator(
    conn: &mut sqlx::AnyConnection,
    court: &str,
    org: &str,
    id: &str,
) -> Result<Option<InvitedMediator>> {
    let row = sqlx::query(
        "SELECT body FROM court_mediators WHERE court = $1 AND organization = $2 AND id = $3",
    )
    .bind(court)
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(mediator_of).transpose()
}

/// Inserts an organisation; `false` when the id exists already (nothing written).
pub async fn insert_organization(
    conn: &mut sqlx::AnyConnection,
    court: &str,
    id: &str,
    o: &InvitedOrganization,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO court_organizations (court, id, agency, active, body, create_time, version) \
         VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (court, id) DO NOTHING",
    )
    .bind(court)
    .bind(id)
    .bind(&o.agency)
    .bind(i64::from(o.active))
    .bind(seal_body(ORGANIZATION_BODY, o)?)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts a mediator; `false` when the id exists already (nothing written).
pub async fn insert_mediator(
    conn: &mut sqlx::AnyConnection,
    court: &str,
    org: &str,
    id: &str,
    m: &InvitedMediator,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO court_mediators (court, organization, id, actor_id, active, body, \
         create_time, version) VALUES ($1, $2, $3, $4, $5, $6, $7, 1) \
         ON CONFLICT (court, organization, id) DO NOTHING",
    )
    .bind(court)
    .bind(org)
    .bind(id)
    .bind(&m.actor_id)
    .bind(i64::from(m.active))
    .bind(seal_body(MEDIATOR_BODY, m)?)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Open cases of the court currently with the organisation or mediator (在办案件数).
pub async fn load_of(
    conn: &mut sqlx::AnyConnection,
    court: &str,
    column: &str,
    name: &str,
) -> Result<u32> {
    let with: Vec<String> = [S::Delegated, S::Contacting, S::InMediation, S::Suspended]
        .iter()
        .map(|s| (*s as i32).to_string())
        .collect();
    let n: i64 = sqlx::query(&format!(
        "SELECT COUNT(*) AS n FROM court_cases WHERE court = $1 AND {column} = $2 \
         AND state IN ({})",
        with.join(", ")
    ))
    .bind(court)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// One invited organisation of a court's sample roster, with its mediators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOrganization {
    /// Resource id (`invitedOrganizations/{id}`).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The router agency (`agencies/{agency}`).
    pub agency: String,
    /// GB/T 2260 code.
    pub region_code: String,
    /// Mediators: (id, display name, actor id).
    pub mediators: Vec<(String, String, String)>,
}

/// A court's sample roster (特邀调解名册) for `fengqiao dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRoster {
    /// The court (`agencies/{agency}`).
    pub court: String,
    /// Its invited organisations.
    pub organizations: Vec<SeedOrganization>,
}

/// Seeds rosters idempotently: entries that exist are left as they are, so a restart, or
/// several processes starting at once on one database, neither fails nor duplicates.
/// Returns how many entries were added.
pub async fn seed_rosters(store: &Store, rosters: &[SeedRoster]) -> Result<usize> {
    let mut added = 0;
    let mut tx = store.write().await?;
    let now = fengqiao_store::db_now_micros(&mut tx).await?;
    for r in rosters {
        for o in &r.organizations {
            let org = InvitedOrganization {
                name: format!("invitedOrganizations/{}", o.id),
                display_name: o.display_name.clone(),
                agency: o.agency.clone(),
                specialties: vec![],
                region_code: o.region_code.clone(),
                active: true,
                court: Some(fengqiao_proto::common::AgencyRef {
                    name: r.court.clone(),
                    ..Default::default()
                }),
                current_load: 0,
                create_time: Some(to_ts(now)),
                update_time: Some(to_ts(now)),
                etag: fengqiao_kit::etag::etag(1),
            };
            if insert_organization(&mut tx, &r.court, &o.id, &org, now).await? {
                added += 1;
            }
            for (id, display_name, actor_id) in &o.mediators {
                let m = InvitedMediator {
                    name: format!("invitedOrganizations/{}/mediators/{id}", o.id),
                    display_name: display_name.clone(),
                    actor_id: actor_id.clone(),
                    specialties: vec![DisputeCategory::Neighbourhood as i32],
                    region_code: o.region_code.clone(),
                    active: true,
                    max_load: 0,
                    current_load: 0,
                    create_time: Some(to_ts(now)),
                    update_time: Some(to_ts(now)),
                    etag: fengqiao_kit::etag::etag(1),
                };
                if insert_mediator(&mut tx, &r.court, &o.id, id, &m, now).await? {
                    added += 1;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(added)
}
