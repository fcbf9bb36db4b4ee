//! Personal information in mediation (issue #14 §1), on SQLite and PostgreSQL: cases and the
//! case file (一案一卷) masked by default, full for the mediator and the organisation's
//! administrator with an access-log row, refused and logged for other roles; mutation answers
//! masked; sealed bodies only in the database; free text redacted and agreement parties
//! checked by the kit's validators at intake; refused calls leave a `denied` row.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{Address, Party, PartyRole};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::Transfer;
use fengqiao_store::Store;
use fengqiao_store::access::{self, Outcome};
use fengqiao_testkit::answers::{Answer as _, Change, Named, Refusal as _};
use fengqiao_testkit::services::{
    self, MediationClient as Med, ROOM, assert_denied_and_logged, assert_sealed,
    assert_sqlite_files_lack, full, mediation as med, neighbours, police_record, police_transfer,
    resident, room_roster as roster,
};
use fengqiao_testkit::{Db, ServiceName, TestSuite, suite_test};
use tonic::Code;

/// A resident ID number with a valid GB 11643 check character, and a mobile.
const ID: &str = "11010519491231002X";
const MOBILE: &str = "13812345678";

async fn store_of(suite: &TestSuite) -> Store {
    services::store_of(suite, ServiceName::Mediation).await
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

/// The noise dispute with 张三 (p1) identified in full: ID number, mobile, home address.
fn dispute() -> Transfer {
    let mut parties = neighbours();
    parties[0] = Party {
        address: Some(Address {
            region_code: "210203".into(),
            detail: "八一路某小区3号楼".into(),
            location: None,
        }),
        ..resident("p1", PartyRole::Applicant, "张三", ID, MOBILE)
    };
    police_transfer(
        "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解",
        parties,
        vec![police_record()],
        "110警情，民间纠纷，建议调解",
    )
}

/// Drives [`dispute`] to the room and waits until the mediation case is offered.
async fn offered(suite: &TestSuite) -> (Transfer, MediationCase) {
    services::offered(suite, dispute()).await
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
            .answer("full list");
        assert_whole(&listed.mediation_cases[0]);
        let file_req = || GetCaseFileRequest::named(&offered.name);
        let file = mediator
            .get_case_file(file_req())
            .await
            .answer_of("file", |r| r.case_file);
        assert_masked(file.mediation_case.as_ref().expect("case"));
        let file = mediator
            .get_case_file(full(file_req()))
            .await
            .answer_of("full file", |r| r.case_file);
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
            .refusal(Code::PermissionDenied, "denied");
        assert_eq!(reason_of(&e).as_deref(), Some("PERSONAL_INFO_VIEW_DENIED"));
        let rows = log(store.clone(), offered.case_id.clone()).await;
        assert_eq!(rows[0].outcome, Outcome::Denied);
        assert_eq!(rows[0].actor, "clerk-01");
        assert_eq!(rows[0].reason, "PERSONAL_INFO_VIEW_DENIED");

        // A mutation's answer is masked, even when full is asked for.
        let accepted = mediator
            .accept_case(full(AcceptCaseRequest {
                comment: format!("受理，联系电话{MOBILE}"),
                ..Change::change(&offered.name, &offered.etag)
            }))
            .await
            .answer_of("accept", |r| r.mediation_case);
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
                comment: "予以受理".into(),
                ..Change::change(&c.name, &c.etag)
            })
            .await
            .answer_of("accept", |r| r.mediation_case);
        let mut c = c;
        for party in ["p1", "p2"] {
            c = room
                .record_consent(RecordConsentRequest {
                    party_id: party.into(),
                    decision: ConsentDecision::Consented as i32,
                    method: ConsentMethod::Written as i32,
                    note: format!("当事人身份证{ID}，电话{MOBILE}，同意调解"),
                    ..Named::named(&c.name)
                })
                .await
                .answer_of("consent", |r| r.mediation_case);
        }
        let c = room
            .assign_mediator(AssignMediatorRequest {
                assignee: Some(assign_mediator_request::Assignee::Automatic(
                    AutomaticAssignment::default(),
                )),
                ..Named::named(&c.name)
            })
            .await
            .answer_of("assign", |r| r.mediation_case);
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
                agreement: Some(agreement(c.parties.clone())),
                ..Named::named(&c.name)
            })
            .await
            .refusal(Code::InvalidArgument, "masked parties");
        assert!(
            bad_fields_of(&e).contains(&"agreement.parties[0].id_number".to_string()),
            "{:?}",
            bad_fields_of(&e)
        );
        // With the full values: drafted, its facts redacted.
        let drafted = room
            .draft_agreement(DraftAgreementRequest {
                agreement: Some(agreement(whole.parties.clone())),
                ..Named::named(&c.name)
            })
            .await
            .answer_of("draft", |r| r.mediation_case);
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
            comment: "予以受理".into(),
            ..Change::change(&c.name, &c.etag)
        })
        .await
        .expect("accept");
        let needles = [ID, MOBILE, "八一路某小区"];
        let store = store_of(&suite).await;
        match suite.db {
            Db::Sqlite => assert_sqlite_files_lack(
                &store,
                &[
                    ("ID number", ID),
                    ("mobile", MOBILE),
                    ("address", "八一路某小区"),
                ],
            ),
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
                        assert_sealed(&b, &format!("{table}.{column}"), &needles);
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
    let reply = anon.list_cases(ListCasesRequest::default()).await;
    assert_denied_and_logged(&suite, ServiceName::Mediation, reply, "ListCases").await;
});
