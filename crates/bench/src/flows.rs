//! The new services' cycles, as the scenario tests drive them (`tests/tests/
//! judicial_confirmation.rs`, `admin_dispute.rs`, `tests/foreign/*_example.py`):
//!
//! - 委派调解 (court diversion): the clerk takes the case in with both parties' consent, the
//!   judge designates the committee's mediator, the router offers it to the committee, which
//!   accepts, completes the `contact_parties` clock, records consent, assigns the mediator,
//!   drafts and signs the agreement (parties, mediator, seal) and ends with it; done when the
//!   court's case shows AGREEMENT_FILED.
//! - 司法确认 (judicial confirmation): the court-diversion cycle, then the committee's joint
//!   application, the court's acceptance (调确 number) and ruling (confirmed); done when the
//!   committee's case shows the ruling.
//! - 行政争议 (administrative dispute): the centre takes in a 征收补偿 dispute in 行政复议,
//!   starts mediation with both sides' consent, drafts the 复议调解书; the applicant and the
//!   organ sign, the reviewing organ seals; done at RESOLVED.

use anyhow::{Context, bail};
use fengqiao_proto::admindispute as ad;
use fengqiao_proto::admindispute::admin_dispute_service_client::AdminDisputeServiceClient;
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Money, Party, PartyRole};
use fengqiao_proto::courtdiversion as cd;
use fengqiao_proto::courtdiversion::court_diversion_service_client::CourtDiversionServiceClient;
use fengqiao_proto::judicialconfirmation as jc;
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_client::JudicialConfirmationServiceClient;
use fengqiao_proto::mediation as md;
use fengqiao_proto::router::{
    CompleteClockRequest, ConfirmationPackageItem, ConfirmationPackageItemKind as K,
};

use crate::scenario::{Ctx, Svc, poll, retry_aborted, rid, sig};

/// The district court.
pub const COURT: &str = "xigang-court";
/// The district mediation committee (the court's invited organisation).
pub const COMMITTEE: &str = "xigang-mediation-committee";
/// The administrative dispute coordination centre.
pub const CENTRE: &str = "xigang-admin-dispute-centre";
/// The organ whose act is disputed.
pub const ORGAN: &str = "xigang-housing-bureau";
/// The reviewing organ (行政复议机关).
pub const REVIEWER: &str = "xigang-government";

fn doc(name: &str) -> EvidenceRef {
    EvidenceRef {
        display_name: name.into(),
        uri: format!("court://docs/{}", rid()),
        media_type: "application/pdf".into(),
        sha256: "ab".repeat(32),
        ..Default::default()
    }
}

fn party(id: &str, role: PartyRole, name: &str) -> Party {
    Party {
        party_id: id.into(),
        role: role as i32,
        name: name.into(),
        ..Default::default()
    }
}

/// The committee's organisation and one mediator (its director) on the mediation service,
/// with a load cap the bench cannot reach.
pub async fn committee_roster(ctx: &Ctx) -> anyhow::Result<()> {
    let mut h = ctx.med(&ctx.committee);
    h.create_organization(md::CreateOrganizationRequest {
        organization: Some(md::Organization {
            display_name: "西岗区人民调解委员会".into(),
            kind: md::OrganizationKind::Committee as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{COMMITTEE}"),
            ..Default::default()
        }),
        organization_id: COMMITTEE.into(),
        request_id: rid(),
    })
    .await
    .context("CreateOrganization (committee)")?;
    h.create_mediator(md::CreateMediatorRequest {
        parent: format!("organizations/{COMMITTEE}"),
        mediator: Some(md::Mediator {
            display_name: "人民调解员".into(),
            actor_id: "director".into(),
            specialties: vec![md::MediatorSpecialty::Neighbourhood as i32],
            region_code: "210203".into(),
            max_load: 1_000_000,
            ..Default::default()
        }),
        mediator_id: "director".into(),
        request_id: rid(),
    })
    .await
    .context("CreateMediator (committee)")?;
    Ok(())
}

fn court(ctx: &Ctx, who: &fengqiao_kit::client::CallInterceptor) -> Cd {
    CourtDiversionServiceClient::with_interceptor(ctx.ch_of(Svc::Other), who.clone())
}

fn jcc(ctx: &Ctx, who: &fengqiao_kit::client::CallInterceptor) -> Jc {
    JudicialConfirmationServiceClient::with_interceptor(ctx.ch_of(Svc::Other), who.clone())
}

fn adc(ctx: &Ctx, who: &fengqiao_kit::client::CallInterceptor) -> Ad {
    AdminDisputeServiceClient::with_interceptor(ctx.ch_of(Svc::Other), who.clone())
}

type Intercepted = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    fengqiao_kit::client::CallInterceptor,
>;
/// Court-diversion client.
pub type Cd = CourtDiversionServiceClient<Intercepted>;
type Jc = JudicialConfirmationServiceClient<Intercepted>;
type Ad = AdminDisputeServiceClient<Intercepted>;

/// One 委派调解 case to a filed agreement (`n` makes the pre-filing number unique): the
/// committee's case, the agreement in effect.
pub async fn court_cycle(ctx: &Ctx, n: u64) -> anyhow::Result<md::MediationCase> {
    let consent = |p: &str| cd::ConsentRecord {
        party_id: p.into(),
        decision: cd::ConsentDecision::Consented as i32,
        method: cd::ConsentMethod::Written as i32,
        evidence: Some(doc("诉前调解确认书")),
        ..Default::default()
    };
    let c = court(ctx, &ctx.clerk)
        .create_case(cd::CreateCaseRequest {
            pre_filing_case: Some(cd::PreFilingCase {
                pre_filing_number: format!("(2026)辽0203诉前调{n}号"),
                plaintiffs: vec![party("p1", PartyRole::Applicant, "王某")],
                defendants: vec![party("p2", PartyRole::Respondent, "赵某")],
                claims: vec![cd::Claim {
                    description: "判令被告赔偿装修损失".into(),
                    amount: Some(Money {
                        currency_code: "CNY".into(),
                        units: 5000,
                        nanos: 0,
                    }),
                }],
                category: DisputeCategory::Neighbourhood as i32,
                summary: "楼上水管破裂致楼下装修受损，原告起诉要求赔偿".into(),
                evidence: vec![doc("起诉状")],
                region_code: "210203".into(),
                ..Default::default()
            }),
            consents: vec![consent("p1"), consent("p2")],
            request_id: rid(),
        })
        .await
        .context("CreateCase (court)")?
        .into_inner()
        .pre_filing_case
        .context("no case")?;
    court(ctx, &ctx.judge)
        .designate_mediator(cd::DesignateMediatorRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            organization: format!("invitedOrganizations/{COMMITTEE}"),
            mediator: format!("invitedOrganizations/{COMMITTEE}/mediators/director"),
            parties_waived_choice: true,
            evidence: Some(doc("放弃选定调解员声明")),
            note: "诉前委派调解".into(),
            request_id: rid(),
        })
        .await
        .context("DesignateMediator")?;
    let h = ctx.med(&ctx.committee);
    let m = poll("the delegation at the committee", || {
        let mut h = h.clone();
        let case_id = c.case_id.clone();
        async move {
            Ok(h.list_cases(md::ListCasesRequest {
                case_id,
                ..Default::default()
            })
            .await
            .context("ListCases (committee)")?
            .into_inner()
            .mediation_cases
            .into_iter()
            .find(|m| m.state == md::MediationCaseState::Offered as i32))
        }
    })
    .await?;
    let accept_rid = rid();
    let mut m = retry_aborted(|| {
        let mut h = h.clone();
        let req = md::AcceptCaseRequest {
            name: m.name.clone(),
            comment: "接受委派".into(),
            request_id: accept_rid.clone(),
            ..Default::default()
        };
        async move { h.accept_case(req).await }
    })
    .await
    .context("AcceptCase (committee)")?
    .into_inner()
    .mediation_case
    .context("no case")?;
    let clock_rid = rid();
    retry_aborted(|| {
        let mut r = ctx.router(&ctx.committee);
        let req = CompleteClockRequest {
            name: m.transfer.clone(),
            clock: "contact_parties".into(),
            comment: "已电话联系双方当事人".into(),
            request_id: clock_rid.clone(),
            ..Default::default()
        };
        async move { r.complete_clock(req).await }
    })
    .await
    .context("CompleteClock contact_parties")?;
    let mut h = h;
    for p in ["p1", "p2"] {
        m = h
            .record_consent(md::RecordConsentRequest {
                name: m.name.clone(),
                party_id: p.into(),
                decision: md::ConsentDecision::Consented as i32,
                method: md::ConsentMethod::Written as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .context("RecordConsent (committee)")?
            .into_inner()
            .mediation_case
            .context("no case")?;
    }
    m = h
        .assign_mediator(md::AssignMediatorRequest {
            name: m.name.clone(),
            assignee: Some(md::assign_mediator_request::Assignee::Mediator(format!(
                "organizations/{COMMITTEE}/mediators/director"
            ))),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("AssignMediator (committee)")?
        .into_inner()
        .mediation_case
        .context("no case")?;
    m = h
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
        .context("DraftAgreement (committee)")?
        .into_inner()
        .mediation_case
        .context("no case")?;
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
            .context("SignAgreement (committee)")?
            .into_inner()
            .mediation_case
            .context("no case")?;
    }
    let m = h
        .end_mediation(md::EndMediationRequest {
            name: m.name.clone(),
            reason: md::EndReason::Agreement as i32,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("EndMediation (committee)")?
        .into_inner()
        .mediation_case
        .context("no case")?;
    let clerk = court(ctx, &ctx.clerk);
    poll("the agreement filed at the court", || {
        let mut clerk = clerk.clone();
        let name = c.name.clone();
        async move {
            let c = clerk
                .get_case(cd::GetCaseRequest { name })
                .await
                .context("GetCase (court)")?
                .into_inner()
                .pre_filing_case
                .context("no case")?;
            Ok((c.state == cd::PreFilingCaseState::AgreementFiled as i32).then_some(()))
        }
    })
    .await?;
    Ok(m)
}

fn item(kind: K, party: &str) -> ConfirmationPackageItem {
    ConfirmationPackageItem {
        kind: kind as i32,
        document: Some(doc("申请材料")),
        party_id: party.into(),
    }
}

/// One 司法确认 from the delegation to the ruling seen by the committee.
pub async fn confirmation_cycle(ctx: &Ctx, n: u64) -> anyhow::Result<()> {
    let m = court_cycle(ctx, n).await?;
    let mut h = ctx.med(&ctx.committee);
    h.apply_for_confirmation(md::ApplyForConfirmationRequest {
        name: m.name.clone(),
        etag: String::new(),
        court: format!("agencies/{COURT}"),
        applicant_party_ids: vec!["p1".into(), "p2".into()],
        represented_party_ids: vec![],
        items: vec![
            item(K::Application, ""),
            item(K::IdentityProof, "p1"),
            item(K::ServiceAddress, "p1"),
            item(K::IdentityProof, "p2"),
            item(K::ServiceAddress, "p2"),
        ],
        request_id: rid(),
    })
    .await
    .context("ApplyForConfirmation")?;
    let judge = jcc(ctx, &ctx.judge);
    let a = poll("the application at the court", || {
        let mut j = judge.clone();
        let case_id = m.case_id.clone();
        async move {
            Ok(j.list_applications(jc::ListApplicationsRequest {
                page_size: 500,
                states: vec![jc::ApplicationState::Received as i32],
                ..Default::default()
            })
            .await
            .context("ListApplications")?
            .into_inner()
            .applications
            .into_iter()
            .find(|a| a.case_id == case_id))
        }
    })
    .await?;
    jcc(ctx, &ctx.clerk)
        .accept_application(jc::AcceptApplicationRequest {
            name: a.name.clone(),
            etag: a.etag.clone(),
            confirmation_number: format!("(2026)辽0203民特调确{n}号"),
            request_id: rid(),
        })
        .await
        .context("AcceptApplication")?;
    let ruled = jcc(ctx, &ctx.judge)
        .rule_on_application(jc::RuleOnApplicationRequest {
            name: a.name.clone(),
            etag: String::new(),
            outcome: jc::RulingOutcome::Confirmed as i32,
            ground_code: String::new(),
            document: Some(doc("民事裁定书")),
            request_id: rid(),
        })
        .await
        .context("RuleOnApplication")?
        .into_inner()
        .application
        .context("no application")?;
    if ruled.state != jc::ApplicationState::Confirmed as i32 {
        bail!("the application is not CONFIRMED after the ruling");
    }
    poll("the ruling at the committee", || {
        let mut h = h.clone();
        let name = m.name.clone();
        async move {
            let c = h
                .get_case(md::GetCaseRequest { name })
                .await
                .context("GetCase (committee)")?
                .into_inner()
                .mediation_case
                .context("no case")?;
            Ok(c.confirmation
                .filter(|s| s.progress == md::ConfirmationProgress::Confirmed as i32)
                .map(|_| ()))
        }
    })
    .await
}

/// One administrative dispute in 行政复议 mediated to an effective 复议调解书.
pub async fn admin_cycle(ctx: &Ctx, n: u64) -> anyhow::Result<()> {
    let centre_doc = |name: &str| EvidenceRef {
        uri: format!("centre://docs/{name}-{n}"),
        ..doc(name)
    };
    let d = adc(ctx, &ctx.coordinator)
        .create_dispute(ad::CreateDisputeRequest {
            request_id: rid(),
            applicants: vec![party("p1", PartyRole::Applicant, "王某")],
            act: Some(ad::AdministrativeAct {
                kind: ad::ActKind::Expropriation as i32,
                document_number: "西住建征补〔2026〕7号".into(),
                summary: "房屋征收补偿决定".into(),
                act_time: None,
            }),
            organ: format!("agencies/{ORGAN}"),
            reviewing_organ: format!("agencies/{REVIEWER}"),
            stage: ad::DisputeStage::InReview as i32,
            claims: vec![ad::Claim {
                kind: ad::ClaimKind::Indemnification as i32,
                description: "请求提高征收补偿标准".into(),
                amount: Some(Money {
                    currency_code: "CNY".into(),
                    units: 200_000,
                    nanos: 0,
                }),
            }],
            evidence: vec![centre_doc("行政复议申请书")],
            facts: "征收补偿标准低于评估价".into(),
            review_accept_time: None,
            region_code: "210203".into(),
        })
        .await
        .context("CreateDispute")?
        .into_inner()
        .dispute
        .context("no dispute")?;
    adc(ctx, &ctx.coordinator)
        .start_mediation(ad::StartMediationRequest {
            name: d.name.clone(),
            request_id: rid(),
            consenting_party_ids: vec!["p1".into()],
            organ_consents: true,
            suspension_notice: Some(centre_doc("行政复议中止通知书")),
            etag: String::new(),
        })
        .await
        .context("StartMediation")?;
    adc(ctx, &ctx.coordinator)
        .draft_agreement(ad::DraftAgreementRequest {
            name: d.name.clone(),
            request_id: rid(),
            document: Some(centre_doc("行政复议调解书")),
            etag: String::new(),
        })
        .await
        .context("DraftAgreement (dispute)")?;
    let sign = |party: &str| ad::SignAgreementRequest {
        name: d.name.clone(),
        request_id: rid(),
        party_id: party.into(),
        etag: String::new(),
    };
    adc(ctx, &ctx.coordinator)
        .sign_agreement(sign("p1"))
        .await
        .context("SignAgreement (applicant)")?;
    adc(ctx, &ctx.liaison)
        .sign_agreement(sign(""))
        .await
        .context("SignAgreement (organ)")?;
    let done = adc(ctx, &ctx.review_officer)
        .seal_agreement(ad::SealAgreementRequest {
            name: d.name.clone(),
            request_id: rid(),
            etag: String::new(),
        })
        .await
        .context("SealAgreement")?
        .into_inner()
        .dispute
        .context("no dispute")?;
    if done.state != ad::DisputeState::Resolved as i32 {
        bail!("the dispute is not RESOLVED after the seal");
    }
    Ok(())
}
