//! Judicial confirmation (司法确认): a basic court confirms or dismisses a people's mediation
//! agreement on the parties' joint application. Contract:
//! `proto/fengqiao/judicialconfirmation/v1`.
//!
//! This crate holds the pure domain: the lifecycle as a transition table ([`lifecycle`]),
//! the rules, grounds and clocks as data and plain functions citing their articles
//! ([`rules`]) and the statistics tally ([`Tally`]); around it the store ([`store`]), the gRPC
//! handlers and the court's router inbox ([`JudicialConfirmation`]), and what of the court's
//! acts goes back to the committee on its transfer ([`routed`]). The committee's sender side
//! is `MediationService.ApplyForConfirmation` in the mediation service. Pre-filing
//! applications (诉前调确) come in-process from the same court's court diversion service
//! ([`JudicialConfirmation::take_in`]); overdue clocks are swept by a timer
//! ([`JudicialConfirmation::sweep_overdue`]). What is not built: see the README.
//!
//! # The practice
//!
//! 1. **Application** jointly by every party (人民调解法 Art 33; 民事诉讼法 Art 205;
//!    [`rules::check_joint`]) within 30 days of the agreement taking effect
//!    ([`rules::check_application_period`]), to the competent court (法释〔2011〕5号 Art 2;
//!    [`rules::check_court`]), with the package of Art 3 ([`rules::check_package`]) and the
//!    agreement's content digest ([`rules::check_digest`]).
//! 2. **Acceptance** within 3 days (Art 4; [`rules::acceptance_rule`]) with a 调确 number
//!    ([`rules::check_confirmation_number`]), or not, on a ground of 民诉法解释 Art 355
//!    ([`rules::NOT_ACCEPTED_GROUNDS`]).
//! 3. **Review** within 15 days, +10 with the president's approval (Art 5), within the
//!    special procedure's 30 days (民事诉讼法 Art 187; [`rules::review_rule`]); supplementary
//!    materials pause the clock (Art 6; [`rules::PAUSE_SUPPLEMENT`]).
//! 4. **Ruling**: confirmed (民事诉讼法 Art 206) or dismissed on a ground of 民诉法解释 Art 358
//!    ([`rules::DISMISSAL_GROUNDS`]); no fee ([`rules::fee`], Art 11).
//! 5. **After**: objections (民诉法解释 Art 372; [`rules::check_objection`]), enforcement
//!    handoff ([`application::hand_off_for_enforcement`], 民事诉讼法 Art 206), report of
//!    non-confirmations (Art 12; [`application::report_non_confirmation`]).

pub mod application;
pub mod lifecycle;
/// The service's entry in the registry the binary starts services from.
pub mod module;
pub mod routed;
pub mod rules;
mod service;
pub mod store;

pub use module::MODULE;

pub use fengqiao_proto::judicialconfirmation::{
    ApplicationSource, ApplicationState, GetApplicationStatisticsResponse, ObjectorKind,
    RulingOutcome,
};
pub use lifecycle::{Action, Side};
pub use service::JudicialConfirmation;
pub use store::{SCHEMA, SERVICE, migrate};

use std::collections::BTreeMap;

use fengqiao_kit::agency::MeanDays;

/// What the statistics need of one application. No personal information.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApplicationSummary {
    /// Current state.
    pub state: ApplicationState,
    /// The Art 355 or Art 358 ground, when NOT_ACCEPTED or DISMISSED.
    pub ground: String,
    /// Whether a clock passed its deadline.
    pub overdue: bool,
    /// Calendar days from receipt to the ruling, once ruled.
    pub days_to_decision: Option<f64>,
}

/// Adds up [`ApplicationSummary`]s into the statistics response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    row: GetApplicationStatisticsResponse,
    grounds: BTreeMap<String, u64>,
    days: MeanDays,
}

impl Tally {
    /// Adds one application.
    pub fn add(&mut self, a: &ApplicationSummary) {
        let r = &mut self.row;
        r.application_count += 1;
        match a.state {
            ApplicationState::Confirmed => r.confirmed_count += 1,
            ApplicationState::Dismissed => r.dismissed_count += 1,
            ApplicationState::NotAccepted => r.not_accepted_count += 1,
            ApplicationState::Withdrawn => r.withdrawn_count += 1,
            _ => {}
        }
        if matches!(
            a.state,
            ApplicationState::Dismissed | ApplicationState::NotAccepted
        ) && !a.ground.is_empty()
        {
            *self.grounds.entry(a.ground.clone()).or_default() += 1;
        }
        r.overdue_count += u64::from(a.overdue);
        self.days.add(a.days_to_decision);
    }

    /// The totals.
    pub fn response(&self) -> GetApplicationStatisticsResponse {
        GetApplicationStatisticsResponse {
            average_days_to_decision: self.days.mean(),
            ground_counts: self.grounds.clone(),
            ..self.row.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_outcomes_grounds_days_and_overdue() {
        let mut t = Tally::default();
        assert_eq!(t.response().average_days_to_decision, 0.0);
        let s = |state, ground: &str, overdue, days| ApplicationSummary {
            state,
            ground: ground.into(),
            overdue,
            days_to_decision: days,
        };
        t.add(&s(ApplicationState::Confirmed, "", false, Some(10.0)));
        t.add(&s(
            ApplicationState::Dismissed,
            "not_voluntary",
            true,
            Some(20.0),
        ));
        t.add(&s(
            ApplicationState::NotAccepted,
            "ownership_confirmation",
            false,
            None,
        ));
        t.add(&s(
            ApplicationState::NotAccepted,
            "ownership_confirmation",
            false,
            None,
        ));
        t.add(&s(ApplicationState::Withdrawn, "", false, None));
        t.add(&s(ApplicationState::UnderReview, "", true, Some(f64::NAN)));
        let r = t.response();
        assert_eq!(r.application_count, 6);
        assert_eq!(
            (
                r.confirmed_count,
                r.dismissed_count,
                r.not_accepted_count,
                r.withdrawn_count
            ),
            (1, 1, 2, 1)
        );
        assert_eq!(r.overdue_count, 2);
        assert_eq!(r.average_days_to_decision, 15.0);
        assert_eq!(r.ground_counts.get("ownership_confirmation"), Some(&2));
        assert_eq!(r.ground_counts.get("not_voluntary"), Some(&1));
        assert_eq!(r.ground_counts.len(), 2);
    }
}
