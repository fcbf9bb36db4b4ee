//! The gRPC service: handlers validate, call the domain ([`crate::rules`],
//! [`crate::lifecycle`]), persist ([`crate::store`]) and reply; the inbox handler reconciles
//! cases from the router's messages ([`crate::reconcile`]); the deadline handler carries out
//! the court's own clocks (joint choice, designation, registration).
//!
//! One truth (issue #9): a delegation is a router transfer on `court-to-invited-mediation`.
//! ChooseMediator / DesignateMediator call the router first, with a request id derived only
//! from the method, the case and the client's `request_id` (a retry after a lost commit gets
//! the router's first answer), then commit the case.

use fengqiao_store::bind::Bind;
use std::pin::Pin;
use std::time::Duration;

use fengqiao_kit::agency::{self, disclosed, need_role, not_personal};
use fengqiao_kit::handler;
use fengqiao_kit::pii::{self, FullView, Personal};
use fengqiao_kit::records::{Filtered, keyset_page};
use fengqiao_kit::server::ServerBuilder;
use fengqiao_kit::{FieldViolation, Identity, Reason};
use fengqiao_proto::common::{Actor, AgencyRef, EvidenceRef};
use fengqiao_proto::courtdiversion::court_diversion_service_server::{
    CourtDiversionService, CourtDiversionServiceServer,
};
use fengqiao_proto::courtdiversion::*;
use fengqiao_proto::inbox::{DeliverResponse, Envelope};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{Transfer, TransferEventType};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, Tx};
use prost::Message as _;
use tokio_stream::Stream;
use tonic::{Request, Status};

use crate::error::{Error, Result};
use crate::lifecycle::{Action, EndKind};
use crate::reconcile::{self, TransferView};
use crate::rules::{self, RedesignationPolicy, Selector};
use crate::store::{self as db, Change, SERVICE, Stored};
use fengqiao_kit::idem::Idem;
use fengqiao_kit::time::{from_timestamp as from_ts, to_timestamp as to_ts};

type S = PreFilingCaseState;
type WatchStream =
    Pin<Box<dyn Stream<Item = std::result::Result<WatchCasesResponse, Status>> + Send + 'static>>;

/// Who may read the parties' personal information in full (个人信息保护法 Art 6, minimum
/// necessary): the court's clerks (立案庭, who contact and serve the parties), its judges
/// (who decide on the case), the invited mediator working the case (the case is visible only
/// within its court, so a mediator sees it only as the court's own user) and other Fengqiao
/// services reading for their work (`service`). Court administrators, who keep the roster,
/// see masked values.
pub const FULL_VIEW: FullView = FullView {
    service: "court-diversion",
    roles: &[rules::ROLE_CLERK, rules::ROLE_JUDGE, "mediator", "service"],
};

/// Free text as stored: trimmed, identity and mobile numbers masked (pii::redact_text).
fn redacted(s: &str) -> String {
    pii::redact_text(s.trim()).into_owned()
}

/// The role the lifecycle action needs (特邀调解规定: the clerk records, the judge decides).
fn need_role_for(who: &Identity, action: Action) -> Result<()> {
    match rules::required_role(action) {
        Some(role) => need_role(who, role, action.verb()),
        None => Ok(()),
    }
}

fn check_etag(etag: &str, current: &str, what: &str) -> Result<()> {
    let version = current.trim_matches('"').parse::<i64>().unwrap_or(-1);
    agency::check_etag(what, etag, version)
}

fn wrong_state(c: &PreFilingCase, action: &'static str) -> Error {
    Error::WrongState {
        resource: c.name.clone(),
        state: S::try_from(c.state)
            .unwrap_or_default()
            .as_str_name()
            .to_string(),
        action,
    }
}

/// The request id of a router call made for a client's call: derived only from the method,
/// the case and the client's `request_id`, so a retry sends the router the same request.
fn router_rid(method: &str, case: &str, request_id: &str) -> String {
    agency::router_rid("court", method, case, request_id)
}

/// `invitedOrganizations/{o}/mediators/{m}` → (o, m).
fn parse_mediator(field: &str, name: &str) -> Result<(String, String)> {
    Ok(agency::parse_child_name(
        field,
        name,
        "invitedOrganizations",
        "mediators",
        "invitedOrganizations/{invited_organization}/mediators/{mediator}",
    )?)
}

fn text(out: &mut Vec<FieldViolation>, field: &str, s: &str, max: usize) {
    if s.trim().is_empty() || s.chars().count() > max {
        out.push(FieldViolation::new(
            field,
            format!("is required, at most {max} characters"),
        ));
    }
}

/// Validates the client's part of a new case: the intake rules of the domain and the police
/// intake's party and evidence validators (names, identity documents, phones, addresses).
fn validate_case(c: Option<&PreFilingCase>) -> Vec<FieldViolation> {
    let Some(c) = c else {
        return vec![FieldViolation::new("pre_filing_case", "is required")];
    };
    let mut rule_errors = Vec::new();
    if let Err(e) = rules::check_pre_filing_number(
        "pre_filing_case.pre_filing_number",
        c.pre_filing_number.trim(),
    ) {
        rule_errors.push(e);
    }
    rule_errors.extend(rules::check_parties(&c.plaintiffs, &c.defendants));
    rule_errors.extend(rules::check_claims(&c.claims));
    rule_errors.extend(rules::check_evidence_digests(
        "pre_filing_case.evidence",
        &c.evidence,
    ));
    let mut out: Vec<FieldViolation> = rule_errors
        .into_iter()
        .filter_map(|e| match e {
            rules::RuleError::InvalidField { field, message } => {
                Some(FieldViolation::new(field, message))
            }
            _ => None,
        })
        .collect();
    for (list, field) in [
        (&c.plaintiffs, "pre_filing_case.plaintiffs"),
        (&c.defendants, "pre_filing_case.defendants"),
    ] {
        for (i, p) in list.iter().enumerate() {
            pii::validate::party(&mut out, &format!("{field}[{i}]"), p, true);
        }
    }
    for (i, e) in c.evidence.iter().enumerate() {
        fengqiao_police_referral::validate::evidence(
            &mut out,
            &format!("pre_filing_case.evidence[{i}]"),
            e,
        );
    }
    if c.category == 0 {
        out.push(FieldViolation::new(
            "pre_filing_case.category",
            "is required",
        ));
    }
    text(&mut out, "pre_filing_case.summary", &c.summary, 4000);
    if pii::looks_personal(&c.pre_filing_number) {
        out.push(FieldViolation::new(
            "pre_filing_case.pre_filing_number",
            "must not hold an identity number or a phone number",
        ));
    }
    if let Err(v) =
        fengqiao_kit::validate::region_code("pre_filing_case.region_code", &c.region_code)
    {
        out.push(v);
    }
    out
}

/// The client's content of a case, output-only fields cleared (the idempotency of the
/// pre-filing number compares it), free text redacted (the summary and the claims'
/// descriptions never store an identity or mobile number).
fn normalise(c: &PreFilingCase) -> PreFilingCase {
    let mut claims = c.claims.clone();
    for k in &mut claims {
        pii::redact_in_place(&mut k.description);
    }
    PreFilingCase {
        pre_filing_number: c.pre_filing_number.trim().to_string(),
        plaintiffs: c.plaintiffs.clone(),
        defendants: c.defendants.clone(),
        claims,
        category: c.category,
        summary: redacted(&c.summary),
        evidence: c.evidence.clone(),
        region_code: c.region_code.clone(),
        ..PreFilingCase::default()
    }
}

fn decisions(c: &PreFilingCase) -> Vec<(&str, ConsentDecision)> {
    c.consents
        .iter()
        .map(|r| {
            (
                r.party_id.as_str(),
                ConsentDecision::try_from(r.decision).unwrap_or_default(),
            )
        })
        .collect()
}

/// Records one consent decision and moves the case if every party consented or one refused
/// (特邀调解规定 Art 1, 11).
fn record_consent(
    c: &mut PreFilingCase,
    field: &str,
    rec: &ConsentRecord,
    actor: &Actor,
    now: i64,
    ch: &mut Change,
) -> Result<()> {
    let ids: Vec<String> = rules::party_ids(&c.plaintiffs, &c.defendants)
        .into_iter()
        .map(str::to_string)
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let decision = {
        let decided = decisions(c);
        rules::check_consent(field, &ids, &decided, &rec.party_id, rec.decision)?
    };
    if ConsentMethod::try_from(rec.method).unwrap_or_default() == ConsentMethod::Unspecified {
        return Err(FieldViolation::new(format!("{field}.method"), "is required").into());
    }
    if S::try_from(c.state).unwrap_or_default() != S::ConsentPending {
        return Err(wrong_state(c, "record consent"));
    }
    c.consents.push(ConsentRecord {
        party_id: rec.party_id.clone(),
        decision: decision as i32,
        method: rec.method,
        evidence: rec.evidence.clone(),
        recorded_by: Some(actor.clone()),
        record_time: Some(to_ts(now)),
    });
    let status = rules::consent_status(&ids, &decisions(c));
    let action = rules::consent_action(status);
    db::step(c, action, now, actor, "", ch)?;
    if action == Action::RefuseConsent {
        // No delegation without consent: straight to registration (CPL Art 126).
        c.materials_return = Some(MaterialsReturn {
            cause: ReturnCause::NoConsent as i32,
            reason_code: String::new(),
            documents: vec![],
            return_time: Some(to_ts(now)),
        });
    }
    Ok(())
}

/// The court-diversion service.
#[derive(Clone, Debug)]
pub struct CourtDiversion {
    store: Store,
    /// Calls to the router are CLIENT spans (issue #15).
    router: fengqiao_kit::client::TracedChannel,
    policy: RedesignationPolicy,
    /// The key the service signs its own calls to the router with (the automatic
    /// re-designation acts for the court, not for a caller).
    signer: Option<std::sync::Arc<handler::SystemSigner>>,
    confirmation: Option<fengqiao_judicial_confirmation::JudicialConfirmation>,
}

/// Actor id of the service when it acts for the court itself.
pub const SYSTEM_ACTOR: &str = "court-diversion";

impl CourtDiversion {
    /// The service over a migrated `store`, calling the router on `router`.
    pub fn new(store: Store, router: tonic::transport::Channel) -> Self {
        Self {
            store,
            router: router.into(),
            policy: RedesignationPolicy::default(),
            signer: None,
            confirmation: None,
        }
    }

    /// The court's judicial confirmation service in this process: `DecideNextStep
    /// JUDICIAL_CONFIRMATION` with the applicants hands the application over to it (诉前调确)
    /// and `GetCase` shows its state and ruling. In-process, not over the router: both are the
    /// same court's systems, and the router's routes join different agencies.
    pub fn with_confirmation(
        mut self,
        service: fengqiao_judicial_confirmation::JudicialConfirmation,
    ) -> Self {
        self.confirmation = Some(service);
        self
    }

    /// Lets the service act for the court itself, signing its router calls with `key` for
    /// `issuer`: after an acceptance timeout it re-designates another organisation on its own
    /// (在线调解规则 Art 12). Without a key the case waits for the judge's designation.
    pub fn with_signing_key(mut self, key: fengqiao_kit::auth::SigningKey, issuer: &str) -> Self {
        self.signer = Some(std::sync::Arc::new(handler::SystemSigner::new(key, issuer)));
        self
    }

    /// Sets the re-designation limit (local practice: 在线调解规则 Art 12 sets no number).
    pub fn with_policy(mut self, policy: RedesignationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// This service's side of the process's agency inbox.
    pub fn inbox_handler(&self) -> std::sync::Arc<dyn fengqiao_kit::inbox::InboxHandler> {
        std::sync::Arc::new(Inbox {
            store: self.store.clone(),
            policy: self.policy,
            service: self.clone(),
        })
    }

    /// Adds the service to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            CourtDiversionServiceServer::new(self.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
    }

    /// Runs the court's deadline timer (joint choice, designation, registration) until
    /// `shutdown` resolves.
    pub fn start_timer(&self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let timer = fengqiao_store::deadline::DeadlineTimer::new(
            self.store.clone(),
            SERVICE,
            Timer {
                policy: self.policy,
            },
        );
        tokio::spawn(timer.run(shutdown));
    }

    fn router(&self) -> TransferServiceClient<fengqiao_kit::client::TracedChannel> {
        handler::router(&self.router)
    }

    async fn load_visible(tx: &mut Tx, who: &Identity, name: &str) -> Result<Stored> {
        let id = fengqiao_kit::validate::parse_name("name", "cases", name)?;
        match db::load(tx, id).await? {
            // Another court, a police station or a mediation committee: NOT_FOUND, as for a
            // case that does not exist.
            Some(s) if s.court == who.agency => Ok(s),
            _ => Err(Error::NotFound(name.to_string())),
        }
    }

    async fn load_locked(tx: &mut Tx, who: &Identity, name: &str) -> Result<Stored> {
        let id = fengqiao_kit::validate::parse_name("name", "cases", name)?;
        db::lock_case(tx, "id", id).await?;
        Self::load_visible(tx, who, name).await
    }

    /// A local change of one case: replay, load locked, check the etag, let `f` change it,
    /// save with its deadlines and events, store the answer.
    async fn local_change<R, F>(
        &self,
        who: &Identity,
        idem: &Idem,
        name: &str,
        etag: &str,
        f: F,
        wrap: impl FnOnce(PreFilingCase) -> R,
    ) -> Result<R>
    where
        R: prost::Message + Default,
        F: FnOnce(&mut PreFilingCase, i64, &mut Change) -> Result<()>,
    {
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
        let mut s = Self::load_locked(&mut tx, who, name).await?;
        check_etag(etag, &s.case.etag, name)?;
        let mut ch = Change::default();
        f(&mut s.case, now, &mut ch)?;
        db::save(&mut tx, &mut s, now).await?;
        ch.write(&mut tx, &s).await?;
        let resp = wrap(db::present(s.case, now));
        handler::answered(idem, tx, resp).await
    }

    // -----------------------------------------------------------------------
    // Cases
    // -----------------------------------------------------------------------

    async fn create_case(&self, request: Request<CreateCaseRequest>) -> Result<CreateCaseResponse> {
        let (who, req) = handler::open(request)?;
        need_role(&who, rules::ROLE_CLERK, "registering a pre-filing case")?;
        let violations = validate_case(req.pre_filing_case.as_ref());
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let input = normalise(req.pre_filing_case.as_ref().ok_or_else(|| {
            Error::Invalid(vec![FieldViolation::new("pre_filing_case", "is required")])
        })?);
        let idem = Idem::new(&who, "CreateCase", &req.request_id, &req)?;
        let hash = db::content_hash(&input)?;
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
        let existing = sqlx::query(&format!(
            "SELECT {} FROM court_cases WHERE court = $1 AND pre_filing_number = $2",
            db::COLUMNS
        ))
        .bind(&who.agency)
        .bind(&input.pre_filing_number)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let s = db::stored_of(&row)?;
            if s.content_hash == hash {
                let resp = CreateCaseResponse {
                    pre_filing_case: Some(db::present(s.case, now)),
                };
                idem.save(&mut tx, &resp).await?;
                tx.commit().await?;
                return Ok(resp);
            }
            return Err(crate::error::number_reused());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut c = input;
        c.name = format!("cases/{id}");
        c.case_id = uuid::Uuid::new_v4().to_string();
        c.court = Some(AgencyRef {
            name: who.agency.clone(),
            ..Default::default()
        });
        c.state = S::ConsentPending as i32;
        c.create_time = Some(to_ts(now));
        c.update_time = Some(to_ts(now));
        c.etag = fengqiao_kit::etag::etag(1);
        let actor = who.as_actor();
        let mut ch = Change::default();
        ch.event(
            &c,
            CaseEventType::StateChanged,
            S::Unspecified,
            "",
            &actor,
            "",
            now,
        );
        for (i, rec) in req.consents.iter().enumerate() {
            if S::try_from(c.state).unwrap_or_default() != S::ConsentPending {
                break;
            }
            record_consent(&mut c, &format!("consents[{i}]"), rec, &actor, now, &mut ch)?;
        }
        let s = Stored {
            case: c,
            court: who.agency.clone(),
            version: 1,
            content_hash: hash,
            event_seq: 0,
        };
        db::insert(&mut tx, &s, now).await?;
        ch.write(&mut tx, &s).await?;
        let name = s.case.name.clone();
        let resp = CreateCaseResponse {
            pre_filing_case: Some(db::present(s.case, now)),
        };
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        tracing::info!(case = %name, "pre-filing case registered");
        Ok(resp)
    }

    /// A read's answer (`method` of the service): masked, or whole for a role of [`FULL_VIEW`]
    /// with one access-log row per case `(name, case_id)` in it.
    async fn disclosed<T: Personal>(
        &self,
        method: &str,
        who: &Identity,
        view: pii::View,
        resp: T,
        cases: &[(String, String)],
    ) -> Result<T> {
        let method = format!("/fengqiao.courtdiversion.v1.CourtDiversionService/{method}");
        disclosed(&self.store, &FULL_VIEW, &method, who, view, resp, cases).await
    }

    async fn get_case(&self, request: Request<GetCaseRequest>) -> Result<GetCaseResponse> {
        let who = Identity::of(&request)?.clone();
        let view = pii::requested_view(request.metadata())?;
        let req = request.into_inner();
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let s = Self::load_visible(&mut tx, &who, &req.name).await?;
        tx.rollback().await?;
        let mut c = db::present(s.case, now);
        self.show_confirmation(&who.agency, &mut c).await?;
        let names = [(c.name.clone(), c.case_id.clone())];
        let resp = GetCaseResponse {
            pre_filing_case: Some(c),
        };
        self.disclosed("GetCase", &who, view, resp, &names).await
    }

    async fn list_cases(&self, request: Request<ListCasesRequest>) -> Result<ListCasesResponse> {
        let who = Identity::of(&request)?.clone();
        let view = pii::requested_view(request.metadata())?;
        let req = request.into_inner();
        let limit = i64::from(fengqiao_kit::validate::page_size(req.page_size)?);
        // The token binds the filters: a token from another query is refused.
        let query = {
            let mut q = req.clone();
            q.page_size = 0;
            q.page_token.clear();
            format!("{}\n{:?}", who.agency, q.encode_to_vec())
        };
        let cursor = fengqiao_kit::validate::parse_keyset_page_token(&req.page_token, &query)?;
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut q = Filtered::new(
            format!(
                "SELECT {}, create_time FROM court_cases WHERE court = $1",
                db::COLUMNS
            ),
            &who.agency,
        );
        q.states::<S>(&req.states)?;
        if req.overdue_only {
            q.and(
                " AND next_due IS NOT NULL AND next_due <= ?",
                Bind::Int(now),
            );
        }
        q.text("organization", &req.organization)
            .text("mediator", &req.mediator)
            .int("category", req.category);
        if !req.pre_filing_number.is_empty() {
            q.and(
                " AND pre_filing_number = ?",
                Bind::Text(req.pre_filing_number.trim().to_string()),
            );
        }
        q.time_range(
            "create_time",
            req.create_time_start.as_ref(),
            req.create_time_end.as_ref(),
        );
        let rows = q.fetch(&mut tx, "create_time", cursor, limit).await?;
        tx.rollback().await?;
        let (cases, next_page_token) = keyset_page(&rows, limit, &query, |row| {
            let s = db::stored_of(row)?;
            let t: i64 = row.try_get("create_time")?;
            let id = s.id().to_string();
            Ok((db::present(s.case, now), t, id))
        })?;
        let names: Vec<(String, String)> = cases
            .iter()
            .map(|c| (c.name.clone(), c.case_id.clone()))
            .collect();
        let resp = ListCasesResponse {
            pre_filing_cases: cases,
            next_page_token,
        };
        self.disclosed("ListCases", &who, view, resp, &names).await
    }

    async fn record_consent(
        &self,
        request: Request<RecordConsentRequest>,
    ) -> Result<RecordConsentResponse> {
        let (who, req) = handler::open(request)?;
        need_role(&who, rules::ROLE_CLERK, "recording consent")?;
        let rec = req
            .consent
            .clone()
            .ok_or_else(|| Error::Invalid(vec![FieldViolation::new("consent", "is required")]))?;
        let idem = Idem::new(&who, "RecordConsent", &req.request_id, &req)?;
        let actor = who.as_actor();
        self.local_change(
            &who,
            &idem,
            &req.name,
            &req.etag,
            |c, now, ch| record_consent(c, "consent", &rec, &actor, now, ch),
            |c| RecordConsentResponse {
                pre_filing_case: Some(c),
            },
        )
        .await
    }

    /// ChooseMediator and DesignateMediator: checks, router transfer, commit.
    #[allow(clippy::too_many_arguments)]
    async fn delegate<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        name: &str,
        etag: &str,
        request_id: &str,
        selector: Selector,
        organization: &str,
        mediator: &str,
        selection: MediatorSelection,
        note: &str,
        idem: &Idem,
    ) -> Result<PreFilingCase> {
        let who = Identity::of(request)?.clone();
        // Checks on a read snapshot; the router is called outside any transaction.
        let (s, now, org) = {
            let mut tx = self.store.read().await?;
            if let Some(r) = idem.replay::<ChooseMediatorResponse>(&mut tx).await? {
                return r
                    .pre_filing_case
                    .ok_or_else(|| Error::Corrupt("stored answer without a case".into()));
            }
            let now = fengqiao_store::db_now_micros(&mut tx).await?;
            let s = Self::load_visible(&mut tx, &who, name).await?;
            let org_id = fengqiao_kit::validate::parse_name(
                "organization",
                "invitedOrganizations",
                organization,
            )?;
            let org = db::organization(&mut tx, &who.agency, org_id)
                .await?
                .filter(|o| o.active)
                .ok_or_else(|| {
                    Error::Invalid(vec![FieldViolation::new(
                        if mediator.is_empty() {
                            "organization"
                        } else {
                            "mediator"
                        },
                        "must be an active invited organisation on the court's roster",
                    )])
                })?;
            if !mediator.is_empty() {
                let field = "mediator";
                let (o, m) = parse_mediator(field, mediator)?;
                let on_roster = db::mediator(&mut tx, &who.agency, &o, &m)
                    .await?
                    .is_some_and(|m| m.active);
                if o != org_id || !on_roster {
                    return Err(FieldViolation::new(
                        field,
                        "must be an active invited mediator of the organisation on the roster",
                    )
                    .into());
                }
            }
            tx.rollback().await?;
            (s, now, org)
        };
        let state = s.state();
        // Retried after a lost commit: the router's message already shows the delegation.
        check_etag(etag, &s.case.etag, name)?;
        let choice_due = s
            .case
            .clocks
            .iter()
            .find(|k| k.name == "joint_choice")
            .and_then(|k| k.due_at.as_ref())
            .map(from_ts);
        let actions =
            rules::selection_actions(state, selector, now, choice_due).map_err(|e| match e {
                rules::SelectionRefused::WrongState => Error::WrongState {
                    resource: name.to_string(),
                    state: state.as_str_name().to_string(),
                    action: "choose or designate a mediator",
                },
                rules::SelectionRefused::JointChoiceLapsed => {
                    Error::Refused(Reason::JointChoiceLapsed, format!("{name}: {e}"))
                }
                rules::SelectionRefused::JointChoiceOpen => {
                    Error::Refused(Reason::JointChoiceOpen, format!("{name}: {e}"))
                }
            })?;
        for a in &actions {
            need_role_for(&who, *a)?;
        }
        let history: Vec<(&str, DelegationResult)> = s
            .case
            .delegations
            .iter()
            .map(|d| {
                (
                    d.organization.as_str(),
                    DelegationResult::try_from(d.result).unwrap_or_default(),
                )
            })
            .collect();
        rules::check_designee(organization, &history)?;
        let c = &s.case;
        let mut parties = c.plaintiffs.clone();
        parties.extend(c.defendants.iter().cloned());
        let snapshot = fengqiao_kit::transfers::case_snapshot(
            &c.case_id,
            (&who.agency, &c.pre_filing_number),
            c.category,
            &c.summary,
            parties,
            c.evidence.clone(),
            &c.region_code,
        );
        // Created and submitted in one router change (no approval steps on this route).
        let create = fengqiao_kit::transfers::create_transfer(
            rules::ROUTE_NAME,
            &org.agency,
            snapshot,
            pii::redact_text(note).into_owned(),
            router_rid(method, s.id(), request_id),
            true,
        );
        let answer = self
            .router()
            .create_transfer(agency::forwarded(request.metadata(), create))
            .await;
        let transfer = agency::created_transfer(answer)?;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay::<ChooseMediatorResponse>(&mut tx).await? {
            return r
                .pre_filing_case
                .ok_or_else(|| Error::Corrupt("stored answer without a case".into()));
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let mut s = Self::load_locked(&mut tx, &who, name).await?;
        let actor = who.as_actor();
        let mut ch = Change::default();
        if !s
            .case
            .delegations
            .iter()
            .any(|d| d.transfer == transfer.name)
        {
            for a in &actions {
                db::step(&mut s.case, *a, now, &actor, "", &mut ch)?;
            }
            let ordinal = u32::try_from(s.case.delegations.len()).unwrap_or(u32::MAX) + 1;
            let mut sel = selection;
            sel.selected_by = Some(actor.clone());
            sel.select_time = Some(to_ts(now));
            s.case.delegations.push(Delegation {
                ordinal,
                transfer: transfer.name.clone(),
                organization: organization.to_string(),
                mediator: mediator.to_string(),
                method: sel.method,
                result: DelegationResult::Pending as i32,
                decline_reason_code: String::new(),
                decline_reason: String::new(),
                delegate_time: Some(to_ts(now)),
                result_time: None,
            });
            s.case.selection = Some(sel);
            mirror_clocks(&mut s.case, &transfer);
            db::save(&mut tx, &mut s, now).await?;
            ch.write(&mut tx, &s).await?;
        }
        let resp = ChooseMediatorResponse {
            pre_filing_case: Some(db::present(s.case, now)),
        };
        let resp = handler::answered(idem, tx, resp).await?;
        Ok(resp.pre_filing_case.unwrap_or_default())
    }

    async fn choose(&self, request: Request<ChooseMediatorRequest>) -> Result<PreFilingCase> {
        let who = Identity::of(&request)?.clone();
        let req = request.get_ref().clone();
        let (org, _) = parse_mediator("mediator", &req.mediator)?;
        if req.evidence.is_none() {
            return Err(FieldViolation::new("evidence", "is required (选定调解员确认书)").into());
        }
        let idem = Idem::new(&who, "ChooseMediator", &req.request_id, &req)?;
        // 在线调解规则 Art 10: every party takes part in the joint choice.
        {
            let mut tx = self.store.read().await?;
            let s = Self::load_visible(&mut tx, &who, &req.name).await?;
            tx.rollback().await?;
            let ids = rules::party_ids(&s.case.plaintiffs, &s.case.defendants);
            let chosen: Vec<&str> = req.chosen_by_party_ids.iter().map(String::as_str).collect();
            rules::check_joint_choice(&ids, &chosen)?;
        }
        let organization = format!("invitedOrganizations/{org}");
        let selection = MediatorSelection {
            method: SelectionMethod::JointChoice as i32,
            organization: organization.clone(),
            mediator: req.mediator.clone(),
            chosen_by_party_ids: req.chosen_by_party_ids.clone(),
            parties_waived_choice: false,
            evidence: req.evidence.clone(),
            ..Default::default()
        };
        self.delegate(
            &request,
            "ChooseMediator",
            &req.name,
            &req.etag,
            &req.request_id,
            Selector::Parties,
            &organization,
            &req.mediator,
            selection,
            &req.note,
            &idem,
        )
        .await
    }

    async fn designate(&self, request: Request<DesignateMediatorRequest>) -> Result<PreFilingCase> {
        let who = Identity::of(&request)?.clone();
        let req = request.get_ref().clone();
        fengqiao_kit::validate::parse_name(
            "organization",
            "invitedOrganizations",
            &req.organization,
        )?;
        if req.parties_waived_choice && req.evidence.is_none() {
            return Err(
                FieldViolation::new("evidence", "is required with parties_waived_choice").into(),
            );
        }
        let idem = Idem::new(&who, "DesignateMediator", &req.request_id, &req)?;
        let delegations = {
            let mut tx = self.store.read().await?;
            let s = Self::load_visible(&mut tx, &who, &req.name).await?;
            tx.rollback().await?;
            u32::try_from(s.case.delegations.len()).unwrap_or(u32::MAX)
        };
        let selection = MediatorSelection {
            method: rules::designation_method(delegations) as i32,
            organization: req.organization.clone(),
            mediator: req.mediator.clone(),
            chosen_by_party_ids: vec![],
            parties_waived_choice: req.parties_waived_choice,
            evidence: req.evidence.clone(),
            ..Default::default()
        };
        self.delegate(
            &request,
            "DesignateMediator",
            &req.name,
            &req.etag,
            &req.request_id,
            Selector::Court {
                choice_waived: req.parties_waived_choice,
            },
            &req.organization,
            &req.mediator,
            selection,
            &req.note,
            &idem,
        )
        .await
    }

    /// Hands the parties' joint application over to the court's judicial confirmation
    /// service (诉前调确) while the case is AGREEMENT_FILED: the filed agreement with its
    /// digest, the parties, the delegating court as the competent court (法释〔2011〕5号
    /// Art 2). That service checks everything again (人民调解法 Art 33: joint, within 30
    /// days) and keeps one application per case, so a retry after a cut-off call finds the
    /// first. `None` when the case has moved on (a replay, or a refusal by the lifecycle).
    async fn hand_over(
        &self,
        who: &Identity,
        req: &DecideNextStepRequest,
    ) -> Result<Option<String>> {
        let Some(jc) = self.confirmation.as_ref() else {
            return Err(crate::error::not_built(
                "pre-filing judicial confirmation without the court's judicial confirmation \
                 service in this process",
            ));
        };
        let mut tx = self.store.read().await?;
        let s = Self::load_visible(&mut tx, who, &req.name).await?;
        tx.rollback().await?;
        let c = s.case;
        let Some(f) = c.agreement_filing.as_ref() else {
            return Ok(None);
        };
        // A stale etag takes nothing in (the case's own change would be ABORTED after it).
        if S::try_from(c.state).unwrap_or_default() == S::AgreementFiled {
            check_etag(&req.etag, &c.etag, &req.name)?;
        }
        if S::try_from(c.state).unwrap_or_default() != S::AgreementFiled
            || !f
                .offered_next_steps
                .contains(&(NextStep::JudicialConfirmation as i32))
        {
            return Ok(None);
        }
        let committee = c
            .delegations
            .iter()
            .rev()
            .find(|d| d.result == DelegationResult::Accepted as i32)
            .and_then(|d| d.organization.strip_prefix("invitedOrganizations/"))
            .map(|a| format!("agencies/{a}"))
            .unwrap_or_default();
        // The agreement took effect when the mediation ended with it (the parties signed).
        let effective = c
            .ending
            .as_ref()
            .and_then(|e| e.end_time.as_ref())
            .or(f.file_time.as_ref())
            .map_or(0, from_ts);
        let intake = fengqiao_judicial_confirmation::application::Intake {
            case_id: c.case_id.clone(),
            transfer: String::new(),
            pre_filing_case: c.name.clone(),
            committee,
            committee_court: who.agency.clone(),
            delegating_court: Some(who.agency.clone()),
            source: fengqiao_judicial_confirmation::ApplicationSource::PreFiling,
            parties: c.plaintiffs.iter().chain(&c.defendants).cloned().collect(),
            applicants: req.applicant_party_ids.clone(),
            represented: req.represented_party_ids.clone(),
            agreement: f.agreement.clone(),
            agreement_effective_at: effective,
            package: req.items.clone(),
            submitted_at: 0,
        };
        let a = jc.take_in(&who.agency, &intake).await?;
        tracing::info!(case = %c.name, application = %a.name, "pre-filing application handed over");
        Ok(Some(a.name))
    }

    /// Shows the state, number and ruling of the case's application on the court's judicial
    /// confirmation service (read now: the case follows the application without storing it).
    async fn show_confirmation(&self, court: &str, c: &mut PreFilingCase) -> Result<()> {
        let Some(jc) = self.confirmation.as_ref() else {
            return Ok(());
        };
        let Some(f) = c.agreement_filing.as_mut() else {
            return Ok(());
        };
        if f.confirmation_application.is_empty() {
            return Ok(());
        }
        if let Some(a) = jc
            .application_of(court, &f.confirmation_application)
            .await?
        {
            f.confirmation_state = a.state;
            f.confirmation_number = a.confirmation_number;
            f.confirmation_ruling = a.ruling;
        }
        Ok(())
    }

    async fn decide_next_step(
        &self,
        request: Request<DecideNextStepRequest>,
    ) -> Result<DecideNextStepResponse> {
        let (who, req) = handler::open(request)?;
        let step = NextStep::try_from(req.next_step).unwrap_or_default();
        let action = rules::next_step_action(step)
            .ok_or_else(|| Error::from(FieldViolation::new("next_step", "is required")))?;
        need_role_for(&who, action)?;
        let hand_over = !req.applicant_party_ids.is_empty();
        if hand_over && step != NextStep::JudicialConfirmation {
            return Err(FieldViolation::new(
                "applicant_party_ids",
                "only with NEXT_STEP_JUDICIAL_CONFIRMATION",
            )
            .into());
        }
        if hand_over && !req.confirmation_application.is_empty() {
            return Err(FieldViolation::new(
                "confirmation_application",
                "not with applicant_party_ids (the application is made here)",
            )
            .into());
        }
        let idem = Idem::new(&who, "DecideNextStep", &req.request_id, &req)?;
        let actor = who.as_actor();
        let handed = if hand_over {
            self.hand_over(&who, &req).await?
        } else {
            None
        };
        let application = handed.unwrap_or_else(|| req.confirmation_application.clone());
        let mut resp = self
            .local_change(
                &who,
                &idem,
                &req.name,
                &req.etag,
                |c, now, ch| {
                    let offered = c
                        .agreement_filing
                        .as_ref()
                        .is_some_and(|f| f.offered_next_steps.contains(&(step as i32)));
                    if S::try_from(c.state).unwrap_or_default() == S::AgreementFiled && !offered {
                        return Err(FieldViolation::new(
                            "next_step",
                            "must be one of the offered next steps",
                        )
                        .into());
                    }
                    db::step(c, action, now, &actor, "", ch)?;
                    if let Some(f) = c.agreement_filing.as_mut() {
                        f.next_step = step as i32;
                        f.confirmation_application = application;
                        f.decided_by = Some(actor.clone());
                        f.decide_time = Some(to_ts(now));
                    }
                    Ok(())
                },
                |c| DecideNextStepResponse {
                    pre_filing_case: Some(c),
                },
            )
            .await?;
        if let Some(c) = resp.pre_filing_case.as_mut() {
            self.show_confirmation(&who.agency, c).await?;
        }
        Ok(resp)
    }

    async fn register(
        &self,
        request: Request<RegisterCaseRequest>,
    ) -> Result<RegisterCaseResponse> {
        let (who, req) = handler::open(request)?;
        need_role_for(&who, Action::Register)?;
        rules::check_docket_number("docket_number", req.docket_number.trim())?;
        not_personal("docket_number", &req.docket_number)?;
        let idem = Idem::new(&who, "RegisterCase", &req.request_id, &req)?;
        let actor = who.as_actor();
        self.local_change(
            &who,
            &idem,
            &req.name,
            &req.etag,
            |c, now, ch| {
                // 民事诉讼法 Art 126: 立案 within 7 days (the clock stops).
                db::step(c, Action::Register, now, &actor, "", ch)?;
                c.registration = Some(RegistrationDecision {
                    outcome: RegistrationOutcome::Registered as i32,
                    docket_number: req.docket_number.trim().to_string(),
                    refusal_reason: String::new(),
                    document: req.document.clone(),
                    decided_by: Some(actor.clone()),
                    decide_time: Some(to_ts(now)),
                });
                Ok(())
            },
            |c| RegisterCaseResponse {
                pre_filing_case: Some(c),
            },
        )
        .await
    }

    async fn refuse(
        &self,
        request: Request<RefuseRegistrationRequest>,
    ) -> Result<RefuseRegistrationResponse> {
        let (who, req) = handler::open(request)?;
        need_role_for(&who, Action::RefuseRegistration)?;
        let errs = rules::check_refusal(&req.reason, req.ruling.is_some());
        if !errs.is_empty() {
            return Err(crate::error::rules(errs));
        }
        let idem = Idem::new(&who, "RefuseRegistration", &req.request_id, &req)?;
        let actor = who.as_actor();
        self.local_change(
            &who,
            &idem,
            &req.name,
            &req.etag,
            |c, now, ch| {
                // 民事诉讼法 Art 126: a reasoned ruling (裁定不予受理).
                db::step(c, Action::RefuseRegistration, now, &actor, "", ch)?;
                c.registration = Some(RegistrationDecision {
                    outcome: RegistrationOutcome::Refused as i32,
                    docket_number: String::new(),
                    refusal_reason: redacted(&req.reason),
                    document: req.ruling.clone(),
                    decided_by: Some(actor.clone()),
                    decide_time: Some(to_ts(now)),
                });
                Ok(())
            },
            |c| RefuseRegistrationResponse {
                pre_filing_case: Some(c),
            },
        )
        .await
    }

    async fn withdraw(
        &self,
        request: Request<WithdrawCaseRequest>,
    ) -> Result<WithdrawCaseResponse> {
        let who = Identity::of(&request)?.clone();
        let req = request.get_ref().clone();
        need_role_for(&who, Action::Withdraw)?;
        let mut v = Vec::new();
        text(&mut v, "reason", &req.reason, 2000);
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let idem = Idem::new(&who, "WithdrawCase", &req.request_id, &req)?;
        // A pending delegation is withdrawn on the router first (the router decides whether
        // the organisation already accepted).
        let pending_transfer = {
            let mut tx = self.store.read().await?;
            if let Some(r) = idem.replay(&mut tx).await? {
                return Ok(r);
            }
            let s = Self::load_visible(&mut tx, &who, &req.name).await?;
            tx.rollback().await?;
            check_etag(&req.etag, &s.case.etag, &req.name)?;
            (s.state() == S::Delegated)
                .then(|| s.case.delegations.last().map(|d| d.transfer.clone()))
                .flatten()
                .map(|t| (t, s.id().to_string()))
        };
        if let Some((transfer, id)) = &pending_transfer {
            self.router()
                .withdraw_transfer(agency::forwarded(
                    request.metadata(),
                    fengqiao_proto::router::WithdrawTransferRequest {
                        name: transfer.clone(),
                        etag: String::new(),
                        reason: req.reason.clone(),
                        request_id: router_rid("WithdrawCase", id, &req.request_id),
                    },
                ))
                .await
                .map_err(Error::upstream)?;
        }
        let actor = who.as_actor();
        self.local_change(
            &who,
            &idem,
            &req.name,
            "",
            |c, now, ch| {
                db::step(c, Action::Withdraw, now, &actor, "", ch)?;
                if pending_transfer.is_some()
                    && let Some(d) = c.delegations.last_mut()
                {
                    d.result = DelegationResult::Withdrawn as i32;
                    d.result_time = Some(to_ts(now));
                }
                c.withdrawal = Some(Withdrawal {
                    reason: redacted(&req.reason),
                    document: req.document.clone(),
                    recorded_by: Some(actor.clone()),
                    withdraw_time: Some(to_ts(now)),
                });
                Ok(())
            },
            |c| WithdrawCaseResponse {
                pre_filing_case: Some(c),
            },
        )
        .await
    }

    /// The judge's review of a suspension on suspected false mediation (特邀调解规定 Art 18).
    /// CONFIRMED ends the mediation: the materials come back and the registration decision
    /// follows. CLEARED would resume the mediation, but the organisation's escalation ended
    /// its transfer on the router, so it is not built: the judge delegates again instead
    /// (not built either: refused with NOT_BUILT).
    async fn resolve(
        &self,
        request: Request<ResolveSuspensionRequest>,
    ) -> Result<ResolveSuspensionResponse> {
        let (who, req) = handler::open(request)?;
        let resolution = SuspensionResolution::try_from(req.resolution).unwrap_or_default();
        let mut v = Vec::new();
        if resolution == SuspensionResolution::Unspecified {
            v.push(FieldViolation::new("resolution", "is required"));
        }
        text(&mut v, "reason", &req.reason, 2000);
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        need_role_for(&who, Action::ConfirmFalseMediation)?;
        if resolution == SuspensionResolution::Cleared {
            return Err(crate::error::not_built(
                "ResolveSuspension CLEARED: the escalation ended the delegation's transfer; \
                 resuming needs a new delegation",
            ));
        }
        let idem = Idem::new(&who, "ResolveSuspension", &req.request_id, &req)?;
        let actor = who.as_actor();
        self.local_change(
            &who,
            &idem,
            &req.name,
            &req.etag,
            |c, now, ch| {
                db::step(
                    c,
                    Action::ConfirmFalseMediation,
                    now,
                    &actor,
                    "FALSE_MEDIATION_CONFIRMED",
                    ch,
                )?;
                if let Some(sp) = c.suspension.as_mut() {
                    sp.resolution = resolution as i32;
                    sp.resolution_reason = redacted(&req.reason);
                    sp.resolved_by = Some(actor.clone());
                    sp.resolve_time = Some(to_ts(now));
                }
                let docs = c
                    .suspension
                    .as_ref()
                    .map(|sp| sp.documents.clone())
                    .unwrap_or_default();
                c.materials_return = Some(MaterialsReturn {
                    cause: ReturnCause::FalseMediation as i32,
                    reason_code: "suspected_false_mediation".into(),
                    documents: docs,
                    return_time: Some(to_ts(now)),
                });
                Ok(())
            },
            |c| ResolveSuspensionResponse {
                pre_filing_case: Some(c),
            },
        )
        .await
    }

    async fn statistics(
        &self,
        request: Request<GetCaseStatisticsRequest>,
    ) -> Result<GetCaseStatisticsResponse> {
        let (who, req) = handler::open(request)?;
        let (Some(start), Some(end)) = (req.start_time.as_ref(), req.end_time.as_ref()) else {
            return Err(
                FieldViolation::new("start_time", "start_time and end_time are required").into(),
            );
        };
        let dims: Vec<CaseStatisticsDimension> = req
            .group_by
            .iter()
            .map(|d| CaseStatisticsDimension::try_from(*d).unwrap_or_default())
            .collect();
        if dims.contains(&CaseStatisticsDimension::Unspecified) {
            return Err(FieldViolation::new("group_by", "must name dimensions").into());
        }
        let mut tx = self.store.read().await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM court_cases WHERE court = $1 AND create_time >= $2 AND create_time < $3",
            db::COLUMNS
        ))
        .bind(&who.agency)
        .bind(from_ts(start))
        .bind(from_ts(end))
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        let mut groups: std::collections::BTreeMap<Vec<String>, (CaseStatisticsRow, crate::Tally)> =
            std::collections::BTreeMap::new();
        for row in &rows {
            let c = db::present(db::stored_of(row)?.case, now);
            let sum = summary_of(&c);
            let mut key = Vec::new();
            let mut base = CaseStatisticsRow::default();
            for d in &dims {
                match d {
                    CaseStatisticsDimension::Organization => {
                        key.push(sum.organization.clone());
                        base.organization = sum.organization.clone();
                    }
                    CaseStatisticsDimension::Mediator => {
                        key.push(sum.mediator.clone());
                        base.mediator = sum.mediator.clone();
                    }
                    CaseStatisticsDimension::Category => {
                        key.push(format!("{:04}", sum.category as i32));
                        base.category = sum.category as i32;
                    }
                    CaseStatisticsDimension::EndReason => {
                        key.push(format!("{:04}", sum.end_reason as i32));
                        base.end_reason = sum.end_reason as i32;
                    }
                    CaseStatisticsDimension::State => {
                        key.push(format!("{:04}", sum.state as i32));
                        base.state = sum.state as i32;
                    }
                    CaseStatisticsDimension::Unspecified => {}
                }
            }
            groups
                .entry(key)
                .or_insert_with(|| (base, crate::Tally::default()))
                .1
                .add(&sum);
        }
        let rows = groups
            .into_values()
            .map(|(base, tally)| CaseStatisticsRow {
                organization: base.organization,
                mediator: base.mediator,
                category: base.category,
                end_reason: base.end_reason,
                state: base.state,
                ..tally.row()
            })
            .collect();
        Ok(GetCaseStatisticsResponse {
            rows,
            compute_time: Some(to_ts(now)),
        })
    }

    async fn watch(&self, request: Request<WatchCasesRequest>) -> Result<WatchStream> {
        let (who, req) = handler::open(request)?;
        let mut after: i64 = match handler::resume_after(&req.resume_token)? {
            Some(after) => after,
            None => sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM court_case_events")
                .fetch_one(self.store.pool())
                .await?
                .try_get("m")?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut idle = 0u32;
            loop {
                let rows = sqlx::query(
                    "SELECT seq, body FROM court_case_events WHERE court = $1 AND seq > $2 \
                     ORDER BY seq LIMIT 100",
                )
                .bind(&who.agency)
                .bind(after)
                .fetch_all(store.pool())
                .await;
                let rows = match rows {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(Error::from(e)))).await;
                        return;
                    }
                };
                let empty = rows.is_empty();
                for row in rows {
                    let (Ok(seq), Ok(body)) = (
                        row.try_get::<i64, _>("seq"),
                        row.try_get::<Vec<u8>, _>("body"),
                    ) else {
                        continue;
                    };
                    after = seq;
                    let Ok(e) = db::open_body::<CaseEvent>(db::EVENT_BODY, &body) else {
                        continue;
                    };
                    let wanted = (req.pre_filing_case.is_empty()
                        || e.pre_filing_case == req.pre_filing_case)
                        && (req.event_types.is_empty() || req.event_types.contains(&e.event_type));
                    if wanted
                        && tx
                            .send(Ok(WatchCasesResponse {
                                resume_token: seq.to_string(),
                                event: Some(e),
                            }))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
                if empty {
                    idle += 1;
                    // A heartbeat now and then, carrying the current position.
                    if idle.is_multiple_of(20)
                        && tx
                            .send(Ok(WatchCasesResponse {
                                event: None,
                                resume_token: after.to_string(),
                            }))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                } else {
                    idle = 0;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// A request to the router as the court's system itself, signed with the service key.
    fn as_system<U>(&self, court: &str, msg: U) -> Result<Option<Request<U>>> {
        let Some(signer) = self.signer.as_ref() else {
            return Ok(None);
        };
        signer
            .request(court, SYSTEM_ACTOR, &[rules::ROLE_JUDGE], msg)
            .map(Some)
            .ok_or_else(|| Error::Corrupt("token is not a header value".into()))
    }

    /// Confirms receipt of a delegation's feedback on the router (确认反馈), so the transfer
    /// closes. The request id is derived from the case and the transfer: a second attempt is
    /// the same call; an already closed transfer (FAILED_PRECONDITION) is fine.
    async fn acknowledge(&self, transfer: &str, court: &str, case_id: &str) -> Result<()> {
        let ack = fengqiao_proto::router::AcknowledgeFeedbackRequest {
            name: transfer.to_string(),
            etag: String::new(),
            comment: "法院已收到调解结果".into(),
            request_id: router_rid("AcknowledgeFeedback", case_id, transfer),
        };
        let Some(request) = self.as_system(court, ack)? else {
            return Ok(());
        };
        match self.router().acknowledge_feedback(request).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(e) => Err(Error::upstream(e)),
        }
    }

    /// Re-designates a case whose organisation let the acceptance clock run out, as the
    /// court's system (在线调解规则 Art 12; [`rules::pick_designee`]). The request id is
    /// derived from the case and the delegation's ordinal, so a second attempt for the same
    /// timeout (another replica, a redelivery) is the same call.
    async fn auto_designate(&self, name: &str, court: &str) -> Result<()> {
        if self.signer.is_none() {
            return Ok(());
        }
        let who = Identity {
            agency: court.to_string(),
            actor: SYSTEM_ACTOR.to_string(),
            roles: vec![rules::ROLE_JUDGE.to_string()],
            method: fengqiao_kit::auth::AuthMethod::Token,
            person: None,
        };
        let (s, orgs, loads) = {
            let mut tx = self.store.read().await?;
            let s = Self::load_visible(&mut tx, &who, name).await?;
            let rows =
                sqlx::query("SELECT body FROM court_organizations WHERE court = $1 ORDER BY id")
                    .bind(court)
                    .fetch_all(&mut *tx)
                    .await?;
            let orgs = rows
                .iter()
                .map(db::organization_of)
                .collect::<Result<Vec<_>>>()?;
            let mut loads = Vec::new();
            for o in &orgs {
                loads.push(db::load_of(&mut tx, court, "organization", &o.name).await?);
            }
            tx.rollback().await?;
            (s, orgs, loads)
        };
        if s.state() != S::AwaitingDesignation {
            return Ok(());
        }
        let history: Vec<(&str, DelegationResult)> = s
            .case
            .delegations
            .iter()
            .map(|d| {
                (
                    d.organization.as_str(),
                    DelegationResult::try_from(d.result).unwrap_or_default(),
                )
            })
            .collect();
        let candidates: Vec<rules::Candidate<'_>> = orgs
            .iter()
            .zip(&loads)
            .map(|(o, load)| rules::Candidate {
                name: o.name.as_str(),
                active: o.active,
                specialties: &o.specialties,
                load: *load,
            })
            .collect();
        let Some(organization) = rules::pick_designee(&candidates, s.case.category, &history)
        else {
            tracing::info!(case = %name, "no other organisation on the roster; the judge designates");
            return Ok(());
        };
        let organization = organization.to_string();
        let ordinal = s.case.delegations.len() + 1;
        let request_id = format!("auto-redesignation-{}-{ordinal}", s.id());
        let Some(mut request) = self.as_system(court, ())? else {
            return Ok(());
        };
        request.extensions_mut().insert(who.clone());
        let req = DesignateMediatorRequest {
            name: name.to_string(),
            organization: organization.clone(),
            request_id: request_id.clone(),
            ..Default::default()
        };
        let idem = Idem::new(&who, "AutoDesignate", &request_id, &req)?;
        let selection = MediatorSelection {
            method: SelectionMethod::Redesignation as i32,
            organization: organization.clone(),
            ..Default::default()
        };
        self.delegate(
            &request,
            "AutoDesignate",
            name,
            "",
            &request_id,
            Selector::Court {
                choice_waived: false,
            },
            &organization,
            "",
            selection,
            "另行委派：原受邀调解组织未在三个工作日内答复（在线调解规则第十二条）",
            &idem,
        )
        .await?;
        tracing::info!(case = %name, organization = %organization, "re-designated automatically");
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Roster
    // -----------------------------------------------------------------------

    async fn present_org(
        &self,
        mut o: InvitedOrganization,
        court: &str,
    ) -> Result<InvitedOrganization> {
        let mut conn = self.store.pool().acquire().await?;
        o.current_load = db::load_of(&mut conn, court, "organization", &o.name).await?;
        Ok(o)
    }

    async fn create_org(
        &self,
        request: Request<CreateInvitedOrganizationRequest>,
    ) -> Result<CreateInvitedOrganizationResponse> {
        let (who, req) = handler::open(request)?;
        need_role(&who, rules::ROLE_COURT_ADMIN, "changing the roster")?;
        let o = req.invited_organization.clone().unwrap_or_default();
        let mut v = Vec::new();
        text(
            &mut v,
            "invited_organization.display_name",
            &o.display_name,
            200,
        );
        if let Err(e) =
            fengqiao_kit::validate::parse_name("invited_organization.agency", "agencies", &o.agency)
        {
            v.push(e);
        }
        if let Err(e) =
            fengqiao_kit::validate::region_code("invited_organization.region_code", &o.region_code)
        {
            v.push(e);
        }
        let id = if req.invited_organization_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            if let Err(e) = fengqiao_kit::validate::resource_id(
                "invited_organization_id",
                &req.invited_organization_id,
            ) {
                v.push(e);
            }
            req.invited_organization_id.clone()
        };
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let idem = Idem::new(&who, "CreateInvitedOrganization", &req.request_id, &req)?;
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
        let org = InvitedOrganization {
            name: format!("invitedOrganizations/{id}"),
            court: Some(AgencyRef {
                name: who.agency.clone(),
                ..Default::default()
            }),
            current_load: 0,
            create_time: Some(to_ts(now)),
            update_time: Some(to_ts(now)),
            etag: fengqiao_kit::etag::etag(1),
            ..o
        };
        if !db::insert_organization(&mut tx, &who.agency, &id, &org, now).await? {
            return Err(Error::AlreadyExists(org.name));
        }
        let resp = CreateInvitedOrganizationResponse {
            invited_organization: Some(org),
        };
        handler::answered(&idem, tx, resp).await
    }

    async fn get_org(
        &self,
        request: Request<GetInvitedOrganizationRequest>,
    ) -> Result<GetInvitedOrganizationResponse> {
        let (who, req) = handler::open(request)?;
        let id = fengqiao_kit::validate::parse_name("name", "invitedOrganizations", &req.name)?;
        let mut conn = self.store.pool().acquire().await?;
        let o = db::organization(&mut conn, &who.agency, id)
            .await?
            .ok_or_else(|| Error::NotFound(req.name.clone()))?;
        drop(conn);
        Ok(GetInvitedOrganizationResponse {
            invited_organization: Some(self.present_org(o, &who.agency).await?),
        })
    }

    async fn list_orgs(
        &self,
        request: Request<ListInvitedOrganizationsRequest>,
    ) -> Result<ListInvitedOrganizationsResponse> {
        let (who, req) = handler::open(request)?;
        let limit = fengqiao_kit::validate::page_size(req.page_size)? as usize;
        let query = {
            let mut q = req.clone();
            q.page_size = 0;
            q.page_token.clear();
            format!("{}\n{:?}", who.agency, q.encode_to_vec())
        };
        let after =
            fengqiao_kit::validate::parse_page_token(&req.page_token, &query)?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT id, body FROM court_organizations WHERE court = $1 AND id > $2 ORDER BY id",
        )
        .bind(&who.agency)
        .bind(&after)
        .fetch_all(self.store.pool())
        .await?;
        let mut out = Vec::new();
        let mut next_page_token = String::new();
        for row in &rows {
            let o = db::organization_of(row)?;
            let keep = (req.specialty == 0 || o.specialties.contains(&req.specialty))
                && o.region_code.starts_with(&req.region_code_prefix)
                && req.active.is_none_or(|a| a == o.active);
            if !keep {
                continue;
            }
            if out.len() == limit {
                let last: &InvitedOrganization = &out[limit - 1];
                next_page_token = fengqiao_kit::validate::page_token(
                    &query,
                    last.name.trim_start_matches("invitedOrganizations/"),
                );
                break;
            }
            out.push(self.present_org(o, &who.agency).await?);
        }
        Ok(ListInvitedOrganizationsResponse {
            invited_organizations: out,
            next_page_token,
        })
    }

    async fn create_mediator(
        &self,
        request: Request<CreateInvitedMediatorRequest>,
    ) -> Result<CreateInvitedMediatorResponse> {
        let (who, req) = handler::open(request)?;
        need_role(&who, rules::ROLE_COURT_ADMIN, "changing the roster")?;
        let org =
            fengqiao_kit::validate::parse_name("parent", "invitedOrganizations", &req.parent)?
                .to_string();
        let m = req.invited_mediator.clone().unwrap_or_default();
        let mut v = Vec::new();
        text(
            &mut v,
            "invited_mediator.display_name",
            &m.display_name,
            100,
        );
        text(&mut v, "invited_mediator.actor_id", &m.actor_id, 128);
        if let Err(e) =
            fengqiao_kit::validate::region_code("invited_mediator.region_code", &m.region_code)
        {
            v.push(e);
        }
        let id = if req.invited_mediator_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            if let Err(e) =
                fengqiao_kit::validate::resource_id("invited_mediator_id", &req.invited_mediator_id)
            {
                v.push(e);
            }
            req.invited_mediator_id.clone()
        };
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let idem = Idem::new(&who, "CreateInvitedMediator", &req.request_id, &req)?;
        let mut tx = self.store.write().await?;
        if let Some(r) = idem.replay(&mut tx).await? {
            return Ok(r);
        }
        if db::organization(&mut tx, &who.agency, &org)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(req.parent.clone()));
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let med = InvitedMediator {
            name: format!("invitedOrganizations/{org}/mediators/{id}"),
            current_load: 0,
            create_time: Some(to_ts(now)),
            update_time: Some(to_ts(now)),
            etag: fengqiao_kit::etag::etag(1),
            ..m
        };
        if !db::insert_mediator(&mut tx, &who.agency, &org, &id, &med, now).await? {
            return Err(Error::AlreadyExists(med.name));
        }
        let resp = CreateInvitedMediatorResponse {
            invited_mediator: Some(med),
        };
        handler::answered(&idem, tx, resp).await
    }

    async fn update_org(
        &self,
        request: Request<UpdateInvitedOrganizationRequest>,
    ) -> Result<UpdateInvitedOrganizationResponse> {
        let (who, req) = handler::open(request)?;
        need_role(&who, rules::ROLE_COURT_ADMIN, "changing the roster")?;
        let given = req.invited_organization.clone().unwrap_or_default();
        let id = fengqiao_kit::validate::parse_name(
            "invited_organization.name",
            "invitedOrganizations",
            &given.name,
        )?
        .to_string();
        let paths = update_paths(
            req.update_mask.as_ref(),
            &["display_name", "specialties", "region_code", "active"],
        )?;
        let mut v = Vec::new();
        if paths.contains(&"display_name") {
            text(
                &mut v,
                "invited_organization.display_name",
                &given.display_name,
                200,
            );
        }
        if paths.contains(&"region_code")
            && let Err(e) = fengqiao_kit::validate::region_code(
                "invited_organization.region_code",
                &given.region_code,
            )
        {
            v.push(e);
        }
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let idem = Idem::new(&who, "UpdateInvitedOrganization", &req.request_id, &req)?;
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
        let mut o = db::organization(&mut tx, &who.agency, &id)
            .await?
            .ok_or_else(|| Error::NotFound(given.name.clone()))?;
        check_etag(&given.etag, &o.etag, &given.name)?;
        for p in &paths {
            match *p {
                "display_name" => o.display_name = given.display_name.trim().to_string(),
                "specialties" => o.specialties = given.specialties.clone(),
                "region_code" => o.region_code = given.region_code.clone(),
                "active" => o.active = given.active,
                _ => {}
            }
        }
        let version = o.etag.trim_matches('"').parse::<i64>().unwrap_or(1) + 1;
        o.etag = fengqiao_kit::etag::etag(version);
        o.update_time = Some(to_ts(now));
        let done = sqlx::query(
            "UPDATE court_organizations SET active = $1, body = $2, version = $3 \
             WHERE court = $4 AND id = $5 AND version = $6",
        )
        .bind(i64::from(o.active))
        .bind(db::seal_body(db::ORGANIZATION_BODY, &o)?)
        .bind(version)
        .bind(&who.agency)
        .bind(&id)
        .bind(version - 1)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            // Changed concurrently (PostgreSQL): the caller reads again.
            return Err(Error::EtagMismatch(given.name.clone()));
        }
        let resp = UpdateInvitedOrganizationResponse {
            invited_organization: Some(o),
        };
        handler::answered(&idem, tx, resp).await
    }

    async fn update_mediator(
        &self,
        request: Request<UpdateInvitedMediatorRequest>,
    ) -> Result<UpdateInvitedMediatorResponse> {
        let (who, req) = handler::open(request)?;
        need_role(&who, rules::ROLE_COURT_ADMIN, "changing the roster")?;
        let given = req.invited_mediator.clone().unwrap_or_default();
        let (org, id) = parse_mediator("invited_mediator.name", &given.name)?;
        let paths = update_paths(
            req.update_mask.as_ref(),
            &[
                "display_name",
                "specialties",
                "region_code",
                "active",
                "max_load",
            ],
        )?;
        let mut v = Vec::new();
        if paths.contains(&"display_name") {
            text(
                &mut v,
                "invited_mediator.display_name",
                &given.display_name,
                100,
            );
        }
        if paths.contains(&"region_code")
            && let Err(e) = fengqiao_kit::validate::region_code(
                "invited_mediator.region_code",
                &given.region_code,
            )
        {
            v.push(e);
        }
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let idem = Idem::new(&who, "UpdateInvitedMediator", &req.request_id, &req)?;
        let (mut tx, now) = fengqiao_kit::begin_or_replay!(self.store, idem);
        let mut m = db::mediator(&mut tx, &who.agency, &org, &id)
            .await?
            .ok_or_else(|| Error::NotFound(given.name.clone()))?;
        check_etag(&given.etag, &m.etag, &given.name)?;
        for p in &paths {
            match *p {
                "display_name" => m.display_name = given.display_name.trim().to_string(),
                "specialties" => m.specialties = given.specialties.clone(),
                "region_code" => m.region_code = given.region_code.clone(),
                "active" => m.active = given.active,
                "max_load" => m.max_load = given.max_load,
                _ => {}
            }
        }
        let version = m.etag.trim_matches('"').parse::<i64>().unwrap_or(1) + 1;
        m.etag = fengqiao_kit::etag::etag(version);
        m.update_time = Some(to_ts(now));
        let done = sqlx::query(
            "UPDATE court_mediators SET active = $1, body = $2, version = $3 \
             WHERE court = $4 AND organization = $5 AND id = $6 AND version = $7",
        )
        .bind(i64::from(m.active))
        .bind(db::seal_body(db::MEDIATOR_BODY, &m)?)
        .bind(version)
        .bind(&who.agency)
        .bind(&org)
        .bind(&id)
        .bind(version - 1)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::EtagMismatch(given.name.clone()));
        }
        let resp = UpdateInvitedMediatorResponse {
            invited_mediator: Some(m),
        };
        handler::answered(&idem, tx, resp).await
    }

    async fn list_mediators(
        &self,
        request: Request<ListInvitedMediatorsRequest>,
    ) -> Result<ListInvitedMediatorsResponse> {
        let (who, req) = handler::open(request)?;
        let limit = fengqiao_kit::validate::page_size(req.page_size)? as usize;
        let org = if req.parent == "invitedOrganizations/-" {
            None
        } else {
            Some(
                fengqiao_kit::validate::parse_name("parent", "invitedOrganizations", &req.parent)?
                    .to_string(),
            )
        };
        let query = {
            let mut q = req.clone();
            q.page_size = 0;
            q.page_token.clear();
            format!("{}\n{:?}", who.agency, q.encode_to_vec())
        };
        let after =
            fengqiao_kit::validate::parse_page_token(&req.page_token, &query)?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT organization, id, body FROM court_mediators WHERE court = $1 \
             AND (organization || '/' || id) > $2 ORDER BY organization, id",
        )
        .bind(&who.agency)
        .bind(&after)
        .fetch_all(self.store.pool())
        .await?;
        let mut out: Vec<InvitedMediator> = Vec::new();
        let mut next_page_token = String::new();
        let mut conn = self.store.pool().acquire().await?;
        for row in &rows {
            let o: String = row.try_get("organization")?;
            if org.as_ref().is_some_and(|x| *x != o) {
                continue;
            }
            let mut m = db::mediator_of(row)?;
            let keep = (req.specialty == 0 || m.specialties.contains(&req.specialty))
                && m.region_code.starts_with(&req.region_code_prefix)
                && req.active.is_none_or(|a| a == m.active);
            if !keep {
                continue;
            }
            if out.len() == limit {
                let last = out[limit - 1]
                    .name
                    .trim_start_matches("invitedOrganizations/")
                    .replace("/mediators/", "/");
                next_page_token = fengqiao_kit::validate::page_token(&query, &last);
                break;
            }
            m.current_load = db::load_of(&mut conn, &who.agency, "mediator", &m.name).await?;
            out.push(m);
        }
        Ok(ListInvitedMediatorsResponse {
            invited_mediators: out,
            next_page_token,
        })
    }
}

/// The paths of an update mask, each one of `allowed` (at least one).
fn update_paths(
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&'static str],
) -> Result<Vec<&'static str>> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(FieldViolation::new("update_mask", "names the fields to update").into());
    }
    paths
        .iter()
        .map(|p| {
            allowed
                .iter()
                .find(|a| **a == p.as_str())
                .copied()
                .ok_or_else(|| {
                    Error::from(FieldViolation::new(
                        "update_mask",
                        format!("allowed paths: {}", allowed.join(", ")),
                    ))
                })
        })
        .collect()
}

/// What the statistics need of one case (业绩档案, 特邀调解规定 Art 5–10).
fn summary_of(c: &PreFilingCase) -> crate::CaseSummary {
    let last = c.delegations.last();
    let accepted = c
        .delegations
        .iter()
        .rev()
        .find(|d| d.result == DelegationResult::Accepted as i32)
        .and_then(|d| d.result_time.as_ref())
        .map(from_ts);
    let ended = c
        .ending
        .as_ref()
        .and_then(|e| e.end_time.as_ref())
        .map(from_ts);
    crate::CaseSummary {
        state: S::try_from(c.state).unwrap_or_default(),
        category: fengqiao_proto::common::DisputeCategory::try_from(c.category).unwrap_or_default(),
        organization: last.map(|d| d.organization.clone()).unwrap_or_default(),
        mediator: last.map(|d| d.mediator.clone()).unwrap_or_default(),
        end_reason: c
            .ending
            .as_ref()
            .map(|e| EndReason::try_from(e.reason).unwrap_or_default())
            .unwrap_or_default(),
        delegations: u32::try_from(c.delegations.len()).unwrap_or(u32::MAX),
        declined: u32::try_from(
            c.delegations
                .iter()
                .filter(|d| {
                    d.result == DelegationResult::Declined as i32
                        || d.result == DelegationResult::TimedOut as i32
                })
                .count(),
        )
        .unwrap_or(u32::MAX),
        overdue: c.overdue || c.clocks.iter().any(|k| k.expired),
        mediation_days: match (accepted, ended) {
            (Some(a), Some(e)) => Some((e - a) as f64 / 86_400_000_000.0),
            _ => None,
        },
    }
}

/// Copies the router's clocks of the delegation into the case: acceptance (在线调解规则
/// Art 12), contact (Art 15, the route's named clock) and mediation (the feedback clock,
/// Art 24–26).
fn mirror_clocks(c: &mut PreFilingCase, t: &Transfer) {
    let named = t
        .clocks
        .iter()
        .find(|k| k.name == reconcile::CONTACT_CLOCK)
        .and_then(|k| k.state.clone());
    for (name, clock) in [
        ("acceptance", t.acceptance_clock.clone()),
        ("contact", named),
        ("mediation", t.feedback_clock.clone()),
    ] {
        let Some(mut k) = clock.filter(|k| k.started_at.is_some()) else {
            continue;
        };
        // A stopped clock is final: later messages (e.g. the acknowledgement) do not rewrite
        // it, so they leave the case, and the etag a client holds, as they were.
        if k.stopped_at.is_some()
            && c.clocks
                .iter()
                .any(|x| x.name == name && x.stopped_at.is_some())
        {
            continue;
        }
        k.name = name.to_string();
        c.clocks.retain(|x| x.name != name);
        c.clocks.push(k);
    }
}

// ---------------------------------------------------------------------------
// Router messages (the court is the SENDER on court-to-invited-mediation)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Inbox {
    store: Store,
    policy: RedesignationPolicy,
    service: CourtDiversion,
}

impl fengqiao_kit::deliveries::Deliveries for Inbox {
    /// 委派调解: the court delegates and is told of every step of the delegation.
    fn receives(&self) -> &[fengqiao_kit::inbox::Receives] {
        use fengqiao_proto::inbox::RecipientSide;
        &[(rules::ROUTE_ID, RecipientSide::Sender)]
    }

    async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse> {
        let msg = fengqiao_kit::deliveries::transfer_message(envelope)?;
        let Some((mut tx, now)) =
            handler::receive(&self.store, SERVICE, &envelope.message_id).await?
        else {
            return Ok(DeliverResponse { duplicate: true });
        };
        let event = msg.event.clone().unwrap_or_default();
        let case_id = handler::case_id_of(envelope, &event).to_string();
        db::lock_case(&mut tx, "case_id", &case_id).await?;
        let row = sqlx::query(&format!(
            "SELECT {} FROM court_cases WHERE case_id = $1 AND court = $2",
            db::COLUMNS
        ))
        .bind(&case_id)
        .bind(&envelope.to_agency)
        .fetch_optional(&mut *tx)
        .await?;
        let (Some(mut s), Some(t)) = (row.as_ref().map(db::stored_of).transpose()?, msg.transfer)
        else {
            // A transfer not made from a case of ours (e.g. created on the router directly).
            tx.commit().await?;
            return Ok(DeliverResponse { duplicate: false });
        };
        let transfer_name = handler::transfer_of(envelope, &event).to_string();
        let known = s
            .case
            .delegations
            .iter()
            .any(|d| d.transfer == transfer_name);
        if !known && matches!(s.state(), S::AwaitingJointChoice | S::AwaitingDesignation) {
            // Our own delegation whose commit is under way (ChooseMediator / Designate
            // called the router first), or was cut off and is retried under the same derived
            // request id: not recorded in the inbox, so the router delivers it again.
            return Err(crate::error::not_yet(
                "the delegation of this transfer is not recorded yet",
            ));
        }
        let current = s
            .case
            .delegations
            .last()
            .is_some_and(|d| d.transfer == transfer_name);
        // The router is the source of truth: only a newer message of the current delegation
        // changes the case (it is recorded in the inbox as received either way).
        let newer = event.sequence == 0 || event.sequence > s.event_seq;
        if !current || !newer {
            tx.commit().await?;
            return Ok(DeliverResponse { duplicate: false });
        }
        let before = s.case.clone();
        let etype = TransferEventType::try_from(event.event_type).unwrap_or_default();
        let court = s.court.clone();
        let system = db::system_actor(&court);
        let actor = event.actor.clone().unwrap_or_else(|| system.clone());
        let mut ch = Change::default();
        mirror_clocks(&mut s.case, &t);
        let state_before = s.state();
        match etype {
            // 在线调解规则 Art 26: appraisal time is not counted (the clock pauses).
            TransferEventType::ClockPaused => {
                if event.reason_code == rules::PAUSE_APPRAISAL {
                    s.case.appraisals.push(Appraisal {
                        appraisal_id: uuid::Uuid::new_v4().to_string(),
                        subject: event.reason.clone(),
                        institution: String::new(),
                        start_time: event.occurred_at.or(Some(to_ts(now))),
                        end_time: None,
                        opinion: None,
                        recorded_by: Some(actor.clone()),
                    });
                }
                ch.event(
                    &s.case,
                    CaseEventType::ClockChanged,
                    state_before,
                    "mediation",
                    &actor,
                    &event.reason_code,
                    now,
                );
            }
            TransferEventType::ClockResumed => {
                if let Some(a) = s
                    .case
                    .appraisals
                    .iter_mut()
                    .rev()
                    .find(|a| a.end_time.is_none())
                {
                    a.end_time = event.occurred_at.or(Some(to_ts(now)));
                }
                ch.event(
                    &s.case,
                    CaseEventType::ClockChanged,
                    state_before,
                    "mediation",
                    &actor,
                    &event.reason_code,
                    now,
                );
            }
            // 特邀调解规定 Art 27: extended with every party's consent, on the router.
            TransferEventType::DeadlineExtended => {
                let was = before
                    .clocks
                    .iter()
                    .find(|k| k.name == "mediation")
                    .map_or(0, |k| k.extended_by);
                let now_ext = s
                    .case
                    .clocks
                    .iter()
                    .find(|k| k.name == "mediation")
                    .map_or(0, |k| k.extended_by);
                s.case.extensions.push(Extension {
                    days: now_ext.saturating_sub(was),
                    consenting_party_ids: rules::party_ids(&s.case.plaintiffs, &s.case.defendants)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                    evidence: None,
                    granted_by: Some(actor.clone()),
                    grant_time: event.occurred_at.or(Some(to_ts(now))),
                });
                ch.event(
                    &s.case,
                    CaseEventType::ClockChanged,
                    state_before,
                    "mediation",
                    &actor,
                    &event.reason_code,
                    now,
                );
            }
            _ => {}
        }
        let view = TransferView::of(&t);
        let mut timed_out = false;
        let mut ended = false;
        for _ in 0..8 {
            let delegations = u32::try_from(s.case.delegations.len()).unwrap_or(u32::MAX);
            let Some(action) = reconcile::next_action(s.state(), &view, delegations, self.policy)
            else {
                break;
            };
            let from = s.state();
            let reason_code = reason_code_of(&t, &event.reason_code);
            db::step(&mut s.case, action, now, &actor, &reason_code, &mut ch)?;
            self.record(&mut s.case, from, action, &t, &event, &actor, now);
            timed_out |= action == Action::AcceptanceExpired { redesignate: true };
            ended |= matches!(action, Action::End(_));
        }
        s.event_seq = s.event_seq.max(event.sequence);
        if s.case == before && ch.is_empty() {
            sqlx::query("UPDATE court_cases SET event_seq = $1 WHERE id = $2")
                .bind(fengqiao_kit::transfers::seq_column(s.event_seq))
                .bind(s.id())
                .execute(&mut *tx)
                .await?;
        } else {
            db::save(&mut tx, &mut s, now).await?;
            ch.write(&mut tx, &s).await?;
        }
        tx.commit().await?;
        if ended {
            // The court's system confirms receipt of the feedback (确认反馈 / 办结): the
            // transfer closes on the router. After the commit; without the service key the
            // transfer stays FEEDBACK_SUBMITTED for the court's own system to acknowledge.
            let service = self.service.clone();
            let (transfer, court, id) =
                (transfer_name.clone(), s.court.clone(), s.id().to_string());
            tokio::spawn(async move {
                if let Err(e) = service.acknowledge(&transfer, &court, &id).await {
                    tracing::warn!(transfer = %transfer, error = %e, "feedback not acknowledged on the router");
                }
            });
        }
        if timed_out {
            // 在线调解规则 Art 12: no answer in 3 working days; the court designates another.
            // Done after the commit (the router is called outside any transaction); if it
            // cannot be done (no key, nobody qualifies, a crash) the case waits for the
            // judge, with the designation clock running.
            let service = self.service.clone();
            let (name, court) = (s.case.name.clone(), s.court.clone());
            tokio::spawn(async move {
                if let Err(e) = service.auto_designate(&name, &court).await {
                    tracing::warn!(case = %name, error = %e, "automatic re-designation failed; the judge designates");
                }
            });
        }
        Ok(DeliverResponse { duplicate: false })
    }
}

impl Inbox {
    /// The records that go with an action taken on the router's word.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        c: &mut PreFilingCase,
        from: S,
        action: Action,
        t: &Transfer,
        event: &fengqiao_proto::router::TransferEvent,
        actor: &Actor,
        now: i64,
    ) {
        let at = Some(to_ts(now));
        let materials = |cause: ReturnCause, code: String, documents: Vec<EvidenceRef>| {
            Some(MaterialsReturn {
                cause: cause as i32,
                reason_code: code,
                documents,
                return_time: at,
            })
        };
        let (handback_code, handback_docs) = t
            .handback
            .clone()
            .map(|h| (h.reason_code, h.documents))
            .unwrap_or_default();
        match action {
            Action::Accept => {
                if let Some(d) = c.delegations.last_mut() {
                    d.result = DelegationResult::Accepted as i32;
                    d.result_time = at;
                }
            }
            Action::Decline { redesignate } | Action::AcceptanceExpired { redesignate } => {
                let declined = matches!(action, Action::Decline { .. });
                if let Some(d) = c.delegations.last_mut() {
                    d.result = if declined {
                        DelegationResult::Declined
                    } else {
                        DelegationResult::TimedOut
                    } as i32;
                    d.result_time = at;
                    if declined && let Some(dec) = &t.decline {
                        d.decline_reason_code = dec.reason_code.clone();
                        d.decline_reason = dec.reason.clone();
                    }
                }
                // 在线调解规则 Art 12: the court designates another.
                c.selection = None;
                if !redesignate {
                    c.materials_return = materials(
                        ReturnCause::NoOrganization,
                        event.reason_code.clone(),
                        vec![],
                    );
                }
            }
            // 在线调解规则 Art 15: the parties not reached; materials back.
            Action::ContactExpired => {
                c.materials_return =
                    materials(ReturnCause::ContactFailed, handback_code, handback_docs);
            }
            // 在线调解规则 Art 25: the period expired without extension consent.
            Action::MediationExpired => {
                c.ending = Some(Ending {
                    reason: EndReason::PeriodExpired as i32,
                    outcome_code: rules::outcome_code(EndReason::PeriodExpired)
                        .unwrap_or_default()
                        .to_string(),
                    detail: String::new(),
                    documents: handback_docs.clone(),
                    ended_by: Some(actor.clone()),
                    end_time: at,
                });
                c.materials_return =
                    materials(ReturnCause::PeriodExpired, handback_code, handback_docs);
            }
            Action::End(kind) => {
                let f = t.feedback.clone().unwrap_or_default();
                let reason =
                    rules::end_reason_for_outcome(&f.outcome_code).unwrap_or(EndReason::Other);
                c.ending = Some(Ending {
                    reason: reason as i32,
                    outcome_code: f.outcome_code.clone(),
                    detail: pii::redact_text(&f.summary).into_owned(),
                    documents: f.documents.clone(),
                    ended_by: f.submitted_by.clone(),
                    end_time: f.submit_time.or(at),
                });
                match kind {
                    // 特邀调解规定 Art 19: the agreement is filed with the court, and the court
                    // offers judicial confirmation, a 调解书 or voluntary performance.
                    EndKind::Agreement => {
                        c.agreement_filing = Some(AgreementFiling {
                            filing_number: format!(
                                "{}备{}",
                                c.pre_filing_number.trim_end_matches('号'),
                                c.delegations.len()
                            ),
                            agreement: f.documents.first().cloned(),
                            file_time: at,
                            offered_next_steps: rules::OFFERED_NEXT_STEPS
                                .iter()
                                .map(|s| *s as i32)
                                .collect(),
                            ..Default::default()
                        });
                    }
                    // 特邀调解规定 Art 21: failure sends the materials back.
                    EndKind::Failed => {
                        let cause = rules::return_cause(from, reason)
                            .unwrap_or(ReturnCause::MediationFailed);
                        c.materials_return =
                            materials(cause, f.outcome_code.clone(), f.documents.clone());
                    }
                    EndKind::SettledAndWithdrawn => {}
                }
            }
            Action::Returned => {
                c.materials_return = materials(
                    ReturnCause::ReturnedByOrganization,
                    handback_code,
                    handback_docs,
                );
            }
            // 特邀调解规定 Art 18: suspend and report to the judge.
            Action::Suspend => {
                let h = t.handback.clone().unwrap_or_default();
                c.suspension = Some(Suspension {
                    reported_by: h.actor.clone(),
                    report: h.reason_description.clone(),
                    documents: h.documents.clone(),
                    suspend_time: at,
                    ..Default::default()
                });
            }
            _ => {}
        }
    }
}

fn reason_code_of(t: &Transfer, event_code: &str) -> String {
    if !event_code.is_empty() {
        return event_code.to_string();
    }
    if let Some(f) = &t.feedback
        && !f.outcome_code.is_empty()
    {
        return f.outcome_code.clone();
    }
    t.handback
        .as_ref()
        .map(|h| h.reason_code.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The court's own deadlines
// ---------------------------------------------------------------------------

struct Timer {
    policy: RedesignationPolicy,
}

impl fengqiao_store::deadline::DeadlineHandler for Timer {
    fn fire<'a>(
        &'a self,
        tx: &'a mut Tx,
        deadline: &'a fengqiao_store::deadline::Deadline,
    ) -> fengqiao_store::deadline::BoxFuture<
        'a,
        std::result::Result<(), fengqiao_store::deadline::HandlerError>,
    > {
        Box::pin(async move {
            let _ = self.policy;
            fire(tx, &deadline.key).await.map_err(|e| {
                Box::new(std::io::Error::other(e.to_string()))
                    as fengqiao_store::deadline::HandlerError
            })
        })
    }
}

/// Carries out the expiry of `cases/{id}/{clock}`: the joint choice lapses (the court
/// designates, 在线调解规则 Art 10); the designation or the registration decision (民事诉讼法
/// Art 126) is overdue and the court is told.
async fn fire(tx: &mut Tx, key: &str) -> Result<()> {
    let Some((name, clock)) = key.rsplit_once('/') else {
        return Ok(());
    };
    let id = name.trim_start_matches("cases/");
    db::lock_case(tx, "id", id).await?;
    let Some(mut s) = db::load(tx, id).await? else {
        return Ok(());
    };
    let now = fengqiao_store::db_now_micros(tx).await?;
    let system = db::system_actor(&s.court);
    let mut ch = Change::default();
    let running = s
        .case
        .clocks
        .iter()
        .any(|k| k.name == clock && k.stopped_at.is_none());
    if !running {
        return Ok(());
    }
    match (clock, s.state()) {
        ("joint_choice", S::AwaitingJointChoice) => {
            if let Some(k) = s.case.clocks.iter_mut().find(|k| k.name == clock) {
                k.expired = true;
            }
            db::step(
                &mut s.case,
                Action::JointChoiceExpired,
                now,
                &system,
                "JOINT_CHOICE_LAPSED",
                &mut ch,
            )?;
        }
        ("designation", S::AwaitingDesignation) => {
            db::mark_overdue(&mut s.case, clock, now, &system, &mut ch);
            db::step(
                &mut s.case,
                Action::DesignationOverdue,
                now,
                &system,
                "DESIGNATION_OVERDUE",
                &mut ch,
            )?;
        }
        ("registration", S::RegistrationPending) => {
            db::mark_overdue(&mut s.case, clock, now, &system, &mut ch);
            db::step(
                &mut s.case,
                Action::RegistrationOverdue,
                now,
                &system,
                "REGISTRATION_OVERDUE",
                &mut ch,
            )?;
        }
        _ => return Ok(()),
    }
    db::save(tx, &mut s, now).await?;
    ch.write(tx, &s).await?;
    tracing::info!(case = %s.case.name, clock, "court deadline passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// gRPC: the answers to mutations are masked; the full view is offered only by the reads
// (GetCase, ListCases), where it is audited. Idempotent replays are masked too (the stored
// answer stays whole, sealed in the store).
// ---------------------------------------------------------------------------

fengqiao_kit::forward_rpcs! {
    impl CourtDiversionService for CourtDiversion;
    reply create_invited_organization(CreateInvitedOrganizationRequest)
        -> CreateInvitedOrganizationResponse = create_org;
    reply get_invited_organization(GetInvitedOrganizationRequest)
        -> GetInvitedOrganizationResponse = get_org;
    reply list_invited_organizations(ListInvitedOrganizationsRequest)
        -> ListInvitedOrganizationsResponse = list_orgs;
    reply update_invited_organization(UpdateInvitedOrganizationRequest)
        -> UpdateInvitedOrganizationResponse = update_org;
    reply create_invited_mediator(CreateInvitedMediatorRequest)
        -> CreateInvitedMediatorResponse = create_mediator;
    reply list_invited_mediators(ListInvitedMediatorsRequest)
        -> ListInvitedMediatorsResponse = list_mediators;
    reply update_invited_mediator(UpdateInvitedMediatorRequest)
        -> UpdateInvitedMediatorResponse = update_mediator;
    masked create_case(CreateCaseRequest) -> CreateCaseResponse;
    reply get_case(GetCaseRequest) -> GetCaseResponse;
    reply list_cases(ListCasesRequest) -> ListCasesResponse;
    masked record_consent(RecordConsentRequest) -> RecordConsentResponse;
    masked choose_mediator(ChooseMediatorRequest) -> ChooseMediatorResponse;
    masked designate_mediator(DesignateMediatorRequest) -> DesignateMediatorResponse;
    reply start_appraisal(StartAppraisalRequest) -> StartAppraisalResponse;
    reply end_appraisal(EndAppraisalRequest) -> EndAppraisalResponse;
    reply suspend_mediation(SuspendMediationRequest) -> SuspendMediationResponse;
    masked resolve_suspension(ResolveSuspensionRequest) -> ResolveSuspensionResponse = resolve;
    masked decide_next_step(DecideNextStepRequest) -> DecideNextStepResponse;
    masked register_case(RegisterCaseRequest) -> RegisterCaseResponse = register;
    masked refuse_registration(RefuseRegistrationRequest) -> RefuseRegistrationResponse = refuse;
    masked withdraw_case(WithdrawCaseRequest) -> WithdrawCaseResponse = withdraw;
    reply get_case_statistics(GetCaseStatisticsRequest) -> GetCaseStatisticsResponse = statistics;
    reply watch_cases(WatchCasesRequest) -> WatchStream = watch;
}

/// The methods of the contract not built: a message for each of why, and what to do instead.
impl CourtDiversion {
    async fn start_appraisal(
        &self,
        _r: Request<StartAppraisalRequest>,
    ) -> Result<StartAppraisalResponse> {
        Err(crate::error::not_built(
            "StartAppraisal: the router lets only the receiving organisation pause the mediation \
             clock; the organisation pauses it (PauseClock, reason appraisal) and the case \
             mirrors the pause",
        ))
    }

    async fn end_appraisal(
        &self,
        _r: Request<EndAppraisalRequest>,
    ) -> Result<EndAppraisalResponse> {
        Err(crate::error::not_built(
            "EndAppraisal: the organisation resumes the clock on the router (ResumeClock); the \
             case mirrors it",
        ))
    }

    async fn suspend_mediation(
        &self,
        _r: Request<SuspendMediationRequest>,
    ) -> Result<SuspendMediationResponse> {
        Err(crate::error::not_built(
            "SuspendMediation by the court: a suspension arrives from the organisation's \
             escalation (suspected_false_mediation) and shows as SUSPENDED",
        ))
    }

    async fn choose_mediator(
        &self,
        r: Request<ChooseMediatorRequest>,
    ) -> Result<ChooseMediatorResponse> {
        Ok(ChooseMediatorResponse {
            pre_filing_case: Some(self.choose(r).await?),
        })
    }

    async fn designate_mediator(
        &self,
        r: Request<DesignateMediatorRequest>,
    ) -> Result<DesignateMediatorResponse> {
        Ok(DesignateMediatorResponse {
            pre_filing_case: Some(self.designate(r).await?),
        })
    }
}
