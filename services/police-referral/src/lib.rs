//! Police referral (警调对接): 110 referrals screened and handed to people's mediation through
//! the router, with the result fed back to the command room.
//!
//! The contract is `proto/fengqiao/policereferral/v1`. A referral is taken in from the 110
//! dispatch system (or a station), validated, screened by the rules in [`screening`], and — when
//! it is a civil dispute — handed to the station's mediation room with a transfer on the router
//! (移送单). The router's messages keep the referral in step with its transfer; supplementary
//! investigation and the acknowledgement of feedback go back through the router for the caller.
//!
//! **One truth** (issue #9): the router is the source of truth of the transfer; the referral
//! is reconciled from the router's messages. A call that changes the transfer calls the router
//! first (with a request id derived only from the method, the referral and the client's
//! `request_id`, never from a re-read etag or state) and commits the referral after, recording
//! the event sequence of the router's answer. If that commit is lost (a cut-off call, a crash),
//! the router's message for the same event finds the referral by its case id
//! (`CaseSnapshot.case_id`), adopts the transfer if the referral did not link it yet, and
//! brings the referral in step ([`reconcile`]); a retry with the same `request_id` then
//! completes and returns the first answer. A message whose event sequence is not newer than
//! what the referral reflects changes nothing (it is still recorded in the inbox).
//! `CreateReferral` takes `officer` from the caller's token and assigns each party a UUID.

pub mod error;
pub mod lifecycle;
/// The service's entry in the registry the binary starts services from.
pub mod module;
pub mod reconcile;
pub mod screening;
pub mod validate;

pub use module::MODULE;

use fengqiao_kit::inbox::forward_auth;
use fengqiao_kit::pii::{self, Personal};
use fengqiao_kit::records::{Filtered, Schema, keyset_page, last_seq};
use fengqiao_kit::server::ServerBuilder;
use fengqiao_kit::{FieldViolation, Identity, Reason};
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::inbox::{DeliverResponse, Envelope};
use fengqiao_proto::policereferral::police_referral_service_server::{
    PoliceReferralService, PoliceReferralServiceServer,
};
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    CaseSnapshot, GetCaseTimelineRequest, Investigation, InvestigationState, Transfer,
    TransferEvent, TransferEventType, TransferMessage, TransferState,
};
use fengqiao_store::bind::{Bind, bind_all};
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx, seal};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use fengqiao_kit::idem::Idem;

/// Name under which this service's migrations are recorded.
pub const SERVICE: &str = "police_referral";

/// This service's own migrations, applied after the shared ones.
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [
        (1, "referrals", "migrations/0001_referrals.sql"),
        (2, "event_seq", "migrations/0002_event_seq.sql"),
    ]
);

/// The route used when `DraftTransfer.route` is empty.
pub const DEFAULT_ROUTE: &str = "routes/police-to-station-mediation";

/// Applies the shared migrations, then this service's.
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    SCHEMA.migrate(store).await
}

/// Roles that may take in a referral at a station.
const STATION_INTAKE_ROLES: &[&str] = &["officer", "duty_chief", "dispatcher"];
/// Roles that may override screening (人工研判).
const OVERRIDE_ROLES: &[&str] = &["officer", "command_room_reviewer", "duty_chief"];
/// Roles that may draft the 移送单 and answer investigations at the station.
const STATION_ROLES: &[&str] = &["officer", "duty_chief"];
/// Roles that may report the result to the command room (反馈指挥室).
const ACK_ROLES: &[&str] = &["officer", "duty_chief", "command_room_reviewer"];

use fengqiao_kit::time::{from_timestamp as from_ts, to_timestamp as to_ts};

/// Who may ask for the full personal information (`x-fengqiao-personal-info: full`) of a
/// referral: the station's officers and duty chief, who handle the referral and must reach the
/// parties, and other Fengqiao services (`service`). Not the
/// 110 dispatcher (`dispatcher`) nor the command-room reviewer (`command_room_reviewer`): they
/// take the call in and review screening, for which the masked values suffice (PIPL Art 6,
/// minimum necessary). Every full read leaves an access-log row.
pub const FULL_VIEW: pii::FullView = pii::FullView {
    service: "police-referral",
    roles: &["officer", "duty_chief", "service"],
};

/// Seals a body for the column `ctx` (`"<table>.<column>"`): every body of this service can
/// hold personal information (parties, free text), so none is stored in the clear (PIPL
/// Art 51; the format and keys are the store's, [`fengqiao_store::seal`]).
fn sealed(ctx: &str, m: &impl prost::Message) -> Result<Vec<u8>> {
    Ok(seal::seal(ctx, &m.encode_to_vec())?)
}

/// Opens and decodes what [`sealed`] wrote for `ctx`.
fn opened<M: prost::Message + Default>(ctx: &str, body: &[u8], what: &str) -> Result<M> {
    let plain = seal::open(ctx, body)?;
    M::decode(plain.as_slice()).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

const REFERRALS_BODY: &str = "referrals.body";
const EVENTS_BODY: &str = "referral_events.body";
const DOCUMENTS_BODY: &str = "referral_documents.body";
const TASKS_BODY: &str = "investigation_tasks.body";

fn has_any(who: &Identity, roles: &[&str]) -> bool {
    roles.iter().any(|r| who.has_role(r))
}

fn need_role(who: &Identity, roles: &[&str], action: &str) -> Result<()> {
    if has_any(who, roles) {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("{action} needs one of the roles {}", roles.join(", ")),
        ))
    }
}

/// WRONG_STATE for `action` on the referral `name` in `state`.
fn wrong_state(name: &str, state: i32, action: lifecycle::Action) -> Error {
    Error::WrongState {
        resource: name.to_string(),
        state: state_name(state),
        action: action.name(),
    }
}

fn state_name(s: i32) -> String {
    ReferralState::try_from(s)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| "UNKNOWN".into())
}

/// The referral state that follows from the state of its current transfer.
pub fn state_for_transfer(t: TransferState) -> ReferralState {
    use TransferState as T;
    match t {
        T::Unspecified | T::Draft | T::AwaitingApproval => ReferralState::TransferPending,
        T::Approved | T::Delivered | T::InProgress => ReferralState::Transferred,
        T::FeedbackSubmitted => ReferralState::FeedbackReceived,
        T::Closed => ReferralState::Closed,
        T::Declined | T::Expired | T::Returned | T::Escalated => ReferralState::Returned,
        T::Withdrawn => ReferralState::Withdrawn,
    }
}

/// The referral state that follows from a screening result, before any transfer.
pub fn state_for_screening(r: ScreeningResult) -> ReferralState {
    match r {
        ScreeningResult::CivilDispute => ReferralState::ReadyToTransfer,
        ScreeningResult::PublicSecurity | ScreeningResult::Criminal => ReferralState::PoliceMatter,
        ScreeningResult::NeedsReview | ScreeningResult::Unspecified => ReferralState::PendingReview,
    }
}

/// A referral as stored, with what authorisation needs.
struct Stored {
    referral: Referral,
    creator: String,
    version: i64,
    content_hash: String,
    /// The router event sequence the referral last reflected.
    event_seq: u64,
}

impl Stored {
    fn visible_to(&self, who: &Identity) -> bool {
        who.agency == self.creator || who.agency == self.referral.police_station
    }
}

const COLUMNS: &str = "id, creator_agency, version, content_hash, event_seq, body";

fn stored_of(row: &AnyRow) -> Result<Stored> {
    let body: Vec<u8> = row.try_get("body")?;
    let referral = opened::<Referral>(REFERRALS_BODY, &body, "referral")?;
    Ok(Stored {
        referral,
        creator: row.try_get("creator_agency")?,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        event_seq: u64::try_from(row.try_get::<i64, _>("event_seq")?).unwrap_or(0),
    })
}

async fn load(tx: &mut Tx, id: &str) -> Result<Option<Stored>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM referrals WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(stored_of).transpose()
}

/// Locks the referral rows with `column = value` for the rest of a write transaction on
/// PostgreSQL (SQLite write transactions are serialised already), so that a caller's change
/// and a router message apply one after the other instead of one overwriting the other.
async fn lock_referral(tx: &mut Tx, column: &str, value: &str) -> Result<()> {
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
async fn load_visible_locked(tx: &mut Tx, who: &Identity, name: &str) -> Result<Stored> {
    let id = fengqiao_kit::validate::parse_name("name", "referrals", name)?;
    lock_referral(tx, "id", id).await?;
    load_visible(tx, who, name).await
}

/// The request id of a call this service makes to the router for a client's call: derived
/// only from the method, the referral and the client's `request_id`, so a retry sends the
/// router the very same request and gets the first answer back.
fn router_rid(method: &str, referral: &str, request_id: &str) -> String {
    let h = fengqiao_store::idempotency::hash_request(
        format!("{method}\n{referral}\n{request_id}").as_bytes(),
    );
    let mut s = format!("police-{h}");
    s.truncate(120);
    s
}

/// A router refusal of a call whose referral already showed its result: the router refused a
/// new call (not a retry of the one that produced it), so the answer is the local wrong state.
fn routed_error(status: Status, retried: bool, r: &Referral, action: &'static str) -> Error {
    if retried && status.code() == tonic::Code::FailedPrecondition {
        Error::WrongState {
            resource: r.name.clone(),
            state: state_name(r.state),
            action,
        }
    } else {
        Error::upstream(status)
    }
}

/// The router event sequence of an answer's transfer (0 when absent).
fn answer_seq(t: Option<&Transfer>) -> u64 {
    t.and_then(|t| t.last_event.as_ref())
        .map_or(0, |e| e.sequence)
}

/// Records the router's answer's last event in the referral's history, in the transaction of
/// the call that made it, once per event (the router's copy of the same event finds it there
/// and is then answered from a read, see `Inbox::is_stale`).
async fn record_answer_event(
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
async fn insert_event(
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
    .bind(i64::try_from(event.sequence).unwrap_or(i64::MAX))
    .bind(occurred)
    .bind(sealed(EVENTS_BODY, event)?)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Loads a referral visible to `who`, or NOT_FOUND (also when it exists but is not theirs).
/// Only the station handling a referral acts on its transfer.
fn need_handling_station(who: &Identity, s: &Stored, action: &str) -> Result<()> {
    if who.agency == s.referral.police_station {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::WrongParty,
            format!("only the station handling the referral {action}"),
        ))
    }
}

/// The stored answer of a replayed call, or the referral to act on.
enum Begun<R> {
    Replay(R),
    Loaded(Box<Stored>),
}

async fn load_visible(tx: &mut Tx, who: &Identity, name: &str) -> Result<Stored> {
    let id = fengqiao_kit::validate::parse_name("name", "referrals", name)?;
    match load(tx, id).await? {
        Some(s) if s.visible_to(who) => Ok(s),
        _ => Err(Error::NotFound(name.to_string())),
    }
}

fn check_etag(etag: &str, current: &str, what: &str) -> Result<()> {
    // One etag format for the suite (`fengqiao_kit::etag`): the version in quotes; a client
    // may send it with or without them.
    let version = current.trim_matches('"').parse::<i64>().unwrap_or(-1);
    if !etag.is_empty() && !fengqiao_kit::etag::matches(etag, version) {
        return Err(Error::EtagMismatch(what.to_string()));
    }
    Ok(())
}

/// Feedback due time and overdue flag as list columns: overdue counts only while feedback is
/// awaited (TRANSFERRED).
fn feedback_columns(r: &Referral) -> (Option<i64>, i64) {
    let awaiting = r.state == ReferralState::Transferred as i32;
    let f = r.feedback.as_ref();
    let due = f
        .filter(|_| awaiting)
        .and_then(|f| f.due_time.as_ref())
        .map(from_ts);
    let overdue = i64::from(awaiting && f.is_some_and(|f| f.overdue));
    (due, overdue)
}

/// Writes a changed referral: bumps the version and etag, sets `update_time`.
async fn save(tx: &mut Tx, s: &mut Stored, now: i64) -> Result<()> {
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
    .bind(i64::try_from(s.event_seq).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn add_documents(
    tx: &mut Tx,
    referral_id: &str,
    docs: &[EvidenceRef],
    now: i64,
) -> Result<()> {
    if docs.is_empty() {
        return Ok(());
    }
    let mut seq = last_seq(tx, "referral_documents", "referral_id", referral_id).await?;
    for d in docs {
        seq += 1;
        sqlx::query(
            "INSERT INTO referral_documents (referral_id, seq, added_at, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(referral_id)
        .bind(seq)
        .bind(now)
        .bind(sealed(DOCUMENTS_BODY, d)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Output form: computes `feedback.overdue` from the due time while feedback is awaited.
fn present(mut r: Referral, now: i64) -> Referral {
    let awaiting = r.state == ReferralState::Transferred as i32;
    if let Some(f) = r.feedback.as_mut()
        && awaiting
        && f.received_time.is_none()
        && f.due_time.as_ref().is_some_and(|d| from_ts(d) < now)
    {
        f.overdue = true;
    }
    r
}

/// The content of a referral that the incident-number idempotency compares: the client's
/// fields, trimmed, output-only fields cleared.
fn normalise(r: &Referral) -> Referral {
    let mut n = r.clone();
    n.name.clear();
    n.case_id.clear();
    n.screening = None;
    n.state = 0;
    n.transfer.clear();
    n.transfer_state = 0;
    n.feedback = None;
    n.create_time = None;
    n.update_time = None;
    n.etag.clear();
    // Output only: the officer is the caller (from the token), not the request body.
    n.officer = None;
    n.incident_number = n.incident_number.trim().to_string();
    n.summary = n.summary.trim().to_string();
    n.on_scene_handling = n.on_scene_handling.trim().to_string();
    for p in n.parties.iter_mut().chain(n.caller.iter_mut()) {
        p.name = p.name.trim().to_string();
        p.id_number = p.id_number.trim().to_ascii_uppercase();
        p.phone = p.phone.trim().to_string();
    }
    n
}

fn page_size(size: i32) -> Result<i64> {
    Ok(i64::from(fengqiao_kit::validate::page_size(size)?))
}

fn parse_cursor(token: &str, query: &str) -> Result<Option<(i64, String)>> {
    Ok(fengqiao_kit::validate::parse_keyset_page_token(
        token, query,
    )?)
}

/// An investigation task as stored.
struct StoredTask {
    task: InvestigationTask,
    referral_id: String,
    version: i64,
}

fn task_of(row: &AnyRow) -> Result<StoredTask> {
    let body: Vec<u8> = row.try_get("body")?;
    let task = opened::<InvestigationTask>(TASKS_BODY, &body, "investigation task")?;
    Ok(StoredTask {
        task,
        referral_id: row.try_get("referral_id")?,
        version: row.try_get("version")?,
    })
}

async fn save_task(tx: &mut Tx, t: &mut StoredTask) -> Result<()> {
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

fn apply_investigation(task: &mut InvestigationTask, inv: &Investigation) {
    task.state = inv.state;
    task.answer = inv.answer.clone();
    task.answer_evidence = inv.answer_evidence.clone();
    task.answered_by = inv.answered_by.clone();
    task.answer_time = inv.answer_time;
    if task.questions.is_empty() {
        task.questions = inv.questions.clone();
    }
}

/// The police-referral service.
#[derive(Clone, Debug)]
pub struct PoliceReferral {
    store: Store,
    /// Calls to the router are CLIENT spans (issue #15).
    router: fengqiao_kit::client::TracedChannel,
}

/// Receives the router's messages for the agencies whose records this service keeps.
#[derive(Clone, Debug)]
struct Inbox {
    store: Store,
}

#[tonic::async_trait]
impl fengqiao_kit::inbox::InboxHandler for Inbox {
    /// 警调对接: the station sends (and its duty chief approves as the sender), the command
    /// centre approves as the station's parent.
    fn receives(&self) -> &[fengqiao_kit::inbox::Receives] {
        use fengqiao_proto::inbox::RecipientSide;
        &[
            ("police-to-station-mediation", RecipientSide::Sender),
            ("police-to-station-mediation", RecipientSide::Approver),
        ]
    }

    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
        self.apply(&envelope).await.map_err(Status::from)
    }
}

impl Inbox {
    async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse> {
        let msg = TransferMessage::decode(envelope.payload.as_slice()).map_err(|_| {
            Error::Invalid(vec![FieldViolation::new(
                "envelope.payload",
                "must be a TransferMessage",
            )])
        })?;
        if self.is_stale(envelope, &msg).await? {
            // Nothing to apply (typically the copy of a change this service made itself and
            // recorded with the router's answer): answered from a read, no write transaction.
            return Ok(DeliverResponse { duplicate: false });
        }
        let mut tx = self.store.write().await?;
        let fresh =
            fengqiao_store::inbox::record_once(&mut tx, SERVICE, &envelope.message_id).await?;
        if !fresh {
            return Ok(DeliverResponse { duplicate: true });
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let event = msg.event.clone().unwrap_or_default();
        let case_id = if event.case_id.is_empty() {
            envelope.case_id.clone()
        } else {
            event.case_id.clone()
        };
        // The referral is found by the case id it gave its transfer (`CaseSnapshot.case_id`),
        // so a transfer whose local link was lost still finds its referral.
        // Read and locked in one statement (the row lock of `lock_referral`; SQLite's write
        // transactions are serialised already).
        let lock = if fengqiao_store::Backend::of(&tx) == fengqiao_store::Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM referrals WHERE case_id = $1 \
             AND (police_station = $2 OR creator_agency = $2){lock}"
        ))
        .bind(&case_id)
        .bind(&envelope.to_agency)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut s) = row.as_ref().map(stored_of).transpose()? else {
            // A transfer not made from a referral of ours (e.g. drafted on the router directly).
            tx.commit().await?;
            return Ok(DeliverResponse { duplicate: false });
        };
        let referral_id = s.referral.name.trim_start_matches("referrals/").to_string();
        let occurred = event.occurred_at.as_ref().map_or(now, from_ts);
        // Once per event: the copies the referral's other agency gets carry the same one.
        let new_event = !event.event_id.is_empty()
            && insert_event(&mut tx, &referral_id, &event, occurred).await?;
        if event.sequence != 0
            && event.sequence <= s.event_seq
            && !new_event
            && msg.investigation.is_none()
        {
            // Stale after all (the other party's copy, or our own call, committed since the
            // read of `is_stale`): nothing to keep, not even the inbox row; no commit to wait for.
            tx.rollback().await?;
            return Ok(DeliverResponse { duplicate: false });
        }
        let transfer_name = if event.transfer.is_empty() {
            envelope.transfer.clone()
        } else {
            event.transfer.clone()
        };
        let etype = TransferEventType::try_from(event.event_type).unwrap_or_default();
        // Investigation tasks follow the investigation, whichever transfer it is on (a task
        // only ever moves on from OPEN, so an old message cannot revert it).
        if let Some(inv) = &msg.investigation {
            self.apply_task(&mut tx, &s, inv, now).await?;
        }
        // The router is the source of truth: only a message newer than what the referral
        // reflects changes it (it is recorded in the inbox as received either way).
        let newer = event.sequence == 0 || event.sequence > s.event_seq;
        let local = ReferralState::try_from(s.referral.state).unwrap_or_default();
        if let Some(t) = msg.transfer.as_ref().filter(|_| newer)
            && reconcile::is_current(
                &s.referral.transfer,
                local,
                &transfer_name,
                TransferState::try_from(t.state).unwrap_or_default(),
            )
        {
            let before = s.referral.clone();
            if s.referral.transfer != transfer_name {
                // Our own draft whose local commit was lost, or a new transfer after one came
                // back: the referral follows it from now on.
                s.referral.transfer = transfer_name;
                s.referral.feedback = None;
            }
            let ts = TransferState::try_from(t.state).unwrap_or_default();
            s.referral.transfer_state = t.state;
            if let Some(to) = reconcile::next_state(local, ts) {
                s.referral.state = to as i32;
            }
            s.event_seq = s.event_seq.max(event.sequence);
            let fb = s.referral.feedback.get_or_insert_with(Default::default);
            if let Some(c) = &t.feedback_clock {
                if c.stopped_at.is_none() {
                    fb.due_time = if c.paused { None } else { c.due_at };
                }
                if c.expired {
                    fb.overdue = true;
                }
            }
            if etype == TransferEventType::DeadlineMissed
                && event.reason_code == "FEEDBACK_DEADLINE_MISSED"
            {
                fb.overdue = true;
            }
            // The feedback as the transfer carries it, whichever message brings it first.
            if let Some(f) = &t.feedback
                && !f.outcome_code.is_empty()
                && fb.received_time.is_none()
            {
                fb.outcome_code = f.outcome_code.clone();
                fb.outcome_description = f.outcome_description.clone();
                fb.summary = f.summary.clone();
                fb.documents = f.documents.clone();
                fb.received_time = f.submit_time.or(Some(to_ts(occurred)));
                add_documents(&mut tx, &referral_id, &f.documents, now).await?;
            }
            // Acknowledged (办结), here or on the router directly: reported to the command room.
            if ts == TransferState::Closed && fb.reported_time.is_none() {
                fb.reported_time = t
                    .feedback
                    .as_ref()
                    .and_then(|f| f.acknowledge_time)
                    .or(Some(to_ts(occurred)));
            }
            if matches!(
                etype,
                TransferEventType::Returned | TransferEventType::Escalated
            ) && let Some(h) = &t.handback
            {
                add_documents(&mut tx, &referral_id, &h.documents, now).await?;
            }
            if s.referral == before {
                // Nothing changed: the etag a client holds stays valid.
                sqlx::query("UPDATE referrals SET event_seq = $1 WHERE id = $2")
                    .bind(i64::try_from(s.event_seq).unwrap_or(i64::MAX))
                    .bind(&referral_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                save(&mut tx, &mut s, now).await?;
            }
        }
        tx.commit().await?;
        Ok(DeliverResponse { duplicate: false })
    }

    /// Whether applying `msg` would change nothing but the inbox row, decided by one read
    /// outside any transaction: no referral of ours has the transfer's case (the write path
    /// would only record the message), or the message carries no investigation, its event is
    /// not newer than the referral reflects and is already in the referral's history. Each
    /// fact only ever stays true (`event_seq` only grows, history rows are never deleted, a
    /// referral's case id and agencies never change), so a redelivery is answered the same way.
    async fn is_stale(&self, envelope: &Envelope, msg: &TransferMessage) -> Result<bool> {
        let event = msg.event.clone().unwrap_or_default();
        let case_id = if event.case_id.is_empty() {
            &envelope.case_id
        } else {
            &event.case_id
        };
        let row = sqlx::query(
            "SELECT r.event_seq, (SELECT COUNT(*) FROM referral_events e \
             WHERE e.referral_id = r.id AND e.event_id = $3) AS known \
             FROM referrals r WHERE r.case_id = $1 \
             AND (r.police_station = $2 OR r.creator_agency = $2)",
        )
        .bind(case_id)
        .bind(&envelope.to_agency)
        .bind(&event.event_id)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else {
            return Ok(true);
        };
        if event.sequence == 0 || msg.investigation.is_some() {
            return Ok(false);
        }
        let held = u64::try_from(row.try_get::<i64, _>("event_seq")?).unwrap_or(0);
        let known = event.event_id.is_empty() || row.try_get::<i64, _>("known")? > 0;
        Ok(event.sequence <= held && known)
    }

    async fn apply_task(
        &self,
        tx: &mut Tx,
        s: &Stored,
        inv: &Investigation,
        now: i64,
    ) -> Result<()> {
        let row = sqlx::query(
            "SELECT referral_id, version, body FROM investigation_tasks WHERE investigation = $1",
        )
        .bind(&inv.name)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            let mut t = task_of(&row)?;
            let open = t.task.state == InvestigationState::Open as i32;
            if open && inv.state != InvestigationState::Open as i32 {
                apply_investigation(&mut t.task, inv);
                save_task(tx, &mut t).await?;
            }
            return Ok(());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let task = InvestigationTask {
            name: format!("{}/investigationTasks/{id}", s.referral.name),
            investigation: inv.name.clone(),
            questions: inv.questions.clone(),
            requested_due_time: inv.requested_due_time,
            requested_by: inv.requested_by.clone(),
            request_time: inv.request_time.or(Some(to_ts(now))),
            state: inv.state,
            answer: inv.answer.clone(),
            answer_evidence: inv.answer_evidence.clone(),
            answered_by: inv.answered_by.clone(),
            answer_time: inv.answer_time,
            etag: fengqiao_kit::etag::etag(1),
        };
        sqlx::query(
            "INSERT INTO investigation_tasks (id, referral_id, investigation, state, request_time, body, version) \
             VALUES ($1, $2, $3, $4, $5, $6, 1)",
        )
        .bind(&id)
        .bind(s.referral.name.trim_start_matches("referrals/"))
        .bind(&inv.name)
        .bind(i64::from(task.state))
        .bind(task.request_time.as_ref().map_or(now, from_ts))
        .bind(sealed(TASKS_BODY, &task)?)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

impl PoliceReferral {
    /// Replays an idempotent call, or loads the referral it acts on (visible to `who`). The
    /// change itself happens after the router call, in its own transaction.
    async fn replay_or_load<R: prost::Message + Default>(
        &self,
        idem: &Idem,
        who: &Identity,
        name: &str,
    ) -> Result<Begun<R>> {
        // Only reads: a write transaction would take SQLite's write lock for nothing.
        let mut tx = self.store.read().await?;
        if let Some(r) = idem.replay(&mut tx).await? {
            return Ok(Begun::Replay(r));
        }
        let s = load_visible(&mut tx, who, name).await?;
        tx.rollback().await?;
        Ok(Begun::Loaded(Box::new(s)))
    }

    /// Whether the referral's current transfer was linked by a committed `DraftTransfer` (its
    /// 移送单 is on file) rather than by the router's messages after a lost commit.
    async fn drafted_here(&self, s: &Stored) -> Result<bool> {
        let id = s.referral.name.trim_start_matches("referrals/");
        let uri = format!("fengqiao:{}", s.referral.transfer);
        let rows = sqlx::query("SELECT body FROM referral_documents WHERE referral_id = $1")
            .bind(id)
            .fetch_all(self.store.pool())
            .await?;
        for row in &rows {
            let b: Vec<u8> = row.try_get("body")?;
            let d = opened::<EvidenceRef>(DOCUMENTS_BODY, &b, "document")?;
            if d.uri == uri {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The service over a migrated `store`.
    pub fn new(store: Store, router: tonic::transport::Channel) -> Self {
        Self {
            store,
            router: router.into(),
        }
    }

    /// This service's side of the process's agency inbox.
    pub fn inbox_handler(&self) -> std::sync::Arc<dyn fengqiao_kit::inbox::InboxHandler> {
        std::sync::Arc::new(Inbox {
            store: self.store.clone(),
        })
    }

    /// Adds the service to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            PoliceReferralServiceServer::new(self.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
    }

    fn router(&self) -> TransferServiceClient<fengqiao_kit::client::TracedChannel> {
        TransferServiceClient::new(self.router.clone())
    }

    /// A request to the router carrying the caller's credentials.
    fn forward<T, U>(incoming: &Request<T>, msg: U) -> Request<U> {
        let mut out = Request::new(msg);
        forward_auth(incoming, &mut out);
        out
    }

    async fn create(
        &self,
        request: Request<CreateReferralRequest>,
    ) -> Result<CreateReferralResponse> {
        let who = Identity::of(&request)?.clone();
        let mut req = request.into_inner();
        let mut violations = validate::referral(req.referral.as_ref());
        if !req.request_id.is_empty()
            && let Err(v) = fengqiao_kit::validate::request_id(&req.request_id)
        {
            violations.push(v);
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        // Free text never stores an ID number or a mobile number (they belong in the parties,
        // where they are masked and sealed): redacted before the content hash, so a retry of
        // the same push still matches.
        if let Some(r) = req.referral.as_mut() {
            validate::redact_free_text(r);
        }
        let input =
            normalise(req.referral.as_ref().ok_or_else(|| {
                Error::Invalid(vec![FieldViolation::new("referral", "is required")])
            })?);
        if who.agency == input.police_station {
            need_role(&who, STATION_INTAKE_ROLES, "taking in a referral")?;
        } else {
            // The 110 command centre's dispatch system pushes referrals to its stations.
            need_role(
                &who,
                &["dispatcher"],
                "taking in a referral for another agency",
            )?;
        }
        // A keyed hash (HMAC): the content holds the parties, so the column must not let
        // anyone without the key test a guess (issue #14).
        let hash = seal::keyed_hash("referrals.content_hash", &input.encode_to_vec())?;
        // The optional `request_id` is a key of its own: reused with a different request it
        // is ALREADY_EXISTS / REQUEST_ID_REUSED, whatever the incident number says.
        let idem = if req.request_id.is_empty() {
            None
        } else {
            Some(Idem::new(&who, "CreateReferral", &req.request_id, &req)?)
        };
        let mut tx = self.store.write().await?;
        if let Some(idem) = &idem
            && let Some(r) = idem.replay(&mut tx).await?
        {
            return Ok(r);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let existing = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM referrals WHERE incident_number = $1"
        ))
        .bind(&input.incident_number)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let s = stored_of(&row)?;
            if s.content_hash == hash && s.visible_to(&who) {
                let resp = CreateReferralResponse {
                    referral: Some(present(s.referral, now)),
                };
                if let Some(idem) = &idem {
                    idem.save(&mut tx, &resp).await?;
                    tx.commit().await?;
                }
                return Ok(resp);
            }
            return Err(Error::Refused(
                Reason::IncidentNumberReused,
                "a different referral was already taken in under this incident number".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut r = input;
        r.name = format!("referrals/{id}");
        r.case_id = uuid::Uuid::new_v4().to_string();
        // `Party.party_id` is a UUID, assigned by whoever first records the party: here.
        for p in r.parties.iter_mut() {
            if p.party_id.is_empty() {
                p.party_id = uuid::Uuid::new_v4().to_string();
            }
        }
        // Actors come only from the token: the officer who took the referral in is the
        // caller; a value in the request body is ignored.
        r.officer = Some(who.as_actor());
        let rule = screening::screen(r.category, &r.summary, &r.on_scene_handling);
        let result = rule.map_or(ScreeningResult::NeedsReview, |r| r.result);
        r.screening = Some(Screening {
            result: result as i32,
            matched_rule: rule.map(|r| r.id.to_string()).unwrap_or_default(),
            matched_rule_description: rule.map(|r| r.description.to_string()).unwrap_or_default(),
            automatic_result: result as i32,
            screen_time: Some(to_ts(now)),
            ..Default::default()
        });
        r.state = state_for_screening(result) as i32;
        r.create_time = Some(to_ts(now));
        r.update_time = Some(to_ts(now));
        r.etag = fengqiao_kit::etag::etag(1);
        let call_time = r.call_time.as_ref().map_or(now, from_ts);
        sqlx::query(
            "INSERT INTO referrals (id, incident_number, case_id, creator_agency, police_station, \
             state, screening_result, category, transfer, call_time, content_hash, feedback_due, \
             feedback_overdue, body, create_time, update_time, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, NULL, 0, $11, $12, $12, 1)",
        )
        .bind(&id)
        .bind(&r.incident_number)
        .bind(&r.case_id)
        .bind(&who.agency)
        .bind(&r.police_station)
        .bind(i64::from(r.state))
        .bind(result as i64)
        .bind(i64::from(r.category))
        .bind(call_time)
        .bind(&hash)
        .bind(sealed(REFERRALS_BODY, &r)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            let e = fengqiao_store::Error::from(e);
            if e.is_unique_violation() {
                // Taken in concurrently under the same incident number: the client retries
                // and gets the replay (or INCIDENT_NUMBER_REUSED).
                Error::Store(fengqiao_store::Error::ConcurrentModification)
            } else {
                Error::Store(e)
            }
        })?;
        add_documents(&mut tx, &id, &r.evidence, now).await?;
        if let Some(idem) = &idem {
            idem.save(
                &mut tx,
                &CreateReferralResponse {
                    referral: Some(r.clone()),
                },
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(referral = %r.name, rule = r.screening.as_ref().map_or("", |s| s.matched_rule.as_str()), "referral taken in");
        Ok(CreateReferralResponse { referral: Some(r) })
    }

    async fn get(&self, request: Request<GetReferralRequest>) -> Result<GetReferralResponse> {
        let who = Identity::of(&request)?.clone();
        let req = request.into_inner();
        let id = fengqiao_kit::validate::parse_name("name", "referrals", &req.name)?;
        // One statement, no transaction: the row and the database clock it is shown at.
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, {} AS db_now FROM referrals WHERE id = $1",
            self.store.backend().now_expr()
        ))
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else {
            return Err(Error::NotFound(req.name));
        };
        let s = stored_of(&row)?;
        if !s.visible_to(&who) {
            return Err(Error::NotFound(req.name));
        }
        let now: i64 = row.try_get("db_now")?;
        Ok(GetReferralResponse {
            referral: Some(present(s.referral, now)),
        })
    }

    async fn list(&self, request: Request<ListReferralsRequest>) -> Result<ListReferralsResponse> {
        let who = Identity::of(&request)?.clone();
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let cursor = parse_cursor(&req.page_token, &query)?;
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut q = Filtered::new(
            format!(
                "SELECT {COLUMNS}, call_time FROM referrals WHERE (creator_agency = $1 OR police_station = $1)"
            ),
            &who.agency,
        );
        q.states::<ReferralState>(&req.states)?;
        if req.feedback_overdue {
            q.and(
                &format!(
                    " AND (feedback_overdue = 1 OR (state = {} AND feedback_due IS NOT NULL AND feedback_due < ?))",
                    ReferralState::Transferred as i32
                ),
                Bind::Int(now),
            );
        }
        q.int("screening_result", req.screening_result)
            .int("category", req.category)
            .text("police_station", &req.police_station)
            .text("incident_number", &req.incident_number)
            .time_range(
                "call_time",
                req.call_time_start.as_ref(),
                req.call_time_end.as_ref(),
            );
        let rows = q.fetch(&mut tx, "call_time", cursor, limit).await?;
        let (referrals, next_page_token) = keyset_page(&rows, limit, &query, |row| {
            let s = stored_of(row)?;
            let mut r = present(s.referral, now);
            // Keep the cursor consistent with the indexed column.
            let ct: i64 = row.try_get("call_time")?;
            r.call_time = Some(to_ts(ct));
            let id = r.name.trim_start_matches("referrals/").to_string();
            Ok((r, ct, id))
        })?;
        Ok(ListReferralsResponse {
            referrals,
            next_page_token,
        })
    }

    async fn override_screening(
        &self,
        request: Request<OverrideScreeningRequest>,
    ) -> Result<OverrideScreeningResponse> {
        let who = Identity::of(&request)?.clone();
        let mut req = request.into_inner();
        let mut violations = Vec::new();
        let result = ScreeningResult::try_from(req.result).unwrap_or_default();
        if matches!(
            result,
            ScreeningResult::Unspecified | ScreeningResult::NeedsReview
        ) {
            violations.push(FieldViolation::new(
                "result",
                "must be CIVIL_DISPUTE, PUBLIC_SECURITY or CRIMINAL",
            ));
        }
        if req.reason.trim().is_empty() || req.reason.chars().count() > 2000 {
            violations.push(FieldViolation::new(
                "reason",
                "is required, at most 2000 characters",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        pii::redact_in_place(&mut req.reason);
        let idem = Idem::new(&who, "OverrideScreening", &req.request_id, &req)?;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay(&mut tx).await? {
            return Ok(r);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut s = load_visible_locked(&mut tx, &who, &req.name).await?;
        need_role(&who, OVERRIDE_ROLES, "overriding screening")?;
        check_etag(&req.etag, &s.referral.etag, &req.name)?;
        let state = ReferralState::try_from(s.referral.state).unwrap_or_default();
        let action = lifecycle::Action::OverrideScreening(result);
        let lifecycle::Decision::To(next) = lifecycle::decide(state, action) else {
            return Err(wrong_state(&req.name, s.referral.state, action));
        };
        let sc = s.referral.screening.get_or_insert_with(Default::default);
        sc.result = result as i32;
        sc.overridden = true;
        sc.override_reason = req.reason.trim().to_string();
        sc.overridden_by = Some(who.as_actor());
        sc.override_time = Some(to_ts(now));
        s.referral.state = next as i32;
        save(&mut tx, &mut s, now).await?;
        let resp = OverrideScreeningResponse {
            referral: Some(present(s.referral, now)),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    async fn draft_transfer(
        &self,
        request: Request<DraftTransferRequest>,
    ) -> Result<DraftTransferResponse> {
        let who = Identity::of(&request)?.clone();
        let mut req = request.get_ref().clone();
        pii::redact_in_place(&mut req.note);
        let mut violations = Vec::new();
        if let Err(v) = fengqiao_kit::validate::parse_name("to_agency", "agencies", &req.to_agency)
        {
            violations.push(v);
        }
        if !req.route.is_empty()
            && let Err(v) = fengqiao_kit::validate::parse_name("route", "routes", &req.route)
        {
            violations.push(v);
        }
        if req.note.chars().count() > 4000 {
            violations.push(FieldViolation::new(
                "note",
                "must be at most 4000 characters",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let idem = Idem::new(&who, "DraftTransfer", &req.request_id, &req)?;
        let s = match self.replay_or_load(&idem, &who, &req.name).await? {
            Begun::Replay(r) => return Ok(r),
            Begun::Loaded(s) => s,
        };
        need_handling_station(&who, &s, "drafts its transfer")?;
        need_role(&who, STATION_ROLES, "drafting a transfer")?;
        let state = ReferralState::try_from(s.referral.state).unwrap_or_default();
        // TRANSFER_PENDING or TRANSFERRED may be this very call retried after its local
        // commit was lost and the router's messages brought the referral in step: the router
        // decides (the same derived request id replays the first answer; a new one is refused
        // with ALREADY_EXISTS naming the open transfer). The etag then names the version
        // before, so it is not checked.
        let action = lifecycle::Action::DraftTransfer;
        let retried = match lifecycle::decide(state, action) {
            lifecycle::Decision::To(_) => false,
            lifecycle::Decision::MaybeRetried if !self.drafted_here(&s).await? => true,
            _ => return Err(wrong_state(&req.name, s.referral.state, action)),
        };
        if !retried {
            check_etag(&req.etag, &s.referral.etag, &req.name)?;
        }
        let result = s.referral.screening.as_ref().map_or(0, |sc| sc.result);
        if result != ScreeningResult::CivilDispute as i32 {
            // 公安机关治安调解工作规范 Art 4: only civil disputes go to people's mediation.
            return Err(Error::Refused(
                Reason::NotCivilDispute,
                format!(
                    "{}: the screening result is {}; only a civil dispute is transferred to \
                     people's mediation",
                    req.name,
                    ScreeningResult::try_from(result)
                        .map(|r| r.as_str_name())
                        .unwrap_or("unknown")
                ),
            ));
        }
        let referral_id = s.referral.name.trim_start_matches("referrals/").to_string();
        let r = &s.referral;
        let snapshot = CaseSnapshot {
            case_id: r.case_id.clone(),
            external_references: [(r.police_station.clone(), r.incident_number.clone())]
                .into_iter()
                .collect(),
            category: r.category,
            summary: r.summary.clone(),
            parties: r.parties.clone(),
            evidence: r.evidence.clone(),
            region_code: r
                .location
                .as_ref()
                .map(|l| l.region_code.clone())
                .unwrap_or_default(),
            occurred_at: r.call_time,
            location: r.location.clone(),
            amount_in_dispute: None,
            // Only the committee's 司法确认 applications carry a package.
            confirmation: None,
        };
        let route = if req.route.is_empty() {
            DEFAULT_ROUTE.to_string()
        } else {
            req.route.clone()
        };
        let create = fengqiao_proto::router::CreateTransferRequest {
            transfer: Some(Transfer {
                route,
                to_agency: Some(fengqiao_proto::common::AgencyRef {
                    name: req.to_agency.clone(),
                    ..Default::default()
                }),
                case_snapshot: Some(snapshot),
                note: req.note.clone(),
                ..Default::default()
            }),
            request_id: router_rid("DraftTransfer", &referral_id, &req.request_id),
            // Created and submitted in one router change: a cut-off call cannot leave a
            // created but unsubmitted transfer behind.
            submit: req.submit,
        };
        let transfer = self
            .router()
            .create_transfer(Self::forward(&request, create))
            .await
            .map_err(|e| routed_error(e, retried, &s.referral, "draft a transfer"))?
            .into_inner()
            .transfer
            .ok_or_else(|| Error::Corrupt("router answered without a transfer".into()))?;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay(&mut tx).await? {
            return Ok(r);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut s = load_visible_locked(&mut tx, &who, &req.name).await?;
        if s.referral.transfer != transfer.name {
            s.referral.transfer = transfer.name.clone();
            s.referral.feedback = None;
        }
        // Unless the router's messages already brought the referral further.
        let seq = answer_seq(Some(&transfer));
        if seq == 0 || seq > s.event_seq {
            let ts = TransferState::try_from(transfer.state).unwrap_or_default();
            s.referral.transfer_state = transfer.state;
            let local = ReferralState::try_from(s.referral.state).unwrap_or_default();
            if let Some(to) = reconcile::next_state(local, ts) {
                s.referral.state = to as i32;
            }
            s.event_seq = s.event_seq.max(seq);
        }
        save(&mut tx, &mut s, now).await?;
        record_answer_event(&mut tx, &referral_id, Some(&transfer), now).await?;
        add_documents(
            &mut tx,
            &referral_id,
            &[EvidenceRef {
                display_name: "移送单".into(),
                media_type: "application/vnd.fengqiao.transfer".into(),
                uri: format!("fengqiao:{}", transfer.name),
                ..Default::default()
            }],
            now,
        )
        .await?;
        let resp = DraftTransferResponse {
            referral: Some(present(s.referral, now)),
            transfer: Some(transfer),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    async fn list_tasks(
        &self,
        request: Request<ListInvestigationTasksRequest>,
    ) -> Result<ListInvestigationTasksResponse> {
        let who = Identity::of(&request)?.clone();
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let cursor = parse_cursor(&req.page_token, &query)?;
        let mut tx = self.store.read().await?;
        let mut params = vec![Bind::Text(who.agency.clone())];
        let mut sql = "SELECT t.referral_id AS referral_id, t.version AS version, t.body AS body, \
             t.request_time AS request_time, t.id AS id FROM investigation_tasks t \
             JOIN referrals r ON r.id = t.referral_id \
             WHERE (r.creator_agency = $1 OR r.police_station = $1)"
            .to_string();
        if req.parent != "referrals/-" {
            let s = load_visible(&mut tx, &who, &req.parent)
                .await
                .map_err(|e| match e {
                    Error::Invalid(_) => Error::Invalid(vec![FieldViolation::new(
                        "parent",
                        "must be referrals/{referral} or referrals/-",
                    )]),
                    e => e,
                })?;
            params.push(Bind::Text(
                s.referral.name.trim_start_matches("referrals/").to_string(),
            ));
            sql.push_str(&format!(" AND t.referral_id = ${}", params.len()));
        }
        if !req.states.is_empty() {
            fengqiao_kit::validate::enum_values::<InvestigationState>("states", &req.states, 32)?;
            let list: Vec<String> = req
                .states
                .iter()
                .map(|s| i64::from(*s).to_string())
                .collect();
            sql.push_str(&format!(" AND t.state IN ({})", list.join(", ")));
        }
        if let Some((t, id)) = cursor {
            params.push(Bind::Int(t));
            let a = params.len();
            params.push(Bind::Text(id));
            let b = params.len();
            sql.push_str(&format!(
                " AND (t.request_time > ${a} OR (t.request_time = ${a} AND t.id > ${b}))"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY t.request_time, t.id LIMIT {}",
            limit + 1
        ));
        let rows = bind_all(sqlx::query(&sql), &params)
            .fetch_all(&mut *tx)
            .await?;
        let mut tasks = Vec::new();
        let mut next_page_token = String::new();
        let mut last_key: Option<(i64, String)> = None;
        for (i, row) in rows.iter().enumerate() {
            if i as i64 == limit {
                if let Some((t, id)) = &last_key {
                    next_page_token =
                        fengqiao_kit::validate::keyset_page_token(&query, *t, id.as_str());
                }
                break;
            }
            let t = task_of(row)?;
            let rt: i64 = row.try_get("request_time")?;
            let id: String = row.try_get("id")?;
            last_key = Some((rt, id));
            tasks.push(t.task);
        }
        Ok(ListInvestigationTasksResponse {
            investigation_tasks: tasks,
            next_page_token,
        })
    }

    async fn answer(
        &self,
        request: Request<AnswerInvestigationRequest>,
    ) -> Result<AnswerInvestigationResponse> {
        let who = Identity::of(&request)?.clone();
        let mut req = request.get_ref().clone();
        pii::redact_in_place(&mut req.answer);
        let bad_name = || {
            Error::Invalid(vec![FieldViolation::new(
                "name",
                "must be referrals/{referral}/investigationTasks/{investigation_task}",
            )])
        };
        let (parent, task_id) = req
            .name
            .split_once("/investigationTasks/")
            .ok_or_else(bad_name)?;
        fengqiao_kit::validate::resource_id("name", task_id)?;
        if req.answer.trim().is_empty() || req.answer.chars().count() > 8000 {
            return Err(
                FieldViolation::new("answer", "is required, at most 8000 characters").into(),
            );
        }
        let idem = Idem::new(&who, "AnswerInvestigation", &req.request_id, &req)?;
        let (s, task) = {
            let mut tx = self.store.write().await?;
            if let Some(r) = idem.replay(&mut tx).await? {
                return Ok(r);
            }
            let s = load_visible(&mut tx, &who, parent).await?;
            let task = self.load_task(&mut tx, task_id, &s).await?;
            tx.rollback().await?;
            (s, task)
        };
        let not_found = || Error::NotFound(req.name.clone());
        if task.task.name != req.name {
            return Err(not_found());
        }
        need_handling_station(&who, &s, "answers investigations")?;
        need_role(&who, STATION_ROLES, "answering an investigation")?;
        // ANSWERED may be this very call retried after its local commit was lost and the
        // router's message answered the task: the router decides (see DraftTransfer).
        let retried = task.task.state == InvestigationState::Answered as i32;
        if !retried {
            check_etag(&req.etag, &task.task.etag, &req.name)?;
        }
        if !retried && task.task.state != InvestigationState::Open as i32 {
            return Err(Error::WrongState {
                resource: req.name.clone(),
                state: InvestigationState::try_from(task.task.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_default(),
                action: "answer",
            });
        }
        // No etag re-read: the router gets the same request on every retry.
        let answered = self
            .router()
            .answer_investigation(Self::forward(
                &request,
                fengqiao_proto::router::AnswerInvestigationRequest {
                    name: task.task.investigation.clone(),
                    etag: String::new(),
                    answer: req.answer.clone(),
                    evidence: req.evidence.clone(),
                    request_id: router_rid("AnswerInvestigation", task_id, &req.request_id),
                },
            ))
            .await
            .map_err(|e| {
                if retried && e.code() == tonic::Code::FailedPrecondition {
                    Error::WrongState {
                        resource: req.name.clone(),
                        state: "INVESTIGATION_STATE_ANSWERED".into(),
                        action: "answer",
                    }
                } else {
                    Error::Upstream(
                        Box::new(e),
                        &[("answer", "answer"), ("evidence", "evidence")],
                    )
                }
            })?
            .into_inner();
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay(&mut tx).await? {
            return Ok(r);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut task = self.load_task(&mut tx, task_id, &s).await?;
        let inv = answered.investigation.unwrap_or_else(|| Investigation {
            state: InvestigationState::Answered as i32,
            answer: req.answer.clone(),
            answer_evidence: req.evidence.clone(),
            answered_by: Some(who.as_actor()),
            answer_time: Some(to_ts(now)),
            ..Default::default()
        });
        if task.task.state == InvestigationState::Open as i32 {
            apply_investigation(&mut task.task, &inv);
            save_task(&mut tx, &mut task).await?;
            add_documents(&mut tx, &task.referral_id, &req.evidence, now).await?;
        }
        let resp = AnswerInvestigationResponse {
            investigation_task: Some(task.task),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    async fn load_task(&self, tx: &mut Tx, task_id: &str, s: &Stored) -> Result<StoredTask> {
        let row = sqlx::query(
            "SELECT referral_id, version, body FROM investigation_tasks WHERE id = $1 AND referral_id = $2",
        )
        .bind(task_id)
        .bind(s.referral.name.trim_start_matches("referrals/"))
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some(row) => task_of(&row),
            None => Err(Error::NotFound(format!(
                "{}/investigationTasks/{task_id}",
                s.referral.name
            ))),
        }
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeFeedbackRequest>,
    ) -> Result<AcknowledgeFeedbackResponse> {
        let who = Identity::of(&request)?.clone();
        let mut req = request.get_ref().clone();
        pii::redact_in_place(&mut req.comment);
        if req.comment.chars().count() > 2000 {
            return Err(FieldViolation::new("comment", "must be at most 2000 characters").into());
        }
        let idem = Idem::new(&who, "AcknowledgeFeedback", &req.request_id, &req)?;
        let s = match self.replay_or_load(&idem, &who, &req.name).await? {
            Begun::Replay(r) => return Ok(r),
            Begun::Loaded(s) => s,
        };
        need_handling_station(&who, &s, "reports the result")?;
        need_role(&who, ACK_ROLES, "reporting feedback to the command room")?;
        // CLOSED may be this very call retried after its local commit was lost and the
        // router's message closed the referral: the router decides (see DraftTransfer).
        let action = lifecycle::Action::AcknowledgeFeedback;
        let state = ReferralState::try_from(s.referral.state).unwrap_or_default();
        let (retried, closed) = match lifecycle::decide(state, action) {
            lifecycle::Decision::To(next) => (false, next),
            lifecycle::Decision::MaybeRetried => (true, state),
            lifecycle::Decision::Refused => {
                return Err(wrong_state(&req.name, s.referral.state, action));
            }
        };
        if !retried {
            check_etag(&req.etag, &s.referral.etag, &req.name)?;
        }
        // No etag re-read: the router gets the same request on every retry.
        let referral_id = s.referral.name.trim_start_matches("referrals/").to_string();
        let acked = self
            .router()
            .acknowledge_feedback(Self::forward(
                &request,
                fengqiao_proto::router::AcknowledgeFeedbackRequest {
                    name: s.referral.transfer.clone(),
                    etag: String::new(),
                    comment: req.comment.clone(),
                    request_id: router_rid("AcknowledgeFeedback", &referral_id, &req.request_id),
                },
            ))
            .await
            .map_err(|e| routed_error(e, retried, &s.referral, "acknowledge feedback"))?
            .into_inner()
            .transfer;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay(&mut tx).await? {
            return Ok(r);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut s = load_visible_locked(&mut tx, &who, &req.name).await?;
        s.referral.state = closed as i32;
        s.referral.transfer_state = acked
            .as_ref()
            .map_or(TransferState::Closed as i32, |t| t.state);
        s.event_seq = s.event_seq.max(answer_seq(acked.as_ref()));
        let fb = s.referral.feedback.get_or_insert_with(Default::default);
        if fb.reported_time.is_none() {
            fb.reported_time = Some(to_ts(now));
        }
        save(&mut tx, &mut s, now).await?;
        record_answer_event(&mut tx, &referral_id, acked.as_ref(), now).await?;
        let resp = AcknowledgeFeedbackResponse {
            referral: Some(present(s.referral, now)),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    async fn file(
        &self,
        request: Request<GetReferralFileRequest>,
    ) -> Result<GetReferralFileResponse> {
        let who = Identity::of(&request)?.clone();
        let name = request.get_ref().name.clone();
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let s = load_visible(&mut tx, &who, &name).await?;
        let id = s.referral.name.trim_start_matches("referrals/").to_string();
        let docs =
            sqlx::query("SELECT body FROM referral_documents WHERE referral_id = $1 ORDER BY seq")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
        let documents = docs
            .iter()
            .map(|row| {
                let b: Vec<u8> = row.try_get("body")?;
                opened::<EvidenceRef>(DOCUMENTS_BODY, &b, "document")
            })
            .collect::<Result<Vec<_>>>()?;
        let tasks = sqlx::query(
            "SELECT referral_id, version, body FROM investigation_tasks WHERE referral_id = $1 \
             ORDER BY request_time, id",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| task_of(row).map(|t| t.task))
        .collect::<Result<Vec<_>>>()?;
        let mut events = sqlx::query(
            "SELECT body FROM referral_events WHERE referral_id = $1 ORDER BY occurred_at, sequence",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            let b: Vec<u8> = row.try_get("body")?;
            opened::<TransferEvent>(EVENTS_BODY, &b, "event")
        })
        .collect::<Result<Vec<_>>>()?;
        tx.rollback().await?;
        // Events without a message to the police (e.g. each approval step) are read from the
        // router's case timeline for the caller; best effort: the stored events suffice.
        if !s.referral.transfer.is_empty() {
            let mut token = String::new();
            for _ in 0..20 {
                let page = self
                    .router()
                    .get_case_timeline(Self::forward(
                        &request,
                        GetCaseTimelineRequest {
                            case_id: s.referral.case_id.clone(),
                            page_size: 500,
                            page_token: token.clone(),
                        },
                    ))
                    .await;
                let Ok(page) = page else { break };
                let page = page.into_inner();
                for e in page.events {
                    if !events.iter().any(|x| x.event_id == e.event_id) {
                        events.push(e);
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            events.sort_by_key(|e| (e.sequence, e.occurred_at.as_ref().map_or(0, from_ts)));
        }
        Ok(GetReferralFileResponse {
            referral_file: Some(ReferralFile {
                referral: Some(present(s.referral, now)),
                documents,
                investigation_tasks: tasks,
                events,
                generate_time: Some(to_ts(now)),
            }),
        })
    }
}

/// A mutation's answer: always masked (a full view of a mutation answer is not offered; the
/// full values are one audited `GetReferral` away). Replays of a stored answer too: the stored
/// answer stays whole (sealed), the reply is masked.
fn masked<T: Personal>(mut t: T) -> Reply<T> {
    pii::mask(&mut t);
    Ok(Response::new(t))
}

/// The caller and the view of personal information they asked for, read before the request
/// is consumed.
fn caller_view<T>(r: &Request<T>) -> Result<(Identity, pii::View)> {
    Ok((Identity::of(r)?.clone(), pii::requested_view(r.metadata())?))
}

impl PoliceReferral {
    /// A read's answer: masked, or whole for a role of [`FULL_VIEW`] with one access-log row
    /// per referral in it (committed before the answer), or PERSONAL_INFO_VIEW_DENIED.
    async fn disclosed<T: Personal>(
        &self,
        method: &str,
        (who, view): (Identity, pii::View),
        t: T,
        referrals: &[(String, String)],
    ) -> Reply<T> {
        let t = fengqiao_kit::agency::disclosed(
            &self.store,
            &FULL_VIEW,
            method,
            &who,
            view,
            t,
            referrals,
        )
        .await?;
        Ok(Response::new(t))
    }
}

/// The (name, case id) of each referral, for the access log.
fn refs<'a>(rs: impl IntoIterator<Item = &'a Referral>) -> Vec<(String, String)> {
    rs.into_iter()
        .map(|r| (r.name.clone(), r.case_id.clone()))
        .collect()
}

#[tonic::async_trait]
impl PoliceReferralService for PoliceReferral {
    async fn create_referral(
        &self,
        r: Request<CreateReferralRequest>,
    ) -> Reply<CreateReferralResponse> {
        masked(self.create(r).await?)
    }
    async fn get_referral(&self, r: Request<GetReferralRequest>) -> Reply<GetReferralResponse> {
        let cv = caller_view(&r)?;
        let resp = self.get(r).await?;
        let refs = refs(&resp.referral);
        self.disclosed("GetReferral", cv, resp, &refs).await
    }
    async fn list_referrals(
        &self,
        r: Request<ListReferralsRequest>,
    ) -> Reply<ListReferralsResponse> {
        let cv = caller_view(&r)?;
        let resp = self.list(r).await?;
        let refs = refs(&resp.referrals);
        self.disclosed("ListReferrals", cv, resp, &refs).await
    }
    async fn override_screening(
        &self,
        r: Request<OverrideScreeningRequest>,
    ) -> Reply<OverrideScreeningResponse> {
        masked(PoliceReferral::override_screening(self, r).await?)
    }
    async fn draft_transfer(
        &self,
        r: Request<DraftTransferRequest>,
    ) -> Reply<DraftTransferResponse> {
        masked(PoliceReferral::draft_transfer(self, r).await?)
    }
    /// Investigation tasks hold no party (questions and answers are redacted free text).
    async fn list_investigation_tasks(
        &self,
        r: Request<ListInvestigationTasksRequest>,
    ) -> Reply<ListInvestigationTasksResponse> {
        Ok(Response::new(self.list_tasks(r).await?))
    }
    async fn answer_investigation(
        &self,
        r: Request<AnswerInvestigationRequest>,
    ) -> Reply<AnswerInvestigationResponse> {
        Ok(Response::new(self.answer(r).await?))
    }
    async fn acknowledge_feedback(
        &self,
        r: Request<AcknowledgeFeedbackRequest>,
    ) -> Reply<AcknowledgeFeedbackResponse> {
        masked(self.acknowledge(r).await?)
    }
    async fn get_referral_file(
        &self,
        r: Request<GetReferralFileRequest>,
    ) -> Reply<GetReferralFileResponse> {
        let cv = caller_view(&r)?;
        let resp = self.file(r).await?;
        let refs = refs(
            resp.referral_file
                .iter()
                .filter_map(|f| f.referral.as_ref()),
        );
        self.disclosed("GetReferralFile", cv, resp, &refs).await
    }
}
