//! The service's handlers in-process on both backends: the court's acts through the gRPC
//! trait with a verified identity, persisted, and another agency's NOT_FOUND.

use fengqiao_judicial_confirmation::application::Intake;
use fengqiao_judicial_confirmation::{JudicialConfirmation, migrate};
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_server::JudicialConfirmationService as _;
use fengqiao_proto::judicialconfirmation::*;
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Change, Named as _, Refusal as _};
use fengqiao_testkit::services::{as_caller, bare_parties, rid, two_party_package};
use tonic::{Code, Request};

const COURT: &str = "agencies/xigang-court";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn req<T>(agency: &str, roles: &[&str], msg: T) -> Request<T> {
    as_caller(agency, "a1", roles, false, msg)
}

fn doc() -> EvidenceRef {
    EvidenceRef {
        display_name: "文书".into(),
        media_type: "application/pdf".into(),
        sha256: SHA.into(),
        ..EvidenceRef::default()
    }
}

fn intake(transfer: &str, days_ago: i64) -> Intake {
    use PackageItemKind as K;
    let item = |kind: K, party: &str| PackageItem {
        kind: kind as i32,
        document: Some(doc()),
        party_id: party.into(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    Intake {
        case_id: "c1".into(),
        transfer: transfer.into(),
        pre_filing_case: String::new(),
        committee: "agencies/xigang-committee".into(),
        committee_court: COURT.into(),
        delegating_court: None,
        source: ApplicationSource::PeoplesMediation,
        parties: bare_parties(&["p1", "p2"]),
        applicants: vec!["p1".into(), "p2".into()],
        represented: vec![],
        agreement: Some(doc()),
        agreement_effective_at: now - days_ago * 86_400_000_000,
        package: two_party_package(K::Application, K::IdentityProof, K::ServiceAddress, item),
        submitted_at: 0,
    }
}

both_backends!(
    the_court_accepts_extends_and_rules_others_get_not_found,
    |store: Store| async move {
        migrate(&store).await?;
        let svc = JudicialConfirmation::new(store.clone());
        let a = svc.take_in(COURT, &intake("transfers/t1", 10)).await?;
        assert_eq!(a.state, ApplicationState::Received as i32);
        // The same transfer again: the same application.
        assert_eq!(
            svc.take_in(COURT, &intake("transfers/t1", 10)).await?.name,
            a.name
        );
        // Out of time (人民调解法 Art 33) and at the wrong court are refused.
        assert!(
            svc.take_in(COURT, &intake("transfers/t2", 60))
                .await
                .is_err()
        );
        assert!(
            svc.take_in("agencies/other-court", &intake("transfers/t3", 10))
                .await
                .is_err()
        );

        // Another agency: NOT_FOUND for reads and acts alike.
        let get = |agency: &str| req(agency, &["judge"], GetApplicationRequest::named(&a.name));
        svc.get_application(get("agencies/xigang-committee"))
            .await
            .refusal(Code::NotFound, "refused");
        let accept = |agency: &str, roles: &[&str], etag: &str| {
            req(
                agency,
                roles,
                AcceptApplicationRequest {
                    confirmation_number: "(2026)辽0203民特调确12号".into(),
                    ..Change::change(&a.name, etag)
                },
            )
        };
        svc.accept_application(accept("agencies/other-court", &["judge"], ""))
            .await
            .refusal(Code::NotFound, "refused");
        // Without the role: PERMISSION_DENIED; stale etag: ABORTED.
        svc.accept_application(accept(COURT, &["mediator"], ""))
            .await
            .refusal(Code::PermissionDenied, "refused");
        svc.accept_application(accept(COURT, &["court_clerk"], "\"9\""))
            .await
            .refusal(Code::Aborted, "refused");
        let first = accept(COURT, &["court_clerk"], &a.etag);
        let first_id = first.get_ref().request_id.clone();
        let replayed = req(COURT, &["court_clerk"], first.get_ref().clone());
        let acc = svc
            .accept_application(first)
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(acc.state, ApplicationState::UnderReview as i32);
        // The same request_id again: the first answer, not WRONG_STATE.
        let again = svc
            .accept_application(replayed)
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(again, acc);
        // The same request_id with another request: ALREADY_EXISTS.
        let mut other = accept(COURT, &["court_clerk"], "");
        other.get_mut().request_id = first_id;
        svc.accept_application(other)
            .await
            .refusal(Code::AlreadyExists, "reused");
        assert_eq!(acc.clocks.len(), 2);

        let extend = |roles: &[&str], days: u32| {
            req(
                COURT,
                roles,
                ExtendReviewRequest {
                    days,
                    reason: "案情复杂".into(),
                    ..Change::change(&a.name, "")
                },
            )
        };
        svc.extend_review(extend(&["judge"], 10))
            .await
            .refusal(Code::PermissionDenied, "refused");
        svc.extend_review(extend(&["court_president"], 11))
            .await
            .refusal(Code::FailedPrecondition, "refused");
        let ext = svc
            .extend_review(extend(&["court_president"], 10))
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(ext.clocks[1].extended_by, 10);

        let ruled = svc
            .rule_on_application(req(
                COURT,
                &["judge"],
                RuleOnApplicationRequest {
                    outcome: RulingOutcome::Dismissed as i32,
                    ground_code: "not_voluntary".into(),
                    document: Some(doc()),
                    ..Change::change(&a.name, &ext.etag)
                },
            ))
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(ruled.state, ApplicationState::Dismissed as i32);
        svc.withdraw_application(req(
            COURT,
            &["court_clerk"],
            WithdrawApplicationRequest::change(&a.name, ""),
        ))
        .await
        .refusal(Code::FailedPrecondition, "refused");

        // A second one, not accepted on an Art 355 ground.
        let b = svc.take_in(COURT, &intake("transfers/t4", 5)).await?;
        let rej = svc
            .reject_application(req(
                COURT,
                &["judge"],
                RejectApplicationRequest {
                    ground_code: "ownership_confirmation".into(),
                    ..Change::change(&b.name, "")
                },
            ))
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(
            rej.rejection.map(|g| g.code).as_deref(),
            Some("ownership_confirmation")
        );

        // List and statistics are the court's.
        let list = svc
            .list_applications(req(
                COURT,
                &["court_clerk"],
                ListApplicationsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        assert_eq!(list.applications.len(), 1);
        assert!(!list.next_page_token.is_empty());
        let rest = svc
            .list_applications(req(
                COURT,
                &["court_clerk"],
                ListApplicationsRequest {
                    page_size: 1,
                    page_token: list.next_page_token.clone(),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        assert_eq!(rest.applications.len(), 1);
        assert_ne!(rest.applications[0].name, list.applications[0].name);
        svc.list_applications(req(
            "agencies/other-court",
            &["court_clerk"],
            ListApplicationsRequest {
                page_size: 1,
                page_token: list.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .refusal(Code::InvalidArgument, "refused");
        let stats = svc
            .get_application_statistics(req(COURT, &["court_clerk"], Default::default()))
            .await?
            .into_inner();
        assert_eq!(
            (
                stats.application_count,
                stats.dismissed_count,
                stats.not_accepted_count
            ),
            (2, 1, 1)
        );
        assert_eq!(stats.ground_counts.get("not_voluntary"), Some(&1));
        let other = svc
            .get_application_statistics(req(
                "agencies/other-court",
                &["court_clerk"],
                Default::default(),
            ))
            .await?
            .into_inner();
        assert_eq!(other.application_count, 0);
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);

/// An offer on `mediation-to-court-confirmation` as the router delivers it to the court.
fn offer(transfer: &str, applicants: &[&str]) -> fengqiao_proto::inbox::Envelope {
    use fengqiao_proto::router::{
        CaseSnapshot, ConfirmationPackage, ConfirmationPackageItem,
        ConfirmationPackageItemKind as K, Transfer, TransferMessage,
    };
    let item = |kind: K, party: &str| ConfirmationPackageItem {
        kind: kind as i32,
        document: Some(doc()),
        party_id: party.into(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let t = Transfer {
        name: transfer.into(),
        from_agency: Some(fengqiao_proto::common::AgencyRef {
            name: "agencies/xigang-committee".into(),
            ..Default::default()
        }),
        create_time: Some(fengqiao_kit::time::to_timestamp(now)),
        case_snapshot: Some(CaseSnapshot {
            case_id: "c9".into(),
            parties: bare_parties(&["p1", "p2"]),
            confirmation: Some(ConfirmationPackage {
                agreement: Some(doc()),
                agreement_effective_time: Some(fengqiao_kit::time::to_timestamp(
                    now - 3 * 86_400_000_000,
                )),
                agreement_party_ids: vec!["p1".into(), "p2".into()],
                applicant_party_ids: applicants.iter().map(|s| (*s).to_string()).collect(),
                committee_court: COURT.into(),
                items: two_party_package(K::Application, K::IdentityProof, K::ServiceAddress, item),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    fengqiao_proto::inbox::Envelope {
        message_id: rid(),
        transfer: transfer.into(),
        kind: fengqiao_proto::inbox::MessageKind::TransferOffered as i32,
        to_agency: COURT.into(),
        route: "routes/mediation-to-court-confirmation".into(),
        recipient_side: fengqiao_proto::inbox::RecipientSide::Receiver as i32,
        payload: prost::Message::encode_to_vec(&TransferMessage {
            transfer: Some(t),
            ..Default::default()
        }),
        ..Default::default()
    }
}

both_backends!(
    the_inbox_takes_an_offer_in_once_and_leaves_a_refused_one_out,
    |store: Store| async move {
        migrate(&store).await?;
        let svc = JudicialConfirmation::new(store.clone());
        let inbox = svc.inbox_handler();
        assert_eq!(
            inbox.receives(),
            [(
                "mediation-to-court-confirmation",
                fengqiao_proto::inbox::RecipientSide::Receiver
            )]
        );
        let list = || req(COURT, &["judge"], ListApplicationsRequest::default());
        // Delivered twice (a redelivery has a new message id): one application.
        for _ in 0..2 {
            inbox
                .deliver(offer("transfers/ok", &["p1", "p2"]))
                .await
                .map_err(|e| format!("{e:?}"))?;
        }
        let apps = svc
            .list_applications(list())
            .await?
            .into_inner()
            .applications;
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].transfer, "transfers/ok");
        assert_eq!(apps[0].state, ApplicationState::Received as i32);
        // One party alone: the intake refuses it; the message is taken (not retried), no
        // application.
        inbox
            .deliver(offer("transfers/alone", &["p1"]))
            .await
            .map_err(|e| format!("{e:?}"))?;
        let apps = svc
            .list_applications(list())
            .await?
            .into_inner()
            .applications;
        assert_eq!(apps.len(), 1);
        // An offer without a package is a malformed envelope.
        let mut bare = offer("transfers/bare", &["p1", "p2"]);
        bare.payload =
            prost::Message::encode_to_vec(&fengqiao_proto::router::TransferMessage::default());
        inbox
            .deliver(bare)
            .await
            .refusal(Code::InvalidArgument, "no package");
        // Another message kind changes nothing.
        let mut other = offer("transfers/ok", &["p1", "p2"]);
        other.kind = fengqiao_proto::inbox::MessageKind::TransferWithdrawn as i32;
        inbox.deliver(other).await.map_err(|e| format!("{e:?}"))?;
        let apps = svc
            .list_applications(list())
            .await?
            .into_inner()
            .applications;
        assert_eq!(apps[0].state, ApplicationState::Received as i32);
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);

const DAY: i64 = 86_400_000_000;

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

async fn overdue_count(svc: &JudicialConfirmation) -> u64 {
    svc.get_application_statistics(req(
        COURT,
        &["judge"],
        GetApplicationStatisticsRequest::default(),
    ))
    .await
    .answer("statistics")
    .overdue_count
}

// The deadline sweep (time given to it): nothing is due at once; past the 3-day acceptance
// clock (2011 rules Art 4) the received applications are marked overdue and stored, so the
// statistics show it before anyone reads them; once marked, a later pass marks nothing again;
// an accepted application is marked only past its review clock (Art 5), a paused clock
// (supplementary materials awaited, Art 6) never, a decided one never. Page size 1: every
// page is swept.
both_backends!(
    the_deadline_sweep_marks_overdue_and_the_statistics_show_it,
    |store: Store| async move {
        migrate(&store).await?;
        let svc = JudicialConfirmation::new(store.clone());
        let a = svc.take_in(COURT, &intake("transfers/s1", 1)).await?;
        let b = svc.take_in(COURT, &intake("transfers/s2", 1)).await?;
        let c = svc.take_in(COURT, &intake("transfers/s3", 1)).await?;
        let d = svc.take_in(COURT, &intake("transfers/s4", 1)).await?;
        let e = svc.take_in(COURT, &intake("transfers/s5", 1)).await?;
        let now = now_micros();
        // c accepted (review clock 15 days), d awaiting supplements (paused), e not accepted.
        svc.accept_application(req(
            COURT,
            &["court_clerk"],
            AcceptApplicationRequest {
                confirmation_number: "(2026)辽0203民特调确31号".into(),
                ..Change::change(&c.name, "")
            },
        ))
        .await?;
        svc.request_supplement(req(
            COURT,
            &["judge"],
            RequestSupplementRequest {
                description: "补充身份证明".into(),
                ..Change::change(&d.name, "")
            },
        ))
        .await?;
        svc.reject_application(req(
            COURT,
            &["judge"],
            RejectApplicationRequest {
                ground_code: "ownership_confirmation".into(),
                ..Change::change(&e.name, "")
            },
        ))
        .await?;

        assert_eq!(svc.sweep_overdue(Some(now), 1).await?, 0, "nothing due yet");
        assert_eq!(overdue_count(&svc).await, 0);
        // Past the acceptance clock (3 days, however the weekend falls: 8 days on).
        assert_eq!(svc.sweep_overdue(Some(now + 8 * DAY), 1).await?, 2);
        assert_eq!(overdue_count(&svc).await, 2);
        for x in [&a, &b] {
            let got = svc
                .get_application(req(
                    COURT,
                    &["judge"],
                    GetApplicationRequest::named(&x.name),
                ))
                .await
                .answer_of("application", |r| r.application);
            assert!(got.overdue, "stored as overdue");
            assert_eq!(got.state, ApplicationState::Received as i32, "notify-only");
        }
        // Marked once: the next pass marks nothing again.
        assert_eq!(svc.sweep_overdue(Some(now + 9 * DAY), 1).await?, 0);
        // Past the review clock (15 days + weekends and holidays: 40 days on): c only.
        assert_eq!(svc.sweep_overdue(Some(now + 40 * DAY), 1).await?, 1);
        assert_eq!(overdue_count(&svc).await, 3);
        let got = |name: String| {
            let svc = svc.clone();
            async move {
                svc.get_application(req(COURT, &["judge"], GetApplicationRequest { name }))
                    .await
                    .answer_of("get", |r| r.application)
            }
        };
        assert!(
            !got(d.name.clone()).await.overdue,
            "a paused clock is not due"
        );
        assert!(!got(e.name.clone()).await.overdue, "decided: no clock runs");
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);
