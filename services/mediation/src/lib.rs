//! People's mediation (人民调解): cases received through the router, consent, mediators,
//! sessions, agreements, follow-up visits and the case file.
//!
//! The contract is `proto/fengqiao/mediation/v1`. Cases arrive as router transfers
//! (`MESSAGE_KIND_TRANSFER_OFFERED` through the process's agency inbox) and every decision
//! the sender must know (accept, decline, refusal of consent, end, escalation,
//! investigation) is a router call made FOR the caller.
//!
//! Case states and how each ending reaches the sender (router feedback outcome of the route
//! `police-to-station-mediation`):
//!
//! | mediation call / event                 | case state        | router                          |
//! |----------------------------------------|-------------------|---------------------------------|
//! | offer delivered                        | OFFERED           | (DELIVERED)                     |
//! | `AcceptCase`                           | ACCEPTED          | AcceptTransfer → IN_PROGRESS    |
//! | `DeclineCase`                          | DECLINED          | DeclineTransfer → DECLINED      |
//! | consents + mediator                    | IN_MEDIATION      | —                               |
//! | `DraftAgreement`                       | AGREEMENT_PENDING_SIGNATURE | —                     |
//! | `RecordConsent` REFUSED                | CONSENT_REFUSED   | SubmitFeedback `party_refused`  |
//! | `EndMediation` AGREEMENT               | ENDED             | SubmitFeedback `agreement_reached` |
//! | `EndMediation` SETTLED_AND_WITHDRAWN   | ENDED             | SubmitFeedback `withdrawn`      |
//! | `EndMediation` PARTY_REFUSES_TO_CONTINUE | ENDED           | SubmitFeedback `party_refused`  |
//! | `EndMediation` any other reason        | ENDED             | SubmitFeedback `mediation_failed` |
//! | `EscalateCase`                         | ESCALATED         | EscalateTransfer → ESCALATED    |
//! | transfer withdrawn / expired unanswered| WITHDRAWN / EXPIRED | —                             |
//!
//! **Judicial confirmation** (司法确认, [`confirmation`]): on a case with an effective
//! agreement, `ApplyForConfirmation` sends the parties' joint application to the competent
//! court on its own transfer (`mediation-to-court-confirmation`, this service the SENDER);
//! the court's acceptance, non-acceptance and ruling come back in the router's messages and
//! show on the case's `confirmation`.
//!
//! **One truth** (issue #9): the router is the source of truth of the transfer; a case is
//! reconciled from the router's messages. A call the sender must know of calls the router
//! first (request id derived only from the method, the case and the client's `request_id`)
//! and commits the case after, recording the event sequence of the router's answer. If that
//! commit is lost, the router's message for the same event brings the case in step by the
//! table in [`reconcile`] (e.g. OFFERED + IN_PROGRESS → ACCEPTED with the reserved 调解案号,
//! open + FEEDBACK_SUBMITTED → ENDED with the transfer's outcome), and a retry with the same
//! `request_id` completes and returns the first answer. Every newer message copies the
//! transfer's feedback clock into `mediation_clock` (router-side pauses, resumes,
//! extensions); a message whose event sequence is not newer than the case's changes nothing.
//! Case numbers are taken with one atomic upsert of the counter row.

mod cases;
pub mod confirmation;
mod error;
mod inbox;
mod intake;
pub mod lifecycle;
/// The service's entry in the registry the binary starts services from.
pub mod module;
mod outcomes;
pub mod reconcile;
mod roster;
mod store;
mod util;

pub use module::MODULE;

use std::sync::Arc;

use fengqiao_kit::Identity;
use fengqiao_kit::pii::{self, Personal};
use fengqiao_kit::records::Schema;
use fengqiao_kit::server::ServerBuilder;
use fengqiao_proto::mediation::mediation_service_server::{
    MediationService, MediationServiceServer,
};
use fengqiao_proto::mediation::*;
use fengqiao_store::Store;
use tonic::{Request, Response, Status};

pub use cases::specialty_for;
pub use error::{Error, Result};
pub use outcomes::{candidates, outcome_for};

/// Name under which this service's migrations are recorded.
pub const SERVICE: &str = "mediation";

/// This service's own migrations, applied after the shared ones.
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [
        (1, "mediation", "migrations/0001_mediation.sql"),
        (2, "case_lookup", "migrations/0002_case_lookup.sql"),
        (3, "case_route", "migrations/0003_case_route.sql"),
        (4, "event_seq", "migrations/0004_event_seq.sql"),
    ]
);

/// Applies the shared migrations, then this service's.
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    SCHEMA.migrate(store).await
}

/// The mediation service.
#[derive(Clone, Debug)]
pub struct Mediation {
    store: Store,
    roster: roster::Roster,
    cases: cases::Cases,
    router: tonic::transport::Channel,
    acknowledger: Option<inbox::Acknowledger>,
}

/// Receives the router's messages for the agencies whose records this service keeps.
#[derive(Clone, Debug)]
struct Inbox {
    inner: inbox::Inbox,
}

#[tonic::async_trait]
impl fengqiao_kit::inbox::InboxHandler for Inbox {
    /// Cases offered by police (警调对接) and delegated by courts (委派调解).
    fn receives(&self) -> &[fengqiao_kit::inbox::Receives] {
        use fengqiao_proto::inbox::RecipientSide;
        &[
            ("police-to-station-mediation", RecipientSide::Receiver),
            ("court-to-invited-mediation", RecipientSide::Receiver),
            // The committee's applications for judicial confirmation (司法确认).
            (confirmation::ROUTE, RecipientSide::Sender),
        ]
    }

    async fn deliver(
        &self,
        envelope: fengqiao_proto::inbox::Envelope,
    ) -> Result<fengqiao_proto::inbox::DeliverResponse, Status> {
        // Every router message reconciles the case (issue #9): copies of changes the case
        // already reflects are not newer and change nothing (see `inbox`).
        self.inner.apply(&envelope).await.map_err(Status::from)
    }
}

fn who<T>(req: &Request<T>) -> Result<Identity, Status> {
    Identity::of(req).cloned().map_err(Into::into)
}

fn reply<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

/// Who may ask for the full personal information of a case
/// (`x-fengqiao-personal-info: full`): the mediator, who must reach the parties and record
/// their basic information in the agreement (人民调解法 Art 22, 29), the organisation's
/// administrator (`mediation_admin`), who assigns and oversees the case, and other Fengqiao
/// services (`service`). Every full read leaves an access-log row (PIPL Art 51).
pub const FULL_VIEW: pii::FullView = pii::FullView {
    service: "mediation",
    roles: &["mediator", "mediation_admin", "service"],
};

/// A mutation's answer: always masked (no full view of a mutation answer; the full values
/// are one audited `GetCase` away). A replayed stored answer is masked the same way.
fn masked<T: Personal>(r: Result<T>) -> Result<Response<T>, Status> {
    let mut t = r?;
    pii::mask(&mut t);
    Ok(Response::new(t))
}

/// The caller and the view of personal information the request asks for.
fn caller_view<T>(req: &Request<T>) -> Result<(Identity, pii::View), Status> {
    Ok((who(req)?, pii::requested_view(req.metadata())?))
}

/// The (name, case id) of each case, for the access log.
fn refs<'a>(cs: impl IntoIterator<Item = &'a MediationCase>) -> Vec<(String, String)> {
    cs.into_iter()
        .map(|c| (c.name.clone(), c.case_id.clone()))
        .collect()
}

impl Mediation {
    /// A read's answer: masked, or whole for a role of [`FULL_VIEW`] with one access-log row
    /// per case (committed before the answer), or PERSONAL_INFO_VIEW_DENIED.
    async fn disclosed<T: Personal>(
        &self,
        method: &str,
        (who, view): (Identity, pii::View),
        r: Result<T>,
        refs: impl FnOnce(&T) -> Vec<(String, String)>,
    ) -> Result<Response<T>, Status> {
        let t = r?;
        let cases = refs(&t);
        let t =
            fengqiao_kit::agency::disclosed(&self.store, &FULL_VIEW, method, &who, view, t, &cases)
                .await?;
        Ok(Response::new(t))
    }
}

#[tonic::async_trait]
impl MediationService for Mediation {
    async fn create_organization(
        &self,
        req: Request<CreateOrganizationRequest>,
    ) -> Result<Response<CreateOrganizationResponse>, Status> {
        let id = who(&req)?;
        reply(self.roster.create_org(&id, req.into_inner()).await)
    }

    async fn get_organization(
        &self,
        req: Request<GetOrganizationRequest>,
    ) -> Result<Response<GetOrganizationResponse>, Status> {
        who(&req)?;
        let org = self.roster.get_org(&req.get_ref().name).await;
        reply(org.map(|o| GetOrganizationResponse {
            organization: Some(o),
        }))
    }

    async fn list_organizations(
        &self,
        req: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        who(&req)?;
        reply(self.roster.list_orgs(req.into_inner()).await)
    }

    async fn create_mediator(
        &self,
        req: Request<CreateMediatorRequest>,
    ) -> Result<Response<CreateMediatorResponse>, Status> {
        let id = who(&req)?;
        reply(self.roster.create_mediator(&id, req.into_inner()).await)
    }

    async fn list_mediators(
        &self,
        req: Request<ListMediatorsRequest>,
    ) -> Result<Response<ListMediatorsResponse>, Status> {
        let id = who(&req)?;
        reply(self.roster.list_mediators(&id, req.into_inner()).await)
    }

    async fn update_mediator(
        &self,
        req: Request<UpdateMediatorRequest>,
    ) -> Result<Response<UpdateMediatorResponse>, Status> {
        let id = who(&req)?;
        reply(self.roster.update_mediator(&id, req.into_inner()).await)
    }

    async fn list_cases(
        &self,
        req: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        let cv = caller_view(&req)?;
        let r = self.cases.list(&cv.0, req.into_inner()).await;
        self.disclosed("ListCases", cv, r, |t| refs(&t.mediation_cases))
            .await
    }

    async fn get_case(
        &self,
        req: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        let cv = caller_view(&req)?;
        let c = self.cases.get(&cv.0, &req.get_ref().name).await;
        let r = c.map(|c| GetCaseResponse {
            mediation_case: Some(c),
        });
        self.disclosed("GetCase", cv, r, |t| refs(&t.mediation_case))
            .await
    }

    async fn accept_case(
        &self,
        req: Request<AcceptCaseRequest>,
    ) -> Result<Response<AcceptCaseResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.accept(&id, &req).await)
    }

    async fn decline_case(
        &self,
        req: Request<DeclineCaseRequest>,
    ) -> Result<Response<DeclineCaseResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.decline(&id, &req).await)
    }

    async fn record_consent(
        &self,
        req: Request<RecordConsentRequest>,
    ) -> Result<Response<RecordConsentResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.consent(&id, &req).await)
    }

    async fn assign_mediator(
        &self,
        req: Request<AssignMediatorRequest>,
    ) -> Result<Response<AssignMediatorResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.assign(&id, &req).await)
    }

    async fn recuse_mediator(
        &self,
        req: Request<RecuseMediatorRequest>,
    ) -> Result<Response<RecuseMediatorResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.recuse(&id, &req).await)
    }

    async fn record_session(
        &self,
        req: Request<RecordSessionRequest>,
    ) -> Result<Response<RecordSessionResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.session(&id, &req).await)
    }

    async fn draft_agreement(
        &self,
        req: Request<DraftAgreementRequest>,
    ) -> Result<Response<DraftAgreementResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.draft(&id, &req).await)
    }

    async fn sign_agreement(
        &self,
        req: Request<SignAgreementRequest>,
    ) -> Result<Response<SignAgreementResponse>, Status> {
        let id = who(&req)?;
        masked(self.cases.sign(&id, &req).await)
    }

    async fn end_mediation(
        &self,
        req: Request<EndMediationRequest>,
    ) -> Result<Response<EndMediationResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.end(&id, &req).await)
    }

    async fn escalate_case(
        &self,
        req: Request<EscalateCaseRequest>,
    ) -> Result<Response<EscalateCaseResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.escalate(&id, &req).await)
    }

    async fn request_investigation(
        &self,
        req: Request<RequestInvestigationRequest>,
    ) -> Result<Response<RequestInvestigationResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.investigate(&id, &req).await)
    }

    async fn schedule_follow_up(
        &self,
        req: Request<ScheduleFollowUpRequest>,
    ) -> Result<Response<ScheduleFollowUpResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.schedule_follow_up(&id, &req).await)
    }

    async fn record_follow_up(
        &self,
        req: Request<RecordFollowUpRequest>,
    ) -> Result<Response<RecordFollowUpResponse>, Status> {
        let id = who(&req)?;
        let req = intake::redact(req);
        masked(self.cases.record_follow_up(&id, &req).await)
    }

    async fn apply_for_confirmation(
        &self,
        req: Request<ApplyForConfirmationRequest>,
    ) -> Result<Response<ApplyForConfirmationResponse>, Status> {
        let id = who(&req)?;
        masked(self.cases.apply_for_confirmation(&id, &req).await)
    }

    async fn get_case_file(
        &self,
        req: Request<GetCaseFileRequest>,
    ) -> Result<Response<GetCaseFileResponse>, Status> {
        // 一案一卷: the case file is masked the same way as the case.
        let cv = caller_view(&req)?;
        let r = self.cases.case_file(&cv.0, &req).await;
        self.disclosed("GetCaseFile", cv, r, |t| {
            refs(t.case_file.iter().filter_map(|f| f.mediation_case.as_ref()))
        })
        .await
    }
}

impl Mediation {
    /// The service over a migrated `store`, calling the router on `router`.
    pub fn new(store: Store, router: tonic::transport::Channel) -> Self {
        Self {
            roster: roster::Roster::new(store.clone()),
            cases: cases::Cases::new(store.clone(), router.clone()),
            store,
            router,
            acknowledger: None,
        }
    }

    /// Lets the committee's system act by itself on the router, signing with `key` for
    /// `issuer`: it acknowledges the court's feedback on its judicial confirmation
    /// applications when it arrives (确认反馈), so the transfer ends CLOSED. Without a key the
    /// transfer stays FEEDBACK_SUBMITTED for the committee's own system to acknowledge.
    pub fn with_signing_key(mut self, key: fengqiao_kit::auth::SigningKey, issuer: &str) -> Self {
        self.acknowledger = Some(inbox::Acknowledger::new(self.router.clone(), key, issuer));
        self
    }

    /// This service's side of the process's agency inbox.
    pub fn inbox_handler(&self) -> Arc<dyn fengqiao_kit::inbox::InboxHandler> {
        let mut inner = inbox::Inbox::new(self.store.clone());
        if let Some(a) = &self.acknowledger {
            inner = inner.with_acknowledger(a.clone());
        }
        Arc::new(Inbox { inner })
    }

    /// Adds the service to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            MediationServiceServer::new(self.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
    }
}
