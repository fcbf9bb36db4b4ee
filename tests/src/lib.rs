//! Cross-service scenario tests live in `tests/*.rs` of this package; this library holds the
//! small helpers they share.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_testkit::TestSuite;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod jingdiao;

/// An agency-service client for `agency`/`actor` with `roles`.
pub fn agencies(
    suite: &TestSuite,
    agency: &str,
    actor: &str,
    roles: &[&str],
) -> AgencyServiceClient<InterceptedService<Channel, CallInterceptor>> {
    AgencyServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// The platform administrator of the sample district.
pub fn admin(
    suite: &TestSuite,
) -> AgencyServiceClient<InterceptedService<Channel, CallInterceptor>> {
    agencies(suite, "xigang-justice-bureau", "admin", &["platform_admin"])
}

/// A fresh request id.
pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The court-delegated sample agreement (赵某's burst pipe damaged 王某's decoration: p2 pays
/// p1), drafted on case `m` and signed by both parties and the mediator and sealed by the
/// committee (人民调解法 Art 29): the case as it stands afterwards, the agreement in effect.
pub async fn sign_sample_agreement(
    h: &mut jingdiao::Med,
    m: &fengqiao_proto::mediation::MediationCase,
) -> fengqiao_proto::mediation::MediationCase {
    use fengqiao_proto::mediation as md;
    let sig = |kind: md::SignerKind, party: &str, method: md::SignatureMethod| md::Signature {
        signer_kind: kind as i32,
        party_id: party.into(),
        signer_name: "签署人".into(),
        method: method as i32,
        ..Default::default()
    };
    let mut m = h
        .draft_agreement(md::DraftAgreementRequest {
            name: m.name.clone(),
            agreement: Some(md::Agreement {
                parties: m.parties.clone(),
                facts_and_responsibilities: "赵某家中水管破裂致王某装修受损，赵某承担责任".into(),
                terms: vec![md::AgreementTerm {
                    description: "赵某赔偿王某装修损失四千元".into(),
                    obligor_party_ids: vec!["p2".into()],
                    obligee_party_ids: vec!["p1".into()],
                    ..Default::default()
                }],
                performance_manner: "一次性支付".into(),
                performance_deadline: Some(prost_types::Timestamp {
                    seconds: 1_900_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("draft")
        .into_inner()
        .mediation_case
        .expect("case");
    for s in [
        sig(
            md::SignerKind::Party,
            "p1",
            md::SignatureMethod::Handwritten,
        ),
        sig(
            md::SignerKind::Party,
            "p2",
            md::SignatureMethod::Handwritten,
        ),
        sig(
            md::SignerKind::Mediator,
            "",
            md::SignatureMethod::Handwritten,
        ),
        sig(md::SignerKind::CommitteeSeal, "", md::SignatureMethod::Seal),
    ] {
        m = h
            .sign_agreement(md::SignAgreementRequest {
                name: m.name.clone(),
                signature: Some(s),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("sign")
            .into_inner()
            .mediation_case
            .expect("case");
    }
    m
}
