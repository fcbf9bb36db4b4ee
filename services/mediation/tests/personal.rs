//! Personal information in mediation (issue #14 §1), on SQLite and PostgreSQL: cases and the
//! case file (一案一卷) masked by default, full for the mediator and the organisation's
//! administrator with an access-log row, refused and logged for other roles; mutation answers
//! masked; sealed bodies only in the database; free text redacted and agreement parties
//! checked by the kit's validators at intake; refused calls leave a `denied` row.

use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{Address, DisputeCategory, EvidenceRef, IdType, Party, PartyRole};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    ApproveTransferRequest, CaseSnapshot, CreateTransferRequest, SubmitTransferRequest, Transfer,
};
use fengqiao_store::access::{self, Outcome};
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{Db, ServiceName, TestSuite, suite_test};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;

const STATION: &str = "xigang-bayilu-station";
const COMMAND: &str = "xigang-110";
const ROOM: &str = "xigang-bayilu-mediation-room";
const ORG: &str = "organizations/bayilu-room";
/// A resident ID number with a valid GB 11643 check character, and a mobile.
const ID: &str = "11010519491231002X";
const MOBILE: &str = "13812345678";

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn router(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Router {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

fn med(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Med {
    MediationServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

fn full<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        fengqiao_kit::pii::VIEW_HEADER,
        MetadataValue::from_static("full"),
    );
    r
}

async fn store_of(suite: &TestSuite) -> Store {
    let url = suite
        .stores
        .get(&ServiceName::Mediation)
        .expect("mediation store")
        .clone();
    Store::connect(StoreConfig::new(url))
        .await
        .expect("open the service's store")
}

fn assert_masked(c: &MediationCase) {
    let p = c.parties.iter().find(|p| p.party_id == "p1").expect("p1");
    assert_eq!(p.name, "张*");
    assert_eq!(p.id_number, "110105**********2X");
    assert_eq!(p.phone, "138****5678");
    assert_eq!(p.address.as_ref().map(|a| a.detail.as_str()), Some("***"));
}

fn assert_whole(c: &MediationCase) {
    let p = c.parties.iter().find(|p| p.party_id == "p1").expect("p1");
    assert_eq!(
        (p.name.as_str(), p.id_number.as_str(), p.phone.as_str()),
        ("张三", ID, MOBILE)
    );
}

async fn get(m: &mut Med, name: &str, whole: bool) -> Result<MediationCase, tonic::Status> {
    let req = GetCaseRequest { name: name.into() };
    let r = if whole {
        m.get_case(full(req)).await
    } else {
        m.get_case(req).await
    };
    r.map(|r| r.into_inner().mediation_case.expect("case"))
}

/// The room head registers the room and three mediators (two for neighbourhood disputes).
async fn roster(suite: &TestSuite) {
    let mut head = med(suite, ROOM, "room-head", &["mediation_admin", "mediator"]);
    head.create_organization(CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: "八一路派出所驻所人民调解室".into(),
            kind: OrganizationKind::StationMediationRoom as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{ROOM}"),
            ..Default::default()
        }),
        organization_id: "bayilu-room".into(),
        request_id: rid(),
    })
    .await
    .expect("create organisation");
    for (id, spec) in [
        ("med-li", MediatorSpecialty::Neighbourhood),
        ("med-wang", MediatorSpecialty::Family),
        ("med-zhang", MediatorSpecialty::Neighbourhood),
    ] {
        head.create_mediator(CreateMediatorRequest {
            parent: ORG.into(),
            mediator: Some(Mediator {
                display_name: format!("调解员{id}"),
                actor_id: id.into(),
                specialties: vec![spec as i32],
                region_code: "210203".into(),
                max_load: 10,
                ..Default::default()
            }),
            mediator_id: id.into(),
            request_id: rid(),
        })
        .await
        .expect("create mediator");
    }
}

fn dispute() -> Transfer {
    Transfer {
        route: "routes/police-to-station-mediation".into(),
        to_agency: Some(fengqiao_proto::common::AgencyRef {
            name: format!("agencies/{ROOM}"),
            ..Default::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解".into(),
            region_code: "210203".into(),
            parties: vec![
                Party {
                    party_id: "p1".into(),
                    role: PartyRole::Applicant as i32,
                    name: "张三".into(),
                    id_type: IdType::ResidentIdCard as i32,
                    id_number: ID.into(),
                    phone: MOBILE.into(),
                    address: Some(Address {
                        region_code: "210203".into(),
                        detail: "八一路某小区3号楼".into(),
                        location: None,
                    }),
                },
                Party {
                    party_id: "p2".into(),
                    role: PartyRole::Respondent as i32,
                    name: "李某".into(),
                    ..Default::default()
                },
            ],
            evidence: vec![EvidenceRef {
                display_name: "出警记录".into(),
                media_type: "application/pdf".into(),
                uri: "evidence://jingqing/0001".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        note: "110警情，民间纠纷，建议调解".into(),
        ..Default::default()
    }
}

/// Drives a transfer to the room and waits until the mediation case is offered.
async fn offered(suite: &TestSuite) -> (Transfer, MediationCase) {
    let mut officer = router(suite, STATION, "officer-01", &["officer"]);
    let mut reviewer = router(suite, COMMAND, "reviewer-01", &["command_room_reviewer"]);
    let mut chief = router(suite, STATION, "duty-chief-01", &["duty_chief"]);
    let t = officer
        .create_transfer(CreateTransferRequest {
            transfer: Some(dispute()),
            request_id: rid(),
            submit: false,
        })
        .await
        .expect("create")
        .into_inner()
        .transfer
        .expect("t");
    let t = officer
        .submit_transfer(SubmitTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            request_id: rid(),
        })
        .await
        .expect("submit")
        .into_inner()
        .transfer
        .expect("t");
    let t = reviewer
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 0,
            comment: "指挥室审核通过".into(),
            request_id: rid(),
        })
        .await
        .expect("review")
        .into_inner()
        .transfer
        .expect("t");
    let t = chief
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "同意移送".into(),
            request_id: rid(),
        })
        .await
        .expect("approve")
        .into_inner()
        .transfer
        .expect("t");
    let case_id = t.case_snapshot.as_ref().expect("snapshot").case_id.clone();
    let mut room = med(suite, ROOM, "mediator-01", &["mediator"]);
    for _ in 0..100 {
        let cases = room
            .list_cases(ListCasesRequest {
                case_id: case_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .mediation_cases;
        if let Some(c) = cases.into_iter().next() {
            return (t, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the offer never reached the mediation service");
}

suite_test!(
    cases_are_masked_by_role_and_full_reads_audited,
    |suite| async move {
        roster(&suite).await;
        let (_, offered) = offered(&suite).await;
        // The list that found it was masked (the default).
        assert_masked(&offered);
        let mut mediator = med(&suite, ROOM, "mediator-01", &["mediator"]);
        assert_masked(&get(&mut mediator, &offered.name, false).await.expect("get"));
        let store = store_of(&suite).await;
        let log = |store: Store, case: String| async move {
            access::recent(&store, Some(&case), 20).await.expect("log")
        };
        assert!(log(store.clone(), offered.case_id.clone()).await.is_empty());

        // The mediator reads in full: whole, one row naming the fields, never the values.
        let whole = get(&mut mediator, &offered.name, true).await.expect("full");
        assert_whole(&whole);
        let rows = log(store.clone(), offered.case_id.clone()).await;
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.outcome, Outcome::FullRead);
        assert_eq!(row.service, "mediation");
        assert_eq!(row.method, "GetCase");
        assert_eq!(row.resource, offered.name);
        assert_eq!(row.actor, "mediator-01");
        assert_eq!(
            row.fields,
            "party_name,party_id_number,party_phone,party_address"
        );
        let printed = format!("{row:?}");
        for v in [ID, MOBILE, "张三", "八一路"] {
            assert!(!printed.contains(v), "the log holds {v}");
        }

        // The administrator lists in full; the case file (一案一卷) is masked the same way.
        let mut admin = med(&suite, ROOM, "room-head", &["mediation_admin"]);
        let listed = admin
            .list_cases(full(ListCasesRequest {
                case_id: offered.case_id.clone(),
                ..Default::default()
            }))
            .await
            .expect("full list")
            .into_inner();
        assert_whole(&listed.mediation_cases[0]);
        let file_req = || GetCaseFileRequest {
            name: offered.name.clone(),
        };
        let file = mediator
            .get_case_file(file_req())
            .await
            .expect("file")
            .into_inner()
            .case_file
            .expect("file");
        assert_masked(file.mediation_case.as_ref().expect("case"));
        let file = mediator
            .get_case_file(full(file_req()))
            .await
            .expect("full file")
            .into_inner()
            .case_file
            .expect("file");
        assert_whole(file.mediation_case.as_ref().expect("case"));
        let rows = log(store.clone(), offered.case_id.clone()).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].method, "GetCaseFile");
        assert_eq!(rows[1].method, "ListCases");

        // A clerk of the room may read the case masked, not in full: refused and logged.
        let mut clerk = med(&suite, ROOM, "clerk-01", &["mediator_assistant"]);
        let e = clerk
            .get_case_file(full(file_req()))
            .await
            .expect_err("denied");
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(reason_of(&e).as_deref(), Some("PERSONAL_INFO_VIEW_DENIED"));
        let rows = log(store.clone(), offered.case_id.clone()).await;
        assert_eq!(rows[0].outcome, Outcome::Denied);
        assert_eq!(rows[0].actor, "clerk-01");
        assert_eq!(rows[0].reason, "PERSONAL_INFO_VIEW_DENIED");

        // A mutation's answer is masked, even when full is asked for.
        let accepted = mediator
            .accept_case(full(AcceptCaseRequest {
                name: offered.name.clone(),
                etag: offered.etag.clone(),
                comment: format!("受理，联系电话{MOBILE}"),
                request_id: rid(),
            }))
            .await
            .expect("accept")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_masked(&accepted);
    }
);

suite_test!(
    intake_redacts_free_text_and_checks_agreement_parties,
    |suite| async move {
        roster(&suite).await;
        let (_, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = room
            .accept_case(AcceptCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                comment: "予以受理".into(),
                request_id: rid(),
            })
            .await
            .expect("accept")
            .into_inner()
            .mediation_case
            .expect("case");
        let mut c = c;
        for party in ["p1", "p2"] {
            c = room
                .record_consent(RecordConsentRequest {
                    name: c.name.clone(),
                    party_id: party.into(),
                    decision: ConsentDecision::Consented as i32,
                    method: ConsentMethod::Written as i32,
                    note: format!("当事人身份证{ID}，电话{MOBILE}，同意调解"),
                    request_id: rid(),
                    ..Default::default()
                })
                .await
                .expect("consent")
                .into_inner()
                .mediation_case
                .expect("case");
        }
        let c = room
            .assign_mediator(AssignMediatorRequest {
                name: c.name.clone(),
                assignee: Some(assign_mediator_request::Assignee::Automatic(
                    AutomaticAssignment::default(),
                )),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("assign")
            .into_inner()
            .mediation_case
            .expect("case");
        let whole = get(&mut room, &c.name, true).await.expect("full");
        assert_eq!(
            whole.consents[0].note,
            "当事人身份证110105**********2X，电话138****5678，同意调解"
        );

        let agreement = |parties: Vec<Party>| Agreement {
            parties,
            facts_and_responsibilities: format!("李某夜间噪音影响张某（{ID}）休息"),
            terms: vec![AgreementTerm {
                description: "李某向张某赔礼道歉".into(),
                obligor_party_ids: vec!["p2".into()],
                obligee_party_ids: vec!["p1".into()],
                ..Default::default()
            }],
            performance_manner: "即时履行".into(),
            performance_deadline: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        // Parties copied from a masked answer are refused by the kit's validators.
        let e = room
            .draft_agreement(DraftAgreementRequest {
                name: c.name.clone(),
                agreement: Some(agreement(c.parties.clone())),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("masked parties");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            bad_fields_of(&e).contains(&"agreement.parties[0].id_number".to_string()),
            "{:?}",
            bad_fields_of(&e)
        );
        // With the full values: drafted, its facts redacted.
        let drafted = room
            .draft_agreement(DraftAgreementRequest {
                name: c.name.clone(),
                agreement: Some(agreement(whole.parties.clone())),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("draft")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(
            drafted
                .agreement
                .as_ref()
                .map(|a| a.facts_and_responsibilities.as_str()),
            Some("李某夜间噪音影响张某（110105**********2X）休息")
        );
        // The answer is masked; the stored agreement keeps the parties whole.
        assert_eq!(
            drafted
                .agreement
                .as_ref()
                .map(|a| a.parties[0].id_number.as_str()),
            Some("110105**********2X")
        );
        let whole = get(&mut room, &c.name, true).await.expect("full");
        assert_eq!(
            whole
                .agreement
                .as_ref()
                .map(|a| a.parties[0].id_number.as_str()),
            Some(ID)
        );
    }
);

suite_test!(
    the_database_holds_no_id_number_or_phone,
    |suite| async move {
        roster(&suite).await;
        let (_, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        room.accept_case(AcceptCaseRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            comment: "予以受理".into(),
            request_id: rid(),
        })
        .await
        .expect("accept");
        let needles: [&[u8]; 3] = [ID.as_bytes(), MOBILE.as_bytes(), "八一路某小区".as_bytes()];
        let store = store_of(&suite).await;
        match suite.db {
            Db::Sqlite => {
                let mut checked = 0;
                for name in ["mediation.db", "mediation.db-wal"] {
                    let Ok(bytes) = std::fs::read(suite.dir().path().join(name)) else {
                        continue;
                    };
                    checked += bytes.len();
                    for n in needles {
                        assert!(
                            !bytes.windows(n.len()).any(|w| w == n),
                            "{name} holds a personal value"
                        );
                    }
                }
                assert!(checked > 0, "no database file was read");
            }
            Db::Postgres => {
                use fengqiao_store::sqlx::{self, Row as _};
                for (table, column, at_least) in [
                    ("mediation_cases", "body", 1),
                    ("mediation_cases", "route", 1),
                    ("mediation_case_entries", "body", 1),
                    ("mediation_mediators", "body", 1),
                    ("mediation_organizations", "body", 1),
                    ("idempotency_keys", "response", 1),
                ] {
                    let rows = sqlx::query(&format!(
                        "SELECT {column} AS b FROM {table} WHERE {column} IS NOT NULL"
                    ))
                    .fetch_all(store.pool())
                    .await
                    .expect("select");
                    assert!(rows.len() >= at_least, "{table}.{column}: no rows");
                    for row in rows {
                        let b: Vec<u8> = row.try_get("b").expect("bytes");
                        assert!(b.starts_with(b"FQS1"), "{table}.{column} is not sealed");
                        for n in needles {
                            assert!(!b.windows(n.len()).any(|w| w == n), "{table}.{column}");
                        }
                    }
                }
            }
        }
        assert_whole(&get(&mut room, &c.name, true).await.expect("full"));
    }
);

suite_test!(a_refused_call_leaves_a_denied_row, |suite| async move {
    let mut anon =
        MediationServiceClient::with_interceptor(suite.channel(), CallInterceptor::new(None));
    let e = anon
        .list_cases(ListCasesRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let store = store_of(&suite).await;
    let log = access::recent(&store, None, 10).await.expect("log");
    let row = log
        .iter()
        .find(|a| a.outcome == Outcome::Denied)
        .expect("a denied row");
    assert_eq!(row.service, "mediation");
    assert!(row.method.contains("ListCases"), "{}", row.method);
});
