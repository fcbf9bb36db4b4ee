//! The pure rules of 委派调解: consent, who selects the mediator and until when,
//! re-designation, the ending reasons and their route outcome codes, the next steps after
//! an agreement, the registration decision, and the case's deadlines as data.
//!
//! Nothing here reads a clock, a database or the network. Errors carry no personal
//! information: party ids and codes only, never names, ID numbers, phones or addresses.

use fengqiao_kit::Reason;
use fengqiao_proto::common::{
    ClockExpiryAction, ClockExtensionRule, ClockRule, ClockUnit, EvidenceRef, Money, Party,
    PartyRole, ReasonCode,
};
use fengqiao_proto::courtdiversion::{
    Claim, ConsentDecision, DelegationResult, EndReason, NextStep, PreFilingCaseState as S,
    ReturnCause, SelectionMethod,
};
use fengqiao_proto::router::Route;

use crate::lifecycle::{Action, EndKind, Side};

/// The router route a delegation travels on (委派调解).
pub const ROUTE_ID: &str = "court-to-invited-mediation";
/// Resource name of [`ROUTE_ID`].
pub const ROUTE_NAME: &str = "routes/court-to-invited-mediation";
/// Pause reason of the mediation clock during an appraisal (鉴定, 在线调解规则 Art 26); the
/// route's feedback clock must list it.
pub const PAUSE_APPRAISAL: &str = "appraisal";

/// Role of the 立案庭 clerk: intake, consents, joint choice, appraisals, next steps,
/// withdrawals. The court's one clerk role, the one judicial confirmation knows.
pub const ROLE_CLERK: &str = fengqiao_judicial_confirmation::rules::CLERK_ROLE;
/// Role of the judge: designation, suspension review, the registration decision. The court's
/// one judge role, the one judicial confirmation knows.
pub const ROLE_JUDGE: &str = fengqiao_judicial_confirmation::rules::JUDGE_ROLE;
/// Role of the court administrator: the roster (特邀调解名册) and statistics.
pub const ROLE_COURT_ADMIN: &str = "court_admin";

/// Why a rule refused. Messages name fields and codes, never personal information.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Bad input: INVALID_ARGUMENT naming the field.
    #[error("{field}: {message}")]
    InvalidField {
        /// The request field, e.g. `consent.party_id`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The party has already decided on mediation.
    #[error("party {party_id} has already decided on pre-filing mediation")]
    AlreadyDecided {
        /// The party's `party_id` (not personal information).
        party_id: String,
    },
    /// Not every party consented (特邀调解规定 Art 11, 27).
    #[error("the consent of every party is required")]
    ConsentIncomplete,
    /// The organisation declined or let the acceptance clock run out on this case before.
    #[error("the organisation already declined this case or did not answer in time")]
    OrganisationExcluded,
    /// The mediation period cannot be extended under the rule.
    #[error("the mediation period cannot be extended")]
    NotExtendable,
    /// The total extension would exceed the rule's maximum.
    #[error("extension of {requested} days beyond the maximum {max} (already {already})")]
    ExtensionTooLong {
        /// Requested now.
        requested: u32,
        /// Granted before.
        already: u32,
        /// The route's maximum total extension.
        max: u32,
    },
    /// The extended period would pass the hard cap.
    #[error("extension beyond the hard cap of {hard_cap} days")]
    BeyondHardCap {
        /// The route's hard cap.
        hard_cap: u32,
    },
    /// The route does not carry what the statute requires (a configuration error).
    #[error("route {ROUTE_ID}: {what}")]
    RouteDisagrees {
        /// What disagrees.
        what: String,
    },
}

impl RuleError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Stable `ErrorInfo.reason`.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidField { .. } => Reason::InvalidArgument,
            Self::AlreadyDecided { .. } => Reason::ConsentAlreadyRecorded,
            Self::ConsentIncomplete => Reason::PartyConsentRequired,
            Self::OrganisationExcluded => Reason::OrganizationExcluded,
            Self::NotExtendable => Reason::ClockNotExtendable,
            Self::ExtensionTooLong { .. } => Reason::ClockExtensionTooLong,
            Self::BeyondHardCap { .. } => Reason::ClockBeyondHardCap,
            Self::RouteDisagrees { .. } => Reason::RouteMisconfigured,
        }
    }

    /// Whether this is the client's bad input (INVALID_ARGUMENT); otherwise the case's state
    /// or the rule refuses (FAILED_PRECONDITION), or, for [`RuleError::RouteDisagrees`], the
    /// deployment is misconfigured (the service refuses to start).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::InvalidField { .. })
    }
}

// ---------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------

/// The role a court actor needs for `action`; `None` for actions the organisation (through
/// the router) or a deadline takes.
pub fn required_role(action: Action) -> Option<&'static str> {
    use Action as A;
    match action {
        A::Designate { .. }
        | A::Suspend
        | A::ClearSuspicion
        | A::ConfirmFalseMediation
        | A::Register
        | A::RefuseRegistration => Some(ROLE_JUDGE),
        a if a.side() == Side::Court => Some(ROLE_CLERK),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Intake: parties, claims, numbers
// ---------------------------------------------------------------------------

/// Checks the shape of the parties: at least one plaintiff (PARTY_ROLE_APPLICANT) and one
/// defendant (PARTY_ROLE_RESPONDENT), each with a `party_id` unique in the case. Names,
/// identity documents, phones and addresses are checked by the shared party validators.
pub fn check_parties(plaintiffs: &[Party], defendants: &[Party]) -> Vec<RuleError> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (list, field, role) in [
        (
            plaintiffs,
            "pre_filing_case.plaintiffs",
            PartyRole::Applicant,
        ),
        (
            defendants,
            "pre_filing_case.defendants",
            PartyRole::Respondent,
        ),
    ] {
        if list.is_empty() {
            out.push(RuleError::field(field, "at least one is required"));
        }
        for (i, p) in list.iter().enumerate() {
            let id = p.party_id.as_str();
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                out.push(RuleError::field(
                    format!("{field}[{i}].party_id"),
                    "is required: 1–64 printable ASCII characters",
                ));
            } else if seen.contains(&id) {
                out.push(RuleError::field(
                    format!("{field}[{i}].party_id"),
                    "must be unique among the case's parties",
                ));
            } else {
                seen.push(id);
            }
            if p.role != role as i32 {
                out.push(RuleError::field(
                    format!("{field}[{i}].role"),
                    format!("must be {}", role.as_str_name()),
                ));
            }
        }
    }
    out
}

/// The `party_id`s of every plaintiff and defendant, plaintiffs first.
pub fn party_ids<'a>(plaintiffs: &'a [Party], defendants: &'a [Party]) -> Vec<&'a str> {
    plaintiffs
        .iter()
        .chain(defendants)
        .map(|p| p.party_id.as_str())
        .collect()
}

fn check_money(out: &mut Vec<RuleError>, field: &str, m: &Money) {
    let currency_ok =
        m.currency_code.len() == 3 && m.currency_code.bytes().all(|b| b.is_ascii_uppercase());
    if !currency_ok {
        out.push(RuleError::field(
            format!("{field}.currency_code"),
            "must be a three-letter ISO 4217 code, e.g. CNY",
        ));
    }
    // A claimed amount is never negative; nanos carry the sign of units (google.type.Money).
    if m.units < 0 || !(0..=999_999_999).contains(&m.nanos) {
        out.push(RuleError::field(
            format!("{field}.units"),
            "must not be negative, with nanos in 0..=999999999",
        ));
    }
}

/// Checks the claims (诉讼请求): at least one, each described in at most 500 characters,
/// amounts non-negative in a valid currency.
pub fn check_claims(claims: &[Claim]) -> Vec<RuleError> {
    let mut out = Vec::new();
    if claims.is_empty() {
        out.push(RuleError::field(
            "pre_filing_case.claims",
            "at least one is required",
        ));
    }
    for (i, c) in claims.iter().enumerate() {
        let field = format!("pre_filing_case.claims[{i}]");
        let n = c.description.trim().chars().count();
        if n == 0 || c.description.chars().count() > 500 {
            out.push(RuleError::field(
                format!("{field}.description"),
                "is required, at most 500 characters",
            ));
        }
        if let Some(m) = &c.amount {
            check_money(&mut out, &format!("{field}.amount"), m);
        }
    }
    out
}

/// Splits a court number `(YYYY)<court and kind><serial>号` (full-width brackets allowed)
/// into year, middle part and serial, or `None` when it does not have that shape.
fn parse_court_number(s: &str) -> Option<(u32, &str, u32)> {
    let rest = s.strip_prefix('(').or_else(|| s.strip_prefix('（'))?;
    let year: u32 = rest.get(..4)?.parse().ok()?;
    let rest = &rest[4..];
    let rest = rest.strip_prefix(')').or_else(|| rest.strip_prefix('）'))?;
    let body = rest.strip_suffix('号')?;
    let digits = body.len() - body.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 8 {
        return None;
    }
    let (middle, serial) = body.split_at(body.len() - digits);
    let serial: u32 = serial.parse().ok()?;
    if middle.is_empty() || serial == 0 || !(1949..=2999).contains(&year) {
        return None;
    }
    Some((year, middle, serial))
}

/// Checks a pre-filing number (诉前调字号), e.g. "(2026)辽0203诉前调1234号".
pub fn check_pre_filing_number(field: &str, s: &str) -> Result<(), RuleError> {
    match parse_court_number(s) {
        Some((_, middle, _)) if middle.contains("诉前调") && s.len() <= 64 => Ok(()),
        _ => Err(RuleError::field(
            field,
            "must be a pre-filing number like (2026)辽0203诉前调1234号",
        )),
    }
}

/// Checks a docket number given on registration (案号), e.g. "(2026)辽0203民初1234号"; a
/// pre-filing number is not a docket number.
pub fn check_docket_number(field: &str, s: &str) -> Result<(), RuleError> {
    match parse_court_number(s) {
        Some((_, middle, _)) if !middle.contains("诉前") && s.len() <= 64 => Ok(()),
        _ => Err(RuleError::field(
            field,
            "must be a case number like (2026)辽0203民初1234号",
        )),
    }
}

/// Checks that every evidence reference filed with the court carries its content digest
/// (lower-case hex SHA-256, 64 characters), so the organisation can verify what it receives.
/// `field` is the list's path, e.g. `pre_filing_case.evidence`. Other evidence fields are
/// checked by the shared evidence validator.
pub fn check_evidence_digests(field: &str, evidence: &[EvidenceRef]) -> Vec<RuleError> {
    evidence
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.sha256.len() != 64
                || !e
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .map(|(i, _)| {
            RuleError::field(
                format!("{field}[{i}].sha256"),
                "is required: 64 lower-case hexadecimal characters",
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Consent (特邀调解规定 Art 1, 11)
// ---------------------------------------------------------------------------

/// Where the parties' consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStatus {
    /// Every party consented: the case may be delegated.
    Complete,
    /// Some parties have not decided yet.
    Pending,
    /// A party refused: no delegation; the case goes to registration.
    Refused,
}

/// The parties' consent given the decisions recorded so far (`(party_id, decision)`).
/// 特邀调解规定 Art 11: delegation before registration needs the parties' consent, so one
/// refusal is enough to go to registration, and every party must consent to delegate.
pub fn consent_status(party_ids: &[&str], decisions: &[(&str, ConsentDecision)]) -> ConsentStatus {
    if decisions
        .iter()
        .any(|(_, d)| *d == ConsentDecision::Refused)
    {
        return ConsentStatus::Refused;
    }
    let consented = |id: &&str| {
        decisions
            .iter()
            .any(|(p, d)| p == id && *d == ConsentDecision::Consented)
    };
    if !party_ids.is_empty() && party_ids.iter().all(consented) {
        ConsentStatus::Complete
    } else {
        ConsentStatus::Pending
    }
}

/// The lifecycle action for a consent status after a new record.
pub fn consent_action(status: ConsentStatus) -> Action {
    match status {
        ConsentStatus::Complete => Action::RecordConsent { complete: true },
        ConsentStatus::Pending => Action::RecordConsent { complete: false },
        ConsentStatus::Refused => Action::RefuseConsent,
    }
}

/// Checks a new consent record: a party of the case, a decision given, and no earlier
/// decision by that party (a decision is final: a refusal has already sent the case to
/// registration, and a consent is what the delegation rests on).
pub fn check_consent(
    field: &str,
    party_ids: &[&str],
    decided: &[(&str, ConsentDecision)],
    party_id: &str,
    decision: i32,
) -> Result<ConsentDecision, RuleError> {
    if !party_ids.contains(&party_id) {
        return Err(RuleError::field(
            format!("{field}.party_id"),
            "must be a party of the case",
        ));
    }
    let decision = match ConsentDecision::try_from(decision) {
        Ok(d @ (ConsentDecision::Consented | ConsentDecision::Refused)) => d,
        _ => {
            return Err(RuleError::field(
                format!("{field}.decision"),
                "must be CONSENTED or REFUSED",
            ));
        }
    };
    if decided.iter().any(|(p, _)| *p == party_id) {
        return Err(RuleError::AlreadyDecided {
            party_id: party_id.to_owned(),
        });
    }
    Ok(decision)
}

// ---------------------------------------------------------------------------
// Choosing and designating the mediator (在线调解规则 Art 10, 12)
// ---------------------------------------------------------------------------

/// Checks a joint choice (当事人共同选定, 在线调解规则 Art 10): every party of the case took
/// part, each once, and nobody else.
pub fn check_joint_choice(party_ids: &[&str], chosen_by: &[&str]) -> Result<(), RuleError> {
    const FIELD: &str = "chosen_by_party_ids";
    for (i, p) in chosen_by.iter().enumerate() {
        if !party_ids.contains(p) {
            return Err(RuleError::field(
                format!("{FIELD}[{i}]"),
                "must be a party of the case",
            ));
        }
        if chosen_by[..i].contains(p) {
            return Err(RuleError::field(format!("{FIELD}[{i}]"), "is listed twice"));
        }
    }
    if party_ids.iter().any(|p| !chosen_by.contains(p)) {
        return Err(RuleError::field(
            FIELD,
            "a joint choice needs every party of the case",
        ));
    }
    Ok(())
}

/// Who selects the mediator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The parties, jointly (ChooseMediator).
    Parties,
    /// The court's judge (DesignateMediator).
    Court {
        /// The parties waived their joint choice.
        choice_waived: bool,
    },
}

/// Why a selection is refused at this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SelectionRefused {
    /// Not a state in which this selector may select.
    #[error("no mediator can be selected in this state")]
    WrongState,
    /// The parties' 2 working days are over (在线调解规则 Art 10): the court designates.
    #[error("the parties' joint choice has lapsed; the court designates")]
    JointChoiceLapsed,
    /// The parties' 2 working days are still running and they did not waive them.
    #[error(
        "the parties may still choose jointly; the court designates once they waive or it lapses"
    )]
    JointChoiceOpen,
}

/// Who may select and until when (在线调解规则 Art 10): the parties while their joint-choice
/// clock runs (`now < choice_due`), the court once it has lapsed or the parties waived it,
/// and the court again after a decline or timeout (Art 12). Returns the lifecycle actions to
/// apply in order: a lapse not yet processed by the timer is applied first, because the
/// database's time decides, not the timer's pass. Times are unix µs of the database clock.
pub fn selection_actions(
    state: S,
    selector: Selector,
    now: i64,
    choice_due: Option<i64>,
) -> Result<Vec<Action>, SelectionRefused> {
    let lapsed = choice_due.is_some_and(|due| now >= due);
    match (state, selector) {
        (S::AwaitingJointChoice, Selector::Parties) if lapsed => {
            Err(SelectionRefused::JointChoiceLapsed)
        }
        (S::AwaitingJointChoice, Selector::Parties) => Ok(vec![Action::ChooseJointly]),
        (S::AwaitingJointChoice, Selector::Court { choice_waived }) if lapsed => Ok(vec![
            Action::JointChoiceExpired,
            Action::Designate { choice_waived },
        ]),
        (
            S::AwaitingJointChoice,
            Selector::Court {
                choice_waived: true,
            },
        ) => Ok(vec![Action::Designate {
            choice_waived: true,
        }]),
        (S::AwaitingJointChoice, Selector::Court { .. }) => Err(SelectionRefused::JointChoiceOpen),
        (S::AwaitingDesignation, Selector::Court { choice_waived }) => {
            Ok(vec![Action::Designate { choice_waived }])
        }
        (S::AwaitingDesignation, Selector::Parties) => Err(SelectionRefused::JointChoiceLapsed),
        _ => Err(SelectionRefused::WrongState),
    }
}

/// How many delegations a case may have before it goes to registration instead of another
/// re-designation. 在线调解规则 Art 12 lets the court designate again after a decline or a
/// timeout but sets no number: the limit is local practice, hence configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedesignationPolicy {
    /// Maximum number of delegations of one case, the first included; at least 1.
    pub max_delegations: u32,
}

impl Default for RedesignationPolicy {
    /// Three delegations: the first and two re-designations.
    fn default() -> Self {
        Self { max_delegations: 3 }
    }
}

impl RedesignationPolicy {
    /// Whether, after `delegations_so_far` delegations (the failed one included), the court
    /// may designate again.
    pub fn may_redesignate(self, delegations_so_far: u32) -> bool {
        delegations_so_far < self.max_delegations.max(1)
    }

    /// The lifecycle action for a decline of the `delegations_so_far`-th delegation.
    pub fn on_decline(self, delegations_so_far: u32) -> Action {
        Action::Decline {
            redesignate: self.may_redesignate(delegations_so_far),
        }
    }

    /// The lifecycle action for an acceptance timeout of the `delegations_so_far`-th
    /// delegation.
    pub fn on_acceptance_timeout(self, delegations_so_far: u32) -> Action {
        Action::AcceptanceExpired {
            redesignate: self.may_redesignate(delegations_so_far),
        }
    }
}

/// How a designation is recorded: the first is a court designation, later ones are
/// re-designations (另行指定, 在线调解规则 Art 12).
pub fn designation_method(delegations_so_far: u32) -> SelectionMethod {
    if delegations_so_far == 0 {
        SelectionMethod::CourtDesignation
    } else {
        SelectionMethod::Redesignation
    }
}

/// Checks a designee against the case's delegations (`(organisation, result)`): an
/// organisation that declined the case or did not answer in time is not designated again
/// (在线调解规则 Art 12: the court designates *another* mediator).
pub fn check_designee(
    organisation: &str,
    history: &[(&str, DelegationResult)],
) -> Result<(), RuleError> {
    let excluded = history.iter().any(|(o, r)| {
        *o == organisation && matches!(r, DelegationResult::Declined | DelegationResult::TimedOut)
    });
    if excluded {
        Err(RuleError::OrganisationExcluded)
    } else {
        Ok(())
    }
}

/// A roster organisation as the automatic re-designation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// `invitedOrganizations/{invited_organization}`.
    pub name: &'a str,
    /// On the roster and taking new delegations (在册有效).
    pub active: bool,
    /// Its specialties (`DisputeCategory` values).
    pub specialties: &'a [i32],
    /// The court's cases currently with it (在办案件数).
    pub load: u32,
}

/// The organisation the court's system designates itself when the last one did not answer
/// within 3 working days and the [`RedesignationPolicy`] allows another delegation
/// (在线调解规则 Art 12: the court designates *another*): active, not excluded by the case's
/// history ([`check_designee`]), specialists in the dispute's category first, then the
/// lightest load, then by name (a stable choice). `None` when no organisation qualifies: the
/// case waits for the judge, with the designation clock running.
pub fn pick_designee<'a>(
    candidates: &[Candidate<'a>],
    category: i32,
    history: &[(&str, DelegationResult)],
) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| c.active && check_designee(c.name, history).is_ok())
        // Also not one that has this case already (e.g. still pending elsewhere).
        .filter(|c| {
            !history
                .iter()
                .any(|(o, r)| *o == c.name && *r == DelegationResult::Pending)
        })
        .min_by_key(|c| (!c.specialties.contains(&category), c.load, c.name))
        .map(|c| c.name)
}

// ---------------------------------------------------------------------------
// Ending (在线调解规则 Art 25) and what follows
// ---------------------------------------------------------------------------

/// The eight ending reasons of 在线调解规则 Art 25, in the order of the article.
pub const END_REASONS: [EndReason; 8] = [
    EndReason::Agreement,
    EndReason::SettledAndWithdrawn,
    EndReason::Unreachable,
    EndReason::PartyRefusesToContinue,
    EndReason::GapTooLarge,
    EndReason::PeriodExpired,
    EndReason::PartyRefusesToSign,
    EndReason::Other,
];

/// The route `court-to-invited-mediation`'s feedback outcome code for an ending reason
/// (deploy/routes/court-to-invited-mediation.v1.toml); `None` for UNSPECIFIED.
pub fn outcome_code(reason: EndReason) -> Option<&'static str> {
    Some(match reason {
        EndReason::Unspecified => return None,
        EndReason::Agreement => "agreement_reached",
        EndReason::SettledAndWithdrawn => "settled_and_withdrawn",
        EndReason::Unreachable => "party_unreachable",
        EndReason::PartyRefusesToContinue => "party_refused",
        EndReason::GapTooLarge => "mediation_failed",
        EndReason::PeriodExpired => "period_expired",
        EndReason::PartyRefusesToSign => "party_refused_to_sign",
        EndReason::Other => "other_termination",
    })
}

/// The ending reason for a feedback outcome code received from the router; `None` for a
/// code the route does not define.
pub fn end_reason_for_outcome(code: &str) -> Option<EndReason> {
    END_REASONS
        .into_iter()
        .find(|r| outcome_code(*r) == Some(code))
}

/// What an ending reason means for the court's lifecycle.
pub fn end_kind(reason: EndReason) -> Option<EndKind> {
    Some(match reason {
        EndReason::Unspecified => return None,
        // 特邀调解规定 Art 19: the agreement is filed with the court.
        EndReason::Agreement => EndKind::Agreement,
        // The plaintiff withdraws: nothing to register.
        EndReason::SettledAndWithdrawn => EndKind::SettledAndWithdrawn,
        // 特邀调解规定 Art 21: every other reason sends the materials back.
        EndReason::Unreachable
        | EndReason::PartyRefusesToContinue
        | EndReason::GapTooLarge
        | EndReason::PeriodExpired
        | EndReason::PartyRefusesToSign
        | EndReason::Other => EndKind::Failed,
    })
}

/// Why the case goes to registration after ending with `reason` in `state`; `None` when it
/// does not (agreement, settlement). A party unreachable or refusing before contact was made
/// is a failed contact (在线调解规则 Art 15).
pub fn return_cause(state: S, reason: EndReason) -> Option<ReturnCause> {
    match end_kind(reason)? {
        EndKind::Agreement | EndKind::SettledAndWithdrawn => None,
        EndKind::Failed => Some(match reason {
            EndReason::PeriodExpired => ReturnCause::PeriodExpired,
            EndReason::Unreachable | EndReason::PartyRefusesToContinue
                if state == S::Contacting =>
            {
                ReturnCause::ContactFailed
            }
            _ => ReturnCause::MediationFailed,
        }),
    }
}

/// Checks that the route's feedback outcomes are exactly the eight reasons' codes, so every
/// ending the mediator reports maps to a reason and back.
pub fn check_route_outcomes(route: &Route) -> Result<(), RuleError> {
    let codes: Vec<&str> = route
        .feedback_outcomes
        .iter()
        .map(|r| r.code.as_str())
        .collect();
    for r in END_REASONS {
        if let Some(code) = outcome_code(r)
            && !codes.contains(&code)
        {
            return Err(RuleError::RouteDisagrees {
                what: format!("feedback outcome {code} is missing"),
            });
        }
    }
    if let Some(extra) = codes.iter().find(|c| end_reason_for_outcome(c).is_none()) {
        return Err(RuleError::RouteDisagrees {
            what: format!("feedback outcome {extra} has no ending reason (在线调解规则 Art 25)"),
        });
    }
    Ok(())
}

/// The steps the court offers after filing an agreement (特邀调解规定 Art 19–20), in order:
/// judicial confirmation (人民调解法 Art 33), a mediation document after registration, or
/// voluntary performance.
pub const OFFERED_NEXT_STEPS: [NextStep; 3] = [
    NextStep::JudicialConfirmation,
    NextStep::MediationDocument,
    NextStep::VoluntaryPerformance,
];

/// The lifecycle action for a next step; `None` for UNSPECIFIED.
pub fn next_step_action(step: NextStep) -> Option<Action> {
    match step {
        NextStep::Unspecified => None,
        NextStep::JudicialConfirmation => Some(Action::ApplyForConfirmation),
        NextStep::MediationDocument => Some(Action::RequestMediationDocument),
        NextStep::VoluntaryPerformance => Some(Action::CloseAfterAgreement),
    }
}

/// Checks a refusal of registration: 民事诉讼法 Art 126 requires a ruling (裁定), so a reason
/// (at most 2000 characters) and the ruling document are required.
pub fn check_refusal(reason: &str, has_ruling: bool) -> Vec<RuleError> {
    let mut out = Vec::new();
    if reason.trim().is_empty() || reason.chars().count() > 2000 {
        out.push(RuleError::field(
            "reason",
            "is required, at most 2000 characters",
        ));
    }
    if !has_ruling {
        out.push(RuleError::field("ruling", "is required (不予受理裁定书)"));
    }
    out
}

/// Checks an extension of the mediation period (特邀调解规定 Art 27): every party consented,
/// a positive number of days, within the route's maximum total extension and hard cap.
pub fn check_extension(
    party_ids: &[&str],
    consenting: &[&str],
    days: u32,
    already_extended: u32,
    rule: &ClockRule,
) -> Result<(), RuleError> {
    if days == 0 {
        return Err(RuleError::field("days", "must be positive"));
    }
    if rule.extension_rule != ClockExtensionRule::PartyConsent as i32 {
        return Err(RuleError::NotExtendable);
    }
    if party_ids.is_empty() || party_ids.iter().any(|p| !consenting.contains(p)) {
        return Err(RuleError::ConsentIncomplete);
    }
    let total = already_extended.saturating_add(days);
    if rule.max_extension > 0 && total > rule.max_extension {
        return Err(RuleError::ExtensionTooLong {
            requested: days,
            already: already_extended,
            max: rule.max_extension,
        });
    }
    if rule.hard_cap > 0 && rule.length.saturating_add(total) > rule.hard_cap {
        return Err(RuleError::BeyondHardCap {
            hard_cap: rule.hard_cap,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Deadlines as data
// ---------------------------------------------------------------------------

/// Joint choice of a mediator: 2 working days from consent (在线调解规则 Art 10).
pub const JOINT_CHOICE_WORKING_DAYS: u32 = 2;
/// Designation by the court: 3 working days (在线调解规则 Art 10, 12).
pub const DESIGNATION_WORKING_DAYS: u32 = 3;
/// Acceptance or decline by the organisation: 3 working days (在线调解规则 Art 12).
pub const ACCEPTANCE_WORKING_DAYS: u32 = 3;
/// Contact with the parties: 3 working days from acceptance (在线调解规则 Art 15).
pub const CONTACT_WORKING_DAYS: u32 = 3;
/// The mediation period: 30 days from acceptance (在线调解规则 Art 24, 特邀调解规定 Art 27).
pub const MEDIATION_DAYS: u32 = 30;
/// The registration decision: 7 days (民事诉讼法 Art 126).
pub const REGISTRATION_DAYS: u32 = 7;

/// Which deadline expired, and so which lifecycle action follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The joint choice lapsed: the court designates.
    JointChoice,
    /// The court's designation is overdue: the court is told.
    Designation,
    /// The organisation did not answer: re-designation or registration.
    Acceptance,
    /// The parties were not reached: the mediation ends, materials back.
    Contact,
    /// The mediation period ran out without extension consent: materials back.
    Mediation,
    /// The registration decision is overdue: the court is told.
    Registration,
}

impl Expiry {
    /// The lifecycle action on expiry; `may_redesignate` matters only for
    /// [`Expiry::Acceptance`] (see [`RedesignationPolicy::may_redesignate`]).
    pub fn action(self, may_redesignate: bool) -> Action {
        match self {
            Expiry::JointChoice => Action::JointChoiceExpired,
            Expiry::Designation => Action::DesignationOverdue,
            Expiry::Acceptance => Action::AcceptanceExpired {
                redesignate: may_redesignate,
            },
            Expiry::Contact => Action::ContactExpired,
            Expiry::Mediation => Action::MediationExpired,
            Expiry::Registration => Action::RegistrationOverdue,
        }
    }
}

/// One deadline of a case, as data: the clock rule the clock engine runs, the states it
/// runs in (it starts when the case enters them and stops when it leaves them), what its
/// expiry does, and its legal basis.
#[derive(Debug, Clone, PartialEq)]
pub struct Deadline {
    /// The clock's name, as in `ClockState.name`.
    pub name: &'static str,
    /// Unit, length, pauses, extensions, cap and expiry action.
    pub rule: ClockRule,
    /// The states the clock runs in. It starts on entering the set from outside it and
    /// stops on leaving it; moves inside the set do not restart it.
    pub runs_in: &'static [S],
    /// What its expiry does to the case.
    pub expiry: Expiry,
    /// The legal source (or "local practice").
    pub basis: &'static str,
}

fn simple_rule(unit: ClockUnit, length: u32, expiry_action: ClockExpiryAction) -> ClockRule {
    ClockRule {
        unit: unit as i32,
        length,
        extension_rule: ClockExtensionRule::NotExtendable as i32,
        expiry_action: expiry_action as i32,
        ..ClockRule::default()
    }
}

fn disagrees(what: impl Into<String>) -> RuleError {
    RuleError::RouteDisagrees { what: what.into() }
}

/// The acceptance clock: the route's, which the router runs; it must be the statute's 3
/// working days returning the case to the court (在线调解规则 Art 12).
fn acceptance_rule(route: &Route) -> Result<ClockRule, RuleError> {
    let rule = route
        .acceptance_clock
        .clone()
        .ok_or_else(|| disagrees("no acceptance clock"))?;
    if rule.unit != ClockUnit::WorkingDay as i32 || rule.length != ACCEPTANCE_WORKING_DAYS {
        return Err(disagrees(
            "acceptance clock is not 3 working days (在线调解规则 Art 12)",
        ));
    }
    if rule.expiry_action != ClockExpiryAction::ReturnToSender as i32 {
        return Err(disagrees(
            "acceptance clock does not return the case to the court",
        ));
    }
    Ok(rule)
}

/// The mediation clock: the statute's 30 calendar days from acceptance, extendable with
/// every party's consent, appraisal not counted (在线调解规则 Art 24, 26; 特邀调解规定 Art 27),
/// with the maximum extension and hard cap from the route (local practice: the statute sets
/// none). It is the route's feedback clock, which the router runs.
fn mediation_rule(route: &Route) -> Result<ClockRule, RuleError> {
    let rule = route
        .feedback_clock
        .clone()
        .ok_or_else(|| disagrees("no feedback (mediation) clock"))?;
    if rule.unit != ClockUnit::CalendarDay as i32 || rule.length != MEDIATION_DAYS {
        return Err(disagrees(
            "mediation clock is not 30 days (在线调解规则 Art 24)",
        ));
    }
    if rule.extension_rule != ClockExtensionRule::PartyConsent as i32 {
        return Err(disagrees(
            "mediation clock is not extendable by the parties' consent (特邀调解规定 Art 27)",
        ));
    }
    if !rule
        .pausable_reasons
        .iter()
        .any(|r: &ReasonCode| r.code == PAUSE_APPRAISAL)
    {
        return Err(disagrees(
            "mediation clock cannot pause for appraisal (在线调解规则 Art 26)",
        ));
    }
    if rule.expiry_action != ClockExpiryAction::ReturnToSender as i32 {
        return Err(disagrees(
            "mediation clock does not return the materials to the court (特邀调解规定 Art 21)",
        ));
    }
    Ok(rule)
}

/// The deadlines this service runs itself with its deadline timer: the joint choice, the
/// court's designation and the registration decision. The router runs the others
/// (acceptance, contact, mediation) on the delegation's transfer.
pub fn court_deadlines() -> [Deadline; 3] {
    use ClockExpiryAction::NotifyOnly;
    [
        Deadline {
            name: "joint_choice",
            rule: simple_rule(ClockUnit::WorkingDay, JOINT_CHOICE_WORKING_DAYS, NotifyOnly),
            runs_in: &[S::AwaitingJointChoice],
            expiry: Expiry::JointChoice,
            basis: "在线调解规则 Art 10",
        },
        Deadline {
            name: "designation",
            rule: simple_rule(ClockUnit::WorkingDay, DESIGNATION_WORKING_DAYS, NotifyOnly),
            runs_in: &[S::AwaitingDesignation],
            expiry: Expiry::Designation,
            basis: "在线调解规则 Art 10, 12",
        },
        Deadline {
            name: "registration",
            rule: simple_rule(ClockUnit::CalendarDay, REGISTRATION_DAYS, NotifyOnly),
            runs_in: &[S::RegistrationPending],
            expiry: Expiry::Registration,
            basis: "民事诉讼法 Art 126",
        },
    ]
}

/// Every deadline of a pre-filing case, for the route the delegations travel on (its
/// acceptance clock and the mediation clock's extension cap come from it; a route that
/// disagrees with the statute is refused).
pub fn deadlines(route: &Route) -> Result<Vec<Deadline>, RuleError> {
    use ClockExpiryAction::ReturnToSender;
    let [joint_choice, designation, registration] = court_deadlines();
    Ok(vec![
        joint_choice,
        designation,
        Deadline {
            name: "acceptance",
            rule: acceptance_rule(route)?,
            runs_in: &[S::Delegated],
            expiry: Expiry::Acceptance,
            basis: "在线调解规则 Art 12",
        },
        Deadline {
            name: "contact",
            rule: simple_rule(ClockUnit::WorkingDay, CONTACT_WORKING_DAYS, ReturnToSender),
            runs_in: &[S::Contacting],
            expiry: Expiry::Contact,
            basis: "在线调解规则 Art 15",
        },
        Deadline {
            name: "mediation",
            rule: mediation_rule(route)?,
            runs_in: &[S::Contacting, S::InMediation, S::Suspended],
            expiry: Expiry::Mediation,
            basis: "在线调解规则 Art 24–26; 特邀调解规定 Art 27",
        },
        registration,
    ])
}

/// The clocks a transition starts and stops, by name: a clock starts when the case enters
/// its `runs_in` set and stops when the case leaves it.
pub fn clock_changes(
    deadlines: &[Deadline],
    from: S,
    to: S,
) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut started = Vec::new();
    let mut stopped = Vec::new();
    for d in deadlines {
        match (d.runs_in.contains(&from), d.runs_in.contains(&to)) {
            (false, true) => started.push(d.name),
            (true, false) => stopped.push(d.name),
            _ => {}
        }
    }
    (started, stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{ALL_ACTIONS, ALL_STATES, is_terminal, next};
    use fengqiao_router::clock::validate_rule;
    use fengqiao_router::routes::RouteCatalog;
    use proptest::prelude::*;

    /// The route as the router ships it (deploy/routes/court-to-invited-mediation.v1.toml).
    fn route() -> Route {
        let catalog = RouteCatalog::builtin().expect("built-in routes load");
        catalog
            .current(ROUTE_ID)
            .expect("the court route is built in")
            .clone()
    }

    fn party(id: &str, role: PartyRole) -> Party {
        Party {
            party_id: id.into(),
            role: role as i32,
            ..Party::default()
        }
    }

    fn field_of(e: &RuleError) -> &str {
        match e {
            RuleError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn court_actions_need_a_role_and_others_none() {
        for a in ALL_ACTIONS {
            assert_eq!(required_role(a).is_some(), a.side() == Side::Court, "{a:?}");
        }
        use Action as A;
        for a in [
            A::Designate {
                choice_waived: false,
            },
            A::Suspend,
            A::ClearSuspicion,
            A::ConfirmFalseMediation,
            A::Register,
            A::RefuseRegistration,
        ] {
            assert_eq!(required_role(a), Some(ROLE_JUDGE), "{a:?}");
        }
        for a in [
            A::RecordConsent { complete: true },
            A::RefuseConsent,
            A::ChooseJointly,
            A::Appraisal,
            A::ApplyForConfirmation,
            A::Withdraw,
        ] {
            assert_eq!(required_role(a), Some(ROLE_CLERK), "{a:?}");
        }
        assert_eq!(required_role(A::Accept), None);
        assert_eq!(required_role(A::MediationExpired), None);
    }

    #[test]
    fn parties_need_one_plaintiff_one_defendant_unique_ids_and_roles() {
        let p = [party("p1", PartyRole::Applicant)];
        let d = [
            party("d1", PartyRole::Respondent),
            party("d2", PartyRole::Respondent),
        ];
        assert!(check_parties(&p, &d).is_empty());
        assert_eq!(party_ids(&p, &d), ["p1", "d1", "d2"]);

        let errs = check_parties(&[], &d);
        assert_eq!(field_of(&errs[0]), "pre_filing_case.plaintiffs");
        let errs = check_parties(&p, &[]);
        assert_eq!(field_of(&errs[0]), "pre_filing_case.defendants");

        let dup = [party("p1", PartyRole::Respondent)];
        let errs = check_parties(&p, &dup);
        assert_eq!(errs.len(), 1);
        assert_eq!(field_of(&errs[0]), "pre_filing_case.defendants[0].party_id");

        let wrong = [party("d1", PartyRole::Applicant)];
        let errs = check_parties(&p, &wrong);
        assert_eq!(field_of(&errs[0]), "pre_filing_case.defendants[0].role");

        for bad in ["", "has space", &"x".repeat(65)] {
            let errs = check_parties(&[party(bad, PartyRole::Applicant)], &d);
            assert_eq!(field_of(&errs[0]), "pre_filing_case.plaintiffs[0].party_id");
        }
        let unspecified = [party("p1", PartyRole::Unspecified)];
        assert_eq!(check_parties(&unspecified, &d).len(), 1);
    }

    fn claim(description: &str, amount: Option<(&str, i64, i32)>) -> Claim {
        Claim {
            description: description.into(),
            amount: amount.map(|(c, units, nanos)| Money {
                currency_code: c.into(),
                units,
                nanos,
            }),
        }
    }

    #[test]
    fn claims() {
        assert!(check_claims(&[claim("支付货款", Some(("CNY", 12_000, 500_000_000)))]).is_empty());
        assert!(check_claims(&[claim("赔礼道歉", None)]).is_empty());
        let cases: &[(Claim, &str)] = &[
            (claim("", None), "pre_filing_case.claims[0].description"),
            (claim("   ", None), "pre_filing_case.claims[0].description"),
            (
                claim(&"长".repeat(501), None),
                "pre_filing_case.claims[0].description",
            ),
            (
                claim("x", Some(("cny", 1, 0))),
                "pre_filing_case.claims[0].amount.currency_code",
            ),
            (
                claim("x", Some(("", 1, 0))),
                "pre_filing_case.claims[0].amount.currency_code",
            ),
            (
                claim("x", Some(("CNY", -1, 0))),
                "pre_filing_case.claims[0].amount.units",
            ),
            (
                claim("x", Some(("CNY", 0, -5))),
                "pre_filing_case.claims[0].amount.units",
            ),
            (
                claim("x", Some(("CNY", 0, 1_000_000_000))),
                "pre_filing_case.claims[0].amount.units",
            ),
        ];
        for (c, field) in cases {
            let errs = check_claims(std::slice::from_ref(c));
            assert_eq!(errs.len(), 1, "{c:?}");
            assert_eq!(field_of(&errs[0]), *field);
        }
        assert_eq!(field_of(&check_claims(&[])[0]), "pre_filing_case.claims");
    }

    #[test]
    fn court_numbers() {
        for ok in ["(2026)辽0203诉前调1234号", "（2026）辽0203诉前调1号"] {
            assert_eq!(check_pre_filing_number("f", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "(2026)辽0203民初1234号",
            "(2026)辽0203诉前调号",
            "(2026)辽0203诉前调1234",
            "(26)辽0203诉前调1号",
            "(1800)辽0203诉前调1号",
            "(2026)辽0203诉前调0号",
            "2026辽0203诉前调1号",
            "(2026)诉前调123456789号",
        ] {
            let e = check_pre_filing_number("pre_filing_case.pre_filing_number", bad);
            assert_eq!(
                e.as_ref().map_err(field_of),
                Err("pre_filing_case.pre_filing_number"),
                "{bad}"
            );
        }
        assert_eq!(check_docket_number("f", "(2026)辽0203民初1234号"), Ok(()));
        assert_eq!(check_docket_number("f", "（2027）辽0203民初7号"), Ok(()));
        for bad in ["", "(2026)辽0203诉前调1234号", "(2026)号", "民初1234号"] {
            assert!(check_docket_number("docket_number", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn consent_needs_every_party_and_one_refusal_ends_it() {
        use ConsentDecision::{Consented as C, Refused as R};
        let parties = ["p1", "d1"];
        let table: &[(&[(&str, ConsentDecision)], ConsentStatus)] = &[
            (&[], ConsentStatus::Pending),
            (&[("p1", C)], ConsentStatus::Pending),
            (&[("p1", C), ("d1", C)], ConsentStatus::Complete),
            (&[("p1", C), ("d1", R)], ConsentStatus::Refused),
            (&[("d1", R)], ConsentStatus::Refused),
            // A consent by someone else does not count for a party.
            (&[("p1", C), ("x", C)], ConsentStatus::Pending),
        ];
        for (decisions, expected) in table {
            assert_eq!(
                consent_status(&parties, decisions),
                *expected,
                "{decisions:?}"
            );
        }
        assert_eq!(consent_status(&[], &[]), ConsentStatus::Pending);
        assert_eq!(
            next(S::ConsentPending, consent_action(ConsentStatus::Complete)),
            Some(S::AwaitingJointChoice)
        );
        assert_eq!(
            next(S::ConsentPending, consent_action(ConsentStatus::Pending)),
            Some(S::ConsentPending)
        );
        assert_eq!(
            next(S::ConsentPending, consent_action(ConsentStatus::Refused)),
            Some(S::RegistrationPending)
        );
    }

    #[test]
    fn consent_records_are_checked() {
        let parties = ["p1", "d1"];
        let decided = [("p1", ConsentDecision::Consented)];
        assert_eq!(
            check_consent(
                "consent",
                &parties,
                &decided,
                "d1",
                ConsentDecision::Refused as i32
            ),
            Ok(ConsentDecision::Refused)
        );
        let e = check_consent("consent", &parties, &decided, "zz", 1).expect_err("refused");
        assert_eq!(field_of(&e), "consent.party_id");
        for bad in [0, 3, -1] {
            let e = check_consent("consent", &parties, &decided, "d1", bad).expect_err("refused");
            assert_eq!(field_of(&e), "consent.decision");
        }
        let e = check_consent("consent", &parties, &decided, "p1", 1).expect_err("refused");
        assert_eq!(
            e,
            RuleError::AlreadyDecided {
                party_id: "p1".into()
            }
        );
        assert!(!e.is_bad_input());
        assert_eq!(e.reason().as_str(), "CONSENT_ALREADY_RECORDED");
    }

    #[test]
    fn a_joint_choice_needs_every_party_once() {
        let parties = ["p1", "d1", "d2"];
        assert_eq!(check_joint_choice(&parties, &["d2", "p1", "d1"]), Ok(()));
        let e = check_joint_choice(&parties, &["p1", "d1"]).expect_err("refused");
        assert_eq!(field_of(&e), "chosen_by_party_ids");
        let e = check_joint_choice(&parties, &["p1", "d1", "d2", "x"]).expect_err("refused");
        assert_eq!(field_of(&e), "chosen_by_party_ids[3]");
        let e = check_joint_choice(&parties, &["p1", "p1", "d1", "d2"]).expect_err("refused");
        assert_eq!(field_of(&e), "chosen_by_party_ids[1]");
        assert!(check_joint_choice(&parties, &[]).is_err());
    }

    #[test]
    fn evidence_needs_a_digest() {
        let ev = |d: &str| EvidenceRef {
            display_name: "借条".into(),
            sha256: d.into(),
            ..EvidenceRef::default()
        };
        let good = "ab".repeat(32);
        assert!(check_evidence_digests("pre_filing_case.evidence", &[ev(&good)]).is_empty());
        let bad = [
            ev(&good),
            ev(""),
            ev(&"AB".repeat(32)),
            ev(&"a".repeat(63)),
            ev(&"g".repeat(64)),
        ];
        let fields: Vec<String> = check_evidence_digests("pre_filing_case.evidence", &bad)
            .iter()
            .map(|e| field_of(e).to_owned())
            .collect();
        assert_eq!(
            fields,
            (1..5)
                .map(|i| format!("pre_filing_case.evidence[{i}].sha256"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn who_may_select_and_until_when() {
        use SelectionRefused as R;
        let due = Some(1_000);
        let court = |w| Selector::Court { choice_waived: w };
        type Row = (S, Selector, i64, Result<Vec<Action>, R>);
        let table: &[Row] = &[
            (
                S::AwaitingJointChoice,
                Selector::Parties,
                999,
                Ok(vec![Action::ChooseJointly]),
            ),
            (
                S::AwaitingJointChoice,
                Selector::Parties,
                1_000,
                Err(R::JointChoiceLapsed),
            ),
            (
                S::AwaitingJointChoice,
                court(false),
                999,
                Err(R::JointChoiceOpen),
            ),
            (
                S::AwaitingJointChoice,
                court(true),
                999,
                Ok(vec![Action::Designate {
                    choice_waived: true,
                }]),
            ),
            (
                S::AwaitingJointChoice,
                court(false),
                1_000,
                Ok(vec![
                    Action::JointChoiceExpired,
                    Action::Designate {
                        choice_waived: false,
                    },
                ]),
            ),
            (
                S::AwaitingDesignation,
                court(false),
                5,
                Ok(vec![Action::Designate {
                    choice_waived: false,
                }]),
            ),
            (
                S::AwaitingDesignation,
                Selector::Parties,
                5,
                Err(R::JointChoiceLapsed),
            ),
            (S::Delegated, court(false), 5, Err(R::WrongState)),
            (S::ConsentPending, Selector::Parties, 5, Err(R::WrongState)),
            (S::InMediation, court(true), 5, Err(R::WrongState)),
        ];
        for (s, sel, now, expected) in table {
            let got = selection_actions(*s, *sel, *now, due);
            assert_eq!(&got, expected, "{s:?} {sel:?} at {now}");
            // Whatever is allowed, the lifecycle accepts in order and ends DELEGATED.
            if let Ok(actions) = got {
                let end = actions
                    .iter()
                    .try_fold(*s, |st, a| next(st, *a))
                    .expect("lifecycle accepts the selection");
                assert_eq!(end, S::Delegated);
            }
        }
    }

    #[test]
    fn redesignation_policy_and_designees() {
        let p = RedesignationPolicy::default();
        assert_eq!(p.max_delegations, 3);
        assert!(p.may_redesignate(1));
        assert!(p.may_redesignate(2));
        assert!(!p.may_redesignate(3));
        assert_eq!(p.on_decline(1), Action::Decline { redesignate: true });
        assert_eq!(p.on_decline(3), Action::Decline { redesignate: false });
        assert_eq!(
            p.on_acceptance_timeout(3),
            Action::AcceptanceExpired { redesignate: false }
        );
        let one = RedesignationPolicy { max_delegations: 1 };
        assert!(!one.may_redesignate(1));
        let zero = RedesignationPolicy { max_delegations: 0 };
        assert!(!zero.may_redesignate(1), "0 means one delegation, no more");
        assert_eq!(designation_method(0), SelectionMethod::CourtDesignation);
        assert_eq!(designation_method(2), SelectionMethod::Redesignation);

        let o = "invitedOrganizations/jinyaoshi";
        let other = "invitedOrganizations/xigang-street";
        assert_eq!(check_designee(o, &[]), Ok(()));
        assert_eq!(
            check_designee(o, &[(other, DelegationResult::Declined)]),
            Ok(())
        );
        assert_eq!(
            check_designee(o, &[(o, DelegationResult::Withdrawn)]),
            Ok(())
        );
        for r in [DelegationResult::Declined, DelegationResult::TimedOut] {
            assert_eq!(
                check_designee(o, &[(other, DelegationResult::Withdrawn), (o, r)]),
                Err(RuleError::OrganisationExcluded)
            );
        }
    }

    proptest! {
        /// Declines and timeouts in any order: the court designates again until the limit,
        /// then the case goes to registration; never more delegations than the limit.
        #[test]
        fn delegations_never_exceed_the_limit(
            max in 1u32..6,
            timeouts in proptest::collection::vec(any::<bool>(), 1..12),
        ) {
            let policy = RedesignationPolicy { max_delegations: max };
            let mut s = S::AwaitingDesignation;
            let mut delegations = 0u32;
            for timeout in timeouts {
                if s != S::AwaitingDesignation {
                    break;
                }
                s = next(s, Action::Designate { choice_waived: false }).expect("designate");
                delegations += 1;
                let a = if timeout {
                    policy.on_acceptance_timeout(delegations)
                } else {
                    policy.on_decline(delegations)
                };
                s = next(s, a).expect("decline or timeout");
                prop_assert!(delegations <= max);
                prop_assert_eq!(s == S::RegistrationPending, delegations == max);
            }
        }
    }

    #[test]
    fn every_ending_reason_has_exactly_one_route_outcome() {
        let route = route();
        assert_eq!(check_route_outcomes(&route), Ok(()));
        let mut codes: Vec<&str> = END_REASONS
            .iter()
            .filter_map(|r| outcome_code(*r))
            .collect();
        assert_eq!(codes.len(), 8);
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 8, "two reasons share a code");
        for r in END_REASONS {
            let code = outcome_code(r).expect("mapped");
            assert_eq!(end_reason_for_outcome(code), Some(r));
            assert!(
                route.feedback_outcomes.iter().any(|o| o.code == code),
                "{code} not on the route"
            );
        }
        assert_eq!(outcome_code(EndReason::Unspecified), None);
        assert_eq!(end_reason_for_outcome("bogus_code"), None);
        assert_eq!(end_kind(EndReason::Unspecified), None);
    }

    #[test]
    fn a_route_with_missing_or_extra_outcomes_is_refused() {
        let mut missing = route();
        missing
            .feedback_outcomes
            .retain(|o| o.code != "party_refused_to_sign");
        let e = check_route_outcomes(&missing).expect_err("refused");
        assert_eq!(e.reason().as_str(), "ROUTE_MISCONFIGURED");
        assert!(e.to_string().contains("party_refused_to_sign"));

        let mut extra = route();
        extra.feedback_outcomes.push(ReasonCode {
            code: "agreement_reached_partly".into(),
            description: String::new(),
        });
        assert!(check_route_outcomes(&extra).is_err());
    }

    #[test]
    fn ending_reasons_drive_the_lifecycle() {
        for r in END_REASONS {
            let kind = end_kind(r).expect("kind");
            let to = next(S::InMediation, Action::End(kind)).expect("allowed in mediation");
            let expected = match r {
                EndReason::Agreement => S::AgreementFiled,
                EndReason::SettledAndWithdrawn => S::Withdrawn,
                _ => S::RegistrationPending,
            };
            assert_eq!(to, expected, "{r:?}");
            assert_eq!(
                return_cause(S::InMediation, r).is_some(),
                to == S::RegistrationPending,
                "{r:?}"
            );
        }
        // No agreement before the parties were even reached.
        assert_eq!(next(S::Contacting, Action::End(EndKind::Agreement)), None);
    }

    #[test]
    fn return_causes() {
        use EndReason as R;
        let table = [
            (
                S::Contacting,
                R::Unreachable,
                Some(ReturnCause::ContactFailed),
            ),
            (
                S::Contacting,
                R::PartyRefusesToContinue,
                Some(ReturnCause::ContactFailed),
            ),
            (S::Contacting, R::Other, Some(ReturnCause::MediationFailed)),
            (
                S::InMediation,
                R::Unreachable,
                Some(ReturnCause::MediationFailed),
            ),
            (
                S::InMediation,
                R::GapTooLarge,
                Some(ReturnCause::MediationFailed),
            ),
            (
                S::InMediation,
                R::PartyRefusesToSign,
                Some(ReturnCause::MediationFailed),
            ),
            (
                S::InMediation,
                R::PeriodExpired,
                Some(ReturnCause::PeriodExpired),
            ),
            (S::InMediation, R::Agreement, None),
            (S::Contacting, R::SettledAndWithdrawn, None),
            (S::InMediation, R::Unspecified, None),
        ];
        for (s, r, expected) in table {
            assert_eq!(return_cause(s, r), expected, "{s:?} {r:?}");
        }
    }

    #[test]
    fn next_steps_after_a_filed_agreement() {
        let mut ends = Vec::new();
        for step in OFFERED_NEXT_STEPS {
            let a = next_step_action(step).expect("action");
            let to = next(S::AgreementFiled, a).expect("allowed after filing");
            assert!(is_terminal(to), "{step:?}");
            assert!(!ends.contains(&to), "{step:?} shares an end state");
            ends.push(to);
            // Only after filing.
            assert_eq!(next(S::InMediation, a), None);
        }
        assert_eq!(next_step_action(NextStep::Unspecified), None);
    }

    #[test]
    fn refusals_are_reasoned_rulings() {
        assert!(check_refusal("不符合起诉条件：被告不明确", true).is_empty());
        let errs = check_refusal("  ", false);
        let fields: Vec<&str> = errs.iter().map(field_of).collect();
        assert_eq!(fields, ["reason", "ruling"]);
        assert_eq!(check_refusal(&"理".repeat(2001), true).len(), 1);
    }

    #[test]
    fn extensions_need_every_party_and_stay_within_the_route_cap() {
        let rule = mediation_rule(&route()).expect("route agrees");
        let parties = ["p1", "d1"];
        let all = ["d1", "p1"];
        assert_eq!(check_extension(&parties, &all, 30, 0, &rule), Ok(()));
        assert_eq!(check_extension(&parties, &all, 10, 20, &rule), Ok(()));
        assert_eq!(
            check_extension(&parties, &all, 11, 20, &rule),
            Err(RuleError::ExtensionTooLong {
                requested: 11,
                already: 20,
                max: 30
            })
        );
        assert_eq!(
            check_extension(&parties, &["p1"], 5, 0, &rule),
            Err(RuleError::ConsentIncomplete)
        );
        assert_eq!(
            check_extension(&[], &[], 5, 0, &rule),
            Err(RuleError::ConsentIncomplete)
        );
        let e = check_extension(&parties, &all, 0, 0, &rule).expect_err("refused");
        assert_eq!(field_of(&e), "days");

        let capped = ClockRule {
            max_extension: 0,
            hard_cap: 45,
            ..rule.clone()
        };
        assert_eq!(check_extension(&parties, &all, 15, 0, &capped), Ok(()));
        assert_eq!(
            check_extension(&parties, &all, 16, 0, &capped),
            Err(RuleError::BeyondHardCap { hard_cap: 45 })
        );
        let fixed = ClockRule {
            extension_rule: ClockExtensionRule::NotExtendable as i32,
            ..rule
        };
        assert_eq!(
            check_extension(&parties, &all, 1, 0, &fixed),
            Err(RuleError::NotExtendable)
        );
    }

    #[test]
    fn deadlines_are_valid_clock_rules_with_the_statutory_lengths() {
        let route = route();
        let ds = deadlines(&route).expect("route agrees with the statute");
        let names: Vec<&str> = ds.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "joint_choice",
                "designation",
                "acceptance",
                "contact",
                "mediation",
                "registration"
            ]
        );
        for d in &ds {
            assert_eq!(validate_rule(&d.rule), Ok(()), "{}", d.name);
            assert!(!d.basis.is_empty());
        }
        let get = |n: &str| ds.iter().find(|d| d.name == n).expect(n).rule.clone();
        let unit_len = |r: &ClockRule| (r.unit, r.length);
        let wd = ClockUnit::WorkingDay as i32;
        let cd = ClockUnit::CalendarDay as i32;
        assert_eq!(unit_len(&get("joint_choice")), (wd, 2));
        assert_eq!(unit_len(&get("designation")), (wd, 3));
        assert_eq!(unit_len(&get("acceptance")), (wd, 3));
        assert_eq!(unit_len(&get("contact")), (wd, 3));
        assert_eq!(unit_len(&get("mediation")), (cd, 30));
        assert_eq!(unit_len(&get("registration")), (cd, 7));
        // The router runs the acceptance and mediation clocks: they are the route's.
        assert_eq!(Some(get("acceptance")), route.acceptance_clock);
        assert_eq!(Some(get("mediation")), route.feedback_clock);
        let m = get("mediation");
        assert_eq!(
            (m.extension_rule, m.max_extension, m.hard_cap),
            (ClockExtensionRule::PartyConsent as i32, 30, 60)
        );
        assert!(m.pausable_reasons.iter().any(|r| r.code == PAUSE_APPRAISAL));
        for n in ["joint_choice", "designation", "contact", "registration"] {
            assert_eq!(
                get(n).extension_rule,
                ClockExtensionRule::NotExtendable as i32,
                "{n}"
            );
            assert!(get(n).pausable_reasons.is_empty(), "{n}");
        }
    }

    #[test]
    fn each_expiry_is_allowed_where_its_clock_runs_and_does_what_the_rule_says() {
        let ds = deadlines(&route()).expect("deadlines");
        for d in &ds {
            for &s in d.runs_in {
                for redesignate in [false, true] {
                    let a = d.expiry.action(redesignate);
                    let to =
                        next(s, a).unwrap_or_else(|| panic!("{} expiry refused in {s:?}", d.name));
                    let notify = d.rule.expiry_action == ClockExpiryAction::NotifyOnly as i32;
                    let left = !d.runs_in.contains(&to);
                    // NOTIFY_ONLY keeps the state, except that the joint choice lapsing hands
                    // over to the court's designation (its own deadline).
                    if d.expiry == Expiry::JointChoice {
                        assert_eq!(to, S::AwaitingDesignation);
                    } else {
                        assert_eq!(notify, to == s, "{} in {s:?}", d.name);
                        assert_eq!(!notify, left, "{} in {s:?}", d.name);
                    }
                }
            }
        }
        let running: Vec<S> = ALL_STATES
            .into_iter()
            .filter(|s| ds.iter().any(|d| d.runs_in.contains(s)))
            .collect();
        assert_eq!(
            running,
            [
                S::AwaitingJointChoice,
                S::AwaitingDesignation,
                S::Delegated,
                S::Contacting,
                S::InMediation,
                S::Suspended,
                S::RegistrationPending
            ]
        );
    }

    #[test]
    fn transitions_start_and_stop_the_right_clocks() {
        let ds = deadlines(&route()).expect("deadlines");
        let ch = |from, to| clock_changes(&ds, from, to);
        let none: Vec<&str> = Vec::new();
        assert_eq!(
            ch(S::ConsentPending, S::AwaitingJointChoice),
            (vec!["joint_choice"], none.clone())
        );
        assert_eq!(
            ch(S::ConsentPending, S::RegistrationPending),
            (vec!["registration"], none.clone())
        );
        assert_eq!(
            ch(S::AwaitingJointChoice, S::Delegated),
            (vec!["acceptance"], vec!["joint_choice"])
        );
        assert_eq!(
            ch(S::Delegated, S::AwaitingDesignation),
            (vec!["designation"], vec!["acceptance"])
        );
        assert_eq!(
            ch(S::Delegated, S::Contacting),
            (vec!["contact", "mediation"], vec!["acceptance"])
        );
        assert_eq!(
            ch(S::Contacting, S::InMediation),
            (none.clone(), vec!["contact"])
        );
        assert_eq!(
            ch(S::InMediation, S::Suspended),
            (none.clone(), none.clone())
        );
        assert_eq!(
            ch(S::InMediation, S::RegistrationPending),
            (vec!["registration"], vec!["mediation"])
        );
        assert_eq!(
            ch(S::InMediation, S::AgreementFiled),
            (none.clone(), vec!["mediation"])
        );
        assert_eq!(
            ch(S::RegistrationPending, S::Registered),
            (none.clone(), vec!["registration"])
        );
        // Over the whole table: no transition starts and stops the same clock, and every
        // clock running in a terminal state's predecessor stops.
        for &s in &ALL_STATES {
            for &a in &ALL_ACTIONS {
                if let Some(to) = next(s, a) {
                    let (started, stopped) = ch(s, to);
                    assert!(started.iter().all(|n| !stopped.contains(n)));
                    if is_terminal(to) {
                        assert!(started.is_empty(), "{s:?} → {to:?} starts a clock");
                    }
                }
            }
        }
    }

    #[test]
    fn routes_that_disagree_with_the_statute_are_refused() {
        let base = route();
        let mut cases: Vec<(&str, Route)> = Vec::new();
        let mut r = base.clone();
        r.acceptance_clock = None;
        cases.push(("no acceptance clock", r));
        let mut r = base.clone();
        if let Some(c) = r.acceptance_clock.as_mut() {
            c.length = 5;
        }
        cases.push(("acceptance 5 days", r));
        let mut r = base.clone();
        if let Some(c) = r.acceptance_clock.as_mut() {
            c.expiry_action = ClockExpiryAction::Escalate as i32;
        }
        cases.push(("acceptance escalates", r));
        let mut r = base.clone();
        r.feedback_clock = None;
        cases.push(("no mediation clock", r));
        let mut r = base.clone();
        if let Some(c) = r.feedback_clock.as_mut() {
            c.unit = ClockUnit::WorkingDay as i32;
        }
        cases.push(("mediation in working days", r));
        let mut r = base.clone();
        if let Some(c) = r.feedback_clock.as_mut() {
            c.extension_rule = ClockExtensionRule::Approver as i32;
        }
        cases.push(("mediation extended by an approver", r));
        let mut r = base.clone();
        if let Some(c) = r.feedback_clock.as_mut() {
            c.pausable_reasons.clear();
        }
        cases.push(("no appraisal pause", r));
        let mut r = base.clone();
        if let Some(c) = r.feedback_clock.as_mut() {
            c.expiry_action = ClockExpiryAction::NotifyOnly as i32;
        }
        cases.push(("mediation expiry keeps the case", r));
        for (what, r) in cases {
            let e = deadlines(&r).expect_err(what);
            assert_eq!(e.reason().as_str(), "ROUTE_MISCONFIGURED", "{what}");
            assert!(!e.is_bad_input());
        }
    }

    #[test]
    fn automatic_redesignation_picks_another_active_specialist_with_the_lightest_load() {
        let neighbourhood = fengqiao_proto::common::DisputeCategory::Neighbourhood as i32;
        let other = fengqiao_proto::common::DisputeCategory::LabourWages as i32;
        let spec = [neighbourhood];
        let none: [i32; 0] = [];
        let c = |name, active, specialties, load| Candidate {
            name,
            active,
            specialties,
            load,
        };
        let roster = [
            c("invitedOrganizations/a", true, &spec[..], 0),
            c("invitedOrganizations/b", true, &spec[..], 2),
            c("invitedOrganizations/c", true, &none[..], 0),
            c("invitedOrganizations/d", false, &spec[..], 0),
        ];
        // The one that timed out is excluded (在线调解规则 Art 12); the inactive one too.
        let history = [("invitedOrganizations/a", DelegationResult::TimedOut)];
        assert_eq!(
            pick_designee(&roster, neighbourhood, &history),
            Some("invitedOrganizations/b")
        );
        // No specialist for the category: the lightest load.
        assert_eq!(
            pick_designee(&roster, other, &history),
            Some("invitedOrganizations/c")
        );
        let all_out = [
            ("invitedOrganizations/a", DelegationResult::TimedOut),
            ("invitedOrganizations/b", DelegationResult::Declined),
            ("invitedOrganizations/c", DelegationResult::Declined),
        ];
        assert_eq!(pick_designee(&roster, neighbourhood, &all_out), None);
        assert_eq!(pick_designee(&[], neighbourhood, &[]), None);
    }
}
