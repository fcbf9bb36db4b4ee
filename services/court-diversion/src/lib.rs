//! Court diversion (诉前调解 / 委派调解): the domain core of a basic court's pre-filing cases,
//! delegated with the parties' consent to invited mediation organisations and back to case
//! registration on failure. Contract: `proto/fengqiao/courtdiversion/v1`.
//!
//! The pure domain: the lifecycle as a transition table ([`lifecycle`]), the rules and
//! deadlines as data ([`rules`]), the reconciliation of a case from its delegation's router
//! transfer ([`reconcile`]) and the statistics tally ([`Tally`]). Around it: the store
//! ([`store`]: cases, roster, event log, sample roster) and the gRPC service, router inbox
//! and deadline timer ([`CourtDiversion`]); handlers validate, call the domain, persist and
//! reply.
//!
//! # The practice
//!
//! Sources: 最高人民法院《关于人民法院特邀调解的规定》(法释〔2016〕14号, "特邀调解规定"),
//! 《人民法院在线调解规则》(法释〔2021〕23号, "在线调解规则"), 民事诉讼法 (CPL).
//!
//! 1. **Intake (预立案).** The court's 立案庭 registers a dispute brought to it before
//!    registration, with its own 诉前调 number, plaintiffs and defendants, claims with
//!    amounts, category, summary and evidence with content digests
//!    ([`rules::check_parties`], [`rules::check_claims`], [`rules::check_pre_filing_number`],
//!    [`rules::check_evidence_digests`]).
//! 2. **Consent.** Delegation before registration needs the parties' consent (特邀调解规定
//!    Art 1, 11): every party must consent; one refusal sends the case straight to
//!    registration ([`rules::consent_status`]).
//! 3. **Choice or designation.** The parties may jointly choose an invited mediator from
//!    the court's roster (特邀调解名册, 特邀调解规定 Art 5–8) within 2 working days; otherwise,
//!    or when they waive the choice, the court designates within 3 working days
//!    (在线调解规则 Art 10; [`rules::check_joint_choice`]; who and until when:
//!    [`rules::selection_actions`], the database's time deciding).
//! 4. **Delegation** goes to the organisation as a router transfer on the route
//!    `court-to-invited-mediation` ([`rules::ROUTE_NAME`]). The organisation accepts or
//!    declines within 3 working days; a decline or no answer lets the court designate
//!    another (在线调解规则 Art 12), up to a configured number of delegations
//!    ([`rules::RedesignationPolicy`], [`rules::check_designee`]).
//! 5. **Contact.** The mediator contacts the parties within 3 working days of acceptance;
//!    if they are unreachable or refuse, the mediation ends and the materials go back
//!    (在线调解规则 Art 15).
//! 6. **Mediation** runs 30 days from acceptance (在线调解规则 Art 24), extendable with
//!    every party's consent (特邀调解规定 Art 27; cap from the route, local practice;
//!    [`rules::check_extension`]); appraisal (鉴定 / 评估) time is not counted (在线调解规则
//!    Art 26; pause reason [`rules::PAUSE_APPRAISAL`]). Suspected false mediation (虚假调解)
//!    suspends it and is reported to the judge (特邀调解规定 Art 18).
//! 7. **Ending** with one of the eight reasons of 在线调解规则 Art 25, each mapped to one
//!    feedback outcome code of the route ([`rules::outcome_code`]). An agreement is filed
//!    with the court (备案, 特邀调解规定 Art 19) and the court offers judicial confirmation,
//!    a mediation document after registration, or voluntary performance
//!    ([`rules::OFFERED_NEXT_STEPS`]).
//! 8. **Failure goes back** with the materials (特邀调解规定 Art 21), and the court decides on
//!    registration within 7 days: 立案, or a reasoned ruling refusing it (CPL Art 126;
//!    [`rules::check_docket_number`], [`rules::check_refusal`]).
//! 9. **Status and statistics** for the court: where each case is, what is overdue, and
//!    outcomes, average days and overdue counts by organisation and mediator (the 业绩档案
//!    of 特邀调解规定 Art 5–10; [`Tally`]).
//!
//! Deadlines are data ([`rules::deadlines`]): each is a [`fengqiao_proto::common::ClockRule`]
//! for the shared clock engine, the states it runs in and what its expiry does.

pub mod error;
pub mod lifecycle;
/// The service's entry in the registry the binary starts services from.
pub mod module;
pub mod reconcile;
pub mod rules;
mod service;
pub mod store;

pub use module::MODULE;

pub use service::CourtDiversion;
pub use store::{SCHEMA, SERVICE, SeedOrganization, SeedRoster, migrate, seed_rosters};

pub use fengqiao_proto::courtdiversion::{
    CaseStatisticsRow, DelegationResult, EndReason, NextStep, PreFilingCaseState, ReturnCause,
    SelectionMethod,
};
pub use lifecycle::{Action, EndKind, Side};
pub use rules::RuleError;

use fengqiao_kit::agency::MeanDays;
use fengqiao_proto::common::DisputeCategory;

/// What the statistics need of one case (业绩档案, 特邀调解规定 Art 5–10). No personal
/// information.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaseSummary {
    /// Current state.
    pub state: PreFilingCaseState,
    /// Category of the dispute.
    pub category: DisputeCategory,
    /// The organisation of the last delegation, if any
    /// (`invitedOrganizations/{invited_organization}`).
    pub organization: String,
    /// The mediator of the last delegation, if named.
    pub mediator: String,
    /// How the mediation ended, if it did.
    pub end_reason: EndReason,
    /// Number of delegations made.
    pub delegations: u32,
    /// Number of delegations declined or timed out.
    pub declined: u32,
    /// Whether any clock of the case passed its deadline.
    pub overdue: bool,
    /// Calendar days from acceptance to the end of mediation, if it ended.
    pub mediation_days: Option<f64>,
}

/// Adds up [`CaseSummary`]s into one [`CaseStatisticsRow`] (grouping is the caller's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    cases: u64,
    delegations: u64,
    declined: u64,
    agreements: u64,
    failed: u64,
    overdue: u64,
    days: MeanDays,
}

impl Tally {
    /// Adds one case.
    pub fn add(&mut self, c: &CaseSummary) {
        self.cases += 1;
        self.delegations += u64::from(c.delegations);
        self.declined += u64::from(c.declined);
        match rules::end_kind(c.end_reason) {
            Some(EndKind::Agreement) => self.agreements += 1,
            Some(EndKind::Failed) => self.failed += 1,
            Some(EndKind::SettledAndWithdrawn) | None => {}
        }
        self.overdue += u64::from(c.overdue);
        self.days.add(c.mediation_days);
    }

    /// The totals; grouping fields are left for the caller to fill.
    pub fn row(&self) -> CaseStatisticsRow {
        let ended = self.agreements + self.failed;
        CaseStatisticsRow {
            case_count: self.cases,
            delegation_count: self.delegations,
            declined_count: self.declined,
            agreement_count: self.agreements,
            failed_count: self.failed,
            overdue_count: self.overdue,
            average_mediation_days: self.days.mean(),
            agreement_rate: if ended == 0 {
                0.0
            } else {
                self.agreements as f64 / ended as f64
            },
            ..CaseStatisticsRow::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(end_reason: EndReason, days: Option<f64>, overdue: bool) -> CaseSummary {
        CaseSummary {
            end_reason,
            mediation_days: days,
            overdue,
            delegations: 1,
            ..CaseSummary::default()
        }
    }

    #[test]
    fn tally_counts_outcomes_days_and_overdue() {
        let mut t = Tally::default();
        assert_eq!(t.row().agreement_rate, 0.0);
        assert_eq!(t.row().average_mediation_days, 0.0);
        t.add(&summary(EndReason::Agreement, Some(10.0), false));
        t.add(&summary(EndReason::GapTooLarge, Some(30.0), true));
        t.add(&summary(EndReason::PeriodExpired, Some(20.0), true));
        t.add(&summary(EndReason::SettledAndWithdrawn, Some(5.0), false));
        t.add(&CaseSummary {
            delegations: 2,
            declined: 2,
            ..CaseSummary::default()
        });
        t.add(&summary(EndReason::Agreement, Some(f64::NAN), false));
        let r = t.row();
        assert_eq!(r.case_count, 6);
        assert_eq!(r.delegation_count, 7);
        assert_eq!(r.declined_count, 2);
        assert_eq!(r.agreement_count, 2);
        assert_eq!(r.failed_count, 2);
        assert_eq!(r.overdue_count, 2);
        assert_eq!(r.agreement_rate, 0.5);
        // NaN is ignored: (10 + 30 + 20 + 5) / 4.
        assert_eq!(r.average_mediation_days, 16.25);
    }
}
