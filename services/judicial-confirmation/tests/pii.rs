//! Personal information in the court's applications (issue #14 §1), on SQLite and
//! PostgreSQL: the body sealed at rest (no identity number or phone in the database files),
//! every answer masked, the full view only for the roles of [`FULL_VIEW`] and audited,
//! refused and logged for others; parties taken in through the shared validators, free text
//! redacted, identifiers holding an identity number refused.

use fengqiao_judicial_confirmation::application::Intake;
use fengqiao_judicial_confirmation::{JudicialConfirmation, migrate};
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{EvidenceRef, Party, PartyRole};
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_server::JudicialConfirmationService as _;
use fengqiao_proto::judicialconfirmation::*;
use fengqiao_store::access::{self, Outcome};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Change, Named as _, Refusal as _};
use fengqiao_testkit::services::{
    PARTY_FIELDS, as_caller, assert_bodies_sealed, contains, full_reads, resident,
    two_party_package,
};
use tonic::{Code, Request};

const COURT: &str = "agencies/xigang-court";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// A resident ID number with a valid GB 11643 check digit.
const ID: &str = "210203199001011239";
const PHONE: &str = "13900005201";
/// What the access log must never hold.
const SECRETS: &[&str] = &[ID, PHONE, "王小明"];

/// The service on `store`, its schema migrated.
async fn migrated(store: &Store) -> JudicialConfirmation {
    migrate(store).await.expect("migrate");
    JudicialConfirmation::new(store.clone())
}

fn req<T>(roles: &[&str], full: bool, msg: T) -> Request<T> {
    as_caller(COURT, "a1", roles, full, msg)
}

fn doc() -> EvidenceRef {
    EvidenceRef {
        display_name: "文书".into(),
        media_type: "application/pdf".into(),
        sha256: SHA.into(),
        ..EvidenceRef::default()
    }
}

fn intake(transfer: &str, id_number: &str) -> Intake {
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
        case_id: format!("case-{transfer}"),
        transfer: transfer.into(),
        pre_filing_case: String::new(),
        committee: "agencies/xigang-committee".into(),
        committee_court: COURT.into(),
        delegating_court: None,
        source: ApplicationSource::PeoplesMediation,
        parties: vec![
            // No role: the court's intake takes the parties as the agreement names them.
            resident("p1", PartyRole::Unspecified, "王小明", id_number, PHONE),
            Party {
                party_id: "p2".into(),
                name: "赵某".into(),
                ..Party::default()
            },
        ],
        applicants: vec!["p1".into(), "p2".into()],
        represented: vec![],
        agreement: Some(doc()),
        agreement_effective_at: now - 10 * 86_400_000_000,
        package: two_party_package(K::Application, K::IdentityProof, K::ServiceAddress, item),
        submitted_at: 0,
    }
}

/// Every stored body is sealed and free of the ID number and the phone; on SQLite the
/// database file and its WAL hold neither.
async fn assert_nothing_in_the_clear(store: &Store) -> Result<(), Box<dyn std::error::Error>> {
    let secrets = [("ID number", ID), ("phone", PHONE)];
    assert_bodies_sealed(store, &["jc_applications"], &secrets).await;
    let rows = sqlx::query("SELECT clocks FROM jc_applications")
        .fetch_all(store.pool())
        .await?;
    for r in rows {
        let clocks: String = r.try_get("clocks")?;
        assert!(!contains(clocks.as_bytes(), ID.as_bytes()));
        assert!(!contains(clocks.as_bytes(), PHONE.as_bytes()));
    }
    Ok(())
}

both_backends!(
    applications_are_sealed_masked_and_read_in_full_only_by_the_court,
    |store: Store| async move {
        let svc = migrated(&store).await;
        let a = svc.take_in(COURT, &intake("transfers/t1", ID)).await?;
        assert_nothing_in_the_clear(&store).await?;
        let get =
            |roles: &[&str], full: bool| req(roles, full, GetApplicationRequest::named(&a.name));
        // Masked by default.
        let got = svc
            .get_application(get(&["judge"], false))
            .await?
            .into_inner();
        let p = &got.application.expect("application").parties[0];
        assert_eq!(p.id_number, "210203**********39");
        assert_eq!(p.phone, "139****5201");
        assert!(access::recent(&store, None, 10).await?.is_empty());
        // Full for a judge and a clerk, each read logged with the fields, never the values.
        for role in ["judge", "court_clerk"] {
            let got = svc.get_application(get(&[role], true)).await?.into_inner();
            let p = &got.application.expect("application").parties[0];
            assert_eq!((p.id_number.as_str(), p.phone.as_str()), (ID, PHONE));
        }
        let list = svc
            .list_applications(req(
                &["court_clerk"],
                true,
                ListApplicationsRequest::default(),
            ))
            .await?
            .into_inner();
        assert_eq!(list.applications[0].parties[0].id_number, ID);
        let rows = full_reads(
            &store,
            &a.case_id,
            3,
            "judicial-confirmation",
            &a.name,
            PARTY_FIELDS,
            SECRETS,
        )
        .await;
        assert!(rows[0].method.ends_with("/ListApplications"));
        assert!(rows[2].method.ends_with("/GetApplication"));
        // A mediator (or anyone without the role) asking for the full view: refused, logged.
        let e = svc
            .get_application(get(&["mediator"], true))
            .await
            .refusal(Code::PermissionDenied, "no full view");
        assert_eq!(reason_of(&e).as_deref(), Some("PERSONAL_INFO_VIEW_DENIED"));
        let rows = access::recent(&store, Some(&a.case_id), 1).await?;
        assert_eq!(rows[0].outcome, Outcome::Denied);
        assert_eq!(rows[0].reason, "PERSONAL_INFO_VIEW_DENIED");

        // Mutation answers are masked; identifiers holding an ID number are refused; free
        // text is redacted before it is stored.
        let e = svc
            .accept_application(req(
                &["court_clerk"],
                false,
                AcceptApplicationRequest {
                    confirmation_number: format!("(2026)辽0203民特调确{ID}号"),
                    ..Change::change(&a.name, "")
                },
            ))
            .await
            .refusal(Code::InvalidArgument, "personal identifier");
        assert_eq!(bad_fields_of(&e), ["confirmation_number"]);
        let acc = svc
            .accept_application(req(
                &["court_clerk"],
                false,
                AcceptApplicationRequest {
                    confirmation_number: "(2026)辽0203民特调确12号".into(),
                    ..Change::change(&a.name, "")
                },
            ))
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(acc.parties[0].id_number, "210203**********39");
        let sup = svc
            .request_supplement(req(
                &["judge"],
                false,
                RequestSupplementRequest {
                    description: format!("请补充身份证{ID}的复印件，联系{PHONE}"),
                    ..Change::change(&a.name, "")
                },
            ))
            .await
            .answer_of("application", |r| r.application);
        assert_eq!(sup.parties[0].phone, "139****5201");
        let full = svc
            .get_application(get(&["judge"], true))
            .await
            .answer_of("application", |r| r.application);
        let asked = &full
            .supplements
            .last()
            .expect("a supplement request")
            .description;
        assert_eq!(
            asked,
            "请补充身份证210203**********39的复印件，联系139****5201"
        );
        assert_nothing_in_the_clear(&store).await
    }
);

both_backends!(
    an_application_with_an_invalid_identity_number_is_not_taken_in,
    |store: Store| async move {
        let svc = migrated(&store).await;
        let e = svc
            .take_in(COURT, &intake("transfers/t9", "210203199001011234"))
            .await
            .expect_err("wrong check digit");
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields_of(&status), ["parties[0].id_number"]);
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jc_applications")
            .fetch_one(store.pool())
            .await?
            .try_get("n")?;
        assert_eq!(n, 0);
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);
