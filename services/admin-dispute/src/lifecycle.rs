//! The dispute's state machine (行政争议实质性化解), as a plain transition table.
//!
//! ```text
//! OPEN ──start mediation (ALL Art 60; ARL Art 39(6) suspends the review)──► MEDIATING
//!   │                                  MEDIATING ──draft 调解书──► AGREEMENT_PENDING
//!   │      AGREEMENT_PENDING ──sign / seal (same state) … last of both (ARL Art 73)──► RESOLVED
//!   │      MEDIATING | AGREEMENT_PENDING ──consent withdrawn (ARL Art 73 ¶2)──► OPEN
//!   ├─start coordination (explanation, correction, withdrawal)──► COORDINATING
//!   │      OPEN | COORDINATING ──organ's correction──► RESOLVED
//!   │      OPEN | COORDINATING | MEDIATING ──settlement and withdrawal (ARL Art 74)──► WITHDRAWN
//!   └──────OPEN | COORDINATING ──decided / not resolved──► CLOSED
//! any open state: review extended (ARL Art 62), procuratorate asked / answering (same state)
//! ```

use fengqiao_proto::admindispute::DisputeState as S;

/// Everything that can happen to a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Mediation starts with both sides' consent (ALL Art 60; ARL Art 39(6)).
    StartMediation,
    /// Coordination without agreement starts.
    StartCoordination,
    /// A party withdraws consent before the 调解书 takes effect (ARL Art 73 ¶2).
    WithdrawConsent,
    /// The 调解书 is drafted.
    DraftAgreement,
    /// A signature or the seal that is not the last (same state).
    SignOrSeal,
    /// The last of the signatures and the seal: the 调解书 takes effect (ARL Art 73).
    AgreementEffective,
    /// The organ corrects its act.
    RecordCorrection,
    /// Settlement and withdrawal (ARL Art 74).
    RecordSettlement,
    /// The review is extended (ARL Art 62).
    ExtendReview,
    /// Closed: decided, or coordination failed.
    Close,
    /// The procuratorate is asked, or answers (2016 rules Art 12).
    Procuratorate,
    /// The result of a referred dispute is reported back to the procuratorate (same state).
    ReportBack,
    /// The claims are recorded again and the scope decided again (same state).
    AmendClaims,
}

impl Action {
    /// A short verb for messages (`Error::WrongState.action`).
    pub fn verb(self) -> &'static str {
        match self {
            Action::StartMediation => "start mediation on",
            Action::StartCoordination => "start coordination on",
            Action::WithdrawConsent => "withdraw consent on",
            Action::DraftAgreement => "draft an agreement on",
            Action::SignOrSeal | Action::AgreementEffective => "sign or seal the agreement of",
            Action::RecordCorrection => "record a correction on",
            Action::RecordSettlement => "record a settlement on",
            Action::ExtendReview => "extend the review of",
            Action::Close => "close",
            Action::Procuratorate => "involve the procuratorate in",
            Action::ReportBack => "report the result of",
            Action::AmendClaims => "amend the claims of",
        }
    }
}

/// Every action, for the exhaustive tests.
pub const ACTIONS: [Action; 13] = [
    Action::StartMediation,
    Action::StartCoordination,
    Action::WithdrawConsent,
    Action::DraftAgreement,
    Action::SignOrSeal,
    Action::AgreementEffective,
    Action::RecordCorrection,
    Action::RecordSettlement,
    Action::ExtendReview,
    Action::Close,
    Action::Procuratorate,
    Action::ReportBack,
    Action::AmendClaims,
];

/// The state after `action` in `state`, or `None` when the action is not allowed there.
pub fn next(state: S, action: Action) -> Option<S> {
    use Action as A;
    Some(match (state, action) {
        // ALL Art 60 / 行诉解释 Art 84: mediation with both sides' consent; ARL Art 39(6):
        // in 行政复议 it suspends the review.
        (S::Open, A::StartMediation) => S::Mediating,
        (S::Open, A::StartCoordination) => S::Coordinating,
        // Before anything is under way the claims (of a referral) may be recorded.
        (S::Open, A::AmendClaims) => S::Open,
        // ARL Art 73 ¶2: a party backing out before the 调解书 takes effect: the review
        // resumes and the organ decides.
        (S::Mediating | S::AgreementPending, A::WithdrawConsent) => S::Open,
        (S::Mediating, A::DraftAgreement) => S::AgreementPending,
        // ARL Art 73 ¶1: effective once every party signed and the organ sealed it.
        (S::AgreementPending, A::SignOrSeal) => S::AgreementPending,
        (S::AgreementPending, A::AgreementEffective) => S::Resolved,
        (S::Open | S::Coordinating, A::RecordCorrection) => S::Resolved,
        // ARL Art 74: settlement (和解) and withdrawal.
        (S::Open | S::Coordinating | S::Mediating, A::RecordSettlement) => S::Withdrawn,
        (S::Open | S::Coordinating, A::Close) => S::Closed,
        // ARL Art 62: extension while the review is pending; the procuratorate while open.
        (
            S::Open | S::Mediating | S::Coordinating | S::AgreementPending,
            A::ExtendReview | A::Procuratorate,
        ) => state,
        // The result goes back on the referral once there is one.
        (S::Resolved | S::Withdrawn | S::Closed, A::ReportBack) => state,
        _ => return None,
    })
}

/// Whether no state change can follow (only the report back of the result).
pub fn is_final(state: S) -> bool {
    matches!(state, S::Resolved | S::Withdrawn | S::Closed)
}

/// The state after `action`, or WRONG_STATE naming `resource` and the state.
pub fn require(resource: &str, state: S, action: Action) -> Result<S, fengqiao_kit::Error> {
    fengqiao_kit::lifecycle::require(
        resource,
        next(state, action),
        state.as_str_name(),
        action.verb(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;

    /// Every allowed transition, and nothing else: each (state, action) pair not listed here
    /// must be refused.
    const ALLOWED: &[(S, Action, S)] = &[
        (S::Open, A::StartMediation, S::Mediating),
        (S::Open, A::StartCoordination, S::Coordinating),
        (S::Open, A::AmendClaims, S::Open),
        (S::Open, A::RecordCorrection, S::Resolved),
        (S::Open, A::RecordSettlement, S::Withdrawn),
        (S::Open, A::Close, S::Closed),
        (S::Open, A::ExtendReview, S::Open),
        (S::Open, A::Procuratorate, S::Open),
        (S::Mediating, A::WithdrawConsent, S::Open),
        (S::Mediating, A::DraftAgreement, S::AgreementPending),
        (S::Mediating, A::RecordSettlement, S::Withdrawn),
        (S::Mediating, A::ExtendReview, S::Mediating),
        (S::Mediating, A::Procuratorate, S::Mediating),
        (S::Coordinating, A::RecordCorrection, S::Resolved),
        (S::Coordinating, A::RecordSettlement, S::Withdrawn),
        (S::Coordinating, A::Close, S::Closed),
        (S::Coordinating, A::ExtendReview, S::Coordinating),
        (S::Coordinating, A::Procuratorate, S::Coordinating),
        (S::AgreementPending, A::WithdrawConsent, S::Open),
        (S::AgreementPending, A::SignOrSeal, S::AgreementPending),
        (S::AgreementPending, A::AgreementEffective, S::Resolved),
        (S::AgreementPending, A::ExtendReview, S::AgreementPending),
        (S::AgreementPending, A::Procuratorate, S::AgreementPending),
        (S::Resolved, A::ReportBack, S::Resolved),
        (S::Withdrawn, A::ReportBack, S::Withdrawn),
        (S::Closed, A::ReportBack, S::Closed),
    ];

    const STATES: [S; 8] = [
        S::Unspecified,
        S::Open,
        S::Mediating,
        S::Coordinating,
        S::AgreementPending,
        S::Resolved,
        S::Withdrawn,
        S::Closed,
    ];

    #[test]
    fn every_state_action_pair_is_allowed_exactly_as_the_table_says() {
        fengqiao_kit::lifecycle::assert_table(&STATES, &ACTIONS, ALLOWED, next);
    }

    #[test]
    fn final_states_allow_only_the_report_and_refusals_name_the_state() {
        for s in STATES.into_iter().filter(|s| is_final(*s)) {
            for a in ACTIONS.into_iter().filter(|a| *a != A::ReportBack) {
                assert_eq!(next(s, a), None, "{s:?} + {a:?}");
            }
            assert_eq!(next(s, A::ReportBack), Some(s));
        }
        let e = require("disputes/x", S::Resolved, A::StartMediation).expect_err("final");
        let api = e.api();
        assert_eq!(api.reason, fengqiao_kit::Reason::WrongState);
        assert_eq!(
            api.metadata.get("state").map(String::as_str),
            Some("DISPUTE_STATE_RESOLVED")
        );
    }
}
