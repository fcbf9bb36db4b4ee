//! The pre-filing case's state machine (诉前调解流程), as a plain transition table.
//!
//! ```text
//! CONSENT_PENDING ──every party consents──► AWAITING_JOINT_CHOICE ──joint choice──► DELEGATED
//!   │ a party refuses (特邀调解规定 Art 11)        │ 2 working days lapse / waiver+designation
//!   ▼                                             ▼
//! REGISTRATION_PENDING ◄─limit reached── AWAITING_DESIGNATION ──designate──► DELEGATED
//!   ▲   ▲                                   ▲ decline / 3 working days without answer (Art 12)
//!   │   │                                   └───────────────────────────── DELEGATED
//!   │   └─ contact failed (Art 15), failure (特邀调解规定 Art 21), period expired (Art 25),
//!   │      returned, false mediation confirmed (特邀调解规定 Art 18) ── CONTACTING / IN_MEDIATION / SUSPENDED
//!   │
//! DELEGATED ──accept──► CONTACTING ──parties reached──► IN_MEDIATION ──agreement──► AGREEMENT_FILED
//! IN_MEDIATION ⇄ SUSPENDED (虚假调解 suspected, 特邀调解规定 Art 18)
//! AGREEMENT_FILED ──► CONFIRMATION_APPLIED | MEDIATION_DOCUMENT_REQUESTED | CLOSED
//! REGISTRATION_PENDING ──► REGISTERED | REGISTRATION_REFUSED (民事诉讼法 Art 126)
//! before acceptance or while registration is pending ──withdraw──► WITHDRAWN
//! CONTACTING / IN_MEDIATION ──settled and withdrawn (在线调解规则 Art 25)──► WITHDRAWN
//! ```
//!
//! Deadline events that only notify (designation overdue, registration overdue) and clock
//! operations (appraisal pause, extension) do not change the state but are allowed only in
//! certain states; they are in the table too. Which side acts is part of each action
//! ([`Action::side`]); which role a court actor needs is in [`crate::rules::required_role`].

use fengqiao_proto::courtdiversion::PreFilingCaseState as S;

/// Who takes an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The court (立案庭 clerk or judge), recording its own acts or the parties'.
    Court,
    /// The invited organisation or its mediator, through the router.
    Organisation,
    /// A deadline of the case (the service's system actor).
    System,
}

/// How a mediation ended, as far as the court's lifecycle is concerned
/// (在线调解规则 Art 25; [`crate::rules::end_kind`] maps the eight reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// An agreement was reached; it is filed with the court (特邀调解规定 Art 19).
    Agreement,
    /// The parties settled themselves and the plaintiff withdrew.
    SettledAndWithdrawn,
    /// Any of the six failure reasons: the materials go back (特邀调解规定 Art 21).
    Failed,
}

/// Everything that can happen to a pre-filing case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A party consented; `complete` when every party has now consented.
    RecordConsent {
        /// Whether every party of the case has consented with this record.
        complete: bool,
    },
    /// A party refused pre-filing mediation.
    RefuseConsent,
    /// The parties jointly chose an invited mediator (在线调解规则 Art 10).
    ChooseJointly,
    /// The 2-working-day joint choice lapsed (在线调解规则 Art 10).
    JointChoiceExpired,
    /// The court designated an organisation (在线调解规则 Art 10/12).
    Designate {
        /// The parties waived their joint choice before it lapsed.
        choice_waived: bool,
    },
    /// The court's 3-working-day designation deadline passed (notification only).
    DesignationOverdue,
    /// The organisation accepted the delegation.
    Accept,
    /// The organisation declined the delegation with a reason (在线调解规则 Art 12).
    Decline {
        /// Whether the court may still re-designate (the limit is not reached).
        redesignate: bool,
    },
    /// The organisation did not answer within 3 working days (在线调解规则 Art 12).
    AcceptanceExpired {
        /// Whether the court may still re-designate (the limit is not reached).
        redesignate: bool,
    },
    /// The mediator reached the parties (在线调解规则 Art 15).
    Contacted,
    /// The parties were not reached within 3 working days (在线调解规则 Art 15).
    ContactExpired,
    /// An appraisal started or ended: the mediation clock pauses or resumes (Art 26).
    Appraisal,
    /// The mediation period was extended with every party's consent (特邀调解规定 Art 27).
    Extend,
    /// The mediation ended (在线调解规则 Art 25).
    End(EndKind),
    /// The mediation period expired without extension consent (在线调解规则 Art 25).
    MediationExpired,
    /// The organisation returned the accepted case as unsuitable (route return reasons).
    Returned,
    /// Suspected false mediation: suspend and report (特邀调解规定 Art 18).
    Suspend,
    /// The judge cleared the suspicion; the mediation resumes.
    ClearSuspicion,
    /// The judge confirmed the suspicion; the mediation ends.
    ConfirmFalseMediation,
    /// The parties applied for judicial confirmation of the filed agreement.
    ApplyForConfirmation,
    /// The parties asked for a mediation document (调解书) after registration.
    RequestMediationDocument,
    /// No further court step after the filed agreement (voluntary performance).
    CloseAfterAgreement,
    /// The plaintiff withdrew.
    Withdraw,
    /// The court registered the case (登记立案, 民事诉讼法 Art 126).
    Register,
    /// The court refused registration by a reasoned ruling (民事诉讼法 Art 126).
    RefuseRegistration,
    /// The 7-day registration deadline passed (notification only).
    RegistrationOverdue,
}

impl Action {
    /// Who takes this action.
    pub fn side(self) -> Side {
        match self {
            Action::RecordConsent { .. }
            | Action::RefuseConsent
            | Action::ChooseJointly
            | Action::Designate { .. }
            | Action::Appraisal
            | Action::Suspend
            | Action::ClearSuspicion
            | Action::ConfirmFalseMediation
            | Action::ApplyForConfirmation
            | Action::RequestMediationDocument
            | Action::CloseAfterAgreement
            | Action::Withdraw
            | Action::Register
            | Action::RefuseRegistration => Side::Court,
            Action::Accept
            | Action::Decline { .. }
            | Action::Contacted
            | Action::Extend
            | Action::End(_)
            | Action::Returned => Side::Organisation,
            Action::JointChoiceExpired
            | Action::DesignationOverdue
            | Action::AcceptanceExpired { .. }
            | Action::ContactExpired
            | Action::MediationExpired
            | Action::RegistrationOverdue => Side::System,
        }
    }

    /// A short verb for messages and audit records.
    pub fn verb(self) -> &'static str {
        match self {
            Action::RecordConsent { .. } => "record consent on",
            Action::RefuseConsent => "record a refusal on",
            Action::ChooseJointly => "record the joint choice on",
            Action::JointChoiceExpired => "expire the joint choice of",
            Action::Designate { .. } => "designate a mediator for",
            Action::DesignationOverdue => "mark designation overdue on",
            Action::Accept => "accept",
            Action::Decline { .. } => "decline",
            Action::AcceptanceExpired { .. } => "expire the acceptance of",
            Action::Contacted => "record contact on",
            Action::ContactExpired => "expire the contact deadline of",
            Action::Appraisal => "record an appraisal on",
            Action::Extend => "extend the mediation period of",
            Action::End(_) => "end the mediation of",
            Action::MediationExpired => "expire the mediation period of",
            Action::Returned => "return",
            Action::Suspend => "suspend",
            Action::ClearSuspicion | Action::ConfirmFalseMediation => "resolve the suspension of",
            Action::ApplyForConfirmation
            | Action::RequestMediationDocument
            | Action::CloseAfterAgreement => "decide the next step of",
            Action::Withdraw => "withdraw",
            Action::Register => "register",
            Action::RefuseRegistration => "refuse registration of",
            Action::RegistrationOverdue => "mark registration overdue on",
        }
    }
}

/// The state after `action` in `state`, or `None` when the action is not allowed there.
pub fn next(state: S, action: Action) -> Option<S> {
    use Action as A;
    Some(match (state, action) {
        // 特邀调解规定 Art 1, 11: delegation before registration needs the parties' consent.
        (S::ConsentPending, A::RecordConsent { complete: false }) => S::ConsentPending,
        (S::ConsentPending, A::RecordConsent { complete: true }) => S::AwaitingJointChoice,
        // Without consent the case goes straight to registration (民事诉讼法 Art 126).
        (S::ConsentPending, A::RefuseConsent) => S::RegistrationPending,
        // 在线调解规则 Art 10: the parties may jointly choose within 2 working days ...
        (S::AwaitingJointChoice, A::ChooseJointly) => S::Delegated,
        (S::AwaitingJointChoice, A::JointChoiceExpired) => S::AwaitingDesignation,
        // ... unless they waive it; then, or once it lapsed, the court designates.
        (
            S::AwaitingJointChoice,
            A::Designate {
                choice_waived: true,
            },
        ) => S::Delegated,
        (S::AwaitingDesignation, A::Designate { .. }) => S::Delegated,
        (S::AwaitingDesignation, A::DesignationOverdue) => S::AwaitingDesignation,
        // 在线调解规则 Art 12: accept, or decline / no answer in 3 working days → re-designate.
        (S::Delegated, A::Accept) => S::Contacting,
        (
            S::Delegated,
            A::Decline { redesignate: true } | A::AcceptanceExpired { redesignate: true },
        ) => S::AwaitingDesignation,
        // Re-designation limit reached: the materials go back (特邀调解规定 Art 21).
        (
            S::Delegated,
            A::Decline { redesignate: false } | A::AcceptanceExpired { redesignate: false },
        ) => S::RegistrationPending,
        // 在线调解规则 Art 15: contact within 3 working days, else mediation ends.
        (S::Contacting, A::Contacted) => S::InMediation,
        (S::Contacting, A::ContactExpired) => S::RegistrationPending,
        // 在线调解规则 Art 26 / 特邀调解规定 Art 27: appraisal pauses, consent extends.
        (S::InMediation, A::Appraisal | A::Extend) => S::InMediation,
        // 特邀调解规定 Art 19: an agreement is filed with the court.
        (S::InMediation, A::End(EndKind::Agreement)) => S::AgreementFiled,
        // 在线调解规则 Art 25: settled and withdrawn, or one of the failure reasons.
        (S::Contacting | S::InMediation, A::End(EndKind::SettledAndWithdrawn)) => S::Withdrawn,
        // 特邀调解规定 Art 21: failure → materials back, registration decision.
        (S::Contacting | S::InMediation, A::End(EndKind::Failed) | A::Returned) => {
            S::RegistrationPending
        }
        // 在线调解规则 Art 24–25: 30 days from acceptance; expiry without consent ends it.
        (S::Contacting | S::InMediation | S::Suspended, A::MediationExpired) => {
            S::RegistrationPending
        }
        // 特邀调解规定 Art 18: suspected false mediation → suspend and report; the judge decides.
        (S::InMediation, A::Suspend) => S::Suspended,
        (S::Suspended, A::ClearSuspicion) => S::InMediation,
        (S::Suspended, A::ConfirmFalseMediation) => S::RegistrationPending,
        // After filing: 司法确认 (人民调解法 Art 33) or a 调解书, or nothing further.
        (S::AgreementFiled, A::ApplyForConfirmation) => S::ConfirmationApplied,
        (S::AgreementFiled, A::RequestMediationDocument) => S::MediationDocumentRequested,
        (S::AgreementFiled, A::CloseAfterAgreement) => S::Closed,
        // The plaintiff may withdraw before an organisation accepted, or before registration.
        (
            S::ConsentPending
            | S::AwaitingJointChoice
            | S::AwaitingDesignation
            | S::Delegated
            | S::RegistrationPending,
            A::Withdraw,
        ) => S::Withdrawn,
        // 民事诉讼法 Art 126: register, or refuse by ruling, within 7 days.
        (S::RegistrationPending, A::Register) => S::Registered,
        (S::RegistrationPending, A::RefuseRegistration) => S::RegistrationRefused,
        (S::RegistrationPending, A::RegistrationOverdue) => S::RegistrationPending,
        _ => return None,
    })
}

/// Whether no action can leave `state`.
pub fn is_terminal(state: S) -> bool {
    matches!(
        state,
        S::ConfirmationApplied
            | S::MediationDocumentRequested
            | S::Closed
            | S::Withdrawn
            | S::Registered
            | S::RegistrationRefused
    )
}

/// Whether the case is with an invited organisation (delegated, accepted or mediating):
/// the states in which it counts towards an organisation's and mediator's load.
pub fn is_with_organisation(state: S) -> bool {
    matches!(
        state,
        S::Delegated | S::Contacting | S::InMediation | S::Suspended
    )
}

/// The upper-snake name of a state without its prefix, e.g. `IN_MEDIATION`.
pub fn state_name(state: S) -> &'static str {
    state
        .as_str_name()
        .strip_prefix("PRE_FILING_CASE_STATE_")
        .unwrap_or("UNSPECIFIED")
}

/// Every state, `UNSPECIFIED` first (for tables and tests).
pub const ALL_STATES: [S; 16] = [
    S::Unspecified,
    S::ConsentPending,
    S::AwaitingJointChoice,
    S::AwaitingDesignation,
    S::Delegated,
    S::Contacting,
    S::InMediation,
    S::Suspended,
    S::AgreementFiled,
    S::ConfirmationApplied,
    S::MediationDocumentRequested,
    S::Closed,
    S::Withdrawn,
    S::RegistrationPending,
    S::Registered,
    S::RegistrationRefused,
];

/// Every action, each variant with each value of its flag.
pub const ALL_ACTIONS: [Action; 32] = {
    use Action as A;
    [
        A::RecordConsent { complete: false },
        A::RecordConsent { complete: true },
        A::RefuseConsent,
        A::ChooseJointly,
        A::JointChoiceExpired,
        A::Designate {
            choice_waived: false,
        },
        A::Designate {
            choice_waived: true,
        },
        A::DesignationOverdue,
        A::Accept,
        A::Decline { redesignate: false },
        A::Decline { redesignate: true },
        A::AcceptanceExpired { redesignate: false },
        A::AcceptanceExpired { redesignate: true },
        A::Contacted,
        A::ContactExpired,
        A::Appraisal,
        A::Extend,
        A::End(EndKind::Agreement),
        A::End(EndKind::SettledAndWithdrawn),
        A::End(EndKind::Failed),
        A::MediationExpired,
        A::Returned,
        A::Suspend,
        A::ClearSuspicion,
        A::ConfirmFalseMediation,
        A::ApplyForConfirmation,
        A::RequestMediationDocument,
        A::CloseAfterAgreement,
        A::Withdraw,
        A::Register,
        A::RefuseRegistration,
        A::RegistrationOverdue,
    ]
};

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use proptest::prelude::*;

    /// Every allowed transition, and nothing else: each (state, action) pair not listed here
    /// must be refused.
    const ALLOWED: &[(S, Action, S)] = &[
        // 特邀调解规定 Art 1, 11: consent first; a refusal goes straight to registration.
        (
            S::ConsentPending,
            A::RecordConsent { complete: false },
            S::ConsentPending,
        ),
        (
            S::ConsentPending,
            A::RecordConsent { complete: true },
            S::AwaitingJointChoice,
        ),
        (S::ConsentPending, A::RefuseConsent, S::RegistrationPending),
        (S::ConsentPending, A::Withdraw, S::Withdrawn),
        // 在线调解规则 Art 10: joint choice within 2 working days, else the court designates.
        (S::AwaitingJointChoice, A::ChooseJointly, S::Delegated),
        (
            S::AwaitingJointChoice,
            A::JointChoiceExpired,
            S::AwaitingDesignation,
        ),
        (
            S::AwaitingJointChoice,
            A::Designate {
                choice_waived: true,
            },
            S::Delegated,
        ),
        (S::AwaitingJointChoice, A::Withdraw, S::Withdrawn),
        (
            S::AwaitingDesignation,
            A::Designate {
                choice_waived: false,
            },
            S::Delegated,
        ),
        (
            S::AwaitingDesignation,
            A::Designate {
                choice_waived: true,
            },
            S::Delegated,
        ),
        (
            S::AwaitingDesignation,
            A::DesignationOverdue,
            S::AwaitingDesignation,
        ),
        (S::AwaitingDesignation, A::Withdraw, S::Withdrawn),
        // 在线调解规则 Art 12: accept, or decline / time out → re-designation or registration.
        (S::Delegated, A::Accept, S::Contacting),
        (
            S::Delegated,
            A::Decline { redesignate: true },
            S::AwaitingDesignation,
        ),
        (
            S::Delegated,
            A::Decline { redesignate: false },
            S::RegistrationPending,
        ),
        (
            S::Delegated,
            A::AcceptanceExpired { redesignate: true },
            S::AwaitingDesignation,
        ),
        (
            S::Delegated,
            A::AcceptanceExpired { redesignate: false },
            S::RegistrationPending,
        ),
        (S::Delegated, A::Withdraw, S::Withdrawn),
        // 在线调解规则 Art 15: contact within 3 working days.
        (S::Contacting, A::Contacted, S::InMediation),
        (S::Contacting, A::ContactExpired, S::RegistrationPending),
        (
            S::Contacting,
            A::End(EndKind::SettledAndWithdrawn),
            S::Withdrawn,
        ),
        (
            S::Contacting,
            A::End(EndKind::Failed),
            S::RegistrationPending,
        ),
        (S::Contacting, A::Returned, S::RegistrationPending),
        (S::Contacting, A::MediationExpired, S::RegistrationPending),
        // Art 24–26, 特邀调解规定 Art 27: the mediation period, paused and extended.
        (S::InMediation, A::Appraisal, S::InMediation),
        (S::InMediation, A::Extend, S::InMediation),
        (
            S::InMediation,
            A::End(EndKind::Agreement),
            S::AgreementFiled,
        ),
        (
            S::InMediation,
            A::End(EndKind::SettledAndWithdrawn),
            S::Withdrawn,
        ),
        (
            S::InMediation,
            A::End(EndKind::Failed),
            S::RegistrationPending,
        ),
        (S::InMediation, A::Returned, S::RegistrationPending),
        (S::InMediation, A::MediationExpired, S::RegistrationPending),
        // 特邀调解规定 Art 18: suspected false mediation.
        (S::InMediation, A::Suspend, S::Suspended),
        (S::Suspended, A::ClearSuspicion, S::InMediation),
        (
            S::Suspended,
            A::ConfirmFalseMediation,
            S::RegistrationPending,
        ),
        (S::Suspended, A::MediationExpired, S::RegistrationPending),
        // 特邀调解规定 Art 19: the filed agreement and what follows.
        (
            S::AgreementFiled,
            A::ApplyForConfirmation,
            S::ConfirmationApplied,
        ),
        (
            S::AgreementFiled,
            A::RequestMediationDocument,
            S::MediationDocumentRequested,
        ),
        (S::AgreementFiled, A::CloseAfterAgreement, S::Closed),
        // 民事诉讼法 Art 126: the registration decision within 7 days.
        (S::RegistrationPending, A::Register, S::Registered),
        (
            S::RegistrationPending,
            A::RefuseRegistration,
            S::RegistrationRefused,
        ),
        (
            S::RegistrationPending,
            A::RegistrationOverdue,
            S::RegistrationPending,
        ),
        (S::RegistrationPending, A::Withdraw, S::Withdrawn),
    ];

    #[test]
    fn every_state_action_pair_is_allowed_or_refused_as_the_table_says() {
        fengqiao_kit::lifecycle::assert_table(&ALL_STATES, &ALL_ACTIONS, ALLOWED, next);
    }

    /// The index of an action's variant and flag: a new variant breaks this match, and the
    /// test below then demands it in `ALL_ACTIONS`.
    fn ordinal(a: Action) -> usize {
        match a {
            A::RecordConsent { complete } => usize::from(complete),
            A::RefuseConsent => 2,
            A::ChooseJointly => 3,
            A::JointChoiceExpired => 4,
            A::Designate { choice_waived } => 5 + usize::from(choice_waived),
            A::DesignationOverdue => 7,
            A::Accept => 8,
            A::Decline { redesignate } => 9 + usize::from(redesignate),
            A::AcceptanceExpired { redesignate } => 11 + usize::from(redesignate),
            A::Contacted => 13,
            A::ContactExpired => 14,
            A::Appraisal => 15,
            A::Extend => 16,
            A::End(EndKind::Agreement) => 17,
            A::End(EndKind::SettledAndWithdrawn) => 18,
            A::End(EndKind::Failed) => 19,
            A::MediationExpired => 20,
            A::Returned => 21,
            A::Suspend => 22,
            A::ClearSuspicion => 23,
            A::ConfirmFalseMediation => 24,
            A::ApplyForConfirmation => 25,
            A::RequestMediationDocument => 26,
            A::CloseAfterAgreement => 27,
            A::Withdraw => 28,
            A::Register => 29,
            A::RefuseRegistration => 30,
            A::RegistrationOverdue => 31,
        }
    }

    #[test]
    fn all_actions_lists_every_action_once() {
        let mut seen = [false; ALL_ACTIONS.len()];
        for a in ALL_ACTIONS {
            let i = ordinal(a);
            assert!(!seen[i], "{a:?} listed twice");
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn all_states_lists_every_proto_state() {
        for v in 0..=20 {
            if let Ok(s) = S::try_from(v) {
                assert!(ALL_STATES.contains(&s), "{s:?} missing");
            }
        }
    }

    #[test]
    fn terminal_states_refuse_everything_and_others_allow_something() {
        for &s in &ALL_STATES {
            let any = ALL_ACTIONS.iter().any(|&a| next(s, a).is_some());
            if is_terminal(s) || s == S::Unspecified {
                assert!(!any, "{s:?} is terminal but allows an action");
            } else {
                assert!(any, "{s:?} is not terminal but is stuck");
            }
        }
    }

    #[test]
    fn withdrawal_by_the_court_only_before_acceptance_or_registration() {
        for &s in &ALL_STATES {
            let ok = next(s, A::Withdraw).is_some();
            let expected = matches!(
                s,
                S::ConsentPending
                    | S::AwaitingJointChoice
                    | S::AwaitingDesignation
                    | S::Delegated
                    | S::RegistrationPending
            );
            assert_eq!(ok, expected, "{s:?}");
        }
    }

    #[test]
    fn notification_deadlines_and_clock_operations_keep_the_state() {
        for a in [
            A::DesignationOverdue,
            A::RegistrationOverdue,
            A::Appraisal,
            A::Extend,
        ] {
            for &s in &ALL_STATES {
                if let Some(to) = next(s, a) {
                    assert_eq!(to, s, "{a:?} changed {s:?}");
                }
            }
        }
    }

    #[test]
    fn sides() {
        assert_eq!(A::RecordConsent { complete: true }.side(), Side::Court);
        assert_eq!(
            A::Designate {
                choice_waived: false
            }
            .side(),
            Side::Court
        );
        assert_eq!(A::Accept.side(), Side::Organisation);
        assert_eq!(A::End(EndKind::Agreement).side(), Side::Organisation);
        assert_eq!(A::Extend.side(), Side::Organisation);
        assert_eq!(A::Appraisal.side(), Side::Court);
        assert_eq!(
            A::AcceptanceExpired { redesignate: true }.side(),
            Side::System
        );
        assert_eq!(A::RegistrationOverdue.side(), Side::System);
        assert_eq!(A::Register.side(), Side::Court);
        for a in ALL_ACTIONS {
            assert!(!a.verb().is_empty());
        }
        assert_eq!(state_name(S::InMediation), "IN_MEDIATION");
        assert_eq!(state_name(S::RegistrationPending), "REGISTRATION_PENDING");
    }

    #[test]
    fn organisation_load_states() {
        let with: Vec<S> = ALL_STATES
            .into_iter()
            .filter(|s| is_with_organisation(*s))
            .collect();
        assert_eq!(
            with,
            [S::Delegated, S::Contacting, S::InMediation, S::Suspended]
        );
    }

    /// A simple reference model written the other way round (by action, then by the set of
    /// states it is allowed in), to check the table against.
    fn model(s: S, a: Action) -> Option<S> {
        let before_acceptance = [
            S::ConsentPending,
            S::AwaitingJointChoice,
            S::AwaitingDesignation,
            S::Delegated,
        ];
        let accepted = [S::Contacting, S::InMediation];
        let only = |from: &[S], to: S| from.contains(&s).then_some(to);
        let stay = |from: &[S]| from.contains(&s).then_some(s);
        match a {
            A::RecordConsent { complete } => only(
                &[S::ConsentPending],
                if complete {
                    S::AwaitingJointChoice
                } else {
                    S::ConsentPending
                },
            ),
            A::RefuseConsent => only(&[S::ConsentPending], S::RegistrationPending),
            A::ChooseJointly => only(&[S::AwaitingJointChoice], S::Delegated),
            A::JointChoiceExpired => only(&[S::AwaitingJointChoice], S::AwaitingDesignation),
            A::Designate { choice_waived } => {
                if choice_waived {
                    only(
                        &[S::AwaitingJointChoice, S::AwaitingDesignation],
                        S::Delegated,
                    )
                } else {
                    only(&[S::AwaitingDesignation], S::Delegated)
                }
            }
            A::DesignationOverdue => stay(&[S::AwaitingDesignation]),
            A::Accept => only(&[S::Delegated], S::Contacting),
            A::Decline { redesignate } | A::AcceptanceExpired { redesignate } => only(
                &[S::Delegated],
                if redesignate {
                    S::AwaitingDesignation
                } else {
                    S::RegistrationPending
                },
            ),
            A::Contacted => only(&[S::Contacting], S::InMediation),
            A::ContactExpired => only(&[S::Contacting], S::RegistrationPending),
            A::Appraisal | A::Extend => stay(&[S::InMediation]),
            A::End(EndKind::Agreement) => only(&[S::InMediation], S::AgreementFiled),
            A::End(EndKind::SettledAndWithdrawn) => only(&accepted, S::Withdrawn),
            A::End(EndKind::Failed) | A::Returned => only(&accepted, S::RegistrationPending),
            A::MediationExpired => only(
                &[S::Contacting, S::InMediation, S::Suspended],
                S::RegistrationPending,
            ),
            A::Suspend => only(&[S::InMediation], S::Suspended),
            A::ClearSuspicion => only(&[S::Suspended], S::InMediation),
            A::ConfirmFalseMediation => only(&[S::Suspended], S::RegistrationPending),
            A::ApplyForConfirmation => only(&[S::AgreementFiled], S::ConfirmationApplied),
            A::RequestMediationDocument => {
                only(&[S::AgreementFiled], S::MediationDocumentRequested)
            }
            A::CloseAfterAgreement => only(&[S::AgreementFiled], S::Closed),
            A::Withdraw => {
                if before_acceptance.contains(&s) || s == S::RegistrationPending {
                    Some(S::Withdrawn)
                } else {
                    None
                }
            }
            A::Register => only(&[S::RegistrationPending], S::Registered),
            A::RefuseRegistration => only(&[S::RegistrationPending], S::RegistrationRefused),
            A::RegistrationOverdue => stay(&[S::RegistrationPending]),
        }
    }

    proptest! {
        /// Random walks from intake: the table and the model agree at every step, refused
        /// actions change nothing, terminal states absorb, and a case never returns to
        /// consent once it left it.
        #[test]
        fn table_agrees_with_the_reference_model(
            steps in proptest::collection::vec(0..ALL_ACTIONS.len(), 0..60)
        ) {
            let mut s = S::ConsentPending;
            let mut left_consent = false;
            for i in steps {
                let a = ALL_ACTIONS[i];
                let got = next(s, a);
                prop_assert_eq!(got, model(s, a), "{:?} + {:?}", s, a);
                if is_terminal(s) {
                    prop_assert_eq!(got, None);
                }
                if let Some(to) = got {
                    if to == S::Suspended {
                        prop_assert_eq!(s, S::InMediation);
                    }
                    s = to;
                }
                if s != S::ConsentPending {
                    left_consent = true;
                }
                prop_assert!(!(left_consent && s == S::ConsentPending));
            }
        }

        /// Any pair, not only the reachable ones.
        #[test]
        fn any_pair_agrees_with_the_reference_model(
            si in 0..ALL_STATES.len(),
            ai in 0..ALL_ACTIONS.len(),
        ) {
            let (s, a) = (ALL_STATES[si], ALL_ACTIONS[ai]);
            prop_assert_eq!(next(s, a), model(s, a));
        }
    }
}
