//! Administrative dispute coordination (行政争议实质性化解): a coordination centre
//! (行政争议化解中心) coordinates a dispute between a citizen and an administrative organ, with
//! the organ, the reviewing organ (行政复议机关) and the procuratorate (行政检察) taking part.
//! Contract: `proto/fengqiao/admindispute/v1`.
//!
//! The domain is plain: the lifecycle as a transition table ([`lifecycle`]), the rules citing
//! their articles ([`rules`]), the acts on a dispute ([`dispute`]) and the statistics tally
//! ([`Tally`]); [`store`] persists, the service validates → domain → persist → reply.
//!
//! # The practice
//!
//! 1. **Intake** of the applicants, the act and the organ, the stage, the claims, evidence.
//! 2. **Scope**: mediation only for 行政赔偿, 补偿 and discretionary power (行政诉讼法 Art 60;
//!    行诉解释 Art 84; [`rules::scope`]); otherwise coordination without an agreement.
//! 3. **行政复议**: mediation suspends the review with both sides' consent (行政复议法
//!    Art 39(6)); the 60 (+30) day clock (Art 62; [`rules::review_rule`]) pauses for exactly
//!    the suspension; the 调解书 is effective once every party signed and the organ sealed
//!    (Art 73); withdrawn consent resumes the review; settlement → withdrawal, and the same
//!    facts cannot be brought again (Art 74; [`rules::facts_digest`]).
//! 4. **The procuratorate** asked over `coordination-to-procuratorate`; its review runs 3
//!    months (人民检察院行政诉讼监督规则 2016 Art 12; configuration).
//! 5. **Confidentiality** (行诉解释 Art 86): only participants see a dispute.

pub mod dispute;
pub mod lifecycle;
/// The service's entry in the registry the binary starts services from.
pub mod module;
pub mod rules;
mod service;
pub mod store;

pub use module::MODULE;

pub use fengqiao_proto::admindispute::{
    ActKind, DisputeResult, DisputeState, GetDisputeStatisticsResponse,
};
pub use lifecycle::Action;
pub use service::AdminDispute;
pub use store::{SCHEMA, SERVICE, migrate};

use std::collections::BTreeMap;

use fengqiao_kit::agency::MeanDays;

/// What the statistics need of one dispute. No personal information.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DisputeSummary {
    /// The organ (`agencies/{agency}`).
    pub organ: String,
    /// Kind of act.
    pub act_kind: ActKind,
    /// The result, once finished.
    pub result: DisputeResult,
    /// Whether a clock passed its deadline.
    pub overdue: bool,
    /// Calendar days from intake to the end, once finished.
    pub days_to_close: Option<f64>,
}

/// Adds up [`DisputeSummary`]s into the statistics response (业绩统计 of the centre).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    count: u64,
    organs: BTreeMap<String, u64>,
    kinds: BTreeMap<String, u64>,
    results: BTreeMap<String, u64>,
    overdue: u64,
    days: MeanDays,
}

impl Tally {
    /// Adds one dispute.
    pub fn add(&mut self, d: &DisputeSummary) {
        self.count += 1;
        *self.organs.entry(d.organ.clone()).or_default() += 1;
        *self
            .kinds
            .entry(d.act_kind.as_str_name().to_owned())
            .or_default() += 1;
        if d.result != DisputeResult::Unspecified {
            *self
                .results
                .entry(d.result.as_str_name().to_owned())
                .or_default() += 1;
        }
        self.overdue += u64::from(d.overdue);
        self.days.add(d.days_to_close);
    }

    /// The totals.
    pub fn response(&self) -> GetDisputeStatisticsResponse {
        GetDisputeStatisticsResponse {
            dispute_count: self.count,
            organ_counts: self.organs.clone().into_iter().collect(),
            act_kind_counts: self.kinds.clone().into_iter().collect(),
            result_counts: self.results.clone().into_iter().collect(),
            average_days_to_close: self.days.mean(),
            overdue_count: self.overdue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_by_organ_kind_result_days_and_overdue() {
        let mut t = Tally::default();
        assert_eq!(t.response().average_days_to_close, 0.0);
        let s = |organ: &str, kind, result, overdue, days| DisputeSummary {
            organ: organ.into(),
            act_kind: kind,
            result,
            overdue,
            days_to_close: days,
        };
        t.add(&s(
            "agencies/a",
            ActKind::Penalty,
            DisputeResult::OrganCorrection,
            false,
            Some(10.0),
        ));
        t.add(&s(
            "agencies/a",
            ActKind::Expropriation,
            DisputeResult::MediationAgreement,
            true,
            Some(20.0),
        ));
        t.add(&s(
            "agencies/b",
            ActKind::Expropriation,
            DisputeResult::Unspecified,
            true,
            None,
        ));
        t.add(&s(
            "agencies/b",
            ActKind::Penalty,
            DisputeResult::Decided,
            false,
            Some(f64::NAN),
        ));
        let r = t.response();
        assert_eq!(r.dispute_count, 4);
        assert_eq!(r.organ_counts.get("agencies/a"), Some(&2));
        assert_eq!(r.act_kind_counts.get("ACT_KIND_EXPROPRIATION"), Some(&2));
        assert_eq!(
            r.result_counts.get("DISPUTE_RESULT_ORGAN_CORRECTION"),
            Some(&1)
        );
        assert_eq!(r.result_counts.len(), 3);
        assert_eq!(r.overdue_count, 2);
        assert_eq!(r.average_days_to_close, 15.0);
    }
}
