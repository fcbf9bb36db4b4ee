//! Transfers (移送): one hand-over of a case from one agency to another along a route, with
//! its approvals, clocks, messages, events and audit, each change in one transaction.
//!
//! Every mutation follows the same path (`Transfers::mutate`): idempotency replay, load,
//! authorise (a transfer that is not the caller's is NOT_FOUND, a missing role is
//! PERMISSION_DENIED; both are audited), `etag` check (ABORTED), the transition table
//! ([`crate::lifecycle`], FAILED_PRECONDITION naming the state), the change itself, then — in
//! one transaction — the row (guarded by its version), the event, the audit record, the
//! outgoing envelopes (outbox) and the idempotent answer.
//!
//! The steps up to the change run on plain reads, concurrently with other requests; the write
//! runs in the group committer ([`fengqiao_store::GroupCommit`]), which shares one transaction
//! (and one fsync) among the changes waiting for it, each in its own savepoint, and answers only
//! after the commit. If the row's version moved between the read and the write, the change is
//! worked out again on the new version (unless the caller sent an `etag`: then ABORTED).
//! Paths outside the committer (the timer, pull acknowledgements) take the event-sequence lock
//! before any row lock,
//! the same order as the committer, so the two cannot deadlock.
//!
//! **One truth.** The router is the source of truth of every transfer; agency records are
//! reconciled from its messages. An agency service calls the router first and commits its own
//! record afterwards; if that commit is lost (cut-off call, crash), the router's message for
//! the same event reaches the agency and its inbox brings the record in step. So `persist`
//! tells every party of the transfer about every change ([`parties_to_tell`],
//! [`with_copies`]): the sender always, the approving agency once the transfer is or was
//! awaiting its approval, the receiver once it has been offered (never before); and every
//! envelope names its route, route version and recipient side, which is what agency inboxes
//! dispatch on (`fengqiao_kit::inbox`).

use fengqiao_kit::Reason;
use std::sync::Arc;

use fengqiao_kit::{FieldViolation, Identity, validate};
use fengqiao_proto::common::{Actor, AgencyRef, PersonalInfoField};
use fengqiao_proto::inbox::{Envelope, MessageKind, RecipientSide};
use fengqiao_proto::router::{
    ApproverScope, CaseSnapshot, Investigation, Route, Transfer, TransferClock, TransferEvent,
    TransferEventType, TransferMessage, TransferState,
};
use fengqiao_store::sqlx::{self, AnyConnection, Row as _, any::AnyRow};
use fengqiao_store::{GroupCommit, GroupCommitOptions, Store, Tx};
use prost::Message as _;

use crate::audit::{self, AuditEntry, Outcome};
use crate::clock::{Clock, ExpiryAction, HolidayCalendar};
use crate::error::{Error, Result};
use crate::lifecycle::{self, Action, Party};
use crate::routes::RouteCatalog;
use crate::time::to_timestamp;
use fengqiao_kit::idem::Idem;
use fengqiao_proto::router::ClockStart;

/// How often a change is worked out again when the transfer changed between reading it and
/// writing the change (only when the caller gave no `etag`).
const MAX_ATTEMPTS: u32 = 8;

/// Batch-memo key of the last event sequence number (see `fengqiao_store::group`).
const EVENT_SEQ_MEMO: &str = "router.transfer_events.seq";

/// An action that does not depend on the transfer (for [`Transfers::mutate`]).
fn fixed(action: Action) -> impl Fn(&Loaded, &Route) -> Action {
    move |_, _| action
}

/// Reason code the router uses when an investigation request pauses the feedback clock.
pub const PAUSE_FOR_INVESTIGATION: &str = "supplementary_investigation";

/// Seal context of `transfers.body` (the transfer, its case snapshot and parties included).
pub const BODY_CONTEXT: &str = "transfers.body";
/// Seal context of `transfer_events.body` (an event: actor, free-text reason).
pub const EVENT_BODY_CONTEXT: &str = "transfer_events.body";

const COLUMNS: &str = "id, route_id, route_version, from_agency, to_agency, approver_agency, \
    case_id, state, body, acceptance_clock, feedback_clock, next_due, overdue, create_time, \
    update_time, version, named_clocks";

/// A transfer as loaded for a change.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The stored transfer (clocks live beside it).
    pub transfer: Transfer,
    /// Acceptance clock (受理期限).
    pub acceptance: Option<Clock>,
    /// Feedback clock (反馈期限).
    pub feedback: Option<Clock>,
    /// Named clocks of the pinned route that have started (`Route.clocks`), in its order.
    pub named: Vec<Clock>,
    /// Agency that approves steps scoped to the sender's parent, if any.
    pub approver_agency: Option<String>,
    /// Row version (the etag).
    pub version: i64,
    /// Whether a deadline was missed.
    pub overdue: bool,
}

impl Loaded {
    fn id(&self) -> &str {
        self.transfer
            .name
            .strip_prefix("transfers/")
            .unwrap_or(&self.transfer.name)
    }

    fn state(&self) -> TransferState {
        TransferState::try_from(self.transfer.state).unwrap_or(TransferState::Unspecified)
    }

    fn sender(&self) -> &str {
        self.transfer
            .from_agency
            .as_ref()
            .map_or("", |a| a.name.as_str())
    }

    fn receiver(&self) -> &str {
        self.transfer
            .to_agency
            .as_ref()
            .map_or("", |a| a.name.as_str())
    }

    fn case_id(&self) -> &str {
        self.transfer
            .case_snapshot
            .as_ref()
            .map_or("", |c| c.case_id.as_str())
    }

    /// Whether `agency` may see this transfer: the sender and the approving agency always, the
    /// receiving agency only once the transfer has been offered to it (minimisation: before the
    /// offer the draft and its parties are none of its business).
    fn visible_to(&self, agency: &str) -> bool {
        agency == self.sender()
            || self.approver_agency.as_deref() == Some(agency)
            || (agency == self.receiver() && self.offered_to_receiver())
    }

    /// Whether the transfer has been offered to its receiver (its current state is APPROVED or
    /// later, or it was withdrawn after the offer).
    fn offered_to_receiver(&self) -> bool {
        let from = self
            .transfer
            .last_event
            .as_ref()
            .and_then(|e| TransferState::try_from(e.from_state).ok())
            .unwrap_or(TransferState::Unspecified);
        offered(from, self.state())
    }

    /// The earliest due time of a running clock.
    fn next_due(&self) -> Option<i64> {
        [&self.acceptance, &self.feedback]
            .into_iter()
            .flatten()
            .chain(&self.named)
            .filter(|c| c.stopped_at.is_none() && c.paused_at.is_none() && !c.expired)
            .map(|c| c.due_at)
            .min()
    }

    /// The transfer as callers see it, clocks and overdue flag included.
    pub fn view(&self, now: i64) -> Transfer {
        let mut t = self.transfer.clone();
        t.acceptance_clock = self.acceptance.as_ref().map(Clock::to_proto);
        t.feedback_clock = self.feedback.as_ref().map(Clock::to_proto);
        t.clocks = self
            .named
            .iter()
            .map(|c| fengqiao_proto::router::NamedClock {
                name: c.name.clone(),
                state: Some(c.to_proto()),
            })
            .collect();
        t.overdue = self.overdue || self.next_due().is_some_and(|d| d <= now);
        t.etag = etag(self.version);
        t
    }
}

/// The request field that names the transfer a method acts on, for its `BadRequest`:
/// `transfer.name` in `UpdateTransfer`, `parent` in `RequestInvestigation`, `name` (the
/// investigation's, whose transfer part is checked) in `AnswerInvestigation` and the others.
fn name_field(method: &str) -> &'static str {
    match method {
        "UpdateTransfer" => "transfer.name",
        "RequestInvestigation" => "parent",
        _ => "name",
    }
}

/// Parses `transfers/{uuid}`.
fn transfer_id(field: &str, name: &str) -> Result<String> {
    Ok(validate::parse_name(field, "transfers", name)?.to_string())
}

fn etag(version: i64) -> String {
    fengqiao_kit::etag::etag(version)
}

fn store_err(e: sqlx::Error) -> Error {
    Error::Store(fengqiao_store::Error::from(e))
}

fn clock_from(row: &AnyRow, col: &str) -> Result<Option<Clock>> {
    let text: Option<String> = row.try_get(col).map_err(store_err)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

fn clock_json(c: &Option<Clock>) -> Result<Option<String>> {
    c.as_ref()
        .map(|c| serde_json::to_string(c).map_err(|e| Error::Corrupt(format!("clock: {e}"))))
        .transpose()
}

fn named_from(row: &AnyRow) -> Result<Vec<Clock>> {
    let text: Option<String> = row.try_get("named_clocks").map_err(store_err)?;
    match text {
        Some(t) => {
            serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("named_clocks: {e}")))
        }
        None => Ok(Vec::new()),
    }
}

fn named_json(clocks: &[Clock]) -> Result<Option<String>> {
    if clocks.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(clocks)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("named_clocks: {e}")))
}

fn row_to_loaded(row: &AnyRow) -> Result<Loaded> {
    let body: Vec<u8> = row.try_get("body").map_err(store_err)?;
    let body = fengqiao_store::seal::open(BODY_CONTEXT, &body)?;
    let transfer =
        Transfer::decode(body.as_slice()).map_err(|e| Error::Corrupt(format!("transfer: {e}")))?;
    Ok(Loaded {
        transfer,
        acceptance: clock_from(row, "acceptance_clock")?,
        feedback: clock_from(row, "feedback_clock")?,
        named: named_from(row)?,
        approver_agency: row.try_get("approver_agency").map_err(store_err)?,
        version: row.try_get("version").map_err(store_err)?,
        overdue: row.try_get::<i64, _>("overdue").map_err(store_err)? != 0,
    })
}

fn system_actor() -> Actor {
    Actor {
        agency: "router".into(),
        actor_id: "router".into(),
        display_name: "Fengqiao router".into(),
        roles: vec![],
        person: String::new(),
    }
}

/// What a change produced, besides the new transfer.
#[derive(Debug, Default)]
pub struct Change {
    /// Event type.
    pub event_type: TransferEventType,
    /// Reason code, if any.
    pub reason_code: String,
    /// Free-text reason, if any (never logged).
    pub reason: String,
    /// Messages to send: (kind, recipient agency).
    pub messages: Vec<(MessageKind, String)>,
    /// Investigation carried by the messages, if any.
    pub investigation: Option<Investigation>,
    /// The pinned route, carried by the TRANSFER_OFFERED messages only (set by `offer`).
    pub offered_route: Option<Route>,
}

/// The transfer service over the router's store.
#[derive(Clone)]
pub struct Transfers {
    store: Store,
    /// Runs the write part of every change: they all take the event-sequence and audit-chain
    /// locks, so they share transactions (group commit) instead of queueing for them.
    commit: GroupCommit,
    routes: Arc<RouteCatalog>,
    calendar: Arc<HolidayCalendar>,
    events: tokio::sync::watch::Sender<i64>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers").finish_non_exhaustive()
    }
}

/// Checks a reason code against a route's list.
fn allowed_code<'a>(
    field: &str,
    code: &str,
    list: &'a [fengqiao_proto::common::ReasonCode],
) -> Result<&'a fengqiao_proto::common::ReasonCode> {
    list.iter().find(|r| r.code == code).ok_or_else(|| {
        let codes: Vec<&str> = list.iter().map(|r| r.code.as_str()).collect();
        Error::Invalid(vec![FieldViolation::new(
            field,
            format!("must be one of the route's codes: {}", codes.join(", ")),
        )])
    })
}

/// Removes personal information the route does not allow (最小必要); returns what was removed.
pub fn minimise(case: &mut CaseSnapshot, allowed: &[i32]) -> Vec<i32> {
    let allows = |f: PersonalInfoField| allowed.contains(&(f as i32));
    let mut removed = Vec::new();
    let mut strip = |f: PersonalInfoField, present: bool| {
        if present && !allows(f) && !removed.contains(&(f as i32)) {
            removed.push(f as i32);
        }
        !allows(f)
    };
    for p in &mut case.parties {
        if strip(PersonalInfoField::PartyName, !p.name.is_empty()) {
            p.name.clear();
        }
        if strip(PersonalInfoField::PartyIdNumber, !p.id_number.is_empty()) {
            p.id_number.clear();
        }
        if strip(PersonalInfoField::PartyPhone, !p.phone.is_empty()) {
            p.phone.clear();
        }
        let has_addr = p.address.as_ref().is_some_and(|a| !a.detail.is_empty());
        if strip(PersonalInfoField::PartyAddress, has_addr)
            && let Some(a) = p.address.as_mut()
        {
            a.detail.clear();
            a.location = None;
        }
    }
    let has_loc = case.location.as_ref().is_some_and(|a| !a.detail.is_empty());
    if strip(PersonalInfoField::LocationDetail, has_loc)
        && let Some(a) = case.location.as_mut()
    {
        a.detail.clear();
        a.location = None;
    }
    removed
}

fn validate_case(case: &CaseSnapshot) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    let p = "transfer.case_snapshot.";
    if !case.case_id.is_empty() && uuid::Uuid::parse_str(&case.case_id).is_err() {
        v.push(FieldViolation::new(format!("{p}case_id"), "must be a UUID"));
    }
    let len = case.summary.chars().count();
    if len == 0 || len > 4000 {
        v.push(FieldViolation::new(
            format!("{p}summary"),
            "is required, at most 4000 characters",
        ));
    }
    if let Err(e) = validate::region_code(&format!("{p}region_code"), &case.region_code) {
        v.push(e);
    }
    if case.category == 0 {
        v.push(FieldViolation::new(format!("{p}category"), "is required"));
    }
    v
}

/// Whether `who` may approve step `step` of `t` along `route`.
fn check_approver(who: &Identity, l: &Loaded, route: &Route, step: usize) -> Result<()> {
    let Some(s) = route.approval_steps.get(step) else {
        return Err(Error::WrongState {
            resource: l.transfer.name.clone(),
            state: "TRANSFER_STATE_AWAITING_APPROVAL".into(),
            action: "approve a step the route does not have",
        });
    };
    let scope_agency = match ApproverScope::try_from(s.approver_scope) {
        Ok(ApproverScope::ParentAgency) => l.approver_agency.as_deref().unwrap_or(""),
        _ => l.sender(),
    };
    if who.agency != scope_agency {
        return Err(Error::Refused(
            Reason::WrongParty,
            format!("step {} is approved by {scope_agency}", s.display_name),
        ));
    }
    if !who.has_role(&s.required_role) {
        return Err(Error::Refused(
            Reason::RoleRequired,
            format!("step {} needs the role {}", s.display_name, s.required_role),
        ));
    }
    Ok(())
}

/// Whether the transfer had been offered to the receiver by the end of a change from `from`
/// to `to` (APPROVED or later; a withdrawal only if it came after the offer). The receiving
/// agency hears and sees nothing before the offer: no message, no read, no list entry, no
/// timeline or watch event.
pub fn offered(from: TransferState, to: TransferState) -> bool {
    use TransferState as S;
    match to {
        S::Unspecified | S::Draft | S::AwaitingApproval => false,
        S::Withdrawn => matches!(from, S::Approved | S::Delivered),
        _ => true,
    }
}

/// Whether a change from `from` to `to` alone cannot tell if the approving agency has heard of
/// the transfer (a draft edited or withdrawn, which may or may not have been submitted before).
fn approver_in_doubt(from: TransferState, to: TransferState) -> bool {
    use TransferState as S;
    matches!(from, S::Unspecified | S::Draft) && matches!(to, S::Draft | S::Withdrawn)
}

/// The agencies that must hear of a change from `from` to `to`, each once, in this order:
/// the sender always; the approving agency (of steps scoped to the sender's parent) once the
/// transfer is or was awaiting its approval (`approver_asked`: it was submitted before, for
/// the changes [`approver_in_doubt`] cannot tell); the receiver once the transfer has been
/// [`offered`]. The router is the source of truth: each party's own records are reconciled
/// from these messages.
pub fn parties_to_tell<'a>(
    from: TransferState,
    to: TransferState,
    sender: &'a str,
    approver: Option<&'a str>,
    approver_asked: bool,
    receiver: &'a str,
) -> Vec<&'a str> {
    let approver_knows = !approver_in_doubt(from, to) || approver_asked;
    let candidates = [
        Some(sender),
        approver.filter(|_| approver_knows),
        offered(from, to).then_some(receiver),
    ];
    let mut out: Vec<&str> = Vec::with_capacity(candidates.len());
    for a in candidates.into_iter().flatten() {
        if !a.is_empty() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// A change's own messages, then one copy for every party in `parties` that has none: of the
/// kind of the change's first message, or [`MessageKind::TransferUpdated`] when the change had
/// no message (created, submitted, a step approved, delivered).
pub fn with_copies(
    mut messages: Vec<(MessageKind, String)>,
    parties: &[&str],
) -> Vec<(MessageKind, String)> {
    let kind = messages
        .first()
        .map_or(MessageKind::TransferUpdated, |(k, _)| *k);
    for p in parties {
        if !messages.iter().any(|(_, to)| to == p) {
            messages.push((kind, (*p).to_string()));
        }
    }
    messages
}

/// The side of `l` that `agency` is on: the sender (also when it approves a step scoped to
/// itself), the approving parent agency, or the receiver.
fn side_of(l: &Loaded, agency: &str) -> RecipientSide {
    if agency == l.sender() {
        RecipientSide::Sender
    } else if l.approver_agency.as_deref() == Some(agency) {
        RecipientSide::Approver
    } else if agency == l.receiver() {
        RecipientSide::Receiver
    } else {
        RecipientSide::Unspecified
    }
}

impl Transfers {
    /// The service over a migrated `store`, the route catalogue and the holiday calendar.
    pub fn new(store: Store, routes: Arc<RouteCatalog>, calendar: Arc<HolidayCalendar>) -> Self {
        let (events, _) = tokio::sync::watch::channel(0);
        let commit = GroupCommit::new(&store, GroupCommitOptions::default());
        Self {
            store,
            commit,
            routes,
            calendar,
            events,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The group committer of changes (its counters, for metrics).
    pub fn group_commit(&self) -> &GroupCommit {
        &self.commit
    }

    /// Wakes watch streams: call after committing an event.
    pub fn notify_watchers(&self) {
        self.events.send_modify(|v| *v += 1);
    }

    /// Resolves when a new event may have been committed (for watch streams).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.events.subscribe()
    }

    fn route(&self, l: &Loaded) -> Result<&Route> {
        let id = l.transfer.route.trim_start_matches("routes/");
        self.routes
            .get(id, l.transfer.route_version)
            .ok_or_else(|| Error::Corrupt(format!("pinned route {id} is not loaded")))
    }

    /// Loads one transfer inside a write transaction and, on PostgreSQL, locks its row until
    /// the transaction ends (SQLite write transactions are serialised already): concurrent
    /// changes apply one after the other; only a caller's stale `etag` is refused.
    pub async fn load_for_change(tx: &mut Tx, id: &str) -> Result<Option<Loaded>> {
        // One statement: under READ COMMITTED a `SELECT … FOR UPDATE` that waited for the
        // lock returns the row as the holder committed it.
        let lock = if fengqiao_store::Backend::of(tx) == fengqiao_store::Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM transfers WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_err)?;
        row.as_ref().map(row_to_loaded).transpose()
    }

    /// Loads one transfer on `conn` (e.g. `&mut tx`).
    pub async fn load(conn: &mut AnyConnection, id: &str) -> Result<Option<Loaded>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM transfers WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(store_err)?;
        row.as_ref().map(row_to_loaded).transpose()
    }

    /// Loads one transfer and the database clock in one statement, on `conn` (no transaction
    /// needed: one statement reads one snapshot).
    async fn load_at(conn: &mut AnyConnection, id: &str) -> Result<Option<(Loaded, i64)>> {
        let now = fengqiao_store::Backend::of(conn).now_expr();
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, {now} AS db_now FROM transfers WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
        match row {
            Some(r) => Ok(Some((
                row_to_loaded(&r)?,
                r.try_get::<i64, _>("db_now").map_err(store_err)?,
            ))),
            None => Ok(None),
        }
    }

    /// [`Idem::peek`] and [`Transfers::load_at`] in one statement: the stored answer of an
    /// earlier call with the key (a replay needs the transfer: the first call changed it), or
    /// the transfer and the database clock.
    async fn peek_and_load_at<Resp: prost::Message + Default>(
        conn: &mut AnyConnection,
        id: &str,
        idem: &Idem,
    ) -> Result<(Option<Resp>, Option<(Loaded, i64)>)> {
        let now = fengqiao_store::Backend::of(conn).now_expr();
        let [caller, method, request_id] = idem.join_binds();
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, {now} AS db_now, {} FROM transfers {} WHERE id = $1",
            fengqiao_store::idempotency::JOINED_COLUMNS,
            fengqiao_store::idempotency::join_sql(2)
        ))
        .bind(id)
        .bind(caller)
        .bind(method)
        .bind(request_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
        let Some(r) = row else {
            return Ok((None, None));
        };
        if let Some(resp) = idem.replay_in_row::<Resp>(&r)? {
            return Ok((Some(resp), None));
        }
        Ok((
            None,
            Some((
                row_to_loaded(&r)?,
                r.try_get::<i64, _>("db_now").map_err(store_err)?,
            )),
        ))
    }

    async fn denied(&self, who: &Identity, action: &str, resource: &str, detail: &str) {
        let entry = AuditEntry {
            agency: &who.agency,
            actor: &who.actor,
            action,
            resource,
            case_id: None,
            outcome: Outcome::Denied,
            detail,
        };
        if let Err(e) = audit::record_denial(&self.store, &entry).await {
            tracing::error!(error = %e, "cannot record a denial in the audit log");
        }
    }

    /// Takes the event-sequence lock first, before any row lock, on paths that change a
    /// transfer outside the group committer (the timer, receipts acknowledged over the pull
    /// stream): the committer holds the sequence lock before it touches a row, so the same
    /// order everywhere rules out deadlock.
    async fn lock_sequence(tx: &mut Tx) -> Result<()> {
        fengqiao_store::pg_xact_lock(
            tx,
            fengqiao_store::lock_class::SEQUENCE,
            &["transfer_events"],
        )
        .await?;
        Ok(())
    }

    /// Allocates the next gap-free event sequence number (under a lock on PostgreSQL; SQLite
    /// write transactions are serialised already).
    async fn next_event_seq(tx: &mut Tx) -> Result<i64> {
        Self::lock_sequence(tx).await?;
        // In a group-commit batch, the previous job left the last number it used (the batch
        // holds the lock, so nobody else can have appended since).
        let next = match fengqiao_store::group::memo_get(tx, EVENT_SEQ_MEMO) {
            Some((last, _)) => last + 1,
            None => {
                let row =
                    sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM transfer_events")
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(store_err)?;
                row.try_get::<i64, _>("next").map_err(store_err)?
            }
        };
        fengqiao_store::group::memo_set(tx, EVENT_SEQ_MEMO, (next, String::new()));
        Ok(next)
    }

    /// Writes the event, audit record and messages of a change, and the row itself.
    #[allow(clippy::too_many_arguments)]
    async fn persist(
        tx: &mut Tx,
        l: &mut Loaded,
        from_state: TransferState,
        actor: Actor,
        change: Change,
        now: i64,
        insert: bool,
    ) -> Result<TransferEvent> {
        let seq = Self::next_event_seq(tx).await?;
        l.transfer.update_time = Some(to_timestamp(now));
        let event = TransferEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            sequence: seq as u64,
            transfer: l.transfer.name.clone(),
            case_id: l.case_id().to_string(),
            event_type: change.event_type as i32,
            from_state: from_state as i32,
            to_state: l.transfer.state,
            actor: Some(actor.clone()),
            reason_code: change.reason_code.clone(),
            reason: change.reason.clone(),
            occurred_at: Some(to_timestamp(now)),
            resume_token: seq.to_string(),
        };
        l.transfer.last_event = Some(event.clone());
        // Clocks run only while the case is with the receiver: whatever ends that (feedback,
        // decline, return, escalation, withdrawal, expiry of another clock) stops every clock
        // still running, named ones included, so none fires on a finished transfer.
        if !matches!(
            l.state(),
            TransferState::Approved | TransferState::Delivered | TransferState::InProgress
        ) {
            stop_running(&mut l.acceptance, now)?;
            stop_running(&mut l.feedback, now)?;
            for c in &mut l.named {
                stop_named(c, now)?;
            }
        }
        // Sealed (fengqiao_store::seal): the snapshot holds the parties.
        let body = fengqiao_store::seal::seal(BODY_CONTEXT, &l.transfer.encode_to_vec())?;
        let (acc, fb) = (clock_json(&l.acceptance)?, clock_json(&l.feedback)?);
        let named = named_json(&l.named)?;
        let next_due = l.next_due();
        if insert {
            sqlx::query(&format!(
                "INSERT INTO transfers ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, 1, $15)"
            ))
            .bind(l.id().to_string())
            .bind(l.transfer.route.trim_start_matches("routes/").to_string())
            .bind(i64::from(l.transfer.route_version))
            .bind(l.sender().to_string())
            .bind(l.receiver().to_string())
            .bind(l.approver_agency.clone())
            .bind(l.case_id().to_string())
            .bind(i64::from(l.transfer.state))
            .bind(body)
            .bind(acc)
            .bind(fb)
            .bind(next_due)
            .bind(i64::from(l.overdue))
            .bind(now)
            .bind(named)
            .execute(&mut **tx)
            .await
            .map_err(store_err)?;
            l.version = 1;
        } else {
            let done = sqlx::query(
                "UPDATE transfers SET state = $1, body = $2, acceptance_clock = $3, \
                 feedback_clock = $4, next_due = $5, overdue = $6, update_time = $7, \
                 named_clocks = $8, version = version + 1 WHERE id = $9 AND version = $10",
            )
            .bind(i64::from(l.transfer.state))
            .bind(body)
            .bind(acc)
            .bind(fb)
            .bind(next_due)
            .bind(i64::from(l.overdue))
            .bind(now)
            .bind(named)
            .bind(l.id().to_string())
            .bind(l.version)
            .execute(&mut **tx)
            .await
            .map_err(store_err)?;
            if done.rows_affected() != 1 {
                return Err(Error::EtagMismatch(l.transfer.name.clone()));
            }
            l.version += 1;
        }
        sqlx::query(
            "INSERT INTO transfer_events (seq, event_id, transfer_id, case_id, from_agency, \
             to_agency, approver_agency, event_type, occurred_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(&event.event_id)
        .bind(l.id().to_string())
        .bind(l.case_id().to_string())
        .bind(l.sender().to_string())
        .bind(l.receiver().to_string())
        .bind(l.approver_agency.clone())
        .bind(i64::from(event.event_type))
        .bind(now)
        .bind(fengqiao_store::seal::seal(
            EVENT_BODY_CONTEXT,
            &event.encode_to_vec(),
        )?)
        .execute(&mut **tx)
        .await
        .map_err(store_err)?;

        let action = format!(
            "transfer.{}",
            TransferEventType::try_from(event.event_type)
                .map(|t| t.as_str_name().trim_start_matches("TRANSFER_EVENT_TYPE_"))
                .unwrap_or("UNKNOWN")
                .to_ascii_lowercase()
        );
        // Audit detail: states and reason code only, never free text (it may hold personal
        // information).
        let detail = format!(
            "{}→{} {}",
            lifecycle::state_name(from_state),
            lifecycle::state_name(l.state()),
            change.reason_code
        );
        audit::append(
            tx,
            &AuditEntry {
                agency: &actor.agency,
                actor: &actor.actor_id,
                action: &action,
                resource: &l.transfer.name,
                case_id: Some(l.case_id()),
                outcome: Outcome::Allowed,
                detail: detail.trim_end(),
            },
        )
        .await?;

        let view = l.view(now);
        let approver_asked = match l.approver_agency.as_deref() {
            // A transfer being created has no earlier submission to look for.
            Some(_)
                if from_state != TransferState::Unspecified
                    && approver_in_doubt(from_state, l.state()) =>
            {
                Self::was_submitted(tx, l.id()).await?
            }
            _ => false,
        };
        let parties = parties_to_tell(
            from_state,
            l.state(),
            l.sender(),
            l.approver_agency.as_deref(),
            approver_asked,
            l.receiver(),
        );
        let route = l.transfer.route.clone();
        let mut envelopes = Vec::new();
        for (kind, to) in with_copies(change.messages, &parties) {
            let side = side_of(l, &to);
            let payload = TransferMessage {
                event: Some(event.clone()),
                transfer: Some(view.clone()),
                investigation: change.investigation.clone(),
                route: (kind == MessageKind::TransferOffered)
                    .then(|| change.offered_route.clone())
                    .flatten(),
            };
            envelopes.push(Envelope {
                message_id: String::new(),
                case_id: l.case_id().to_string(),
                sequence: 0,
                transfer: l.transfer.name.clone(),
                kind: kind as i32,
                from_agency: l.sender().to_string(),
                to_agency: to,
                occurred_at: Some(to_timestamp(now)),
                payload: payload.encode_to_vec(),
                payload_type: "fengqiao.router.v1.TransferMessage".into(),
                route: route.clone(),
                route_version: l.transfer.route_version,
                recipient_side: side as i32,
            });
        }
        // Every party's copy in one counter update and one outbox insert.
        crate::delivery::enqueue_all(tx, envelopes).await?;
        Ok(event)
    }

    /// Whether the transfer was ever submitted for approval (its approver has heard of it).
    async fn was_submitted(tx: &mut Tx, id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS x FROM transfer_events WHERE transfer_id = $1 AND event_type = $2 \
             LIMIT 1",
        )
        .bind(id)
        .bind(TransferEventType::Submitted as i64)
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_err)?;
        Ok(row.is_some())
    }

    /// Creates a draft (起草移送单).
    pub async fn create(
        &self,
        who: &Identity,
        req: fengqiao_proto::router::CreateTransferRequest,
    ) -> Result<Transfer> {
        let idem = Arc::new(Idem::new(who, "CreateTransfer", &req.request_id, &req)?);
        match self.create_once(who, req, idem.clone()).await {
            Err(e) => self
                .replay_or::<fengqiao_proto::router::CreateTransferResponse>(&idem, e)
                .await?
                .transfer
                .ok_or_else(|| Error::Corrupt("empty stored response".into())),
            ok => ok,
        }
    }

    /// The id of a non-terminal transfer of `case_id` on `route_id` from `from_agency`.
    async fn open_transfer(
        conn: &mut AnyConnection,
        case_id: &str,
        route_id: &str,
        from_agency: &str,
    ) -> Result<Option<String>> {
        let terminal: Vec<String> = (0..=12)
            .filter_map(|s| TransferState::try_from(s).ok())
            .filter(|s| lifecycle::is_terminal(*s))
            .map(|s| (s as i32).to_string())
            .collect();
        let row = sqlx::query(&format!(
            "SELECT id FROM transfers WHERE case_id = $1 AND route_id = $2 AND from_agency = $3 \
             AND state NOT IN ({}) ORDER BY create_time LIMIT 1",
            terminal.join(", ")
        ))
        .bind(case_id)
        .bind(route_id)
        .bind(from_agency)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_err)?;
        row.map(|r| r.try_get::<String, _>("id").map_err(store_err))
            .transpose()
    }

    async fn create_once(
        &self,
        who: &Identity,
        req: fengqiao_proto::router::CreateTransferRequest,
        idem: Arc<Idem>,
    ) -> Result<Transfer> {
        let submit = req.submit;
        let mut t = validate::required("transfer", &req.transfer)?;
        let route_id = validate::parse_name("transfer.route", "routes", &t.route)
            .map(str::to_string)
            .map_err(Error::from)?;
        let route = self.routes.current(&route_id).ok_or_else(|| {
            Error::Invalid(vec![FieldViolation::new("transfer.route", "no such route")])
        })?;
        let to_name = t
            .to_agency
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let to_id = validate::parse_name("transfer.to_agency.name", "agencies", &to_name)
            .map(str::to_string)
            .map_err(Error::from)?;
        let mut case = t.case_snapshot.take().unwrap_or_default();
        if t.case_snapshot.is_none() && case.summary.is_empty() && case.region_code.is_empty() {
            // Fall through to field-level errors below.
        }
        let mut v = validate_case(&case);
        if v.is_empty() {
            v = personal::intake_case(&mut case);
        }
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        fengqiao_kit::pii::redact_in_place(&mut t.note);
        // Only a case the caller names can already have an open transfer.
        let given_case = !case.case_id.is_empty();
        if !given_case {
            case.case_id = uuid::Uuid::new_v4().to_string();
        }

        // Checks on plain reads; the write in the group committer.
        let mut conn = self.store.pool().acquire().await.map_err(store_err)?;
        if let Some(r) = idem
            .peek::<fengqiao_proto::router::CreateTransferResponse>(&mut conn)
            .await?
        {
            return r
                .transfer
                .ok_or_else(|| Error::Corrupt("empty stored response".into()));
        }
        let from_id = who.agency.trim_start_matches("agencies/").to_string();
        let from = crate::agencies::Agencies::get_in(&mut conn, &from_id).await?;
        let Some(from) = from.filter(|a| a.active) else {
            drop(conn);
            self.denied(who, "transfer.create", &t.route, "SENDER_NOT_REGISTERED")
                .await;
            return Err(Error::Refused(
                Reason::SenderNotRegistered,
                "the calling agency is not an active registered agency".into(),
            ));
        };
        if from.kind != route.from_kind {
            drop(conn);
            self.denied(who, "transfer.create", &t.route, "ROUTE_FROM_KIND")
                .await;
            return Err(Error::Refused(
                Reason::RouteNotForSender,
                "this route does not start at the calling agency's kind".into(),
            ));
        }
        let to = crate::agencies::Agencies::get_in(&mut conn, &to_id).await?;
        let Some(to) = to.filter(|a| a.active && a.kind == route.to_kind) else {
            return Err(Error::Invalid(vec![FieldViolation::new(
                "transfer.to_agency.name",
                "must be an active agency of the route's receiving kind",
            )]));
        };
        let needs_parent = route
            .approval_steps
            .iter()
            .any(|s| s.approver_scope == ApproverScope::ParentAgency as i32);
        let approver_agency = if needs_parent {
            match &from.parent {
                Some(p) => Some(p.clone()),
                None => {
                    return Err(Error::Invalid(vec![FieldViolation::new(
                        "transfer.route",
                        "the route needs approval by the sender's parent agency, and the sender has none",
                    )]));
                }
            }
        } else {
            None
        };

        // At most one open transfer per (case, route, sender): a retry with a new request_id
        // after a cut-off call adopts the existing one instead of making a second.
        if given_case
            && let Some(open) =
                Self::open_transfer(&mut conn, &case.case_id, &route_id, &from.name).await?
        {
            return Err(crate::error::open_transfer_exists(format!(
                "transfers/{open}"
            )));
        }
        let now = fengqiao_store::db_now_micros(&mut conn).await?;
        drop(conn);
        let redacted = minimise(&mut case, &route.allowed_personal_info);
        let id = uuid::Uuid::now_v7().to_string();
        t.name = format!("transfers/{id}");
        t.route = format!("routes/{route_id}");
        t.route_version = route.version;
        t.from_agency = Some(AgencyRef {
            name: from.name.clone(),
            kind: from.kind,
            display_name: from.display_name.clone(),
        });
        t.to_agency = Some(AgencyRef {
            name: to.name.clone(),
            kind: to.kind,
            display_name: to.display_name.clone(),
        });
        t.case_snapshot = Some(case);
        t.state = TransferState::Draft as i32;
        t.current_step = 0;
        t.approvals.clear();
        t.decline = None;
        t.feedback = None;
        t.handback = None;
        t.investigations.clear();
        t.clocks.clear();
        t.redacted_fields = redacted;
        t.creator = Some(who.as_actor());
        t.create_time = Some(to_timestamp(now));
        let mut l = Loaded {
            transfer: t,
            acceptance: None,
            feedback: None,
            named: Vec::new(),
            approver_agency,
            version: 0,
            overdue: false,
        };
        let change = Change {
            event_type: TransferEventType::Created,
            ..Default::default()
        };
        let actor = who.as_actor();
        let route = route.clone();
        let calendar = self.calendar.clone();
        let (case_id, sender) = (l.case_id().to_string(), from.name.clone());
        let view = self
            .commit
            .run(move |tx| {
                Box::pin(async move {
                    // The event-sequence lock first, which every change (of every replica)
                    // takes before it stores its answer: under it a concurrent call with the
                    // same key has committed or not begun, so the key is looked up without a
                    // lock of its own, and two creates for one case cannot both pass.
                    Self::lock_sequence(tx).await?;
                    if let Some(r) = idem
                        .peek::<fengqiao_proto::router::CreateTransferResponse>(tx)
                        .await?
                    {
                        return r
                            .transfer
                            .ok_or_else(|| Error::Corrupt("empty stored response".into()));
                    }
                    if given_case
                        && let Some(open) =
                            Self::open_transfer(tx, &case_id, &route_id, &sender).await?
                    {
                        return Err(crate::error::open_transfer_exists(format!(
                            "transfers/{open}"
                        )));
                    }
                    Self::persist(
                        tx,
                        &mut l,
                        TransferState::Unspecified,
                        actor.clone(),
                        change,
                        now,
                        true,
                    )
                    .await?;
                    if submit {
                        // Draft and submission in one change, under one request_id.
                        let action = Action::Submit {
                            no_steps: route.approval_steps.is_empty(),
                        };
                        let to = lifecycle::next(TransferState::Draft, action)
                            .ok_or_else(|| Error::Corrupt("a draft cannot be submitted".into()))?;
                        let submitted = submission(&mut l, &route, &calendar, now)?;
                        l.transfer.state = to as i32;
                        Self::persist(
                            tx,
                            &mut l,
                            TransferState::Draft,
                            actor,
                            submitted,
                            now,
                            false,
                        )
                        .await?;
                    }
                    let view = l.view(now);
                    idem.save(
                        tx,
                        &fengqiao_proto::router::CreateTransferResponse {
                            transfer: Some(view.clone()),
                        },
                    )
                    .await?;
                    Ok::<_, Error>(view)
                })
            })
            .await?;
        self.events.send_modify(|v| *v += 1);
        Ok(view)
    }

    /// Reads one transfer visible to the caller.
    pub async fn get(&self, who: &Identity, name: &str) -> Result<Transfer> {
        let id = transfer_id("name", name)?;
        // One statement, no transaction: the row and the database clock it is shown at (the
        // most frequent call of all, the status answer agencies poll for).
        let mut conn = self.store.pool().acquire().await.map_err(store_err)?;
        let found = Self::load_at(&mut conn, &id).await?;
        drop(conn);
        match found {
            Some((l, now)) if l.visible_to(&who.agency) => Ok(l.view(now)),
            _ => {
                self.denied(who, "transfer.get", name, "NOT_VISIBLE").await;
                Err(Error::NotFound(name.to_string()))
            }
        }
    }

    /// Reads one transfer visible to the caller unmasked, for a caller that asked for the full
    /// view (`x-fengqiao-personal-info: full`): the transfer's route must allow one of its
    /// roles ([`personal::full_view_allowed`]), else PERMISSION_DENIED
    /// `PERSONAL_INFO_VIEW_DENIED` (audited). The read and its `pii.read` audit record (the
    /// fields read, never the values) are one transaction, committed before the answer.
    pub async fn get_full(&self, who: &Identity, name: &str) -> Result<Transfer> {
        let id = transfer_id("name", name)?;
        let mut tx = self.store.write().await?;
        let found = Self::load_at(&mut tx, &id)
            .await?
            .filter(|(l, _)| l.visible_to(&who.agency));
        let Some((l, now)) = found else {
            drop(tx);
            self.denied(who, "transfer.get", name, "NOT_VISIBLE").await;
            return Err(Error::NotFound(name.to_string()));
        };
        let route = self.route(&l)?;
        if !personal::full_view_allowed(who, route) {
            let (route_id, version) = (route.name.clone(), route.version);
            drop(tx);
            let route_id = route_id.trim_start_matches("routes/").to_string();
            return Err(self
                .full_view_denied(who, &l.transfer.name, &route_id, version)
                .await);
        }
        let t = l.view(now);
        self.audit_full_read(&mut tx, who, "GetTransfer", &t)
            .await?;
        tx.commit().await.map_err(store_err)?;
        Ok(t)
    }

    /// Records a refused full view (`denied`, `PERSONAL_INFO_VIEW_DENIED`) and returns the
    /// refusal naming the roles that would be allowed.
    async fn full_view_denied(
        &self,
        who: &Identity,
        resource: &str,
        route_id: &str,
        version: u32,
    ) -> Error {
        let reason = Reason::PersonalInfoViewDenied;
        self.denied(who, personal::PII_READ, resource, reason.as_str())
            .await;
        let roles = self
            .routes
            .get(route_id, version)
            .map(personal::full_view_roles)
            .unwrap_or_default();
        Error::Refused(
            reason,
            format!(
                "unmasked personal information on route {route_id} v{version} needs one of \
                 the roles: {roles}"
            ),
        )
    }

    /// Appends the `pii.read` audit record of a full read of `t` in `tx`: who, which transfer
    /// and case, which fields ([`personal::fields_of`]) — never the values.
    async fn audit_full_read(
        &self,
        tx: &mut Tx,
        who: &Identity,
        method: &str,
        t: &Transfer,
    ) -> Result<()> {
        let case_id = t.case_snapshot.as_ref().map(|c| c.case_id.as_str());
        audit::append_with_personal_info(
            tx,
            &AuditEntry {
                agency: &who.agency,
                actor: &who.actor,
                action: personal::PII_READ,
                resource: &t.name,
                case_id,
                outcome: Outcome::Allowed,
                detail: method,
            },
            &personal::fields_of(t),
        )
        .await?;
        Ok(())
    }

    /// Runs one change: see the module docs.
    ///
    /// The checks run on plain reads (no transaction), concurrently with other requests; the write
    /// (row guarded by the version read, event, audit record, envelopes, idempotent answer)
    /// runs in the group committer. If the transfer changed in between and the caller gave no
    /// `etag`, the change is worked out again on the new version (a few times at most), which
    /// is what the row lock used to give; with an `etag` the caller gets ABORTED as before.
    #[allow(clippy::too_many_arguments)]
    async fn mutate<Req, Resp, F>(
        &self,
        who: &Identity,
        method: &'static str,
        request_id: &str,
        req: &Req,
        name: &str,
        etag_in: &str,
        action_of: impl Fn(&Loaded, &Route) -> Action,
        apply: F,
        respond: fn(Transfer, Option<Investigation>) -> Resp,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default + Clone + fengqiao_kit::pii::Personal + 'static,
        F: Fn(&mut Loaded, &Route, &HolidayCalendar, i64) -> Result<Change>,
    {
        let idem = Arc::new(Idem::new(who, method, request_id, req)?);
        let once = self
            .mutate_once(who, method, &idem, name, etag_in, action_of, apply, respond)
            .await;
        let mut resp = match once {
            Err(e) => self.replay_or(&idem, e).await?,
            Ok(r) => r,
        };
        // Every answer of a change is masked, a replay too (the stored answer stays whole,
        // sealed); the full view is offered on reads only.
        fengqiao_kit::pii::mask(&mut resp);
        Ok(resp)
    }

    /// [`Self::mutate`] once its idempotency key is made.
    #[allow(clippy::too_many_arguments)]
    async fn mutate_once<Resp, F>(
        &self,
        who: &Identity,
        method: &'static str,
        idem: &Arc<Idem>,
        name: &str,
        etag_in: &str,
        action_of: impl Fn(&Loaded, &Route) -> Action,
        apply: F,
        respond: fn(Transfer, Option<Investigation>) -> Resp,
    ) -> Result<Resp>
    where
        Resp: prost::Message + Default + Clone + 'static,
        F: Fn(&mut Loaded, &Route, &HolidayCalendar, i64) -> Result<Change>,
    {
        let id = transfer_id(name_field(method), name)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Reads outside any transaction (each statement is consistent by itself; the write
            // checks the version and the idempotency key again under the locks).
            let mut conn = self.store.pool().acquire().await.map_err(store_err)?;
            let (replayed, found) = Self::peek_and_load_at::<Resp>(&mut conn, &id, idem).await?;
            if let Some(r) = replayed {
                return Ok(r);
            }
            let Some((mut l, now)) = found.filter(|(l, _)| l.visible_to(&who.agency)) else {
                drop(conn);
                self.denied(who, method, name, "NOT_VISIBLE").await;
                return Err(Error::NotFound(name.to_string()));
            };
            let route = self.route(&l)?.clone();
            let action = action_of(&l, &route);
            let party_ok = match action.party() {
                Party::Sender => who.agency == l.sender(),
                Party::Receiver => who.agency == l.receiver(),
                // Approvers are checked against the step below.
                Party::Approver => true,
                Party::System => false,
            };
            if !party_ok {
                drop(conn);
                self.denied(who, method, name, "WRONG_PARTY").await;
                return Err(Error::Refused(
                    Reason::WrongParty,
                    format!(
                        "only the {:?} agency may {} this transfer",
                        action.party(),
                        action.verb()
                    )
                    .to_lowercase(),
                ));
            }
            if !etag_in.is_empty() && !fengqiao_kit::etag::matches(etag_in, l.version) {
                return Err(Error::EtagMismatch(l.transfer.name.clone()));
            }
            let from_state = l.state();
            let Some(to_state) = lifecycle::next(from_state, action) else {
                return Err(Error::WrongState {
                    resource: l.transfer.name.clone(),
                    state: from_state.as_str_name().into(),
                    action: action.verb(),
                });
            };
            if action.party() == Party::Approver {
                // A request for another step than the one awaiting approval is the wrong state
                // (FAILED_PRECONDITION, as the contract says), whoever sends it: the step check
                // inside `apply` goes first, on a copy (it is pure).
                if let Err(e @ Error::WrongState { .. }) =
                    apply(&mut l.clone(), &route, &self.calendar, now)
                {
                    return Err(e);
                }
                let step = l.transfer.current_step as usize;
                if let Err(e) = check_approver(who, &l, &route, step) {
                    drop(conn);
                    self.denied(who, method, name, "APPROVER_CHECK").await;
                    return Err(e);
                }
            }
            drop(conn);
            // 送达 before 受理: an acceptance (or decline) can overtake the delivery receipt.
            // The receiver evidently has the offer, so the DELIVERED event (and the start of
            // the acceptance clock) is recorded first, in the same change; the late receipt
            // is then a no-op.
            let mut pre = None;
            let mut change_from = from_state;
            if from_state == TransferState::Approved
                && matches!(action, Action::Accept | Action::Decline)
            {
                let mut d = l.clone();
                let dc = delivered(&mut d, &route, &self.calendar, now)?;
                l = d.clone();
                pre = Some((d, dc));
                change_from = TransferState::Delivered;
            }
            let change = apply(&mut l, &route, &self.calendar, now)?;
            l.transfer.state = to_state as i32;
            let investigation = change.investigation.clone();
            let actor = who.as_actor();
            let idem_job = idem.clone();
            let written = self
                .commit
                .run(move |tx| {
                    Box::pin(async move {
                        // A concurrent call with the same key may have committed meanwhile:
                        // looked up under the event-sequence lock, which every change takes
                        // before it stores its answer (so no lock of the key's own).
                        Self::lock_sequence(tx).await?;
                        if let Some(r) = idem_job.peek::<Resp>(tx).await? {
                            return Ok(r);
                        }
                        if let Some((mut d, dc)) = pre {
                            Self::persist(tx, &mut d, from_state, system_actor(), dc, now, false)
                                .await?;
                            l.version = d.version;
                        }
                        Self::persist(tx, &mut l, change_from, actor, change, now, false).await?;
                        let resp = respond(l.view(now), investigation);
                        idem_job.save(tx, &resp).await?;
                        Ok(resp)
                    })
                })
                .await;
            match written {
                // Changed by someone else since it was read: work it out again.
                Err(Error::EtagMismatch(_)) if etag_in.is_empty() && attempt < MAX_ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e),
                Ok(resp) => {
                    self.events.send_modify(|v| *v += 1);
                    return Ok(resp);
                }
            }
        }
    }

    /// A refusal after the idempotency peek may only mean that a concurrent call with the same
    /// key committed in between (and this one then saw the new state): the key is looked at
    /// again, and its stored answer, if any, is the answer. Every replay gets the first answer.
    async fn replay_or<Resp>(&self, idem: &Idem, e: Error) -> Result<Resp>
    where
        Resp: prost::Message + Default + Clone + 'static,
    {
        if matches!(
            e,
            Error::Store(fengqiao_store::Error::IdempotencyConflict) | Error::Invalid(_)
        ) {
            return Err(e);
        }
        let mut conn = self.store.pool().acquire().await.map_err(store_err)?;
        match idem.peek::<Resp>(&mut conn).await? {
            Some(r) => Ok(r),
            None => Err(e),
        }
    }

    /// The router marks an offered transfer as delivered (APPROVED → DELIVERED) once its
    /// offer reached the receiver (`to_agency`; the copies the other parties get do not
    /// count), inside the transaction that records the delivery. Idempotent: any other state,
    /// or another recipient, is left alone.
    pub async fn note_delivered_in(
        &self,
        tx: &mut Tx,
        transfer: &str,
        to_agency: &str,
    ) -> Result<()> {
        let Ok(id) = transfer_id("transfer", transfer) else {
            return Ok(());
        };
        Self::lock_sequence(tx).await?;
        let Some(mut l) = Self::load_for_change(tx, &id).await? else {
            return Ok(());
        };
        if l.receiver() != to_agency {
            return Ok(());
        }
        let from_state = l.state();
        // A late receipt (accepted or declined meanwhile) is a no-op.
        if lifecycle::next(from_state, Action::Delivered).is_none() {
            return Ok(());
        }
        let now = fengqiao_store::db_now_micros(tx).await?;
        let route = self.route(&l)?.clone();
        let change = delivered(&mut l, &route, &self.calendar, now)?;
        Self::persist(tx, &mut l, from_state, system_actor(), change, now, false).await?;
        // Watchers are woken by the caller once this commits (OnDelivered::committed).
        Ok(())
    }

    /// Fires the expiry of every clock due at the database's current time, each exactly once
    /// (the change is guarded by the row version, and an expired clock is marked as such in the
    /// same transaction). Returns how many expiries fired.
    pub async fn fire_due(&self, limit: u32) -> Result<usize> {
        let now = self.store.now_micros_pool().await?;
        let ids: Vec<String> = sqlx::query(&format!(
            "SELECT id FROM transfers WHERE next_due IS NOT NULL AND next_due <= $1 \
             ORDER BY next_due LIMIT {limit}"
        ))
        .bind(now)
        .fetch_all(self.store.pool())
        .await
        .map_err(store_err)?
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<std::result::Result<_, _>>()
        .map_err(store_err)?;
        let mut fired = 0;
        for id in ids {
            match self.expire_one(&id).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                // Another worker got there first: fine, it fired once.
                Err(Error::EtagMismatch(_)) => {}
                Err(e) if matches!(&e, Error::Store(s) if s.is_retryable()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(fired)
    }

    async fn expire_one(&self, id: &str) -> Result<bool> {
        let mut tx = self.store.write().await?;
        Self::lock_sequence(&mut tx).await?;
        let Some(mut l) = Self::load_for_change(&mut tx, id).await? else {
            return Ok(false);
        };
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let from_state = l.state();
        let acceptance_due = l.acceptance.as_ref().is_some_and(|c| c.is_due(now));
        let feedback_due = l.feedback.as_ref().is_some_and(|c| c.is_due(now));
        // The acceptance clock runs until the receiver answers, the feedback clock until it
        // reports; each one's expiry action is carried out (route validation refuses what
        // could not be).
        // Named clocks run while the case is with the receiver (they start on delivery or
        // acceptance) and are carried out like the feedback clock.
        let named_due = l.named.iter().position(|c| c.is_due(now)).filter(|_| {
            matches!(
                from_state,
                TransferState::Approved | TransferState::Delivered | TransferState::InProgress
            )
        });
        let due = if acceptance_due
            && matches!(
                from_state,
                TransferState::Approved | TransferState::Delivered
            ) {
            Some((DueClock::Acceptance, l.acceptance.as_mut()))
        } else if feedback_due && from_state == TransferState::InProgress {
            Some((DueClock::Feedback, l.feedback.as_mut()))
        } else if let Some(i) = named_due {
            Some((DueClock::Named(i), l.named.get_mut(i)))
        } else {
            None
        };
        let Some((which, Some(c))) = due else {
            // Not due any more (paused, stopped or changed meanwhile): just fix the index.
            let next_due = l.next_due();
            sqlx::query("UPDATE transfers SET next_due = $1 WHERE id = $2 AND version = $3")
                .bind(next_due)
                .bind(id)
                .bind(l.version)
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
            tx.commit().await.map_err(store_err)?;
            return Ok(false);
        };
        let expiry = c.mark_expired(now).map_err(clock_error)?;
        let clock_label = match which {
            DueClock::Acceptance => "acceptance".to_string(),
            DueClock::Feedback => "feedback".to_string(),
            DueClock::Named(_) => c.name.clone(),
        };
        l.overdue = true;
        let route = self.route(&l)?;
        let reason_code = which.reason_code(&l);
        let mut change = Change {
            reason_code: reason_code.clone(),
            ..Default::default()
        };
        let action = match expiry {
            ExpiryAction::ReturnToSender => Some(Action::ExpireReturn),
            ExpiryAction::Escalate => Some(Action::ExpireEscalate),
            ExpiryAction::NotifyOnly => None,
        };
        match action.and_then(|a| lifecycle::next(from_state, a).map(|s| (a, s))) {
            Some((a, s)) => {
                l.transfer.state = s as i32;
                let escalation = a == Action::ExpireEscalate;
                let (event_type, kind) = if escalation {
                    (TransferEventType::Escalated, MessageKind::TransferEscalated)
                } else {
                    (TransferEventType::Expired, MessageKind::TransferExpired)
                };
                change.event_type = event_type;
                // The case is back with the sender: say why, from the pinned route
                // (特邀调解规定 Art 21: a failed delegation's materials go back to the court).
                l.transfer.handback = Some(fengqiao_proto::router::Handback {
                    escalation,
                    reason_code,
                    reason_description: expiry_description(route, &l, which, escalation),
                    reason: String::new(),
                    documents: Vec::new(),
                    actor: Some(system_actor()),
                    handback_time: Some(to_timestamp(now)),
                });
                change.messages = vec![
                    (kind, l.sender().to_string()),
                    (kind, l.receiver().to_string()),
                ];
            }
            None => {
                // NOTIFY_ONLY: the case stays where it is; it is marked overdue, both sides
                // are told, and it shows in overdue lists.
                change.event_type = TransferEventType::DeadlineMissed;
                change.messages = vec![
                    (MessageKind::DeadlineMissed, l.sender().to_string()),
                    (MessageKind::DeadlineMissed, l.receiver().to_string()),
                ];
            }
        }
        Self::persist(
            &mut tx,
            &mut l,
            from_state,
            system_actor(),
            change,
            now,
            false,
        )
        .await?;
        tx.commit().await.map_err(store_err)?;
        self.events.send_modify(|v| *v += 1);
        crate::metrics::record_expiry(&l.transfer.route, &clock_label);
        Ok(true)
    }

    /// Runs the timer until shutdown: every `every`, fire what is due.
    pub async fn run_timer(
        self,
        shutdown: fengqiao_kit::server::Shutdown,
        every: std::time::Duration,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.fire_due(100).await {
                tracing::warn!(error = %e, "timer pass failed; will retry");
            }
        }
    }
}

/// The clock whose expiry the timer carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DueClock {
    /// 受理期限: runs from the offer until the receiver accepts or declines.
    Acceptance,
    /// 反馈期限: runs from acceptance until the receiver reports.
    Feedback,
    /// A named clock of the route (`Route.clocks`), by its index in `Loaded::named`: runs
    /// from its start event until the receiver completes it or the transfer stops.
    Named(usize),
}

impl DueClock {
    /// The event's (and hand-back's) reason code, e.g. `CLOCK_CONTACT_PARTIES_MISSED` for a
    /// named clock.
    fn reason_code(self, l: &Loaded) -> String {
        match self {
            DueClock::Acceptance => "ACCEPTANCE_DEADLINE_MISSED".into(),
            DueClock::Feedback => "FEEDBACK_DEADLINE_MISSED".into(),
            DueClock::Named(i) => format!(
                "CLOCK_{}_MISSED",
                l.named
                    .get(i)
                    .map_or("UNKNOWN", |c| c.name.as_str())
                    .to_ascii_uppercase()
            ),
        }
    }
}

/// The hand-back description of an expiry, from the pinned route: which clock of which route
/// ran out and what its expiry action did (a named clock by its route description).
fn expiry_description(route: &Route, l: &Loaded, which: DueClock, escalation: bool) -> String {
    let named;
    let clock = match which {
        DueClock::Acceptance => "受理期限",
        DueClock::Feedback => "反馈（办理）期限",
        DueClock::Named(i) => {
            let name = l.named.get(i).map_or("", |c| c.name.as_str());
            named = match route.clocks.iter().find(|r| r.name == name) {
                Some(r) if !r.description.is_empty() => {
                    format!("期限“{name}”（{}）", r.description)
                }
                _ => format!("期限“{name}”"),
            };
            named.as_str()
        }
    };
    let action = if escalation {
        "依路径规定上报移送单位"
    } else {
        "依路径规定退回移送单位"
    };
    format!("{}：{clock}届满，{action}", route.display_name)
}

/// Starts a clock from a route's rule.
fn start_clock(
    name: &str,
    rule: Option<&fengqiao_proto::common::ClockRule>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Option<Clock>> {
    match rule {
        Some(r) if r.length > 0 => Clock::start(name, r, now, cal)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("route clock {name}: {e}"))),
        _ => Ok(None),
    }
}

/// Offers an approved transfer: tells the receiver. The acceptance clock starts on delivery
/// ([`delivered`]), not here.
fn offer(
    l: &mut Loaded,
    route: &Route,
    _cal: &HolidayCalendar,
    _now: i64,
    change: &mut Change,
) -> Result<()> {
    change.offered_route = Some(route.clone());
    change
        .messages
        .push((MessageKind::TransferOffered, l.receiver().to_string()));
    // The sender's system learns that its transfer is on its way.
    change
        .messages
        .push((MessageKind::TransferOffered, l.sender().to_string()));
    Ok(())
}

/// Submits a draft (提交审批): from step 0, the approver of the first step is told; a route
/// without steps approves at once and offers. The caller sets the state.
fn submission(l: &mut Loaded, route: &Route, cal: &HolidayCalendar, now: i64) -> Result<Change> {
    let mut change = Change {
        event_type: TransferEventType::Submitted,
        ..Default::default()
    };
    l.transfer.current_step = 0;
    l.transfer.approvals.clear();
    if route.approval_steps.is_empty() {
        change.event_type = TransferEventType::Approved;
        offer(l, route, cal, now, &mut change)?;
    } else {
        approval_required(l, route, 0, &mut change);
    }
    Ok(change)
}

/// The offer reached the receiver (送达: push receipt or pull acknowledgement): DELIVERED, and
/// the acceptance clock starts now. It starts on delivery, not on approval, so a pull-mode
/// agency's time does not run before it has anything; an offer that cannot be delivered
/// shows as a delivery incident instead.
fn delivered(l: &mut Loaded, route: &Route, cal: &HolidayCalendar, now: i64) -> Result<Change> {
    l.transfer.state = TransferState::Delivered as i32;
    l.acceptance = start_clock("acceptance", route.acceptance_clock.as_ref(), now, cal)?;
    start_named(l, route, ClockStart::Offered, now, cal)?;
    Ok(Change {
        event_type: TransferEventType::Delivered,
        ..Default::default()
    })
}

/// Refuses accepting or declining once the acceptance clock is due at `now` (the database's
/// time of the change): the deadline is the rule, not only the timer. The expiry itself is
/// left to the timer, which fires it within its interval (`timer_every`).
fn check_acceptance_deadline(l: &Loaded, now: i64) -> Result<()> {
    match &l.acceptance {
        Some(c) if c.is_due(now) => Err(Error::Refused(
            Reason::AcceptanceDeadlinePassed,
            format!("the acceptance deadline of {} has passed", l.transfer.name),
        )),
        _ => Ok(()),
    }
}

/// Tells the agency that approves `step` that its approval is awaited.
fn approval_required(l: &Loaded, route: &Route, step: usize, change: &mut Change) {
    let Some(s) = route.approval_steps.get(step) else {
        return;
    };
    let agency = if s.approver_scope == ApproverScope::ParentAgency as i32 {
        l.approver_agency.clone()
    } else {
        Some(l.sender().to_string())
    };
    if let Some(a) = agency {
        change.messages.push((MessageKind::ApprovalRequired, a));
    }
}

/// Starts every named clock of `route` that starts on `event` and has not started yet (a
/// clock starts once, at the database's `now` of its event).
fn start_named(
    l: &mut Loaded,
    route: &Route,
    event: ClockStart,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<()> {
    for r in route.clocks.iter().filter(|r| r.starts_on == event as i32) {
        if l.named.iter().any(|c| c.name == r.name) {
            continue;
        }
        if let Some(c) = start_clock(&r.name, r.rule.as_ref(), now, cal)? {
            l.named.push(c);
        }
    }
    Ok(())
}

/// Stops a named clock that is still running (a stopped or expired clock stays as it is).
fn stop_named(c: &mut Clock, now: i64) -> Result<()> {
    if c.stopped_at.is_none() && !c.expired {
        c.stop(now).map_err(clock_error)?;
    }
    Ok(())
}

/// Stops a clock that is still running (a stopped or expired clock stays as it is).
fn stop_running(c: &mut Option<Clock>, now: i64) -> Result<()> {
    if let Some(c) = c.as_mut()
        && c.stopped_at.is_none()
        && !c.expired
    {
        c.stop(now).map_err(clock_error)?;
    }
    Ok(())
}

fn clock_error(e: crate::clock::ClockError) -> Error {
    Error::from(e)
}

fn pick_clock(l: &mut Loaded, which: i32) -> Result<&mut Clock> {
    match TransferClock::try_from(which) {
        Ok(TransferClock::Feedback) => l
            .feedback
            .as_mut()
            .ok_or_else(|| crate::error::clock_not_running("the feedback clock is not running")),
        Ok(TransferClock::Acceptance) => Err(crate::error::clock_not_running(
            "the acceptance clock cannot be paused or extended once the case is accepted",
        )),
        _ => Err(FieldViolation::new("clock", "must be ACCEPTANCE or FEEDBACK").into()),
    }
}

pub mod personal;
mod rpc;

#[cfg(test)]
mod tests {
    use super::*;
    use TransferState as S;

    const SENDER: &str = "agencies/station";
    const APPROVER: &str = "agencies/command";
    const RECEIVER: &str = "agencies/room";

    fn tell(from: S, to: S, asked: bool) -> Vec<&'static str> {
        parties_to_tell(from, to, SENDER, Some(APPROVER), asked, RECEIVER)
    }

    #[test]
    fn the_receiver_hears_nothing_before_the_offer() {
        assert_eq!(tell(S::Unspecified, S::Draft, false), [SENDER]);
        assert_eq!(tell(S::Draft, S::Draft, false), [SENDER]);
        assert_eq!(
            tell(S::Draft, S::AwaitingApproval, false),
            [SENDER, APPROVER]
        );
        assert_eq!(
            tell(S::AwaitingApproval, S::AwaitingApproval, false),
            [SENDER, APPROVER]
        );
        assert_eq!(
            tell(S::AwaitingApproval, S::Draft, false),
            [SENDER, APPROVER]
        );
        assert_eq!(
            tell(S::AwaitingApproval, S::Withdrawn, false),
            [SENDER, APPROVER]
        );
        // A draft sent back, then edited or withdrawn: the approver had it before.
        assert_eq!(tell(S::Draft, S::Draft, true), [SENDER, APPROVER]);
        assert_eq!(tell(S::Draft, S::Withdrawn, true), [SENDER, APPROVER]);
        assert_eq!(tell(S::Draft, S::Withdrawn, false), [SENDER]);
    }

    #[test]
    fn every_party_hears_of_everything_after_the_offer() {
        let all = [SENDER, APPROVER, RECEIVER];
        for (from, to) in [
            (S::AwaitingApproval, S::Approved),
            (S::Approved, S::Delivered),
            (S::Approved, S::InProgress),
            (S::Delivered, S::Declined),
            (S::Delivered, S::Expired),
            (S::Approved, S::Escalated),
            (S::Approved, S::Withdrawn),
            (S::Delivered, S::Withdrawn),
            (S::InProgress, S::InProgress),
            (S::InProgress, S::FeedbackSubmitted),
            (S::InProgress, S::Returned),
            (S::FeedbackSubmitted, S::Closed),
        ] {
            assert_eq!(tell(from, to, false), all, "{from:?} → {to:?}");
        }
        // A route without a parent-scoped step has no separate approver.
        assert_eq!(
            parties_to_tell(S::Approved, S::InProgress, SENDER, None, false, RECEIVER),
            [SENDER, RECEIVER]
        );
        // One agency in two parts is told once.
        assert_eq!(
            parties_to_tell(
                S::Approved,
                S::InProgress,
                SENDER,
                Some(SENDER),
                false,
                RECEIVER
            ),
            [SENDER, RECEIVER]
        );
    }

    #[test]
    fn copies_take_the_kind_of_the_event_and_skip_who_has_one() {
        let own = vec![(MessageKind::TransferAccepted, SENDER.to_string())];
        assert_eq!(
            with_copies(own, &[SENDER, APPROVER, RECEIVER]),
            [
                (MessageKind::TransferAccepted, SENDER.to_string()),
                (MessageKind::TransferAccepted, APPROVER.to_string()),
                (MessageKind::TransferAccepted, RECEIVER.to_string()),
            ]
        );
        let offer = vec![
            (MessageKind::TransferOffered, RECEIVER.to_string()),
            (MessageKind::TransferOffered, SENDER.to_string()),
        ];
        assert_eq!(with_copies(offer, &[SENDER, APPROVER, RECEIVER]).len(), 3);
        assert_eq!(
            with_copies(Vec::new(), &[SENDER]),
            [(MessageKind::TransferUpdated, SENDER.to_string())]
        );
    }
}
