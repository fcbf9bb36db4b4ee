//! Personal information in police referrals (issue #14 §1), on SQLite and PostgreSQL: masked
//! by default in every answer, full only for the station's roles and then in the access log,
//! refused (and logged) for the command room's roles; nothing personal in the database files;
//! intake refuses an ID number as the incident number and redacts free text; refused calls
//! leave a `denied` row.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{Address, DisputeCategory, Party, PartyRole};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::*;
use fengqiao_store::Store;
use fengqiao_store::access::{self, Outcome};
use fengqiao_testkit::answers::{Answer as _, Named as _, Refusal as _};
use fengqiao_testkit::services::{
    self, COMMAND, ReferralClient as Client, STATION, assert_denied_and_logged, assert_sealed,
    assert_sqlite_files_lack, full, referrals as client, resident,
};
use fengqiao_testkit::{Db, ServiceName, TestSuite, suite_test};
use tonic::Code;
use tonic::metadata::MetadataValue;

/// A resident ID number with a valid GB 11643 check character, and mobiles.
const ID: &str = "11010519491231002X";
const MOBILE: &str = "13812345678";
const CALLER_MOBILE: &str = "13912345678";

fn referral(incident: &str) -> Referral {
    Referral {
        incident_number: incident.into(),
        call_time: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        caller: Some(Party {
            name: "王某某".into(),
            phone: CALLER_MOBILE.into(),
            ..Default::default()
        }),
        location: Some(Address {
            region_code: "210203".into(),
            detail: "八一路某小区3号楼".into(),
            location: None,
        }),
        category: DisputeCategory::Neighbourhood as i32,
        summary: "楼上住户夜间噪音扰民".into(),
        parties: vec![
            resident("", PartyRole::Applicant, "张三", ID, MOBILE),
            Party {
                role: PartyRole::Respondent as i32,
                name: "李四".into(),
                phone: "0411-82345678".into(),
                ..Default::default()
            },
        ],
        police_station: format!("agencies/{STATION}"),
        ..Default::default()
    }
}

async fn store_of(suite: &TestSuite) -> Store {
    services::store_of(suite, ServiceName::PoliceReferral).await
}

async fn create(c: &mut Client, r: Referral) -> Result<Referral, tonic::Status> {
    c.create_referral(CreateReferralRequest {
        referral: Some(r),
        request_id: String::new(),
    })
    .await
    .map(|r| r.into_inner().referral.expect("referral"))
}

fn assert_masked(r: &Referral) {
    let p = &r.parties[0];
    assert_eq!(p.name, "张*");
    assert_eq!(p.id_number, "110105**********2X");
    assert_eq!(p.phone, "138****5678");
    assert_eq!(r.parties[1].phone, "0411-******78");
    assert_eq!(
        r.caller.as_ref().map(|c| c.phone.as_str()),
        Some("139****5678")
    );
    let loc = r.location.as_ref().expect("location");
    assert_eq!(
        (loc.region_code.as_str(), loc.detail.as_str()),
        ("210203", "***")
    );
}

suite_test!(
    masked_by_default_full_for_the_station_audited,
    |suite| async move {
        let mut d = client(&suite, COMMAND, "dispatch-system", &["dispatcher"]);
        let created = create(&mut d, referral("J-PII-1")).await.expect("create");
        // A mutation's answer is masked, whatever the header.
        assert_masked(&created);
        let replay = d
            .create_referral(full(CreateReferralRequest {
                referral: Some(referral("J-PII-1")),
                request_id: String::new(),
            }))
            .await
            .answer_of("replay", |r| r.referral);
        assert_masked(&replay);

        let mut officer = client(&suite, STATION, "officer-01", &["officer"]);
        let get = |name: &str| GetReferralRequest { name: name.into() };
        let masked = officer
            .get_referral(get(&created.name))
            .await
            .answer_of("get", |r| r.referral);
        assert_masked(&masked);
        let listed = officer
            .list_referrals(ListReferralsRequest {
                incident_number: "J-PII-1".into(),
                ..Default::default()
            })
            .await
            .answer("list");
        assert_masked(&listed.referrals[0]);
        let file = officer
            .get_referral_file(GetReferralFileRequest::named(&created.name))
            .await
            .answer_of("file", |r| r.referral_file);
        assert_masked(file.referral.as_ref().expect("referral"));

        let store = store_of(&suite).await;
        assert!(
            access::recent(&store, Some(&created.case_id), 10)
                .await
                .expect("log")
                .is_empty(),
            "masked reads are not logged as full reads"
        );

        // The station's officer asks for the full values: whole, and one access-log row.
        let whole = officer
            .get_referral(full(get(&created.name)))
            .await
            .answer_of("full get", |r| r.referral);
        assert_eq!(whole.parties[0].id_number, ID);
        assert_eq!(whole.parties[0].phone, MOBILE);
        assert_eq!(whole.parties[0].name, "张三");
        let log = access::recent(&store, Some(&created.case_id), 10)
            .await
            .expect("log");
        assert_eq!(log.len(), 1);
        let row = &log[0];
        assert_eq!(row.outcome, Outcome::FullRead);
        assert_eq!(row.service, "police-referral");
        assert_eq!(row.method, "GetReferral");
        assert_eq!(row.resource, created.name);
        assert_eq!(row.actor, "officer-01");
        assert_eq!(row.agency, format!("agencies/{STATION}"));
        assert_eq!(
            row.fields,
            "party_name,party_id_number,party_phone,party_address"
        );
        let printed = format!("{row:?}");
        for value in [ID, MOBILE, CALLER_MOBILE, "张三", "八一路"] {
            assert!(!printed.contains(value), "the log holds a value: {value}");
        }
        // The duty chief lists in full: one more row.
        let mut chief = client(&suite, STATION, "chief-01", &["duty_chief"]);
        let listed = chief
            .list_referrals(full(ListReferralsRequest {
                incident_number: "J-PII-1".into(),
                ..Default::default()
            }))
            .await
            .answer("full list");
        assert_eq!(listed.referrals[0].parties[0].id_number, ID);
        let log = access::recent(&store, Some(&created.case_id), 10)
            .await
            .expect("log");
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].method, "ListReferrals");

        // The 110 dispatcher and the command-room reviewer may not: refused and logged.
        for (actor, role) in [
            ("dispatch-system", "dispatcher"),
            ("reviewer-01", "command_room_reviewer"),
        ] {
            let mut c = client(&suite, COMMAND, actor, &[role]);
            let e = c
                .get_referral(full(get(&created.name)))
                .await
                .expect_err("denied");
            assert_eq!(e.code(), Code::PermissionDenied, "{role}");
            assert_eq!(
                reason_of(&e).as_deref(),
                Some("PERSONAL_INFO_VIEW_DENIED"),
                "{role}"
            );
            assert!(!e.message().contains(ID));
            let row = access::recent(&store, Some(&created.case_id), 1)
                .await
                .expect("log")
                .remove(0);
            assert_eq!(row.outcome, Outcome::Denied, "{role}");
            assert_eq!(row.actor, actor);
            assert_eq!(row.reason, "PERSONAL_INFO_VIEW_DENIED");
            assert!(row.fields.is_empty());
            // Masked, they still read it.
            let m = c
                .get_referral(get(&created.name))
                .await
                .answer_of("masked get", |r| r.referral);
            assert_masked(&m);
        }
        // An unknown view is the client's error.
        let mut bad = tonic::Request::new(get(&created.name));
        bad.metadata_mut().insert(
            fengqiao_kit::pii::VIEW_HEADER,
            MetadataValue::from_static("everything"),
        );
        officer
            .get_referral(bad)
            .await
            .refusal(Code::InvalidArgument, "bad view");
    }
);

suite_test!(
    the_database_holds_no_id_number_or_phone,
    |suite| async move {
        let mut d = client(&suite, COMMAND, "dispatch-system", &["dispatcher"]);
        let mut r = referral("J-PII-2");
        r.evidence = vec![fengqiao_proto::common::EvidenceRef {
            display_name: "现场照片".into(),
            uri: "https://evidence.example/1".into(),
            ..Default::default()
        }];
        let created = d
            .create_referral(CreateReferralRequest {
                referral: Some(r),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .answer_of("create", |r| r.referral);
        let needles = [ID, MOBILE, CALLER_MOBILE, "八一路某小区"];
        let store = store_of(&suite).await;
        match suite.db {
            Db::Sqlite => assert_sqlite_files_lack(
                &store,
                &[
                    ("ID number", ID),
                    ("mobile", MOBILE),
                    ("caller's mobile", CALLER_MOBILE),
                    ("address", "八一路某小区"),
                ],
            ),
            Db::Postgres => {
                use fengqiao_store::sqlx::{self, Row as _};
                let mut bodies = 0;
                for (table, column) in [
                    ("referrals", "body"),
                    ("referral_documents", "body"),
                    ("idempotency_keys", "response"),
                ] {
                    let rows = sqlx::query(&format!("SELECT {column} AS b FROM {table}"))
                        .fetch_all(store.pool())
                        .await
                        .expect("select");
                    for row in rows {
                        let b: Vec<u8> = row.try_get("b").expect("bytes");
                        assert_sealed(&b, &format!("{table}.{column}"), &needles);
                        bodies += 1;
                    }
                }
                assert!(bodies >= 3, "referral, document and answer rows");
                // The de-duplication column is a keyed hash, not the content.
                let row = sqlx::query("SELECT content_hash, incident_number FROM referrals")
                    .fetch_one(store.pool())
                    .await
                    .expect("row");
                let h: String = row.try_get("content_hash").expect("hash");
                assert_eq!(h.len(), 64);
                assert!(!h.contains(ID));
            }
        }
        // Still readable in full by the station.
        let mut officer = client(&suite, STATION, "officer-01", &["officer"]);
        let whole = officer
            .get_referral(full(GetReferralRequest::named(&created.name)))
            .await
            .answer_of("get", |r| r.referral);
        assert_eq!(whole.parties[0].id_number, ID);
    }
);

suite_test!(
    intake_refuses_personal_identifiers_and_redacts_free_text,
    |suite| async move {
        let mut d = client(&suite, COMMAND, "dispatch-system", &["dispatcher"]);
        // An ID number or a mobile number sent as the incident number: refused, named.
        for incident in [ID, MOBILE] {
            let e = create(&mut d, referral(incident))
                .await
                .refusal(Code::InvalidArgument, "personal incident number");
            assert_eq!(bad_fields_of(&e), vec!["referral.incident_number"]);
            assert!(!e.message().contains(incident));
        }
        // A party's ID number with a wrong check digit, a 10-digit phone: the kit's validators.
        let mut r = referral("J-PII-3");
        r.parties[0].id_number = "110105194912310021".into();
        r.parties[1].phone = "1381234567".into();
        let e = create(&mut d, r).await.expect_err("bad party");
        assert_eq!(
            bad_fields_of(&e),
            vec!["referral.parties[0].id_number", "referral.parties[1].phone"]
        );
        // Free text is redacted before it is stored.
        let mut r = referral("J-PII-4");
        r.summary = format!("报警人身份证{ID}，电话{MOBILE}，称楼上噪音");
        r.on_scene_handling = format!("已联系{CALLER_MOBILE}");
        let created = create(&mut d, r).await.expect("create");
        let mut officer = client(&suite, STATION, "officer-01", &["officer"]);
        let whole = officer
            .get_referral(full(GetReferralRequest::named(&created.name)))
            .await
            .answer_of("get", |r| r.referral);
        assert_eq!(
            whole.summary,
            "报警人身份证110105**********2X，电话138****5678，称楼上噪音"
        );
        assert_eq!(whole.on_scene_handling, "已联系139****5678");
        // The same push again still matches (redaction precedes the content hash).
        let again = create(&mut d, {
            let mut r = referral("J-PII-4");
            r.summary = format!("报警人身份证{ID}，电话{MOBILE}，称楼上噪音");
            r.on_scene_handling = format!("已联系{CALLER_MOBILE}");
            r
        })
        .await
        .expect("replay");
        assert_eq!(again.name, created.name);
        // The override reason is redacted too.
        let mut reviewer = client(&suite, COMMAND, "reviewer-01", &["command_room_reviewer"]);
        let over = reviewer
            .override_screening(OverrideScreeningRequest {
                name: created.name.clone(),
                result: ScreeningResult::PublicSecurity as i32,
                reason: format!("当事人{MOBILE}有违法行为"),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            })
            .await
            .answer_of("override", |r| r.referral);
        let sc = over.screening.expect("screening");
        assert_eq!(sc.override_reason, "当事人138****5678有违法行为");
    }
);

suite_test!(a_refused_call_leaves_a_denied_row, |suite| async move {
    // No token at all: UNAUTHENTICATED, written to the service's access log by the guard.
    let mut anon =
        PoliceReferralServiceClient::with_interceptor(suite.channel(), CallInterceptor::new(None));
    let reply = anon.list_referrals(ListReferralsRequest::default()).await;
    let service = ServiceName::PoliceReferral;
    assert_denied_and_logged(&suite, service, reply, "ListReferrals").await;
});
