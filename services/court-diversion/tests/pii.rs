//! Personal information in the court's pre-filing cases (issue #14 §1), on SQLite and
//! PostgreSQL: sealed at rest (no identity number or phone in the database files), masked in
//! every answer, the full view only for the roles of [`FULL_VIEW`] and audited, refused and
//! logged for others; party intake through the shared validators, free text redacted,
//! identifiers holding an identity number refused.

use fengqiao_court_diversion::{CourtDiversion, migrate};
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Money, Party, PartyRole};
use fengqiao_proto::courtdiversion::court_diversion_service_server::CourtDiversionService as _;
use fengqiao_proto::courtdiversion::*;
use fengqiao_store::access::{self, Outcome};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Named as _, Refusal as _};
use fengqiao_testkit::services::{as_caller, assert_bodies_sealed, assert_no_rows, resident, rid};
use tonic::{Code, Request};

const COURT: &str = "agencies/xigang-court";
/// A resident ID number with a valid GB 11643 check digit.
const ID: &str = "210203199001011239";
const PHONE: &str = "13900005201";

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn req<T>(roles: &[&str], full: bool, msg: T) -> Request<T> {
    as_caller(COURT, "clerk-01", roles, full, msg)
}

/// The service on `store`, its schema migrated.
async fn migrated(store: &Store) -> CourtDiversion {
    migrate(store).await.expect("migrate");
    let router = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    CourtDiversion::new(store.clone(), router)
}

fn person(id: &str, role: PartyRole) -> Party {
    resident(id, role, "王小明", ID, PHONE)
}

fn case(number: u32) -> PreFilingCase {
    PreFilingCase {
        pre_filing_number: format!("(2026)辽0203诉前调{number}号"),
        plaintiffs: vec![person("p1", PartyRole::Applicant)],
        defendants: vec![Party {
            party_id: "p2".into(),
            role: PartyRole::Respondent as i32,
            name: "赵某".into(),
            ..Party::default()
        }],
        claims: vec![Claim {
            description: format!("判令被告赔偿，原告电话{PHONE}"),
            amount: Some(Money {
                currency_code: "CNY".into(),
                units: 5000,
                nanos: 0,
            }),
        }],
        category: DisputeCategory::Neighbourhood as i32,
        summary: format!("原告身份证{ID}，楼上漏水致装修受损"),
        evidence: vec![EvidenceRef {
            display_name: "起诉状".into(),
            uri: "court://docs/1".into(),
            media_type: "application/pdf".into(),
            sha256: "ab".repeat(32),
            ..EvidenceRef::default()
        }],
        region_code: "210203".into(),
        ..PreFilingCase::default()
    }
}

async fn create(svc: &CourtDiversion, number: u32) -> Result<PreFilingCase, tonic::Status> {
    Ok(svc
        .create_case(req(
            &["court_clerk"],
            false,
            CreateCaseRequest {
                pre_filing_case: Some(case(number)),
                consents: vec![],
                request_id: rid(),
            },
        ))
        .await
        .answer_of("case", |r| r.pre_filing_case))
}

/// Every stored body: sealed (`FQS1…`) and without the ID number or the phone; on SQLite
/// the database file and its WAL hold neither either.
async fn assert_nothing_in_the_clear(store: &Store) -> TestResult {
    let tables = ["court_cases", "court_case_events"];
    assert_bodies_sealed(store, &tables, &[("ID number", ID), ("phone", PHONE)]).await;
    Ok(())
}

both_backends!(
    parties_are_sealed_masked_and_read_in_full_only_by_the_court,
    |store: Store| async move {
        let svc = migrated(&store).await;
        let c = create(&svc, 1).await?;
        // The answer of a mutation is masked.
        let p = &c.plaintiffs[0];
        assert_eq!(p.id_number, "210203**********39");
        assert_eq!(p.phone, "139****5201");
        assert_eq!(p.name, "王**");
        // Free text is redacted at intake (stored so).
        assert_eq!(
            c.summary,
            "原告身份证210203**********39，楼上漏水致装修受损"
        );
        assert_eq!(c.claims[0].description, "判令被告赔偿，原告电话139****5201");
        assert_nothing_in_the_clear(&store).await?;

        // Masked by default, for every role.
        let get = |roles: &[&str], full: bool| req(roles, full, GetCaseRequest::named(&c.name));
        for roles in [&["court_clerk"][..], &["court_admin"][..]] {
            let got = svc.get_case(get(roles, false)).await?.into_inner();
            let p = &got.pre_filing_case.expect("case").plaintiffs[0];
            assert_eq!(p.id_number, "210203**********39", "{roles:?}");
            assert_eq!(p.phone, "139****5201");
        }
        let listed = svc
            .list_cases(req(&["judge"], false, ListCasesRequest::default()))
            .await?
            .into_inner();
        assert_eq!(
            listed.pre_filing_cases[0].plaintiffs[0].id_number,
            "210203**********39"
        );
        assert!(access::recent(&store, None, 10).await?.is_empty());

        // Full for a clerk (and a judge), with one access-log row naming the fields.
        for role in ["court_clerk", "judge"] {
            let got = svc.get_case(get(&[role], true)).await?.into_inner();
            let p = &got.pre_filing_case.expect("case").plaintiffs[0];
            assert_eq!((p.id_number.as_str(), p.phone.as_str()), (ID, PHONE));
            assert_eq!(p.name, "王小明");
        }
        let rows = access::recent(&store, Some(&c.case_id), 10).await?;
        assert_eq!(rows.len(), 2);
        let row = &rows[0];
        assert_eq!(row.outcome, Outcome::FullRead);
        assert_eq!(row.service, "court-diversion");
        assert_eq!(row.resource, c.name);
        assert_eq!(row.agency, COURT);
        assert!(row.method.ends_with("/GetCase"));
        assert_eq!(row.fields, "party_name,party_id_number,party_phone");
        for r in &rows {
            let all = format!("{r:?}");
            assert!(!all.contains(ID) && !all.contains(PHONE) && !all.contains("王小明"));
        }
        // A full list: one row per case listed.
        let listed = svc
            .list_cases(req(&["court_clerk"], true, ListCasesRequest::default()))
            .await?
            .into_inner();
        assert_eq!(listed.pre_filing_cases[0].plaintiffs[0].id_number, ID);
        let rows = access::recent(&store, Some(&c.case_id), 10).await?;
        assert_eq!(rows.len(), 3);
        assert!(rows[0].method.ends_with("/ListCases"));

        // A role without the full view: refused, and the refusal is logged.
        let e = svc.get_case(get(&["court_admin"], true)).await.refusal(
            Code::PermissionDenied,
            "no full view for the roster's administrator",
        );
        assert_eq!(reason_of(&e).as_deref(), Some("PERSONAL_INFO_VIEW_DENIED"));
        assert!(!e.message().contains(ID));
        let rows = access::recent(&store, Some(&c.case_id), 1).await?;
        assert_eq!(rows[0].outcome, Outcome::Denied);
        assert_eq!(rows[0].reason, "PERSONAL_INFO_VIEW_DENIED");
        assert_eq!(rows[0].fields, "");

        // An idempotent replay is masked the same way.
        let again = CreateCaseRequest {
            pre_filing_case: Some(case(2)),
            consents: vec![],
            request_id: rid(),
        };
        let first = svc
            .create_case(req(&["court_clerk"], false, again.clone()))
            .await?
            .into_inner();
        let replay = svc
            .create_case(req(&["court_clerk"], false, again))
            .await?
            .into_inner();
        assert_eq!(first, replay);
        let replayed = replay.pre_filing_case.expect("case");
        assert_eq!(replayed.plaintiffs[0].id_number, "210203**********39");
        assert_nothing_in_the_clear(&store).await
    }
);

both_backends!(
    intake_refuses_bad_parties_and_personal_identifiers,
    |store: Store| async move {
        let svc = migrated(&store).await;
        let refused = |c: PreFilingCase| {
            req(
                &["court_clerk"],
                false,
                CreateCaseRequest {
                    pre_filing_case: Some(c),
                    consents: vec![],
                    request_id: rid(),
                },
            )
        };
        // A wrong check digit (GB 11643-1999) and a 10-digit phone.
        let mut c = case(3);
        c.plaintiffs[0].id_number = "210203199001011234".into();
        c.plaintiffs[0].phone = "1390000520".into();
        let e = svc
            .create_case(refused(c))
            .await
            .refusal(Code::InvalidArgument, "bad party");
        let fields = bad_fields_of(&e);
        assert!(fields.contains(&"pre_filing_case.plaintiffs[0].id_number".to_string()));
        assert!(fields.contains(&"pre_filing_case.plaintiffs[0].phone".to_string()));
        assert!(!e.message().contains("210203199001011234"));
        // An identity number as the pre-filing number.
        let mut c = case(4);
        c.pre_filing_number = format!("(2026)辽0203诉前调{ID}号");
        let e = svc
            .create_case(refused(c))
            .await
            .refusal(Code::InvalidArgument, "personal id");
        assert!(bad_fields_of(&e).contains(&"pre_filing_case.pre_filing_number".to_string()));
        // Nothing was stored.
        assert_no_rows(&store, "court_cases").await;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);
