//! Mediation cases (调解案件): acceptance, consent, assignment, sessions, agreement, ending,
//! escalation, supplementary investigation, follow-up visits and the case file.
//!
//! Every mutation runs in two phases: a read that authorises, checks the etag, the state and
//! the input (and answers a replayed `request_id`), then — for decisions the sender must
//! know — a call to the router FOR the caller (its bearer token is forwarded, so the router
//! authorises the real agency, actor and roles), then one write transaction that re-checks
//! the row version, applies the change, files the case-file entries and stores the
//! idempotent answer. Router calls carry a `request_id` derived from the caller's, so a
//! retry after a failed local commit replays the router's answer instead of acting twice.

use crate::lifecycle::{self, Action};
use fengqiao_kit::Reason;
use fengqiao_kit::handler::check;
use fengqiao_kit::{FieldViolation, Identity, inbox::forward_auth};
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Money};
use fengqiao_proto::mediation::assign_mediator_request::Assignee;
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    self as r, AcceptTransferRequest, DeclineTransferRequest, EscalateTransferRequest,
    GetCaseTimelineRequest, InvestigationState, SubmitFeedbackRequest,
};
use fengqiao_store::Store;
use tonic::Request;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::outcomes;
use crate::roster::{self, parse_mediator_name};
use crate::store::{self as db, Loaded, state_name, state_of};
use crate::util::{check_etag, from_timestamp, require_case_role, text, to_timestamp, violations};
use fengqiao_kit::idem::Idem;

use MediationCaseState as S;

fn end_reason_text(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Agreement => "达成调解协议",
        EndReason::SettledAndWithdrawn => "当事人自行和解、撤回调解申请",
        EndReason::Unreachable => "无法联系到当事人",
        EndReason::PartyRefusesToContinue => "当事人明确拒绝继续调解",
        EndReason::GapTooLarge => "意见分歧较大难以达成调解协议",
        EndReason::PeriodExpired => "调解期限届满且未达成延期合意",
        EndReason::PartyRefusesToSign => "当事人拒绝在调解协议上签章",
        EndReason::Other => "其他",
        EndReason::Unspecified => "",
    }
}

/// The specialty that matches a dispute category, for automatic assignment.
pub fn specialty_for(category: i32) -> MediatorSpecialty {
    match DisputeCategory::try_from(category).unwrap_or(DisputeCategory::Unspecified) {
        DisputeCategory::Neighbourhood => MediatorSpecialty::Neighbourhood,
        DisputeCategory::MarriageFamily => MediatorSpecialty::Family,
        DisputeCategory::LabourWages => MediatorSpecialty::LabourWages,
        DisputeCategory::PropertyManagement => MediatorSpecialty::PropertyManagement,
        DisputeCategory::TrafficAccident => MediatorSpecialty::Traffic,
        DisputeCategory::ContractDebt => MediatorSpecialty::Contract,
        DisputeCategory::Medical => MediatorSpecialty::Medical,
        _ => MediatorSpecialty::Other,
    }
}

/// A case-file entry.
pub fn entry(kind: CaseFileEntryKind, title: &str, at: i64, description: String) -> CaseFileEntry {
    CaseFileEntry {
        kind: kind as i32,
        title: title.to_string(),
        record_time: Some(to_timestamp(at)),
        description,
        document: None,
    }
}

fn doc_entry(kind: CaseFileEntryKind, title: &str, at: i64, d: &EvidenceRef) -> CaseFileEntry {
    CaseFileEntry {
        kind: kind as i32,
        title: title.to_string(),
        record_time: Some(to_timestamp(at)),
        description: d.display_name.clone(),
        document: Some(d.clone()),
    }
}

/// One case-file entry per document, all of one kind and title.
fn doc_entries<'a>(
    kind: CaseFileEntryKind,
    title: &'a str,
    at: i64,
    docs: &'a [EvidenceRef],
) -> impl Iterator<Item = CaseFileEntry> + 'a {
    docs.iter().map(move |d| doc_entry(kind, title, at, d))
}

fn wrong(c: &MediationCase, action: &'static str) -> Error {
    Error::WrongState {
        resource: c.name.clone(),
        state: state_name(c.state),
        action,
    }
}

fn is_party(c: &MediationCase, id: &str) -> bool {
    c.parties.iter().any(|p| p.party_id == id)
}

/// Whether every party's latest decision is consent.
fn all_consented(c: &MediationCase) -> bool {
    !c.parties.is_empty()
        && c.parties.iter().all(|p| {
            c.consents
                .iter()
                .rev()
                .find(|r| r.party_id == p.party_id)
                .is_some_and(|r| r.decision == ConsentDecision::Consented as i32)
        })
}

/// ACCEPTED → IN_MEDIATION once every party consented and a mediator is assigned.
fn maybe_start(c: &mut MediationCase) {
    if state_of(c) == S::Accepted && c.assignment.is_some() && all_consented(c) {
        c.state = S::InMediation as i32;
    }
}

/// Sum of the agreed amounts when they share one currency.
fn total_amount(a: &Agreement) -> Option<Money> {
    let amounts: Vec<&Money> = a.terms.iter().filter_map(|t| t.amount.as_ref()).collect();
    let first = amounts.first()?;
    if amounts
        .iter()
        .any(|m| m.currency_code != first.currency_code)
    {
        return None;
    }
    let nanos: i128 = amounts
        .iter()
        .map(|m| i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos))
        .sum();
    Some(Money {
        currency_code: first.currency_code.clone(),
        units: i64::try_from(nanos / 1_000_000_000).ok()?,
        nanos: i32::try_from(nanos % 1_000_000_000).ok()?,
    })
}

/// Picks the active mediator with the specialty and region prefix, below their maximum
/// load, not recused from this case, with the lowest current load (ties by name).
fn choose<'a>(
    mediators: &'a [Mediator],
    specialty: MediatorSpecialty,
    prefix: &str,
    excluded: &[String],
) -> Option<&'a Mediator> {
    mediators
        .iter()
        .filter(|m| {
            m.active
                && m.specialties.contains(&(specialty as i32))
                && m.region_code.starts_with(prefix)
                && (m.max_load == 0 || m.current_load < m.max_load)
                && !excluded.contains(&m.name)
        })
        .min_by(|a, b| {
            a.current_load
                .cmp(&b.current_load)
                .then_with(|| a.name.cmp(&b.name))
        })
}

/// Automatic assignment: explicit criteria, else the case's category and county, falling
/// back to the prefecture.
fn auto_assign(
    c: &MediationCase,
    mediators: &[Mediator],
    crit: &AutomaticAssignment,
) -> Result<(Mediator, String)> {
    let specialty = MediatorSpecialty::try_from(crit.specialty)
        .ok()
        .filter(|s| *s != MediatorSpecialty::Unspecified)
        .unwrap_or_else(|| specialty_for(c.category));
    let excluded: Vec<String> = c
        .assignment_history
        .iter()
        .filter(|a| a.recuse_time.is_some())
        .map(|a| a.mediator.clone())
        .collect();
    let prefixes: Vec<String> = if !crit.region_code_prefix.is_empty() {
        vec![crit.region_code_prefix.clone()]
    } else if c.region_code.len() == 6 {
        vec![c.region_code.clone(), c.region_code[..4].to_string()]
    } else {
        vec![String::new()]
    };
    for prefix in &prefixes {
        if let Some(m) = choose(mediators, specialty, prefix, &excluded) {
            let limit = if m.max_load == 0 {
                "∞".to_string()
            } else {
                m.max_load.to_string()
            };
            let why = format!(
                "specialty {}, region {}, load {}/{}",
                specialty
                    .as_str_name()
                    .trim_start_matches("MEDIATOR_SPECIALTY_"),
                m.region_code,
                m.current_load,
                limit
            );
            return Ok((m.clone(), why));
        }
    }
    Err(Error::Refused(
        Reason::NoMediatorMatches,
        "no active mediator of the organisation matches the specialty, region and load".into(),
    ))
}

fn assignment(
    m: &Mediator,
    method: AssignmentMethod,
    why: String,
    who: &Identity,
    now: i64,
) -> MediatorAssignment {
    MediatorAssignment {
        mediator: m.name.clone(),
        mediator_display_name: m.display_name.clone(),
        method: method as i32,
        match_explanation: why,
        assigned_by: Some(who.as_actor()),
        assign_time: Some(to_timestamp(now)),
        ..Default::default()
    }
}

fn set_assignment(
    c: &mut MediationCase,
    a: MediatorAssignment,
    now: i64,
    out: &mut Vec<CaseFileEntry>,
) {
    out.push(entry(
        CaseFileEntryKind::Assignment,
        "指派调解员",
        now,
        format!("指派调解员 {}；{}", a.mediator, a.match_explanation),
    ));
    c.assignment_history.push(a.clone());
    c.assignment = Some(a);
}

fn router_rid(method: &str, case: &str, request_id: &str) -> String {
    fengqiao_kit::agency::router_rid("mediation", method, case, request_id)
}

fn fwd<T, U>(incoming: &Request<T>, msg: U) -> Request<U> {
    let mut r = Request::new(msg);
    forward_auth(incoming, &mut r);
    r
}

/// The router event sequence of an answer's transfer (0 when absent).
fn answer_seq(t: Option<&r::Transfer>) -> u64 {
    t.and_then(|t| t.last_event.as_ref())
        .map_or(0, |e| e.sequence)
}

/// A router refusal of a call whose case already showed its result: the router refused a
/// new call (not a retry), so the answer is the local wrong state.
///
/// `fields` renames the router request's fields that came from the caller's request (so a bad
/// one is named as the caller sent it); any other bad field is a fault of this service.
fn routed_error(
    status: tonic::Status,
    retried: bool,
    c: &MediationCase,
    action: &'static str,
    fields: &'static [(&'static str, &'static str)],
) -> Error {
    if retried && status.code() == tonic::Code::FailedPrecondition {
        wrong(c, action)
    } else {
        Error::Upstream(Box::new(status), fields)
    }
}

/// The caller's fields a decline passes to the router unchanged.
const REASON_FIELDS: &[(&str, &str)] = &[("reason_code", "reason_code"), ("reason", "reason")];

/// The caller's fields an escalation passes to the router unchanged.
const ESCALATION_FIELDS: &[(&str, &str)] = &[
    ("reason_code", "reason_code"),
    ("reason", "reason"),
    ("documents", "documents"),
];

enum Begin<R> {
    Replay(R),
    Case(Box<Loaded>),
}

/// The mediation cases over the service's store, talking to the router.
#[derive(Clone, Debug)]
pub struct Cases {
    store: Store,
    /// Calls to the router are CLIENT spans (issue #15).
    router: fengqiao_kit::client::TracedChannel,
}

impl Cases {
    /// Cases over `store`, calling the router on `router`.
    pub fn new(store: Store, router: Channel) -> Self {
        Self {
            store,
            router: router.into(),
        }
    }

    fn router(&self) -> TransferServiceClient<fengqiao_kit::client::TracedChannel> {
        TransferServiceClient::new(self.router.clone())
    }

    /// Phase 1: replay, authorise, load, check the etag.
    async fn begin<R: prost::Message + Default>(
        &self,
        who: &Identity,
        idem: &Idem,
        name: &str,
        etag: &str,
    ) -> Result<Begin<R>> {
        // Advisory (the write transaction checks both again): one statement, no transaction.
        let mut l = match db::peek_and_load::<R>(&self.store, who, name, idem).await? {
            db::Peeked::Replay(r) => return Ok(Begin::Replay(r)),
            db::Peeked::Case(l) => l,
        };
        check_etag(name, etag, l.version)?;
        l.etag_checked = !etag.is_empty();
        Ok(Begin::Case(l))
    }

    /// Phase 1 of a call the router decides. A case already in one of the `done` states may
    /// be this very call retried after its local commit was lost, with the router's message
    /// for it having brought the case in step (the router is the source of truth): its etag
    /// then names the version before, so it is not checked, and the router call (same
    /// derived request id) decides — it replays the first answer, or refuses a new call.
    async fn begin_routed<R: prost::Message + Default>(
        &self,
        who: &Identity,
        idem: &Idem,
        name: &str,
        etag: &str,
        done: &[S],
    ) -> Result<Begin<R>> {
        // Advisory (the write transaction checks both again): one statement, no transaction.
        let mut l = match db::peek_and_load::<R>(&self.store, who, name, idem).await? {
            db::Peeked::Replay(r) => return Ok(Begin::Replay(r)),
            db::Peeked::Case(l) => l,
        };
        if !done.contains(&state_of(&l.case)) {
            check_etag(name, etag, l.version)?;
            l.etag_checked = !etag.is_empty();
        }
        Ok(Begin::Case(l))
    }

    /// Phase 2: one write transaction applying `apply` to the case. With `strict` the case
    /// must not have changed since phase 1; after a router call it may have (a router
    /// message arrived), and `apply` re-checks the state instead, since the router has
    /// already acted.
    #[allow(clippy::too_many_arguments)]
    async fn commit<R, F, G>(
        &self,
        who: &Identity,
        idem: &Idem,
        l: &Loaded,
        strict: bool,
        apply: F,
        respond: G,
    ) -> Result<R>
    where
        R: prost::Message + Default,
        F: FnOnce(&mut MediationCase, i64, &mut Vec<CaseFileEntry>) -> Result<()>,
        G: FnOnce(&MediationCase) -> R,
    {
        let mut tx = self.store.write().await?;
        // The case row's lock serialises every call naming this case, so the replay check
        // after it needs no lock of its own; it reads the clock in the same statement.
        let cur = db::load_for_update(&mut tx, who, &l.case.name).await?;
        let (replayed, now) = idem.replay_under_row_lock::<R>(&mut tx).await?;
        if let Some(r) = replayed {
            return Ok(r);
        }
        // Without an etag the change applies to the current version; `apply` re-checks the
        // state on it.
        if strict && l.etag_checked && cur.version != l.version {
            return Err(Error::EtagMismatch(l.case.name.clone()));
        }
        let mut case = cur.case.clone();
        let mut entries = Vec::new();
        apply(&mut case, now, &mut entries)?;
        db::save_seq(&mut tx, &cur, &mut case, now, l.answer_seq).await?;
        db::add_entries(&mut tx, &cur.id, &entries).await?;
        let resp = respond(&case);
        idem.save(&mut tx, &resp).await?;
        tx.commit().await?;
        Ok(resp)
    }

    /// Lists the caller's agency's cases, newest first, a page at a time (keyset paging:
    /// a page token names the last case returned). Agency, case id, states and mediator are
    /// selected in SQL on indexed columns; organization, category and overdue are checked on
    /// the cases read, in chunks, until the page is full.
    pub async fn list(&self, who: &Identity, req: ListCasesRequest) -> Result<ListCasesResponse> {
        let size = fengqiao_kit::validate::page_size(req.page_size)? as usize;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let mut after = fengqiao_kit::validate::parse_keyset_page_token(&req.page_token, &query)?;
        if let Some(i) = req
            .states
            .iter()
            .position(|s| {
                !matches!(MediationCaseState::try_from(*s), Ok(st) if st != MediationCaseState::Unspecified)
            })
        {
            return Err(FieldViolation::new(format!("states[{i}]"), "unknown state").into());
        }
        const CHUNK: usize = 200;
        let mut page: Vec<(i64, String, MediationCase)> = Vec::with_capacity(size + 1);
        let mut conn = self.store.pool().acquire().await?;
        'chunks: loop {
            let rows = db::list_page(
                &mut conn,
                &db::CaseQuery {
                    agency: &who.agency,
                    case_id: (!req.case_id.is_empty()).then_some(req.case_id.as_str()),
                    states: &req.states,
                    mediator: (!req.mediator.is_empty()).then_some(req.mediator.as_str()),
                    after: after.clone(),
                    limit: CHUNK,
                },
            )
            .await?;
            let full_chunk = rows.len() == CHUNK;
            for (ct, l) in rows {
                after = Some((ct, l.id.clone()));
                let c = &l.case;
                let keep = (req.organization.is_empty() || c.organization == req.organization)
                    && (req.category == 0 || c.category == req.category)
                    && (!req.overdue_only || c.mediation_clock.as_ref().is_some_and(|k| k.expired));
                if keep {
                    page.push((ct, l.id, l.case));
                    if page.len() > size {
                        break 'chunks;
                    }
                }
            }
            if !full_chunk {
                break;
            }
        }
        drop(conn);
        let mut next = String::new();
        if page.len() > size {
            page.truncate(size);
            if let Some((ct, id, _)) = page.last() {
                next = fengqiao_kit::validate::keyset_page_token(&query, *ct, id);
            }
        }
        Ok(ListCasesResponse {
            mediation_cases: page.into_iter().map(|(_, _, c)| c).collect(),
            next_page_token: next,
        })
    }

    /// Gets one case of the caller's agency.
    pub async fn get(&self, who: &Identity, name: &str) -> Result<MediationCase> {
        let mut tx = self.store.read().await?;
        let l = db::load_for(&mut tx, who, name).await?;
        tx.commit().await?;
        Ok(l.case)
    }

    /// Accepts an offered case (受理) and the router transfer.
    pub async fn accept(
        &self,
        who: &Identity,
        req: &Request<AcceptCaseRequest>,
    ) -> Result<AcceptCaseResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "AcceptCase", &m.request_id, m)?;
        let mut l = match self
            .begin_routed(who, &idem, &m.name, &m.etag, Action::Accept.retried_in())
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        let retried = lifecycle::maybe_retried(&l.case, Action::Accept);
        if !retried {
            lifecycle::require(&l.case, Action::Accept)?;
        }
        let t = self
            .router()
            .accept_transfer(fwd(
                req,
                AcceptTransferRequest {
                    name: l.case.transfer.clone(),
                    etag: String::new(),
                    receiver_reference: l.reserved_number.clone(),
                    comment: m.comment.clone(),
                    request_id: router_rid("AcceptCase", &l.id, &m.request_id),
                },
            ))
            .await
            .map_err(|e| routed_error(e, retried, &l.case, "accept", &[]))?
            .into_inner()
            .transfer;
        l.answer_seq = answer_seq(t.as_ref());
        let number = l.reserved_number.clone();
        let comment = m.comment.clone();
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                // The router's message for this acceptance may have got here first and
                // accepted the case already (with the same reserved number).
                if state_of(c) == S::Offered {
                    c.state = S::Accepted as i32;
                    c.case_number = number.clone();
                    c.accept_time = Some(to_timestamp(now));
                }
                if let Some(t) = &t {
                    c.mediation_clock = t.feedback_clock.clone();
                }
                out.push(entry(
                    CaseFileEntryKind::Registration,
                    "人民调解受理登记",
                    now,
                    format!("受理，调解案号 {number}；受理意见：{comment}"),
                ));
                Ok(())
            },
            |c| AcceptCaseResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Declines an offered case (不予受理) and the router transfer.
    pub async fn decline(
        &self,
        who: &Identity,
        req: &Request<DeclineCaseRequest>,
    ) -> Result<DeclineCaseResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "DeclineCase", &m.request_id, m)?;
        let mut v = Vec::new();
        text(&mut v, "reason_code", &m.reason_code, true, 64);
        text(&mut v, "reason", &m.reason, true, 2000);
        violations(v)?;
        let mut l = match self
            .begin_routed(who, &idem, &m.name, &m.etag, Action::Decline.retried_in())
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        let retried = lifecycle::maybe_retried(&l.case, Action::Decline);
        if !retried {
            lifecycle::require(&l.case, Action::Decline)?;
        }
        let t = self
            .router()
            .decline_transfer(fwd(
                req,
                DeclineTransferRequest {
                    name: l.case.transfer.clone(),
                    etag: String::new(),
                    reason_code: m.reason_code.clone(),
                    reason: m.reason.clone(),
                    request_id: router_rid("DeclineCase", &l.id, &m.request_id),
                },
            ))
            .await
            .map_err(|e| routed_error(e, retried, &l.case, "decline", REASON_FIELDS))?
            .into_inner()
            .transfer;
        l.answer_seq = answer_seq(t.as_ref());
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                if state_of(c) == S::Declined {
                    // The router's message for this decline got here first: the request
                    // names its reason.
                    c.decline = Some(CaseDecline {
                        reason_code: m.reason_code.clone(),
                        reason: m.reason.clone(),
                        actor: Some(who.as_actor()),
                        decline_time: c.decline.as_ref().and_then(|d| d.decline_time),
                    });
                    return Ok(());
                }
                lifecycle::require(c, Action::Decline)?;
                c.state = S::Declined as i32;
                c.decline = Some(CaseDecline {
                    reason_code: m.reason_code.clone(),
                    reason: m.reason.clone(),
                    actor: Some(who.as_actor()),
                    decline_time: Some(to_timestamp(now)),
                });
                out.push(entry(
                    CaseFileEntryKind::Other,
                    "不予受理",
                    now,
                    format!("不予受理：{}；{}", m.reason_code, m.reason),
                ));
                Ok(())
            },
            |c| DeclineCaseResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Records a party's consent or refusal (PML Art 17).
    pub async fn consent(
        &self,
        who: &Identity,
        req: &Request<RecordConsentRequest>,
    ) -> Result<RecordConsentResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "RecordConsent", &m.request_id, m)?;
        let refused = m.decision == ConsentDecision::Refused as i32;
        // A refusal's feedback may have reached the case through the router before the
        // local commit (the case then shows ENDED); the retry completes it.
        let consent_action = if refused {
            Action::RecordRefusal
        } else {
            Action::RecordConsent
        };
        let mut v = Vec::new();
        text(&mut v, "party_id", &m.party_id, true, 64);
        let decision =
            ConsentDecision::try_from(m.decision).unwrap_or(ConsentDecision::Unspecified);
        if decision == ConsentDecision::Unspecified {
            v.push(FieldViolation::new(
                "decision",
                "must be CONSENTED or REFUSED",
            ));
        }
        if ConsentMethod::try_from(m.method).map_or(true, |x| x == ConsentMethod::Unspecified) {
            v.push(FieldViolation::new(
                "method",
                "must be WRITTEN, ORAL or ELECTRONIC",
            ));
        }
        text(&mut v, "note", &m.note, false, 2000);
        violations(v)?;
        let done = consent_action.retried_in();
        let mut l = match self
            .begin_routed(who, &idem, &m.name, &m.etag, done)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        lifecycle::require(&l.case, consent_action)?;
        if !is_party(&l.case, &m.party_id) {
            return Err(FieldViolation::new("party_id", "is not a party of the case").into());
        }
        // PML Art 17: the route's code for a refusal (checked before anything changes).
        let refused_code = if refused {
            let route = outcomes::route_of(l.route.as_ref())?;
            outcomes::outcome_for(route, EndReason::PartyRefusesToContinue)?
                .code
                .clone()
        } else {
            String::new()
        };
        let retried = lifecycle::maybe_retried(&l.case, consent_action);
        if refused {
            // PML Art 17: an express refusal by one party ends the mediation; the sender is told.
            let t = self
                .router()
                .submit_feedback(fwd(
                    req,
                    SubmitFeedbackRequest {
                        name: l.case.transfer.clone(),
                        etag: String::new(),
                        outcome_code: refused_code.clone(),
                        summary: "当事人一方明确拒绝调解，依法不得调解（人民调解法第十七条）"
                            .into(),
                        documents: m.evidence.iter().cloned().collect(),
                        amount: None,
                        request_id: router_rid("RecordConsent", &l.id, &m.request_id),
                    },
                ))
                .await
                .map_err(|e| routed_error(e, retried, &l.case, "record consent", &[]))?
                .into_inner()
                .transfer;
            l.answer_seq = answer_seq(t.as_ref());
        }
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                lifecycle::require(c, consent_action)?;
                c.consents.push(ConsentRecord {
                    party_id: m.party_id.clone(),
                    decision: m.decision,
                    method: m.method,
                    evidence: m.evidence.clone(),
                    note: m.note.clone(),
                    recorded_by: Some(who.as_actor()),
                    record_time: Some(to_timestamp(now)),
                });
                out.push(entry(
                    CaseFileEntryKind::Consent,
                    if refused {
                        "当事人拒绝调解"
                    } else {
                        "当事人同意调解"
                    },
                    now,
                    format!("当事人 {}：{}", m.party_id, decision.as_str_name()),
                ));
                // 一案一卷 (PML Art 27): the consent evidence (e.g. the signed 人民调解申请书)
                // belongs in the case file as GetCase shows it.
                out.extend(doc_entries(
                    CaseFileEntryKind::Consent,
                    "人民调解申请书（当事人意愿凭证）",
                    now,
                    m.evidence.as_slice(),
                ));
                if refused {
                    c.state = S::ConsentRefused as i32;
                    c.termination = Some(Termination {
                        reason: EndReason::PartyRefusesToContinue as i32,
                        detail: "当事人一方明确拒绝调解（人民调解法第十七条）".into(),
                        outcome_code: refused_code.clone(),
                        actor: Some(who.as_actor()),
                        end_time: Some(to_timestamp(now)),
                    });
                    if let Some(k) = c.mediation_clock.as_mut() {
                        k.stopped_at = Some(to_timestamp(now));
                    }
                    out.push(entry(
                        CaseFileEntryKind::Termination,
                        "终止调解（当事人拒绝调解）",
                        now,
                        format!("反馈结果 {refused_code}"),
                    ));
                } else {
                    maybe_start(c);
                }
                Ok(())
            },
            |c| RecordConsentResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Loads the mediators of the case's organisation, with their loads.
    async fn roster_of(&self, c: &MediationCase) -> Result<Vec<Mediator>> {
        if c.organization.is_empty() {
            return Err(Error::Refused(
                Reason::NoOrganization,
                "no mediation organisation is registered for the receiving agency".into(),
            ));
        }
        let org = c.organization.trim_start_matches("organizations/");
        let mut tx = self.store.read().await?;
        let ms = roster::mediators_of(&mut tx, org).await?;
        tx.commit().await?;
        Ok(ms)
    }

    /// Assigns a mediator, named or automatic.
    pub async fn assign(
        &self,
        who: &Identity,
        req: &Request<AssignMediatorRequest>,
    ) -> Result<AssignMediatorResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "AssignMediator", &m.request_id, m)?;
        if m.assignee.is_none() {
            return Err(
                // `assignee` is a oneof, not a field: name the field to set.
                FieldViolation::new("mediator", "is required (or automatic)").into(),
            );
        }
        if let Some(Assignee::Mediator(name)) = &m.assignee {
            parse_mediator_name("mediator", name)?;
        }
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        lifecycle::require(&l.case, Action::AssignMediator)?;
        if l.case.assignment.is_some() {
            return Err(Error::Refused(
                Reason::AlreadyAssigned,
                "the case has a mediator; recuse first".into(),
            ));
        }
        let roster = self.roster_of(&l.case).await?;
        let (chosen, method, why) = match &m.assignee {
            Some(Assignee::Mediator(name)) => {
                let med = roster.iter().find(|x| &x.name == name).ok_or_else(|| {
                    FieldViolation::new("mediator", "is not a mediator of the case's organisation")
                })?;
                if !med.active {
                    return Err(Error::Refused(
                        Reason::MediatorInactive,
                        "the mediator is not active".into(),
                    ));
                }
                if l.case
                    .assignment_history
                    .iter()
                    .any(|a| &a.mediator == name)
                {
                    return Err(Error::Refused(
                        Reason::MediatorRecused,
                        "the mediator was recused from this case".into(),
                    ));
                }
                let method = if m.chosen_by_parties {
                    // PML Art 19: the parties may choose their mediator.
                    AssignmentMethod::PartyChoice
                } else {
                    AssignmentMethod::Named
                };
                (med.clone(), method, m.comment.clone())
            }
            Some(Assignee::Automatic(crit)) => {
                let (med, why) = auto_assign(&l.case, &roster, crit)?;
                (med, AssignmentMethod::Automatic, why)
            }
            None => {
                return Err(FieldViolation::new("mediator", "is required (or automatic)").into());
            }
        };
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                lifecycle::require(c, Action::AssignMediator)?;
                set_assignment(c, assignment(&chosen, method, why, who, now), now, out);
                maybe_start(c);
                Ok(())
            },
            |c| AssignMediatorResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Recuses the assigned mediator (回避), optionally reassigning automatically.
    pub async fn recuse(
        &self,
        who: &Identity,
        req: &Request<RecuseMediatorRequest>,
    ) -> Result<RecuseMediatorResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "RecuseMediator", &m.request_id, m)?;
        let mut v = Vec::new();
        text(&mut v, "reason", &m.reason, true, 2000);
        violations(v)?;
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        lifecycle::require(&l.case, Action::RecuseMediator)?;
        let Some(current) = l.case.assignment.clone() else {
            return Err(Error::Refused(
                Reason::NotAssigned,
                "the case has no mediator".into(),
            ));
        };
        if !m.requested_by_party_id.is_empty() && !is_party(&l.case, &m.requested_by_party_id) {
            return Err(
                FieldViolation::new("requested_by_party_id", "is not a party of the case").into(),
            );
        }
        let replacement = if m.reassign_automatically {
            let roster = self.roster_of(&l.case).await?;
            let mut probe = l.case.clone();
            probe.assignment_history.push(MediatorAssignment {
                mediator: current.mediator.clone(),
                recuse_time: Some(to_timestamp(0)),
                ..Default::default()
            });
            Some(auto_assign(
                &probe,
                &roster,
                &AutomaticAssignment::default(),
            )?)
        } else {
            None
        };
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                lifecycle::require(c, Action::RecuseMediator)?;
                let recused = c.assignment.take().map(|a| a.mediator).unwrap_or_default();
                for a in c
                    .assignment_history
                    .iter_mut()
                    .filter(|a| a.mediator == recused && a.recuse_time.is_none())
                {
                    a.recuse_time = Some(to_timestamp(now));
                    a.recuse_reason = m.reason.clone();
                    a.recusal_requested_by_party_id = m.requested_by_party_id.clone();
                }
                c.state = S::Accepted as i32;
                out.push(entry(
                    CaseFileEntryKind::Assignment,
                    "调解员回避",
                    now,
                    format!("调解员 {recused} 回避：{}", m.reason),
                ));
                if let Some((med, why)) = replacement {
                    set_assignment(
                        c,
                        assignment(&med, AssignmentMethod::Automatic, why, who, now),
                        now,
                        out,
                    );
                    maybe_start(c);
                }
                Ok(())
            },
            |c| RecuseMediatorResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Records a mediation session (调解记录, PML Art 27).
    pub async fn session(
        &self,
        who: &Identity,
        req: &Request<RecordSessionRequest>,
    ) -> Result<RecordSessionResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "RecordSession", &m.request_id, m)?;
        let s = m
            .session
            .clone()
            .ok_or_else(|| FieldViolation::new("session", "is required"))?;
        let mut v = Vec::new();
        match (&s.start_time, &s.end_time) {
            (Some(a), Some(b)) if from_timestamp(b) < from_timestamp(a) => {
                v.push(FieldViolation::new(
                    "session.end_time",
                    "must not be before start_time",
                ));
            }
            (None, _) => v.push(FieldViolation::new("session.start_time", "is required")),
            (_, None) => v.push(FieldViolation::new("session.end_time", "is required")),
            _ => {}
        }
        if SessionMode::try_from(s.mode).map_or(true, |x| x == SessionMode::Unspecified) {
            v.push(FieldViolation::new(
                "session.mode",
                "must be IN_PERSON, ONLINE or PHONE",
            ));
        }
        if let Err(e) = parse_mediator_name("session.mediator", &s.mediator) {
            v.push(e);
        }
        text(&mut v, "session.summary", &s.summary, true, 20_000);
        violations(v)?;
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        lifecycle::require(&l.case, Action::RecordSession)?;
        let mut v = Vec::new();
        for (i, p) in s.attendee_party_ids.iter().enumerate() {
            if !is_party(&l.case, p) {
                v.push(FieldViolation::new(
                    format!("session.attendee_party_ids[{i}]"),
                    "is not a party of the case",
                ));
            }
        }
        if !s.mediator.starts_with(&format!("{}/", l.case.organization))
            || l.case.organization.is_empty()
        {
            v.push(FieldViolation::new(
                "session.mediator",
                "is not a mediator of the case's organisation",
            ));
        }
        violations(v)?;
        let sid = uuid::Uuid::new_v4().to_string();
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                lifecycle::require(c, Action::RecordSession)?;
                let mut s = s.clone();
                s.session_id = sid.clone();
                s.recorded_by = Some(who.as_actor());
                let at = s.start_time.as_ref().map(from_timestamp).unwrap_or(now);
                out.push(entry(
                    CaseFileEntryKind::SessionRecord,
                    "调解工作记录",
                    at,
                    s.summary.clone(),
                ));
                out.extend(doc_entries(
                    CaseFileEntryKind::SessionRecord,
                    "调解笔录",
                    at,
                    &s.documents,
                ));
                c.sessions.push(s);
                Ok(())
            },
            |c| RecordSessionResponse {
                mediation_case: Some(c.clone()),
                session: c.sessions.iter().find(|x| x.session_id == sid).cloned(),
            },
        )
        .await
    }

    /// Drafts or redrafts the agreement (PML Art 29); a redraft clears the signatures.
    pub async fn draft(
        &self,
        who: &Identity,
        req: &Request<DraftAgreementRequest>,
    ) -> Result<DraftAgreementResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "DraftAgreement", &m.request_id, m)?;
        let a = m
            .agreement
            .clone()
            .ok_or_else(|| FieldViolation::new("agreement", "is required"))?;
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        // PML Art 29: parties' basic information, facts, dispute items and responsibilities,
        // the agreed terms, the manner and deadline of performance.
        let mut v = Vec::new();
        check(
            &mut v,
            !a.parties.is_empty(),
            "agreement.parties",
            "is required",
        );
        let mut seen = std::collections::HashSet::new();
        for (i, p) in a.parties.iter().enumerate() {
            if !is_party(&l.case, &p.party_id) || !seen.insert(p.party_id.clone()) {
                v.push(FieldViolation::new(
                    format!("agreement.parties[{i}].party_id"),
                    "must be a distinct party of the case",
                ));
            }
            // The kit's one set of party validators (name, GB 11643 ID number, phone,
            // address): an agreement records the parties' basic information (PML Art 29), so
            // a masked or mistyped value copied into it is refused, not signed.
            fengqiao_kit::pii::validate::party(&mut v, &format!("agreement.parties[{i}]"), p, true);
        }
        text(
            &mut v,
            "agreement.facts_and_responsibilities",
            &a.facts_and_responsibilities,
            true,
            20_000,
        );
        check(
            &mut v,
            !a.terms.is_empty(),
            "agreement.terms",
            "at least one term is required",
        );
        for (i, t) in a.terms.iter().enumerate() {
            text(
                &mut v,
                &format!("agreement.terms[{i}].description"),
                &t.description,
                true,
                5000,
            );
            for (j, p) in t.obligor_party_ids.iter().enumerate() {
                if !seen.contains(p) {
                    v.push(FieldViolation::new(
                        format!("agreement.terms[{i}].obligor_party_ids[{j}]"),
                        "is not a party of the agreement",
                    ));
                }
            }
            for (j, p) in t.obligee_party_ids.iter().enumerate() {
                if !seen.contains(p) {
                    v.push(FieldViolation::new(
                        format!("agreement.terms[{i}].obligee_party_ids[{j}]"),
                        "is not a party of the agreement",
                    ));
                }
            }
        }
        text(
            &mut v,
            "agreement.performance_manner",
            &a.performance_manner,
            true,
            2000,
        );
        if a.performance_deadline.is_none() {
            v.push(FieldViolation::new(
                "agreement.performance_deadline",
                "is required",
            ));
        }
        violations(v)?;
        lifecycle::require(&l.case, Action::DraftAgreement)?;
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                lifecycle::require(c, Action::DraftAgreement)?;
                let n = c
                    .agreement
                    .as_ref()
                    .and_then(|a| a.agreement_number.rsplit('-').next()?.parse::<u32>().ok())
                    .unwrap_or(0)
                    + 1;
                let mut a = a.clone();
                a.agreement_number = format!("{}-{n}", c.case_number);
                a.signatures.clear();
                a.effective = false;
                a.effective_time = None;
                a.drafted_by = Some(who.as_actor());
                a.draft_time = Some(to_timestamp(now));
                out.push(entry(
                    CaseFileEntryKind::Agreement,
                    "调解协议书（草拟）",
                    now,
                    a.facts_and_responsibilities.clone(),
                ));
                if let Some(d) = &a.document {
                    out.push(doc_entry(
                        CaseFileEntryKind::Agreement,
                        "调解协议书",
                        now,
                        d,
                    ));
                }
                c.agreement = Some(a);
                c.state = S::AgreementPendingSignature as i32;
                Ok(())
            },
            |c| DraftAgreementResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Records one signature or the committee seal (PML Art 29).
    pub async fn sign(
        &self,
        who: &Identity,
        req: &Request<SignAgreementRequest>,
    ) -> Result<SignAgreementResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "SignAgreement", &m.request_id, m)?;
        let sig = m
            .signature
            .clone()
            .ok_or_else(|| FieldViolation::new("signature", "is required"))?;
        let kind = SignerKind::try_from(sig.signer_kind).unwrap_or(SignerKind::Unspecified);
        let method = SignatureMethod::try_from(sig.method).unwrap_or(SignatureMethod::Unspecified);
        let mut v = Vec::new();
        if kind == SignerKind::Unspecified {
            v.push(FieldViolation::new(
                "signature.signer_kind",
                "must be PARTY, MEDIATOR or COMMITTEE_SEAL",
            ));
        }
        if method == SignatureMethod::Unspecified {
            v.push(FieldViolation::new("signature.method", "is required"));
        }
        if kind == SignerKind::CommitteeSeal && method != SignatureMethod::Seal {
            v.push(FieldViolation::new(
                "signature.method",
                "the committee seal needs method SEAL",
            ));
        }
        if kind == SignerKind::Party && sig.party_id.is_empty() {
            v.push(FieldViolation::new(
                "signature.party_id",
                "is required for a party",
            ));
        }
        text(&mut v, "signature.signer_name", &sig.signer_name, true, 200);
        violations(v)?;
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        lifecycle::require(&l.case, Action::SignAgreement)?;
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                lifecycle::require(c, Action::SignAgreement)?;
                let mediator = c
                    .assignment
                    .as_ref()
                    .map(|a| a.mediator.clone())
                    .unwrap_or_default();
                let Some(a) = c.agreement.as_mut() else {
                    return Err(Error::Refused(
                        Reason::NoAgreement,
                        "no agreement is drafted".into(),
                    ));
                };
                if a.effective {
                    return Err(Error::Refused(
                        Reason::AlreadyEffective,
                        "the agreement is already effective".into(),
                    ));
                }
                let mut sig = sig.clone();
                match kind {
                    SignerKind::Party => {
                        if !a.parties.iter().any(|p| p.party_id == sig.party_id) {
                            return Err(FieldViolation::new(
                                "signature.party_id",
                                "is not a party of the agreement",
                            )
                            .into());
                        }
                        sig.mediator.clear();
                    }
                    SignerKind::Mediator => {
                        if sig.mediator.is_empty() {
                            sig.mediator = mediator.clone();
                        }
                        if sig.mediator != mediator || mediator.is_empty() {
                            return Err(FieldViolation::new(
                                "signature.mediator",
                                "must be the case's assigned mediator",
                            )
                            .into());
                        }
                        sig.party_id.clear();
                    }
                    _ => {
                        sig.party_id.clear();
                        sig.mediator.clear();
                    }
                }
                let dup = a.signatures.iter().any(|s| {
                    s.signer_kind == sig.signer_kind
                        && (kind != SignerKind::Party || s.party_id == sig.party_id)
                });
                if dup {
                    return Err(Error::Refused(
                        Reason::AlreadySigned,
                        "this signer has already signed".into(),
                    ));
                }
                if sig.sign_time.is_none() {
                    sig.sign_time = Some(to_timestamp(now));
                }
                sig.recorded_by = Some(who.as_actor());
                out.push(entry(
                    CaseFileEntryKind::Agreement,
                    if kind == SignerKind::CommitteeSeal {
                        "调解协议书盖章"
                    } else {
                        "调解协议书签名"
                    },
                    now,
                    format!("{} {}", kind.as_str_name(), method.as_str_name()),
                ));
                if let Some(d) = &sig.evidence {
                    out.push(doc_entry(CaseFileEntryKind::Agreement, "签署凭证", now, d));
                }
                a.signatures.push(sig);
                // PML Art 29: effective once every party signed (or fingerprinted), the mediator
                // signed and the committee's seal is affixed.
                let parties_done = a.parties.iter().all(|p| {
                    a.signatures.iter().any(|s| {
                        s.signer_kind == SignerKind::Party as i32 && s.party_id == p.party_id
                    })
                });
                let has = |k: SignerKind| a.signatures.iter().any(|s| s.signer_kind == k as i32);
                if parties_done && has(SignerKind::Mediator) && has(SignerKind::CommitteeSeal) {
                    a.effective = true;
                    a.effective_time = Some(to_timestamp(now));
                    out.push(entry(
                        CaseFileEntryKind::Agreement,
                        "调解协议书生效",
                        now,
                        a.agreement_number.clone(),
                    ));
                }
                Ok(())
            },
            |c| SignAgreementResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Ends the mediation (在线调解规则 Art 25) and submits the outcome to the router.
    pub async fn end(
        &self,
        who: &Identity,
        req: &Request<EndMediationRequest>,
    ) -> Result<EndMediationResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "EndMediation", &m.request_id, m)?;
        let reason = EndReason::try_from(m.reason).unwrap_or(EndReason::Unspecified);
        let mut v = Vec::new();
        if reason == EndReason::Unspecified {
            v.push(FieldViolation::new("reason", "is required"));
        }
        text(
            &mut v,
            "detail",
            &m.detail,
            reason == EndReason::Other,
            5000,
        );
        violations(v)?;
        let mut l = match self
            .begin_routed(who, &idem, &m.name, &m.etag, Action::End.retried_in())
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        let retried = lifecycle::maybe_retried(&l.case, Action::End);
        if !retried {
            lifecycle::require(&l.case, Action::End)?;
        }
        let effective = l.case.agreement.as_ref().filter(|a| a.effective);
        if reason == EndReason::Agreement && effective.is_none() {
            return Err(Error::Refused(
                Reason::NoEffectiveAgreement,
                "ending with an agreement needs an effective agreement (PML Art 29)".into(),
            ));
        }
        // The outcome code of the route the case's transfer pinned (在线调解规则 Art 25).
        let route = outcomes::route_of(l.route.as_ref())?;
        let code = outcomes::outcome_for(route, reason)?.code.clone();
        let mut documents = m.documents.clone();
        let (summary, amount) = match (reason, effective) {
            (EndReason::Agreement, Some(a)) => {
                if let Some(d) = &a.document {
                    documents.insert(0, d.clone());
                }
                // First the signed agreement record with its SHA-256 content digest (as it
                // travels for judicial confirmation): a delegating court files exactly it
                // (特邀调解规定 Art 19) and hands it on for 诉前调确 (人民调解法 Art 33).
                if let Some(d) = crate::confirmation::agreement_document(&l.case) {
                    documents.insert(0, d);
                }
                let terms: Vec<&str> = a.terms.iter().map(|t| t.description.as_str()).collect();
                (
                    format!(
                        "达成调解协议 {}：{}；履行方式：{}",
                        a.agreement_number,
                        terms.join("；"),
                        a.performance_manner
                    ),
                    total_amount(a),
                )
            }
            _ => {
                let mut s = format!("终止调解：{}", end_reason_text(reason));
                if !m.detail.is_empty() {
                    s.push('；');
                    s.push_str(&m.detail);
                }
                (s, None)
            }
        };
        let t = self
            .router()
            .submit_feedback(fwd(
                req,
                SubmitFeedbackRequest {
                    name: l.case.transfer.clone(),
                    etag: String::new(),
                    outcome_code: code.clone(),
                    summary: summary.clone(),
                    documents,
                    amount,
                    request_id: router_rid("EndMediation", &l.id, &m.request_id),
                },
            ))
            .await
            .map_err(|e| routed_error(e, retried, &l.case, "end the mediation", &[]))?
            .into_inner()
            .transfer;
        l.answer_seq = answer_seq(t.as_ref());
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                let synced = state_of(c) == S::Ended;
                if !synced {
                    lifecycle::require(c, Action::End)?;
                }
                c.state = S::Ended as i32;
                c.termination = Some(Termination {
                    reason: m.reason,
                    detail: m.detail.clone(),
                    outcome_code: code.clone(),
                    actor: Some(who.as_actor()),
                    end_time: Some(to_timestamp(now)),
                });
                if let Some(t) = &t {
                    c.mediation_clock = t.feedback_clock.clone();
                }
                out.push(entry(
                    CaseFileEntryKind::Termination,
                    "调解终结",
                    now,
                    summary.clone(),
                ));
                out.extend(doc_entries(
                    CaseFileEntryKind::Termination,
                    "终止调解文书",
                    now,
                    &m.documents,
                ));
                Ok(())
            },
            |c| EndMediationResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Escalates the case to the police (PML Art 25) through the router.
    pub async fn escalate(
        &self,
        who: &Identity,
        req: &Request<EscalateCaseRequest>,
    ) -> Result<EscalateCaseResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "EscalateCase", &m.request_id, m)?;
        let mut v = Vec::new();
        text(&mut v, "reason_code", &m.reason_code, true, 64);
        text(&mut v, "reason", &m.reason, true, 5000);
        violations(v)?;
        let mut l = match self
            .begin_routed(who, &idem, &m.name, &m.etag, Action::Escalate.retried_in())
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        let retried = lifecycle::maybe_retried(&l.case, Action::Escalate);
        if !retried {
            lifecycle::require(&l.case, Action::Escalate)?;
        }
        // Only with the escalation reasons of the route the case's transfer pinned.
        outcomes::check_escalation(outcomes::route_of(l.route.as_ref())?, &m.reason_code)?;
        // PML Art 25: a dispute that may turn into a public-security or criminal case is
        // reported to the police at once.
        let t = self
            .router()
            .escalate_transfer(fwd(
                req,
                EscalateTransferRequest {
                    name: l.case.transfer.clone(),
                    etag: String::new(),
                    reason_code: m.reason_code.clone(),
                    reason: m.reason.clone(),
                    documents: m.documents.clone(),
                    request_id: router_rid("EscalateCase", &l.id, &m.request_id),
                },
            ))
            .await
            .map_err(|e| routed_error(e, retried, &l.case, "escalate", ESCALATION_FIELDS))?
            .into_inner()
            .transfer;
        l.answer_seq = answer_seq(t.as_ref());
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                if state_of(c) != S::Escalated {
                    lifecycle::require(c, Action::Escalate)?;
                }
                c.state = S::Escalated as i32;
                c.escalation = Some(Escalation {
                    reason_code: m.reason_code.clone(),
                    reason: m.reason.clone(),
                    to_agency: c
                        .source_agency
                        .as_ref()
                        .map(|a| a.name.clone())
                        .unwrap_or_default(),
                    actor: Some(who.as_actor()),
                    escalate_time: Some(to_timestamp(now)),
                });
                out.push(entry(
                    CaseFileEntryKind::Termination,
                    "上报移送单位",
                    now,
                    m.reason.clone(),
                ));
                out.extend(doc_entries(
                    CaseFileEntryKind::Termination,
                    "移交材料",
                    now,
                    &m.documents,
                ));
                Ok(())
            },
            |c| EscalateCaseResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    /// Asks the sender for supplementary investigation (补充调查取证) through the router.
    pub async fn investigate(
        &self,
        who: &Identity,
        req: &Request<RequestInvestigationRequest>,
    ) -> Result<RequestInvestigationResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "RequestInvestigation", &m.request_id, m)?;
        let mut v = Vec::new();
        text(&mut v, "questions", &m.questions, true, 5000);
        violations(v)?;
        let mut l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        lifecycle::require(&l.case, Action::RequestInvestigation)?;
        let resp = self
            .router()
            .request_investigation(fwd(
                req,
                r::RequestInvestigationRequest {
                    parent: l.case.transfer.clone(),
                    etag: String::new(),
                    questions: m.questions.clone(),
                    requested_due_time: m.requested_due_time,
                    pause_feedback_clock: m.pause_clock,
                    request_id: router_rid("RequestInvestigation", &l.id, &m.request_id),
                },
            ))
            .await
            .map_err(|e| {
                Error::Upstream(
                    Box::new(e),
                    &[
                        ("questions", "questions"),
                        ("requested_due_time", "requested_due_time"),
                    ],
                )
            })?
            .into_inner();
        l.answer_seq = answer_seq(resp.transfer.as_ref());
        let inv = resp.investigation.unwrap_or_default();
        let clock = resp.transfer.and_then(|t| t.feedback_clock);
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                lifecycle::require(c, Action::RequestInvestigation)?;
                if c.investigations.iter().any(|r| r.investigation == inv.name) {
                    return Ok(());
                }
                c.investigations.push(InvestigationRequest {
                    investigation: inv.name.clone(),
                    questions: m.questions.clone(),
                    pauses_clock: inv.pauses_feedback_clock,
                    state: InvestigationState::Open as i32,
                    requested_by: Some(who.as_actor()),
                    request_time: Some(to_timestamp(now)),
                    ..Default::default()
                });
                if clock.is_some() {
                    c.mediation_clock = clock.clone();
                }
                out.push(entry(
                    CaseFileEntryKind::Investigation,
                    "补充调查取证请求",
                    now,
                    m.questions.clone(),
                ));
                Ok(())
            },
            |c| RequestInvestigationResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }

    fn require_followable(c: &MediationCase) -> Result<()> {
        if state_of(c) != S::Ended
            || c.termination.as_ref().map(|t| t.reason) != Some(EndReason::Agreement as i32)
        {
            return Err(Error::WrongState {
                resource: c.name.clone(),
                state: state_name(c.state),
                action: "follow up (needs a case ENDED with an effective agreement)",
            });
        }
        Ok(())
    }

    /// Schedules a follow-up visit (安排回访) on a case ended with an agreement.
    pub async fn schedule_follow_up(
        &self,
        who: &Identity,
        req: &Request<ScheduleFollowUpRequest>,
    ) -> Result<ScheduleFollowUpResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "ScheduleFollowUp", &m.request_id, m)?;
        let mut v = Vec::new();
        if m.scheduled_time.is_none() {
            v.push(FieldViolation::new("scheduled_time", "is required"));
        }
        if !m.assignee.is_empty()
            && let Err(e) = parse_mediator_name("assignee", &m.assignee)
        {
            v.push(e);
        }
        text(&mut v, "plan_note", &m.plan_note, false, 2000);
        violations(v)?;
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        Self::require_followable(&l.case)?;
        let id = uuid::Uuid::new_v4().to_string();
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                Self::require_followable(c)?;
                let assignee = if m.assignee.is_empty() {
                    c.assignment
                        .as_ref()
                        .map(|a| a.mediator.clone())
                        .unwrap_or_default()
                } else {
                    m.assignee.clone()
                };
                c.follow_ups.push(FollowUp {
                    follow_up_id: id.clone(),
                    scheduled_time: m.scheduled_time,
                    assignee,
                    plan_note: m.plan_note.clone(),
                    state: FollowUpState::Scheduled as i32,
                    ..Default::default()
                });
                out.push(entry(
                    CaseFileEntryKind::FollowUp,
                    "安排回访",
                    now,
                    m.plan_note.clone(),
                ));
                Ok(())
            },
            |c| ScheduleFollowUpResponse {
                mediation_case: Some(c.clone()),
                follow_up: c.follow_ups.iter().find(|f| f.follow_up_id == id).cloned(),
            },
        )
        .await
    }

    /// Records a follow-up visit (回访记录): performance and satisfaction.
    pub async fn record_follow_up(
        &self,
        who: &Identity,
        req: &Request<RecordFollowUpRequest>,
    ) -> Result<RecordFollowUpResponse> {
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "RecordFollowUp", &m.request_id, m)?;
        let mut v = Vec::new();
        if PerformanceStatus::try_from(m.performance)
            .map_or(true, |x| x == PerformanceStatus::Unspecified)
        {
            v.push(FieldViolation::new(
                "performance",
                "must be FULL, PARTIAL or NOT_PERFORMED",
            ));
        }
        if Satisfaction::try_from(m.satisfaction).map_or(true, |x| x == Satisfaction::Unspecified) {
            v.push(FieldViolation::new(
                "satisfaction",
                "must be SATISFIED, BASICALLY_SATISFIED or DISSATISFIED",
            ));
        }
        if m.visit_time.is_none() {
            v.push(FieldViolation::new("visit_time", "is required"));
        }
        text(&mut v, "result_notes", &m.result_notes, false, 5000);
        violations(v)?;
        let l = match self.begin(who, &idem, &m.name, &m.etag).await? {
            Begin::Replay(r) => return Ok(r),
            Begin::Case(l) => l,
        };
        Self::require_followable(&l.case)?;
        let new_id = uuid::Uuid::new_v4().to_string();
        let id = if m.follow_up_id.is_empty() {
            new_id
        } else {
            m.follow_up_id.clone()
        };
        self.commit(
            who,
            &idem,
            &l,
            true,
            |c, now, out| {
                Self::require_followable(c)?;
                let idx = match c.follow_ups.iter().position(|f| f.follow_up_id == id) {
                    Some(i) => i,
                    None if m.follow_up_id.is_empty() => {
                        c.follow_ups.push(FollowUp {
                            follow_up_id: id.clone(),
                            assignee: c
                                .assignment
                                .as_ref()
                                .map(|a| a.mediator.clone())
                                .unwrap_or_default(),
                            ..Default::default()
                        });
                        c.follow_ups.len() - 1
                    }
                    None => {
                        return Err(Error::NotFound(format!(
                            "{}/followUps/{}",
                            c.name, m.follow_up_id
                        )));
                    }
                };
                let f = &mut c.follow_ups[idx];
                if f.state == FollowUpState::Done as i32 {
                    return Err(Error::Refused(
                        Reason::FollowUpDone,
                        "the follow-up is already recorded".into(),
                    ));
                }
                f.state = FollowUpState::Done as i32;
                f.method = m.method;
                f.performance = m.performance;
                f.satisfaction = m.satisfaction;
                f.result_notes = m.result_notes.clone();
                f.visit_time = m.visit_time;
                f.recorded_by = Some(who.as_actor());
                let at = m.visit_time.as_ref().map(from_timestamp).unwrap_or(now);
                out.push(entry(
                    CaseFileEntryKind::FollowUp,
                    "回访记录",
                    at,
                    format!(
                        "{}；{}；{}",
                        PerformanceStatus::try_from(m.performance)
                            .map(|p| p.as_str_name())
                            .unwrap_or(""),
                        Satisfaction::try_from(m.satisfaction)
                            .map(|p| p.as_str_name())
                            .unwrap_or(""),
                        m.result_notes
                    ),
                ));
                Ok(())
            },
            |c| RecordFollowUpResponse {
                mediation_case: Some(c.clone()),
                follow_up: c.follow_ups.iter().find(|f| f.follow_up_id == id).cloned(),
            },
        )
        .await
    }

    /// Assembles the case file (一案一卷, PML Art 27).
    pub async fn case_file(
        &self,
        who: &Identity,
        req: &Request<GetCaseFileRequest>,
    ) -> Result<GetCaseFileResponse> {
        let m = req.get_ref();
        let mut tx = self.store.read().await?;
        let l = db::load_for(&mut tx, who, &m.name).await?;
        let entries = db::entries(&mut tx, &l.id).await?;
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        tx.commit().await?;
        let mut events = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .router()
                .get_case_timeline(fwd(
                    req,
                    GetCaseTimelineRequest {
                        case_id: l.case.case_id.clone(),
                        page_size: 500,
                        page_token: token.clone(),
                    },
                ))
                .await
                .map_err(Error::upstream)?
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        Ok(GetCaseFileResponse {
            case_file: Some(CaseFile {
                mediation_case: Some(l.case),
                entries,
                transfer_events: events,
                generate_time: Some(to_timestamp(now)),
            }),
        })
    }
}

impl Cases {
    /// Submits the parties' joint application for judicial confirmation (人民调解法 Art 33)
    /// of the case's effective agreement to the competent court (法释〔2011〕5号 Art 2): checks
    /// on a read (the database's time deciding the 30 days), the router transfer on
    /// `mediation-to-court-confirmation` (request id derived from the case and the caller's
    /// `request_id`, so a retry after a cut-off call gets the router's first transfer), then
    /// the case's `confirmation`.
    pub async fn apply_for_confirmation(
        &self,
        who: &Identity,
        req: &Request<ApplyForConfirmationRequest>,
    ) -> Result<ApplyForConfirmationResponse> {
        use crate::confirmation as cf;
        use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
        let m = req.get_ref();
        require_case_role(who)?;
        let idem = Idem::new(who, "ApplyForConfirmation", &m.request_id, m)?;
        fengqiao_kit::validate::parse_name("court", "agencies", &m.court)?;
        let (l, now) = {
            let mut tx = self.store.read().await?;
            if let Some(r) = idem.replay::<ApplyForConfirmationResponse>(&mut tx).await? {
                return Ok(r);
            }
            let l = db::load_for(&mut tx, who, &m.name).await?;
            let now = fengqiao_store::db_now_micros(&mut tx).await?;
            tx.commit().await?;
            (l, now)
        };
        let open = cf::open_application(&l.case).cloned();
        if open.is_none() {
            check_etag(&m.name, &m.etag, l.version)?;
        }
        // Ruled on (confirmed or dismissed): refused here, not left to the router's one open
        // transfer per case and route — once the committee's system has acknowledged the
        // ruling the transfer is CLOSED and the router would take a second application for
        // the same agreement (after a dismissal the parties change the agreement or sue,
        // 民事诉讼法 Art 206; they do not apply again with it).
        if let Some(o) = &open
            && cf::is_ruled(o)
        {
            return Err(cf::already_open(&l.case, o));
        }
        // The court of the committee's area, from the router's agency register (the seed
        // deploy/dev/agencies.toml in the dev suite).
        let mut agencies = AgencyServiceClient::new(self.router.clone());
        let committee = agencies
            .get_agency(fwd(
                req,
                r::GetAgencyRequest {
                    name: who.agency.clone(),
                },
            ))
            .await
            .map_err(|e| Error::Upstream(Box::new(e), &[]))?
            .into_inner()
            .agency
            .unwrap_or_default();
        let courts = agencies
            .list_agencies(fwd(
                req,
                r::ListAgenciesRequest {
                    page_size: 500,
                    kind: fengqiao_proto::common::AgencyKind::Court as i32,
                    region_code_prefix: committee.region_code.clone(),
                    active: Some(true),
                    ..Default::default()
                },
            ))
            .await
            .map_err(|e| Error::Upstream(Box::new(e), &[]))?
            .into_inner()
            .agencies;
        let committee_court = cf::committee_court(&committee, &courts).unwrap_or_default();
        let cal = fengqiao_clock::HolidayCalendar::builtin();
        let package = cf::prepare(&l.case, m, &committee_court, now, cal)?;
        let c = &l.case;
        let snapshot = r::CaseSnapshot {
            case_id: c.case_id.clone(),
            external_references: [(who.agency.clone(), c.case_number.clone())]
                .into_iter()
                .filter(|(_, n)| !n.is_empty())
                .collect(),
            category: c.category,
            summary: format!("司法确认申请：{}", c.summary),
            parties: c
                .agreement
                .as_ref()
                .map(|a| a.parties.clone())
                .unwrap_or_default(),
            evidence: package.agreement.iter().cloned().collect(),
            region_code: c.region_code.clone(),
            confirmation: Some(package),
            ..Default::default()
        };
        let answer = self
            .router()
            .create_transfer(fwd(
                req,
                r::CreateTransferRequest {
                    transfer: Some(r::Transfer {
                        route: format!("routes/{}", cf::ROUTE),
                        to_agency: Some(fengqiao_proto::common::AgencyRef {
                            name: m.court.clone(),
                            ..Default::default()
                        }),
                        case_snapshot: Some(snapshot),
                        note: "双方当事人共同申请司法确认（人民调解法第三十三条）".into(),
                        ..Default::default()
                    }),
                    request_id: router_rid("ApplyForConfirmation", &l.id, &m.request_id),
                    submit: true,
                },
            ))
            .await;
        let transfer = match (answer, &open) {
            (Ok(t), _) => t
                .into_inner()
                .transfer
                .ok_or_else(|| Error::Corrupt("router answered without a transfer".into()))?,
            // A new application while one is open (the router keeps one open transfer per
            // case and route): the local wrong state.
            (Err(e), Some(o))
                if fengqiao_kit::error::reason_of(&e).as_deref()
                    == Some(Reason::OpenTransferExists.as_str()) =>
            {
                return Err(cf::already_open(&l.case, o));
            }
            (Err(e), _) => return Err(Error::Upstream(Box::new(e), &[])),
        };
        if let Some(o) = &open
            && o.transfer != transfer.name
        {
            return Err(cf::already_open(&l.case, o));
        }
        let transfer = Some(transfer);
        self.commit(
            who,
            &idem,
            &l,
            false,
            |c, now, out| {
                let Some(t) = &transfer else {
                    // Already recorded (by the router's message or an earlier commit).
                    return Ok(());
                };
                if c.confirmation
                    .as_ref()
                    .is_some_and(|s| s.transfer == t.name)
                {
                    return Ok(());
                }
                c.confirmation = cf::status_from(None, t, now);
                out.push(entry(
                    CaseFileEntryKind::Other,
                    "司法确认申请",
                    now,
                    format!("双方当事人共同申请司法确认，转交 {}", m.court),
                ));
                Ok(())
            },
            |c| ApplyForConfirmationResponse {
                mediation_case: Some(c.clone()),
            },
        )
        .await
    }
}
