//! Store-and-forward delivery of envelopes to agencies (消息投递).
//!
//! Delivery is at-least-once with idempotent receipt, which gives an exactly-once effect
//! (DESIGN.md §2 "Delivery"):
//!
//! * **Producer** — whoever changes state calls [`enqueue`] inside its write transaction; the
//!   change and its envelope commit or roll back together (transactional outbox, the shared
//!   `outbox` table of `fengqiao_store`). [`enqueue`] numbers the envelope within its case
//!   (`case_sequences`, gap-free: the counter row is updated in the same transaction) and
//!   gives it a UUIDv7 `message_id` if it has none. After the commit the producer may call
//!   [`Delivery::wake`] so workers and pull streams look at once instead of at their next poll.
//! * **Ordering** — the outbox ordering key is `"{to_agency}|{case_id}"`: one receiver sees the
//!   envelopes of one case one at a time, in `sequence` order (a later one is not handed out
//!   until the earlier one is delivered). Different receivers of the same case do not hold each
//!   other up (a dead or unacknowledged envelope for one agency blocks only that agency).
//! * **Claiming is by state, never by cursor.** Messages are claimed with a lease
//!   ([`fengqiao_store::outbox::claim_for`]); on PostgreSQL an envelope whose transaction
//!   commits after a later-numbered one is still claimed, because "pending and due" is what
//!   selects it, not "above the last id seen".
//! * **Push** — [`Delivery::run_push_worker`] claims due messages whose destination agency is
//!   in `DELIVERY_MODE_PUSH`, calls that agency's `AgencyInboxService.Deliver` (no transaction
//!   is held across the call), and marks the message delivered (also on `duplicate = true`) or
//!   failed with exponential backoff and jitter. After [`DeliveryConfig::max_attempts`] failed
//!   attempts the message is dead and a delivery incident (投递异常) is open; an administrator
//!   retries it with `RetryDeliveryIncident`. A receiver answering FAILED_PRECONDITION /
//!   `NO_HANDLER` (nothing at its endpoint keeps records for the envelope's route and
//!   recipient side) opens the incident at once ([`permanent_refusal`]). Several workers
//!   (router replicas) may run at once: the lease makes each claim exclusive for its duration.
//! * **Pull** — [`DeliveryApi`] implements `DeliveryService`: `PullMessages` streams the
//!   caller's agency's messages (agencies in `DELIVERY_MODE_PULL` only), each claimed with a
//!   lease ([`DeliveryConfig::pull_lease`]); `AcknowledgeMessages` marks them delivered.
//!   Unacknowledged messages are streamed again once their lease expires, or at once when the
//!   stream that held them ends. The request `cursor` is validated and echoed but never
//!   decides what is sent.
//! * **Leases and shutdown** — the push lease ([`DeliveryConfig::push_lease`], default the call
//!   timeout + [`PUSH_LEASE_MARGIN`]) only has to outlive one push attempt: a message whose
//!   push was cut by a crash, and the later messages of its case behind it, wait at most that
//!   long. On shutdown workers and pull streams release their leases; [`Delivery::stopped`]
//!   resolves once they all have, and the process closes its store only after that.
//! * **A receiver that is back drains at once** — when a push to an agency succeeds, when a
//!   probe finds a failing agency's endpoint answering again (health, every [`PROBE_EVERY`]),
//!   or when the agency opens a pull stream or acknowledges, its other messages waiting out a
//!   backoff become due at once ([`fengqiao_store::outbox::expedite`]); attempts are kept.
//! * **Receiver** — agency services implement `AgencyInboxService.Deliver` with
//!   [`receive_once`] or [`receive_in_order`] (see their docs for the pattern).
//!
//! Personal information: envelopes' payloads are never logged, traced or stored in errors;
//! logs and incidents carry message ids, case ids (UUIDs), agency names and status codes only.

use fengqiao_kit::Reason;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::client::{CallInterceptor, channel};
use fengqiao_kit::handler::check;
use fengqiao_kit::metrics::code_name;
use fengqiao_kit::server::Shutdown;
use fengqiao_kit::{ApiError, FieldViolation, Identity, validate};
use fengqiao_proto::inbox::agency_inbox_service_client::AgencyInboxServiceClient;
use fengqiao_proto::inbox::{
    DeliverRequest, DeliverResponse, Envelope, MessageKind, RecipientSide,
};
use fengqiao_proto::router::delivery_service_server::DeliveryService;
use fengqiao_proto::router::{
    AcknowledgeMessagesRequest, AcknowledgeMessagesResponse, DeliveryIncident,
    DeliveryIncidentState, DeliveryMode, ListDeliveryIncidentsRequest,
    ListDeliveryIncidentsResponse, PullMessagesRequest, PullMessagesResponse,
    RetryDeliveryIncidentRequest, RetryDeliveryIncidentResponse,
};
use fengqiao_store::outbox::{self, NewMessage, OutboxMessage};
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx, db_now_micros};
use prost::Message as _;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::agencies::{Agencies, ROLE_PLATFORM_ADMIN};
use crate::error::{Error, Result};
use crate::time::to_timestamp;
use fengqiao_kit::idem::Idem;

/// Longest receiver status message kept in an incident, in characters.
const MAX_ERROR_MESSAGE_CHARS: usize = 200;
/// Default and maximum `PullMessagesRequest.max_unacknowledged`.
const DEFAULT_MAX_UNACKED: u32 = 100;
const MAX_MAX_UNACKED: u32 = 1000;
/// Most ids one `AcknowledgeMessages` call may carry.
const MAX_ACK_IDS: usize = 1000;
/// Most push destinations considered in one worker round.
const MAX_PUSH_DESTINATIONS: i64 = 1000;
/// Margin of the default push lease over the push call's timeout: recording the outcome after
/// the call, and clock differences between router replicas and the database.
pub const PUSH_LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often a push worker probes the endpoints of agencies whose pushes are failing, to
/// notice they are back without waiting out the backoff.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Tuning of delivery. Defaults suit production; tests shorten every duration.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Backoff after the first failed push attempt; doubles with each further failure.
    pub base_backoff: Duration,
    /// Longest backoff between push attempts.
    pub max_backoff: Duration,
    /// Jitter of the backoff, as a fraction (0 = none, 1 = anywhere in `[0, 2·d]`).
    pub jitter: f64,
    /// Failed push attempts after which the message is dead and an incident opens.
    pub max_attempts: u32,
    /// How long a push worker holds a claimed message; longer than [`Self::call_timeout`]
    /// (default: the call timeout + [`PUSH_LEASE_MARGIN`]). A message whose push was cut by a
    /// crash is pushed again once it runs out.
    pub push_lease: Duration,
    /// Deadline of one `Deliver` call.
    pub call_timeout: Duration,
    /// Most pushes a push worker has in flight at once (and claims per [`Delivery::push_round`]). 128: every
    /// state change now reaches every party, about three envelopes per 110 intake, and with 32
    /// a burst of intakes left a backlog the offers queued behind (bench: full cycles after
    /// an intake burst fell to 0 within the 15 s poll; 128 restores them).
    pub push_batch: u32,
    /// How long a streamed message waits for its acknowledgement before it is streamed again.
    pub pull_lease: Duration,
    /// How often an idle pull stream looks for new messages (a [`Delivery::wake`] is sooner).
    pub pull_poll: Duration,
    /// How long an idle following pull stream waits before sending a heartbeat.
    pub pull_heartbeat: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let call_timeout = Duration::from_secs(10);
        Self {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            jitter: 0.2,
            max_attempts: 12,
            push_lease: call_timeout + PUSH_LEASE_MARGIN,
            call_timeout,
            push_batch: 128,
            pull_lease: Duration::from_secs(60),
            pull_poll: Duration::from_millis(200),
            pull_heartbeat: Duration::from_secs(15),
        }
    }
}

/// Supplies the router's service credential for push calls (`None`: send no token, e.g. when
/// mutual TLS identifies the router). Called once per `Deliver` call, so it may refresh.
pub type TokenProvider = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Consequences of a delivery, applied in the transaction that marks the message delivered
/// (e.g. the transfers module moves an offered transfer APPROVED → DELIVERED and starts the
/// acceptance clock). Called once per message, when it is first marked delivered. An error
/// rolls the receipt back; the message is then delivered again later (receivers de-duplicate).
#[tonic::async_trait]
pub trait OnDelivered: Send + Sync {
    /// Applies the consequences of `envelope` having been delivered.
    async fn delivered(&self, tx: &mut Tx, envelope: &Envelope) -> Result<()>;

    /// Called after the transaction in which [`OnDelivered::delivered`] ran has committed
    /// (e.g. to wake watch streams only once the change is visible).
    fn committed(&self) {}
}

/// Where and in which trace a claimed message is pushed.
#[derive(Debug, Clone, Default)]
struct Push {
    /// The receiving agency's endpoint.
    endpoint: String,
    /// The stored `traceparent` of the change that enqueued it.
    trace: Option<String>,
}

/// The outbox ordering key of an envelope: per receiving agency and case.
pub fn ordering_key(to_agency: &str, case_id: &str) -> String {
    format!("{to_agency}|{case_id}")
}

/// Adds `envelope` to the outbox in the caller's write transaction and returns it completed:
/// `message_id` (a UUIDv7 when empty), `sequence` (the next number of its case; any value
/// given is replaced) and `occurred_at` (database time when unset). The destination is
/// `envelope.to_agency`, the outbox `kind` the [`MessageKind`]'s proto name.
///
/// On PostgreSQL the case's counter row stays locked until the transaction ends, so
/// transactions enqueueing for one case are serialised and commit in `sequence` order. A
/// transaction enqueueing for several cases should do so in a consistent order (e.g. by case
/// id) or it may be aborted as a deadlock and must be retried.
pub async fn enqueue(tx: &mut Tx, envelope: Envelope) -> Result<Envelope> {
    let mut done = enqueue_all(tx, vec![envelope]).await?;
    done.pop()
        .ok_or_else(|| Error::Corrupt("an enqueued envelope went missing".into()))
}

/// [`enqueue`] of several envelopes (e.g. every party's copy of one change) in the caller's
/// write transaction, with one counter update per case and one outbox insert for all: the
/// envelopes of a case are numbered in the order given. Validation is the same; one invalid
/// envelope enqueues none.
pub async fn enqueue_all(tx: &mut Tx, mut envelopes: Vec<Envelope>) -> Result<Vec<Envelope>> {
    let mut v = Vec::new();
    for envelope in &envelopes {
        v.extend(envelope_violations(envelope));
    }
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    if envelopes.is_empty() {
        return Ok(envelopes);
    }
    let mut now = None;
    for envelope in &mut envelopes {
        if envelope.message_id.is_empty() {
            envelope.message_id = uuid::Uuid::now_v7().to_string();
        }
        if envelope.occurred_at.is_none() {
            let t = match now {
                Some(t) => t,
                None => {
                    let t = db_now_micros(tx).await?;
                    now = Some(t);
                    t
                }
            };
            envelope.occurred_at = Some(to_timestamp(t));
        }
    }
    // Cases in order of first appearance, each with how many envelopes it numbers.
    let mut cases: Vec<(String, i64)> = Vec::new();
    for envelope in &envelopes {
        match cases.iter_mut().find(|(c, _)| *c == envelope.case_id) {
            Some((_, n)) => *n += 1,
            None => cases.push((envelope.case_id.clone(), 1)),
        }
    }
    for (case_id, n) in &cases {
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO case_sequences (case_id, last_sequence) VALUES ($1, $2) \
             ON CONFLICT (case_id) DO UPDATE SET last_sequence = case_sequences.last_sequence + $2 \
             RETURNING last_sequence",
        )
        .bind(case_id)
        .bind(*n)
        .fetch_one(&mut **tx)
        .await
        .map_err(fengqiao_store::Error::from)?;
        let numbered = envelopes.iter_mut().filter(|e| e.case_id == *case_id);
        for (next, envelope) in (last - n + 1..).zip(numbered) {
            envelope.sequence =
                u64::try_from(next).map_err(|_| Error::Corrupt("negative case sequence".into()))?;
        }
    }
    let msgs: Vec<NewMessage> = envelopes
        .iter()
        .map(|envelope| {
            let kind = MessageKind::try_from(envelope.kind).unwrap_or(MessageKind::Unspecified);
            NewMessage {
                id: envelope.message_id.clone(),
                destination: envelope.to_agency.clone(),
                ordering_key: ordering_key(&envelope.to_agency, &envelope.case_id),
                kind: kind.as_str_name().to_string(),
                payload: envelope.encode_to_vec(),
            }
        })
        .collect();
    // The counter rows updated above stay locked until the commit, and every enqueue of the
    // router goes through here (counter first): a message of the same ordering key (receiver
    // and case) waits for this transaction, so the keys need no advisory lock of their own.
    outbox::enqueue_many_serialised(tx, &msgs).await?;
    if let Some(traceparent) = fengqiao_kit::telemetry::current_traceparent() {
        store_trace_context(tx, &msgs, &traceparent).await?;
    }
    Ok(envelopes)
}

/// Stores the enqueuing change's trace context with its messages (`outbox.trace_context`):
/// their delivery pushes continue that trace.
async fn store_trace_context(tx: &mut Tx, msgs: &[NewMessage], traceparent: &str) -> Result<()> {
    for chunk in msgs.chunks(500) {
        let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE outbox SET trace_context = $1 WHERE id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(traceparent);
        for m in chunk {
            q = q.bind(&m.id);
        }
        q.execute(&mut **tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
    }
    Ok(())
}

/// The stored trace contexts of `ids` (those that have one).
async fn trace_contexts(store: &Store, ids: &[&str]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!(
            "SELECT id, trace_context FROM outbox WHERE trace_context IS NOT NULL AND id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q
            .fetch_all(store.pool())
            .await
            .map_err(fengqiao_store::Error::from)?
        {
            out.insert(row_str(&row, "id")?, row_str(&row, "trace_context")?);
        }
    }
    Ok(out)
}

/// What is wrong with an envelope to be enqueued.
fn envelope_violations(envelope: &Envelope) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if envelope.case_id.is_empty() || envelope.case_id.len() > 128 {
        v.push(FieldViolation::new(
            "envelope.case_id",
            "is required, at most 128 characters",
        ));
    }
    if let Err(e) = validate::parse_name("envelope.to_agency", "agencies", &envelope.to_agency) {
        v.push(e);
    }
    let kind = MessageKind::try_from(envelope.kind).ok();
    let known = kind.is_some_and(|k| k != MessageKind::Unspecified);
    check(
        &mut v,
        known,
        "envelope.kind",
        "must be a known message kind",
    );
    let id_ok = envelope.message_id.len() <= 128;
    check(
        &mut v,
        id_ok,
        "envelope.message_id",
        "at most 128 characters",
    );
    v
}

/// Receiver side: records in the caller's transaction that `consumer` received `envelope`.
/// `true` the first time, `false` for a duplicate (same `message_id`).
///
/// The pattern for an `AgencyInboxService.Deliver` implementation, on the agency's own store:
///
/// ```ignore
/// let mut tx = store.write().await?;
/// if !delivery::receive_once(&mut tx, "router-inbox", &envelope).await? {
///     tx.commit().await?;                       // nothing else to do
///     return Ok(DeliverResponse { duplicate: true });
/// }
/// apply_effect(&mut tx, &envelope).await?;      // same transaction
/// tx.commit().await?;                           // only now answer OK
/// Ok(DeliverResponse { duplicate: false })
/// ```
///
/// Any error before the commit rolls the receipt back with the effect, and the router
/// delivers again. Returning OK only after the commit is what makes the effect exactly-once.
pub async fn receive_once(tx: &mut Tx, consumer: &str, envelope: &Envelope) -> Result<bool> {
    if envelope.message_id.is_empty() {
        return Err(FieldViolation::new("envelope.message_id", "is required").into());
    }
    Ok(fengqiao_store::inbox::record_once(tx, consumer, &envelope.message_id).await?)
}

/// What [`receive_in_order`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// First receipt, in order: apply the effect in the same transaction, commit, answer OK.
    New,
    /// Already received: commit (or roll back) and answer OK with `duplicate = true`.
    Duplicate,
    /// A new message whose `sequence` is not above the last one applied for its case: applying
    /// it would break per-case order. Nothing was recorded; answer FAILED_PRECONDITION
    /// ([`Receipt::out_of_order_status`]) so the router retries and, if it persists, opens an
    /// incident for a human.
    OutOfOrder,
}

impl Receipt {
    /// The status a receiver answers for [`Receipt::OutOfOrder`] (no message content).
    pub fn out_of_order_status() -> Status {
        ApiError::new(
            Reason::OutOfOrder,
            "an envelope with a higher sequence of this case was already applied",
        )
        .to_status()
    }
}

/// Receiver side with per-case order: [`receive_once`], then checks that `envelope.sequence`
/// is above the highest sequence `consumer` applied for the case and records it (shared table
/// `inbox_case_sequences`). A receiver sees a subsequence of the case's envelopes (gaps are
/// normal: not every envelope is addressed to it), so "above the last one", not "last + 1",
/// is the check. Use it in place of [`receive_once`] in the pattern shown there.
pub async fn receive_in_order(tx: &mut Tx, consumer: &str, envelope: &Envelope) -> Result<Receipt> {
    let sequence = i64::try_from(envelope.sequence)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| FieldViolation::new("envelope.sequence", "must be positive"))?;
    if envelope.case_id.is_empty() {
        return Err(FieldViolation::new("envelope.case_id", "is required").into());
    }
    if !receive_once(tx, consumer, envelope).await? {
        return Ok(Receipt::Duplicate);
    }
    let advanced = sqlx::query(
        "INSERT INTO inbox_case_sequences (consumer, case_id, last_sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, case_id) DO UPDATE SET last_sequence = excluded.last_sequence \
         WHERE inbox_case_sequences.last_sequence < excluded.last_sequence \
         RETURNING last_sequence",
    )
    .bind(consumer)
    .bind(&envelope.case_id)
    .bind(sequence)
    .fetch_optional(&mut **tx)
    .await
    .map_err(fengqiao_store::Error::from)?;
    if advanced.is_none() {
        // Undo the receipt so that committing by mistake cannot swallow the message.
        sqlx::query("DELETE FROM inbox WHERE consumer = $1 AND message_id = $2")
            .bind(consumer)
            .bind(&envelope.message_id)
            .execute(&mut **tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
        return Ok(Receipt::OutOfOrder);
    }
    Ok(Receipt::New)
}

/// Delivery over the router's store: push worker, pull streams and incident administration.
/// Cheap to clone (shared state is reference-counted).
#[derive(Clone)]
pub struct Delivery {
    store: Store,
    config: Arc<DeliveryConfig>,
    token: TokenProvider,
    tls: Option<ClientTlsConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    on_delivered: Option<Arc<dyn OnDelivered>>,
    commit: Option<fengqiao_store::GroupCommit>,
    wake: Arc<Notify>,
    holders: Arc<Holders>,
    /// Push destinations whose last attempt from this process failed → their endpoint.
    failing: Arc<Mutex<HashMap<String, String>>>,
    /// Receipts of finished pushes waiting to be recorded together.
    receipts: Arc<Mutex<Receipts>>,
}

/// A finished push's receipt waiting for [`Delivery::flush_receipts`]: the message, its
/// envelope (for the [`OnDelivered`] hook) and who waits for the answer (newly delivered?).
struct PendingReceipt {
    id: String,
    envelope: Envelope,
    answer: tokio::sync::oneshot::Sender<Result<bool>>,
}

/// Receipts waiting, and how many flushes are recording receipts now.
#[derive(Default)]
struct Receipts {
    waiting: Vec<PendingReceipt>,
    flushing: usize,
}

/// How many receipt flushes (group-commit jobs) may be under way at once: one in the batch
/// being committed, one waiting for the next batch, so receipts never wait for a batch to end
/// before they are queued for the one after it.
const RECEIPT_FLUSHES: usize = 2;

/// How long the push worker gathers finishing pushes before it claims again (one claim
/// transaction for the messages that became claimable about together).
const CLAIM_GATHER: Duration = Duration::from_millis(2);
/// How long the push worker reuses its list of push destinations with due messages (their
/// endpoints) before reading it again; a destination with no due message yet waits at most
/// this long longer.
const TARGETS_FOR: Duration = Duration::from_millis(100);

/// The push worker's last read of [`Delivery::push_targets`].
#[derive(Debug, Default)]
struct TargetCache {
    at: Option<Instant>,
    map: HashMap<String, String>,
}

fn log_push_outcome(done: std::result::Result<Result<()>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "recording a delivery outcome failed"),
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::warn!(error = %e, "delivery task failed"),
    }
}

/// Count of running lease holders (push workers, pull streams) of one [`Delivery`].
#[derive(Debug, Default)]
struct Holders {
    running: std::sync::atomic::AtomicUsize,
    changed: Notify,
}

/// Held by a running push worker or pull stream; dropped after it released its leases.
struct HolderGuard(Arc<Holders>);

impl Drop for HolderGuard {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .field("on_delivered", &self.on_delivered.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a receiver refused an envelope for good: no service at its endpoint keeps records
/// for the envelope's route and recipient side (`NO_HANDLER`). That is a deployment problem
/// backoff cannot fix, so the incident opens at once; an administrator retries it
/// (`RetryDeliveryIncident`) once the deployment is fixed.
pub fn permanent_refusal(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && fengqiao_kit::error::reason_of(status).as_deref()
            == Some(fengqiao_kit::inbox::NO_HANDLER)
}

/// Fills `route`, `route_version` and `recipient_side` of an envelope enqueued before the
/// envelope carried them, from its `TransferMessage` payload (a recipient that is neither the
/// sender nor the receiver is the approving agency, the only other party told). Envelopes that
/// carry a route are returned unchanged.
pub fn with_route(mut envelope: Envelope) -> Envelope {
    if !envelope.route.is_empty() {
        return envelope;
    }
    let Some(t) = fengqiao_proto::router::TransferMessage::decode(envelope.payload.as_slice())
        .ok()
        .and_then(|m| m.transfer)
    else {
        return envelope;
    };
    let is = |a: &Option<fengqiao_proto::common::AgencyRef>| {
        a.as_ref().is_some_and(|a| a.name == envelope.to_agency)
    };
    let side = if is(&t.from_agency) {
        RecipientSide::Sender
    } else if is(&t.to_agency) {
        RecipientSide::Receiver
    } else {
        RecipientSide::Approver
    };
    envelope.route = t.route;
    envelope.route_version = t.route_version;
    envelope.recipient_side = side as i32;
    envelope
}

/// Where a failed attempt leaves an incident row.
fn incident_state_after_failure(previous: Option<&str>, dead: bool) -> &'static str {
    match (previous, dead) {
        (_, true) | (Some("open" | "retry_scheduled"), false) => "open",
        _ => "failing",
    }
}

fn truncate_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn row_str(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get(col).map_err(fengqiao_store::Error::from)?)
}

fn row_i64(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get(col).map_err(fengqiao_store::Error::from)?)
}

fn row_opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get(col).map_err(fengqiao_store::Error::from)?)
}

const INCIDENT_COLUMNS: &str = "id, message_id, case_id, transfer, kind, to_agency, endpoint, \
    state, attempt_count, last_error_code, last_error_message, first_failure_time, \
    last_failure_time, next_attempt_time, resolve_time, version";

fn state_to_proto(s: &str) -> DeliveryIncidentState {
    match s {
        "open" => DeliveryIncidentState::Open,
        "retry_scheduled" => DeliveryIncidentState::RetryScheduled,
        "resolved" => DeliveryIncidentState::Resolved,
        _ => DeliveryIncidentState::Unspecified,
    }
}

fn row_to_incident(row: &AnyRow) -> Result<DeliveryIncident> {
    let state = row_str(row, "state")?;
    Ok(DeliveryIncident {
        name: format!("deliveryIncidents/{}", row_str(row, "id")?),
        message_id: row_str(row, "message_id")?,
        case_id: row_str(row, "case_id")?,
        transfer: row_str(row, "transfer")?,
        kind: i32::try_from(row_i64(row, "kind")?).unwrap_or(0),
        to_agency: row_str(row, "to_agency")?,
        endpoint: row_str(row, "endpoint")?,
        state: state_to_proto(&state) as i32,
        attempt_count: u32::try_from(row_i64(row, "attempt_count")?).unwrap_or(u32::MAX),
        last_error_code: row_str(row, "last_error_code")?,
        last_error_message: row_str(row, "last_error_message")?,
        first_failure_time: Some(to_timestamp(row_i64(row, "first_failure_time")?)),
        last_failure_time: Some(to_timestamp(row_i64(row, "last_failure_time")?)),
        next_attempt_time: row_opt_i64(row, "next_attempt_time")?.map(to_timestamp),
        resolve_time: row_opt_i64(row, "resolve_time")?.map(to_timestamp),
        etag: format!("\"{}\"", row_i64(row, "version")?),
    })
}

fn require_admin(who: &Identity) -> Result<()> {
    if who.has_role(ROLE_PLATFORM_ADMIN) {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("delivery incidents need the role {ROLE_PLATFORM_ADMIN}"),
        ))
    }
}

async fn incident_in(tx: &mut Tx, id: &str) -> Result<Option<(DeliveryIncident, String)>> {
    let row = sqlx::query(&format!(
        "SELECT {INCIDENT_COLUMNS} FROM delivery_incidents WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(fengqiao_store::Error::from)?;
    match row {
        Some(r) => Ok(Some((row_to_incident(&r)?, row_str(&r, "state")?))),
        None => Ok(None),
    }
}

impl Delivery {
    /// Delivery over the router's migrated `store`, with `token` for push calls.
    pub fn new(store: Store, config: DeliveryConfig, token: TokenProvider) -> Self {
        Self {
            store,
            config: Arc::new(config),
            token,
            tls: None,
            channels: Arc::new(Mutex::new(HashMap::new())),
            on_delivered: None,
            commit: None,
            wake: Arc::new(Notify::new()),
            holders: Arc::new(Holders::default()),
            failing: Arc::new(Mutex::new(HashMap::new())),
            receipts: Arc::new(Mutex::new(Receipts::default())),
        }
    }

    /// Registers a lease holder (synchronously, before its task is spawned, so that
    /// [`Delivery::stopped`] cannot miss it).
    fn hold(&self) -> HolderGuard {
        self.holders
            .running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        HolderGuard(self.holders.clone())
    }

    /// Resolves once every push worker and pull stream of this `Delivery` has ended and
    /// released its leases (after their shutdown signal). Close the store only after this, or
    /// the leases stay held until they expire.
    pub async fn stopped(&self) {
        loop {
            let changed = self.holders.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self
                .holders
                .running
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                return;
            }
            changed.await;
        }
    }

    /// Makes `agency`'s messages that wait out a backoff due now (the agency is reachable
    /// again), and brings their failing incidents' next attempt forward. Returns how many.
    pub async fn expedite(&self, agency: &str) -> Result<u64> {
        let mut tx = self.store.write().await?;
        let n = Self::expedite_in(&mut tx, agency).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        if n > 0 {
            tracing::info!(
                to_agency = agency,
                messages = n,
                "receiver is back; backlog due now"
            );
            self.wake();
        }
        Ok(n)
    }

    async fn expedite_in(tx: &mut Tx, agency: &str) -> Result<u64> {
        let n = outbox::expedite_in(tx, agency).await?;
        if n > 0 {
            let now = db_now_micros(tx).await?;
            sqlx::query(
                "UPDATE delivery_incidents SET next_attempt_time = $2, version = version + 1 \
                 WHERE to_agency = $1 AND state = 'failing' AND next_attempt_time > $2",
            )
            .bind(agency)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
        }
        Ok(n)
    }

    /// Probes the endpoints of destinations whose pushes failed; each that answers again has
    /// its backlog made due ([`Delivery::expedite`]).
    async fn probe_failing(&self) {
        let failing: Vec<(String, String)> = self
            .failing
            .lock()
            .map(|m| m.iter().map(|(d, e)| (d.clone(), e.clone())).collect())
            .unwrap_or_default();
        let timeout = self.config.call_timeout.min(Duration::from_secs(2));
        let mut set = tokio::task::JoinSet::new();
        for (destination, endpoint) in failing {
            let Ok(ch) = self.channel_for(&endpoint) else {
                continue;
            };
            set.spawn(async move {
                let up = fengqiao_kit::client::answers(ch, timeout).await;
                (destination, up)
            });
        }
        while let Some(done) = set.join_next().await {
            if let Ok((destination, true)) = done {
                self.receiver_back(&destination).await;
            }
        }
    }

    /// `destination` answered: forget that it was failing and make its backlog due.
    async fn receiver_back(&self, destination: &str) {
        if let Ok(mut f) = self.failing.lock() {
            f.remove(destination);
        }
        if let Err(e) = self.expedite(destination).await {
            tracing::warn!(to_agency = destination, error = %e, "could not expedite the backlog");
        }
    }

    /// Uses `tls` for `https://` push endpoints (the router's client certificate for mutual
    /// TLS and the agencies' CA).
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Pushes to `endpoint` go over `channel` instead of a new connection: e.g. the
    /// in-process channel ([`fengqiao_kit::client::in_process`]) of the server this router
    /// runs in, for agencies whose push endpoint is that server's own address (no loopback
    /// round trip; the same services and middleware answer).
    pub fn use_channel(&self, endpoint: &str, channel: Channel) {
        if let Ok(mut cache) = self.channels.lock() {
            cache.insert(endpoint.to_string(), channel);
        }
    }

    /// Runs `hook` in the transaction that marks each message delivered.
    pub fn with_on_delivered(mut self, hook: Arc<dyn OnDelivered>) -> Self {
        self.on_delivered = Some(hook);
        self
    }

    /// Records push deliveries through `commit` (the transfers' group committer): the hook
    /// changes transfers, which takes the locks the committer holds, so sharing its
    /// transactions is faster than queueing for them.
    pub fn with_group_commit(mut self, commit: fengqiao_store::GroupCommit) -> Self {
        self.commit = Some(commit);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Tells idle push workers and pull streams of this process to look for messages now
    /// (call after committing a transaction that [`enqueue`]d). Optional: they poll anyway.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// The `DeliveryService` implementation; its pull streams end on `shutdown`.
    pub fn api(&self, shutdown: Shutdown) -> DeliveryApi {
        DeliveryApi {
            delivery: self.clone(),
            shutdown,
        }
    }

    // ---------------------------------------------------------------- push

    /// Push worker loop: claims due messages for agencies in PUSH mode and delivers them,
    /// until `shutdown`. Idles `poll` (or until [`Delivery::wake`]) when there is nothing to
    /// do. On shutdown, in-flight calls are abandoned and their leases released (the messages
    /// are delivered again later; receivers de-duplicate).
    ///
    /// The worker counts for [`Delivery::stopped`] from the moment this is called.
    pub fn run_push_worker(
        self,
        shutdown: Shutdown,
        poll: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let guard = self.hold();
        async move {
            self.push_worker(shutdown, poll).await;
            drop(guard);
        }
    }

    async fn push_worker(self, shutdown: Shutdown, poll: Duration) {
        let worker = format!("push:{}", uuid::Uuid::now_v7());
        tracing::info!(worker, "delivery push worker started");
        let mut last_probe = Instant::now();
        let mut probe: Option<tokio::task::JoinHandle<()>> = None;
        // Pushes in flight. The worker does not wait for a whole round: as pushes finish it
        // claims more (the next message of a case becomes claimable once the one before it is
        // delivered), up to `push_batch` at a time, so one slow receiver does not hold up the
        // others and a case's messages follow each other without waiting for a round.
        let mut inflight: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
        let batch = usize::try_from(self.config.push_batch.max(1)).unwrap_or(usize::MAX);
        let mut targets = TargetCache::default();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if last_probe.elapsed() >= PROBE_EVERY && probe.as_ref().is_none_or(|p| p.is_finished())
            {
                last_probe = Instant::now();
                let this = self.clone();
                probe = Some(tokio::spawn(async move { this.probe_failing().await }));
            }
            // Enabled before claiming, so a wake during the claim is not lost.
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let free = batch.saturating_sub(inflight.len());
            if free > 0 {
                let claimed = tokio::select! {
                    r = self.claim_push(&worker, free, &mut targets) => r,
                    () = shutdown.wait() => break,
                };
                match claimed {
                    Ok(messages) => {
                        for (m, push) in messages {
                            let this = self.clone();
                            inflight.spawn(async move { this.push_one(m, push).await });
                        }
                    }
                    Err(e) => tracing::warn!(worker, error = %e, "claiming deliveries failed"),
                }
            }
            tokio::select! {
                () = shutdown.wait() => break,
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    log_push_outcome(done);
                    // Gather the pushes finishing about now, so that one claim serves them.
                    let gather = tokio::time::sleep(CLAIM_GATHER);
                    tokio::pin!(gather);
                    while !inflight.is_empty() {
                        tokio::select! {
                            () = &mut gather => break,
                            done = inflight.join_next() => match done {
                                Some(done) => log_push_outcome(done),
                                None => break,
                            },
                        }
                    }
                }
                () = tokio::time::sleep(poll.min(PROBE_EVERY)) => {}
                () = &mut wake => {}
            }
        }
        inflight.abort_all();
        while inflight.join_next().await.is_some() {}
        if let Some(p) = probe {
            p.abort();
        }
        if let Err(e) = outbox::release_leases(&self.store, &worker).await {
            tracing::warn!(worker, error = %e, "could not release delivery leases");
        }
        tracing::info!(worker, "delivery push worker stopped");
    }

    /// Claims up to `limit` due messages for PUSH agencies as `worker`, each with its
    /// destination's endpoint.
    async fn claim_push(
        &self,
        worker: &str,
        limit: usize,
        targets: &mut TargetCache,
    ) -> Result<Vec<(OutboxMessage, Push)>> {
        let fresh = targets
            .at
            .is_some_and(|at| at.elapsed() < TARGETS_FOR && !targets.map.is_empty());
        if !fresh {
            targets.map = self.push_targets().await?;
            targets.at = Some(Instant::now());
        }
        if targets.map.is_empty() {
            return Ok(Vec::new());
        }
        let destinations: Vec<String> = targets.map.keys().cloned().collect();
        let claimed = outbox::claim_for(
            &self.store,
            worker,
            &destinations,
            u32::try_from(limit).unwrap_or(u32::MAX),
            self.config.push_lease,
        )
        .await?;
        let ids: Vec<&str> = claimed.iter().map(|m| m.id.as_str()).collect();
        let mut traces = if ids.is_empty() || !fengqiao_kit::telemetry::exporting() {
            HashMap::new()
        } else {
            trace_contexts(&self.store, &ids).await?
        };
        Ok(claimed
            .into_iter()
            .map(|m| {
                let endpoint = targets.map.get(&m.destination).cloned().unwrap_or_default();
                let trace = traces.remove(&m.id);
                (m, Push { endpoint, trace })
            })
            .collect())
    }

    /// One push round as `worker`: claims up to [`DeliveryConfig::push_batch`] due messages
    /// for PUSH agencies and delivers them concurrently, waiting for all of them. Returns how
    /// many were attempted. (The push worker does not run in rounds; this is for tests and
    /// tools that want one deterministic step.)
    pub async fn push_round(&self, worker: &str) -> Result<usize> {
        let mut targets = TargetCache::default();
        let limit = usize::try_from(self.config.push_batch).unwrap_or(usize::MAX);
        let claimed = self.claim_push(worker, limit, &mut targets).await?;
        let n = claimed.len();
        let mut set = tokio::task::JoinSet::new();
        for (m, push) in claimed {
            let this = self.clone();
            set.spawn(async move { this.push_one(m, push).await });
        }
        while let Some(done) = set.join_next().await {
            log_push_outcome(done);
        }
        Ok(n)
    }

    /// Destinations (with endpoints) of due pending messages addressed to PUSH agencies.
    async fn push_targets(&self) -> Result<HashMap<String, String>> {
        let now = self.store.now_micros_pool().await?;
        let rows = sqlx::query(
            "SELECT DISTINCT o.destination, a.endpoint FROM outbox o \
             JOIN agencies a ON a.id = substr(o.destination, 10) \
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
               AND o.destination LIKE 'agencies/%' AND a.delivery_mode = $2 \
             LIMIT $3",
        )
        .bind(now)
        .bind(DeliveryMode::Push as i64)
        .bind(MAX_PUSH_DESTINATIONS)
        .fetch_all(self.store.pool())
        .await
        .map_err(fengqiao_store::Error::from)?;
        rows.iter()
            .map(|r| Ok((row_str(r, "destination")?, row_str(r, "endpoint")?)))
            .collect()
    }

    fn channel_for(&self, endpoint: &str) -> std::result::Result<Channel, Status> {
        let mut cache = self
            .channels
            .lock()
            .map_err(|_| Status::internal("channel cache poisoned"))?;
        if let Some(c) = cache.get(endpoint) {
            return Ok(c.clone());
        }
        let tls = if endpoint.starts_with("https://") {
            self.tls.clone()
        } else {
            None
        };
        let c = channel(endpoint, tls)
            .map_err(|_| Status::invalid_argument("the agency's push endpoint is not usable"))?;
        cache.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    async fn call_deliver(
        &self,
        endpoint: &str,
        envelope: Envelope,
    ) -> std::result::Result<DeliverResponse, Status> {
        if endpoint.is_empty() {
            return Err(Status::failed_precondition(
                "the agency has no push endpoint",
            ));
        }
        let ch = self.channel_for(endpoint)?;
        let mut client =
            AgencyInboxServiceClient::with_interceptor(ch, CallInterceptor::new((self.token)()));
        let mut req = Request::new(DeliverRequest {
            envelope: Some(envelope),
        });
        req.set_timeout(self.config.call_timeout);
        let timeout = self.config.call_timeout + Duration::from_millis(500);
        match tokio::time::timeout(timeout, client.deliver(req)).await {
            Ok(r) => r.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("Deliver timed out")),
        }
    }

    async fn push_one(&self, m: OutboxMessage, push: Push) -> Result<()> {
        let Push { endpoint, trace } = push;
        let envelope = match Envelope::decode(m.payload.as_slice()) {
            Ok(e) => with_route(e),
            Err(_) => {
                let st = Status::internal("the stored envelope cannot be decoded");
                return self
                    .record_failure(&m, &Envelope::default(), &endpoint, &st, true)
                    .await;
            }
        };
        // The CLIENT span of the Deliver call, in the trace of the change that enqueued the
        // message (its stored trace context), with OTel's gRPC attributes.
        let span = tracing::info_span!(
            "delivery.push",
            otel.name = "fengqiao.inbox.v1.AgencyInboxService/Deliver",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "fengqiao.inbox.v1.AgencyInboxService",
            rpc.method = "Deliver",
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            message_id = %m.id,
            case_id = %envelope.case_id,
            to_agency = %m.destination,
            kind = %m.kind,
            attempt = m.attempts,
        );
        if let Some(tp) = trace.as_deref() {
            fengqiao_kit::telemetry::set_parent_traceparent(&span, tp);
        }
        self.push_traced(m, endpoint, envelope, span.clone())
            .instrument(span)
            .await
    }

    /// [`Self::push_one`] inside its span: the call, then its outcome recorded.
    async fn push_traced(
        &self,
        m: OutboxMessage,
        endpoint: String,
        envelope: Envelope,
        span: tracing::Span,
    ) -> Result<()> {
        let started = Instant::now();
        let result = self.call_deliver(&endpoint, envelope.clone()).await;
        let seconds = started.elapsed().as_secs_f64();
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        span.record("rpc.grpc.status_code", code as i32);
        if code != tonic::Code::Ok {
            span.record("otel.status_code", "ERROR");
        }
        match result {
            Ok(resp) => {
                crate::metrics::record_push(&m.destination, "delivered", seconds);
                tracing::debug!(message_id = %m.id, duplicate = resp.duplicate, "delivered");
                self.record_delivered(&m.id, &envelope).await?;
                // The receiver is reachable: if it was failing (here, or — when this message
                // had failed before — for another replica), its backlog need not wait.
                let was_failing = self
                    .failing
                    .lock()
                    .is_ok_and(|f| f.contains_key(&m.destination));
                if was_failing || m.attempts > 1 {
                    self.receiver_back(&m.destination).await;
                }
                Ok(())
            }
            Err(status) => {
                let dead = u32::try_from(m.attempts).unwrap_or(u32::MAX)
                    >= self.config.max_attempts
                    || permanent_refusal(&status);
                crate::metrics::record_push(
                    &m.destination,
                    crate::metrics::push_outcome(false, dead),
                    seconds,
                );
                tracing::warn!(
                    message_id = %m.id,
                    to_agency = %m.destination,
                    attempt = m.attempts,
                    code = code_name(status.code()),
                    dead,
                    "push delivery failed"
                );
                if let Ok(mut f) = self.failing.lock() {
                    f.insert(m.destination.clone(), endpoint.clone());
                }
                self.record_failure(&m, &envelope, &endpoint, &status, dead)
                    .await
            }
        }
    }

    /// Marks `id` delivered, runs the hook, resolves its incident; one transaction. With group
    /// commit, the receipts of pushes that finish together are recorded by one job
    /// ([`Self::flush_receipts`]); the caller hears back once the transaction holding its
    /// receipt has committed, as before.
    async fn record_delivered(&self, id: &str, envelope: &Envelope) -> Result<()> {
        let newly = match &self.commit {
            Some(_) => {
                let (answer, answered) = tokio::sync::oneshot::channel();
                let start = {
                    let mut r = self
                        .receipts
                        .lock()
                        .map_err(|_| Error::Corrupt("receipt queue poisoned".into()))?;
                    r.waiting.push(PendingReceipt {
                        id: id.to_string(),
                        envelope: envelope.clone(),
                        answer,
                    });
                    let start = r.flushing < RECEIPT_FLUSHES;
                    if start {
                        r.flushing += 1;
                    }
                    start
                };
                if start {
                    let this = self.clone();
                    tokio::spawn(async move { this.flush_receipts().await });
                }
                answered.await.map_err(|_| {
                    Error::Store(fengqiao_store::Error::GroupCommit(
                        "the receipt was not recorded (its flush stopped)".into(),
                    ))
                })??
            }
            None => {
                let mut tx = self.store.write().await?;
                let newly = self.mark_delivered_in(&mut tx, id, Some(envelope)).await?;
                tx.commit().await.map_err(fengqiao_store::Error::from)?;
                newly
            }
        };
        if newly && let Some(hook) = &self.on_delivered {
            hook.committed();
        }
        if newly {
            tracing::info!(message_id = id, "message delivered");
        }
        Ok(())
    }

    /// Records the waiting receipts, all of them in one group-commit job (one savepoint, one
    /// outbox update), until none is waiting. If that job fails (e.g. one message's hook), each
    /// of its receipts is recorded again on its own, so one receipt's failure is its own.
    async fn flush_receipts(self) {
        // Gives the flush's place back however it ends (also if the task is cancelled), so the
        // next receipt starts a flush again.
        struct Slot(Arc<Mutex<Receipts>>, bool);
        impl Drop for Slot {
            fn drop(&mut self) {
                if !self.1
                    && let Ok(mut r) = self.0.lock()
                {
                    r.flushing = r.flushing.saturating_sub(1);
                }
            }
        }
        let mut slot = Slot(self.receipts.clone(), false);
        let Some(commit) = self.commit.clone() else {
            return;
        };
        loop {
            let batch = match self.receipts.lock() {
                Ok(mut r) => {
                    if r.waiting.is_empty() {
                        // Given back under the lock that found nothing waiting: a receipt
                        // queued after this starts a flush of its own.
                        r.flushing = r.flushing.saturating_sub(1);
                        slot.1 = true;
                        return;
                    }
                    std::mem::take(&mut r.waiting)
                }
                Err(_) => return,
            };
            let items: Vec<(String, Envelope)> = batch
                .iter()
                .map(|p| (p.id.clone(), p.envelope.clone()))
                .collect();
            let this = self.clone();
            let together = commit
                .run(move |tx| {
                    Box::pin(async move { this.mark_delivered_many_in(tx, &items).await })
                })
                .await;
            match together {
                Ok(newly) => {
                    for (p, n) in batch.into_iter().zip(newly) {
                        let _ = p.answer.send(Ok(n));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    if let Some(p) = batch.into_iter().next() {
                        let _ = p.answer.send(Err(e));
                    }
                }
                Err(_) => {
                    let mut alone = tokio::task::JoinSet::new();
                    for p in batch {
                        let this = self.clone();
                        let commit = commit.clone();
                        alone.spawn(async move {
                            let PendingReceipt {
                                id,
                                envelope,
                                answer,
                            } = p;
                            let r = commit
                                .run(move |tx| {
                                    Box::pin(async move {
                                        this.mark_delivered_in(tx, &id, Some(&envelope)).await
                                    })
                                })
                                .await;
                            let _ = answer.send(r);
                        });
                    }
                    while alone.join_next().await.is_some() {}
                }
            }
        }
    }

    /// [`Self::mark_delivered_in`] for several messages in one outbox update: whether each
    /// was newly delivered. Any error fails them all (the caller's job is rolled back).
    async fn mark_delivered_many_in(
        &self,
        tx: &mut Tx,
        items: &[(String, Envelope)],
    ) -> Result<Vec<bool>> {
        let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
        let marked = outbox::mark_delivered_many_noting_failures_in(tx, &ids).await?;
        let mut newly = Vec::with_capacity(items.len());
        for ((id, envelope), failed_before) in items.iter().zip(marked) {
            let Some(failed_before) = failed_before else {
                newly.push(false);
                continue;
            };
            if let Some(hook) = &self.on_delivered {
                hook.delivered(tx, envelope).await?;
            }
            if failed_before {
                Self::resolve_incident_in(tx, id).await?;
            }
            newly.push(true);
        }
        Ok(newly)
    }

    /// In `tx`: marks `id` delivered (`true` if newly), runs the hook for a newly delivered
    /// message, and resolves or drops its incident row.
    async fn mark_delivered_in(
        &self,
        tx: &mut Tx,
        id: &str,
        envelope: Option<&Envelope>,
    ) -> Result<bool> {
        let Some(failed_before) = outbox::mark_delivered_noting_failures_in(tx, id).await? else {
            return Ok(false);
        };
        if let (Some(hook), Some(env)) = (&self.on_delivered, envelope) {
            hook.delivered(tx, env).await?;
        }
        // An incident row is only ever written together with a failed attempt (`last_error`):
        // a message that never failed has none to resolve (saves three statements per
        // delivery in the group commit).
        if !failed_before {
            return Ok(true);
        }
        Self::resolve_incident_in(tx, id).await?;
        Ok(true)
    }

    /// In `tx`: resolves the incident of delivered message `id` (open or retry scheduled), or
    /// drops its row while it was only failing.
    async fn resolve_incident_in(tx: &mut Tx, id: &str) -> Result<()> {
        let now = db_now_micros(tx).await?;
        sqlx::query(
            "UPDATE delivery_incidents SET state = 'resolved', resolve_time = $2, \
             next_attempt_time = NULL, version = version + 1 \
             WHERE message_id = $1 AND state IN ('open', 'retry_scheduled')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(fengqiao_store::Error::from)?;
        sqlx::query("DELETE FROM delivery_incidents WHERE message_id = $1 AND state = 'failing'")
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
        Ok(())
    }

    /// Records a failed attempt: backoff or death in the outbox, and the incident row.
    async fn record_failure(
        &self,
        m: &OutboxMessage,
        envelope: &Envelope,
        endpoint: &str,
        status: &Status,
        dead: bool,
    ) -> Result<()> {
        let code = code_name(status.code());
        let message = truncate_chars(status.message(), MAX_ERROR_MESSAGE_CHARS);
        let error = format!("{code}: {message}");
        let mut tx = self.store.write().await?;
        let now = db_now_micros(&mut tx).await?;
        let attempt = u32::try_from(m.attempts).unwrap_or(u32::MAX);
        let wait = outbox::backoff(
            attempt,
            self.config.base_backoff,
            self.config.max_backoff,
            self.config.jitter,
        );
        let next = now.saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
        let outcome = if dead {
            outbox::mark_dead_in(&mut tx, &m.id, &error).await
        } else {
            outbox::mark_failed_in(&mut tx, &m.id, &error, next).await
        };
        match outcome {
            Ok(()) => {}
            // Delivered (or given up) by someone else meanwhile: nothing to record.
            Err(fengqiao_store::Error::ConcurrentModification) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let previous: Option<String> =
            sqlx::query_scalar("SELECT state FROM delivery_incidents WHERE message_id = $1")
                .bind(&m.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(fengqiao_store::Error::from)?;
        let state = incident_state_after_failure(previous.as_deref(), dead);
        let next_attempt = (!dead).then_some(next);
        if previous.is_some() {
            sqlx::query(
                "UPDATE delivery_incidents SET state = $2, attempt_count = attempt_count + 1, \
                 last_error_code = $3, last_error_message = $4, last_failure_time = $5, \
                 next_attempt_time = $6, resolve_time = NULL, endpoint = $7, \
                 version = version + 1 WHERE message_id = $1",
            )
            .bind(&m.id)
            .bind(state)
            .bind(code)
            .bind(&message)
            .bind(now)
            .bind(next_attempt)
            .bind(endpoint)
            .execute(&mut *tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
        } else {
            sqlx::query(&format!(
                "INSERT INTO delivery_incidents ({INCIDENT_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11, $11, $12, NULL, 1)"
            ))
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&m.id)
            .bind(&envelope.case_id)
            .bind(&envelope.transfer)
            .bind(i64::from(envelope.kind))
            .bind(&m.destination)
            .bind(endpoint)
            .bind(state)
            .bind(code)
            .bind(&message)
            .bind(now)
            .bind(next_attempt)
            .execute(&mut *tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
        }
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        if dead {
            tracing::error!(
                message_id = %m.id,
                to_agency = %m.destination,
                attempts = m.attempts,
                code,
                "delivery incident opened"
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- pull

    /// Checks that `agency` may pull: registered and in PULL mode.
    async fn check_pull_agency(&self, agency: &str) -> Result<()> {
        let a = Agencies::new(self.store.clone())
            .get(agency)
            .await?
            .ok_or_else(|| Error::NotFound(agency.to_string()))?;
        if a.delivery_mode != DeliveryMode::Pull as i32 {
            return Err(Error::WrongState {
                resource: a.name,
                state: "DELIVERY_MODE_PUSH".into(),
                action: "pull messages (they are pushed to the agency's endpoint)",
            });
        }
        Ok(())
    }

    /// The body of one pull stream; ends when the client goes away, on shutdown, or (not
    /// following) once caught up. Releases its leases at the end, so what was streamed but
    /// not acknowledged is streamed again on the next call.
    async fn pull_loop(
        self,
        agency: String,
        max_unacked: u32,
        follow: bool,
        out: mpsc::Sender<std::result::Result<PullMessagesResponse, Status>>,
        shutdown: Shutdown,
        guard: HolderGuard,
    ) {
        let _guard = guard;
        let worker = format!("pull:{}", uuid::Uuid::now_v7());
        let destinations = [agency.clone()];
        let mut cursor = String::new();
        let mut last_sent = Instant::now();
        let span = tracing::info_span!("delivery.pull", agency = %agency, worker = %worker);
        async {
            loop {
                if shutdown.is_triggered() {
                    let st =
                        ApiError::new(Reason::ShuttingDown, "the router is stopping; reconnect")
                            .to_status();
                    let _ = out.send(Err(st)).await;
                    break;
                }
                let batch = match self.pull_batch(&worker, &destinations, max_unacked).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "pull claim failed");
                        let _ = out.send(Err(e.into())).await;
                        break;
                    }
                };
                let sent_any = !batch.is_empty();
                let mut gone = false;
                for m in batch {
                    let Ok(envelope) = Envelope::decode(m.payload.as_slice()) else {
                        let _ = outbox::mark_dead(
                            &self.store,
                            &m.id,
                            "INTERNAL: the stored envelope cannot be decoded",
                        )
                        .await;
                        continue;
                    };
                    cursor = validate::page_token(&pull_query(&agency), &m.seq.to_string());
                    let resp = PullMessagesResponse {
                        envelope: Some(with_route(envelope)),
                        cursor: cursor.clone(),
                    };
                    if out.send(Ok(resp)).await.is_err() {
                        gone = true;
                        break;
                    }
                    last_sent = Instant::now();
                }
                if gone {
                    break;
                }
                if sent_any {
                    continue;
                }
                if !follow {
                    break;
                }
                if last_sent.elapsed() >= self.config.pull_heartbeat {
                    let hb = PullMessagesResponse {
                        envelope: None,
                        cursor: cursor.clone(),
                    };
                    if out.send(Ok(hb)).await.is_err() {
                        break;
                    }
                    last_sent = Instant::now();
                }
                tokio::select! {
                    () = shutdown.wait() => {}
                    () = out.closed() => break,
                    () = tokio::time::sleep(self.config.pull_poll) => {}
                    () = self.wake.notified() => {}
                }
            }
            if let Err(e) = outbox::release_leases(&self.store, &worker).await {
                tracing::warn!(error = %e, "could not release pull leases");
            }
        }
        .instrument(span)
        .await;
    }

    /// Claims what one pull stream may send now, within its unacknowledged allowance.
    async fn pull_batch(
        &self,
        worker: &str,
        destinations: &[String],
        max_unacked: u32,
    ) -> Result<Vec<OutboxMessage>> {
        let held = outbox::count_leased(&self.store, worker).await?;
        let room = i64::from(max_unacked).saturating_sub(held);
        if room <= 0 {
            return Ok(Vec::new());
        }
        let limit = u32::try_from(room.min(100)).unwrap_or(100);
        Ok(outbox::claim_for(
            &self.store,
            worker,
            destinations,
            limit,
            self.config.pull_lease,
        )
        .await?)
    }

    /// `AcknowledgeMessages` for `who`'s agency: marks the listed messages addressed to it
    /// delivered; ids that are not messages to that agency are returned as unknown (the same
    /// answer whether they exist for another agency or not at all).
    pub async fn acknowledge(
        &self,
        who: &Identity,
        req: AcknowledgeMessagesRequest,
    ) -> Result<AcknowledgeMessagesResponse> {
        let idem = Idem::new(who, "AcknowledgeMessages", &req.request_id, &req)?;
        if req.message_ids.is_empty() || req.message_ids.len() > MAX_ACK_IDS {
            return Err(
                FieldViolation::new("message_ids", "must list 1 to 1000 message ids").into(),
            );
        }
        let bad: Vec<FieldViolation> = req
            .message_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_empty() || id.len() > 128)
            .map(|(i, _)| {
                FieldViolation::new(format!("message_ids[{i}]"), "must be 1-128 characters")
            })
            .collect();
        if !bad.is_empty() {
            return Err(Error::Invalid(bad));
        }
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<AcknowledgeMessagesResponse>(&mut tx).await? {
            return Ok(r);
        }
        let mut seen = BTreeSet::new();
        let mut resp = AcknowledgeMessagesResponse::default();
        for id in &req.message_ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let msg = outbox::get_in(&mut tx, id).await?;
            let Some(msg) = msg.filter(|m| m.destination == who.agency) else {
                resp.unknown_message_ids.push(id.clone());
                continue;
            };
            let envelope = Envelope::decode(msg.payload.as_slice()).ok();
            if self
                .mark_delivered_in(&mut tx, id, envelope.as_ref())
                .await?
            {
                resp.acknowledged_count += 1;
            }
        }
        let expedited = if resp.acknowledged_count > 0 {
            Self::expedite_in(&mut tx, &who.agency).await?
        } else {
            0
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        if resp.acknowledged_count > 0
            && let Some(hook) = &self.on_delivered
        {
            hook.committed();
        }
        if resp.acknowledged_count > 0 {
            tracing::info!(
                agency = %who.agency,
                acknowledged = resp.acknowledged_count,
                expedited,
                "messages acknowledged"
            );
        }
        if expedited > 0 {
            self.wake();
        }
        Ok(resp)
    }

    // ---------------------------------------------------------------- incidents

    /// `ListDeliveryIncidents` (platform administrators): most recently failed first.
    pub async fn list_incidents(
        &self,
        who: &Identity,
        req: &ListDeliveryIncidentsRequest,
    ) -> Result<ListDeliveryIncidentsResponse> {
        require_admin(who)?;
        let size = validate::page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let after = validate::parse_page_token(&req.page_token, &query)?
            .map(|t| {
                t.split_once('|')
                    .and_then(|(time, id)| Some((time.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| {
                        FieldViolation::new("page_token", "is not a token this server issued")
                    })
            })
            .transpose()?;
        let mut states = Vec::new();
        for (i, s) in req.states.iter().enumerate() {
            let st = match DeliveryIncidentState::try_from(*s) {
                Ok(DeliveryIncidentState::Open) => "open",
                Ok(DeliveryIncidentState::RetryScheduled) => "retry_scheduled",
                Ok(DeliveryIncidentState::Resolved) => "resolved",
                _ => {
                    return Err(FieldViolation::new(
                        format!("states[{i}]"),
                        "must be OPEN, RETRY_SCHEDULED or RESOLVED",
                    )
                    .into());
                }
            };
            states.push(st.to_string());
        }
        if states.is_empty() {
            states = vec!["open".into(), "retry_scheduled".into()];
        }
        if !req.to_agency.is_empty() {
            validate::parse_name("to_agency", "agencies", &req.to_agency)?;
        }
        let mut binds: Vec<String> = Vec::new();
        let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM delivery_incidents WHERE state IN (");
        for (i, s) in states.iter().enumerate() {
            binds.push(s.clone());
            sql.push_str(&format!(
                "{}${}",
                if i > 0 { ", " } else { "" },
                binds.len()
            ));
        }
        sql.push(')');
        if !req.to_agency.is_empty() {
            binds.push(req.to_agency.clone());
            sql.push_str(&format!(" AND to_agency = ${}", binds.len()));
        }
        let mut after_time = None;
        if let Some((time, id)) = &after {
            binds.push(id.clone());
            let id_param = binds.len();
            let time_param = binds.len() + 1;
            sql.push_str(&format!(
                " AND (last_failure_time < ${time_param} \
                 OR (last_failure_time = ${time_param} AND id < ${id_param}))"
            ));
            after_time = Some(*time);
        }
        sql.push_str(&format!(
            " ORDER BY last_failure_time DESC, id DESC LIMIT {}",
            size + 1
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        if let Some(t) = after_time {
            q = q.bind(t);
        }
        let rows = q
            .fetch_all(self.store.pool())
            .await
            .map_err(fengqiao_store::Error::from)?;
        let mut next_page_token = String::new();
        let mut incidents = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            if i == size as usize {
                let last = &rows[i - 1];
                next_page_token = validate::page_token(
                    &query,
                    &format!(
                        "{}|{}",
                        row_i64(last, "last_failure_time")?,
                        row_str(last, "id")?
                    ),
                );
                break;
            }
            incidents.push(row_to_incident(r)?);
        }
        Ok(ListDeliveryIncidentsResponse {
            delivery_incidents: incidents,
            next_page_token,
        })
    }

    /// `RetryDeliveryIncident` (platform administrators): an OPEN incident's message is due
    /// again at once and the incident becomes RETRY_SCHEDULED; RETRY_SCHEDULED and RESOLVED
    /// incidents are returned unchanged.
    pub async fn retry_incident(
        &self,
        who: &Identity,
        req: RetryDeliveryIncidentRequest,
    ) -> Result<DeliveryIncident> {
        // The push worker may update the same message at the same moment; on PostgreSQL the
        // loser of that race gets a serialization failure. The whole call is one transaction,
        // so it is run again (a few times) instead of answering ABORTED to an administrator.
        let mut attempts = 0;
        loop {
            match self.retry_incident_once(who, &req).await {
                Err(Error::Store(e)) if e.is_retryable() && attempts < 4 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn retry_incident_once(
        &self,
        who: &Identity,
        req: &RetryDeliveryIncidentRequest,
    ) -> Result<DeliveryIncident> {
        require_admin(who)?;
        let idem = Idem::new(who, "RetryDeliveryIncident", &req.request_id, req)?;
        let id = validate::parse_name("name", "deliveryIncidents", &req.name)?.to_string();
        let mut tx = self.store.write().await?;
        if let Some(r) = idem
            .replay::<RetryDeliveryIncidentResponse>(&mut tx)
            .await?
        {
            return r
                .delivery_incident
                .ok_or_else(|| Error::Corrupt("empty stored response".into()));
        }
        let (incident, state) = incident_in(&mut tx, &id)
            .await?
            .filter(|(_, s)| s != "failing")
            .ok_or_else(|| Error::NotFound(req.name.clone()))?;
        if !req.etag.is_empty() && req.etag != incident.etag {
            return Err(Error::EtagMismatch(incident.name));
        }
        let incident = if state == "open" {
            let msg = outbox::get_in(&mut tx, &incident.message_id)
                .await?
                .ok_or_else(|| Error::Corrupt("incident without its message".into()))?;
            let now = db_now_micros(&mut tx).await?;
            match msg.status {
                outbox::Status::Dead => outbox::retry_dead_in(&mut tx, &msg.id).await?,
                outbox::Status::Pending => {
                    let last = msg.last_error.unwrap_or_default();
                    outbox::mark_failed_in(&mut tx, &msg.id, &last, now).await?;
                }
                outbox::Status::Delivered => {}
            }
            sqlx::query(
                "UPDATE delivery_incidents SET state = 'retry_scheduled', \
                 next_attempt_time = $2, version = version + 1 WHERE id = $1",
            )
            .bind(&id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(fengqiao_store::Error::from)?;
            incident_in(&mut tx, &id)
                .await?
                .map(|(i, _)| i)
                .ok_or_else(|| Error::Corrupt("incident vanished".into()))?
        } else {
            incident
        };
        let resp = RetryDeliveryIncidentResponse {
            delivery_incident: Some(incident.clone()),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await.map_err(fengqiao_store::Error::from)?;
        tracing::info!(incident = %incident.name, message_id = %incident.message_id, "delivery retry scheduled");
        self.wake();
        Ok(incident)
    }
}

/// The `fengqiao.router.v1.DeliveryService` implementation (see [`Delivery::api`]).
#[derive(Clone, Debug)]
pub struct DeliveryApi {
    delivery: Delivery,
    shutdown: Shutdown,
}

/// The query a pull stream's cursor is bound to: the pulling agency's stream.
fn pull_query(agency: &str) -> String {
    format!("pull\n{agency}")
}

fn identity<T>(req: &Request<T>) -> std::result::Result<Identity, Status> {
    Identity::of(req).cloned().map_err(Into::into)
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn pull_messages(
        &self,
        request: Request<PullMessagesRequest>,
    ) -> std::result::Result<Response<BoxStream<PullMessagesResponse>>, Status> {
        let who = identity(&request)?;
        let req = request.into_inner();
        // The cursor is a position hint only; what is streamed is decided by message state.
        validate::parse_page_token(&req.cursor, &pull_query(&who.agency)).map_err(|_| {
            Error::from(FieldViolation::new(
                "cursor",
                "is not a cursor this server issued",
            ))
        })?;
        let max = match req.max_unacknowledged {
            0 => DEFAULT_MAX_UNACKED,
            n => n.min(MAX_MAX_UNACKED),
        };
        self.delivery.check_pull_agency(&who.agency).await?;
        // The agency is here: whatever of its backlog waits out a backoff is due now.
        self.delivery.expedite(&who.agency).await?;
        let (tx, rx) = mpsc::channel(32);
        let guard = self.delivery.hold();
        tokio::spawn(self.delivery.clone().pull_loop(
            who.agency,
            max,
            req.follow,
            tx,
            self.shutdown.clone(),
            guard,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn acknowledge_messages(
        &self,
        request: Request<AcknowledgeMessagesRequest>,
    ) -> std::result::Result<Response<AcknowledgeMessagesResponse>, Status> {
        let who = identity(&request)?;
        Ok(Response::new(
            self.delivery
                .acknowledge(&who, request.into_inner())
                .await?,
        ))
    }

    async fn list_delivery_incidents(
        &self,
        request: Request<ListDeliveryIncidentsRequest>,
    ) -> std::result::Result<Response<ListDeliveryIncidentsResponse>, Status> {
        let who = identity(&request)?;
        Ok(Response::new(
            self.delivery
                .list_incidents(&who, request.get_ref())
                .await?,
        ))
    }

    async fn retry_delivery_incident(
        &self,
        request: Request<RetryDeliveryIncidentRequest>,
    ) -> std::result::Result<Response<RetryDeliveryIncidentResponse>, Status> {
        let who = identity(&request)?;
        let incident = self
            .delivery
            .retry_incident(&who, request.into_inner())
            .await?;
        Ok(Response::new(RetryDeliveryIncidentResponse {
            delivery_incident: Some(incident),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_states_after_failures() {
        assert_eq!(incident_state_after_failure(None, false), "failing");
        assert_eq!(incident_state_after_failure(None, true), "open");
        assert_eq!(
            incident_state_after_failure(Some("failing"), false),
            "failing"
        );
        assert_eq!(incident_state_after_failure(Some("failing"), true), "open");
        assert_eq!(
            incident_state_after_failure(Some("retry_scheduled"), false),
            "open"
        );
        assert_eq!(incident_state_after_failure(Some("open"), false), "open");
        assert_eq!(
            incident_state_after_failure(Some("resolved"), false),
            "failing"
        );
    }

    #[test]
    fn push_lease_outlives_one_push_attempt_only() {
        let c = DeliveryConfig::default();
        assert_eq!(c.push_lease, c.call_timeout + PUSH_LEASE_MARGIN);
        assert!(c.push_lease > c.call_timeout + Duration::from_millis(500));
        assert!(c.push_lease <= Duration::from_secs(15));
    }

    #[test]
    fn ordering_key_is_per_receiver_and_case() {
        assert_eq!(ordering_key("agencies/a", "c1"), "agencies/a|c1");
        assert_ne!(
            ordering_key("agencies/a", "c1"),
            ordering_key("agencies/b", "c1")
        );
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("调解调解", 2), "调解");
        assert_eq!(truncate_chars("ok", 200), "ok");
    }
}
