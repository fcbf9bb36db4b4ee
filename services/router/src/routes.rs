//! Routes (流转路径): the versioned policies that govern transfers, as data.
//!
//! A route says from which kind of agency to which a case may be handed, which approval steps
//! the hand-over needs, the acceptance and feedback clocks, the reason and outcome codes the
//! receiver may use, which personal-information fields may travel, and on what legal basis.
//!
//! Routes are loaded from TOML files, one route version per file, named
//! `<route-id>.v<version>.toml`: the files of `deploy/routes/` are built in ([`RouteCatalog::builtin`])
//! and operators may add files in the configured `routes_dir` ([`RouteCatalog::load`]).
//! Published versions are immutable: every transfer pins `(route id, version)` when it is created
//! and later reads exactly that version, so old versions must stay in the catalog. A new policy is
//! a new file with the next version; the highest version is the *current* one that new transfers
//! pin.
//!
//! The file format (every key is checked; unknown keys are refused):
//!
//! ```toml
//! id = "police-to-station-mediation"          # resource id: routes/{id}
//! version = 1                                 # >= 1; file name is {id}.v{version}.toml
//! display_name = "警调对接：派出所移送驻所调解室"
//! description = "..."                         # optional
//! from_kind = "police_station"                # agency kind keywords, as in the agency seed
//! to_kind = "station_mediation_room"
//! legal_basis = "《人民调解法》第十八条 ..."    # required
//! publish_time = 2026-11-22T00:00:00+08:00    # optional, with an offset
//! allowed_personal_info = ["party_name", "party_phone"]  # before the first [table]
//! full_personal_info_roles = ["mediator"]     # optional; who may read this route's
//!                                             # transfers unmasked (default: the router's)
//!
//! [[approval_steps]]                          # in order; none: approved on submission
//! display_name = "指挥室审核"
//! required_role = "command_room_reviewer"
//! approver_scope = "parent_agency"            # or "sending_agency"
//! description = "..."                         # optional
//!
//! [acceptance_clock]                          # required; so is [feedback_clock]
//! unit = "working_day"                        # "calendar_day" | "working_day" | "hour"
//! length = 1
//! extension_rule = "none"                     # default; "party_consent" | "approver"
//! extension_approver_role = "court_president" # with "approver" only
//! max_extension = 0                           # units; extendable clocks need it or hard_cap
//! hard_cap = 0                                # units; 0 = length + max_extension
//! expiry_action = "return_to_sender"          # | "escalate" | "notify_only"
//! holiday_calendar = "cn-mainland"            # working_day clocks only; optional
//!   [[acceptance_clock.pausable_reasons]]
//!   code = "appraisal"
//!   description = "鉴定"
//!
//! [[clocks]]                                 # named clocks (optional), e.g. 在线调解规则 Art 15
//! name = "contact_parties"                    # [a-z_]{1,40}; not acceptance / feedback; unique
//! starts_on = "accepted"                      # | "offered" (delivered)
//! description = "..."                         # required: what must be done, legal basis
//! unit = "working_day"                        # rule keys as above; not pausable, not extendable
//! length = 3
//! expiry_action = "return_to_sender"
//!
//! [[decline_reasons]]                         # also [[feedback_outcomes]] (at least one),
//! code = "not_civil_dispute"                  # [[return_reasons]] and
//! description = "不属于民间纠纷"                # [[escalation_reasons]]
//! ```
//!
//! Reason and outcome codes are lower_snake_case, as `fengqiao.common.v1.ReasonCode` specifies.
//! Every code a receiver gives is checked against the transfer's *pinned* route version:
//! decline reasons (`DeclineTransfer`), feedback outcomes (`SubmitFeedback`), return reasons
//! (`ReturnTransfer`) and escalation reasons (`EscalateTransfer`). Escalation (人民调解法
//! Art 25) is an action on the transfer itself, reported to the sending agency; a route
//! without `escalation_reasons` does not allow it. Supplementary investigation rides the
//! transfer too, and pauses its feedback clock only where the feedback clock lists the
//! `supplementary_investigation` pause reason. There are no separate escalation or
//! investigation routes.
//!
//! Only what the engine carries out is accepted: every `expiry_action` is carried out on both
//! clocks (the acceptance clock on APPROVED / DELIVERED transfers, the feedback clock on
//! IN_PROGRESS ones: `return_to_sender` → EXPIRED, `escalate` → ESCALATED, `notify_only` →
//! marked overdue and both sides told). The acceptance clock can be neither paused nor
//! extended (it stops when the receiver answers), so `acceptance_clock` with an
//! `extension_rule` other than `none` or with `pausable_reasons` is refused.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use fengqiao_kit::{FieldViolation, Identity, validate};
use fengqiao_proto::common::{
    AgencyKind, ClockExpiryAction, ClockExtensionRule, ClockRule, ClockUnit, PersonalInfoField,
    ReasonCode,
};
use fengqiao_proto::router::route_service_server::RouteService;
use fengqiao_proto::router::{
    ApprovalStep, ApproverScope, ClockStart, GetRouteRequest, GetRouteResponse, ListRoutesRequest,
    ListRoutesResponse, NamedClockRule, Route,
};
use prost::Message as _;
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::agencies::parse_kind;
use crate::error::{Error, Result};

/// Pause reason code for supplementary investigation by the police (补充调查取证); the code
/// `TransferService.RequestInvestigation` looks for on the feedback clock.
pub const PAUSE_SUPPLEMENTARY_INVESTIGATION: &str = "supplementary_investigation";
/// Pause reason code for an appraisal (鉴定), whose time does not count.
pub const PAUSE_APPRAISAL: &str = "appraisal";

/// Route policy files built into the binary (`deploy/routes/`), by file name.
///
/// Every file of that directory must be listed here (a test checks it).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    (
        "coordination-to-procuratorate.v1.toml",
        include_str!("../../../deploy/routes/coordination-to-procuratorate.v1.toml"),
    ),
    (
        "court-to-invited-mediation.v1.toml",
        include_str!("../../../deploy/routes/court-to-invited-mediation.v1.toml"),
    ),
    (
        "court-to-invited-mediation.v2.toml",
        include_str!("../../../deploy/routes/court-to-invited-mediation.v2.toml"),
    ),
    (
        "court-to-invited-mediation.v3.toml",
        include_str!("../../../deploy/routes/court-to-invited-mediation.v3.toml"),
    ),
    (
        "mediation-to-court-confirmation.v1.toml",
        include_str!("../../../deploy/routes/mediation-to-court-confirmation.v1.toml"),
    ),
    (
        "police-to-station-mediation.v1.toml",
        include_str!("../../../deploy/routes/police-to-station-mediation.v1.toml"),
    ),
    (
        "police-to-station-mediation.v2.toml",
        include_str!("../../../deploy/routes/police-to-station-mediation.v2.toml"),
    ),
    (
        "procuratorate-to-coordination.v1.toml",
        include_str!("../../../deploy/routes/procuratorate-to-coordination.v1.toml"),
    ),
];

// Limits on route files. Clock lengths are bounded so deadline arithmetic in microseconds
// cannot overflow (ten years).
const MAX_DAYS: u32 = 3_660;
const MAX_HOURS: u32 = MAX_DAYS * 24;
const MAX_STEPS: usize = 10;
const MAX_REASONS: usize = 50;
const MAX_NAME_CHARS: usize = 200;
const MAX_TEXT_CHARS: usize = 4_000;
const MAX_REASON_TEXT_CHARS: usize = 500;
const MAX_CODE_LEN: usize = 64;

/// One problem in a route file: the key (e.g. `approval_steps[1].required_role`; array
/// indexes count from 0) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The offending key, dotted, with zero-based array indexes.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why routes could not be loaded. Route files hold policy, never personal information, so
/// messages may quote them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A file or directory could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// A file is not valid TOML or does not fit the format (unknown key, wrong type).
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A file parsed but breaks the rules.
    #[error("{file}: {}", join_problems(.problems))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// Two files define the same route version differently.
    #[error(
        "route {id} v{version} is defined differently in {first} and {second}; a published \
         version is immutable, publish a new version instead"
    )]
    Conflict {
        /// Route id.
        id: String,
        /// Version.
        version: u32,
        /// One file.
        first: String,
        /// The other file.
        second: String,
    },
    /// A route's versions have a gap: transfers pinned to the missing version could not be read.
    #[error(
        "route {id}: version {missing} is missing (the latest is {latest}); keep every \
         published version, transfers are pinned to them"
    )]
    MissingVersion {
        /// Route id.
        id: String,
        /// The first missing version.
        missing: u32,
        /// The highest version present.
        latest: u32,
    },
    /// A later version of a route changes its agency kinds.
    #[error(
        "route {id} v{version} ({file}): from_kind/to_kind differ from version 1; publish a \
         route with a new id instead"
    )]
    KindsChanged {
        /// Route id.
        id: String,
        /// The version that differs.
        version: u32,
        /// Its file.
        file: String,
    },
}

// ---------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default)]
    id: String,
    #[serde(default)]
    version: u32,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    from_kind: String,
    #[serde(default)]
    to_kind: String,
    #[serde(default)]
    legal_basis: String,
    #[serde(default)]
    publish_time: Option<toml::value::Datetime>,
    #[serde(default)]
    approval_steps: Vec<StepFile>,
    #[serde(default)]
    acceptance_clock: Option<ClockFile>,
    #[serde(default)]
    feedback_clock: Option<ClockFile>,
    #[serde(default)]
    decline_reasons: Vec<ReasonFile>,
    #[serde(default)]
    feedback_outcomes: Vec<ReasonFile>,
    #[serde(default)]
    return_reasons: Vec<ReasonFile>,
    #[serde(default)]
    escalation_reasons: Vec<ReasonFile>,
    #[serde(default)]
    allowed_personal_info: Vec<String>,
    /// Roles that may read this route's transfers unmasked; empty: the router's default
    /// (`transfers::personal::FULL_VIEW`). Published files stay as they are: only a new
    /// version sets it.
    #[serde(default)]
    full_personal_info_roles: Vec<String>,
    #[serde(default)]
    clocks: Vec<NamedClockFile>,
}

/// A `[[clocks]]` entry: a named clock, its rule keys (as in [`ClockFile`]) inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedClockFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    starts_on: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    length: u32,
    #[serde(default)]
    pausable_reasons: Vec<ReasonFile>,
    #[serde(default)]
    extension_rule: Option<String>,
    #[serde(default)]
    extension_approver_role: String,
    #[serde(default)]
    max_extension: u32,
    #[serde(default)]
    hard_cap: u32,
    #[serde(default)]
    expiry_action: String,
    #[serde(default)]
    holiday_calendar: String,
}

impl NamedClockFile {
    fn rule(&self) -> ClockFile {
        ClockFile {
            unit: self.unit.clone(),
            length: self.length,
            pausable_reasons: self
                .pausable_reasons
                .iter()
                .map(|r| ReasonFile {
                    code: r.code.clone(),
                    description: r.description.clone(),
                })
                .collect(),
            extension_rule: self.extension_rule.clone(),
            extension_approver_role: self.extension_approver_role.clone(),
            max_extension: self.max_extension,
            hard_cap: self.hard_cap,
            expiry_action: self.expiry_action.clone(),
            holiday_calendar: self.holiday_calendar.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    required_role: String,
    #[serde(default)]
    approver_scope: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockFile {
    #[serde(default)]
    unit: String,
    #[serde(default)]
    length: u32,
    #[serde(default)]
    pausable_reasons: Vec<ReasonFile>,
    #[serde(default)]
    extension_rule: Option<String>,
    #[serde(default)]
    extension_approver_role: String,
    #[serde(default)]
    max_extension: u32,
    #[serde(default)]
    hard_cap: u32,
    #[serde(default)]
    expiry_action: String,
    #[serde(default)]
    holiday_calendar: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonFile {
    #[serde(default)]
    code: String,
    #[serde(default)]
    description: String,
}

/// Collects problems while checking one file.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Required text of at most `max` characters.
    fn text(&mut self, key: &str, value: &str, required: bool, max: usize) {
        let n = value.trim().chars().count();
        if required && n == 0 {
            self.add(key, "is required");
        } else if value.chars().count() > max {
            self.add(key, format!("must be at most {max} characters"));
        }
    }
}

/// `lower_snake_case`: `[a-z][a-z0-9]*(_[a-z0-9]+)*`, at most 64 characters.
fn is_snake(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CODE_LEN
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('_')
        && !s.contains("__")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

const KIND_KEYWORDS: &str = "police_command_centre, police_station, mediation_committee, \
                             station_mediation_room, court, procuratorate, coordination_centre, \
                             administrative_organ";

fn check_kind(p: &mut Problems, key: &str, value: &str) -> AgencyKind {
    if value.is_empty() {
        p.add(key, "is required");
        return AgencyKind::Unspecified;
    }
    match parse_kind(value) {
        Some(k) => k,
        None => {
            p.add(
                key,
                format!("unknown agency kind {value:?}; expected one of {KIND_KEYWORDS}"),
            );
            AgencyKind::Unspecified
        }
    }
}

fn check_role(p: &mut Problems, key: &str, role: &str) {
    if role.is_empty() {
        p.add(key, "is required");
    } else if !is_snake(role) {
        p.add(
            key,
            "must be a role name in lower_snake_case (e.g. duty_chief)",
        );
    }
}

fn check_reasons(p: &mut Problems, key: &str, reasons: &[ReasonFile]) -> Vec<ReasonCode> {
    if reasons.len() > MAX_REASONS {
        p.add(key, format!("at most {MAX_REASONS} entries"));
    }
    let mut seen = HashSet::new();
    for (i, r) in reasons.iter().enumerate() {
        let k = format!("{key}[{i}]");
        if r.code.is_empty() {
            p.add(format!("{k}.code"), "is required");
        } else if !is_snake(&r.code) {
            p.add(
                format!("{k}.code"),
                format!(
                    "{:?} is not a code: lower_snake_case, at most {MAX_CODE_LEN} characters",
                    r.code
                ),
            );
        } else if !seen.insert(r.code.as_str()) {
            p.add(
                format!("{k}.code"),
                format!("duplicate code {:?} in {key}", r.code),
            );
        }
        p.text(
            &format!("{k}.description"),
            &r.description,
            true,
            MAX_REASON_TEXT_CHARS,
        );
    }
    reasons
        .iter()
        .map(|r| ReasonCode {
            code: r.code.clone(),
            description: r.description.trim().to_string(),
        })
        .collect()
}

fn check_clock(p: &mut Problems, key: &str, clock: Option<&ClockFile>) -> Option<ClockRule> {
    let Some(c) = clock else {
        p.add(key, "is required");
        return None;
    };
    let unit = match c.unit.as_str() {
        "calendar_day" => ClockUnit::CalendarDay,
        "working_day" => ClockUnit::WorkingDay,
        "hour" => ClockUnit::Hour,
        "" => {
            p.add(format!("{key}.unit"), "is required");
            ClockUnit::Unspecified
        }
        other => {
            p.add(
                format!("{key}.unit"),
                format!("unknown unit {other:?}; expected calendar_day, working_day or hour"),
            );
            ClockUnit::Unspecified
        }
    };
    let max = if unit == ClockUnit::Hour {
        MAX_HOURS
    } else {
        MAX_DAYS
    };
    if c.length == 0 {
        p.add(
            format!("{key}.length"),
            "must be at least 1 (a zero-length clock would expire at once)",
        );
    } else if c.length > max {
        p.add(format!("{key}.length"), format!("must be at most {max}"));
    }
    let rule = match c.extension_rule.as_deref() {
        None | Some("none") => ClockExtensionRule::NotExtendable,
        Some("party_consent") => ClockExtensionRule::PartyConsent,
        Some("approver") => ClockExtensionRule::Approver,
        Some(other) => {
            p.add(
                format!("{key}.extension_rule"),
                format!("unknown rule {other:?}; expected none, party_consent or approver"),
            );
            ClockExtensionRule::Unspecified
        }
    };
    if c.max_extension > max {
        p.add(
            format!("{key}.max_extension"),
            format!("must be at most {max}"),
        );
    }
    if c.hard_cap > max.saturating_mul(2) {
        p.add(
            format!("{key}.hard_cap"),
            format!("must be at most {}", max.saturating_mul(2)),
        );
    }
    match rule {
        ClockExtensionRule::NotExtendable => {
            if c.max_extension != 0 {
                p.add(
                    format!("{key}.max_extension"),
                    "must be 0 (or absent) when the clock cannot be extended",
                );
            }
            if c.hard_cap != 0 && c.hard_cap != c.length {
                p.add(
                    format!("{key}.hard_cap"),
                    "must be 0 or equal to length when the clock cannot be extended",
                );
            }
        }
        ClockExtensionRule::PartyConsent | ClockExtensionRule::Approver => {
            if c.max_extension == 0 && c.hard_cap == 0 {
                p.add(
                    format!("{key}.max_extension"),
                    "an extendable clock needs max_extension or hard_cap (no unbounded extension)",
                );
            }
            if c.hard_cap != 0 && c.hard_cap <= c.length {
                p.add(
                    format!("{key}.hard_cap"),
                    "must be greater than length when the clock can be extended",
                );
            }
            if c.hard_cap != 0
                && c.max_extension != 0
                && c.hard_cap > c.length.saturating_add(c.max_extension)
            {
                p.add(
                    format!("{key}.hard_cap"),
                    "exceeds length + max_extension and would never apply",
                );
            }
        }
        _ => {}
    }
    if rule == ClockExtensionRule::Approver {
        check_role(
            p,
            &format!("{key}.extension_approver_role"),
            &c.extension_approver_role,
        );
    } else if !c.extension_approver_role.is_empty() {
        p.add(
            format!("{key}.extension_approver_role"),
            "only allowed with extension_rule = \"approver\"",
        );
    }
    let expiry = match c.expiry_action.as_str() {
        "return_to_sender" => ClockExpiryAction::ReturnToSender,
        "escalate" => ClockExpiryAction::Escalate,
        "notify_only" => ClockExpiryAction::NotifyOnly,
        "" => {
            p.add(format!("{key}.expiry_action"), "is required");
            ClockExpiryAction::Unspecified
        }
        other => {
            p.add(
                format!("{key}.expiry_action"),
                format!(
                    "unknown action {other:?}; expected return_to_sender, escalate or notify_only"
                ),
            );
            ClockExpiryAction::Unspecified
        }
    };
    if !c.holiday_calendar.is_empty() {
        if unit != ClockUnit::WorkingDay {
            p.add(
                format!("{key}.holiday_calendar"),
                "only applies to working_day clocks",
            );
        } else if validate::resource_id("holiday_calendar", &c.holiday_calendar).is_err() {
            p.add(
                format!("{key}.holiday_calendar"),
                "must be a calendar name of a-z, 0-9 and '-'",
            );
        }
    }
    let pausable_reasons =
        check_reasons(p, &format!("{key}.pausable_reasons"), &c.pausable_reasons);
    Some(ClockRule {
        unit: unit as i32,
        length: c.length,
        pausable_reasons,
        extension_rule: rule as i32,
        max_extension: c.max_extension,
        hard_cap: c.hard_cap,
        expiry_action: expiry as i32,
        holiday_calendar: c.holiday_calendar.clone(),
        extension_approver_role: c.extension_approver_role.clone(),
    })
}

/// Most named clocks a route may declare.
const MAX_NAMED_CLOCKS: usize = 10;
/// Longest named-clock name, in characters.
const MAX_CLOCK_NAME: usize = 40;

/// Whether `name` is a valid named-clock name: `[a-z_]{1,40}`.
pub fn is_clock_name(name: &str) -> bool {
    (1..=MAX_CLOCK_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Checks the `[[clocks]]` of a route: names `[a-z_]{1,40}`, unique and not the built-in
/// `acceptance` / `feedback`; a start event; a description (it says what must be done, with
/// its legal basis); the rule as for the other clocks ([`check_clock`]). Named clocks are
/// neither paused nor extended (`PauseClock` / `ExtendDeadline` address only the acceptance
/// and feedback clocks), so pausable reasons or an extension rule other than `none` are
/// refused. Every expiry action is carried out: a named clock runs only while the transfer
/// is DELIVERED or IN_PROGRESS, where both state-changing expiries have a transition.
fn check_named_clocks(p: &mut Problems, clocks: &[NamedClockFile]) -> Vec<NamedClockRule> {
    if clocks.len() > MAX_NAMED_CLOCKS {
        p.add("clocks", format!("at most {MAX_NAMED_CLOCKS} named clocks"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(clocks.len());
    for (i, c) in clocks.iter().enumerate() {
        let k = format!("clocks[{i}]");
        if !is_clock_name(&c.name) {
            p.add(
                format!("{k}.name"),
                format!("must be 1-{MAX_CLOCK_NAME} characters of a-z and '_'"),
            );
        } else if matches!(c.name.as_str(), "acceptance" | "feedback") {
            p.add(
                format!("{k}.name"),
                format!("{:?} is a built-in clock of every route", c.name),
            );
        } else if !seen.insert(c.name.as_str()) {
            p.add(format!("{k}.name"), format!("{:?} is listed twice", c.name));
        }
        let starts_on = match c.starts_on.as_str() {
            "accepted" => ClockStart::Accepted,
            "offered" => ClockStart::Offered,
            "" => {
                p.add(format!("{k}.starts_on"), "is required: accepted or offered");
                ClockStart::Unspecified
            }
            other => {
                p.add(
                    format!("{k}.starts_on"),
                    format!("unknown event {other:?}; expected accepted or offered"),
                );
                ClockStart::Unspecified
            }
        };
        p.text(
            &format!("{k}.description"),
            &c.description,
            true,
            MAX_TEXT_CHARS,
        );
        if c.extension_rule.as_deref().is_some_and(|r| r != "none") {
            p.add(
                format!("{k}.extension_rule"),
                "must be none: named clocks cannot be extended",
            );
        }
        if !c.pausable_reasons.is_empty() {
            p.add(
                format!("{k}.pausable_reasons"),
                "must be empty: named clocks cannot be paused",
            );
        }
        let rule = check_clock(p, &k, Some(&c.rule()));
        out.push(NamedClockRule {
            name: c.name.clone(),
            rule,
            starts_on: starts_on as i32,
            description: c.description.trim().to_string(),
        });
    }
    out
}

/// Refuses acceptance-clock settings the engine cannot carry out: the acceptance clock runs
/// from the offer until the receiver accepts or declines, and no call pauses or extends it
/// (`PauseClock` / `ExtendDeadline` refuse the acceptance clock), so a rule that promises
/// either would never be honoured.
fn check_acceptance_engine(p: &mut Problems, c: &ClockFile) {
    if c.extension_rule.as_deref().is_some_and(|r| r != "none") {
        p.add(
            "acceptance_clock.extension_rule",
            "must be none: the acceptance clock cannot be extended",
        );
    }
    if !c.pausable_reasons.is_empty() {
        p.add(
            "acceptance_clock.pausable_reasons",
            "must be empty: the acceptance clock cannot be paused",
        );
    }
}

fn parse_pi_field(s: &str) -> Option<PersonalInfoField> {
    Some(match s {
        "party_name" => PersonalInfoField::PartyName,
        "party_id_number" => PersonalInfoField::PartyIdNumber,
        "party_phone" => PersonalInfoField::PartyPhone,
        "party_address" => PersonalInfoField::PartyAddress,
        "caller_phone" => PersonalInfoField::CallerPhone,
        "location_detail" => PersonalInfoField::LocationDetail,
        _ => return None,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A TOML offset date-time as a protobuf timestamp; `None` unless date, time and offset are
/// all present.
fn to_timestamp(dt: &toml::value::Datetime) -> Option<prost_types::Timestamp> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let secs = days * 86_400
        + i64::from(time.hour) * 3_600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        - offset_minutes * 60;
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos: i32::try_from(time.nanosecond).ok()?,
    })
}

/// FNV-1a, 64 bits: a stable content hash for etags (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The etag of a route version: its version and a hash of its content, so the same content
/// always has the same etag.
fn route_etag(route: &Route) -> String {
    let mut r = route.clone();
    r.current = false;
    r.etag.clear();
    format!("\"v{}-{:016x}\"", route.version, fnv1a(&r.encode_to_vec()))
}

fn base_name(file: &str) -> &str {
    file.rsplit(['/', '\\']).next().unwrap_or(file)
}

/// Parses and validates one route file. `file` names it in errors; its last path segment
/// must be `{id}.v{version}.toml`.
///
/// The result has its `etag` set and `current` false (the catalog decides which is current).
pub fn parse_route(file: &str, text: &str) -> std::result::Result<Route, RouteError> {
    let f: RouteFile = toml::from_str(text).map_err(|e| RouteError::Syntax {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let mut p = Problems::default();

    let id_ok = validate::resource_id("id", &f.id).is_ok();
    if f.id.is_empty() {
        p.add("id", "is required");
    } else if !id_ok {
        p.add(
            "id",
            "must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        );
    }
    if f.version == 0 {
        p.add("version", "is required and must be at least 1");
    }
    if id_ok && f.version != 0 {
        let expected = format!("{}.v{}.toml", f.id, f.version);
        if base_name(file) != expected {
            p.add(
                "file_name",
                format!("the file must be named {expected} (route id and version)"),
            );
        }
    }
    p.text("display_name", &f.display_name, true, MAX_NAME_CHARS);
    p.text("description", &f.description, false, MAX_TEXT_CHARS);
    p.text("legal_basis", &f.legal_basis, true, MAX_TEXT_CHARS);
    let from_kind = check_kind(&mut p, "from_kind", &f.from_kind);
    let to_kind = check_kind(&mut p, "to_kind", &f.to_kind);
    let publish_time = match &f.publish_time {
        None => None,
        Some(dt) => {
            let ts = to_timestamp(dt);
            if ts.is_none() {
                p.add(
                    "publish_time",
                    "must be a date-time with an offset, e.g. 2026-11-22T00:00:00+08:00",
                );
            }
            ts
        }
    };

    if f.approval_steps.len() > MAX_STEPS {
        p.add("approval_steps", format!("at most {MAX_STEPS} steps"));
    }
    let mut approval_steps = Vec::with_capacity(f.approval_steps.len());
    for (i, s) in f.approval_steps.iter().enumerate() {
        let k = format!("approval_steps[{i}]");
        p.text(
            &format!("{k}.display_name"),
            &s.display_name,
            true,
            MAX_NAME_CHARS,
        );
        check_role(&mut p, &format!("{k}.required_role"), &s.required_role);
        let scope = match s.approver_scope.as_str() {
            "sending_agency" => ApproverScope::SendingAgency,
            "parent_agency" => ApproverScope::ParentAgency,
            "" => {
                p.add(
                    format!("{k}.approver_scope"),
                    "is required: sending_agency or parent_agency",
                );
                ApproverScope::Unspecified
            }
            other => {
                p.add(
                    format!("{k}.approver_scope"),
                    format!("unknown scope {other:?}; expected sending_agency or parent_agency"),
                );
                ApproverScope::Unspecified
            }
        };
        p.text(
            &format!("{k}.description"),
            &s.description,
            false,
            MAX_TEXT_CHARS,
        );
        approval_steps.push(ApprovalStep {
            display_name: s.display_name.trim().to_string(),
            required_role: s.required_role.clone(),
            approver_scope: scope as i32,
            description: s.description.trim().to_string(),
        });
    }

    let acceptance_clock = check_clock(&mut p, "acceptance_clock", f.acceptance_clock.as_ref());
    if let Some(c) = f.acceptance_clock.as_ref() {
        check_acceptance_engine(&mut p, c);
    }
    let feedback_clock = check_clock(&mut p, "feedback_clock", f.feedback_clock.as_ref());
    let decline_reasons = check_reasons(&mut p, "decline_reasons", &f.decline_reasons);
    if f.feedback_outcomes.is_empty() {
        p.add(
            "feedback_outcomes",
            "at least one outcome is required (feedback carries an outcome code)",
        );
    }
    let feedback_outcomes = check_reasons(&mut p, "feedback_outcomes", &f.feedback_outcomes);
    let return_reasons = check_reasons(&mut p, "return_reasons", &f.return_reasons);
    let escalation_reasons = check_reasons(&mut p, "escalation_reasons", &f.escalation_reasons);
    let clocks = check_named_clocks(&mut p, &f.clocks);

    let mut allowed_personal_info = Vec::new();
    for (i, s) in f.allowed_personal_info.iter().enumerate() {
        let k = format!("allowed_personal_info[{i}]");
        match parse_pi_field(s) {
            None => p.add(
                k,
                format!(
                    "unknown field {s:?}; expected party_name, party_id_number, party_phone, \
                     party_address, caller_phone or location_detail"
                ),
            ),
            Some(field) if allowed_personal_info.contains(&(field as i32)) => {
                p.add(k, format!("{s:?} is listed twice"));
            }
            Some(field) => allowed_personal_info.push(field as i32),
        }
    }

    let mut full_personal_info_roles: Vec<String> = Vec::new();
    for (i, r) in f.full_personal_info_roles.iter().enumerate() {
        let k = format!("full_personal_info_roles[{i}]");
        check_role(&mut p, &k, r);
        if full_personal_info_roles.contains(r) {
            p.add(k, format!("{r:?} is listed twice"));
        } else {
            full_personal_info_roles.push(r.clone());
        }
    }

    if !p.0.is_empty() {
        return Err(RouteError::Invalid {
            file: file.to_string(),
            problems: p.0,
        });
    }
    let mut route = Route {
        name: format!("routes/{}", f.id),
        version: f.version,
        from_kind: from_kind as i32,
        to_kind: to_kind as i32,
        display_name: f.display_name.trim().to_string(),
        description: f.description.trim().to_string(),
        approval_steps,
        acceptance_clock,
        feedback_clock,
        decline_reasons,
        feedback_outcomes,
        return_reasons,
        allowed_personal_info,
        legal_basis: f.legal_basis.trim().to_string(),
        current: false,
        publish_time,
        etag: String::new(),
        escalation_reasons,
        clocks,
        full_personal_info_roles,
    };
    route.etag = route_etag(&route);
    Ok(route)
}

/// The id part of a route's resource name (`routes/{id}`).
pub fn route_id(route: &Route) -> &str {
    route.name.strip_prefix("routes/").unwrap_or(&route.name)
}

// ---------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Entry {
    route: Route,
    file: String,
}

/// Every known route version, by id and version. Immutable once built; share it in an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct RouteCatalog {
    routes: BTreeMap<String, BTreeMap<u32, Entry>>,
}

impl RouteCatalog {
    /// The routes of `deploy/routes/`, built into the binary.
    pub fn builtin() -> std::result::Result<Self, RouteError> {
        let c = Self::from_files(BUILTIN_FILES.iter().copied())?;
        c.check_complete()?;
        Ok(c)
    }

    /// The routes of `(file name, TOML text)` pairs. Two files may define the same route
    /// version only identically. Version continuity is not checked here (see [`Self::merge`]).
    pub fn from_files<N, T>(
        files: impl IntoIterator<Item = (N, T)>,
    ) -> std::result::Result<Self, RouteError>
    where
        N: AsRef<str>,
        T: AsRef<str>,
    {
        let mut c = Self::default();
        for (file, text) in files {
            let route = parse_route(file.as_ref(), text.as_ref())?;
            c.insert(Entry {
                route,
                file: file.as_ref().to_string(),
            })?;
        }
        c.mark_current();
        Ok(c)
    }

    /// The routes of every `*.toml` file in `dir` (following symbolic links). Names starting
    /// with `.` (Kubernetes ConfigMap mounts add `..data` and `..<timestamp>` entries),
    /// directories and other files are skipped; an empty directory gives an empty catalog.
    ///
    /// A directory may hold only newer versions of built-in routes, so version continuity is
    /// checked when it is merged ([`Self::merge`], [`Self::load`]), not here.
    pub fn load_dir(dir: &Path) -> std::result::Result<Self, RouteError> {
        let io = |path: &Path, e: std::io::Error| RouteError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !name.ends_with(".toml") {
                continue;
            }
            let path = entry.path();
            // `metadata` follows symlinks: ConfigMap keys are links into `..data/`.
            let meta = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
            if !meta.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            files.push((path.display().to_string(), text));
        }
        files.sort();
        Self::from_files(files)
    }

    /// Both catalogs together. The same route version in both must be identical; every
    /// route's versions must then run from 1 without gaps, with the same agency kinds.
    pub fn merge(mut self, other: RouteCatalog) -> std::result::Result<Self, RouteError> {
        for (_, versions) in other.routes {
            for (_, entry) in versions {
                self.insert(entry)?;
            }
        }
        self.mark_current();
        self.check_complete()?;
        Ok(self)
    }

    /// The built-in routes plus those of the configured `routes_dir`, if any.
    pub fn load(routes_dir: Option<&Path>) -> std::result::Result<Self, RouteError> {
        let builtin = Self::builtin()?;
        match routes_dir {
            Some(dir) => builtin.merge(Self::load_dir(dir)?),
            None => Ok(builtin),
        }
    }

    fn insert(&mut self, mut entry: Entry) -> std::result::Result<(), RouteError> {
        entry.route.current = false;
        let id = route_id(&entry.route).to_string();
        let version = entry.route.version;
        let versions = self.routes.entry(id.clone()).or_default();
        match versions.get(&version) {
            Some(existing) => {
                let mut old = existing.route.clone();
                old.current = false;
                if old != entry.route {
                    return Err(RouteError::Conflict {
                        id,
                        version,
                        first: existing.file.clone(),
                        second: entry.file,
                    });
                }
            }
            None => {
                versions.insert(version, entry);
            }
        }
        Ok(())
    }

    fn mark_current(&mut self) {
        for versions in self.routes.values_mut() {
            let latest = versions.keys().next_back().copied();
            for (v, e) in versions.iter_mut() {
                e.route.current = Some(*v) == latest;
            }
        }
    }

    fn check_complete(&self) -> std::result::Result<(), RouteError> {
        for (id, versions) in &self.routes {
            let latest = versions.keys().next_back().copied().unwrap_or(0);
            if let Some(missing) = (1..=latest).find(|v| !versions.contains_key(v)) {
                return Err(RouteError::MissingVersion {
                    id: id.clone(),
                    missing,
                    latest,
                });
            }
            let mut it = versions.values();
            if let Some(first) = it.next() {
                for e in it {
                    if (e.route.from_kind, e.route.to_kind)
                        != (first.route.from_kind, first.route.to_kind)
                    {
                        return Err(RouteError::KindsChanged {
                            id: id.clone(),
                            version: e.route.version,
                            file: e.file.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Exactly version `version` of route `id` (the id, not the resource name); `None` if
    /// unknown. Transfers read their pinned version with this.
    pub fn get(&self, id: &str, version: u32) -> Option<&Route> {
        self.routes.get(id)?.get(&version).map(|e| &e.route)
    }

    /// The current (highest) version of route `id`: the one new transfers pin.
    pub fn current(&self, id: &str) -> Option<&Route> {
        self.routes.get(id)?.values().next_back().map(|e| &e.route)
    }

    /// A route by resource name (`routes/{id}`) and version, 0 meaning the current version.
    pub fn by_name(&self, name: &str, version: u32) -> Option<&Route> {
        let id = name.strip_prefix("routes/")?;
        if version == 0 {
            self.current(id)
        } else {
            self.get(id, version)
        }
    }

    /// Every route version, ordered by id and then version.
    pub fn list(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes
            .values()
            .flat_map(|versions| versions.values().map(|e| &e.route))
    }

    /// The current versions of the routes from `from` to `to`, ordered by id.
    pub fn find(&self, from: AgencyKind, to: AgencyKind) -> Vec<&Route> {
        self.routes
            .values()
            .filter_map(|versions| versions.values().next_back().map(|e| &e.route))
            .filter(|r| r.from_kind == from as i32 && r.to_kind == to as i32)
            .collect()
    }

    /// Number of route versions.
    pub fn len(&self) -> usize {
        self.routes.values().map(BTreeMap::len).sum()
    }

    /// Whether the catalog has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

// ---------------------------------------------------------------------------
// RouteService
// ---------------------------------------------------------------------------

/// `RouteService`: any authenticated agency may read the routes (agencies discover the rules
/// they work under). Routes are never written through the API.
#[derive(Clone, Debug)]
pub struct Routes {
    /// The catalog served.
    pub catalog: Arc<RouteCatalog>,
}

fn check_kind_filter(field: &str, kind: i32) -> Result<()> {
    if AgencyKind::try_from(kind).is_err() {
        return Err(FieldViolation::new(field, "must be a known agency kind").into());
    }
    Ok(())
}

/// The page-token key: the last route returned and the filters of the call.
fn token_key(id: &str, version: u32, req: &ListRoutesRequest) -> String {
    format!(
        "{id}/{version}/{}/{}/{}",
        req.from_kind, req.to_kind, req.include_all_versions
    )
}

impl Routes {
    /// The service over `catalog`.
    pub fn new(catalog: Arc<RouteCatalog>) -> Self {
        Self { catalog }
    }

    /// Lists routes ordered by name and then version, one page at a time.
    pub fn list(&self, req: &ListRoutesRequest) -> Result<ListRoutesResponse> {
        let size = validate::page_size(req.page_size)? as usize;
        check_kind_filter("from_kind", req.from_kind)?;
        check_kind_filter("to_kind", req.to_kind)?;
        let query = fengqiao_kit::list_query!(req, "");
        let after = match validate::parse_page_token(&req.page_token, &query)? {
            None => None,
            Some(key) => {
                let bad = || FieldViolation::new("page_token", "is not a token this server issued");
                let mut parts = key.splitn(3, '/');
                let id = parts.next().ok_or_else(bad)?.to_string();
                let version: u32 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                if token_key(&id, version, req) != key {
                    return Err(FieldViolation::new(
                        "page_token",
                        "was issued for a call with other filters",
                    )
                    .into());
                }
                Some((id, version))
            }
        };
        let mut routes: Vec<Route> = self
            .catalog
            .list()
            .filter(|r| req.include_all_versions || r.current)
            .filter(|r| req.from_kind == 0 || r.from_kind == req.from_kind)
            .filter(|r| req.to_kind == 0 || r.to_kind == req.to_kind)
            .filter(|r| match &after {
                None => true,
                Some((id, v)) => (route_id(r), r.version) > (id.as_str(), *v),
            })
            .take(size + 1)
            .cloned()
            .collect();
        let next_page_token = if routes.len() > size {
            routes.truncate(size);
            routes
                .last()
                .map(|r| validate::page_token(&query, &token_key(route_id(r), r.version, req)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListRoutesResponse {
            routes,
            next_page_token,
        })
    }

    /// Gets a route version; version 0 means the current one. Unknown: NOT_FOUND.
    pub fn get(&self, req: &GetRouteRequest) -> Result<Route> {
        validate::parse_name("name", "routes", &req.name)?;
        self.catalog
            .by_name(&req.name, req.version)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(if req.version == 0 {
                    req.name.clone()
                } else {
                    format!("{} version {}", req.name, req.version)
                })
            })
    }
}

#[tonic::async_trait]
impl RouteService for Routes {
    async fn list_routes(
        &self,
        request: Request<ListRoutesRequest>,
    ) -> std::result::Result<Response<ListRoutesResponse>, Status> {
        Identity::of(&request)?;
        Ok(Response::new(self.list(request.get_ref())?))
    }

    async fn get_route(
        &self,
        request: Request<GetRouteRequest>,
    ) -> std::result::Result<Response<GetRouteResponse>, Status> {
        Identity::of(&request)?;
        let route = self.get(request.get_ref())?;
        Ok(Response::new(GetRouteResponse { route: Some(route) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_kit::auth::AuthMethod;

    /// A small valid route; cases below break one thing at a time.
    const BASE: &str = r#"
id = "test-route"
version = 1
display_name = "测试路径"
from_kind = "police_station"
to_kind = "station_mediation_room"
legal_basis = "《人民调解法》第十八条"
allowed_personal_info = ["party_name", "party_phone"]

[[approval_steps]]
display_name = "值班所长审批"
required_role = "duty_chief"
approver_scope = "sending_agency"

[acceptance_clock]
unit = "working_day"
length = 1
expiry_action = "return_to_sender"

[feedback_clock]
unit = "calendar_day"
length = 30
extension_rule = "party_consent"
max_extension = 30
hard_cap = 60
expiry_action = "notify_only"
  [[feedback_clock.pausable_reasons]]
  code = "appraisal"
  description = "鉴定"

[[decline_reasons]]
code = "not_civil_dispute"
description = "不属于民间纠纷"

[[decline_reasons]]
code = "outside_jurisdiction"
description = "不属于本调解室受理范围"

[[feedback_outcomes]]
code = "agreement_reached"
description = "调解成功"
"#;

    const BASE_FILE: &str = "test-route.v1.toml";

    fn problems(file: &str, text: &str) -> Vec<Problem> {
        match parse_route(file, text) {
            Err(RouteError::Invalid { problems, .. }) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn identity() -> Identity {
        Identity {
            agency: "agencies/xigang-court".into(),
            actor: "clerk-01".into(),
            roles: vec!["court_clerk".into()],
            method: AuthMethod::Token,
            person: None,
        }
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fengqiao-routes-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// `BASE` as version `v` of route `id`, with a different display name per version.
    fn version_of(id: &str, v: u32) -> (String, String) {
        let text = BASE
            .replace("id = \"test-route\"", &format!("id = \"{id}\""))
            .replace("version = 1", &format!("version = {v}"))
            .replace("测试路径", &format!("测试路径 第{v}版"));
        (format!("{id}.v{v}.toml"), text)
    }

    #[test]
    fn base_snippet_is_valid() {
        let r = parse_route(BASE_FILE, BASE).expect("valid");
        assert_eq!(r.name, "routes/test-route");
        assert_eq!(r.version, 1);
        assert!(!r.current);
        assert!(r.etag.starts_with("\"v1-"));
        let c = r.acceptance_clock.expect("clock");
        assert_eq!(c.extension_rule, ClockExtensionRule::NotExtendable as i32);
        assert_eq!(
            parse_route(BASE_FILE, BASE).expect("valid").etag,
            r.etag,
            "etag is a function of content"
        );
    }

    #[test]
    fn every_builtin_file_parses_and_validates() {
        let c = RouteCatalog::builtin().expect("builtin routes");
        assert_eq!(c.len(), BUILTIN_FILES.len());
        for (file, text) in BUILTIN_FILES {
            let r = parse_route(file, text).unwrap_or_else(|e| panic!("{e}"));
            let id = route_id(&r);
            let latest = BUILTIN_FILES
                .iter()
                .filter_map(|(f, t)| parse_route(f, t).ok())
                .filter(|o| route_id(o) == id)
                .map(|o| o.version)
                .max();
            assert_eq!(c.current(id).map(|c| c.version), latest, "{file}");
            assert!(
                c.get(id, r.version)
                    .is_some_and(|g| g.current == (Some(r.version) == latest)),
                "{file}"
            );
            assert!(!r.legal_basis.is_empty(), "{file} cites its sources");
            assert!(r.publish_time.is_some(), "{file}");
        }
    }

    #[test]
    fn every_file_in_deploy_routes_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/routes");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("deploy/routes")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".toml") && !n.starts_with('.'))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = BUILTIN_FILES.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(
            on_disk, listed,
            "list new files of deploy/routes in BUILTIN_FILES"
        );
        // The directory also loads as a routes_dir, identically to the built-in copy.
        let merged = RouteCatalog::load(Some(&dir)).expect("same content");
        assert_eq!(merged.len(), BUILTIN_FILES.len());
    }

    #[test]
    fn police_to_station_mediation_follows_xigang_practice() {
        let c = RouteCatalog::builtin().expect("builtin");
        let r = c.current("police-to-station-mediation").expect("route");
        assert_eq!(r.from_kind, AgencyKind::PoliceStation as i32);
        assert_eq!(r.to_kind, AgencyKind::StationMediationRoom as i32);
        let steps: Vec<_> = r
            .approval_steps
            .iter()
            .map(|s| (s.required_role.as_str(), s.approver_scope))
            .collect();
        assert_eq!(
            steps,
            [
                ("command_room_reviewer", ApproverScope::ParentAgency as i32),
                ("duty_chief", ApproverScope::SendingAgency as i32),
            ]
        );
        let a = r.acceptance_clock.as_ref().expect("acceptance");
        assert_eq!((a.unit, a.length), (ClockUnit::WorkingDay as i32, 1));
        assert_eq!(a.expiry_action, ClockExpiryAction::ReturnToSender as i32);
        // 人民调解工作若干规定 Art 33: usually within one month.
        let f = r.feedback_clock.as_ref().expect("feedback");
        assert_eq!((f.unit, f.length), (ClockUnit::CalendarDay as i32, 30));
        assert_eq!(f.extension_rule, ClockExtensionRule::PartyConsent as i32);
        assert_eq!((f.max_extension, f.hard_cap), (30, 60));
        let pauses: Vec<_> = f.pausable_reasons.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(pauses, [PAUSE_SUPPLEMENTARY_INVESTIGATION, PAUSE_APPRAISAL]);
        let outcomes: Vec<_> = r
            .feedback_outcomes
            .iter()
            .map(|p| p.code.as_str())
            .collect();
        assert!(outcomes.contains(&"party_refused"), "人民调解法 Art 17");
        // 人民调解法 Art 25: escalation is an action with its own codes, not an outcome.
        assert!(!outcomes.contains(&"escalated"));
        let escalations: Vec<_> = r
            .escalation_reasons
            .iter()
            .map(|p| p.code.as_str())
            .collect();
        assert!(
            escalations.contains(&"risk_of_escalation"),
            "{escalations:?}"
        );
        assert!(
            !r.return_reasons
                .iter()
                .any(|p| p.code == "risk_of_escalation"),
            "escalating is not returning"
        );
        assert_eq!(r.version, 2);
        assert!(
            c.get("police-to-station-mediation", 1)
                .is_some_and(|v1| v1.escalation_reasons.is_empty() && !v1.current),
            "v1 stays as published, for the transfers pinned to it"
        );
        assert!(
            !r.allowed_personal_info
                .contains(&(PersonalInfoField::CallerPhone as i32))
        );
        // The found route from police station to mediation room is this one.
        let found = c.find(AgencyKind::PoliceStation, AgencyKind::StationMediationRoom);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "routes/police-to-station-mediation");
        // Escalation and investigation ride the original transfer: no route goes back.
        let back = c.find(AgencyKind::StationMediationRoom, AgencyKind::PoliceStation);
        assert!(back.is_empty());
        let back = c.find(AgencyKind::MediationCommittee, AgencyKind::PoliceStation);
        assert!(back.is_empty());
    }

    #[test]
    fn judicial_confirmation_extension_needs_the_court_president() {
        let c = RouteCatalog::builtin().expect("builtin");
        let r = c.current("mediation-to-court-confirmation").expect("route");
        let f = r.feedback_clock.as_ref().expect("feedback");
        // 2011 司法确认 rules Art 5: 15 days, +10 with the president's approval.
        assert_eq!((f.length, f.max_extension, f.hard_cap), (15, 10, 25));
        assert_eq!(f.extension_rule, ClockExtensionRule::Approver as i32);
        assert_eq!(f.extension_approver_role, "court_president");
        assert!(r.escalation_reasons.is_empty(), "nothing to escalate to");
    }

    #[test]
    fn court_delegation_returns_materials_on_expiry_and_escalates_false_mediation() {
        let c = RouteCatalog::builtin().expect("builtin");
        let r = c.current("court-to-invited-mediation").expect("route");
        assert_eq!(r.version, 3);
        // 特邀调解规定 Art 21: on expiry the materials go back to the court.
        let f = r.feedback_clock.as_ref().expect("feedback");
        assert_eq!(f.expiry_action, ClockExpiryAction::ReturnToSender as i32);
        // 特邀调解规定 Art 18: suspected false mediation is reported to the court.
        let codes: Vec<_> = r
            .escalation_reasons
            .iter()
            .map(|e| e.code.as_str())
            .collect();
        assert_eq!(codes, ["suspected_false_mediation"]);
        for gone in [
            "mediation-to-police-escalation",
            "mediation-to-police-investigation",
            "committee-to-police-escalation",
        ] {
            assert!(c.current(gone).is_none(), "{gone} is retired");
        }
    }

    #[test]
    fn court_delegation_v3_declares_contact_parties() {
        let c = RouteCatalog::builtin().expect("builtin");
        let r = c.current("court-to-invited-mediation").expect("route");
        // 在线调解规则 Art 15: contact the parties within 3 working days of accepting.
        let names: Vec<_> = r.clocks.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["contact_parties"]);
        let k = &r.clocks[0];
        assert_eq!(k.starts_on, ClockStart::Accepted as i32);
        assert!(k.description.contains("第十五条"), "{}", k.description);
        let rule = k.rule.as_ref().expect("rule");
        assert_eq!(rule.unit, ClockUnit::WorkingDay as i32);
        assert_eq!(rule.length, 3);
        assert_eq!(rule.expiry_action, ClockExpiryAction::ReturnToSender as i32);
        assert_eq!(
            rule.extension_rule,
            ClockExtensionRule::NotExtendable as i32
        );
        // v2 stays as it was, for the transfers pinned to it.
        let v2 = c.get("court-to-invited-mediation", 2).expect("v2");
        assert!(v2.clocks.is_empty() && !v2.current);
        // The police route declares no named clocks.
        let police = c.current("police-to-station-mediation").expect("police");
        assert!(police.clocks.is_empty());
    }

    const NAMED: &str = "\n[[clocks]]\nname = \"contact_parties\"\nstarts_on = \"accepted\"\n\
        unit = \"working_day\"\nlength = 3\nexpiry_action = \"return_to_sender\"\n\
        description = \"三个工作日内联系当事人（在线调解规则第十五条）\"\n";

    #[test]
    fn named_clocks_are_parsed() {
        let r = parse_route(BASE_FILE, &format!("{BASE}{NAMED}")).expect("valid");
        assert_eq!(r.clocks.len(), 1);
        assert_eq!(r.clocks[0].name, "contact_parties");
        assert_eq!(r.clocks[0].starts_on, ClockStart::Accepted as i32);
        assert_eq!(r.clocks[0].rule.as_ref().map(|c| c.length), Some(3));
        // Every expiry action and both start events are accepted: the engine carries them out.
        for action in ["return_to_sender", "escalate", "notify_only"] {
            for start in ["accepted", "offered"] {
                let text = format!("{BASE}{NAMED}")
                    .replace(
                        "expiry_action = \"return_to_sender\"\ndescription",
                        &format!("expiry_action = \"{action}\"\ndescription"),
                    )
                    .replace(
                        "starts_on = \"accepted\"",
                        &format!("starts_on = \"{start}\""),
                    );
                let r = parse_route(BASE_FILE, &text)
                    .unwrap_or_else(|e| panic!("{action} {start}: {e}"));
                assert_eq!(
                    r.clocks[0].rule.as_ref().map(|c| c.expiry_action),
                    Some(
                        ClockExpiryAction::from_str_name(&format!(
                            "CLOCK_EXPIRY_ACTION_{}",
                            action.to_ascii_uppercase()
                        ))
                        .map(|a| a as i32)
                        .unwrap_or(-1)
                    ),
                    "{action}"
                );
            }
        }
        // No [[clocks]]: none.
        assert!(
            parse_route(BASE_FILE, BASE)
                .expect("base")
                .clocks
                .is_empty()
        );
    }

    #[test]
    fn named_clock_refusals() {
        let named = format!("{BASE}{NAMED}");
        for (what, text, key) in [
            (
                "a name with capitals",
                named.replace("\"contact_parties\"", "\"Contact\""),
                "clocks[0].name",
            ),
            (
                "an empty name",
                named.replace("name = \"contact_parties\"\n", ""),
                "clocks[0].name",
            ),
            (
                "a name longer than 40",
                named.replace("\"contact_parties\"", &format!("\"{}\"", "a".repeat(41))),
                "clocks[0].name",
            ),
            (
                "the built-in acceptance clock",
                named.replace("\"contact_parties\"", "\"acceptance\""),
                "clocks[0].name",
            ),
            (
                "the built-in feedback clock",
                named.replace("\"contact_parties\"", "\"feedback\""),
                "clocks[0].name",
            ),
            ("a duplicate", format!("{named}{NAMED}"), "clocks[1].name"),
            (
                "no start event",
                named.replace("starts_on = \"accepted\"\n", ""),
                "clocks[0].starts_on",
            ),
            (
                "an unknown start event",
                named.replace("\"accepted\"", "\"submitted\""),
                "clocks[0].starts_on",
            ),
            (
                "no description",
                named.replace(
                    "description = \"三个工作日内联系当事人（在线调解规则第十五条）\"\n",
                    "",
                ),
                "clocks[0].description",
            ),
            (
                "a zero length (the existing clock validator)",
                named.replace("length = 3\nexpiry", "length = 0\nexpiry"),
                "clocks[0].length",
            ),
            (
                "no expiry action",
                named.replace(
                    "expiry_action = \"return_to_sender\"\ndescription",
                    "description",
                ),
                "clocks[0].expiry_action",
            ),
            (
                "an extendable named clock (nothing extends it)",
                format!("{named}extension_rule = \"party_consent\"\nmax_extension = 2\n"),
                "clocks[0].extension_rule",
            ),
            (
                "a pausable named clock (nothing pauses it)",
                format!(
                    "{named}  [[clocks.pausable_reasons]]\n  code = \"appraisal\"\n  description = \"鉴定\"\n"
                ),
                "clocks[0].pausable_reasons",
            ),
        ] {
            assert_ne!(text, named, "{what}");
            let found = problems(BASE_FILE, &text);
            assert!(
                found.iter().any(|p| p.key == key),
                "{what}: expected {key}, got {found:?}"
            );
        }
        // An unknown key in a named clock is a syntax error, as elsewhere.
        assert!(matches!(
            parse_route(BASE_FILE, &format!("{named}starts_after = \"x\"\n")),
            Err(RouteError::Syntax { .. })
        ));
    }

    #[test]
    fn escalation_reasons_are_parsed_and_checked() {
        let with = format!(
            "{BASE}\n[[escalation_reasons]]\ncode = \"risk_of_escalation\"\ndescription = \"可能激化\"\n"
        );
        let r = parse_route(BASE_FILE, &with).expect("valid");
        assert_eq!(r.escalation_reasons.len(), 1);
        assert_eq!(r.escalation_reasons[0].description, "可能激化");
        assert!(
            parse_route(BASE_FILE, BASE)
                .expect("valid")
                .escalation_reasons
                .is_empty()
        );
        let dup = format!(
            "{with}\n[[escalation_reasons]]\ncode = \"risk_of_escalation\"\ndescription = \"重复\"\n"
        );
        let found = problems(BASE_FILE, &dup);
        assert!(
            found.iter().any(|p| p.key == "escalation_reasons[1].code"),
            "{found:?}"
        );
        let bad = with.replace("\"risk_of_escalation\"", "\"Risk\"");
        let found = problems(BASE_FILE, &bad);
        assert!(
            found.iter().any(|p| p.key == "escalation_reasons[0].code"),
            "{found:?}"
        );
    }

    /// The validator refuses each clock combination the engine cannot carry out.
    #[test]
    fn clock_settings_the_engine_cannot_carry_out_are_refused() {
        let acceptance = "[acceptance_clock]\nunit = \"working_day\"\nlength = 1\n";
        let expiry = "expiry_action = \"return_to_sender\"\n";
        for (what, replacement, key) in [
            (
                "an extendable acceptance clock (nothing can extend it)",
                format!(
                    "{acceptance}{expiry}extension_rule = \"party_consent\"\nmax_extension = 2\n"
                ),
                "acceptance_clock.extension_rule",
            ),
            (
                "an acceptance clock extended by an approver",
                format!(
                    "{acceptance}{expiry}extension_rule = \"approver\"\nextension_approver_role = \"duty_chief\"\nmax_extension = 2\n"
                ),
                "acceptance_clock.extension_rule",
            ),
            (
                "a pausable acceptance clock (nothing can pause it)",
                format!(
                    "{acceptance}{expiry}  [[acceptance_clock.pausable_reasons]]\n  code = \"appraisal\"\n  description = \"鉴定\"\n"
                ),
                "acceptance_clock.pausable_reasons",
            ),
        ] {
            // The whole acceptance table is replaced (its pausable reasons must come last).
            let text = BASE.replace(&format!("{acceptance}{expiry}"), &replacement);
            assert_ne!(text, BASE, "{what}");
            let found = problems(BASE_FILE, &text);
            assert!(
                found.iter().any(|p| p.key == key),
                "{what}: expected {key}, got {found:?}"
            );
        }
        // Every expiry action is accepted on both clocks: the engine carries each out.
        for clock in ["acceptance_clock", "feedback_clock"] {
            for action in ["return_to_sender", "escalate", "notify_only"] {
                let text = match clock {
                    "acceptance_clock" => BASE.replace(
                        "expiry_action = \"return_to_sender\"",
                        &format!("expiry_action = \"{action}\""),
                    ),
                    _ => BASE.replace(
                        "expiry_action = \"notify_only\"",
                        &format!("expiry_action = \"{action}\""),
                    ),
                };
                parse_route(BASE_FILE, &text).unwrap_or_else(|e| panic!("{clock} {action}: {e}"));
            }
        }
    }

    #[test]
    fn each_validation_error_is_caught() {
        // (what, file name, text, key that must be reported)
        let b = BASE;
        let cases: Vec<(&str, &str, String, &str)> = vec![
            ("unknown from kind", BASE_FILE, b.replace("from_kind = \"police_station\"", "from_kind = \"police\""), "from_kind"),
            ("missing to kind", BASE_FILE, b.replace("to_kind = \"station_mediation_room\"", ""), "to_kind"),
            ("version 0", "test-route.v0.toml", b.replace("version = 1", "version = 0"), "version"),
            ("missing version", BASE_FILE, b.replace("version = 1", ""), "version"),
            ("bad id", "Test_Route.v1.toml", b.replace("id = \"test-route\"", "id = \"Test_Route\""), "id"),
            ("file name mismatch", "other.v1.toml", b.to_string(), "file_name"),
            ("file name version mismatch", "test-route.v2.toml", b.to_string(), "file_name"),
            ("no display name", BASE_FILE, b.replace("display_name = \"测试路径\"", ""), "display_name"),
            ("no legal basis", BASE_FILE, b.replace("legal_basis = \"《人民调解法》第十八条\"", "legal_basis = \"  \""), "legal_basis"),
            ("step without role", BASE_FILE, b.replace("required_role = \"duty_chief\"", ""), "approval_steps[0].required_role"),
            ("step role not snake", BASE_FILE, b.replace("required_role = \"duty_chief\"", "required_role = \"Duty Chief\""), "approval_steps[0].required_role"),
            ("step without name", BASE_FILE, b.replace("display_name = \"值班所长审批\"", ""), "approval_steps[0].display_name"),
            ("step bad scope", BASE_FILE, b.replace("\"sending_agency\"", "\"grandparent_agency\""), "approval_steps[0].approver_scope"),
            ("step no scope", BASE_FILE, b.replace("approver_scope = \"sending_agency\"", ""), "approval_steps[0].approver_scope"),
            ("zero-length clock", BASE_FILE, b.replace("length = 1\n", "length = 0\n"), "acceptance_clock.length"),
            ("absurd clock", BASE_FILE, b.replace("length = 1\n", "length = 100000\n"), "acceptance_clock.length"),
            ("missing acceptance clock", BASE_FILE, b.replace("[acceptance_clock]\nunit = \"working_day\"\nlength = 1\nexpiry_action = \"return_to_sender\"\n", ""), "acceptance_clock"),
            ("unknown unit", BASE_FILE, b.replace("unit = \"calendar_day\"", "unit = \"fortnight\""), "feedback_clock.unit"),
            ("missing unit", BASE_FILE, b.replace("unit = \"calendar_day\"", ""), "feedback_clock.unit"),
            ("unknown expiry action", BASE_FILE, b.replace("\"return_to_sender\"", "\"ignore\""), "acceptance_clock.expiry_action"),
            ("missing expiry action", BASE_FILE, b.replace("expiry_action = \"notify_only\"", ""), "feedback_clock.expiry_action"),
            ("unknown extension rule", BASE_FILE, b.replace("\"party_consent\"", "\"always\""), "feedback_clock.extension_rule"),
            ("unbounded extension", BASE_FILE, b.replace("max_extension = 30\nhard_cap = 60\n", ""), "feedback_clock.max_extension"),
            ("hard cap below length", BASE_FILE, b.replace("hard_cap = 60", "hard_cap = 20"), "feedback_clock.hard_cap"),
            ("hard cap never reached", BASE_FILE, b.replace("hard_cap = 60", "hard_cap = 90"), "feedback_clock.hard_cap"),
            ("extension on a fixed clock", BASE_FILE, b.replace("length = 1\n", "length = 1\nmax_extension = 2\n"), "acceptance_clock.max_extension"),
            ("hard cap on a fixed clock", BASE_FILE, b.replace("length = 1\n", "length = 1\nhard_cap = 2\n"), "acceptance_clock.hard_cap"),
            ("approver rule without role", BASE_FILE, b.replace("\"party_consent\"", "\"approver\""), "feedback_clock.extension_approver_role"),
            ("approver role without approver rule", BASE_FILE, b.replace("max_extension = 30", "max_extension = 30\nextension_approver_role = \"duty_chief\""), "feedback_clock.extension_approver_role"),
            ("holiday calendar on a day clock", BASE_FILE, b.replace("unit = \"calendar_day\"", "unit = \"calendar_day\"\nholiday_calendar = \"cn-mainland\""), "feedback_clock.holiday_calendar"),
            ("bad holiday calendar name", BASE_FILE, b.replace("unit = \"working_day\"", "unit = \"working_day\"\nholiday_calendar = \"CN Mainland\""), "acceptance_clock.holiday_calendar"),
            ("duplicate decline codes", BASE_FILE, b.replace("code = \"outside_jurisdiction\"", "code = \"not_civil_dispute\""), "decline_reasons[1].code"),
            ("upper-case code", BASE_FILE, b.replace("code = \"not_civil_dispute\"", "code = \"NOT_CIVIL_DISPUTE\""), "decline_reasons[0].code"),
            ("empty code", BASE_FILE, b.replace("code = \"agreement_reached\"", "code = \"\""), "feedback_outcomes[0].code"),
            ("reason without description", BASE_FILE, b.replace("description = \"调解成功\"", ""), "feedback_outcomes[0].description"),
            ("bad pause code", BASE_FILE, b.replace("code = \"appraisal\"", "code = \"鉴定\""), "feedback_clock.pausable_reasons[0].code"),
            ("no feedback outcomes", BASE_FILE, b.replace("[[feedback_outcomes]]\ncode = \"agreement_reached\"\ndescription = \"调解成功\"\n", ""), "feedback_outcomes"),
            ("unknown personal info", BASE_FILE, b.replace("[\"party_name\", \"party_phone\"]", "[\"party_email\"]"), "allowed_personal_info[0]"),
            ("duplicate personal info", BASE_FILE, b.replace("[\"party_name\", \"party_phone\"]", "[\"party_name\", \"party_name\"]"), "allowed_personal_info[1]"),
            ("full-view role not snake", BASE_FILE, b.replace("version = 1", "version = 1\nfull_personal_info_roles = [\"Mediator\"]"), "full_personal_info_roles[0]"),
            ("duplicate full-view role", BASE_FILE, b.replace("version = 1", "version = 1\nfull_personal_info_roles = [\"mediator\", \"mediator\"]"), "full_personal_info_roles[1]"),
            ("publish time without offset", BASE_FILE, b.replace("version = 1", "version = 1\npublish_time = 2026-11-22T00:00:00"), "publish_time"),
            ("publish date only", BASE_FILE, b.replace("version = 1", "version = 1\npublish_time = 2026-11-22"), "publish_time"),
        ];
        for (what, file, text, key) in cases {
            assert!(
                text != BASE || file != BASE_FILE,
                "{what}: the case must change something"
            );
            let found = problems(file, &text);
            assert!(
                found.iter().any(|p| p.key == key),
                "{what}: expected a problem at {key}, got {found:?}"
            );
            let err = parse_route(file, &text).expect_err("invalid").to_string();
            assert!(err.starts_with(file) && err.contains(key), "{what}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_syntax_errors() {
        for (what, text, needle) in [
            (
                "unknown top-level key",
                BASE.replace("version = 1", "version = 1\nowner = \"x\""),
                "owner",
            ),
            (
                "unknown clock key",
                BASE.replace("length = 1\n", "length = 1\nlenght = 2\n"),
                "lenght",
            ),
            (
                "unknown step key",
                BASE.replace(
                    "required_role = \"duty_chief\"",
                    "required_role = \"duty_chief\"\nrole = \"x\"",
                ),
                "role",
            ),
            (
                "negative version",
                BASE.replace("version = 1", "version = -1"),
                "version",
            ),
            ("not toml", "id = ".to_string(), ""),
        ] {
            match parse_route(BASE_FILE, &text) {
                Err(RouteError::Syntax { file, message }) => {
                    assert_eq!(file, BASE_FILE, "{what}");
                    assert!(message.contains(needle), "{what}: {message}");
                }
                other => panic!("{what}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn publish_time_converts_with_its_offset() {
        let text = BASE.replace(
            "version = 1",
            "version = 1\npublish_time = 2026-11-22T00:00:00+08:00",
        );
        let r = parse_route(BASE_FILE, &text).expect("valid");
        // 2026-11-21T16:00:00Z
        assert_eq!(r.publish_time.map(|t| t.seconds), Some(1_795_276_800));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn load_dir_skips_dotfiles_and_other_entries() {
        let dir = temp_dir("skip");
        let (name, text) = version_of("test-route", 1);
        // ConfigMap layout: ..data/<file>, and <file> -> ..data/<file>.
        let data = dir.join("..2026_11_22_00_00_00.000000001");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join(&name), &text).expect("write");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&data, dir.join("..data")).expect("link");
            std::os::unix::fs::symlink(dir.join("..data").join(&name), dir.join(&name))
                .expect("link");
        }
        #[cfg(not(unix))]
        std::fs::write(dir.join(&name), &text).expect("write");
        std::fs::write(dir.join(".hidden.v1.toml"), "not = [valid").expect("write");
        std::fs::write(dir.join("README.md"), "# routes").expect("write");
        std::fs::write(dir.join("notes.toml.bak"), "garbage").expect("write");
        std::fs::create_dir_all(dir.join("archive.toml")).expect("dir named like a file");
        let c = RouteCatalog::load_dir(&dir).expect("loads");
        assert_eq!(c.len(), 1);
        assert!(c.current("test-route").is_some_and(|r| r.current));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn load_dir_empty_missing_and_bad_files() {
        let dir = temp_dir("empty");
        let c = RouteCatalog::load_dir(&dir).expect("empty is fine");
        assert!(c.is_empty());
        let merged = RouteCatalog::load(Some(&dir)).expect("builtin only");
        assert_eq!(merged.len(), BUILTIN_FILES.len());

        std::fs::write(
            dir.join("test-route.v1.toml"),
            BASE.replace("length = 1\n", "length = 0\n"),
        )
        .expect("write");
        match RouteCatalog::load_dir(&dir) {
            Err(RouteError::Invalid { file, problems }) => {
                assert!(file.ends_with("test-route.v1.toml"), "{file}");
                assert_eq!(problems[0].key, "acceptance_clock.length");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(matches!(
            RouteCatalog::load_dir(&dir),
            Err(RouteError::Io { .. })
        ));
    }

    #[test]
    fn versions_are_pinned_and_the_highest_is_current() {
        let v1 = version_of("test-route", 1);
        let v2 = version_of("test-route", 2);
        let c = RouteCatalog::from_files([v2.clone(), v1.clone()]).expect("two versions");
        assert_eq!(c.len(), 2);
        let r1 = c.get("test-route", 1).expect("v1 stays readable");
        let r2 = c.get("test-route", 2).expect("v2");
        assert!(!r1.current && r2.current);
        assert_eq!(r1.display_name, "测试路径 第1版");
        assert_ne!(r1.etag, r2.etag);
        assert_eq!(c.current("test-route").map(|r| r.version), Some(2));
        assert_eq!(
            c.by_name("routes/test-route", 0).map(|r| r.version),
            Some(2)
        );
        assert_eq!(
            c.by_name("routes/test-route", 1).map(|r| r.version),
            Some(1)
        );
        assert!(c.get("test-route", 3).is_none());
        assert!(
            c.get("test-route", 0).is_none(),
            "get is exact; 0 is not a version"
        );
        assert!(c.current("no-such-route").is_none());
        let versions: Vec<u32> = c.list().map(|r| r.version).collect();
        assert_eq!(versions, [1, 2]);
        let found = c.find(AgencyKind::PoliceStation, AgencyKind::StationMediationRoom);
        assert_eq!(found.iter().map(|r| r.version).collect::<Vec<_>>(), [2]);

        // A new version in the configured dir on top of the built-in ones (v1 and v2).
        let dir = temp_dir("v3");
        let (name, text) = version_of("police-to-station-mediation", 3);
        std::fs::write(dir.join(name), text).expect("write");
        let c = RouteCatalog::load(Some(&dir)).expect("builtin + v3");
        assert_eq!(
            c.current("police-to-station-mediation").map(|r| r.version),
            Some(3)
        );
        assert!(
            c.get("police-to-station-mediation", 1)
                .is_some_and(|r| !r.current && r.approval_steps.len() == 2)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn conflicting_duplicates_are_refused_identical_ones_accepted() {
        let builtin = RouteCatalog::builtin().expect("builtin");
        let (name, text) = BUILTIN_FILES
            .iter()
            .copied()
            .find(|(n, _)| *n == "police-to-station-mediation.v1.toml")
            .expect("built in");
        // The same content, even reformatted with comments, is the same version.
        let same = RouteCatalog::from_files([(name, format!("# copy\n{text}"))]).expect("copy");
        let merged = builtin.clone().merge(same).expect("identical is fine");
        assert_eq!(merged.len(), builtin.len());

        let changed = text.replace("length = 1\n", "length = 2\n");
        assert_ne!(changed, text, "a one-day acceptance clock");
        let other = RouteCatalog::from_files([(name, changed)]).expect("valid on its own");
        match builtin.merge(other) {
            Err(RouteError::Conflict { id, version, .. }) => {
                assert_eq!((id.as_str(), version), ("police-to-station-mediation", 1));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // Two files of one source, too.
        let a = version_of("test-route", 1);
        let mut b = a.clone();
        b.0 = format!("other/{}", b.0);
        b.1 = b.1.replace("调解成功", "调解成功。");
        assert!(matches!(
            RouteCatalog::from_files([a, b]),
            Err(RouteError::Conflict { .. })
        ));
    }

    #[test]
    fn gaps_and_kind_changes_between_versions_are_refused() {
        let v2 = RouteCatalog::from_files([version_of("test-route", 2)]).expect("v2 alone");
        match RouteCatalog::default().merge(v2) {
            Err(RouteError::MissingVersion {
                id,
                missing,
                latest,
            }) => {
                assert_eq!((id.as_str(), missing, latest), ("test-route", 1, 2));
            }
            other => panic!("expected a gap, got {other:?}"),
        }
        let dir = temp_dir("gap");
        let (name, text) = version_of("police-to-station-mediation", 4);
        std::fs::write(dir.join(name), text).expect("write");
        assert!(matches!(
            RouteCatalog::load(Some(&dir)),
            Err(RouteError::MissingVersion { missing: 3, .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");

        let v1 = version_of("test-route", 1);
        let (n2, t2) = version_of("test-route", 2);
        let t2 = t2.replace("\"station_mediation_room\"", "\"mediation_committee\"");
        let c = RouteCatalog::from_files([v1]).expect("v1");
        let d = RouteCatalog::from_files([(n2, t2)]).expect("v2");
        assert!(matches!(
            c.merge(d),
            Err(RouteError::KindsChanged { version: 2, .. })
        ));
    }

    fn service() -> Routes {
        Routes::new(Arc::new(RouteCatalog::builtin().expect("builtin")))
    }

    fn authed<T>(msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.extensions_mut().insert(identity());
        r
    }

    #[tokio::test]
    async fn rpc_get_route() {
        let s = service();
        let got = s
            .get_route(authed(GetRouteRequest {
                name: "routes/police-to-station-mediation".into(),
                version: 0,
            }))
            .await
            .expect("current")
            .into_inner()
            .route
            .expect("route");
        assert!(got.current);
        assert_eq!(got.version, 2);
        let exact = s
            .get_route(authed(GetRouteRequest {
                name: "routes/police-to-station-mediation".into(),
                version: 2,
            }))
            .await
            .expect("v2")
            .into_inner();
        assert_eq!(exact.route, Some(got));
        let v1 = s
            .get_route(authed(GetRouteRequest {
                name: "routes/police-to-station-mediation".into(),
                version: 1,
            }))
            .await
            .expect("v1 stays readable")
            .into_inner()
            .route
            .expect("route");
        assert!(!v1.current && v1.version == 1);

        for (name, version, code) in [
            ("routes/no-such-route", 0, tonic::Code::NotFound),
            (
                "routes/police-to-station-mediation",
                9,
                tonic::Code::NotFound,
            ),
            (
                "route/police-to-station-mediation",
                0,
                tonic::Code::InvalidArgument,
            ),
            ("", 0, tonic::Code::InvalidArgument),
        ] {
            let err = s
                .get_route(authed(GetRouteRequest {
                    name: name.into(),
                    version,
                }))
                .await
                .expect_err("refused");
            assert_eq!(err.code(), code, "{name} v{version}");
        }
        let err = s
            .get_route(Request::new(GetRouteRequest {
                name: "routes/police-to-station-mediation".into(),
                version: 0,
            }))
            .await
            .expect_err("no identity");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn rpc_list_routes_pages_and_filters() {
        let mut catalog = RouteCatalog::builtin().expect("builtin");
        let (n, t) = version_of("police-to-station-mediation", 3);
        catalog = catalog
            .merge(RouteCatalog::from_files([(n, t)]).expect("v3"))
            .expect("merged");
        let s = Routes::new(Arc::new(catalog));

        // All current versions, two per page, in name order.
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = s
                .list_routes(authed(ListRoutesRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                }))
                .await
                .expect("page")
                .into_inner();
            assert!(page.routes.len() <= 2);
            names.extend(page.routes.iter().map(|r| (r.name.clone(), r.version)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(names.len(), s.catalog.list().filter(|r| r.current).count());
        assert_eq!(names.len(), 5, "five routes, each listed once");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&("routes/police-to-station-mediation".into(), 3)));

        // All versions, filtered by kinds.
        let all = s
            .list(&ListRoutesRequest {
                from_kind: AgencyKind::PoliceStation as i32,
                to_kind: AgencyKind::StationMediationRoom as i32,
                include_all_versions: true,
                ..Default::default()
            })
            .expect("list");
        let versions: Vec<_> = all.routes.iter().map(|r| (r.version, r.current)).collect();
        assert_eq!(versions, [(1, false), (2, false), (3, true)]);
        let to_committee = s
            .list(&ListRoutesRequest {
                to_kind: AgencyKind::MediationCommittee as i32,
                ..Default::default()
            })
            .expect("list");
        let names: Vec<_> = to_committee
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["routes/court-to-invited-mediation"]);

        // Refusals.
        let first = s
            .list(&ListRoutesRequest {
                page_size: 1,
                ..Default::default()
            })
            .expect("list");
        for (what, req) in [
            (
                "negative page size",
                ListRoutesRequest {
                    page_size: -1,
                    ..Default::default()
                },
            ),
            (
                "unknown kind",
                ListRoutesRequest {
                    from_kind: 99,
                    ..Default::default()
                },
            ),
            (
                "garbage token",
                ListRoutesRequest {
                    page_token: "!!".into(),
                    ..Default::default()
                },
            ),
            (
                "token from other filters",
                ListRoutesRequest {
                    page_token: first.next_page_token.clone(),
                    include_all_versions: true,
                    ..Default::default()
                },
            ),
        ] {
            let err = s.list_routes(authed(req)).await.expect_err(what);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}");
        }
        let err = s
            .list_routes(Request::new(ListRoutesRequest::default()))
            .await
            .expect_err("no identity");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
