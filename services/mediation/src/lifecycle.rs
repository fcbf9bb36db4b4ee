//! The mediation case lifecycle as a table: which state each of the committee's own actions
//! may start from, and in which states the same call may be a retry whose local commit was lost
//! while the router's messages brought the case in step (the router then decides, by the
//! derived request id). Changes that follow the router's transfer are in [`crate::reconcile`].
//! Handlers ask [`require`] and never check states themselves.
//!
//! ```text
//! OFFERED ─accept─► ACCEPTED ─assign─► IN_MEDIATION ─draft agreement─► AGREEMENT_PENDING_SIGNATURE
//!    └─decline─► DECLINED      │  consent refused ─► ENDED / CONSENT_REFUSED        │ sign (all) ─► ENDED
//!                  open: end ─► ENDED, escalate ─► ESCALATED, request investigation (stays)
//! ```

use fengqiao_proto::mediation::{MediationCase, MediationCaseState as S};

use crate::error::Error;

/// States in which the mediation is open: accepted and not yet over.
pub const OPEN: [S; 3] = [S::Accepted, S::InMediation, S::AgreementPendingSignature];

/// An action of the mediation committee on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accept the offered case (人民调解法 Art 17: 受理).
    Accept,
    /// Decline the offered case with a reason of the route.
    Decline,
    /// Record a party's consent to mediation (人民调解法 Art 17, 23: 自愿).
    RecordConsent,
    /// Record a party's refusal: mediation may not go on (人民调解法 Art 17: 当事人一方明确拒绝
    /// 调解的，不得调解).
    RecordRefusal,
    /// Assign a mediator (人民调解法 Art 19).
    AssignMediator,
    /// The mediator withdraws (回避, 人民调解法 Art 20).
    RecuseMediator,
    /// Record a mediation session (调解记录, 人民调解法 Art 27).
    RecordSession,
    /// Draft the agreement (人民调解法 Art 28–29).
    DraftAgreement,
    /// A party signs the agreement (人民调解法 Art 29: 签名、盖章或者按指印).
    SignAgreement,
    /// End the mediation with an outcome (人民调解法 Art 26: 调解不成的终止调解).
    End,
    /// Escalate to the police (人民调解法 Art 25: 可能激化的纠纷).
    Escalate,
    /// Ask the sender for a supplementary investigation.
    RequestInvestigation,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 12] = [
        Action::Accept,
        Action::Decline,
        Action::RecordConsent,
        Action::RecordRefusal,
        Action::AssignMediator,
        Action::RecuseMediator,
        Action::RecordSession,
        Action::DraftAgreement,
        Action::SignAgreement,
        Action::End,
        Action::Escalate,
        Action::RequestInvestigation,
    ];

    /// The action's name in messages (`… cannot {name}`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Decline => "decline",
            Action::RecordConsent | Action::RecordRefusal => "record consent",
            Action::AssignMediator => "assign a mediator",
            Action::RecuseMediator => "recuse the mediator",
            Action::RecordSession => "record a session",
            Action::DraftAgreement => "draft an agreement",
            Action::SignAgreement => "sign the agreement",
            Action::End => "end the mediation",
            Action::Escalate => "escalate",
            Action::RequestInvestigation => "request an investigation",
        }
    }

    /// The states the action may start from.
    pub fn allowed(self) -> &'static [S] {
        match self {
            Action::Accept | Action::Decline => &[S::Offered],
            Action::RecordConsent => &[S::Accepted, S::InMediation],
            // A refusal's feedback may have reached the case through the router before the
            // local commit (the case then shows ENDED); the retry completes it.
            Action::RecordRefusal => &[S::Accepted, S::InMediation, S::Ended],
            Action::AssignMediator => &[S::Accepted],
            Action::RecuseMediator => &[S::Accepted, S::InMediation],
            Action::RecordSession | Action::DraftAgreement => {
                &[S::InMediation, S::AgreementPendingSignature]
            }
            Action::SignAgreement => &[S::AgreementPendingSignature],
            Action::End | Action::Escalate | Action::RequestInvestigation => &OPEN,
        }
    }

    /// The states in which the call may be this very call retried (its router call went
    /// through, its local commit was lost, and the router's messages moved the case on).
    pub fn retried_in(self) -> &'static [S] {
        match self {
            // A retried accept may find the case anywhere after acceptance.
            Action::Accept => &[
                S::Accepted,
                S::InMediation,
                S::AgreementPendingSignature,
                S::Ended,
                S::Escalated,
                S::ConsentRefused,
            ],
            Action::Decline => &[S::Declined],
            Action::RecordRefusal | Action::End => &[S::Ended],
            Action::Escalate => &[S::Escalated],
            _ => &[],
        }
    }
}

/// Whether `action` may start from the case's state: WRONG_STATE otherwise, naming the state.
pub fn require(c: &MediationCase, action: Action) -> Result<(), Error> {
    let state = S::try_from(c.state).unwrap_or(S::Unspecified);
    if action.allowed().contains(&state) {
        Ok(())
    } else {
        Err(Error::WrongState {
            resource: c.name.clone(),
            state: state.as_str_name().to_string(),
            action: action.name(),
        })
    }
}

/// Whether the case's state shows that `action` may already have happened (see
/// [`Action::retried_in`]).
pub fn maybe_retried(c: &MediationCase, action: Action) -> bool {
    let state = S::try_from(c.state).unwrap_or(S::Unspecified);
    action.retried_in().contains(&state)
}

/// [`OPEN`] as an SQL list of the stored state numbers, e.g. `(3, 4, 5)`.
pub fn open_states_sql() -> String {
    let n: Vec<String> = OPEN.iter().map(|s| (*s as i32).to_string()).collect();
    format!("({})", n.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [S; 11] = [
        S::Unspecified,
        S::Offered,
        S::Declined,
        S::Accepted,
        S::InMediation,
        S::AgreementPendingSignature,
        S::Ended,
        S::Escalated,
        S::ConsentRefused,
        S::Withdrawn,
        S::Expired,
    ];

    /// Every (state, action) pair, the refused ones included: `a` allowed, `r` maybe a retry,
    /// `.` refused.
    #[test]
    fn the_table() {
        #[rustfmt::skip]
        let want: [(S, &str); 11] = [
            //                            Acc Dec Con Ref Asg Rec Ses Dra Sig End Esc Inv
            (S::Unspecified,               "............"),
            (S::Offered,                   "aa.........."),
            (S::Declined,                  ".r.........."),
            (S::Accepted,                  "r.aaaa...aaa"),
            (S::InMediation,               "r.aa.aaa.aaa"),
            (S::AgreementPendingSignature, "r.....aaaaaa"),
            (S::Ended,                     "r..a.....r.."),
            (S::Escalated,                 "r.........r."),
            (S::ConsentRefused,            "r..........."),
            (S::Withdrawn,                 "............"),
            (S::Expired,                   "............"),
        ];
        assert_eq!(want.map(|(s, _)| s), STATES, "every state has a row");
        for (state, row) in want {
            let c = MediationCase {
                name: "cases/x".into(),
                state: state as i32,
                ..Default::default()
            };
            for (action, cell) in Action::ALL.into_iter().zip(row.chars()) {
                let allowed = require(&c, action).is_ok();
                let retried = maybe_retried(&c, action);
                let got = match (allowed, retried) {
                    (true, _) => 'a',
                    (false, true) => 'r',
                    (false, false) => '.',
                };
                assert_eq!(got, cell, "{state:?} {action:?}");
                if !allowed {
                    let Err(Error::WrongState {
                        state: named,
                        action: a,
                        ..
                    }) = require(&c, action)
                    else {
                        panic!("WRONG_STATE expected");
                    };
                    assert_eq!(named, state.as_str_name());
                    assert_eq!(a, action.name());
                }
            }
        }
    }

    /// A refusal retried after the router ended the case is allowed to complete; an allowed
    /// start state is never also a retry state, except for that one.
    #[test]
    fn allowed_and_retried_are_disjoint_but_for_the_refusal() {
        for action in Action::ALL {
            for s in action.retried_in() {
                if action.allowed().contains(s) {
                    assert_eq!((action, *s), (Action::RecordRefusal, S::Ended));
                }
            }
        }
    }

    #[test]
    fn the_open_states_in_sql() {
        assert_eq!(open_states_sql(), "(3, 4, 5)");
    }
}
