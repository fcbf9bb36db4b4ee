//! The gRPC handlers of `PoliceReferralService`: validate, check the caller, call the router
//! first where the transfer changes, then commit the referral ([`crate::store`]).

use crate::domain::*;
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::store::*;
use crate::*;
use fengqiao_kit::handler;
use fengqiao_kit::idem::Idem;
use fengqiao_kit::pii::{self, Personal};
use fengqiao_kit::records::{Filtered, keyset_page};
use fengqiao_kit::server::ServerBuilder;
use fengqiao_kit::time::{from_timestamp as from_ts, to_timestamp as to_ts};
use fengqiao_kit::{FieldViolation, Identity, Reason};
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::policereferral::police_referral_service_server::{
    PoliceReferralService, PoliceReferralServiceServer,
};
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    CaseSnapshot, GetCaseTimelineRequest, Investigation, InvestigationState, TransferEvent,
    TransferState,
};
use fengqiao_store::bind::{Bind, bind_all};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, Tx, seal};
use prost::Message as _;
use tonic::{Request, Status};

/// Roles that may take in a referral at a station.
pub(crate) const STATION_INTAKE_ROLES: &[&str] = &["officer", "duty_chief", "dispatcher"];

/// Roles that may override screening (人工研判).
pub(crate) const OVERRIDE_ROLES: &[&str] = &["officer", "command_room_reviewer", "duty_chief"];

/// Roles that may draft the 移送单 and answer investigations at the station.
pub(crate) const STATION_ROLES: &[&str] = &["officer", "duty_chief"];

/// Roles that may report the result to the command room (反馈指挥室).
pub(crate) const ACK_ROLES: &[&str] = &["officer", "duty_chief", "command_room_reviewer"];

pub(crate) fn has_any(who: &Identity, roles: &[&str]) -> bool {
    roles.iter().any(|r| who.has_role(r))
}

pub(crate) fn need_role(who: &Identity, roles: &[&str], action: &str) -> Result<()> {
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
pub(crate) fn wrong_state(name: &str, state: i32, action: lifecycle::Action) -> Error {
    Error::WrongState {
        resource: name.to_string(),
        state: state_name(state),
        action: action.name(),
    }
}

/// The request id of a call this service makes to the router for a client's call: derived
/// only from the method, the referral and the client's `request_id`, so a retry sends the
/// router the very same request and gets the first answer back.
pub(crate) fn router_rid(method: &str, referral: &str, request_id: &str) -> String {
    fengqiao_kit::agency::router_rid("police", method, referral, request_id)
}

/// A router refusal of a call whose referral already showed its result: the router refused a
/// new call (not a retry of the one that produced it), so the answer is the local wrong state.
pub(crate) fn routed_error(
    status: Status,
    retried: bool,
    r: &Referral,
    action: &'static str,
) -> Error {
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

/// Loads a referral visible to `who`, or NOT_FOUND (also when it exists but is not theirs).
/// Only the station handling a referral acts on its transfer.
pub(crate) fn need_handling_station(who: &Identity, s: &Stored, action: &str) -> Result<()> {
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
pub(crate) enum Begun<R> {
    Replay(R),
    Loaded(Box<Stored>),
}

pub(crate) fn check_etag(etag: &str, current: &str, what: &str) -> Result<()> {
    // One etag format for the suite (`fengqiao_kit::etag`): the version in quotes; a client
    // may send it with or without them.
    let version = current.trim_matches('"').parse::<i64>().unwrap_or(-1);
    fengqiao_kit::agency::check_etag(what, etag, version)
}

pub(crate) fn page_size(size: i32) -> Result<i64> {
    Ok(i64::from(fengqiao_kit::validate::page_size(size)?))
}

pub(crate) fn parse_cursor(token: &str, query: &str) -> Result<Option<(i64, String)>> {
    Ok(fengqiao_kit::validate::parse_keyset_page_token(
        token, query,
    )?)
}

/// The police-referral service.
#[derive(Clone, Debug)]
pub struct PoliceReferral {
    store: Store,
    /// Calls to the router are CLIENT spans (issue #15).
    router: fengqiao_kit::client::TracedChannel,
}

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
            let d = body_of::<EvidenceRef>(row, DOCUMENTS_BODY, "document")?;
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
        handler::router(&self.router)
    }

    async fn create(
        &self,
        request: Request<CreateReferralRequest>,
    ) -> Result<CreateReferralResponse> {
        let (who, mut req) = handler::open(request)?;
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
        let resp = CreateReferralResponse {
            referral: Some(r.clone()),
        };
        if let Some(idem) = &idem {
            idem.save(&mut tx, &resp).await?;
        }
        tx.commit().await?;
        tracing::info!(referral = %r.name, rule = r.screening.as_ref().map_or("", |s| s.matched_rule.as_str()), "referral taken in");
        Ok(resp)
    }

    async fn get(&self, request: Request<GetReferralRequest>) -> Result<GetReferralResponse> {
        let cv = caller_view(&request)?;
        let who = cv.0.clone();
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
        let resp = GetReferralResponse {
            referral: Some(present(s.referral, now)),
        };
        let refs = refs(&resp.referral);
        self.disclosed("GetReferral", cv, resp, &refs).await
    }

    async fn list(&self, request: Request<ListReferralsRequest>) -> Result<ListReferralsResponse> {
        let cv = caller_view(&request)?;
        let who = cv.0.clone();
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
        let resp = ListReferralsResponse {
            referrals,
            next_page_token,
        };
        let refs = refs(&resp.referrals);
        self.disclosed("ListReferrals", cv, resp, &refs).await
    }

    async fn override_screening(
        &self,
        request: Request<OverrideScreeningRequest>,
    ) -> Result<OverrideScreeningResponse> {
        let (who, mut req) = handler::open(request)?;
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
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
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
        handler::answered(&idem, tx, resp).await
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
            occurred_at: r.call_time,
            location: r.location.clone(),
            ..fengqiao_kit::transfers::case_snapshot(
                &r.case_id,
                (&r.police_station, &r.incident_number),
                r.category,
                &r.summary,
                r.parties.clone(),
                r.evidence.clone(),
                &r.location
                    .as_ref()
                    .map(|l| l.region_code.clone())
                    .unwrap_or_default(),
            )
        };
        let route = if req.route.is_empty() {
            DEFAULT_ROUTE
        } else {
            &req.route
        };
        // Created and submitted in one router change when `submit`.
        let create = fengqiao_kit::transfers::create_transfer(
            route,
            &req.to_agency,
            snapshot,
            req.note.clone(),
            router_rid("DraftTransfer", &referral_id, &req.request_id),
            req.submit,
        );
        let transfer = self
            .router()
            .create_transfer(fengqiao_kit::agency::forwarded(request.metadata(), create))
            .await
            .map_err(|e| routed_error(e, retried, &s.referral, "draft a transfer"))?
            .into_inner()
            .transfer
            .ok_or_else(|| Error::Corrupt("router answered without a transfer".into()))?;
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
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
        let referral = Some(present(s.referral, now));
        let transfer = Some(transfer);
        handler::answered(&idem, tx, DraftTransferResponse { referral, transfer }).await
    }

    async fn list_tasks(
        &self,
        request: Request<ListInvestigationTasksRequest>,
    ) -> Result<ListInvestigationTasksResponse> {
        let (who, req) = handler::open(request)?;
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
            .answer_investigation(fengqiao_kit::agency::forwarded(
                request.metadata(),
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
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
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
        handler::answered(&idem, tx, resp).await
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
            .acknowledge_feedback(fengqiao_kit::agency::forwarded(
                request.metadata(),
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
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
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
        handler::answered(&idem, tx, resp).await
    }

    async fn file(
        &self,
        request: Request<GetReferralFileRequest>,
    ) -> Result<GetReferralFileResponse> {
        let cv = caller_view(&request)?;
        let who = cv.0.clone();
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
            .map(|row| body_of::<EvidenceRef>(row, DOCUMENTS_BODY, "document"))
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
            body_of::<TransferEvent>(row, EVENTS_BODY, "event")
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
                    .get_case_timeline(fengqiao_kit::agency::forwarded(
                        request.metadata(),
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
        let resp = GetReferralFileResponse {
            referral_file: Some(ReferralFile {
                referral: Some(present(s.referral, now)),
                documents,
                investigation_tasks: tasks,
                events,
                generate_time: Some(to_ts(now)),
            }),
        };
        let refs = refs(
            resp.referral_file
                .iter()
                .filter_map(|f| f.referral.as_ref()),
        );
        self.disclosed("GetReferralFile", cv, resp, &refs).await
    }
}

/// The caller and the view of personal information they asked for, read before the request
/// is consumed.
pub(crate) fn caller_view<T>(r: &Request<T>) -> Result<(Identity, pii::View)> {
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
    ) -> Result<T> {
        fengqiao_kit::agency::disclosed(&self.store, &FULL_VIEW, method, &who, view, t, referrals)
            .await
    }
}

/// The (name, case id) of each referral, for the access log.
pub(crate) fn refs<'a>(rs: impl IntoIterator<Item = &'a Referral>) -> Vec<(String, String)> {
    rs.into_iter()
        .map(|r| (r.name.clone(), r.case_id.clone()))
        .collect()
}

// Mutations answer masked (a full view of a mutation answer is not offered; the full values
// are one audited `GetReferral` away), replays of a stored answer too: the stored answer stays
// whole (sealed), the reply is masked. Investigation tasks hold no party (questions and answers
// are redacted free text).

fengqiao_kit::forward_rpcs! {
    impl PoliceReferralService for PoliceReferral;
    masked create_referral(CreateReferralRequest) -> CreateReferralResponse = create;
    reply get_referral(GetReferralRequest) -> GetReferralResponse = get;
    reply list_referrals(ListReferralsRequest) -> ListReferralsResponse = list;
    masked override_screening(OverrideScreeningRequest) -> OverrideScreeningResponse;
    masked draft_transfer(DraftTransferRequest) -> DraftTransferResponse;
    reply list_investigation_tasks(ListInvestigationTasksRequest)
        -> ListInvestigationTasksResponse = list_tasks;
    reply answer_investigation(AnswerInvestigationRequest) -> AnswerInvestigationResponse = answer;
    masked acknowledge_feedback(AcknowledgeFeedbackRequest)
        -> AcknowledgeFeedbackResponse = acknowledge;
    reply get_referral_file(GetReferralFileRequest) -> GetReferralFileResponse = file;
}
