//! The dispute as the centre keeps it, and the participants' acts on it as plain functions:
//! each checks the lifecycle ([`crate::lifecycle::require`]) and the rules ([`crate::rules`]),
//! runs the clocks and returns the new record. No store, no network: the service checks who
//! may act and persists what these return, at the database's time (`now`, unix µs).

use fengqiao_clock::{Clock, HolidayCalendar};
use fengqiao_kit::time::to_timestamp;
use fengqiao_kit::{Error, FieldViolation, Reason};
use fengqiao_proto::admindispute::{
    AdministrativeAct, Agreement, Claim, CoordinationMethod, Dispute, DisputeResult, DisputeStage,
    DisputeState as S, ProcuratorateInvolvement, ProcuratorateRequestKind, ReviewNotice,
    ReviewNoticeKind,
};
use fengqiao_proto::common::{AgencyRef, EvidenceRef, Party, ReasonCode};

use crate::lifecycle::{Action, require};
use crate::rules;

/// What the centre takes in. Personal information is in `applicants` only.
#[derive(Debug, Clone, Default)]
pub struct Intake {
    /// Shared case id (a new UUID for the centre's own intake; the procuratorate's for its
    /// referral).
    pub case_id: String,
    /// The applicants.
    pub applicants: Vec<Party>,
    /// The act.
    pub act: AdministrativeAct,
    /// The organ (`agencies/{agency}`).
    pub organ: String,
    /// The reviewing organ (`agencies/{agency}`), in 行政复议.
    pub reviewing_organ: String,
    /// The stage.
    pub stage: DisputeStage,
    /// The claims.
    pub claims: Vec<Claim>,
    /// Evidence.
    pub evidence: Vec<EvidenceRef>,
    /// In 行政复议: when the review accepted the application (unix µs).
    pub review_accept_at: Option<i64>,
    /// Region code (GB/T 2260).
    pub region_code: String,
}

/// A dispute with its running clocks (kept beside the protobuf, which shows them as
/// `ClockState`s).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The dispute as clients see it.
    pub dispute: Dispute,
    /// The clocks: "review" in 行政复议, "procuratorate_review" once the procuratorate
    /// examines.
    pub clocks: Vec<Clock>,
}

fn agency(name: &str) -> Option<AgencyRef> {
    (!name.is_empty()).then(|| AgencyRef {
        name: name.into(),
        ..AgencyRef::default()
    })
}

fn agency_name(a: &Option<AgencyRef>) -> &str {
    a.as_ref().map_or("", |a| a.name.as_str())
}

impl Record {
    /// The state.
    pub fn state(&self) -> S {
        S::try_from(self.dispute.state).unwrap_or_default()
    }

    /// The stage.
    pub fn stage(&self) -> DisputeStage {
        DisputeStage::try_from(self.dispute.stage).unwrap_or_default()
    }

    /// The centre (`agencies/{agency}`).
    pub fn centre(&self) -> &str {
        agency_name(&self.dispute.centre)
    }

    /// The organ.
    pub fn organ(&self) -> &str {
        agency_name(&self.dispute.organ)
    }

    /// The reviewing organ, if any.
    pub fn reviewing_organ(&self) -> &str {
        agency_name(&self.dispute.reviewing_organ)
    }

    /// The procuratorate, once involved.
    pub fn procuratorate(&self) -> &str {
        self.dispute
            .procuratorate
            .as_ref()
            .map_or("", |p| agency_name(&p.procuratorate))
    }

    /// Every agency that takes part and so sees the dispute (行诉解释 Art 86: mediation is
    /// not public; only the participants see it).
    pub fn participants(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            self.centre(),
            self.organ(),
            self.reviewing_organ(),
            self.procuratorate(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
        v.sort();
        v.dedup();
        v
    }

    fn require(&self, action: Action) -> Result<S, Error> {
        require(&self.dispute.name, self.state(), action)
    }

    fn clock(&mut self, name: &str) -> Option<&mut Clock> {
        self.clocks
            .iter_mut()
            .find(|c| c.name == name && !c.is_stopped())
    }

    fn touch(&mut self, now: i64, state: S, cal: &HolidayCalendar) -> Result<(), Error> {
        self.dispute.state = state as i32;
        self.dispute.update_time = Some(to_timestamp(now));
        if crate::lifecycle::is_final(state) {
            // Stopping a paused clock ends the pause; the deadline stays as it stood.
            for c in self.clocks.iter_mut().filter(|c| !c.is_stopped()) {
                c.stop(now)?;
            }
            self.dispute.review_suspended = false;
            self.dispute.close_time = Some(to_timestamp(now));
        }
        self.dispute.clocks = fengqiao_clock::states_at(&self.clocks, now, cal)?;
        self.dispute.overdue = self.clocks.iter().any(|c| c.is_overdue_at(now));
        Ok(())
    }
}

fn in_review(r: &Record) -> bool {
    r.stage() == DisputeStage::InReview
}

/// Takes in a dispute for `centre` at `now`: checks the intake, decides the scope for
/// mediation (行政诉讼法 Art 60) and, in 行政复议, starts the 60-day review clock at the
/// review's acceptance (行政复议法 Art 62). OPEN.
pub fn intake(
    name: &str,
    centre: &str,
    i: &Intake,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let mut bad = Vec::new();
    if i.applicants.is_empty() {
        bad.push(FieldViolation::new("applicants", "at least one applicant"));
    }
    for (k, p) in i.applicants.iter().enumerate() {
        if p.party_id.trim().is_empty() {
            bad.push(FieldViolation::new(
                format!("applicants[{k}].party_id"),
                "required",
            ));
        }
    }
    let mut ids: Vec<&str> = i.applicants.iter().map(|p| p.party_id.as_str()).collect();
    ids.sort();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        bad.push(FieldViolation::new("applicants", "party_id repeated"));
    }
    if i.claims.is_empty() {
        bad.push(FieldViolation::new("claims", "at least one claim"));
    }
    if i.act.document_number.trim().is_empty() {
        bad.push(FieldViolation::new("act.document_number", "required"));
    }
    if !i.organ.starts_with("agencies/") {
        bad.push(FieldViolation::new("organ", "expected agencies/{agency}"));
    }
    if let Err(e) = fengqiao_kit::validate::region_code("region_code", &i.region_code) {
        bad.push(e);
    }
    if i.stage == DisputeStage::Unspecified {
        bad.push(FieldViolation::new("stage", "required"));
    }
    if i.stage == DisputeStage::InReview && !i.reviewing_organ.starts_with("agencies/") {
        bad.push(FieldViolation::new(
            "reviewing_organ",
            "required in 行政复议 (agencies/{agency})",
        ));
    }
    if !i.reviewing_organ.is_empty() && !i.reviewing_organ.starts_with("agencies/") {
        bad.push(FieldViolation::new(
            "reviewing_organ",
            "expected agencies/{agency}",
        ));
    }
    if i.review_accept_at.is_some_and(|t| t > now) {
        bad.push(FieldViolation::new(
            "review_accept_time",
            "must not be in the future",
        ));
    }
    if !bad.is_empty() {
        return Err(Error::Invalid(bad));
    }
    let kinds: Vec<_> = i.claims.iter().map(|c| c.kind()).collect();
    let mut clocks = Vec::new();
    if i.stage == DisputeStage::InReview {
        let from = i.review_accept_at.unwrap_or(now);
        clocks.push(Clock::start(
            rules::REVIEW_CLOCK,
            &rules::review_rule(),
            from,
            cal,
        )?);
    }
    let mut r = Record {
        dispute: Dispute {
            name: name.into(),
            case_id: i.case_id.clone(),
            centre: agency(centre),
            applicants: i.applicants.clone(),
            act: Some(i.act.clone()),
            organ: agency(&i.organ),
            reviewing_organ: agency(&i.reviewing_organ),
            stage: i.stage as i32,
            claims: i.claims.clone(),
            evidence: i.evidence.clone(),
            scope: Some(rules::scope(&kinds)),
            region_code: i.region_code.clone(),
            create_time: Some(to_timestamp(now)),
            ..Dispute::default()
        },
        clocks,
    };
    r.touch(now, S::Open, cal)?;
    Ok(r)
}

/// Records the claims (and the act, if given) while OPEN and decides the scope again
/// (行政诉讼法 Art 60): for a referral, whose snapshot carries no claims.
pub fn amend_claims(
    r: &Record,
    claims: &[Claim],
    act: Option<&AdministrativeAct>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::AmendClaims)?;
    if claims.is_empty() {
        return Err(FieldViolation::new("claims", "at least one claim").into());
    }
    let mut r = r.clone();
    let kinds: Vec<_> = claims.iter().map(|c| c.kind()).collect();
    r.dispute.claims = claims.to_vec();
    r.dispute.scope = Some(rules::scope(&kinds));
    if let Some(a) = act {
        r.dispute.act = Some(a.clone());
    }
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Starts mediation: only within the scope of 行政诉讼法 Art 60 (refused naming the article),
/// with every applicant's and the organ's consent (行诉解释 Art 84: 征得当事人双方同意). In
/// 行政复议 the review is suspended with a written notice (行政复议法 Art 39(6)) and its clock
/// paused.
pub fn start_mediation(
    r: &Record,
    consenting: &[String],
    organ_consents: bool,
    notice: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::StartMediation)?;
    rules::check_mediable(r.dispute.scope.as_ref().unwrap_or(&Default::default()))?;
    let missing: Vec<&str> = r
        .dispute
        .applicants
        .iter()
        .map(|p| p.party_id.as_str())
        .filter(|id| !consenting.iter().any(|c| c == id))
        .collect();
    if !missing.is_empty() || !organ_consents {
        return Err(Error::Refused(
            Reason::PartyConsentRequired,
            "mediation needs the consent of every applicant and of the organ (行诉解释第八十四条; \
             行政复议法第三十九条第一款第六项)"
                .into(),
        ));
    }
    let mut r = r.clone();
    if in_review(&r) {
        rules::check_document("suspension_notice", notice)?;
        let c = r.clock(rules::REVIEW_CLOCK).ok_or_else(|| {
            Error::Refused(
                Reason::ClockNotRunning,
                "the review clock is not running".into(),
            )
        })?;
        if c.is_due(now) && !c.expired {
            c.mark_expired(now)?;
        }
        c.pause(now, rules::PAUSE_MEDIATION)?;
        r.dispute.review_suspended = true;
        r.dispute.notices.push(ReviewNotice {
            kind: ReviewNoticeKind::Suspension as i32,
            document: notice.cloned(),
            notice_time: Some(to_timestamp(now)),
        });
    }
    r.dispute.method = CoordinationMethod::Mediation as i32;
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Starts coordination without an agreement (explanation, correction by the organ,
/// withdrawal): open to every dispute, whatever its scope for mediation.
pub fn start_coordination(
    r: &Record,
    method: CoordinationMethod,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::StartCoordination)?;
    if matches!(
        method,
        CoordinationMethod::Unspecified | CoordinationMethod::Mediation
    ) {
        return Err(FieldViolation::new(
            "method",
            "explanation, correction or withdrawal (mediation is StartMediation)",
        )
        .into());
    }
    let mut r = r.clone();
    r.dispute.method = method as i32;
    r.touch(now, to, cal)?;
    Ok(r)
}

/// A party (an applicant by `party_id`, the organ with `None`) withdraws consent before the
/// 调解书 takes effect (行政复议法 Art 73 ¶2: the review goes on and the organ decides): back
/// to OPEN; in 行政复议 the review resumes with a written notice and its clock runs again
/// with the suspended time not counted (Art 39 ¶2).
pub fn withdraw_consent(
    r: &Record,
    party_id: Option<&str>,
    notice: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::WithdrawConsent)?;
    if let Some(id) = party_id
        && !r.dispute.applicants.iter().any(|p| p.party_id == id)
    {
        return Err(FieldViolation::new("party_id", "not an applicant of this dispute").into());
    }
    let mut r = r.clone();
    if in_review(&r) && r.dispute.review_suspended {
        rules::check_document("resumption_notice", notice)?;
        if let Some(c) = r.clock(rules::REVIEW_CLOCK) {
            c.resume(now, cal)?;
        }
        r.dispute.review_suspended = false;
        r.dispute.notices.push(ReviewNotice {
            kind: ReviewNoticeKind::Resumption as i32,
            document: notice.cloned(),
            notice_time: Some(to_timestamp(now)),
        });
    }
    r.dispute.agreement = None;
    r.dispute.method = CoordinationMethod::Unspecified as i32;
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Drafts the 调解书 (with its digest): AGREEMENT_PENDING, no signature yet.
pub fn draft_agreement(
    r: &Record,
    document: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::DraftAgreement)?;
    rules::check_document("document", document)?;
    let mut r = r.clone();
    r.dispute.agreement = Some(Agreement {
        document: document.cloned(),
        ..Agreement::default()
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

fn complete(a: &Agreement, applicants: &[Party]) -> bool {
    a.sealed
        && a.organ_signed
        && applicants
            .iter()
            .all(|p| a.signed_party_ids.contains(&p.party_id))
}

fn after_signature(mut r: Record, now: i64, cal: &HolidayCalendar) -> Result<Record, Error> {
    let done = r
        .dispute
        .agreement
        .as_ref()
        .is_some_and(|a| complete(a, &r.dispute.applicants));
    let to = if done {
        let to = r.require(Action::AgreementEffective)?;
        if let Some(a) = r.dispute.agreement.as_mut() {
            a.effective_time = Some(to_timestamp(now));
        }
        r.dispute.result = DisputeResult::MediationAgreement as i32;
        to
    } else {
        r.require(Action::SignOrSeal)?
    };
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Records a signature (an applicant by `party_id`, the organ with `None`). The 调解书 takes
/// effect with the last of the signatures and the seal (行政复议法 Art 73 ¶1; 行诉解释 Art 85).
pub fn sign(
    r: &Record,
    party_id: Option<&str>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    r.require(Action::SignOrSeal)?;
    let mut r = r.clone();
    let applicants = r.dispute.applicants.clone();
    let a = r
        .dispute
        .agreement
        .as_mut()
        .ok_or_else(|| Error::Refused(Reason::NoAgreement, "no 调解书 is drafted".into()))?;
    match party_id {
        Some(id) => {
            if !applicants.iter().any(|p| p.party_id == id) {
                return Err(
                    FieldViolation::new("party_id", "not an applicant of this dispute").into(),
                );
            }
            if a.signed_party_ids.iter().any(|s| s == id) {
                return Err(Error::Refused(
                    Reason::AlreadySigned,
                    "this party has already signed".into(),
                ));
            }
            a.signed_party_ids.push(id.to_owned());
        }
        None => {
            if a.organ_signed {
                return Err(Error::Refused(
                    Reason::AlreadySigned,
                    "the organ has already signed".into(),
                ));
            }
            a.organ_signed = true;
        }
    }
    after_signature(r, now, cal)
}

/// Seals the 调解书 (加盖印章, 行政复议法 Art 73 ¶1): effective once every party signed too.
pub fn seal(r: &Record, now: i64, cal: &HolidayCalendar) -> Result<Record, Error> {
    r.require(Action::SignOrSeal)?;
    let mut r = r.clone();
    let a = r
        .dispute
        .agreement
        .as_mut()
        .ok_or_else(|| Error::Refused(Reason::NoAgreement, "no 调解书 is drafted".into()))?;
    if a.sealed {
        return Err(Error::Refused(
            Reason::AlreadySigned,
            "the 调解书 is already sealed".into(),
        ));
    }
    a.sealed = true;
    after_signature(r, now, cal)
}

/// The organ corrected its act (撤销、变更或者履行) and the applicants accept it: RESOLVED.
pub fn record_correction(
    r: &Record,
    document: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::RecordCorrection)?;
    rules::check_document("document", document)?;
    let mut r = r.clone();
    r.dispute.method = CoordinationMethod::Correction as i32;
    r.dispute.result = DisputeResult::OrganCorrection as i32;
    r.dispute.result_document = document.cloned();
    r.touch(now, to, cal)?;
    Ok(r)
}

/// A settlement (和解) and the applicant's withdrawal (行政复议法 Art 74): WITHDRAWN. The
/// service keeps the facts' digest so a second application on them is refused.
pub fn record_settlement(
    r: &Record,
    document: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::RecordSettlement)?;
    rules::check_document("document", document)?;
    let mut r = r.clone();
    r.dispute.review_suspended = false;
    r.dispute.result = DisputeResult::SettledWithdrawn as i32;
    r.dispute.result_document = document.cloned();
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Extends the review by `days` with the approval of the head of the review body (行政复议法
/// Art 62: at most 30). `roles` are the caller's; the clock engine refuses without the role.
pub fn extend_review(
    r: &Record,
    days: u32,
    roles: &[String],
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::ExtendReview)?;
    let mut r = r.clone();
    let c = r.clock(rules::REVIEW_CLOCK).ok_or_else(|| {
        Error::Refused(
            Reason::ClockNotRunning,
            "no 行政复议 review clock runs on this dispute".into(),
        )
    })?;
    if c.is_due(now) && !c.expired {
        c.mark_expired(now)?;
    }
    c.extend(days, roles, false, cal)?;
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Closes without agreement or correction: DECIDED (the reviewing organ's decision, 行政复议法
/// Art 73 ¶2) or NOT_RESOLVED. CLOSED.
pub fn close(
    r: &Record,
    result: DisputeResult,
    document: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::Close)?;
    if !matches!(result, DisputeResult::Decided | DisputeResult::NotResolved) {
        return Err(FieldViolation::new("result", "DECIDED or NOT_RESOLVED").into());
    }
    if document.is_some() {
        rules::check_document("document", document)?;
    }
    let mut r = r.clone();
    r.dispute.result = result as i32;
    r.dispute.result_document = document.cloned();
    r.touch(now, to, cal)?;
    Ok(r)
}

/// The procuratorate is asked (over the router transfer `transfer`) to take part or to
/// examine. One procuratorate at a time.
pub fn ask_procuratorate(
    r: &Record,
    procuratorate: &str,
    transfer: &str,
    kind: ProcuratorateRequestKind,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::Procuratorate)?;
    if r.dispute
        .procuratorate
        .as_ref()
        .is_some_and(|p| p.outcome.is_none())
    {
        return Err(Error::Refused(
            Reason::OpenTransferExists,
            "the procuratorate is already involved and has not answered".into(),
        ));
    }
    let mut r = r.clone();
    r.dispute.procuratorate = Some(ProcuratorateInvolvement {
        procuratorate: agency(procuratorate),
        transfer: transfer.into(),
        referred_by_procuratorate: false,
        request_kind: kind as i32,
        outcome: None,
        reported: false,
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

/// The procuratorate accepted the request: its review clock starts (人民检察院行政诉讼监督规则
/// 2016 Art 12: `months`, from configuration). A repeated acceptance changes nothing.
pub fn procuratorate_accepted(
    r: &Record,
    months: u32,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::Procuratorate)?;
    let mut r = r.clone();
    if r.clocks
        .iter()
        .any(|c| c.name == rules::PROCURATORATE_CLOCK)
    {
        return Ok(r);
    }
    r.clocks.push(Clock::start(
        rules::PROCURATORATE_CLOCK,
        &rules::procuratorate_rule(now, months),
        now,
        cal,
    )?);
    r.touch(now, to, cal)?;
    Ok(r)
}

/// The procuratorate answered with one of the route's outcomes: its clock stops (overdue if
/// the answer came late).
pub fn procuratorate_answered(
    r: &Record,
    outcome: ReasonCode,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let state = r.state();
    let mut r = r.clone();
    if let Some(c) = r.clock(rules::PROCURATORATE_CLOCK) {
        if c.is_due(now) && !c.expired {
            c.mark_expired(now)?;
        }
        c.stop(now)?;
    }
    if let Some(p) = r.dispute.procuratorate.as_mut() {
        p.outcome = Some(outcome);
    }
    r.touch(now, state, cal)?;
    Ok(r)
}

/// The centre reports the result of a referred dispute back to the procuratorate (feedback
/// on the referral's transfer): final states only, referrals only, once. Returns the record
/// and the route outcome code ([`rules::referral_outcome`]).
pub fn report_back(
    r: &Record,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<(Record, &'static str), Error> {
    let to = r.require(Action::ReportBack)?;
    let p = r
        .dispute
        .procuratorate
        .as_ref()
        .filter(|p| p.referred_by_procuratorate)
        .ok_or_else(|| {
            Error::Refused(
                Reason::WrongParty,
                "only a dispute the procuratorate referred is reported back".into(),
            )
        })?;
    if p.reported {
        return Err(Error::AlreadyExists(format!(
            "the report of {}",
            r.dispute.name
        )));
    }
    let code = rules::referral_outcome(r.dispute.result());
    let mut r = r.clone();
    if let Some(p) = r.dispute.procuratorate.as_mut() {
        p.reported = true;
        p.outcome = Some(ReasonCode {
            code: code.into(),
            description: String::new(),
        });
    }
    r.touch(now, to, cal)?;
    Ok((r, code))
}

/// Marks running clocks past their deadline as expired (notify-only: the state stays);
/// `true` when anything changed.
pub fn sweep(r: &mut Record, now: i64, cal: &HolidayCalendar) -> Result<bool, Error> {
    let state = r.state();
    let mut changed = false;
    for c in r.clocks.iter_mut().filter(|c| !c.is_stopped()) {
        if !c.expired && c.is_due(now) {
            c.mark_expired(now)?;
            changed = true;
        }
    }
    r.touch(now, state, cal)?;
    Ok(changed)
}

#[cfg(test)]
pub(crate) mod tests;
