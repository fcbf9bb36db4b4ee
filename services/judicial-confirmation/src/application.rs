//! The application as the court keeps it, and the court's acts on it as plain functions:
//! each checks the lifecycle ([`crate::lifecycle::require`]) and the rules ([`crate::rules`]),
//! runs the clocks and returns the new record. No store, no network: the service persists
//! what these return, at the database's time (`now`, unix µs).

use fengqiao_clock::{Clock, HolidayCalendar};
use fengqiao_kit::time::to_timestamp;
use fengqiao_kit::{Error, FieldViolation, Reason};
use fengqiao_proto::common::{Actor, EvidenceRef, Party, ReasonCode};
use fengqiao_proto::judicialconfirmation::{
    ApplicationSource, ApplicationState as S, ConfirmationApplication, EnforcementHandoff,
    NonConfirmationReport, Objection, ObjectorKind, PackageItem, Ruling, RulingOutcome,
    SupplementRequest,
};

use crate::lifecycle::{Action, require};
use crate::rules;

/// What arrives with an application (from the committee's router transfer). Personal
/// information is in `parties` only.
#[derive(Debug, Clone, Default)]
pub struct Intake {
    /// Shared case id.
    pub case_id: String,
    /// The router transfer (`transfers/{transfer}`).
    pub transfer: String,
    /// The committee (`agencies/{agency}`).
    pub committee: String,
    /// The basic court where the committee sits (`agencies/{agency}`).
    pub committee_court: String,
    /// The delegating court for 委派 mediations.
    pub delegating_court: Option<String>,
    /// Where it comes from.
    pub source: ApplicationSource,
    /// Every party to the agreement.
    pub parties: Vec<Party>,
    /// The `party_id`s of those who applied.
    pub applicants: Vec<String>,
    /// The `party_id`s of parties acting through an agent.
    pub represented: Vec<String>,
    /// The agreement, with its digest.
    pub agreement: Option<EvidenceRef>,
    /// When the agreement took effect (unix µs).
    pub agreement_effective_at: i64,
    /// The Art 3 package.
    pub package: Vec<PackageItem>,
    /// For a pre-filing application (诉前调确): the court diversion case (`cases/{case}`)
    /// it comes from; then `transfer` is empty.
    pub pre_filing_case: String,
    /// When the committee submitted the application (unix µs; the router's time of the
    /// transfer): the 30-day period of 人民调解法 Art 33 is counted to here, not to the
    /// court's receipt. 0: at receipt.
    pub submitted_at: i64,
}

/// An application with its running clocks (the clocks are kept beside the protobuf, which
/// shows them as `ClockState`s).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The application as clients see it.
    pub application: ConfirmationApplication,
    /// The decision clocks: "acceptance", then "review".
    pub clocks: Vec<Clock>,
}

impl Record {
    /// The state.
    pub fn state(&self) -> S {
        S::try_from(self.application.state).unwrap_or_default()
    }

    fn require(&self, action: Action) -> Result<S, Error> {
        require(&self.application.name, self.state(), action)
    }

    fn running(&mut self) -> Option<&mut Clock> {
        self.clocks.iter_mut().find(|c| !c.is_stopped())
    }

    fn touch(&mut self, now: i64, state: S, cal: &HolidayCalendar) -> Result<(), Error> {
        self.application.state = state as i32;
        self.application.update_time = Some(to_timestamp(now));
        self.application.clocks = fengqiao_clock::states_at(&self.clocks, now, cal)?;
        self.application.overdue = self.clocks.iter().any(|c| c.is_overdue_at(now));
        Ok(())
    }

    fn stop_running(&mut self, now: i64) -> Result<(), Error> {
        if let Some(c) = self.running() {
            c.stop(now)?;
        }
        Ok(())
    }
}

/// Takes in an application addressed to `court` at `now`: refused when not joint (人民调解法
/// Art 33), out of time (Art 33), at the wrong court (法释〔2011〕5号 Art 2), or without the
/// package of Art 3 or the agreement's digest. RECEIVED, with the 3-day acceptance clock
/// running (Art 4).
pub fn receive(
    name: &str,
    court: &str,
    intake: &Intake,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    if intake.source == ApplicationSource::PreFiling {
        // 诉前调确: handed over by the court's own court diversion service; 法释〔2011〕5号
        // Art 2: for a 委派 mediation the competent court is the delegating court itself.
        if intake.pre_filing_case.is_empty() || !intake.transfer.is_empty() {
            return Err(Error::Invalid(vec![FieldViolation::new(
                "pre_filing_case",
                "a pre-filing application comes from a court diversion case, not a transfer",
            )]));
        }
        if intake.delegating_court.as_deref() != Some(court) {
            return Err(Error::Refused(
                Reason::WrongCourt,
                "法释〔2011〕5号 Art 2: a pre-filing agreement is confirmed by the delegating court"
                    .into(),
            ));
        }
    }
    rules::check_digest("agreement", intake.agreement.as_ref())?;
    let ids: Vec<&str> = intake.parties.iter().map(|p| p.party_id.as_str()).collect();
    let applicants: Vec<&str> = intake.applicants.iter().map(String::as_str).collect();
    rules::check_joint(&ids, &applicants)?;
    // 人民调解法 Art 33: the committee's submission decides, not the court's receipt.
    let applied_at = if intake.submitted_at > 0 {
        intake.submitted_at
    } else {
        now
    };
    rules::check_application_period(intake.agreement_effective_at, applied_at, cal)?;
    rules::check_court(
        court,
        &intake.committee_court,
        intake.delegating_court.as_deref(),
    )?;
    let represented: Vec<&str> = intake.represented.iter().map(String::as_str).collect();
    rules::check_package(&intake.parties, &represented, &intake.package)?;
    let clock = Clock::start("acceptance", &rules::acceptance_rule(), now, cal)?;
    let agency = |n: &str| fengqiao_proto::common::AgencyRef {
        name: n.into(),
        ..Default::default()
    };
    let mut record = Record {
        application: ConfirmationApplication {
            name: name.into(),
            case_id: intake.case_id.clone(),
            court: Some(agency(court)),
            committee: Some(agency(&intake.committee)),
            transfer: intake.transfer.clone(),
            pre_filing_case: intake.pre_filing_case.clone(),
            source: intake.source as i32,
            parties: intake.parties.clone(),
            agreement: intake.agreement.clone(),
            agreement_effective_time: Some(to_timestamp(intake.agreement_effective_at)),
            package: intake.package.clone(),
            create_time: Some(to_timestamp(now)),
            ..Default::default()
        },
        clocks: vec![clock],
    };
    record.touch(now, S::Received, cal)?;
    Ok(record)
}

/// Accepts with the court's 调确 number (2011 rules Art 4): RECEIVED → UNDER_REVIEW; the
/// acceptance clock stops and the 15-day review clock starts (Art 5). Refused while
/// supplementary materials are awaited.
pub fn accept(r: &Record, number: &str, now: i64, cal: &HolidayCalendar) -> Result<Record, Error> {
    let to = r.require(Action::Accept)?;
    let source = ApplicationSource::try_from(r.application.source).unwrap_or_default();
    rules::check_confirmation_number(number, source)?;
    awaiting_nothing(r)?;
    let mut r = r.clone();
    r.stop_running(now)?;
    r.clocks
        .push(Clock::start("review", &rules::review_rule(), now, cal)?);
    r.application.confirmation_number = number.trim().into();
    r.touch(now, to, cal)?;
    Ok(r)
}

fn awaiting_nothing(r: &Record) -> Result<(), Error> {
    if r.application
        .supplements
        .iter()
        .any(|s| s.receive_time.is_none())
    {
        return Err(Error::Refused(
            Reason::ClockPaused,
            "supplementary materials are awaited; record them first".into(),
        ));
    }
    Ok(())
}

/// Does not accept, on a ground of 民诉法解释 Art 355: RECEIVED → NOT_ACCEPTED.
pub fn reject(r: &Record, ground: &str, now: i64, cal: &HolidayCalendar) -> Result<Record, Error> {
    let to = r.require(Action::Reject)?;
    let g = rules::not_accepted_ground("ground_code", ground)?;
    let mut r = r.clone();
    r.stop_running(now)?;
    r.application.rejection = Some(g.to_proto());
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Asks for supplementary materials; the running clock pauses (2011 rules Art 6).
pub fn request_supplement(
    r: &Record,
    description: &str,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::RequestSupplement)?;
    if description.trim().is_empty() {
        return Err(Error::Invalid(vec![FieldViolation::new(
            "description",
            "required",
        )]));
    }
    let mut r = r.clone();
    let clock = r.running().ok_or_else(|| {
        Error::Refused(
            Reason::ClockNotRunning,
            "no decision clock is running".into(),
        )
    })?;
    clock.pause(now, rules::PAUSE_SUPPLEMENT)?;
    r.application.supplements.push(SupplementRequest {
        description: description.trim().into(),
        request_time: Some(to_timestamp(now)),
        receive_time: None,
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Records the materials received; the clock resumes with the paused days not counted.
pub fn receive_supplement(r: &Record, now: i64, cal: &HolidayCalendar) -> Result<Record, Error> {
    let to = r.require(Action::ReceiveSupplement)?;
    let mut r = r.clone();
    let pending = r
        .application
        .supplements
        .iter_mut()
        .rev()
        .find(|s| s.receive_time.is_none())
        .ok_or_else(|| {
            Error::Refused(
                Reason::ClockNotPaused,
                "no supplementary materials are awaited".into(),
            )
        })?;
    pending.receive_time = Some(to_timestamp(now));
    if let Some(c) = r.running() {
        c.resume(now, cal)?;
    }
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Extends the review by `days` with the court president's approval (2011 rules Art 5):
/// at most 10 in total, never past the 30 days of 民事诉讼法 Art 187. `roles` are the
/// caller's.
pub fn extend(
    r: &Record,
    days: u32,
    roles: &[String],
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::ExtendReview)?;
    let mut r = r.clone();
    let clock = r.running().filter(|c| c.name == "review").ok_or_else(|| {
        Error::Refused(
            Reason::ClockNotRunning,
            "the review clock is not running".into(),
        )
    })?;
    if clock.is_due(now) {
        clock.mark_expired(now)?;
    }
    clock.extend(days, roles, false, cal)?;
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Rules on the application: confirmed (民事诉讼法 Art 206) with no ground, or dismissed on a
/// ground of 民诉法解释 Art 358. No fee (2011 rules Art 11). The review clock stops.
pub fn rule(
    r: &Record,
    outcome: RulingOutcome,
    ground: &str,
    document: Option<&EvidenceRef>,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let (action, ground) = match outcome {
        RulingOutcome::Confirmed if ground.is_empty() => (Action::Confirm, None),
        RulingOutcome::Confirmed => {
            return Err(Error::Invalid(vec![FieldViolation::new(
                "ground_code",
                "a confirmation has no ground",
            )]));
        }
        RulingOutcome::Dismissed => (
            Action::Dismiss,
            Some(rules::dismissal_ground("ground_code", ground)?),
        ),
        RulingOutcome::Unspecified => {
            return Err(Error::Invalid(vec![FieldViolation::new(
                "outcome", "required",
            )]));
        }
    };
    let to = r.require(action)?;
    rules::check_digest("document", document)?;
    awaiting_nothing(r)?;
    let mut r = r.clone();
    r.stop_running(now)?;
    r.application.ruling = Some(Ruling {
        outcome: outcome as i32,
        ground: ground.map(|g| g.to_proto()),
        document: document.cloned(),
        rule_time: Some(to_timestamp(now)),
        fee: Some(rules::fee()),
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Records the parties' withdrawal before the ruling: → WITHDRAWN, the clock stops.
pub fn withdraw(r: &Record, now: i64, cal: &HolidayCalendar) -> Result<Record, Error> {
    let to = r.require(Action::Withdraw)?;
    let mut r = r.clone();
    r.stop_running(now)?;
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Records an objection within its window (民诉法解释 Art 372): a party 15 days from
/// receiving the ruling, an interested person 6 months from knowing of it.
pub fn object(
    r: &Record,
    objector: ObjectorKind,
    known_at: i64,
    grounds: &str,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::Object)?;
    if grounds.trim().is_empty() {
        return Err(Error::Invalid(vec![FieldViolation::new(
            "grounds", "required",
        )]));
    }
    rules::check_objection(objector, known_at, now, cal)?;
    let mut r = r.clone();
    r.application.objections.push(Objection {
        objector: objector as i32,
        known_time: Some(to_timestamp(known_at)),
        file_time: Some(to_timestamp(now)),
        grounds: grounds.trim().into(),
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Records a party's application to enforce the confirmed agreement and its handoff to the
/// court's enforcement division (申请执行, 民事诉讼法 Art 206 ¶1: if a party refuses to perform
/// or does not perform it in full, the other may apply to the court for enforcement):
/// CONFIRMED only, by a party to the agreement, with the application's digest; once per
/// party (a second is ALREADY_EXISTS). A record, not an enforcement system.
pub fn hand_off_for_enforcement(
    r: &Record,
    party_id: &str,
    document: Option<&EvidenceRef>,
    reference: &str,
    actor: Actor,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::HandOffForEnforcement)?;
    let party_id = party_id.trim();
    if !r.application.parties.iter().any(|p| p.party_id == party_id) {
        return Err(Error::Invalid(vec![FieldViolation::new(
            "applicant_party_id",
            "must be a party to the agreement",
        )]));
    }
    rules::check_digest("document", document)?;
    fengqiao_kit::validate::plain_text("enforcement_reference", reference.trim(), 100)?;
    if r.application
        .enforcement_handoffs
        .iter()
        .any(|h| h.applicant_party_id == party_id)
    {
        return Err(Error::Refused(
            Reason::AlreadyExists,
            "this party's application for enforcement is already handed off".into(),
        ));
    }
    let mut r = r.clone();
    r.application.enforcement_handoffs.push(EnforcementHandoff {
        applicant_party_id: party_id.into(),
        document: document.cloned(),
        enforcement_reference: reference.trim().into(),
        recorded_by: Some(actor),
        handoff_time: Some(to_timestamp(now)),
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Records the report of a non-confirmation (not accepted or dismissed) to the justice
/// bureau `bureau` and the committee (法释〔2011〕5号 Art 12; [`rules::report_non_confirmation`]),
/// with the report's digest; once per application (a second is ALREADY_EXISTS).
pub fn report_non_confirmation(
    r: &Record,
    bureau: &str,
    document: Option<&EvidenceRef>,
    note: &str,
    actor: Actor,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<Record, Error> {
    let to = r.require(Action::ReportNonConfirmation)?;
    fengqiao_kit::validate::parse_name("justice_bureau", "agencies", bureau)?;
    rules::check_digest("document", document)?;
    fengqiao_kit::validate::plain_text("note", note.trim(), 2000)?;
    if r.application.non_confirmation_report.is_some() {
        return Err(Error::Refused(
            Reason::AlreadyExists,
            "the non-confirmation is already reported".into(),
        ));
    }
    let agency = |n: &str| fengqiao_proto::common::AgencyRef {
        name: n.into(),
        ..Default::default()
    };
    let mut recipients = vec![agency(bureau)];
    if let Some(c) = r
        .application
        .committee
        .as_ref()
        .filter(|c| !c.name.is_empty())
    {
        recipients.push(agency(&c.name));
    }
    let mut r = r.clone();
    r.application.non_confirmation_report = Some(NonConfirmationReport {
        recipients,
        document: document.cloned(),
        note: note.trim().into(),
        reported_by: Some(actor),
        report_time: Some(to_timestamp(now)),
    });
    r.touch(now, to, cal)?;
    Ok(r)
}

/// Marks the running clock expired once due (notify only: the state does not change). Returns
/// whether anything changed.
pub fn sweep(r: &mut Record, now: i64, cal: &HolidayCalendar) -> Result<bool, Error> {
    let state = r.state();
    let Some(c) = r.running() else {
        return Ok(false);
    };
    if c.expired || !c.is_due(now) {
        return Ok(false);
    }
    let action = if c.name == "acceptance" {
        Action::AcceptanceOverdue
    } else {
        Action::ReviewOverdue
    };
    crate::lifecycle::require("application", state, action)?;
    c.mark_expired(now)?;
    r.touch(now, state, cal)?;
    Ok(true)
}

/// The ground shown to the committee for NOT_ACCEPTED or DISMISSED, if any.
pub fn ground(r: &Record) -> Option<&ReasonCode> {
    r.application
        .rejection
        .as_ref()
        .or_else(|| r.application.ruling.as_ref()?.ground.as_ref())
}

#[cfg(test)]
pub(crate) mod tests;
