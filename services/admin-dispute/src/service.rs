//! The gRPC service: each handler validates, checks who may act, calls the domain
//! ([`crate::dispute`]) at the database's time, persists ([`crate::store`]) and replies.
//! A dispute is visible only to its participants (行诉解释 Art 86): any other agency gets
//! NOT_FOUND on every read and write. Every write is idempotent by `request_id` (the kit's
//! [`Idem`]: a replay returns the first answer, a reused id with another request is
//! ALREADY_EXISTS).
//!
//! The router: `AskProcuratorate` creates a transfer on `coordination-to-procuratorate`
//! (the router first, under a request id derived from the method, the dispute and the
//! client's `request_id`, then the local commit), and the inbox mirrors the procuratorate's
//! acceptance and answer onto the dispute; the procuratorate's own referral on
//! `procuratorate-to-coordination` arrives in the inbox as a new dispute.

use std::sync::Arc;

use fengqiao_clock::HolidayCalendar;
use fengqiao_kit::acts::{self, Acts};
use fengqiao_kit::agency::{
    self, Period, Reply, created_at, found, masked, need_party_role, not_personal, read_reply,
    reply, uuid_v4, who,
};
use fengqiao_kit::auth::Identity;
use fengqiao_kit::deliveries::{self, Deliveries};
use fengqiao_kit::idem::Idem;
use fengqiao_kit::inbox::{InboxHandler, Receives, forward_auth};
use fengqiao_kit::pii::{self, FullView, Personal};
use fengqiao_kit::records;
use fengqiao_kit::server::ServerBuilder;
use fengqiao_kit::{Error, FieldViolation, Reason, validate};
use fengqiao_proto::admindispute::admin_dispute_service_server::{
    AdminDisputeService, AdminDisputeServiceServer,
};
use fengqiao_proto::admindispute::*;
use fengqiao_proto::common::{AgencyRef, DisputeCategory, ReasonCode};
use fengqiao_proto::inbox::{DeliverResponse, Envelope, RecipientSide};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{CaseSnapshot, Transfer, TransferEventType, TransferState};
use fengqiao_store::{Store, Tx};
use tonic::Request;
use tonic::transport::Channel;

use crate::dispute::{self as dom, Intake, Record};
use crate::store as db;
use crate::{DisputeSummary, Tally, rules};

/// The route on which the centre asks the procuratorate.
pub const ASK_ROUTE: &str = "coordination-to-procuratorate";
/// The route on which the procuratorate refers a dispute to the centre.
pub const REFERRAL_ROUTE: &str = "procuratorate-to-coordination";

/// The administrative dispute service over one store, calling the router on `router`.
#[derive(Clone)]
pub struct AdminDispute {
    store: Store,
    router: Channel,
    procuratorate_months: u32,
}

/// Who may read the applicants' personal information in full (个人信息保护法 Art 6, minimum
/// necessary): the centre's coordinators, who contact the applicants and run the
/// coordination; the reviewing organ's review officers, who mediate in 行政复议 (行政复议法
/// Art 73); the procuratorate's prosecutors taking part (行政诉讼监督); and other Fengqiao
/// services reading for their work (`service`). The organ's liaisons and everyone else see
/// masked values.
pub const FULL_VIEW: FullView = FullView {
    service: "admin-dispute",
    roles: &[
        rules::COORDINATOR_ROLE,
        rules::REVIEW_OFFICER_ROLE,
        "prosecutor",
        "service",
    ],
};

/// The act as stored: its summary redacted (identity and mobile numbers masked).
fn redacted_act(a: Option<&AdministrativeAct>) -> Option<AdministrativeAct> {
    a.map(|a| {
        let mut a = a.clone();
        pii::redact_in_place(&mut a.summary);
        a
    })
}

/// Claims as stored: their descriptions redacted.
fn redacted_claims(claims: &[Claim]) -> Vec<Claim> {
    let mut claims = claims.to_vec();
    for c in &mut claims {
        pii::redact_in_place(&mut c.description);
    }
    claims
}

/// The access-log rows of a read answering `disputes`.
fn resources(disputes: &[Dispute]) -> Vec<(String, String)> {
    let row = |d: &Dispute| (d.name.clone(), d.case_id.clone());
    disputes.iter().map(row).collect()
}

fn name_of(name: &str) -> Result<&str, Error> {
    let id = name
        .strip_prefix("disputes/")
        .ok_or_else(|| FieldViolation::new("name", "expected disputes/{dispute}"))?;
    validate::resource_id("name", id)?;
    Ok(name)
}

/// The caller must act for `agency` with `role` ([`need_party_role`]).
fn need(who: &Identity, agency: &str, role: &str, what: &str) -> Result<(), Error> {
    need_party_role(who, agency, role, what)
}

fn centre(who: &Identity, r: &Record, what: &str) -> Result<(), Error> {
    need(who, r.centre(), rules::COORDINATOR_ROLE, what)
}

/// The organ that seals: the reviewing organ in 行政复议 (行政复议法 Art 73), the centre
/// otherwise.
fn sealer(who: &Identity, r: &Record) -> Result<(), Error> {
    if r.stage() == DisputeStage::InReview {
        need(
            who,
            r.reviewing_organ(),
            rules::REVIEW_OFFICER_ROLE,
            "sealing the 复议调解书",
        )
    } else {
        centre(who, r, "sealing the 调解书")
    }
}

/// A request id for the router derived from the method, the dispute and the client's id
/// only, so a retry reaches the same router change.
fn router_rid(method: &str, dispute: &str, request_id: &str) -> String {
    agency::router_rid("admin", method, dispute, request_id)
}

fn applicant_keys(applicants: &[fengqiao_proto::common::Party]) -> Vec<String> {
    applicants
        .iter()
        .map(|p| {
            [p.id_number.as_str(), p.name.as_str(), p.party_id.as_str()]
                .into_iter()
                .map(str::trim)
                .find(|s| !s.is_empty())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

impl AdminDispute {
    /// A service over `store` (migrated with [`crate::store::migrate`]) calling the router on
    /// `router`; the procuratorate's review clock is 3 months.
    pub fn new(store: Store, router: Channel) -> Self {
        Self {
            store,
            router,
            procuratorate_months: rules::PROCURATORATE_REVIEW_MONTHS,
        }
    }

    /// The procuratorate's review clock in months (人民检察院行政诉讼监督规则 2016 Art 12: 3;
    /// configuration, as the 2021 revision's numbering is not verified).
    pub fn with_procuratorate_review_months(mut self, months: u32) -> Self {
        self.procuratorate_months = months.max(1);
        self
    }

    /// Adds the gRPC service to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            AdminDisputeServiceServer::new(self.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
    }

    /// The router inbox's handler: the centre's side of both routes.
    pub fn inbox_handler(&self) -> Arc<dyn InboxHandler> {
        Arc::new(Inbox { svc: self.clone() })
    }

    fn router(&self) -> TransferServiceClient<Channel> {
        TransferServiceClient::new(self.router.clone())
    }

    async fn create(&self, who: &Identity, req: &CreateDisputeRequest) -> Result<Dispute, Error> {
        if !who.has_role(rules::COORDINATOR_ROLE) {
            return Err(Error::Refused(
                Reason::RoleRequired,
                format!(
                    "taking in a dispute needs the role {}",
                    rules::COORDINATOR_ROLE
                ),
            ));
        }
        if req.facts.trim().is_empty() {
            return Err(FieldViolation::new("facts", "required (事实和理由)").into());
        }
        let mut bad = Vec::new();
        for (k, p) in req.applicants.iter().enumerate() {
            pii::validate::party(&mut bad, &format!("applicants[{k}]"), p, true);
        }
        if let Some(a) = &req.act
            && pii::looks_personal(&a.document_number)
        {
            bad.push(FieldViolation::new(
                "act.document_number",
                "must not hold an identity number or a phone number",
            ));
        }
        if !bad.is_empty() {
            return Err(Error::Invalid(bad));
        }
        let stage = DisputeStage::try_from(req.stage).unwrap_or_default();
        let review_accept_at = req
            .review_accept_time
            .as_ref()
            .map(|t| fengqiao_kit::time::parse_timestamp("review_accept_time", t))
            .transpose()?;
        let intake = Intake {
            case_id: uuid_v4(),
            applicants: req.applicants.clone(),
            act: redacted_act(req.act.as_ref()).unwrap_or_default(),
            organ: req.organ.clone(),
            reviewing_organ: req.reviewing_organ.clone(),
            stage,
            claims: redacted_claims(&req.claims),
            evidence: req.evidence.clone(),
            review_accept_at,
            region_code: req.region_code.clone(),
        };
        let idem = Idem::new(who, "CreateDispute", &req.request_id, req)?;
        let cal = HolidayCalendar::builtin();
        let mut tx = self.store.write().await?;
        if let Some(answer) = idem.replay::<Dispute>(&mut tx).await? {
            return Ok(answer);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let name = format!("disputes/{}", uuid_v4());
        let record = dom::intake(&name, &who.agency, &intake, now, cal)?;
        let keys = applicant_keys(&intake.applicants);
        let ids: Vec<&str> = keys.iter().map(String::as_str).collect();
        let digest =
            rules::facts_digest(&intake.organ, &intake.act.document_number, &ids, &req.facts)?;
        // 行政复议法 Art 74: after a settlement and withdrawal, no new 行政复议 application on
        // the same facts and reasons.
        if stage == DisputeStage::InReview && db::facts_withdrawn(&mut tx, &digest).await? {
            return Err(Error::Refused(
                Reason::SameFactsWithdrawn,
                "行政复议法第七十四条: an application on the same facts and reasons was withdrawn \
                 after a settlement and cannot be brought again"
                    .into(),
            ));
        }
        db::insert(&mut tx, &record, &digest).await?;
        let s = db::load(&mut tx, &who.agency, &name)
            .await?
            .ok_or_else(|| Error::Internal("inserted dispute vanished".into()))?;
        idem.save(&mut tx, &s.record.dispute).await?;
        tx.commit().await?;
        Ok(s.record.dispute)
    }

    /// Replays an earlier answer to `request_id`, or loads the dispute as the caller sees it,
    /// sweeps overdue clocks, applies `f` at the database's time, saves and records the
    /// answer, in one transaction. A settlement in 行政复议 records the facts' digest (Art 74).
    #[allow(clippy::too_many_arguments)]
    async fn act<M: prost::Message>(
        &self,
        who: &Identity,
        method: &str,
        request: &M,
        name: &str,
        etag: &str,
        request_id: &str,
        f: impl FnOnce(&Identity, &Record, i64, &HolidayCalendar) -> Result<Record, Error>,
    ) -> Result<Dispute, Error> {
        let name = name_of(name)?;
        let cal = HolidayCalendar::builtin();
        acts::act::<Disputes, M>(
            &self.store,
            who,
            method,
            request,
            name,
            etag,
            request_id,
            |current, now| f(who, current, now, cal),
        )
        .await
    }

    async fn get(&self, who: &Identity, name: &str) -> Result<Dispute, Error> {
        let r = acts::get::<Disputes>(&self.store, &who.agency, name_of(name)?).await?;
        Ok(r.dispute)
    }

    async fn list(
        &self,
        who: &Identity,
        req: &ListDisputesRequest,
    ) -> Result<ListDisputesResponse, Error> {
        let size = validate::page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let after = validate::parse_keyset_page_token(&req.page_token, &query)?;
        let states: Vec<DisputeState> = req.states().collect();
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let rows = db::list(
            &mut tx,
            &who.agency,
            &states,
            req.overdue_only,
            after,
            size + 1,
        )
        .await?;
        let (disputes, next_page_token) =
            records::keyset_page(rows, i64::from(size), &query, |s| {
                let (t, id) = Disputes::cursor(&s);
                Ok((Disputes::current(&s, now)?.dispute, t, id))
            })?;
        Ok(ListDisputesResponse {
            disputes,
            next_page_token,
        })
    }

    async fn statistics(
        &self,
        who: &Identity,
        req: &GetDisputeStatisticsRequest,
    ) -> Result<GetDisputeStatisticsResponse, Error> {
        let period = Period::of(req.create_time_start.as_ref(), req.create_time_end.as_ref())?;
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut tally = Tally::default();
        acts::each::<Disputes>(&mut tx, &who.agency, |s| {
            let r = Disputes::current(&s, now)?;
            let d = &r.dispute;
            let created = created_at(d.create_time.as_ref());
            if period.contains(created) {
                tally.add(&DisputeSummary {
                    organ: r.organ().to_owned(),
                    act_kind: d.act.as_ref().map(|a| a.kind()).unwrap_or_default(),
                    result: d.result(),
                    overdue: d.overdue || r.clocks.iter().any(|c| c.expired),
                    days_to_close: d.close_time.as_ref().map(|t| {
                        rules::days_between(created, fengqiao_kit::time::from_timestamp(t))
                    }),
                });
            }
            Ok(())
        })
        .await?;
        Ok(tally.response())
    }

    /// Asks the procuratorate over the router: the router first (created and submitted in one
    /// change, request id derived from the method, the dispute and the client's id), then
    /// the local commit. A call cut off after the router answered is completed by its retry
    /// with the same `request_id`: the same transfer, recorded once.
    async fn ask(&self, request: &Request<AskProcuratorateRequest>) -> Result<Dispute, Error> {
        let who = Identity::of(request)?.clone();
        let req = request.get_ref();
        let name = name_of(&req.name)?;
        let idem = Idem::new(&who, "AskProcuratorate", &req.request_id, req)?;
        let kind = ProcuratorateRequestKind::try_from(req.kind).unwrap_or_default();
        let mut bad = Vec::new();
        if validate::parse_name("procuratorate", "agencies", &req.procuratorate).is_err() {
            bad.push(FieldViolation::new(
                "procuratorate",
                "expected agencies/{agency}",
            ));
        }
        if kind == ProcuratorateRequestKind::Unspecified {
            bad.push(FieldViolation::new("kind", "PARTICIPATE or EXAMINE"));
        }
        let summary_len = req.summary.trim().chars().count();
        if summary_len == 0 || summary_len > 4000 {
            bad.push(FieldViolation::new(
                "summary",
                "required, at most 4000 characters",
            ));
        }
        if !bad.is_empty() {
            return Err(Error::Invalid(bad));
        }
        let cal = HolidayCalendar::builtin();
        // Checks on a read snapshot; the router is called outside any transaction.
        let s = {
            let mut tx = self.store.read().await?;
            if let Some(answer) = idem.replay::<Dispute>(&mut tx).await? {
                return Ok(answer);
            }
            let now = fengqiao_store::db_now_micros(&mut tx).await?;
            let s = found(db::load(&mut tx, &who.agency, name).await?, name)?;
            tx.rollback().await?;
            centre(&who, &s.record, "asking the procuratorate")?;
            // A retry after a lost commit is answered by the replay above; the checks refuse
            // a second request while one is unanswered.
            dom::ask_procuratorate(&s.record, &req.procuratorate, "", kind, now, cal)?;
            s
        };
        let d = &s.record.dispute;
        let snapshot = CaseSnapshot {
            case_id: d.case_id.clone(),
            external_references: [(who.agency.clone(), d.name.clone())].into_iter().collect(),
            category: DisputeCategory::Administrative as i32,
            summary: pii::redact_text(req.summary.trim()).into_owned(),
            parties: d.applicants.clone(),
            evidence: d.evidence.clone(),
            region_code: d.region_code.clone(),
            ..CaseSnapshot::default()
        };
        let create = fengqiao_proto::router::CreateTransferRequest {
            transfer: Some(Transfer {
                route: format!("routes/{ASK_ROUTE}"),
                to_agency: Some(AgencyRef {
                    name: req.procuratorate.clone(),
                    ..AgencyRef::default()
                }),
                case_snapshot: Some(snapshot),
                note: pii::redact_text(req.summary.trim()).into_owned(),
                ..Transfer::default()
            }),
            request_id: router_rid("AskProcuratorate", name, &req.request_id),
            // No approval steps on this route: created and submitted in one change.
            submit: true,
        };
        let mut out = Request::new(create);
        forward_auth(request, &mut out);
        let transfer = agency::created_transfer(self.router().create_transfer(out).await)?;
        let mut tx = self.store.write().await?;
        if let Some(answer) = idem.replay::<Dispute>(&mut tx).await? {
            return Ok(answer);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let s = found(db::load(&mut tx, &who.agency, name).await?, name)?;
        let recorded = s
            .record
            .dispute
            .procuratorate
            .as_ref()
            .is_some_and(|p| p.transfer == transfer.name);
        let dispute = if recorded {
            s.record.dispute.clone()
        } else {
            let next = dom::ask_procuratorate(
                &s.record,
                &req.procuratorate,
                &transfer.name,
                kind,
                now,
                cal,
            )?;
            db::save(&mut tx, &s, &next, now).await?.record.dispute
        };
        idem.save(&mut tx, &dispute).await?;
        tx.commit().await?;
        Ok(dispute)
    }
}

impl AdminDispute {
    /// Reports a referred dispute's result on the referral's transfer: the router first
    /// (feedback with the route's outcome, request id derived from the method, the dispute
    /// and the client's id), then the local commit; a cut-off call is completed by its retry.
    async fn report(
        &self,
        request: &Request<ReportToProcuratorateRequest>,
    ) -> Result<Dispute, Error> {
        let who = Identity::of(request)?.clone();
        let req = request.get_ref();
        let name = name_of(&req.name)?;
        let idem = Idem::new(&who, "ReportToProcuratorate", &req.request_id, req)?;
        let summary = req.summary.trim();
        if summary.is_empty() || summary.chars().count() > 4000 {
            return Err(FieldViolation::new("summary", "required, at most 4000 characters").into());
        }
        let cal = HolidayCalendar::builtin();
        let (s, code) = {
            let mut tx = self.store.read().await?;
            if let Some(answer) = idem.replay::<Dispute>(&mut tx).await? {
                return Ok(answer);
            }
            let now = fengqiao_store::db_now_micros(&mut tx).await?;
            let s = found(db::load(&mut tx, &who.agency, name).await?, name)?;
            tx.rollback().await?;
            centre(&who, &s.record, "reporting to the procuratorate")?;
            let (_, code) = dom::report_back(&s.record, now, cal)?;
            (s, code)
        };
        let d = &s.record.dispute;
        let transfer = d
            .procuratorate
            .as_ref()
            .map(|p| p.transfer.clone())
            .unwrap_or_default();
        let documents: Vec<_> = d
            .result_document
            .iter()
            .chain(d.agreement.as_ref().and_then(|a| a.document.as_ref()))
            .cloned()
            .collect();
        let feedback = fengqiao_proto::router::SubmitFeedbackRequest {
            name: transfer,
            outcome_code: code.into(),
            summary: pii::redact_text(summary).into_owned(),
            documents,
            request_id: router_rid("ReportToProcuratorate", name, &req.request_id),
            ..Default::default()
        };
        let mut out = Request::new(feedback);
        forward_auth(request, &mut out);
        self.router()
            .submit_feedback(out)
            .await
            .map_err(Error::upstream)?;
        let mut tx = self.store.write().await?;
        if let Some(answer) = idem.replay::<Dispute>(&mut tx).await? {
            return Ok(answer);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let s = found(db::load(&mut tx, &who.agency, name).await?, name)?;
        let reported = s
            .record
            .dispute
            .procuratorate
            .as_ref()
            .is_some_and(|p| p.reported);
        let dispute = if reported {
            s.record.dispute.clone()
        } else {
            let (next, _) = dom::report_back(&s.record, now, cal)?;
            db::save(&mut tx, &s, &next, now).await?.record.dispute
        };
        idem.save(&mut tx, &dispute).await?;
        tx.commit().await?;
        Ok(dispute)
    }
}

/// The centre's side of the router: the procuratorate's answers on `coordination-to-
/// procuratorate` (the centre is the sender) and its referrals on `procuratorate-to-
/// coordination` (the centre receives).
struct Inbox {
    svc: AdminDispute,
}

fn not_yet(what: &str) -> Error {
    Error::Refused(Reason::NotYet, what.to_owned())
}

impl Deliveries for Inbox {
    fn receives(&self) -> &[Receives] {
        &[
            (ASK_ROUTE, RecipientSide::Sender),
            (REFERRAL_ROUTE, RecipientSide::Receiver),
        ]
    }

    async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse, Error> {
        let msg = deliveries::transfer_message(envelope)?;
        let (route, side) = fengqiao_kit::inbox::route_and_side(envelope)?;
        let Some(t) = msg.transfer else {
            return Ok(DeliverResponse { duplicate: false });
        };
        let cal = HolidayCalendar::builtin();
        let mut tx = self.svc.store.write().await?;
        if !fengqiao_store::inbox::record_once(&mut tx, crate::SERVICE, &envelope.message_id)
            .await?
        {
            return Ok(DeliverResponse { duplicate: true });
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let known = db::load_by_transfer(&mut tx, &t.name).await?;
        let state = TransferState::try_from(t.state).unwrap_or_default();
        match (route, side, known) {
            (ASK_ROUTE, RecipientSide::Sender, None) => {
                // Our own request whose local commit is under way (AskProcuratorate calls the
                // router first) or was cut off and is retried: not recorded in the inbox, so
                // the router delivers it again.
                let case_id = t
                    .case_snapshot
                    .as_ref()
                    .map(|c| c.case_id.clone())
                    .unwrap_or_default();
                if !state_is_final(state) && db::case_exists(&mut tx, &case_id).await? {
                    return Err(not_yet("the request of this transfer is not recorded yet"));
                }
            }
            // A message of an earlier request of the dispute (already answered or handed back):
            // the current request is another transfer.
            (ASK_ROUTE, RecipientSide::Sender, Some(s))
                if s.record
                    .dispute
                    .procuratorate
                    .as_ref()
                    .is_none_or(|p| p.transfer != t.name) => {}
            (ASK_ROUTE, RecipientSide::Sender, Some(s)) => {
                let event = msg.event.clone().unwrap_or_default();
                let kind = TransferEventType::try_from(event.event_type).unwrap_or_default();
                let months = self.svc.procuratorate_months;
                let answered = s
                    .record
                    .dispute
                    .procuratorate
                    .as_ref()
                    .is_some_and(|p| p.outcome.is_some());
                let next = match (state, kind) {
                    _ if answered => None,
                    (TransferState::FeedbackSubmitted | TransferState::Closed, _) => {
                        let f = t.feedback.clone().unwrap_or_default();
                        Some(dom::procuratorate_answered(
                            &s.record,
                            ReasonCode {
                                code: f.outcome_code,
                                description: f.outcome_description,
                            },
                            now,
                            cal,
                        )?)
                    }
                    (TransferState::Declined, _) => {
                        let d = t.decline.clone().unwrap_or_default();
                        Some(dom::procuratorate_answered(
                            &s.record,
                            ReasonCode {
                                code: format!("declined:{}", d.reason_code),
                                description: d.reason,
                            },
                            now,
                            cal,
                        )?)
                    }
                    // Handed back without an answer: the acceptance clock ran out (the route's
                    // return to sender), or withdrawn; the centre may ask again.
                    (
                        TransferState::Expired
                        | TransferState::Returned
                        | TransferState::Escalated
                        | TransferState::Withdrawn,
                        _,
                    ) => Some(dom::procuratorate_answered(
                        &s.record,
                        ReasonCode {
                            code: format!("handed_back:{}", state.as_str_name()),
                            description: event.reason.clone(),
                        },
                        now,
                        cal,
                    )?),
                    (TransferState::InProgress, _) => {
                        // 2016 rules Art 12: the procuratorate's review runs from its
                        // acceptance.
                        let r = &s.record;
                        if crate::lifecycle::is_final(r.state()) {
                            None
                        } else {
                            Some(dom::procuratorate_accepted(r, months, now, cal)?)
                        }
                    }
                    _ => None,
                };
                if let Some(n) = next.filter(|n| *n != s.record) {
                    db::save(&mut tx, &s, &n, now).await?;
                }
            }
            (REFERRAL_ROUTE, RecipientSide::Receiver, None) if state_is_open(state) => {
                let r = referral(envelope, &t, now, cal)?;
                db::insert(&mut tx, &r, "").await?;
            }
            // Later messages of a referral already taken in, or a route this handler does not
            // keep: recorded as received, nothing to change.
            _ => {}
        }
        tx.commit().await?;
        Ok(DeliverResponse { duplicate: false })
    }
}

/// A transfer state after which nothing more comes from the procuratorate.
fn state_is_final(state: TransferState) -> bool {
    matches!(
        state,
        TransferState::Declined
            | TransferState::Closed
            | TransferState::Expired
            | TransferState::Returned
            | TransferState::Withdrawn
            | TransferState::Escalated
    )
}

fn state_is_open(state: TransferState) -> bool {
    !matches!(
        state,
        TransferState::Withdrawn
            | TransferState::Expired
            | TransferState::Returned
            | TransferState::Unspecified
    )
}

/// A dispute from the procuratorate's referral (行政诉讼监督 → 行政争议化解中心): in
/// procuratorial supervision, the procuratorate a participant. The snapshot carries no claims
/// (the route's data has none), so the scope for mediation is left undecided (refused) until
/// the centre records them (`AmendClaims`); the organ is named in
/// `external_references["organ"]` when the procuratorate gives it.
fn referral(
    envelope: &Envelope,
    t: &Transfer,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let snap = t.case_snapshot.clone().unwrap_or_default();
    let procuratorate = t
        .from_agency
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let centre = envelope.to_agency.clone();
    let organ = snap
        .external_references
        .get("organ")
        .filter(|o| o.starts_with("agencies/"))
        .cloned()
        .unwrap_or_default();
    let agency = |n: &str| {
        (!n.is_empty()).then(|| AgencyRef {
            name: n.into(),
            ..AgencyRef::default()
        })
    };
    let mut r = Record {
        dispute: Dispute {
            name: format!("disputes/{}", uuid_v4()),
            case_id: snap.case_id.clone(),
            centre: agency(&centre),
            applicants: snap.parties.clone(),
            act: Some(AdministrativeAct {
                summary: pii::redact_text(&snap.summary).into_owned(),
                ..AdministrativeAct::default()
            }),
            organ: agency(&organ),
            stage: DisputeStage::InSupervision as i32,
            evidence: snap.evidence.clone(),
            scope: Some(ScopeDecision {
                mediation_allowed: false,
                article: rules::SCOPE_ARTICLE.into(),
                explanation: "the referral carries no claims; the scope for mediation \
                              (行政诉讼法第六十条) is not decided"
                    .into(),
            }),
            procuratorate: Some(ProcuratorateInvolvement {
                procuratorate: agency(&procuratorate),
                transfer: t.name.clone(),
                referred_by_procuratorate: true,
                ..ProcuratorateInvolvement::default()
            }),
            region_code: snap.region_code.clone(),
            create_time: Some(fengqiao_kit::time::to_timestamp(now)),
            state: DisputeState::Open as i32,
            ..Dispute::default()
        },
        clocks: vec![],
    };
    dom::sweep(&mut r, now, cal)?;
    Ok(r)
}

fengqiao_kit::record_acts!(
    /// Disputes as [`acts::act`] changes them.
    Disputes: db::Stored, Record => Dispute;
    field = dispute, collection = "disputes", load = db::load, list = db::list, save = saved,
    current = |r: &mut Record, now| dom::sweep(r, now, HolidayCalendar::builtin()),
);

/// A dispute saved by an act: the dispute as stored. A settlement in 行政复议 also records the
/// facts' digest (行政复议法 Art 74).
async fn saved(tx: &mut Tx, s: &db::Stored, next: &Record, now: i64) -> Result<Dispute, Error> {
    let saved = db::save(tx, s, next, now).await?;
    let d = &saved.record.dispute;
    if d.result() == DisputeResult::SettledWithdrawn
        && saved.record.stage() == DisputeStage::InReview
    {
        db::record_withdrawn_facts(tx, &saved.facts_digest, &d.name).await?;
    }
    Ok(saved.record.dispute)
}

/// The target of a write request.
trait Target: prost::Message + Send + Sync + 'static {
    fn target(&self) -> (&str, &str, &str);
}

macro_rules! target {
    ($($T:ty),+) => {$(
        impl Target for $T {
            fn target(&self) -> (&str, &str, &str) {
                (&self.name, &self.etag, &self.request_id)
            }
        }
    )+};
}

target!(
    AmendClaimsRequest,
    StartMediationRequest,
    StartCoordinationRequest,
    WithdrawConsentRequest,
    DraftAgreementRequest,
    SignAgreementRequest,
    SealAgreementRequest,
    RecordCorrectionRequest,
    RecordSettlementRequest,
    ExtendReviewRequest,
    CloseDisputeRequest
);

impl AdminDispute {
    async fn run<Q: Target, P: FromDispute + Personal>(
        &self,
        req: Request<Q>,
        method: &str,
        f: impl FnOnce(&Identity, &Q, &Record, i64, &HolidayCalendar) -> Result<Record, Error>,
    ) -> Reply<P> {
        let w = who(&req)?;
        let r = req.into_inner();
        let (name, etag, request_id) = r.target();
        let result = self
            .act(
                &w,
                method,
                &r,
                name,
                etag,
                request_id,
                |w, rec, now, cal| f(w, &r, rec, now, cal),
            )
            .await;
        masked(result.map(P::from_dispute))
    }
}

trait FromDispute {
    fn from_dispute(d: Dispute) -> Self;
}

macro_rules! from_dispute {
    ($($T:ty),+) => {$(
        impl FromDispute for $T {
            fn from_dispute(d: Dispute) -> Self {
                Self { dispute: Some(d) }
            }
        }
    )+};
}

from_dispute!(
    AmendClaimsResponse,
    StartMediationResponse,
    StartCoordinationResponse,
    WithdrawConsentResponse,
    DraftAgreementResponse,
    SignAgreementResponse,
    SealAgreementResponse,
    RecordCorrectionResponse,
    RecordSettlementResponse,
    ExtendReviewResponse,
    CloseDisputeResponse
);

#[tonic::async_trait]
impl AdminDisputeService for AdminDispute {
    async fn create_dispute(
        &self,
        req: Request<CreateDisputeRequest>,
    ) -> Reply<CreateDisputeResponse> {
        let w = who(&req)?;
        masked(
            self.create(&w, req.get_ref())
                .await
                .map(|d| CreateDisputeResponse { dispute: Some(d) }),
        )
    }

    async fn get_dispute(&self, req: Request<GetDisputeRequest>) -> Reply<GetDisputeResponse> {
        let w = who(&req)?;
        let read = async {
            let d = self.get(&w, &req.get_ref().name).await?;
            Ok(GetDisputeResponse { dispute: Some(d) })
        };
        let method = "/fengqiao.admindispute.v1.AdminDisputeService/GetDispute";
        read_reply(&self.store, &FULL_VIEW, method, &req, &w, read, |r| {
            resources(r.dispute.as_slice())
        })
        .await
    }

    async fn list_disputes(
        &self,
        req: Request<ListDisputesRequest>,
    ) -> Reply<ListDisputesResponse> {
        let w = who(&req)?;
        let read = self.list(&w, req.get_ref());
        let method = "/fengqiao.admindispute.v1.AdminDisputeService/ListDisputes";
        read_reply(&self.store, &FULL_VIEW, method, &req, &w, read, |r| {
            resources(&r.disputes)
        })
        .await
    }

    async fn amend_claims(&self, req: Request<AmendClaimsRequest>) -> Reply<AmendClaimsResponse> {
        self.run(req, "AmendClaims", |w, r, rec, now, cal| {
            centre(w, rec, "amending the claims")?;
            if let Some(a) = &r.act {
                not_personal("act.document_number", &a.document_number)?;
            }
            let act = redacted_act(r.act.as_ref());
            dom::amend_claims(rec, &redacted_claims(&r.claims), act.as_ref(), now, cal)
        })
        .await
    }

    async fn start_mediation(
        &self,
        req: Request<StartMediationRequest>,
    ) -> Reply<StartMediationResponse> {
        self.run(req, "StartMediation", |w, r, rec, now, cal| {
            centre(w, rec, "starting mediation")?;
            dom::start_mediation(
                rec,
                &r.consenting_party_ids,
                r.organ_consents,
                r.suspension_notice.as_ref(),
                now,
                cal,
            )
        })
        .await
    }

    async fn start_coordination(
        &self,
        req: Request<StartCoordinationRequest>,
    ) -> Reply<StartCoordinationResponse> {
        self.run(req, "StartCoordination", |w, r, rec, now, cal| {
            centre(w, rec, "starting coordination")?;
            dom::start_coordination(rec, r.method(), now, cal)
        })
        .await
    }

    async fn withdraw_consent(
        &self,
        req: Request<WithdrawConsentRequest>,
    ) -> Reply<WithdrawConsentResponse> {
        self.run(req, "WithdrawConsent", |w, r, rec, now, cal| {
            centre(w, rec, "recording a withdrawal of consent")?;
            let party = Some(r.party_id.as_str()).filter(|p| !p.is_empty());
            dom::withdraw_consent(rec, party, r.resumption_notice.as_ref(), now, cal)
        })
        .await
    }

    async fn draft_agreement(
        &self,
        req: Request<DraftAgreementRequest>,
    ) -> Reply<DraftAgreementResponse> {
        self.run(req, "DraftAgreement", |w, r, rec, now, cal| {
            centre(w, rec, "drafting the 调解书")?;
            dom::draft_agreement(rec, r.document.as_ref(), now, cal)
        })
        .await
    }

    async fn sign_agreement(
        &self,
        req: Request<SignAgreementRequest>,
    ) -> Reply<SignAgreementResponse> {
        self.run(req, "SignAgreement", |w, r, rec, now, cal| {
            if r.party_id.is_empty() {
                need(
                    w,
                    rec.organ(),
                    rules::ORGAN_LIAISON_ROLE,
                    "the organ's signature",
                )?;
                dom::sign(rec, None, now, cal)
            } else {
                centre(w, rec, "recording an applicant's signature")?;
                dom::sign(rec, Some(&r.party_id), now, cal)
            }
        })
        .await
    }

    async fn seal_agreement(
        &self,
        req: Request<SealAgreementRequest>,
    ) -> Reply<SealAgreementResponse> {
        self.run(req, "SealAgreement", |w, _r, rec, now, cal| {
            sealer(w, rec)?;
            dom::seal(rec, now, cal)
        })
        .await
    }

    async fn record_correction(
        &self,
        req: Request<RecordCorrectionRequest>,
    ) -> Reply<RecordCorrectionResponse> {
        self.run(req, "RecordCorrection", |w, r, rec, now, cal| {
            need(
                w,
                rec.organ(),
                rules::ORGAN_LIAISON_ROLE,
                "the organ's correction",
            )?;
            dom::record_correction(rec, r.document.as_ref(), now, cal)
        })
        .await
    }

    async fn record_settlement(
        &self,
        req: Request<RecordSettlementRequest>,
    ) -> Reply<RecordSettlementResponse> {
        self.run(req, "RecordSettlement", |w, r, rec, now, cal| {
            centre(w, rec, "recording a settlement")?;
            dom::record_settlement(rec, r.document.as_ref(), now, cal)
        })
        .await
    }

    async fn extend_review(
        &self,
        req: Request<ExtendReviewRequest>,
    ) -> Reply<ExtendReviewResponse> {
        self.run(req, "ExtendReview", |w, r, rec, now, cal| {
            // 行政复议法 Art 62: the head of the review body approves; the clock engine holds
            // the role.
            if w.agency != rec.reviewing_organ() {
                return Err(Error::Refused(
                    Reason::WrongParty,
                    "the reviewing organ extends the review".into(),
                ));
            }
            dom::extend_review(rec, r.days, &w.roles, now, cal)
        })
        .await
    }

    async fn close_dispute(
        &self,
        req: Request<CloseDisputeRequest>,
    ) -> Reply<CloseDisputeResponse> {
        self.run(req, "CloseDispute", |w, r, rec, now, cal| {
            let reviewer = rec.stage() == DisputeStage::InReview
                && w.agency == rec.reviewing_organ()
                && r.result() == DisputeResult::Decided;
            if reviewer {
                need(
                    w,
                    rec.reviewing_organ(),
                    rules::REVIEW_OFFICER_ROLE,
                    "the decision",
                )?;
            } else {
                centre(w, rec, "closing the dispute")?;
            }
            dom::close(rec, r.result(), r.document.as_ref(), now, cal)
        })
        .await
    }

    async fn ask_procuratorate(
        &self,
        req: Request<AskProcuratorateRequest>,
    ) -> Reply<AskProcuratorateResponse> {
        masked(
            self.ask(&req)
                .await
                .map(|d| AskProcuratorateResponse { dispute: Some(d) }),
        )
    }

    async fn report_to_procuratorate(
        &self,
        req: Request<ReportToProcuratorateRequest>,
    ) -> Reply<ReportToProcuratorateResponse> {
        masked(
            self.report(&req)
                .await
                .map(|d| ReportToProcuratorateResponse { dispute: Some(d) }),
        )
    }

    async fn get_dispute_statistics(
        &self,
        req: Request<GetDisputeStatisticsRequest>,
    ) -> Reply<GetDisputeStatisticsResponse> {
        let w = who(&req)?;
        reply(self.statistics(&w, req.get_ref()).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_request_ids_depend_on_method_dispute_and_client_id_only() {
        let a = router_rid("AskProcuratorate", "disputes/d1", "r1");
        assert_eq!(a, router_rid("AskProcuratorate", "disputes/d1", "r1"));
        assert_ne!(a, router_rid("AskProcuratorate", "disputes/d2", "r1"));
        assert_ne!(a, router_rid("AskProcuratorate", "disputes/d1", "r2"));
        assert!(a.starts_with("admin-") && a.len() <= 120);
    }

    #[test]
    fn applicants_are_keyed_by_id_number_then_name_then_party_id() {
        use fengqiao_proto::common::Party;
        let p = |id: &str, name: &str, pid: &str| Party {
            id_number: id.into(),
            name: name.into(),
            party_id: pid.into(),
            ..Party::default()
        };
        assert_eq!(
            applicant_keys(&[
                p("2102", "王某", "p1"),
                p("", "李某", "p2"),
                p("", "", "p3")
            ]),
            ["2102", "李某", "p3"]
        );
    }
}
