//! The court's side of the route `mediation-to-court-confirmation`: the application taken in
//! from the committee's transfer ([`intake_of`]), and which of the court's acts the committee
//! must see on that transfer ([`router_call`]) — plain functions, no network.
//!
//! | court's act (before → after)                 | router call                               |
//! |----------------------------------------------|-------------------------------------------|
//! | AcceptApplication RECEIVED → UNDER_REVIEW     | AcceptTransfer, the 调确 number as receiver reference (Art 4) |
//! | RejectApplication RECEIVED → NOT_ACCEPTED     | DeclineTransfer with the Art 355 ground (a decline reason of the route) |
//! | RuleOnApplication → CONFIRMED                 | SubmitFeedback `confirmed_valid` (民事诉讼法 Art 206) |
//! | RuleOnApplication → DISMISSED                 | SubmitFeedback `dismissed`, the Art 358 ground in the summary (`ground=<code>`) |
//! | WithdrawApplication UNDER_REVIEW → WITHDRAWN  | SubmitFeedback `withdrawn`                |
//! | WithdrawApplication RECEIVED → WITHDRAWN      | none: the transfer is not accepted; the committee withdraws it |
//! | supplements, extension, objections            | none                                      |

use fengqiao_kit::time::from_timestamp;
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::judicialconfirmation::{
    ApplicationSource, ApplicationState as S, ConfirmationApplication, PackageItem,
};
use fengqiao_proto::router::Transfer;

use crate::application::Intake;
use crate::rules;

/// The marker before the dismissal ground's code in the feedback summary: the route has one
/// `dismissed` outcome code for the six grounds of 民诉法解释 Art 358.
pub const GROUND_MARKER: &str = "ground=";

/// What the committee must see of an act, on its transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterCall {
    /// 受理 (法释〔2011〕5号 Art 4): the transfer is accepted with the 调确 number.
    Accept {
        /// The court's 调确 number.
        number: String,
    },
    /// 不予受理 (民诉法解释 Art 355): the transfer is declined with the ground.
    Decline {
        /// The ground's code (a decline reason code of the route).
        code: String,
        /// Its description.
        reason: String,
    },
    /// The ruling or the withdrawal, as feedback with the route's outcome code.
    Feedback {
        /// `confirmed_valid`, `dismissed` or `withdrawn`.
        outcome: &'static str,
        /// The account of it (no personal information).
        summary: String,
        /// The ruling document, if any.
        documents: Vec<EvidenceRef>,
    },
}

/// The router call the court's act from `before` to `after` needs, if any (the table above).
pub fn router_call(before: S, after: &ConfirmationApplication) -> Option<RouterCall> {
    let to = S::try_from(after.state).unwrap_or_default();
    match (before, to) {
        (S::Received, S::UnderReview) => Some(RouterCall::Accept {
            number: after.confirmation_number.clone(),
        }),
        (S::Received, S::NotAccepted) => {
            let g = after.rejection.clone().unwrap_or_default();
            Some(RouterCall::Decline {
                code: g.code,
                reason: g.description,
            })
        }
        (S::UnderReview, S::Confirmed | S::Dismissed) => {
            let ruling = after.ruling.clone().unwrap_or_default();
            let summary = if to == S::Confirmed {
                format!(
                    "{}：裁定调解协议有效（民事诉讼法 Art 206），不收取费用（法释〔2011〕5号 Art 11）",
                    after.confirmation_number
                )
            } else {
                let g = ruling.ground.clone().unwrap_or_default();
                format!(
                    "{}：裁定驳回申请（民诉法解释 Art 358）：{} {GROUND_MARKER}{}",
                    after.confirmation_number, g.description, g.code
                )
            };
            Some(RouterCall::Feedback {
                outcome: rules::route_outcome(to)?,
                summary,
                documents: ruling.document.into_iter().collect(),
            })
        }
        (S::UnderReview, S::Withdrawn) => Some(RouterCall::Feedback {
            outcome: rules::route_outcome(to)?,
            summary: format!("{}：当事人撤回司法确认申请", after.confirmation_number),
            documents: Vec::new(),
        }),
        _ => None,
    }
}

/// The route's decline reason for an offer the court's intake checks refuse, when the court's
/// system declines it by itself: one party alone or out of time → `not_joint_application`
/// (人民调解法 Art 33; 民事诉讼法 Art 205), not the competent court → `not_competent_court`
/// (民诉法解释 Art 355; 法释〔2011〕5号 Art 2). Anything else (an incomplete package) waits
/// for the court.
pub fn decline_for_refusal(reason: fengqiao_kit::Reason) -> Option<&'static str> {
    use fengqiao_kit::Reason as R;
    match reason {
        R::NotJointApplication | R::ApplicationPeriodLapsed => Some("not_joint_application"),
        R::WrongCourt => Some("not_competent_court"),
        _ => None,
    }
}

/// The Art 3 package as the court keeps it, from the items the committee sends (in the
/// router's confirmation package; the mediation service checks them before it sends).
pub fn package_of(items: &[fengqiao_proto::router::ConfirmationPackageItem]) -> Vec<PackageItem> {
    items
        .iter()
        .map(|i| PackageItem {
            kind: i.kind,
            document: i.document.clone(),
            party_id: i.party_id.clone(),
        })
        .collect()
}

/// The application the committee's offered transfer carries, or `None` when the transfer
/// has no confirmation package. The submission time is the router's creation time of the
/// transfer (the committee's submission; 人民调解法 Art 33 counts to it).
pub fn intake_of(t: &Transfer) -> Option<Intake> {
    let snap = t.case_snapshot.as_ref()?;
    let pkg = snap.confirmation.as_ref()?;
    Some(Intake {
        case_id: snap.case_id.clone(),
        transfer: t.name.clone(),
        pre_filing_case: String::new(),
        committee: t
            .from_agency
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        committee_court: pkg.committee_court.clone(),
        delegating_court: Some(pkg.delegating_court.clone()).filter(|c| !c.is_empty()),
        source: ApplicationSource::PeoplesMediation,
        parties: snap
            .parties
            .iter()
            .filter(|p| pkg.agreement_party_ids.contains(&p.party_id))
            .cloned()
            .collect(),
        applicants: pkg.applicant_party_ids.clone(),
        represented: pkg.represented_party_ids.clone(),
        agreement: pkg.agreement.clone(),
        agreement_effective_at: pkg
            .agreement_effective_time
            .as_ref()
            .map_or(0, from_timestamp),
        package: package_of(&pkg.items),
        submitted_at: t.create_time.as_ref().map_or(0, from_timestamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_proto::common::{AgencyRef, Party, ReasonCode};
    use fengqiao_proto::judicialconfirmation::Ruling;
    use fengqiao_proto::router::{CaseSnapshot, ConfirmationPackage, ConfirmationPackageItem};

    fn app(state: S) -> ConfirmationApplication {
        ConfirmationApplication {
            state: state as i32,
            confirmation_number: "(2026)辽0203民特调确1号".into(),
            ..ConfirmationApplication::default()
        }
    }

    #[test]
    fn each_act_the_committee_must_see_has_its_router_call() {
        assert_eq!(
            router_call(S::Received, &app(S::UnderReview)),
            Some(RouterCall::Accept {
                number: "(2026)辽0203民特调确1号".into()
            })
        );
        let mut n = app(S::NotAccepted);
        n.rejection = Some(ReasonCode {
            code: "ownership_confirmation".into(),
            description: "调解协议内容涉及物权、知识产权确权".into(),
        });
        assert!(matches!(
            router_call(S::Received, &n),
            Some(RouterCall::Decline { code, .. }) if code == "ownership_confirmation"
        ));
        let mut d = app(S::Dismissed);
        d.ruling = Some(Ruling {
            ground: Some(ReasonCode {
                code: "not_voluntary".into(),
                description: "违反自愿原则".into(),
            }),
            ..Ruling::default()
        });
        match router_call(S::UnderReview, &d) {
            Some(RouterCall::Feedback {
                outcome, summary, ..
            }) => {
                assert_eq!(outcome, "dismissed");
                assert!(summary.ends_with("ground=not_voluntary"), "{summary}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            router_call(S::UnderReview, &app(S::Confirmed)),
            Some(RouterCall::Feedback {
                outcome: "confirmed_valid",
                ..
            })
        ));
        assert!(matches!(
            router_call(S::UnderReview, &app(S::Withdrawn)),
            Some(RouterCall::Feedback {
                outcome: "withdrawn",
                ..
            })
        ));
        // Nothing for the committee: withdrawn before acceptance, supplements, extensions,
        // objections (same state before and after).
        for (before, after) in [
            (S::Received, S::Withdrawn),
            (S::Received, S::Received),
            (S::UnderReview, S::UnderReview),
            (S::Confirmed, S::Confirmed),
            (S::Dismissed, S::Dismissed),
        ] {
            assert_eq!(router_call(before, &app(after)), None, "{before:?}");
        }
    }

    #[test]
    fn refused_intakes_are_declined_with_the_routes_reasons() {
        use fengqiao_kit::Reason as R;
        assert_eq!(
            decline_for_refusal(R::NotJointApplication),
            Some("not_joint_application")
        );
        assert_eq!(
            decline_for_refusal(R::ApplicationPeriodLapsed),
            Some("not_joint_application")
        );
        assert_eq!(
            decline_for_refusal(R::WrongCourt),
            Some("not_competent_court")
        );
        assert_eq!(decline_for_refusal(R::NotBuilt), None);
        // Every code is a decline reason of the route (民诉法解释 Art 355).
        for r in [R::NotJointApplication, R::WrongCourt] {
            let code = decline_for_refusal(r).unwrap_or_default();
            assert!(rules::not_accepted_ground("g", code).is_ok(), "{code}");
        }
    }

    #[test]
    fn the_intake_comes_from_the_package_with_the_routers_submission_time() {
        let t = Transfer {
            name: "transfers/t".into(),
            from_agency: Some(AgencyRef {
                name: "agencies/committee".into(),
                ..AgencyRef::default()
            }),
            create_time: Some(fengqiao_kit::time::to_timestamp(77)),
            case_snapshot: Some(CaseSnapshot {
                case_id: "c".into(),
                parties: ["p1", "p2", "witness"]
                    .iter()
                    .map(|id| Party {
                        party_id: (*id).into(),
                        ..Party::default()
                    })
                    .collect(),
                confirmation: Some(ConfirmationPackage {
                    agreement_effective_time: Some(fengqiao_kit::time::to_timestamp(5)),
                    agreement_party_ids: vec!["p1".into(), "p2".into()],
                    applicant_party_ids: vec!["p1".into()],
                    committee_court: "agencies/court".into(),
                    items: vec![ConfirmationPackageItem::default()],
                    ..ConfirmationPackage::default()
                }),
                ..CaseSnapshot::default()
            }),
            ..Transfer::default()
        };
        let i = intake_of(&t).expect("intake");
        assert_eq!(i.submitted_at, 77);
        assert_eq!(i.agreement_effective_at, 5);
        assert_eq!(i.parties.len(), 2);
        assert_eq!(i.applicants, ["p1"]);
        assert_eq!(i.committee, "agencies/committee");
        assert_eq!(i.delegating_court, None);
        assert_eq!(i.package.len(), 1);
        let mut bare = t.clone();
        if let Some(s) = bare.case_snapshot.as_mut() {
            s.confirmation = None;
        }
        assert!(intake_of(&bare).is_none());
    }
}
