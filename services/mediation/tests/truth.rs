//! One truth (issue #9) on the mediation side, on SQLite and PostgreSQL: cut-off calls heal
//! and their retries return the first answer, an old router message never reverts a newer
//! case, case numbers stay unique under concurrency, and the case file holds the consent
//! evidence.

use std::time::Duration;

use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::inbox::agency_inbox_service_client::AgencyInboxServiceClient;
use fengqiao_proto::inbox::{DeliverRequest, Envelope, MessageKind, RecipientSide};
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::{Transfer, TransferEvent, TransferState};
use fengqiao_testkit::answers::{Answer as _, Change, Named, Refusal as _};
use fengqiao_testkit::services::{
    self, MediationClient as Med, ROOM, STATION, cut_off, mediation as med, neighbours,
    police_record, police_transfer, rid, room_roster as roster, router_envelope, transfer_as,
};
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;

/// Polls (100 ms apart) for a record to heal: one redelivery after the router's push
/// backoff (1 s, 2 s, 4 s, … doubling). On a loaded 2-core machine (the whole test suite or a
/// benchmark beside it) a push can fail a few times first, so the bound is generous; the
/// healing itself is what is checked, not its speed.
const HEAL_POLLS: usize = 900;

/// The noise dispute the station transfers to its room: the two neighbours, the call-out record.
fn dispute() -> Transfer {
    police_transfer(
        "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解",
        neighbours(),
        vec![police_record()],
        "110警情，民间纠纷，建议调解",
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

/// Waits (bounded: one redelivery) until the case and its router transfer agree: the case is
/// in the state `pairs` gives for the transfer's state.
async fn agree(
    suite: &TestSuite,
    room: &mut Med,
    case: &str,
    transfer_name: &str,
    pairs: &[(TransferState, MediationCaseState)],
) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut last = (0, 0);
    // Bounded: a redelivery after the router's push backoff (1 s, 2 s, 4 s, …).
    for _ in 0..HEAL_POLLS {
        let t = transfer(suite, transfer_name).await;
        let c = get_case(room, case).await;
        if pairs
            .iter()
            .any(|(ts, cs)| t.state == *ts as i32 && c.state == *cs as i32)
        {
            return;
        }
        last = (t.state, c.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("case and transfer never agreed: (transfer, case) = {last:?}");
}

async fn get_case(room: &mut Med, name: &str) -> MediationCase {
    room.get_case(GetCaseRequest { name: name.into() })
        .await
        .answer_of("get case", |r| r.mediation_case)
}

suite_test!(
    a_cut_off_acceptance_is_completed_by_its_retry,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let msg = AcceptCaseRequest {
            comment: "予以受理".into(),
            ..Change::change(&c.name, &c.etag)
        };
        let mut r2 = room.clone();
        cut_off(async |req| r2.accept_case(req).await, &msg).await;
        // Without any client action, the case and the transfer agree within one redelivery.
        agree(
            &suite,
            &mut room,
            &c.name,
            &t.name,
            &[
                (TransferState::Delivered, MediationCaseState::Offered),
                (TransferState::InProgress, MediationCaseState::Accepted),
            ],
        )
        .await;
        // The retry with the same request id returns the first answer, whatever the cut left.
        let first = room
            .accept_case(msg.clone())
            .await
            .answer_of("retry", |r| r.mediation_case);
        assert_eq!(st(&first), MediationCaseState::Accepted);
        assert!(!first.case_number.is_empty());
        let again = room
            .accept_case(msg.clone())
            .await
            .answer_of("second retry", |r| r.mediation_case);
        assert_eq!(again, first);
        // Router and case agree.
        let tr = transfer(&suite, &t.name).await;
        assert_eq!(tr.state, TransferState::InProgress as i32);
        assert_eq!(
            st(&get_case(&mut room, &c.name).await),
            MediationCaseState::Accepted
        );
        // A new request id on the accepted case is the wrong state, not a second acceptance.
        room.accept_case(AcceptCaseRequest {
            request_id: rid(),
            ..msg.clone()
        })
        .await
        .refusal(Code::FailedPrecondition, "accepted already");
    }
);

suite_test!(
    a_cut_off_ending_is_completed_by_its_retry,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let msg = EndMediationRequest {
            reason: EndReason::GapTooLarge as i32,
            detail: "双方分歧较大".into(),
            ..Change::change(&c.name, &c.etag)
        };
        let mut r2 = room.clone();
        cut_off(async |req| r2.end_mediation(req).await, &msg).await;
        agree(
            &suite,
            &mut room,
            &c.name,
            &t.name,
            &[
                (TransferState::InProgress, MediationCaseState::Accepted),
                (TransferState::FeedbackSubmitted, MediationCaseState::Ended),
            ],
        )
        .await;
        let first = room
            .end_mediation(msg.clone())
            .await
            .answer_of("retry", |r| r.mediation_case);
        assert_eq!(st(&first), MediationCaseState::Ended);
        let term = first.termination.clone().expect("termination");
        assert_eq!(term.reason, EndReason::GapTooLarge as i32);
        let again = room
            .end_mediation(msg.clone())
            .await
            .answer_of("second retry", |r| r.mediation_case);
        assert_eq!(again, first);
        let tr = transfer(&suite, &t.name).await;
        assert_eq!(tr.state, TransferState::FeedbackSubmitted as i32);
    }
);

/// A router envelope for the room about `t`, as the router would deliver it: the station
/// stops the transfer for a possible public-security matter.
fn envelope(t: &Transfer, kind: MessageKind, seq: u64) -> Envelope {
    let event = TransferEvent {
        sequence: seq,
        reason_code: "possible_public_security_matter".into(),
        reason: "情况有变".into(),
        ..Default::default()
    };
    router_envelope(t, ROOM, kind, RecipientSide::Receiver, event)
}

suite_test!(
    an_old_message_does_not_revert_a_newer_case,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let tr = transfer(&suite, &t.name).await;
        let accepted_seq = tr.last_event.as_ref().expect("last event").sequence;
        let mut inbox = AgencyInboxServiceClient::with_interceptor(
            suite.channel(),
            suite.caller("xigang-justice-bureau", "router", &["router"]),
        );
        // An escalation as it would have looked before the acceptance: older, so no change.
        let mut old = tr.clone();
        old.state = TransferState::Escalated as i32;
        old.feedback_clock = None;
        inbox
            .deliver(DeliverRequest {
                envelope: Some(envelope(
                    &old,
                    MessageKind::TransferEscalated,
                    accepted_seq - 1,
                )),
            })
            .await
            .expect("delivered");
        let now = get_case(&mut room, &c.name).await;
        assert_eq!(st(&now), MediationCaseState::Accepted);
        assert_eq!(now.etag, c.etag, "an old message changes nothing");
        // The same message as a newer event is applied: the case follows the router.
        inbox
            .deliver(DeliverRequest {
                envelope: Some(envelope(
                    &old,
                    MessageKind::TransferEscalated,
                    accepted_seq + 1_000_000,
                )),
            })
            .await
            .expect("delivered");
        assert_eq!(
            st(&get_case(&mut room, &c.name).await),
            MediationCaseState::Escalated
        );
    }
);

suite_test!(
    case_numbers_are_unique_under_concurrency,
    |suite| async move {
        roster(&suite).await;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..60 {
            let suite = suite.clone();
            set.spawn(async move {
                let (_, c) = offered(&suite).await;
                let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
                accept(&mut room, &c).await.case_number
            });
        }
        let mut numbers = std::collections::BTreeSet::new();
        while let Some(n) = set.join_next().await {
            let n = n.expect("task");
            assert!(!n.is_empty());
            numbers.insert(n);
        }
        assert_eq!(numbers.len(), 60, "distinct 调解案号: {numbers:?}");
    }
);

suite_test!(
    the_case_file_holds_the_consent_evidence,
    |suite| async move {
        roster(&suite).await;
        let (_, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let evidence = EvidenceRef {
            display_name: "人民调解申请书（张某签名）".into(),
            media_type: "application/pdf".into(),
            uri: "evidence://consent/0001".into(),
            ..Default::default()
        };
        room.record_consent(RecordConsentRequest {
            party_id: c.parties[0].party_id.clone(),
            decision: ConsentDecision::Consented as i32,
            method: ConsentMethod::Written as i32,
            evidence: Some(evidence.clone()),
            ..Named::named(&c.name)
        })
        .await
        .expect("consent");
        let shown = get_case(&mut room, &c.name).await;
        assert_eq!(shown.consents[0].evidence.as_ref(), Some(&evidence));
        let file = room
            .get_case_file(GetCaseFileRequest::named(&c.name))
            .await
            .answer_of("file", |r| r.case_file);
        assert!(
            file.entries
                .iter()
                .any(|e| e.document.as_ref() == Some(&evidence)),
            "the consent evidence is in the case file"
        );
    }
);
