//! 行政争议实质性化解 through the real suite (router and admin-dispute served together, the
//! centre pushed to in process), on SQLite and PostgreSQL: the issue #13 "Done when" list.
//!
//! The exact day counts of the review clock's pause (suspended on one day, resumed 15 days
//! later: 15 days not counted) are tested on the domain under fixed times
//! (services/admin-dispute/src/dispute/tests.rs); here the suspension happens within one day,
//! so the clock is paused while it lasts and its deadline is unchanged after it.

use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::reason_of;
use fengqiao_proto::admindispute as ad;
use fengqiao_proto::admindispute::admin_dispute_service_client::AdminDisputeServiceClient;
use fengqiao_proto::common::{AgencyRef, DisputeCategory, EvidenceRef, Money, Party, PartyRole};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    AcceptTransferRequest, ApproveTransferRequest, CaseSnapshot, CreateTransferRequest,
    ListTransfersRequest, SubmitFeedbackRequest, Transfer,
};
use fengqiao_scenarios::jingdiao::eventually;
use fengqiao_scenarios::rid;
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Ad = AdminDisputeServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type S = ad::DisputeState;

const CENTRE: &str = "xigang-admin-dispute-centre";
const ORGAN: &str = "xigang-housing-bureau";
const REVIEWER: &str = "xigang-government";
const PROCURATORATE: &str = "xigang-procuratorate";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn client(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Ad {
    AdminDisputeServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

fn coordinator(suite: &TestSuite) -> Ad {
    client(suite, CENTRE, "coordinator-01", &["coordinator"])
}

fn liaison(suite: &TestSuite) -> Ad {
    client(suite, ORGAN, "liaison-01", &["organ_liaison"])
}

fn review_officer(suite: &TestSuite) -> Ad {
    client(suite, REVIEWER, "review-officer", &["review_officer"])
}

fn router(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Router {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

fn agency(id: &str) -> String {
    format!("agencies/{id}")
}

fn doc(name: &str) -> EvidenceRef {
    EvidenceRef {
        display_name: name.into(),
        media_type: "application/pdf".into(),
        sha256: SHA.into(),
        uri: format!("centre://docs/{name}"),
        ..EvidenceRef::default()
    }
}

fn applicant(id: &str, name: &str) -> Party {
    Party {
        party_id: id.into(),
        role: PartyRole::Applicant as i32,
        name: name.into(),
        ..Party::default()
    }
}

fn intake(
    stage: ad::DisputeStage,
    kinds: &[ad::ClaimKind],
    facts: &str,
) -> ad::CreateDisputeRequest {
    ad::CreateDisputeRequest {
        request_id: rid(),
        applicants: vec![applicant("p1", "王某"), applicant("p2", "李某")],
        act: Some(ad::AdministrativeAct {
            kind: ad::ActKind::Expropriation as i32,
            document_number: "西住建征补〔2026〕7号".into(),
            summary: "房屋征收补偿决定".into(),
            act_time: None,
        }),
        organ: agency(ORGAN),
        reviewing_organ: if stage == ad::DisputeStage::InReview {
            agency(REVIEWER)
        } else {
            String::new()
        },
        stage: stage as i32,
        claims: kinds
            .iter()
            .map(|k| ad::Claim {
                kind: *k as i32,
                description: "请求提高征收补偿标准".into(),
                amount: Some(Money {
                    currency_code: "CNY".into(),
                    units: 200_000,
                    nanos: 0,
                }),
            })
            .collect(),
        evidence: vec![doc("行政复议申请书")],
        facts: facts.into(),
        review_accept_time: None,
        region_code: "210203".into(),
    }
}

async fn create(suite: &TestSuite, req: ad::CreateDisputeRequest) -> ad::Dispute {
    coordinator(suite)
        .create_dispute(req)
        .await
        .expect("taken in")
        .into_inner()
        .dispute
        .expect("dispute")
}

fn st(d: &ad::Dispute) -> S {
    d.state()
}

fn clock<'a>(d: &'a ad::Dispute, name: &str) -> Option<&'a fengqiao_proto::common::ClockState> {
    d.clocks.iter().find(|c| c.name == name)
}

async fn get(c: &mut Ad, name: &str) -> ad::Dispute {
    c.get_dispute(ad::GetDisputeRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
        .dispute
        .expect("dispute")
}

async fn start_mediation(suite: &TestSuite, d: &ad::Dispute, notice: bool) -> ad::Dispute {
    coordinator(suite)
        .start_mediation(ad::StartMediationRequest {
            name: d.name.clone(),
            request_id: rid(),
            consenting_party_ids: vec!["p1".into(), "p2".into()],
            organ_consents: true,
            suspension_notice: notice.then(|| doc("行政复议中止通知书")),
            etag: String::new(),
        })
        .await
        .expect("mediating")
        .into_inner()
        .dispute
        .expect("dispute")
}

async fn draft(suite: &TestSuite, d: &ad::Dispute) -> ad::Dispute {
    coordinator(suite)
        .draft_agreement(ad::DraftAgreementRequest {
            name: d.name.clone(),
            request_id: rid(),
            document: Some(doc("行政复议调解书")),
            etag: String::new(),
        })
        .await
        .expect("drafted")
        .into_inner()
        .dispute
        .expect("dispute")
}

fn sign_req(d: &ad::Dispute, party: &str) -> ad::SignAgreementRequest {
    ad::SignAgreementRequest {
        name: d.name.clone(),
        request_id: rid(),
        party_id: party.into(),
        etag: String::new(),
    }
}

fn seal_req(d: &ad::Dispute) -> ad::SealAgreementRequest {
    ad::SealAgreementRequest {
        name: d.name.clone(),
        request_id: rid(),
        etag: String::new(),
    }
}

fn effective(d: &ad::Dispute) -> bool {
    d.agreement
        .as_ref()
        .is_some_and(|a| a.effective_time.is_some())
}

// 1. A compensation (补偿) dispute in 行政复议 mediated to a 复议调解书: effective only with the
//    last of every party's signature and the reviewing organ's seal (行政复议法 Art 73).
//    Every act is idempotent by request_id.
suite_test!(
    a_compensation_dispute_is_mediated_to_an_agreement_effective_only_after_the_last_signature_and_the_seal,
    |suite| async move {
        let req = intake(
            ad::DisputeStage::InReview,
            &[ad::ClaimKind::Indemnification],
            "征收补偿标准低于评估价",
        );
        let d = create(&suite, req.clone()).await;
        assert_eq!(st(&d), S::Open);
        assert!(d.scope.as_ref().expect("scope").mediation_allowed);
        // The same request id replays the first answer; with another request it is refused.
        let again = create(&suite, req.clone()).await;
        assert_eq!(again.name, d.name);
        let e = coordinator(&suite)
            .create_dispute(ad::CreateDisputeRequest {
                facts: "另一事实".into(),
                ..req.clone()
            })
            .await
            .expect_err("reused");
        assert_eq!(e.code(), Code::AlreadyExists);
        assert_eq!(reason_of(&e).as_deref(), Some("REQUEST_ID_REUSED"));

        let m = start_mediation(&suite, &d, true).await;
        assert_eq!(st(&m), S::Mediating);
        assert!(m.review_suspended);
        let p = draft(&suite, &m).await;
        assert_eq!(st(&p), S::AgreementPending);

        // The organ's signature is the organ's own act; the centre cannot give it.
        let e = coordinator(&suite)
            .sign_agreement(sign_req(&p, ""))
            .await
            .expect_err("not the organ");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_PARTY"));
        // In 行政复议 the reviewing organ seals, not the centre.
        let e = coordinator(&suite)
            .seal_agreement(seal_req(&p))
            .await
            .expect_err("not the reviewing organ");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_PARTY"));

        let sign_p1 = sign_req(&p, "p1");
        let a = coordinator(&suite)
            .sign_agreement(sign_p1.clone())
            .await
            .expect("p1")
            .into_inner()
            .dispute
            .expect("d");
        assert!(!effective(&a));
        // A retried signature answers the same, signs nothing twice.
        let replay = coordinator(&suite)
            .sign_agreement(sign_p1)
            .await
            .expect("replay")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(replay.etag, a.etag);
        let e = coordinator(&suite)
            .sign_agreement(sign_req(&p, "p1"))
            .await
            .expect_err("twice");
        assert_eq!(reason_of(&e).as_deref(), Some("ALREADY_SIGNED"));
        let a = liaison(&suite)
            .sign_agreement(sign_req(&p, ""))
            .await
            .expect("organ")
            .into_inner()
            .dispute
            .expect("d");
        assert!(!effective(&a));
        let a = review_officer(&suite)
            .seal_agreement(seal_req(&p))
            .await
            .expect("sealed")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&a), S::AgreementPending, "p2 has not signed");
        assert!(!effective(&a));
        let done = coordinator(&suite)
            .sign_agreement(sign_req(&p, "p2"))
            .await
            .expect("last signature")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&done), S::Resolved);
        assert!(effective(&done));
        assert_eq!(done.result(), ad::DisputeResult::MediationAgreement);
        let review = clock(&done, "review").expect("review clock");
        assert!(!review.paused);
        // Every participant sees the result; statistics count it.
        for mut c in [liaison(&suite), review_officer(&suite)] {
            assert_eq!(st(&get(&mut c, &d.name).await), S::Resolved);
        }
        let stats = coordinator(&suite)
            .get_dispute_statistics(ad::GetDisputeStatisticsRequest::default())
            .await
            .expect("stats")
            .into_inner();
        assert_eq!(stats.dispute_count, 1);
        assert_eq!(stats.organ_counts.get(&agency(ORGAN)), Some(&1));
        assert_eq!(stats.act_kind_counts.get("ACT_KIND_EXPROPRIATION"), Some(&1));
        assert_eq!(
            stats.result_counts.get("DISPUTE_RESULT_MEDIATION_AGREEMENT"),
            Some(&1)
        );
        assert_eq!(stats.overdue_count, 0);
    }
);

// 2. Outside 行政诉讼法 Art 60 (the act's legality): mediation refused naming the article,
//    coordination without agreement, closed by the organ's correction.
suite_test!(
    outside_article_60_mediation_is_refused_with_the_article_and_the_organs_correction_closes_it,
    |suite| async move {
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::InLitigation,
                &[ad::ClaimKind::Legality],
                "请求撤销处罚决定",
            ),
        )
        .await;
        assert!(!d.scope.as_ref().expect("scope").mediation_allowed);
        let e = coordinator(&suite)
            .start_mediation(ad::StartMediationRequest {
                name: d.name.clone(),
                request_id: rid(),
                consenting_party_ids: vec!["p1".into(), "p2".into()],
                organ_consents: true,
                ..Default::default()
            })
            .await
            .expect_err("outside the scope");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&e).as_deref(), Some("OUTSIDE_MEDIATION_SCOPE"));
        assert!(
            e.message().contains("行政诉讼法第六十条"),
            "{}",
            e.message()
        );
        let c = coordinator(&suite)
            .start_coordination(ad::StartCoordinationRequest {
                name: d.name.clone(),
                request_id: rid(),
                method: ad::CoordinationMethod::Correction as i32,
                etag: String::new(),
            })
            .await
            .expect("coordinating")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&c), S::Coordinating);
        // The correction is the organ's act.
        let correction = ad::RecordCorrectionRequest {
            name: d.name.clone(),
            request_id: rid(),
            document: Some(doc("撤销行政处罚决定书")),
            etag: String::new(),
        };
        let e = coordinator(&suite)
            .record_correction(correction.clone())
            .await
            .expect_err("not the organ");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_PARTY"));
        let done = liaison(&suite)
            .record_correction(correction)
            .await
            .expect("corrected")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&done), S::Resolved);
        assert_eq!(done.result(), ad::DisputeResult::OrganCorrection);
        assert!(done.close_time.is_some());
        // Final: nothing more.
        let e = coordinator(&suite)
            .close_dispute(ad::CloseDisputeRequest {
                name: d.name.clone(),
                request_id: rid(),
                result: ad::DisputeResult::NotResolved as i32,
                ..Default::default()
            })
            .await
            .expect_err("final");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_STATE"));
    }
);

// 3. 行政复议 suspended for mediation (Art 39(6)): the review clock paused while suspended,
//    resumed when a party withdraws consent (Art 73 ¶2) with the deadline moved by the whole
//    days suspended (none within one day); the head of the review body extends by 30 (Art 62);
//    the organ decides.
suite_test!(
    a_review_suspended_for_mediation_pauses_its_clock_and_resumes_when_a_party_withdraws_consent,
    |suite| async move {
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::InReview,
                &[ad::ClaimKind::Discretion],
                "罚款数额裁量过重",
            ),
        )
        .await;
        let before = clock(&d, "review").expect("review").clone();
        assert!(!before.paused);
        // Without the written suspension notice: refused on the field.
        let e = coordinator(&suite)
            .start_mediation(ad::StartMediationRequest {
                name: d.name.clone(),
                request_id: rid(),
                consenting_party_ids: vec!["p1".into(), "p2".into()],
                organ_consents: true,
                ..Default::default()
            })
            .await
            .expect_err("notice");
        assert_eq!(e.code(), Code::InvalidArgument);
        // Without the organ's consent: refused.
        let e = coordinator(&suite)
            .start_mediation(ad::StartMediationRequest {
                name: d.name.clone(),
                request_id: rid(),
                consenting_party_ids: vec!["p1".into(), "p2".into()],
                organ_consents: false,
                suspension_notice: Some(doc("中止通知书")),
                etag: String::new(),
            })
            .await
            .expect_err("consent");
        assert_eq!(reason_of(&e).as_deref(), Some("PARTY_CONSENT_REQUIRED"));
        let m = start_mediation(&suite, &d, true).await;
        let paused = clock(&m, "review").expect("review");
        assert!(paused.paused);
        assert_eq!(paused.pause_reason, "mediation");
        assert!(m.review_suspended);
        assert_eq!(m.notices.len(), 1);
        // The reviewing organ sees the suspension.
        let seen = get(&mut review_officer(&suite), &d.name).await;
        assert!(seen.review_suspended);

        let back = coordinator(&suite)
            .withdraw_consent(ad::WithdrawConsentRequest {
                name: d.name.clone(),
                request_id: rid(),
                party_id: "p2".into(),
                resumption_notice: Some(doc("恢复审理通知书")),
                etag: String::new(),
            })
            .await
            .expect("resumed")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&back), S::Open);
        assert!(!back.review_suspended);
        assert_eq!(back.notices.len(), 2);
        assert_eq!(back.notices[1].kind(), ad::ReviewNoticeKind::Resumption);
        let resumed = clock(&back, "review").expect("review");
        assert!(!resumed.paused);
        assert!(
            resumed
                .total_paused
                .as_ref()
                .is_some_and(|t| t.seconds > 0 || t.nanos > 0)
        );
        // Suspended and resumed within one day: no whole day excluded, the deadline stands.
        assert_eq!(resumed.due_at, before.due_at);

        // Art 62: +30 days only by the head of the review body.
        let ext = ad::ExtendReviewRequest {
            name: d.name.clone(),
            request_id: rid(),
            days: 30,
            etag: String::new(),
        };
        let e = review_officer(&suite)
            .extend_review(ext.clone())
            .await
            .expect_err("not the head");
        assert_eq!(e.code(), Code::PermissionDenied);
        let x = client(&suite, REVIEWER, "review-head", &["review_head"])
            .extend_review(ext)
            .await
            .expect("extended")
            .into_inner()
            .dispute
            .expect("d");
        let extended = clock(&x, "review").expect("review");
        assert_eq!(extended.extended_by, 30);
        let secs = |c: &fengqiao_proto::common::ClockState| c.due_at.as_ref().map(|t| t.seconds);
        assert!(secs(extended) > secs(&before));

        // The organ decides (Art 73 ¶2): CLOSED, the clock stopped.
        let closed = review_officer(&suite)
            .close_dispute(ad::CloseDisputeRequest {
                name: d.name.clone(),
                request_id: rid(),
                result: ad::DisputeResult::Decided as i32,
                document: Some(doc("行政复议决定书")),
                etag: String::new(),
            })
            .await
            .expect("decided")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&closed), S::Closed);
        assert_eq!(closed.result(), ad::DisputeResult::Decided);
        assert!(!closed.overdue);
    }
);

async fn transfers_of_case(suite: &TestSuite, case_id: &str) -> Vec<Transfer> {
    router(suite, CENTRE, "coordinator-01", &["coordinator"])
        .list_transfers(ListTransfersRequest {
            case_id: case_id.into(),
            ..Default::default()
        })
        .await
        .expect("list transfers")
        .into_inner()
        .transfers
}

fn ask_req(d: &ad::Dispute) -> ad::AskProcuratorateRequest {
    ad::AskProcuratorateRequest {
        name: d.name.clone(),
        request_id: rid(),
        procuratorate: agency(PROCURATORATE),
        kind: ad::ProcuratorateRequestKind::Participate as i32,
        summary: "征收补偿争议，商请检察机关参与化解".into(),
    }
}

// 4. The procuratorate asked to take part over coordination-to-procuratorate: it sees the
//    dispute once asked, accepts (its 3-month review clock starts, 2016 rules Art 12) and
//    answers within it with one of the route's outcomes, mirrored onto the dispute.
suite_test!(
    the_procuratorate_asked_to_take_part_answers_within_its_clock_with_a_route_outcome,
    |suite| async move {
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::InSupervision,
                &[ad::ClaimKind::Compensation],
                "行政赔偿争议",
            ),
        )
        .await;
        let mut prosecutor = client(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"]);
        let e = prosecutor
            .get_dispute(ad::GetDisputeRequest {
                name: d.name.clone(),
            })
            .await
            .expect_err("not yet a participant");
        assert_eq!(e.code(), Code::NotFound);
        // Only the centre's coordinator asks.
        let e = liaison(&suite)
            .ask_procuratorate(ask_req(&d))
            .await
            .expect_err("not the centre");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_PARTY"));
        let asked = coordinator(&suite)
            .ask_procuratorate(ask_req(&d))
            .await
            .expect("asked")
            .into_inner()
            .dispute
            .expect("d");
        let p = asked.procuratorate.clone().expect("involvement");
        assert!(!p.referred_by_procuratorate);
        assert!(p.transfer.starts_with("transfers/"));
        // While unanswered, asking again is refused.
        let e = coordinator(&suite)
            .ask_procuratorate(ask_req(&d))
            .await
            .expect_err("pending");
        assert_eq!(reason_of(&e).as_deref(), Some("OPEN_TRANSFER_EXISTS"));
        assert_eq!(get(&mut prosecutor, &d.name).await.name, d.name);

        let mut on_router = router(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"]);
        on_router
            .accept_transfer(AcceptTransferRequest {
                name: p.transfer.clone(),
                request_id: rid(),
                comment: "受理".into(),
                ..Default::default()
            })
            .await
            .expect("accepted");
        let mut centre = coordinator(&suite);
        let running = eventually("the procuratorate's clock on the dispute", || {
            let mut c = centre.clone();
            let name = d.name.clone();
            async move {
                let x = get(&mut c, &name).await;
                clock(&x, "procuratorate_review").is_some().then_some(x)
            }
        })
        .await;
        let pc = clock(&running, "procuratorate_review").expect("clock");
        // 3 calendar months: 89 to 92 days.
        assert!((89..=92).contains(&pc.length), "{}", pc.length);
        // An outcome the route does not list is refused by the router.
        let e = on_router
            .submit_feedback(SubmitFeedbackRequest {
                name: p.transfer.clone(),
                request_id: rid(),
                outcome_code: "case_closed_somehow".into(),
                summary: "?".into(),
                ..Default::default()
            })
            .await
            .expect_err("not a route outcome");
        assert_eq!(e.code(), Code::InvalidArgument);
        on_router
            .submit_feedback(SubmitFeedbackRequest {
                name: p.transfer.clone(),
                request_id: rid(),
                outcome_code: "participated_resolved".into(),
                summary: "检察机关参与化解，争议实质性化解".into(),
                ..Default::default()
            })
            .await
            .expect("feedback");
        let answered = eventually("the procuratorate's answer on the dispute", || {
            let mut c = centre.clone();
            let name = d.name.clone();
            async move {
                let x = get(&mut c, &name).await;
                x.procuratorate
                    .as_ref()
                    .is_some_and(|p| p.outcome.is_some())
                    .then_some(x)
            }
        })
        .await;
        let outcome = answered
            .procuratorate
            .as_ref()
            .and_then(|p| p.outcome.as_ref())
            .expect("outcome");
        assert_eq!(outcome.code, "participated_resolved");
        let pc = clock(&answered, "procuratorate_review").expect("clock");
        assert!(pc.stopped_at.is_some(), "stopped on the answer");
        assert!(!pc.expired, "answered within the clock");
        assert!(!answered.overdue);
        let _ = centre
            .get_dispute(ad::GetDisputeRequest {
                name: d.name.clone(),
            })
            .await;
    }
);

// 5. The procuratorate's own referral (procuratorate-to-coordination, approved by its
//    department head) arrives at the centre as a dispute in procuratorial supervision, seen
//    by the centre, the organ and the procuratorate, by nobody else; once the organ has
//    corrected its act the centre reports the result back with the route's outcome.
suite_test!(
    the_procuratorates_own_referral_arrives_as_a_dispute,
    |suite| async move {
        let case_id = rid();
        let mut prosecutor = router(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"]);
        let t = prosecutor
            .create_transfer(CreateTransferRequest {
                transfer: Some(Transfer {
                    route: "routes/procuratorate-to-coordination".into(),
                    to_agency: Some(AgencyRef {
                        name: agency(CENTRE),
                        ..AgencyRef::default()
                    }),
                    case_snapshot: Some(CaseSnapshot {
                        case_id: case_id.clone(),
                        external_references: [("organ".to_owned(), agency(ORGAN))]
                            .into_iter()
                            .collect(),
                        category: DisputeCategory::Administrative as i32,
                        summary: "行政诉讼监督案件中的征收补偿争议，具备实质性化解条件".into(),
                        parties: vec![applicant("p1", "王某")],
                        region_code: "210203".into(),
                        ..CaseSnapshot::default()
                    }),
                    note: "移送协调化解".into(),
                    ..Transfer::default()
                }),
                request_id: rid(),
                submit: true,
            })
            .await
            .expect("created")
            .into_inner()
            .transfer
            .expect("transfer");
        router(
            &suite,
            PROCURATORATE,
            "department-head",
            &["department_head"],
        )
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            request_id: rid(),
            step_index: 0,
            comment: "同意移送".into(),
            ..Default::default()
        })
        .await
        .expect("approved");
        let centre = coordinator(&suite);
        let d = eventually("the referral as a dispute", || {
            let mut c = centre.clone();
            let case_id = case_id.clone();
            async move {
                c.list_disputes(ad::ListDisputesRequest::default())
                    .await
                    .expect("list")
                    .into_inner()
                    .disputes
                    .into_iter()
                    .find(|d| d.case_id == case_id)
            }
        })
        .await;
        assert_eq!(st(&d), S::Open);
        assert_eq!(d.stage(), ad::DisputeStage::InSupervision);
        let p = d.procuratorate.as_ref().expect("procuratorate");
        assert!(p.referred_by_procuratorate);
        assert_eq!(p.transfer, t.name);
        assert_eq!(
            d.organ.as_ref().map(|o| o.name.as_str()),
            Some(agency(ORGAN).as_str())
        );
        let seen = get(
            &mut client(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"]),
            &d.name,
        )
        .await;
        assert_eq!(seen.name, d.name);
        let e = review_officer(&suite)
            .get_dispute(ad::GetDisputeRequest {
                name: d.name.clone(),
            })
            .await
            .expect_err("not a participant");
        assert_eq!(e.code(), Code::NotFound);
        // The referral carries no claims: mediation is refused until the centre records them.
        assert!(!d.scope.as_ref().expect("scope").mediation_allowed);
        let amended = coordinator(&suite)
            .amend_claims(ad::AmendClaimsRequest {
                name: d.name.clone(),
                request_id: rid(),
                claims: vec![ad::Claim {
                    kind: ad::ClaimKind::Indemnification as i32,
                    description: "提高补偿".into(),
                    amount: None,
                }],
                act: None,
                etag: String::new(),
            })
            .await
            .expect("amended")
            .into_inner()
            .dispute
            .expect("d");
        assert!(amended.scope.as_ref().expect("scope").mediation_allowed);
        // The centre can coordinate it (explanation, correction, withdrawal).
        let c = coordinator(&suite)
            .start_coordination(ad::StartCoordinationRequest {
                name: d.name.clone(),
                request_id: rid(),
                method: ad::CoordinationMethod::Explanation as i32,
                etag: String::new(),
            })
            .await
            .expect("coordinating")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&c), S::Coordinating);
        let report = ad::ReportToProcuratorateRequest {
            name: d.name.clone(),
            request_id: rid(),
            summary: "行政机关自行纠正，当事人认可".into(),
        };
        // Nothing to report while the dispute is open.
        let e = coordinator(&suite)
            .report_to_procuratorate(report.clone())
            .await
            .expect_err("open");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_STATE"));
        // The centre accepts the referral on the router; the organ corrects its act.
        router(&suite, CENTRE, "coordinator-01", &["coordinator"])
            .accept_transfer(AcceptTransferRequest {
                name: t.name.clone(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("centre accepts");
        let done = liaison(&suite)
            .record_correction(ad::RecordCorrectionRequest {
                name: d.name.clone(),
                request_id: rid(),
                document: Some(doc("撤销决定书")),
                etag: String::new(),
            })
            .await
            .expect("corrected")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&done), S::Resolved);
        // Only the centre reports.
        let e = liaison(&suite)
            .report_to_procuratorate(ad::ReportToProcuratorateRequest {
                request_id: rid(),
                ..report.clone()
            })
            .await
            .expect_err("not the centre");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_PARTY"));
        let reported = coordinator(&suite)
            .report_to_procuratorate(report.clone())
            .await
            .expect("reported")
            .into_inner()
            .dispute
            .expect("d");
        let p = reported.procuratorate.as_ref().expect("p");
        assert!(p.reported);
        assert_eq!(
            p.outcome.as_ref().map(|o| o.code.as_str()),
            Some("administrative_action_corrected")
        );
        // A replay answers the same; the procuratorate sees the route's outcome on the router.
        let replay = coordinator(&suite)
            .report_to_procuratorate(report)
            .await
            .expect("replay")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(replay.etag, reported.etag);
        let on_router = prosecutor
            .get_transfer(fengqiao_proto::router::GetTransferRequest {
                name: t.name.clone(),
            })
            .await
            .expect("transfer")
            .into_inner()
            .transfer
            .expect("t");
        assert_eq!(
            on_router.state(),
            fengqiao_proto::router::TransferState::FeedbackSubmitted
        );
        assert_eq!(
            on_router.feedback.as_ref().map(|f| f.outcome_code.as_str()),
            Some("administrative_action_corrected")
        );
    }
);

// 6. Settlement (和解) → withdrawal; a second 行政复议 application on the same facts and
//    reasons is refused (行政复议法 Art 74), other facts are not.
suite_test!(
    settlement_withdraws_and_a_second_application_on_the_same_facts_is_refused,
    |suite| async move {
        let facts = "征收补偿款未按期支付";
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::InReview,
                &[ad::ClaimKind::Indemnification],
                facts,
            ),
        )
        .await;
        let m = start_mediation(&suite, &d, true).await;
        let w = coordinator(&suite)
            .record_settlement(ad::RecordSettlementRequest {
                name: m.name.clone(),
                request_id: rid(),
                document: Some(doc("和解协议及撤回行政复议申请书")),
                etag: String::new(),
            })
            .await
            .expect("withdrawn")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(st(&w), S::Withdrawn);
        assert_eq!(w.result(), ad::DisputeResult::SettledWithdrawn);
        let e = coordinator(&suite)
            .create_dispute(intake(
                ad::DisputeStage::InReview,
                &[ad::ClaimKind::Indemnification],
                // The same facts typed again, spacing aside.
                "征收补偿款未按期支付 ",
            ))
            .await
            .expect_err("same facts");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&e).as_deref(), Some("SAME_FACTS_WITHDRAWN"));
        assert!(e.message().contains("第七十四条"));
        let other = create(
            &suite,
            intake(
                ad::DisputeStage::InReview,
                &[ad::ClaimKind::Indemnification],
                "安置房面积认定有误",
            ),
        )
        .await;
        assert_eq!(st(&other), S::Open);
    }
);

// 7. An agency that is not a participant gets NOT_FOUND on every read (and write), as for a
//    missing dispute, and its lists are empty (行诉解释 Art 86).
suite_test!(
    an_agency_that_is_not_a_participant_gets_not_found_on_every_read,
    |suite| async move {
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::BeforeReview,
                &[ad::ClaimKind::Compensation],
                "赔偿",
            ),
        )
        .await;
        let outsiders = [
            client(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"]),
            client(&suite, REVIEWER, "review-officer", &["review_officer"]),
            client(
                &suite,
                "xigang-court",
                "judge-01",
                &["judge", "coordinator"],
            ),
        ];
        for mut c in outsiders {
            let e = c
                .get_dispute(ad::GetDisputeRequest {
                    name: d.name.clone(),
                })
                .await
                .expect_err("outsider");
            assert_eq!(e.code(), Code::NotFound);
            let missing = c
                .get_dispute(ad::GetDisputeRequest {
                    name: "disputes/00000000-0000-4000-8000-000000000000".into(),
                })
                .await
                .expect_err("missing");
            assert_eq!(missing.code(), Code::NotFound);
            assert_eq!(reason_of(&e), reason_of(&missing));
            let listed = c
                .list_disputes(ad::ListDisputesRequest::default())
                .await
                .expect("list")
                .into_inner()
                .disputes;
            assert!(listed.is_empty());
            let stats = c
                .get_dispute_statistics(ad::GetDisputeStatisticsRequest::default())
                .await
                .expect("stats")
                .into_inner();
            assert_eq!(stats.dispute_count, 0);
            let e = c
                .start_coordination(ad::StartCoordinationRequest {
                    name: d.name.clone(),
                    request_id: rid(),
                    method: ad::CoordinationMethod::Explanation as i32,
                    etag: String::new(),
                })
                .await
                .expect_err("outsider write");
            assert_eq!(e.code(), Code::NotFound);
        }
        // The participants do see it.
        assert_eq!(get(&mut liaison(&suite), &d.name).await.name, d.name);
        assert_eq!(
            coordinator(&suite)
                .list_disputes(ad::ListDisputesRequest::default())
                .await
                .expect("list")
                .into_inner()
                .disputes
                .len(),
            1
        );
    }
);

// 8. AskProcuratorate cut off mid-flight (client deadline 3 ms: the router call, the local
//    commit, or neither may have happened) is completed by its retry with the same
//    request_id: one transfer on the router, the dispute naming it, the same answer twice.
suite_test!(
    a_cut_off_request_to_the_procuratorate_is_completed_by_its_retry,
    |suite| async move {
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::InSupervision,
                &[ad::ClaimKind::Legality],
                "监督",
            ),
        )
        .await;
        let msg = ask_req(&d);
        let mut req = tonic::Request::new(msg.clone());
        req.set_timeout(Duration::from_millis(3));
        let cut = match coordinator(&suite).ask_procuratorate(req).await {
            Ok(_) => false,
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => true,
            Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
        };
        eprintln!("request cut off mid-flight: {cut}");
        assert!(transfers_of_case(&suite, &d.case_id).await.len() <= 1);
        let first = coordinator(&suite)
            .ask_procuratorate(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .dispute
            .expect("d");
        let again = coordinator(&suite)
            .ask_procuratorate(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(again.procuratorate, first.procuratorate);
        let all = transfers_of_case(&suite, &d.case_id).await;
        assert_eq!(all.len(), 1, "one transfer for the dispute");
        assert_eq!(
            first.procuratorate.as_ref().map(|p| p.transfer.as_str()),
            Some(all[0].name.as_str())
        );
        // A new request id while unanswered is refused, still one transfer.
        let e = coordinator(&suite)
            .ask_procuratorate(ad::AskProcuratorateRequest {
                request_id: rid(),
                ..msg
            })
            .await
            .expect_err("second request");
        assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::AlreadyExists),
            "{e:?}"
        );
        assert_eq!(transfers_of_case(&suite, &d.case_id).await.len(), 1);
    }
);

// 9. A procuratorate that declines with one of the route's decline reasons: the refusal shows
//    on the dispute and the centre may ask again.
suite_test!(
    a_declined_request_shows_on_the_dispute_and_may_be_made_again,
    |suite| async move {
        use fengqiao_proto::router::DeclineTransferRequest;
        let d = create(
            &suite,
            intake(
                ad::DisputeStage::InSupervision,
                &[ad::ClaimKind::Legality],
                "不属监督",
            ),
        )
        .await;
        let asked = coordinator(&suite)
            .ask_procuratorate(ask_req(&d))
            .await
            .expect("asked")
            .into_inner()
            .dispute
            .expect("d");
        let transfer = asked.procuratorate.expect("p").transfer;
        router(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"])
            .decline_transfer(DeclineTransferRequest {
                name: transfer.clone(),
                reason_code: "not_procuratorate_matter".into(),
                reason: "不属于法律监督职责范围".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("declined");
        let centre = coordinator(&suite);
        let declined = eventually("the refusal on the dispute", || {
            let mut c = centre.clone();
            let name = d.name.clone();
            async move {
                let x = get(&mut c, &name).await;
                x.procuratorate
                    .as_ref()
                    .is_some_and(|p| p.outcome.is_some())
                    .then_some(x)
            }
        })
        .await;
        let p = declined.procuratorate.as_ref().expect("p");
        assert_eq!(
            p.outcome.as_ref().map(|o| o.code.as_str()),
            Some("declined:not_procuratorate_matter")
        );
        assert_eq!(st(&declined), S::Open);
        let again = coordinator(&suite)
            .ask_procuratorate(ad::AskProcuratorateRequest {
                kind: ad::ProcuratorateRequestKind::Examine as i32,
                ..ask_req(&d)
            })
            .await
            .expect("asked again")
            .into_inner()
            .dispute
            .expect("d");
        let p2 = again.procuratorate.expect("p");
        assert_ne!(p2.transfer, transfer);
        assert!(p2.outcome.is_none());
        assert_eq!(transfers_of_case(&suite, &d.case_id).await.len(), 2);
    }
);

/// A referral from the procuratorate, approved, taken in as a dispute, accepted by the centre
/// on the router and resolved by the organ's correction.
async fn resolved_referral(suite: &TestSuite) -> (ad::Dispute, Transfer) {
    let case_id = rid();
    let t = router(suite, PROCURATORATE, "prosecutor-01", &["prosecutor"])
        .create_transfer(CreateTransferRequest {
            transfer: Some(Transfer {
                route: "routes/procuratorate-to-coordination".into(),
                to_agency: Some(AgencyRef {
                    name: agency(CENTRE),
                    ..AgencyRef::default()
                }),
                case_snapshot: Some(CaseSnapshot {
                    case_id: case_id.clone(),
                    external_references: [("organ".to_owned(), agency(ORGAN))]
                        .into_iter()
                        .collect(),
                    category: DisputeCategory::Administrative as i32,
                    summary: "征收补偿争议".into(),
                    region_code: "210203".into(),
                    ..CaseSnapshot::default()
                }),
                ..Transfer::default()
            }),
            request_id: rid(),
            submit: true,
        })
        .await
        .expect("created")
        .into_inner()
        .transfer
        .expect("transfer");
    router(
        suite,
        PROCURATORATE,
        "department-head",
        &["department_head"],
    )
    .approve_transfer(ApproveTransferRequest {
        name: t.name.clone(),
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("approved");
    let centre = coordinator(suite);
    let d = eventually("the referral as a dispute", || {
        let mut c = centre.clone();
        let case_id = case_id.clone();
        async move {
            c.list_disputes(ad::ListDisputesRequest::default())
                .await
                .expect("list")
                .into_inner()
                .disputes
                .into_iter()
                .find(|d| d.case_id == case_id)
        }
    })
    .await;
    router(suite, CENTRE, "coordinator-01", &["coordinator"])
        .accept_transfer(AcceptTransferRequest {
            name: t.name.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("centre accepts");
    let done = liaison(suite)
        .record_correction(ad::RecordCorrectionRequest {
            name: d.name.clone(),
            request_id: rid(),
            document: Some(doc("撤销决定书")),
            etag: String::new(),
        })
        .await
        .expect("corrected")
        .into_inner()
        .dispute
        .expect("d");
    (done, t)
}

// 10. ReportToProcuratorate cut off mid-flight (3 ms) is completed by its retry with the same
//     request_id: one feedback on the referral's transfer, the dispute reported once.
suite_test!(
    a_cut_off_report_to_the_procuratorate_is_completed_by_its_retry,
    |suite| async move {
        let (d, t) = resolved_referral(&suite).await;
        let msg = ad::ReportToProcuratorateRequest {
            name: d.name.clone(),
            request_id: rid(),
            summary: "行政机关自行纠正".into(),
        };
        let mut req = tonic::Request::new(msg.clone());
        req.set_timeout(Duration::from_millis(3));
        let cut = match coordinator(&suite).report_to_procuratorate(req).await {
            Ok(_) => false,
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => true,
            Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
        };
        eprintln!("report cut off mid-flight: {cut}");
        let first = coordinator(&suite)
            .report_to_procuratorate(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .dispute
            .expect("d");
        assert!(first.procuratorate.as_ref().is_some_and(|p| p.reported));
        let again = coordinator(&suite)
            .report_to_procuratorate(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .dispute
            .expect("d");
        assert_eq!(again.etag, first.etag);
        let on_router = router(&suite, PROCURATORATE, "prosecutor-01", &["prosecutor"])
            .get_transfer(fengqiao_proto::router::GetTransferRequest {
                name: t.name.clone(),
            })
            .await
            .expect("transfer")
            .into_inner()
            .transfer
            .expect("t");
        assert_eq!(
            on_router.state(),
            fengqiao_proto::router::TransferState::FeedbackSubmitted
        );
        assert_eq!(
            on_router.feedback.as_ref().map(|f| f.outcome_code.as_str()),
            Some("administrative_action_corrected")
        );
        // A new request id: reported already, refused; the transfer unchanged.
        let e = coordinator(&suite)
            .report_to_procuratorate(ad::ReportToProcuratorateRequest {
                request_id: rid(),
                ..msg
            })
            .await
            .expect_err("twice");
        assert_eq!(e.code(), Code::AlreadyExists);
    }
);
