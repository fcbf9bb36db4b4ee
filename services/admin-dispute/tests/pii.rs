//! Personal information in administrative disputes (issue #14 §1), on SQLite and
//! PostgreSQL: the body sealed at rest (no identity number or phone in the database files),
//! the facts digest keyed with the key file's lookup key (no key in the database), every
//! answer masked, the full view only for the roles of [`FULL_VIEW`] and audited, refused and
//! logged for others; applicants through the shared validators, free text redacted,
//! identifiers holding an identity number refused.

use fengqiao_admin_dispute::{AdminDispute, migrate};
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::admindispute::admin_dispute_service_server::AdminDisputeService as _;
use fengqiao_proto::admindispute::*;
use fengqiao_proto::common::{EvidenceRef, Money, PartyRole};
use fengqiao_store::access::{self, Outcome};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Named as _, Refusal as _};
use fengqiao_testkit::services::{
    PARTY_FIELDS, as_caller, assert_bodies_sealed, assert_no_rows, full_reads, resident,
};
use tonic::{Code, Request};

const CENTRE: &str = "agencies/xigang-admin-dispute-centre";
const ORGAN: &str = "agencies/xigang-housing-bureau";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// A resident ID number with a valid GB 11643 check digit.
const ID: &str = "210203199001011239";
const PHONE: &str = "13900005201";
/// What the access log must never hold.
const SECRETS: &[&str] = &[ID, PHONE, "王小明"];

fn req<T>(agency: &str, roles: &[&str], full: bool, msg: T) -> Request<T> {
    as_caller(agency, "a1", roles, full, msg)
}

/// The service on `store`, its schema migrated.
async fn migrated(store: &Store) -> AdminDispute {
    migrate(store).await.expect("migrate");
    let router = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    AdminDispute::new(store.clone(), router)
}

fn create_request() -> CreateDisputeRequest {
    CreateDisputeRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        applicants: vec![resident("p1", PartyRole::Applicant, "王小明", ID, PHONE)],
        act: Some(AdministrativeAct {
            kind: ActKind::Expropriation as i32,
            document_number: "西住建征补〔2026〕7号".into(),
            summary: format!("对{ID}名下房屋的征收补偿决定"),
            act_time: None,
        }),
        organ: ORGAN.into(),
        reviewing_organ: String::new(),
        stage: DisputeStage::BeforeReview as i32,
        claims: vec![Claim {
            kind: ClaimKind::Compensation as i32,
            description: format!("请求提高补偿，联系电话{PHONE}"),
            amount: Some(Money {
                currency_code: "CNY".into(),
                units: 200_000,
                nanos: 0,
            }),
        }],
        evidence: vec![EvidenceRef {
            display_name: "申请书".into(),
            media_type: "application/pdf".into(),
            sha256: SHA.into(),
            uri: "centre://docs/1".into(),
            ..EvidenceRef::default()
        }],
        facts: "征收补偿标准过低".into(),
        review_accept_time: None,
        region_code: "210203".into(),
    }
}

/// Every stored body is sealed and free of the ID number and the phone; on SQLite the
/// database file and its WAL hold neither.
async fn assert_nothing_in_the_clear(store: &Store) -> Result<(), Box<dyn std::error::Error>> {
    assert_bodies_sealed(
        store,
        &["ad_disputes"],
        &[("ID number", ID), ("phone", PHONE)],
    )
    .await;
    let rows = sqlx::query("SELECT facts_digest FROM ad_disputes")
        .fetch_all(store.pool())
        .await?;
    for r in rows {
        let digest: String = r.try_get("facts_digest")?;
        assert_eq!(digest.len(), 64);
    }
    Ok(())
}

both_backends!(
    disputes_are_sealed_masked_and_read_in_full_only_by_the_roles_named,
    |store: Store| async move {
        let svc = migrated(&store).await;
        let d = svc
            .create_dispute(req(CENTRE, &["coordinator"], false, create_request()))
            .await
            .answer_of("dispute", |r| r.dispute);
        // The answer of a mutation is masked; free text was redacted before it was stored.
        assert_eq!(d.applicants[0].id_number, "210203**********39");
        assert_eq!(d.applicants[0].phone, "139****5201");
        let act = d.act.as_ref().expect("act");
        assert_eq!(act.summary, "对210203**********39名下房屋的征收补偿决定");
        assert_eq!(d.claims[0].description, "请求提高补偿，联系电话139****5201");
        assert_nothing_in_the_clear(&store).await?;
        // The facts digest's key is the key file's: no key table in the database.
        assert!(
            sqlx::query("SELECT * FROM ad_keys")
                .fetch_all(store.pool())
                .await
                .is_err()
        );

        let get = |agency: &str, roles: &[&str], full: bool| {
            req(agency, roles, full, GetDisputeRequest::named(&d.name))
        };
        // Masked by default, also for the organ (a participant).
        let got = svc
            .get_dispute(get(ORGAN, &["organ_liaison"], false))
            .await?
            .into_inner();
        assert_eq!(
            got.dispute.expect("dispute").applicants[0].id_number,
            "210203**********39"
        );
        assert!(access::recent(&store, None, 10).await?.is_empty());
        // Full for the centre's coordinator, logged with the fields, never the values.
        let got = svc
            .get_dispute(get(CENTRE, &["coordinator"], true))
            .await?
            .into_inner();
        let p = &got.dispute.expect("dispute").applicants[0];
        assert_eq!((p.id_number.as_str(), p.phone.as_str()), (ID, PHONE));
        let list = svc
            .list_disputes(req(
                CENTRE,
                &["coordinator"],
                true,
                ListDisputesRequest::default(),
            ))
            .await?
            .into_inner();
        assert_eq!(list.disputes[0].applicants[0].id_number, ID);
        let rows = full_reads(
            &store,
            &d.case_id,
            2,
            "admin-dispute",
            &d.name,
            PARTY_FIELDS,
            SECRETS,
        )
        .await;
        assert!(rows[0].method.ends_with("/ListDisputes"));
        // The organ's liaison asking for the full view: refused and logged.
        let e = svc
            .get_dispute(get(ORGAN, &["organ_liaison"], true))
            .await
            .refusal(Code::PermissionDenied, "no full view for the organ");
        assert_eq!(reason_of(&e).as_deref(), Some("PERSONAL_INFO_VIEW_DENIED"));
        let rows = access::recent(&store, Some(&d.case_id), 1).await?;
        assert_eq!(rows[0].outcome, Outcome::Denied);
        assert_eq!(rows[0].agency, ORGAN);

        // AmendClaims: an act number holding an ID number is refused; the answer is masked.
        let amend = |number: &str| {
            req(
                CENTRE,
                &["coordinator"],
                false,
                AmendClaimsRequest {
                    name: d.name.clone(),
                    etag: String::new(),
                    claims: create_request().claims,
                    act: Some(AdministrativeAct {
                        document_number: number.into(),
                        ..create_request().act.expect("act")
                    }),
                    request_id: uuid::Uuid::new_v4().to_string(),
                },
            )
        };
        let e = svc
            .amend_claims(amend(&format!("西住建征补〔2026〕{ID}号")))
            .await
            .refusal(Code::InvalidArgument, "personal identifier");
        assert_eq!(bad_fields_of(&e), ["act.document_number"]);
        let amended = svc
            .amend_claims(amend("西住建征补〔2026〕8号"))
            .await
            .answer_of("dispute", |r| r.dispute);
        assert_eq!(amended.applicants[0].phone, "139****5201");
        let claim = &amended.claims[0].description;
        assert_eq!(claim, "请求提高补偿，联系电话139****5201");
        assert_nothing_in_the_clear(&store).await
    }
);

both_backends!(
    intake_refuses_bad_applicants_and_personal_act_numbers,
    |store: Store| async move {
        let svc = migrated(&store).await;
        let mut bad = create_request();
        bad.applicants[0].id_number = "210203199001011234".into();
        bad.applicants[0].phone = "1390000520".into();
        let e = svc
            .create_dispute(req(CENTRE, &["coordinator"], false, bad))
            .await
            .refusal(Code::InvalidArgument, "bad applicant");
        assert_eq!(
            bad_fields_of(&e),
            ["applicants[0].id_number", "applicants[0].phone"]
        );
        assert!(!e.message().contains("210203199001011234"));
        let mut bad = create_request();
        if let Some(a) = bad.act.as_mut() {
            a.document_number = format!("西住建征补〔2026〕{ID}号");
        }
        let e = svc
            .create_dispute(req(CENTRE, &["coordinator"], false, bad))
            .await
            .expect_err("personal act number");
        assert_eq!(bad_fields_of(&e), ["act.document_number"]);
        assert_no_rows(&store, "ad_disputes").await;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);
