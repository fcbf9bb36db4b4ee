//! The rules of 司法确认 as plain functions and tables, each citing its source. No network,
//! no store: the service calls these and persists what they decide.
//!
//! Sources: 人民调解法 Art 33; 民事诉讼法 (CPL) Art 85, 187, 205, 206; 民诉法解释 Art 355, 358,
//! 372; 最高人民法院关于人民调解协议司法确认程序的若干规定 (法释〔2011〕5号, "2011 rules")
//! Art 2–6, 11, 12.

use chrono::{DateTime, Days, FixedOffset, Months, NaiveDate, TimeZone};
use fengqiao_clock::{ClockUnit as Unit, HolidayCalendar, add_duration};
use fengqiao_kit::{Error, Reason};
use fengqiao_proto::common::{
    ClockExpiryAction, ClockExtensionRule, ClockRule, ClockUnit, EvidenceRef, Money, Party,
    ReasonCode,
};
use fengqiao_proto::judicialconfirmation::{
    ApplicationSource, ApplicationState as S, ObjectorKind, PackageItem, PackageItemKind,
};

/// The router route applications travel on (committee → court).
pub const ROUTE_ID: &str = "mediation-to-court-confirmation";

/// Days from the agreement taking effect within which the parties apply jointly
/// (人民调解法 Art 33).
pub const APPLICATION_DAYS: u32 = 30;
/// Days within which the court decides whether to accept (2011 rules Art 4).
pub const ACCEPTANCE_DAYS: u32 = 3;
/// Days from acceptance within which the court rules (2011 rules Art 5).
pub const REVIEW_DAYS: u32 = 15;
/// Days the court president may add to the review (2011 rules Art 5).
pub const REVIEW_EXTENSION_DAYS: u32 = 10;
/// The special procedure's limit from acceptance (民事诉讼法 Art 187: 立案之日起三十日内审结).
pub const SPECIAL_PROCEDURE_DAYS: u32 = 30;
/// Days from receiving the ruling within which a party objects (民诉法解释 Art 372).
pub const PARTY_OBJECTION_DAYS: u32 = 15;
/// Months from knowing of the ruling within which an interested person objects
/// (民诉法解释 Art 372).
pub const INTERESTED_PERSON_OBJECTION_MONTHS: u32 = 6;
/// The role that approves a review extension (2011 rules Art 5: 经本院院长批准).
pub const PRESIDENT_ROLE: &str = "court_president";
/// The role that rules and refuses acceptance.
pub const JUDGE_ROLE: &str = "judge";
/// The role that records the court's clerical acts.
pub const CLERK_ROLE: &str = "court_clerk";
/// The pause reason of the decision clocks (2011 rules Art 6: 补充陈述或者补充证明材料).
pub const PAUSE_SUPPLEMENT: &str = "supplementary_materials";

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn refused(reason: Reason, msg: impl Into<String>) -> Error {
    Error::Refused(reason, msg.into())
}

fn invalid(field: &str, description: &str) -> Error {
    Error::Invalid(vec![fengqiao_kit::FieldViolation::new(field, description)])
}

fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

fn cst_date(micros: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_micros(micros).map(|t| t.with_timezone(&cst()).date_naive())
}

fn end_of_cst_day(date: NaiveDate) -> Option<i64> {
    let next = date.checked_add_days(Days::new(1))?;
    cst()
        .from_local_datetime(&next.and_hms_opt(0, 0, 0)?)
        .single()
        .map(|t| t.timestamp_micros())
}

// ---------------------------------------------------------------------------
// Application (申请)
// ---------------------------------------------------------------------------

/// The last instant of the application period: 24:00 CST of the 30th day after the day the
/// agreement took effect, moved to the next working day when that day is a holiday
/// (人民调解法 Art 33; 民事诉讼法 Art 85: counted from the next day, a period ending on a
/// holiday ends on the first working day after it).
pub fn application_deadline(effective_at: i64, cal: &HolidayCalendar) -> i64 {
    add_duration(effective_at, Unit::CalendarDay, APPLICATION_DAYS, cal)
}

/// Refuses an application made after the 30 days of 人民调解法 Art 33, naming the article.
pub fn check_application_period(
    effective_at: i64,
    applied_at: i64,
    cal: &HolidayCalendar,
) -> Result<(), Error> {
    if applied_at < effective_at {
        return Err(invalid(
            "agreement_effective_time",
            "the application predates the agreement taking effect",
        ));
    }
    if applied_at >= application_deadline(effective_at, cal) {
        return Err(refused(
            Reason::ApplicationPeriodLapsed,
            "the joint application must be made within 30 days of the agreement taking \
             effect (人民调解法 Art 33)",
        ));
    }
    Ok(())
}

/// Refuses an application not made by every party to the agreement (人民调解法 Art 33:
/// 双方当事人…共同向人民法院申请; 民事诉讼法 Art 205): `agreement_parties` are the parties'
/// ids on the agreement, `applicants` the ids of those who applied.
pub fn check_joint(agreement_parties: &[&str], applicants: &[&str]) -> Result<(), Error> {
    if agreement_parties.len() < 2 {
        return Err(invalid(
            "parties",
            "an agreement to confirm has at least two parties",
        ));
    }
    let missing = agreement_parties
        .iter()
        .filter(|p| !applicants.contains(p))
        .count();
    if missing > 0 {
        return Err(refused(
            Reason::NotJointApplication,
            format!(
                "{missing} of {} parties to the agreement did not apply; judicial confirmation \
                 needs a joint application (人民调解法 Art 33; 民事诉讼法 Art 205)",
                agreement_parties.len()
            ),
        ));
    }
    Ok(())
}

/// The court competent for an application (2011 rules Art 2; 民事诉讼法 Art 205): for a
/// delegated (委派) mediation the delegating court, otherwise the basic court where the
/// committee sits. Agencies are router names (`agencies/{agency}`).
pub fn competent_court<'a>(committee_court: &'a str, delegating_court: Option<&'a str>) -> &'a str {
    delegating_court
        .filter(|c| !c.is_empty())
        .unwrap_or(committee_court)
}

/// Refuses an application addressed to a court that is not competent (2011 rules Art 2).
pub fn check_court(
    receiving_court: &str,
    committee_court: &str,
    delegating_court: Option<&str>,
) -> Result<(), Error> {
    if receiving_court != competent_court(committee_court, delegating_court) {
        return Err(refused(
            Reason::WrongCourt,
            "the application goes to the delegating court, or else the basic court where the \
             mediation committee sits (法释〔2011〕5号 Art 2)",
        ));
    }
    Ok(())
}

/// Refuses a document reference without a lower-case hex SHA-256 digest: the court reviews
/// exactly what was signed.
pub fn check_digest(field: &str, doc: Option<&EvidenceRef>) -> Result<(), Error> {
    let ok = doc.is_some_and(|d| {
        d.sha256.len() == 64
            && d.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "a document with its lower-case hex SHA-256 content digest is required",
        ))
    }
}

/// Checks the application package of 2011 rules Art 3: the joint application, and for every
/// party an identity proof and a service address confirmation (送达地址、电话); an
/// authorisation for each party acting through an agent (`represented`). Every document
/// carries its digest.
pub fn check_package(
    parties: &[Party],
    represented: &[&str],
    package: &[PackageItem],
) -> Result<(), Error> {
    for (i, item) in package.iter().enumerate() {
        check_digest(&format!("package[{i}].document"), item.document.as_ref())?;
    }
    let has = |kind: PackageItemKind, party: Option<&str>| {
        package
            .iter()
            .any(|it| it.kind == kind as i32 && party.is_none_or(|p| it.party_id == p))
    };
    if !has(PackageItemKind::Application, None) {
        return Err(invalid(
            "package",
            "the joint application (申请书) is missing (法释〔2011〕5号 Art 3)",
        ));
    }
    for (i, p) in parties.iter().enumerate() {
        let id = p.party_id.as_str();
        if !has(PackageItemKind::IdentityProof, Some(id)) {
            return Err(invalid(
                &format!("parties[{i}]"),
                "the party's identity proof is missing (法释〔2011〕5号 Art 3)",
            ));
        }
        if !has(PackageItemKind::ServiceAddress, Some(id)) {
            return Err(invalid(
                &format!("parties[{i}]"),
                "the party's service address and phone are missing (法释〔2011〕5号 Art 3)",
            ));
        }
        if represented.contains(&id) && !has(PackageItemKind::Authorization, Some(id)) {
            return Err(invalid(
                &format!("parties[{i}]"),
                "the agent's authorisation is missing (法释〔2011〕5号 Art 3)",
            ));
        }
    }
    Ok(())
}

/// Checks the court's number on acceptance: `(YYYY)…调确N号`; 诉前调确 exactly for pre-filing
/// applications (the 2022 case-type statistics rule: 民特 for people's mediation, 诉前调确 for
/// 诉前调解 agreements).
pub fn check_confirmation_number(number: &str, source: ApplicationSource) -> Result<(), Error> {
    const FIELD: &str = "confirmation_number";
    let n = number.trim();
    let open = n.starts_with('(') || n.starts_with('（');
    if n.is_empty() || n.chars().count() > 64 || !open || !n.ends_with('号') {
        return Err(invalid(
            FIELD,
            "expected a court number like (2026)辽0203民特调确12号",
        ));
    }
    let pre_filing = n.contains("诉前调确");
    match source {
        ApplicationSource::PreFiling if !pre_filing => Err(invalid(
            FIELD,
            "a pre-filing agreement takes a 诉前调确 number",
        )),
        ApplicationSource::PeoplesMediation if pre_filing || !n.contains("调确") => Err(invalid(
            FIELD,
            "a people's mediation agreement takes a 调确 number, not 诉前调确",
        )),
        ApplicationSource::Unspecified => Err(invalid("source", "unknown application source")),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Grounds (理由)
// ---------------------------------------------------------------------------

/// A code with its description and the article it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ground {
    /// Stable code (the route's decline reason code for Art 355).
    pub code: &'static str,
    /// Description.
    pub description: &'static str,
    /// Source.
    pub basis: &'static str,
}

impl Ground {
    /// As a protobuf reason code.
    pub fn to_proto(self) -> ReasonCode {
        ReasonCode {
            code: self.code.into(),
            description: self.description.into(),
        }
    }
}

/// The grounds of non-acceptance (不予受理): 民诉法解释 Art 355 (1)–(5), and an application
/// that is not joint or out of time (人民调解法 Art 33). The codes are the route's
/// `decline_reasons`.
pub const NOT_ACCEPTED_GROUNDS: [Ground; 6] = [
    Ground {
        code: "outside_court_scope",
        description: "不属于人民法院受理范围",
        basis: "民诉法解释 Art 355(1)",
    },
    Ground {
        code: "not_competent_court",
        description: "不属于收到申请的人民法院管辖",
        basis: "民诉法解释 Art 355(2)",
    },
    Ground {
        code: "personal_status_matter",
        description: "申请确认婚姻关系、亲子关系、收养关系等身份关系无效、有效或者解除",
        basis: "民诉法解释 Art 355(3)",
    },
    Ground {
        code: "other_special_procedure",
        description: "涉及适用其他特别程序、公示催告程序、破产程序审理",
        basis: "民诉法解释 Art 355(4)",
    },
    Ground {
        code: "ownership_confirmation",
        description: "调解协议内容涉及物权、知识产权确权",
        basis: "民诉法解释 Art 355(5)",
    },
    Ground {
        code: "not_joint_application",
        description: "未由双方当事人共同申请或已超过三十日申请期限",
        basis: "人民调解法 Art 33",
    },
];

/// The grounds of dismissal (裁定驳回申请): 民诉法解释 Art 358 (1)–(6).
pub const DISMISSAL_GROUNDS: [Ground; 6] = [
    Ground {
        code: "violates_mandatory_law",
        description: "违反法律强制性规定",
        basis: "民诉法解释 Art 358(1)",
    },
    Ground {
        code: "harms_public_or_third_party",
        description: "损害国家利益、社会公共利益、他人合法权益",
        basis: "民诉法解释 Art 358(2)",
    },
    Ground {
        code: "against_public_order",
        description: "违背公序良俗",
        basis: "民诉法解释 Art 358(3)",
    },
    Ground {
        code: "not_voluntary",
        description: "违反自愿原则",
        basis: "民诉法解释 Art 358(4)",
    },
    Ground {
        code: "content_unclear",
        description: "内容不明确",
        basis: "民诉法解释 Art 358(5)",
    },
    Ground {
        code: "other_not_confirmable",
        description: "其他不能进行司法确认的情形",
        basis: "民诉法解释 Art 358(6)",
    },
];

/// The Art 355 ground with this code, or INVALID_ARGUMENT on `field`.
pub fn not_accepted_ground(field: &str, code: &str) -> Result<Ground, Error> {
    NOT_ACCEPTED_GROUNDS
        .iter()
        .find(|g| g.code == code)
        .copied()
        .ok_or_else(|| invalid(field, "not a ground of 民诉法解释 Art 355"))
}

/// The Art 358 ground with this code, or INVALID_ARGUMENT on `field`.
pub fn dismissal_ground(field: &str, code: &str) -> Result<Ground, Error> {
    DISMISSAL_GROUNDS
        .iter()
        .find(|g| g.code == code)
        .copied()
        .ok_or_else(|| invalid(field, "not a ground of 民诉法解释 Art 358"))
}

/// The route's feedback outcome code for a final state (the route's `feedback_outcomes`:
/// confirmed_valid, dismissed, withdrawn); `None` for a state that sends no feedback.
pub fn route_outcome(state: S) -> Option<&'static str> {
    match state {
        S::Confirmed => Some("confirmed_valid"),
        S::Dismissed => Some("dismissed"),
        S::Withdrawn => Some("withdrawn"),
        _ => None,
    }
}

/// The court fee for a judicial confirmation: none (2011 rules Art 11: 不收取费用).
pub fn fee() -> Money {
    Money {
        currency_code: "CNY".into(),
        ..Money::default()
    }
}

/// Who is told of a non-confirmation besides the parties (2011 rules Art 12: the court may
/// inform the committee and the judicial administration): for NOT_ACCEPTED and DISMISSED.
pub fn report_non_confirmation(state: S) -> bool {
    matches!(state, S::NotAccepted | S::Dismissed)
}

// ---------------------------------------------------------------------------
// Clocks (期限)
// ---------------------------------------------------------------------------

fn pausable() -> Vec<ReasonCode> {
    vec![ReasonCode {
        code: PAUSE_SUPPLEMENT.into(),
        description: "补充陈述或者补充证明材料（法释〔2011〕5号第六条）".into(),
    }]
}

/// The acceptance clock: 3 calendar days from receipt (2011 rules Art 4), not extendable,
/// notify only (the route's: returning the application would cost the parties their 30 days),
/// paused while supplementary materials are awaited.
pub fn acceptance_rule() -> ClockRule {
    ClockRule {
        unit: ClockUnit::CalendarDay as i32,
        length: ACCEPTANCE_DAYS,
        pausable_reasons: pausable(),
        extension_rule: ClockExtensionRule::NotExtendable as i32,
        expiry_action: ClockExpiryAction::NotifyOnly as i32,
        ..ClockRule::default()
    }
}

/// The review clock: 15 calendar days from acceptance, +10 with the court president's
/// approval (2011 rules Art 5), capped at the special procedure's 30 days (民事诉讼法
/// Art 187), notify only, paused while supplementary materials are awaited (time not
/// counted, by the clock engine's pause rule).
pub fn review_rule() -> ClockRule {
    ClockRule {
        unit: ClockUnit::CalendarDay as i32,
        length: REVIEW_DAYS,
        pausable_reasons: pausable(),
        extension_rule: ClockExtensionRule::Approver as i32,
        extension_approver_role: PRESIDENT_ROLE.into(),
        max_extension: REVIEW_EXTENSION_DAYS,
        hard_cap: SPECIAL_PROCEDURE_DAYS,
        expiry_action: ClockExpiryAction::NotifyOnly as i32,
        ..ClockRule::default()
    }
}

/// The clock that runs in a state: "acceptance" in RECEIVED, "review" in UNDER_REVIEW.
pub fn clock_in(state: S) -> Option<(&'static str, ClockRule)> {
    match state {
        S::Received => Some(("acceptance", acceptance_rule())),
        S::UnderReview => Some(("review", review_rule())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Objections (异议, 民诉法解释 Art 372)
// ---------------------------------------------------------------------------

/// The last instant of an objection window: a party, 15 days from receiving the ruling; an
/// interested person, 6 months from knowing of it (民诉法解释 Art 372). Days and months count
/// from the next day and a window ending on a holiday ends on the next working day
/// (民事诉讼法 Art 85).
pub fn objection_deadline(
    objector: ObjectorKind,
    known_at: i64,
    cal: &HolidayCalendar,
) -> Result<i64, Error> {
    match objector {
        ObjectorKind::Party => Ok(add_duration(
            known_at,
            Unit::CalendarDay,
            PARTY_OBJECTION_DAYS,
            cal,
        )),
        ObjectorKind::InterestedPerson => {
            let mut day = cst_date(known_at)
                .and_then(|d| d.checked_add_months(Months::new(INTERESTED_PERSON_OBJECTION_MONTHS)))
                .ok_or_else(|| invalid("known_time", "out of range"))?;
            // 民事诉讼法 Art 85 ¶3: the last day a holiday → the first working day after it.
            for _ in 0..60 {
                if cal.is_working_day(day) {
                    break;
                }
                day = day
                    .succ_opt()
                    .ok_or_else(|| invalid("known_time", "out of range"))?;
            }
            end_of_cst_day(day).ok_or_else(|| invalid("known_time", "out of range"))
        }
        ObjectorKind::Unspecified => Err(invalid("objector", "required")),
    }
}

/// Refuses an objection outside its window (民诉法解释 Art 372), naming the article.
pub fn check_objection(
    objector: ObjectorKind,
    known_at: i64,
    filed_at: i64,
    cal: &HolidayCalendar,
) -> Result<(), Error> {
    if known_at > filed_at {
        return Err(invalid("known_time", "must not be after the filing"));
    }
    if filed_at >= objection_deadline(objector, known_at, cal)? {
        let window = match objector {
            ObjectorKind::Party => "a party within 15 days of receiving the ruling",
            _ => "an interested person within 6 months of knowing of the ruling",
        };
        return Err(refused(
            Reason::ObjectionPeriodLapsed,
            format!("an objection is filed by {window} (民诉法解释 Art 372)"),
        ));
    }
    Ok(())
}

/// Whole calendar days between two instants (statistics: days to decision).
pub fn days_between(from: i64, to: i64) -> f64 {
    (to - from) as f64 / MICROS_PER_DAY as f64
}

#[cfg(test)]
mod tests;
