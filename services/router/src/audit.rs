//! Append-only, hash-chained audit trail (审计日志), DESIGN.md §4.
//!
//! Every state change and every refusal leaves one record in `audit_records`, written in the
//! same transaction as the change ([`append`]) or, for a refusal that changes nothing else, in a
//! short write transaction of its own ([`record_denial`]). [`verify`] walks the chain and
//! reports the first broken link; the `AuditService` RPCs ([`Audit`]) let an auditor verify and
//! list the trail.
//!
//! # The chain
//!
//! Records are numbered `1, 2, 3, …` without gaps. The appender assigns `seq` as the previous
//! maximum + 1 while it holds the store's write serialisation: on SQLite write transactions
//! begin `IMMEDIATE` (one writer at a time); on PostgreSQL [`append`] first takes a
//! transaction-scoped advisory lock ([`fengqiao_store::pg_xact_lock`], class
//! `lock_class::SEQUENCE`, name `audit_records`), held until the caller's transaction ends
//! (taken once per transaction, also when a group-commit batch appends for several changes). The primary key on `seq` refuses a duplicate in any case. Because the lock
//! is held until commit, append audit records as the last step of a transaction, after the
//! transaction's other locks are taken.
//!
//! Each record's `hash` is the lower-case hex SHA-256 of this canonical encoding (all integers
//! big-endian; `str(x)` = the byte length of `x` as a `u64` followed by its UTF-8 bytes):
//!
//! ```text
//! str("fengqiao.audit.v1")
//! seq: i64 | recorded_at: i64 (unix µs, database clock)
//! str(agency) | str(actor) | str(action) | str(resource)
//! case_id: 0x00 when absent, or 0x01 str(case_id)
//! str(outcome: "allowed" | "denied") | str(detail)
//! str(personal_info_fields: sorted PersonalInfoField numbers joined by ",", e.g. "1,3", or "")
//! str(prev_hash)
//! ```
//!
//! `prev_hash` of record 1 is 64 zeros ([`GENESIS_HASH`]); every other record's `prev_hash` is
//! its predecessor's `hash`. Editing, inserting or deleting a record breaks the chain at that
//! record; deleting records at the end of the chain is only detectable against an externally
//! anchored `last_hash` (see [`VerifyReport::last_hash`]). The table also refuses `UPDATE`,
//! `DELETE` (and on PostgreSQL `TRUNCATE`) by trigger.
//!
//! Records never contain personal information: `detail` carries reason codes and state names
//! only, and a read of personal information is recorded by *which fields* were read
//! ([`append_with_personal_info`]), never their values.

use fengqiao_kit::Reason;
use fengqiao_kit::{FieldViolation, Identity};
use fengqiao_proto::common::{Actor, PersonalInfoField};
use fengqiao_proto::router::audit_service_server::AuditService;
use fengqiao_proto::router::{
    AuditRecord, ListAuditRecordsRequest, ListAuditRecordsResponse, VerifyAuditChainRequest,
    VerifyAuditChainResponse,
};
use fengqiao_store::bind::{Bind, bind_all};
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};
use fengqiao_store::{Store, Tx};
use tonic::{Request, Response, Status};

pub use crate::agencies::ROLE_PLATFORM_ADMIN;
use crate::error::{Error, Result};
use crate::time::to_timestamp;

/// Role allowed to read and verify the audit trail (besides [`ROLE_PLATFORM_ADMIN`]).
pub const ROLE_AUDITOR: &str = "auditor";

/// `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Resource name the audit RPCs act on (used in denial records).
pub const AUDIT_RESOURCE: &str = "auditRecords";

/// Domain-separation tag at the start of every hashed record.
const HASH_TAG: &str = "fengqiao.audit.v1";
/// Records read per page by [`verify_range`].
const VERIFY_PAGE: i64 = 500;
/// Default page size of `ListAuditRecords` (audit.proto).
const LIST_DEFAULT_PAGE: u32 = 100;
/// Largest page size of `ListAuditRecords` (audit.proto).
const LIST_MAX_PAGE: u32 = 1000;

const COLUMNS: &str = "seq, recorded_at, agency, actor, action, resource, case_id, outcome, \
                       detail, personal_info_fields, prev_hash, hash";

/// Whether the recorded action was carried out or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action was carried out.
    Allowed,
    /// The action was refused (authorisation, standing, state …).
    Denied,
}

impl Outcome {
    /// The stored (and hashed) form: `allowed` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

/// One record to append. Every field is stored verbatim and covered by the hash.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    /// Agency the actor acts for, as a resource name (`agencies/{agency}`, i.e.
    /// `Identity::agency`).
    pub agency: &'a str,
    /// Actor id (`Identity::actor`), never a person's name.
    pub actor: &'a str,
    /// What was done, as `"<Service>.<Method>"` (e.g. `"TransferService.ApproveTransfer"`), or
    /// `"pii.read"` for a read of personal information.
    pub action: &'a str,
    /// Resource acted on, e.g. `transfers/{transfer}`.
    pub resource: &'a str,
    /// Shared case id (UUID) when the action concerns a case; stored in canonical lower-case
    /// hyphenated form when it parses as a UUID.
    pub case_id: Option<&'a str>,
    /// Carried out or refused.
    pub outcome: Outcome,
    /// Non-personal detail: reason codes and state names only, e.g.
    /// `"state DRAFT→AWAITING_APPROVAL"` or `"ROLE_REQUIRED"`. **Must never contain personal
    /// information** (names, ID numbers, phone numbers, addresses, free text from parties):
    /// the trail is kept forever and shown to auditors.
    pub detail: &'a str,
}

/// The result of verifying (part of) the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// True when every record in the range hashes correctly, links to its predecessor and no
    /// sequence number is missing.
    pub ok: bool,
    /// Number of records that verified (before the first break, if any).
    pub records_checked: u64,
    /// Sequence of the first record whose hash or link does not verify, or that is missing or
    /// unreadable; `None` when `ok`.
    pub first_broken_seq: Option<i64>,
    /// Explanation of the first break, or a summary when `ok`. Never contains record content.
    pub detail: String,
    /// Sequence of the last record that verified (0 if none).
    pub last_seq: i64,
    /// Hash of the last record that verified ([`GENESIS_HASH`] if none), to compare with an
    /// externally anchored value.
    pub last_hash: String,
}

/// A stored record, as read back.
#[derive(Debug, Clone)]
struct Stored {
    seq: i64,
    recorded_at: i64,
    agency: String,
    actor: String,
    action: String,
    resource: String,
    case_id: Option<String>,
    outcome: String,
    detail: String,
    personal_info_fields: String,
    prev_hash: String,
    hash: String,
}

fn db(e: sqlx::Error) -> Error {
    Error::Store(fengqiao_store::Error::from(e))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn put_str(ctx: &mut ring::digest::Context, s: &str) {
    ctx.update(&(s.len() as u64).to_be_bytes());
    ctx.update(s.as_bytes());
}

/// The record hash over the canonical encoding described in the [module docs](self).
#[allow(clippy::too_many_arguments)]
fn compute_hash(
    seq: i64,
    recorded_at: i64,
    agency: &str,
    actor: &str,
    action: &str,
    resource: &str,
    case_id: Option<&str>,
    outcome: &str,
    detail: &str,
    personal_info_fields: &str,
    prev_hash: &str,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    put_str(&mut ctx, HASH_TAG);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&recorded_at.to_be_bytes());
    put_str(&mut ctx, agency);
    put_str(&mut ctx, actor);
    put_str(&mut ctx, action);
    put_str(&mut ctx, resource);
    match case_id {
        None => ctx.update(&[0]),
        Some(c) => {
            ctx.update(&[1]);
            put_str(&mut ctx, c);
        }
    }
    put_str(&mut ctx, outcome);
    put_str(&mut ctx, detail);
    put_str(&mut ctx, personal_info_fields);
    put_str(&mut ctx, prev_hash);
    hex(ctx.finish().as_ref())
}

impl Stored {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            seq: row.try_get("seq").map_err(db)?,
            recorded_at: row.try_get("recorded_at").map_err(db)?,
            agency: row.try_get("agency").map_err(db)?,
            actor: row.try_get("actor").map_err(db)?,
            action: row.try_get("action").map_err(db)?,
            resource: row.try_get("resource").map_err(db)?,
            case_id: row.try_get("case_id").map_err(db)?,
            outcome: row.try_get("outcome").map_err(db)?,
            detail: row.try_get("detail").map_err(db)?,
            personal_info_fields: row.try_get("personal_info_fields").map_err(db)?,
            prev_hash: row.try_get("prev_hash").map_err(db)?,
            hash: row.try_get("hash").map_err(db)?,
        })
    }

    fn recompute(&self) -> String {
        compute_hash(
            self.seq,
            self.recorded_at,
            &self.agency,
            &self.actor,
            &self.action,
            &self.resource,
            self.case_id.as_deref(),
            &self.outcome,
            &self.detail,
            &self.personal_info_fields,
            &self.prev_hash,
        )
    }

    fn to_proto(&self) -> AuditRecord {
        let fields = self
            .personal_info_fields
            .split(',')
            .filter_map(|f| f.parse::<i32>().ok())
            .collect();
        // audit.proto has no outcome field: a refusal is marked in the detail.
        let detail = if self.outcome == Outcome::Denied.as_str() {
            format!("denied: {}", self.detail)
        } else {
            self.detail.clone()
        };
        AuditRecord {
            name: format!("{AUDIT_RESOURCE}/{}", self.seq),
            sequence: u64::try_from(self.seq).unwrap_or(0),
            record_time: Some(to_timestamp(self.recorded_at)),
            actor: Some(Actor {
                agency: self.agency.clone(),
                actor_id: self.actor.clone(),
                display_name: String::new(),
                roles: Vec::new(),
                person: String::new(),
            }),
            action: self.action.clone(),
            resource: self.resource.clone(),
            case_id: self.case_id.clone().unwrap_or_default(),
            personal_info_fields: fields,
            detail,
            previous_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }
}

/// Canonical form of a set of personal-information fields: sorted, de-duplicated numbers
/// joined by `,`; `UNSPECIFIED` is dropped.
fn canonical_fields(fields: &[PersonalInfoField]) -> String {
    let mut n: Vec<i32> = fields
        .iter()
        .filter(|f| **f != PersonalInfoField::Unspecified)
        .map(|f| *f as i32)
        .collect();
    n.sort_unstable();
    n.dedup();
    n.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Serialises appenders on PostgreSQL until the transaction ends (SQLite write transactions
/// are already serialised by `BEGIN IMMEDIATE`).
async fn lock_chain(tx: &mut Tx) -> Result<()> {
    // Through the store's helper, so a group-commit batch takes it once for all its jobs.
    fengqiao_store::pg_xact_lock(tx, fengqiao_store::lock_class::SEQUENCE, &["audit_records"])
        .await?;
    Ok(())
}

/// Batch-memo key of the chain's head (see `fengqiao_store::group`).
const HEAD_MEMO: &str = "router.audit_records.head";

/// Appends one record in the caller's write transaction (from [`Store::write`]) and returns
/// its sequence number. `recorded_at` is the database clock. The record commits or rolls back
/// with the transaction. On PostgreSQL this takes the chain lock until the transaction ends:
/// call it as the last step before commit.
pub async fn append(tx: &mut Tx, entry: &AuditEntry<'_>) -> Result<i64> {
    append_with_personal_info(tx, entry, &[]).await
}

/// Like [`append`], also recording which personal-information fields the action read or
/// wrote (the fields, never their values), e.g. for a `"pii.read"` record.
pub async fn append_with_personal_info(
    tx: &mut Tx,
    entry: &AuditEntry<'_>,
    personal_info_fields: &[PersonalInfoField],
) -> Result<i64> {
    lock_chain(tx).await?;
    // In a group-commit batch the previous job left the head it wrote (the batch holds the
    // chain lock, so nobody else can have appended since).
    let head: Option<(i64, String)> = match fengqiao_store::group::memo_get(tx, HEAD_MEMO) {
        Some(h) => Some(h),
        None => sqlx::query_as("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?,
    };
    let (seq, prev_hash) = match head {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_string()),
    };
    let recorded_at = fengqiao_store::db_now_micros(tx).await?;
    let case_id = entry.case_id.map(|c| match uuid::Uuid::parse_str(c) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => c.to_string(),
    });
    let fields = canonical_fields(personal_info_fields);
    let outcome = entry.outcome.as_str();
    let hash = compute_hash(
        seq,
        recorded_at,
        entry.agency,
        entry.actor,
        entry.action,
        entry.resource,
        case_id.as_deref(),
        outcome,
        entry.detail,
        &fields,
        &prev_hash,
    );
    sqlx::query(&format!(
        "INSERT INTO audit_records ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(seq)
    .bind(recorded_at)
    .bind(entry.agency)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.resource)
    .bind(case_id)
    .bind(outcome)
    .bind(entry.detail)
    .bind(fields)
    .bind(prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    fengqiao_store::group::memo_set(tx, HEAD_MEMO, (seq, hash));
    Ok(seq)
}

/// Records a refusal in a short write transaction of its own: the refused action changes
/// nothing else, but the refusal must be on record.
///
/// The resource of a refusal is what the caller sent (a name that may not exist): an ID
/// number or a mobile number in it is masked before it is recorded, as the trail is kept
/// forever in the clear (PIPL Art 51; the detail is reason codes only).
pub async fn record_denial(store: &Store, entry: &AuditEntry<'_>) -> Result<()> {
    let resource = fengqiao_kit::pii::redact_text(entry.resource);
    let entry = AuditEntry {
        resource: &resource,
        ..*entry
    };
    let mut tx = store.write().await?;
    append(&mut tx, &entry).await?;
    tx.commit().await.map_err(db)?;
    Ok(())
}

/// Verifies the whole chain, reading it in pages.
pub async fn verify(store: &Store) -> Result<VerifyReport> {
    verify_range(store, 1, None).await
}

/// Verifies the whole chain; the entry point of `fengqiao audit verify`.
pub async fn verify_cli(store: &Store) -> Result<VerifyReport> {
    verify(store).await
}

fn broken(
    checked: u64,
    seq: i64,
    detail: String,
    last_seq: i64,
    last_hash: String,
) -> VerifyReport {
    VerifyReport {
        ok: false,
        records_checked: checked,
        first_broken_seq: Some(seq),
        detail,
        last_seq,
        last_hash,
    }
}

/// Verifies records `start..=end` (`start` below 1 means 1; `end` `None` means the head as it
/// was when verification began), reading them in pages. The first record of the range is
/// linked to its predecessor's stored hash (or to [`GENESIS_HASH`] for record 1).
pub async fn verify_range(store: &Store, start: i64, end: Option<i64>) -> Result<VerifyReport> {
    let start = start.max(1);
    let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_records")
        .fetch_one(store.pool())
        .await
        .map_err(db)?;
    let ok_empty = |detail: &str| VerifyReport {
        ok: true,
        records_checked: 0,
        first_broken_seq: None,
        detail: detail.to_string(),
        last_seq: 0,
        last_hash: GENESIS_HASH.to_string(),
    };
    let Some(head) = head else {
        return Ok(ok_empty("the audit trail is empty"));
    };
    let last = end.map_or(head, |e| e.min(head));
    if start > last {
        return Ok(ok_empty("no records in the range"));
    }
    let mut prev_hash = if start == 1 {
        GENESIS_HASH.to_string()
    } else {
        let h: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_records WHERE seq = $1")
            .bind(start - 1)
            .fetch_optional(store.pool())
            .await
            .map_err(db)?;
        match h {
            Some(h) => h,
            None => {
                return Ok(broken(
                    0,
                    start,
                    format!(
                        "record {} (the predecessor of the range) is missing",
                        start - 1
                    ),
                    0,
                    GENESIS_HASH.to_string(),
                ));
            }
        }
    };
    let mut expected = start;
    let mut checked: u64 = 0;
    let mut last_seq = start - 1;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_records WHERE seq >= $1 AND seq <= $2 \
             ORDER BY seq LIMIT {VERIFY_PAGE}"
        ))
        .bind(expected)
        .bind(last)
        .fetch_all(store.pool())
        .await
        .map_err(db)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let Ok(r) = Stored::from_row(row) else {
                return Ok(broken(
                    checked,
                    expected,
                    format!("record {expected} cannot be read (altered column types)"),
                    last_seq,
                    prev_hash,
                ));
            };
            if r.seq != expected {
                return Ok(broken(
                    checked,
                    expected,
                    format!(
                        "record {expected} is missing (next present record is {})",
                        r.seq
                    ),
                    last_seq,
                    prev_hash,
                ));
            }
            if r.prev_hash != prev_hash {
                return Ok(broken(
                    checked,
                    r.seq,
                    format!(
                        "record {} does not link to record {}: previous_hash differs",
                        r.seq,
                        r.seq - 1
                    ),
                    last_seq,
                    prev_hash,
                ));
            }
            if r.recompute() != r.hash {
                return Ok(broken(
                    checked,
                    r.seq,
                    format!(
                        "record {} does not match its hash: content or hash altered",
                        r.seq
                    ),
                    last_seq,
                    prev_hash,
                ));
            }
            checked += 1;
            last_seq = r.seq;
            prev_hash = r.hash;
            expected = r.seq + 1;
        }
    }
    if expected <= last {
        return Ok(broken(
            checked,
            expected,
            format!("record {expected} is missing"),
            last_seq,
            prev_hash,
        ));
    }
    Ok(VerifyReport {
        ok: true,
        records_checked: checked,
        first_broken_seq: None,
        detail: format!("records {start}..={last} verified"),
        last_seq,
        last_hash: prev_hash,
    })
}

/// The audit trail's gRPC service (`AuditService`): verify and list, for auditors and
/// platform administrators only.
#[derive(Clone, Debug)]
pub struct Audit {
    store: Store,
}

/// Checks a free-text filter: at most `max` characters.
fn short_filter(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(FieldViolation::new(field, format!("must be at most {max} characters")).into());
    }
    // No actor, action or resource name holds a control character.
    if value.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must not contain control characters").into());
    }
    Ok(())
}

/// Digest of the filter fields of a list request, tying a page token to its filters.
fn filter_digest(req: &ListAuditRecordsRequest) -> String {
    let mut f = req.clone();
    f.page_size = 0;
    f.page_token.clear();
    let d = ring::digest::digest(&ring::digest::SHA256, &prost::Message::encode_to_vec(&f));
    hex(&d.as_ref()[..8])
}

impl Audit {
    /// The audit service over `store` (already migrated).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Lets auditors and platform administrators through; records and refuses everyone else.
    pub async fn authorise(&self, who: &Identity, action: &str) -> Result<()> {
        if who.has_role(ROLE_AUDITOR) || who.has_role(ROLE_PLATFORM_ADMIN) {
            return Ok(());
        }
        let entry = AuditEntry {
            agency: &who.agency,
            actor: &who.actor,
            action,
            resource: AUDIT_RESOURCE,
            case_id: None,
            outcome: Outcome::Denied,
            detail: "ROLE_REQUIRED",
        };
        if let Err(e) = record_denial(&self.store, &entry).await {
            // Still refused; the failure to record it is an operational problem to see.
            tracing::error!(error = %e, action, "could not record an audit denial");
        }
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("the audit trail needs the role {ROLE_AUDITOR} or {ROLE_PLATFORM_ADMIN}"),
        ))
    }

    /// `VerifyAuditChain` for an authorised caller.
    pub async fn verify_chain(
        &self,
        req: &VerifyAuditChainRequest,
    ) -> Result<VerifyAuditChainResponse> {
        let start = i64::try_from(req.start_sequence)
            .map_err(|_| Error::from(FieldViolation::new("start_sequence", "is too large")))?;
        let end = i64::try_from(req.end_sequence)
            .map_err(|_| Error::from(FieldViolation::new("end_sequence", "is too large")))?;
        if end != 0 && end < start {
            return Err(FieldViolation::new(
                "end_sequence",
                "must be 0 or not below start_sequence",
            )
            .into());
        }
        let r = verify_range(&self.store, start, (end != 0).then_some(end)).await?;
        Ok(VerifyAuditChainResponse {
            ok: r.ok,
            records_checked: r.records_checked,
            first_broken_sequence: r.first_broken_seq.and_then(|s| u64::try_from(s).ok()),
            detail: r.detail,
            last_sequence: u64::try_from(r.last_seq).unwrap_or(0),
            last_hash: r.last_hash,
        })
    }

    /// `ListAuditRecords` for an authorised caller: records in sequence order, filtered.
    pub async fn list(&self, req: &ListAuditRecordsRequest) -> Result<ListAuditRecordsResponse> {
        let size = match req.page_size {
            s if s < 0 => {
                return Err(FieldViolation::new("page_size", "must not be negative").into());
            }
            0 => LIST_DEFAULT_PAGE,
            s => u32::try_from(s).unwrap_or(LIST_MAX_PAGE).min(LIST_MAX_PAGE),
        };
        let digest = filter_digest(req);
        let query = fengqiao_kit::list_query!(req, "");
        let after: i64 = match fengqiao_kit::validate::parse_page_token(&req.page_token, &query)? {
            None => 0,
            Some(t) => {
                let bad = || FieldViolation::new("page_token", "is not a token this server issued");
                let (seq, d) = t.split_once('.').ok_or_else(bad)?;
                if d != digest {
                    return Err(FieldViolation::new(
                        "page_token",
                        "was issued for different filters",
                    )
                    .into());
                }
                seq.parse().map_err(|_| bad())?
            }
        };
        let mut violations = Vec::new();
        let mut binds = vec![Bind::Int(after)];
        let mut sql = format!("SELECT {COLUMNS} FROM audit_records WHERE seq > $1");
        let mut add = |binds: &mut Vec<Bind>, clause: &str, b: Bind| {
            binds.push(b);
            sql.push_str(&format!(" AND {clause} ${}", binds.len()));
        };
        if !req.case_id.is_empty() {
            match uuid::Uuid::parse_str(&req.case_id) {
                Ok(u) => add(
                    &mut binds,
                    "case_id =",
                    Bind::Text(u.hyphenated().to_string()),
                ),
                Err(_) => violations.push(FieldViolation::new("case_id", "must be a UUID")),
            }
        }
        if !req.agency.is_empty() {
            match fengqiao_kit::validate::parse_name("agency", "agencies", &req.agency) {
                Ok(_) => add(&mut binds, "agency =", Bind::Text(req.agency.clone())),
                Err(v) => violations.push(v),
            }
        }
        for (field, column, value) in [
            ("actor_id", "actor =", &req.actor_id),
            ("action", "action =", &req.action),
            ("resource", "resource =", &req.resource),
        ] {
            if value.is_empty() {
                continue;
            }
            match short_filter(field, value, 256) {
                Ok(()) => add(&mut binds, column, Bind::Text(value.clone())),
                Err(Error::Invalid(v)) => violations.extend(v),
                Err(e) => return Err(e),
            }
        }
        for (field, column, t) in [
            ("start_time", "recorded_at >=", &req.start_time),
            ("end_time", "recorded_at <", &req.end_time),
        ] {
            if let Some(t) = t {
                match fengqiao_kit::time::parse_timestamp(field, t) {
                    Ok(t) => add(&mut binds, column, Bind::Int(t)),
                    Err(v) => violations.push(v),
                }
            }
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", size + 1));
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(self.store.pool())
            .await
            .map_err(db)?;
        let mut records = rows
            .iter()
            .map(Stored::from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_page_token = if records.len() > size as usize {
            records.truncate(size as usize);
            records
                .last()
                .map(|r| fengqiao_kit::validate::page_token(&query, &format!("{}.{digest}", r.seq)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListAuditRecordsResponse {
            audit_records: records.iter().map(Stored::to_proto).collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn verify_audit_chain(
        &self,
        request: Request<VerifyAuditChainRequest>,
    ) -> std::result::Result<Response<VerifyAuditChainResponse>, Status> {
        let who = Identity::of(&request)?.clone();
        self.authorise(&who, "AuditService.VerifyAuditChain")
            .await?;
        Ok(Response::new(self.verify_chain(request.get_ref()).await?))
    }

    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> std::result::Result<Response<ListAuditRecordsResponse>, Status> {
        let who = Identity::of(&request)?.clone();
        self.authorise(&who, "AuditService.ListAuditRecords")
            .await?;
        Ok(Response::new(self.list(request.get_ref()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_unambiguous() {
        let a = compute_hash(
            1,
            2,
            "ab",
            "c",
            "x",
            "r",
            None,
            "allowed",
            "",
            "",
            GENESIS_HASH,
        );
        let b = compute_hash(
            1,
            2,
            "a",
            "bc",
            "x",
            "r",
            None,
            "allowed",
            "",
            "",
            GENESIS_HASH,
        );
        assert_ne!(a, b);
        let c = compute_hash(
            1,
            2,
            "a",
            "b",
            "x",
            "r",
            Some(""),
            "allowed",
            "",
            "",
            GENESIS_HASH,
        );
        let d = compute_hash(
            1,
            2,
            "a",
            "b",
            "x",
            "r",
            None,
            "allowed",
            "",
            "",
            GENESIS_HASH,
        );
        assert_ne!(c, d);
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn fields_are_canonical() {
        use PersonalInfoField as F;
        assert_eq!(
            canonical_fields(&[F::PartyPhone, F::PartyName, F::PartyPhone, F::Unspecified]),
            "1,3"
        );
        assert_eq!(canonical_fields(&[]), "");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
