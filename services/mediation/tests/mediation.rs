//! The mediation service with all services in-process, on SQLite and PostgreSQL: a noise
//! dispute transferred by the 八一路 station to its mediation room, through every step and
//! every refusal.

use std::time::Duration;

use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::{
    AnswerInvestigationRequest, InvestigationState, Transfer, TransferState,
};
use fengqiao_testkit::answers::{Answer as _, Change, Named, Refusal as _};
use fengqiao_testkit::services::{
    self, COMMITTEE, MediationClient as Med, ROOM, ROOM_ORG as ORG, STATION, mediation as med,
    neighbours, police_record, police_transfer, rid, room_roster as roster, transfer_as,
    transfers as router,
};
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;

const NOTE: &str = "110警情，民间纠纷，建议调解";

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// The noise dispute the station transfers to its room: the two neighbours, the call-out record.
fn dispute() -> Transfer {
    police_transfer(
        "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解",
        neighbours(),
        vec![police_record()],
        NOTE,
    )
}

/// Drives [`dispute`] to the room and waits until the mediation case is offered.
async fn offered(suite: &TestSuite) -> (Transfer, MediationCase) {
    services::offered(suite, dispute()).await
}

fn st(c: &MediationCase) -> MediationCaseState {
    MediationCaseState::try_from(c.state).expect("state")
}

async fn transfer(suite: &TestSuite, name: &str) -> Transfer {
    transfer_as(suite, STATION, name).await
}

async fn accept(room: &mut Med, c: &MediationCase) -> MediationCase {
    room.accept_case(AcceptCaseRequest {
        comment: "属于邻里纠纷，予以受理".into(),
        ..Change::change(&c.name, &c.etag)
    })
    .await
    .answer_of("accept", |r| r.mediation_case)
}

async fn consent(
    room: &mut Med,
    c: &MediationCase,
    party: &str,
    d: ConsentDecision,
) -> MediationCase {
    room.record_consent(RecordConsentRequest {
        party_id: party.into(),
        decision: d as i32,
        method: ConsentMethod::Written as i32,
        ..Change::change(&c.name, &c.etag)
    })
    .await
    .answer_of("consent", |r| r.mediation_case)
}

fn sig(kind: SignerKind, party: &str, method: SignatureMethod) -> Signature {
    Signature {
        signer_kind: kind as i32,
        party_id: party.into(),
        signer_name: "签署人".into(),
        method: method as i32,
        ..Default::default()
    }
}

async fn sign(
    room: &mut Med,
    c: &MediationCase,
    s: Signature,
) -> Result<MediationCase, tonic::Status> {
    room.sign_agreement(SignAgreementRequest {
        signature: Some(s),
        ..Change::change(&c.name, "")
    })
    .await
    .map(|r| r.into_inner().mediation_case.expect("case"))
}

fn agreement(c: &MediationCase) -> Agreement {
    Agreement {
        parties: c.parties.clone(),
        facts_and_responsibilities: "李某夜间噪音影响张某休息，李某负主要责任".into(),
        terms: vec![AgreementTerm {
            description: "李某每日22时后不再进行产生噪音的活动，并向张某赔礼道歉".into(),
            obligor_party_ids: vec!["p2".into()],
            obligee_party_ids: vec!["p1".into()],
            ..Default::default()
        }],
        performance_manner: "即时履行".into(),
        performance_deadline: Some(ts(1_900_000_000)),
        ..Default::default()
    }
}

suite_test!(a_case_is_mediated_to_an_agreement, |suite| async move {
    roster(&suite).await;
    let (t, c) = offered(&suite).await;
    assert_eq!(st(&c), MediationCaseState::Offered);
    assert_eq!(c.organization, ORG);
    assert_eq!(c.transfer, t.name);
    assert_eq!(c.parties.len(), 2);
    assert_eq!(c.evidence.len(), 1);
    assert!(c.case_number.is_empty());
    let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);

    // Refusals before acceptance: no role, another agency, sessions before mediation.
    let mut clerk = med(&suite, ROOM, "clerk-01", &["clerk"]);
    clerk
        .accept_case(AcceptCaseRequest::named(&c.name))
        .await
        .refusal(Code::PermissionDenied, "no role");
    let mut other = med(
        &suite,
        COMMITTEE,
        "director",
        &["mediation_admin", "mediator"],
    );
    other
        .get_case(GetCaseRequest::named(&c.name))
        .await
        .refusal(Code::NotFound, "other agency");
    other
        .accept_case(AcceptCaseRequest::named(&c.name))
        .await
        .refusal(Code::NotFound, "other agency");
    room.accept_case(AcceptCaseRequest::change(&c.name, "\"999\""))
        .await
        .refusal(Code::Aborted, "stale etag");

    let c = accept(&mut room, &c).await;
    assert_eq!(st(&c), MediationCaseState::Accepted);
    assert!(!c.case_number.is_empty());
    assert!(c.mediation_clock.is_some());
    assert_eq!(
        state(&transfer(&suite, &t.name).await),
        TransferState::InProgress
    );
    room.accept_case(AcceptCaseRequest::named(&c.name))
        .await
        .refusal(Code::FailedPrecondition, "accept twice");

    let c = consent(&mut room, &c, "p1", ConsentDecision::Consented).await;
    let c = consent(&mut room, &c, "p2", ConsentDecision::Consented).await;
    assert_eq!(st(&c), MediationCaseState::Accepted, "no mediator yet");
    room.record_consent(RecordConsentRequest {
        party_id: "p9".into(),
        decision: ConsentDecision::Consented as i32,
        method: ConsentMethod::Oral as i32,
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::InvalidArgument, "unknown party");

    // Automatic assignment: neighbourhood specialty, region 210203, lowest load.
    let c = room
        .assign_mediator(AssignMediatorRequest {
            assignee: Some(assign_mediator_request::Assignee::Automatic(
                AutomaticAssignment::default(),
            )),
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .answer_of("assign", |r| r.mediation_case);
    assert_eq!(st(&c), MediationCaseState::InMediation);
    let first = c.assignment.clone().expect("assignment");
    assert_eq!(first.mediator, format!("{ORG}/mediators/med-li"));
    assert_eq!(first.method, AssignmentMethod::Automatic as i32);
    room.assign_mediator(AssignMediatorRequest {
        assignee: Some(assign_mediator_request::Assignee::Mediator(format!(
            "{ORG}/mediators/med-zhang"
        ))),
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "assigned already");

    // 回避 with automatic reassignment: the other neighbourhood mediator.
    let c = room
        .recuse_mediator(RecuseMediatorRequest {
            reason: "调解员与当事人系亲属".into(),
            requested_by_party_id: "p2".into(),
            reassign_automatically: true,
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .answer_of("recuse", |r| r.mediation_case);
    let second = c.assignment.clone().expect("reassigned");
    assert_eq!(second.mediator, format!("{ORG}/mediators/med-zhang"));
    assert_eq!(c.assignment_history.len(), 2);
    assert!(c.assignment_history[0].recuse_time.is_some());
    assert_eq!(st(&c), MediationCaseState::InMediation);

    // Load shows on the roster.
    let ms = room
        .list_mediators(ListMediatorsRequest {
            parent: ORG.into(),
            ..Default::default()
        })
        .await
        .answer("mediators")
        .mediators;
    let zhang = ms
        .iter()
        .find(|m| m.name.ends_with("med-zhang"))
        .expect("zhang");
    assert_eq!(zhang.current_load, 1);

    // Signing before a draft, ending with an agreement before one: refused.
    sign(
        &mut room,
        &c,
        sig(SignerKind::Party, "p1", SignatureMethod::Handwritten),
    )
    .await
    .refusal(Code::FailedPrecondition, "sign before draft");
    room.end_mediation(EndMediationRequest {
        reason: EndReason::Agreement as i32,
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "no agreement");

    let r = room
        .record_session(RecordSessionRequest {
            session: Some(MediationSession {
                start_time: Some(ts(1_800_000_000)),
                end_time: Some(ts(1_800_003_600)),
                mode: SessionMode::InPerson as i32,
                place: "八一路派出所调解室".into(),
                attendee_party_ids: vec!["p1".into(), "p2".into()],
                mediator: second.mediator.clone(),
                summary: "双方陈述，经释法说理，双方同意协商解决".into(),
                ..Default::default()
            }),
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .answer("session");
    assert!(!r.session.expect("session").session_id.is_empty());
    let c = r.mediation_case.expect("case");

    let c = room
        .draft_agreement(DraftAgreementRequest {
            agreement: Some(agreement(&c)),
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .answer_of("draft", |r| r.mediation_case);
    assert_eq!(st(&c), MediationCaseState::AgreementPendingSignature);
    room.draft_agreement(DraftAgreementRequest {
        agreement: Some(Agreement {
            terms: vec![],
            ..agreement(&c)
        }),
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::InvalidArgument, "no terms");

    let c = sign(
        &mut room,
        &c,
        sig(SignerKind::Party, "p1", SignatureMethod::Handwritten),
    )
    .await
    .expect("p1");
    sign(
        &mut room,
        &c,
        sig(SignerKind::Party, "p1", SignatureMethod::Fingerprint),
    )
    .await
    .refusal(Code::FailedPrecondition, "twice");
    sign(
        &mut room,
        &c,
        sig(SignerKind::Party, "p9", SignatureMethod::Handwritten),
    )
    .await
    .refusal(Code::InvalidArgument, "no such party");
    sign(
        &mut room,
        &c,
        sig(SignerKind::CommitteeSeal, "", SignatureMethod::Handwritten),
    )
    .await
    .refusal(Code::InvalidArgument, "seal needs SEAL");
    let c = sign(
        &mut room,
        &c,
        sig(SignerKind::Party, "p2", SignatureMethod::Fingerprint),
    )
    .await
    .expect("p2");
    let c = sign(
        &mut room,
        &c,
        sig(SignerKind::Mediator, "", SignatureMethod::Handwritten),
    )
    .await
    .expect("mediator");
    assert!(!c.agreement.as_ref().expect("agreement").effective);
    room.end_mediation(EndMediationRequest {
        reason: EndReason::Agreement as i32,
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "no seal yet");
    let c = sign(
        &mut room,
        &c,
        sig(SignerKind::CommitteeSeal, "", SignatureMethod::Seal),
    )
    .await
    .expect("seal");
    let a = c.agreement.clone().expect("agreement");
    assert!(a.effective);
    assert!(a.effective_time.is_some());
    assert_eq!(a.signatures.len(), 4);

    // Follow-ups only after the case ended with the agreement.
    room.schedule_follow_up(ScheduleFollowUpRequest {
        scheduled_time: Some(ts(1_900_000_000)),
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "not ended");

    let end_rid = rid();
    let end = EndMediationRequest {
        name: c.name.clone(),
        etag: c.etag.clone(),
        reason: EndReason::Agreement as i32,
        request_id: end_rid.clone(),
        ..Default::default()
    };
    let c = room
        .end_mediation(end.clone())
        .await
        .answer_of("end", |r| r.mediation_case);
    assert_eq!(st(&c), MediationCaseState::Ended);
    let term = c.termination.clone().expect("termination");
    assert_eq!(term.outcome_code, "agreement_reached");
    // A replay answers the same.
    let again = room
        .end_mediation(end)
        .await
        .answer_of("replay", |r| r.mediation_case);
    assert_eq!(again.etag, c.etag);

    let tr = transfer(&suite, &t.name).await;
    assert_eq!(state(&tr), TransferState::FeedbackSubmitted);
    let fb = tr.feedback.expect("feedback");
    assert_eq!(fb.outcome_code, "agreement_reached");
    assert!(fb.summary.contains(&a.agreement_number));

    let r = room
        .schedule_follow_up(ScheduleFollowUpRequest {
            scheduled_time: Some(ts(1_900_000_000)),
            plan_note: "一个月后电话回访履行情况".into(),
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .answer("schedule");
    let f = r.follow_up.expect("follow-up");
    assert_eq!(f.state, FollowUpState::Scheduled as i32);
    assert_eq!(f.assignee, second.mediator);
    let r = room
        .record_follow_up(RecordFollowUpRequest {
            follow_up_id: f.follow_up_id.clone(),
            method: FollowUpMethod::Phone as i32,
            performance: PerformanceStatus::Full as i32,
            satisfaction: Satisfaction::Satisfied as i32,
            result_notes: "已履行，双方满意".into(),
            visit_time: Some(ts(1_900_000_100)),
            ..Named::named(&c.name)
        })
        .await
        .answer("record follow-up");
    assert_eq!(r.follow_up.expect("f").state, FollowUpState::Done as i32);
    room.record_follow_up(RecordFollowUpRequest {
        follow_up_id: f.follow_up_id.clone(),
        performance: PerformanceStatus::Full as i32,
        satisfaction: Satisfaction::Satisfied as i32,
        visit_time: Some(ts(1_900_000_200)),
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "recorded twice");

    // 一案一卷: everything in time order, plus the router's events.
    let file = room
        .get_case_file(GetCaseFileRequest::named(&c.name))
        .await
        .answer_of("file", |r| r.case_file);
    let kinds: Vec<i32> = file.entries.iter().map(|e| e.kind).collect();
    for k in [
        CaseFileEntryKind::TransferDocument,
        CaseFileEntryKind::Registration,
        CaseFileEntryKind::Consent,
        CaseFileEntryKind::Assignment,
        CaseFileEntryKind::SessionRecord,
        CaseFileEntryKind::Agreement,
        CaseFileEntryKind::Termination,
        CaseFileEntryKind::FollowUp,
    ] {
        assert!(kinds.contains(&(k as i32)), "file lacks {k:?}");
    }
    let times: Vec<i64> = file
        .entries
        .iter()
        .map(|e| e.record_time.as_ref().map_or(0, |t| t.seconds))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    // The receiving room's file holds the transfer's events from the offer on (offered,
    // delivered, accepted, feedback), none from before it.
    assert!(
        file.transfer_events.len() >= 4,
        "{:?}",
        file.transfer_events
    );
    assert!(file.transfer_events.iter().all(|e| {
        e.to_state != fengqiao_proto::router::TransferState::Draft as i32
            && e.to_state != fengqiao_proto::router::TransferState::AwaitingApproval as i32
    }));
    other
        .get_case_file(GetCaseFileRequest::named(&c.name))
        .await
        .refusal(Code::NotFound, "other agency");
});

fn state(t: &Transfer) -> TransferState {
    TransferState::try_from(t.state).expect("state")
}

suite_test!(a_case_is_declined_with_a_reason, |suite| async move {
    let (t, c) = offered(&suite).await;
    let mut room = med(&suite, ROOM, "room-head", &["mediation_admin", "mediator"]);
    room.decline_case(DeclineCaseRequest {
        reason_code: "no_such_reason".into(),
        reason: "测试".into(),
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::InvalidArgument, "reason not in the route");
    let c = room
        .decline_case(DeclineCaseRequest {
            reason_code: "outside_jurisdiction".into(),
            reason: "纠纷发生地不属于本调解室辖区".into(),
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .answer_of("decline", |r| r.mediation_case);
    assert_eq!(st(&c), MediationCaseState::Declined);
    assert_eq!(
        c.decline.expect("decline").reason_code,
        "outside_jurisdiction"
    );
    let tr = transfer(&suite, &t.name).await;
    assert_eq!(state(&tr), TransferState::Declined);
    room.accept_case(AcceptCaseRequest::named(&c.name))
        .await
        .refusal(Code::FailedPrecondition, "declined");
});

suite_test!(a_refusal_of_consent_ends_the_case, |suite| async move {
    let (t, c) = offered(&suite).await;
    let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
    let c = accept(&mut room, &c).await;
    let c = consent(&mut room, &c, "p1", ConsentDecision::Consented).await;
    let c = consent(&mut room, &c, "p2", ConsentDecision::Refused).await;
    assert_eq!(st(&c), MediationCaseState::ConsentRefused);
    assert_eq!(
        c.termination.expect("termination").outcome_code,
        "party_refused"
    );
    let tr = transfer(&suite, &t.name).await;
    assert_eq!(state(&tr), TransferState::FeedbackSubmitted);
    assert_eq!(tr.feedback.expect("feedback").outcome_code, "party_refused");
    room.end_mediation(EndMediationRequest {
        reason: EndReason::GapTooLarge as i32,
        ..Named::named(&c.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "already over");
});

suite_test!(
    a_risky_case_is_escalated_to_the_police,
    |suite| async move {
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let c = room
            .escalate_case(EscalateCaseRequest {
                reason_code: "risk_of_escalation".into(),
                reason: "一方扬言报复，有激化可能".into(),
                ..Change::change(&c.name, &c.etag)
            })
            .await
            .answer_of("escalate", |r| r.mediation_case);
        assert_eq!(st(&c), MediationCaseState::Escalated);
        assert_eq!(
            c.escalation.expect("escalation").to_agency,
            format!("agencies/{STATION}")
        );
        assert_eq!(
            state(&transfer(&suite, &t.name).await),
            TransferState::Escalated
        );
    }
);

suite_test!(
    supplementary_investigation_pauses_the_clock,
    |suite| async move {
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        room.request_investigation(RequestInvestigationRequest::named(&c.name))
            .await
            .refusal(Code::InvalidArgument, "no questions");
        let c = room
            .request_investigation(RequestInvestigationRequest {
                questions: "请补充调取楼道监控".into(),
                pause_clock: true,
                ..Change::change(&c.name, &c.etag)
            })
            .await
            .answer_of("investigation", |r| r.mediation_case);
        assert_eq!(c.investigations.len(), 1);
        assert_eq!(c.investigations[0].state, InvestigationState::Open as i32);
        assert!(c.mediation_clock.as_ref().is_some_and(|k| k.paused));
        let tr = transfer(&suite, &t.name).await;
        assert!(tr.feedback_clock.as_ref().is_some_and(|k| k.paused));

        // The station answers; the answer and its evidence reach the case file.
        let mut officer = router(&suite, STATION, "officer-01", &["officer"]);
        officer
            .answer_investigation(AnswerInvestigationRequest {
                answer: "已调取监控，确认夜间噪音".into(),
                evidence: vec![EvidenceRef {
                    display_name: "楼道监控截图".into(),
                    uri: "evidence://video/0002".into(),
                    ..Default::default()
                }],
                ..Change::change(&c.investigations[0].investigation, &tr.etag)
            })
            .await
            .expect("answer");
        let mut answered = None;
        for _ in 0..100 {
            let c = room
                .get_case(GetCaseRequest::named(&c.name))
                .await
                .answer_of("get", |r| r.mediation_case);
            if c.investigations[0].state == InvestigationState::Answered as i32 {
                answered = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = answered.expect("the answer arrived");
        assert_eq!(c.evidence.len(), 2);
        assert!(c.mediation_clock.as_ref().is_some_and(|k| !k.paused));
    }
);

suite_test!(
    cases_are_listed_a_page_at_a_time_with_filters,
    |suite| async move {
        roster(&suite).await;
        let mut made = Vec::new();
        for _ in 0..3 {
            made.push(offered(&suite).await.1);
        }
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let list = |room: &mut Med, req: ListCasesRequest| {
            let mut room = room.clone();
            async move { room.list_cases(req).await.map(|r| r.into_inner()) }
        };
        // Two pages, newest first, every case exactly once.
        let p1 = list(
            &mut room,
            ListCasesRequest {
                page_size: 2,
                ..Default::default()
            },
        )
        .await
        .expect("page 1");
        assert_eq!(p1.mediation_cases.len(), 2);
        assert!(!p1.next_page_token.is_empty());
        let p2 = list(
            &mut room,
            ListCasesRequest {
                page_size: 2,
                page_token: p1.next_page_token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page 2");
        assert_eq!(p2.mediation_cases.len(), 1);
        assert!(p2.next_page_token.is_empty());
        let seen: Vec<String> = p1
            .mediation_cases
            .iter()
            .chain(&p2.mediation_cases)
            .map(|c| c.case_id.clone())
            .collect();
        let newest_first: Vec<String> = made.iter().rev().map(|c| c.case_id.clone()).collect();
        assert_eq!(seen, newest_first);
        // By case id (indexed), by state, and by a field inside the case (organization).
        let one = list(
            &mut room,
            ListCasesRequest {
                case_id: made[1].case_id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("by case id");
        assert_eq!(one.mediation_cases.len(), 1);
        assert_eq!(one.mediation_cases[0].name, made[1].name);
        let accepted = list(
            &mut room,
            ListCasesRequest {
                states: vec![MediationCaseState::Accepted as i32],
                ..Default::default()
            },
        )
        .await
        .expect("by state");
        assert!(accepted.mediation_cases.is_empty());
        let other_org = list(
            &mut room,
            ListCasesRequest {
                organization: "organizations/nobody".into(),
                ..Default::default()
            },
        )
        .await
        .expect("by organization");
        assert!(other_org.mediation_cases.is_empty());
        // Refused: an unknown state, a token this server did not issue.
        list(
            &mut room,
            ListCasesRequest {
                states: vec![999],
                ..Default::default()
            },
        )
        .await
        .refusal(Code::InvalidArgument, "unknown state");
        list(
            &mut room,
            ListCasesRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
        )
        .await
        .refusal(Code::InvalidArgument, "bad token");
    }
);
