//! The gRPC service: each handler validates, calls the domain ([`crate::application`]) at the
//! database's time, persists ([`crate::store`]) and replies. Applications are the caller's
//! court's only: any other agency gets NOT_FOUND.
//!
//! With a router ([`JudicialConfirmation::with_router`]) the court's inbox takes applications
//! in from the committee's transfers on `mediation-to-court-confirmation`, and the acts the
//! committee must see (acceptance, non-acceptance, ruling, withdrawal under review:
//! [`crate::routed::router_call`]) are made on the router FOR the caller first (request id
//! derived from the method, the application and the caller's `request_id`, so a retry after
//! a cut-off call gets the router's first answer), then committed here. Every act is
//! idempotent by `request_id` (the kit's [`Idem`]): a replay returns the first answer.

use fengqiao_clock::HolidayCalendar;
use fengqiao_kit::acts::{self, Acts};
use fengqiao_kit::agency::{
    self, Period, Reply, check_etag, created_at, forwarded, found, masked, need_any_role,
    not_personal, read_reply, reply, uuid_v4, who,
};
use fengqiao_kit::auth::Identity;
use fengqiao_kit::idem::Idem;
use fengqiao_kit::pii::{self, FullView};
use fengqiao_kit::records;
use fengqiao_kit::server::ServerBuilder;
use fengqiao_kit::{Error, FieldViolation, validate};
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_server::{
    JudicialConfirmationService, JudicialConfirmationServiceServer,
};
use fengqiao_proto::judicialconfirmation::*;
use fengqiao_store::{Store, Tx};
use tonic::Request;

use fengqiao_proto::inbox::{DeliverResponse, Envelope, MessageKind, RecipientSide};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{self as rt, TransferMessage};

use crate::application::{self as app, Record};
use crate::routed::{self, RouterCall};
use crate::store as db;
use crate::{ApplicationSummary, Tally, rules};

/// The judicial confirmation service over one store.
#[derive(Clone)]
pub struct JudicialConfirmation {
    store: Store,
    router: Option<tonic::transport::Channel>,
    /// The key the service signs its own router calls with (declining an offer its intake
    /// checks refuse acts for the court, not for a caller).
    signer: Option<std::sync::Arc<fengqiao_kit::handler::SystemSigner>>,
}

impl std::fmt::Debug for JudicialConfirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudicialConfirmation")
            .field("router", &self.router.is_some())
            .field("signer", &self.signer.as_ref().map(|s| s.issuer()))
            .finish_non_exhaustive()
    }
}

/// Actor id of the service when it acts for the court itself.
pub const SYSTEM_ACTOR: &str = "judicial-confirmation";

/// The metadata of the caller's request, kept to forward its token to the router.
type Caller = tonic::metadata::MetadataMap;

/// The request id of a router call made for a client's call: derived only from the method,
/// the application and the client's `request_id`, so a retry sends the router the same
/// request.
fn router_rid(method: &str, name: &str, request_id: &str) -> String {
    agency::router_rid("court-jc", method, name, request_id)
}

/// Who may read the parties' personal information in full (个人信息保护法 Art 6, minimum
/// necessary): the court's judges and clerks, who review the application, hear the parties
/// and serve the ruling (2011 rules Art 6–8), and other Fengqiao services reading for their
/// work (`service`). Everyone else sees masked values.
pub const FULL_VIEW: FullView = FullView {
    service: "judicial-confirmation",
    roles: &[rules::JUDGE_ROLE, rules::CLERK_ROLE, "service"],
};

/// Checks the parties of an application taken in (the suite's one set of party validators,
/// [`pii::validate::party`]: identity numbers with their check digit, phones, addresses). A
/// name is not required here: which parties the application names is the domain's check
/// ([`app::receive`]), and they were named where the agreement was taken in.
fn check_parties(intake: &app::Intake) -> Result<(), Error> {
    let mut v = Vec::new();
    for (i, p) in intake.parties.iter().enumerate() {
        pii::validate::party(&mut v, &format!("parties[{i}]"), p, false);
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(v))
    }
}

/// The access-log rows of a read answering `applications`.
fn resources(applications: &[ConfirmationApplication]) -> Vec<(String, String)> {
    applications
        .iter()
        .map(|a| (a.name.clone(), a.case_id.clone()))
        .collect()
}

fn name_of(name: &str) -> Result<&str, Error> {
    let id = name
        .strip_prefix("applications/")
        .ok_or_else(|| FieldViolation::new("name", "expected applications/{application}"))?;
    validate::resource_id("name", id)?;
    Ok(name)
}

fengqiao_kit::record_acts!(
    /// Applications as [`acts::act`] changes them.
    Applications: db::Stored, Record => ConfirmationApplication;
    field = application, collection = "applications", load = db::load, list = db::list,
    save = saved,
    current = |r: &mut Record, now| app::sweep(r, now, HolidayCalendar::builtin()),
);

/// An application saved by an act: the application as stored.
async fn saved(
    tx: &mut Tx,
    s: &db::Stored,
    next: &Record,
    now: i64,
) -> Result<ConfirmationApplication, Error> {
    Ok(db::save(tx, s, next, now).await?.record.application)
}

impl JudicialConfirmation {
    /// A service over `store` (migrated with [`crate::store::migrate`]).
    pub fn new(store: Store) -> Self {
        Self {
            store,
            router: None,
            signer: None,
        }
    }

    /// Lets the service act for the court itself, signing its router calls with `key` for
    /// `issuer`: an offer its intake checks refuse (one party alone, out of time, not the
    /// competent court) is declined on the router with the route's reason
    /// ([`routed::decline_for_refusal`]). Without a key it stays offered for the court.
    pub fn with_signing_key(mut self, key: fengqiao_kit::auth::SigningKey, issuer: &str) -> Self {
        let signer = fengqiao_kit::handler::SystemSigner::new(key, issuer);
        self.signer = Some(std::sync::Arc::new(signer));
        self
    }

    /// Declines `transfer` for `court` as the court's system with the route's `code`; the
    /// request id is derived from the transfer, so a redelivered offer makes the same call.
    async fn decline_as_system(
        &self,
        court: &str,
        transfer: &str,
        code: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let (Some(signer), Some(router)) = (self.signer.as_ref(), self.router.as_ref()) else {
            return Ok(());
        };
        let decline = rt::DeclineTransferRequest {
            name: transfer.to_string(),
            etag: String::new(),
            reason_code: code.to_string(),
            reason: reason.to_string(),
            request_id: router_rid("DeclineOffer", transfer, "intake"),
        };
        let request = signer
            .request(court, SYSTEM_ACTOR, &[rules::JUDGE_ROLE], decline)
            .ok_or_else(|| Error::Internal("token is not a header value".into()))?;
        match TransferServiceClient::new(router.clone())
            .decline_transfer(request)
            .await
        {
            Ok(_) => Ok(()),
            // Already declined (or withdrawn meanwhile): nothing to do.
            Err(e) if e.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(e) => Err(Error::Upstream(Box::new(e), &[])),
        }
    }

    /// Reflects the court's acts on the committee's router transfers (the served suite).
    /// Without a router the acts are recorded here only (the library's tests).
    pub fn with_router(mut self, router: tonic::transport::Channel) -> Self {
        self.router = Some(router);
        self
    }

    /// The court's side of the process's agency inbox: applications offered on
    /// `mediation-to-court-confirmation`.
    pub fn inbox_handler(&self) -> std::sync::Arc<dyn fengqiao_kit::inbox::InboxHandler> {
        std::sync::Arc::new(Inbox { svc: self.clone() })
    }

    /// Adds the gRPC service to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            JudicialConfirmationServiceServer::new(self.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
    }

    /// Takes in an application for `court` (the domain checks of [`app::receive`]) and
    /// stores it; the router inbox's entry point. Returns the stored
    /// application (the existing one for a transfer already taken in).
    pub async fn take_in(
        &self,
        court: &str,
        intake: &app::Intake,
    ) -> Result<ConfirmationApplication, Error> {
        let key = if intake.transfer.is_empty() {
            &intake.pre_filing_case
        } else {
            &intake.transfer
        };
        if key.is_empty() {
            return Err(FieldViolation::new("transfer", "is required").into());
        }
        check_parties(intake)?;
        let mut tx = self.store.write().await?;
        if let Some(s) = db::load_by_transfer(&mut tx, key).await? {
            return Ok(s.record.application);
        }
        let now = fengqiao_store::db_now_micros(&mut tx).await?;
        let name = format!("applications/{}", uuid_v4());
        let record = app::receive(&name, court, intake, now, HolidayCalendar::builtin())?;
        db::insert(&mut tx, court, &record).await?;
        let s = db::load(&mut tx, court, &name)
            .await?
            .ok_or_else(|| Error::Internal("inserted application vanished".into()))?;
        tx.commit().await?;
        Ok(s.record.application)
    }

    /// Replays an earlier answer to `request_id`, or loads, sweeps overdue clocks, applies
    /// `f` at the database's time, saves and records the answer, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn act<M: prost::Message>(
        &self,
        who: &Identity,
        method: &str,
        request: &M,
        name: &str,
        etag: &str,
        request_id: &str,
        f: impl FnOnce(&Record, i64, &HolidayCalendar) -> Result<Record, Error>,
    ) -> Result<ConfirmationApplication, Error> {
        let name = name_of(name)?;
        let cal = HolidayCalendar::builtin();
        acts::act::<Applications, M>(
            &self.store,
            who,
            method,
            request,
            name,
            etag,
            request_id,
            |current, now| f(current, now, cal),
        )
        .await
    }

    /// [`Self::act`] for an act the committee must see: the act is tried on a read first, the
    /// router call it needs ([`routed::router_call`]) is made for the caller, then the act
    /// is committed.
    #[allow(clippy::too_many_arguments)]
    async fn act_routed<M: prost::Message>(
        &self,
        caller: &Caller,
        who: &Identity,
        method: &str,
        request: &M,
        name: &str,
        etag: &str,
        request_id: &str,
        f: impl Fn(&Record, i64, &HolidayCalendar) -> Result<Record, Error>,
    ) -> Result<ConfirmationApplication, Error> {
        if let Some(router) = &self.router {
            let name = name_of(name)?;
            let idem = Idem::new(who, method, request_id, request)?;
            let cal = HolidayCalendar::builtin();
            let mut tx = self.store.read().await?;
            if let Some(answer) = idem.replay::<ConfirmationApplication>(&mut tx).await? {
                return Ok(answer);
            }
            let now = fengqiao_store::db_now_micros(&mut tx).await?;
            let s = found(db::load(&mut tx, &who.agency, name).await?, name)?;
            tx.rollback().await?;
            check_etag(name, etag, s.version)?;
            let mut current = s.record.clone();
            app::sweep(&mut current, now, cal)?;
            let next = f(&current, now, cal)?;
            let transfer = current.application.transfer.clone();
            if let Some(call) = routed::router_call(current.state(), &next.application)
                && !transfer.is_empty()
            {
                let rid = router_rid(method, name, request_id);
                let mut r = TransferServiceClient::new(router.clone());
                let sent = match call {
                    RouterCall::Accept { number } => r
                        .accept_transfer(forwarded(
                            caller,
                            rt::AcceptTransferRequest {
                                name: transfer,
                                etag: String::new(),
                                receiver_reference: number,
                                comment: "受理司法确认申请（法释〔2011〕5号 Art 4）".into(),
                                request_id: rid,
                            },
                        ))
                        .await
                        .map(drop),
                    RouterCall::Decline { code, reason } => r
                        .decline_transfer(forwarded(
                            caller,
                            rt::DeclineTransferRequest {
                                name: transfer,
                                etag: String::new(),
                                reason_code: code,
                                reason,
                                request_id: rid,
                            },
                        ))
                        .await
                        .map(drop),
                    RouterCall::Feedback {
                        outcome,
                        summary,
                        documents,
                    } => r
                        .submit_feedback(forwarded(
                            caller,
                            rt::SubmitFeedbackRequest {
                                name: transfer,
                                etag: String::new(),
                                outcome_code: outcome.into(),
                                summary,
                                documents,
                                amount: None,
                                request_id: rid,
                            },
                        ))
                        .await
                        .map(drop),
                };
                sent.map_err(|e| Error::Upstream(Box::new(e), &[]))?;
            }
        }
        self.act(who, method, request, name, etag, request_id, f)
            .await
    }

    /// One pass of the deadline sweep at `now` (unix µs; the database's time when `None`):
    /// every application whose running decision clock (acceptance 3 days, 2011 rules Art 4;
    /// review 15/+10, Art 5, cap 30, 民事诉讼法 Art 187) has passed its deadline is marked
    /// overdue and saved ([`app::sweep`]; notify-only clocks: nothing else changes), so lists
    /// and statistics show it without anyone reading the application first. Returns how many
    /// were marked. A paused clock is not due. Concurrent writers: the save is optimistic; a
    /// lost race is left to the next pass.
    pub async fn sweep_overdue(&self, now: Option<i64>, page: u32) -> Result<usize, Error> {
        let mut marked = 0;
        let mut after = String::new();
        loop {
            let candidates = {
                let mut tx = self.store.read().await?;
                let c = db::sweep_candidates(&mut tx, &after, page.max(1)).await?;
                tx.rollback().await?;
                c
            };
            let Some((_, last)) = candidates.last() else {
                return Ok(marked);
            };
            after = last.clone();
            marked += self.sweep_page(now, candidates).await?;
        }
    }

    async fn sweep_page(
        &self,
        now: Option<i64>,
        candidates: Vec<(String, String)>,
    ) -> Result<usize, Error> {
        let cal = HolidayCalendar::builtin();
        let mut marked = 0;
        for (court, id) in candidates {
            let name = format!("applications/{id}");
            let mut tx = self.store.write().await?;
            let at = match now {
                Some(t) => t,
                None => fengqiao_store::db_now_micros(&mut tx).await?,
            };
            let Some(s) = db::load(&mut tx, &court, &name).await? else {
                continue;
            };
            let mut r = s.record.clone();
            if !app::sweep(&mut r, at, cal)? {
                continue;
            }
            match db::save(&mut tx, &s, &r, at).await {
                Ok(_) => {
                    tx.commit().await?;
                    marked += 1;
                    tracing::info!(application = %name, "decision clock overdue");
                }
                Err(Error::EtagMismatch(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(marked)
    }

    /// Runs the deadline sweep every `every` until `shutdown` resolves (like the router's
    /// timer): see [`Self::sweep_overdue`].
    pub fn start_timer(
        &self,
        every: std::time::Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let svc = self.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = svc.sweep_overdue(None, 200).await {
                    tracing::warn!(error = %e, "deadline sweep failed; will retry");
                }
            }
        });
    }

    /// The application `name` of `court` as of now, for the court's own systems (court
    /// diversion shows its 诉前调确 application's state and ruling on the case); `None` when
    /// the court has no such application.
    pub async fn application_of(
        &self,
        court: &str,
        name: &str,
    ) -> Result<Option<ConfirmationApplication>, Error> {
        let r = acts::read::<Applications>(&self.store, court, name_of(name)?).await?;
        Ok(r.map(|r| r.application))
    }

    async fn get(&self, who: &Identity, name: &str) -> Result<ConfirmationApplication, Error> {
        let r = acts::get::<Applications>(&self.store, &who.agency, name_of(name)?).await?;
        Ok(r.application)
    }

    async fn list(
        &self,
        who: &Identity,
        req: &ListApplicationsRequest,
    ) -> Result<ListApplicationsResponse, Error> {
        let size = validate::page_size(req.page_size)?;
        let query = fengqiao_kit::list_query!(req, &who.agency);
        let after = validate::parse_keyset_page_token(&req.page_token, &query)?;
        // Checked, not filtered: `states()` would drop unknown values and so list everything.
        let states: Vec<ApplicationState> = validate::enum_values("states", &req.states, 32)?;
        let mut tx = self.store.read().await?;
        let rows = db::list(
            &mut tx,
            &who.agency,
            &states,
            req.overdue_only,
            after,
            size + 1,
        )
        .await?;
        let (applications, next_page_token) =
            records::keyset_page(rows, i64::from(size), &query, |s| {
                let (t, id) = Applications::cursor(&s);
                Ok((s.record.application, t, id))
            })?;
        Ok(ListApplicationsResponse {
            applications,
            next_page_token,
        })
    }

    async fn statistics(
        &self,
        who: &Identity,
        req: &GetApplicationStatisticsRequest,
    ) -> Result<GetApplicationStatisticsResponse, Error> {
        let period = Period::of(req.create_time_start.as_ref(), req.create_time_end.as_ref())?;
        let mut tx = self.store.read().await?;
        let mut tally = Tally::default();
        acts::each::<Applications>(&mut tx, &who.agency, |s| {
            let a = &s.record.application;
            let created = created_at(a.create_time.as_ref());
            if period.contains(created) {
                tally.add(&ApplicationSummary {
                    state: s.record.state(),
                    ground: app::ground(&s.record)
                        .map(|g| g.code.clone())
                        .unwrap_or_default(),
                    overdue: a.overdue || s.record.clocks.iter().any(|c| c.expired),
                    days_to_decision: a.ruling.as_ref().and_then(|r| {
                        let t = fengqiao_kit::time::from_timestamp(r.rule_time.as_ref()?);
                        Some(rules::days_between(created, t))
                    }),
                });
            }
            Ok(())
        })
        .await?;
        Ok(tally.response())
    }
}

const CLERK_OR_JUDGE: &[&str] = &[rules::CLERK_ROLE, rules::JUDGE_ROLE];

#[tonic::async_trait]
impl JudicialConfirmationService for JudicialConfirmation {
    async fn get_application(
        &self,
        req: Request<GetApplicationRequest>,
    ) -> Reply<GetApplicationResponse> {
        let w = who(&req)?;
        let read = async {
            let application = Some(self.get(&w, &req.get_ref().name).await?);
            Ok(GetApplicationResponse { application })
        };
        let method = "/fengqiao.judicialconfirmation.v1.JudicialConfirmationService/GetApplication";
        read_reply(&self.store, &FULL_VIEW, method, &req, &w, read, |r| {
            resources(r.application.as_slice())
        })
        .await
    }

    async fn list_applications(
        &self,
        req: Request<ListApplicationsRequest>,
    ) -> Reply<ListApplicationsResponse> {
        let w = who(&req)?;
        let read = self.list(&w, req.get_ref());
        let method =
            "/fengqiao.judicialconfirmation.v1.JudicialConfirmationService/ListApplications";
        read_reply(&self.store, &FULL_VIEW, method, &req, &w, read, |r| {
            resources(&r.applications)
        })
        .await
    }

    async fn accept_application(
        &self,
        req: Request<AcceptApplicationRequest>,
    ) -> Reply<AcceptApplicationResponse> {
        let w = who(&req)?;
        let caller = req.metadata().clone();
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, CLERK_OR_JUDGE)?;
            not_personal("confirmation_number", &r.confirmation_number)?;
            self.act_routed(
                &caller,
                &w,
                "AcceptApplication",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| app::accept(rec, &r.confirmation_number, now, cal),
            )
            .await
        }
        .await;
        masked(result.map(|a| AcceptApplicationResponse {
            application: Some(a),
        }))
    }

    async fn reject_application(
        &self,
        req: Request<RejectApplicationRequest>,
    ) -> Reply<RejectApplicationResponse> {
        let w = who(&req)?;
        let caller = req.metadata().clone();
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, &[rules::JUDGE_ROLE])?;
            self.act_routed(
                &caller,
                &w,
                "RejectApplication",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| app::reject(rec, &r.ground_code, now, cal),
            )
            .await
        }
        .await;
        masked(result.map(|a| RejectApplicationResponse {
            application: Some(a),
        }))
    }

    async fn request_supplement(
        &self,
        req: Request<RequestSupplementRequest>,
    ) -> Reply<RequestSupplementResponse> {
        let w = who(&req)?;
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, &[rules::JUDGE_ROLE])?;
            self.act(
                &w,
                "RequestSupplement",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| {
                    app::request_supplement(rec, &pii::redact_text(&r.description), now, cal)
                },
            )
            .await
        }
        .await;
        masked(result.map(|a| RequestSupplementResponse {
            application: Some(a),
        }))
    }

    async fn receive_supplement(
        &self,
        req: Request<ReceiveSupplementRequest>,
    ) -> Reply<ReceiveSupplementResponse> {
        let w = who(&req)?;
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, CLERK_OR_JUDGE)?;
            self.act(
                &w,
                "ReceiveSupplement",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                app::receive_supplement,
            )
            .await
        }
        .await;
        masked(result.map(|a| ReceiveSupplementResponse {
            application: Some(a),
        }))
    }

    async fn extend_review(
        &self,
        req: Request<ExtendReviewRequest>,
    ) -> Reply<ExtendReviewResponse> {
        let w = who(&req)?;
        let r = req.into_inner();
        let result = async {
            if r.reason.trim().is_empty() {
                return Err(FieldViolation::new("reason", "required").into());
            }
            // The clock engine refuses without the president's role (2011 rules Art 5).
            self.act(
                &w,
                "ExtendReview",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| app::extend(rec, r.days, &w.roles, now, cal),
            )
            .await
        }
        .await;
        masked(result.map(|a| ExtendReviewResponse {
            application: Some(a),
        }))
    }

    async fn rule_on_application(
        &self,
        req: Request<RuleOnApplicationRequest>,
    ) -> Reply<RuleOnApplicationResponse> {
        let w = who(&req)?;
        let caller = req.metadata().clone();
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, &[rules::JUDGE_ROLE])?;
            let outcome = RulingOutcome::try_from(r.outcome).unwrap_or_default();
            self.act_routed(
                &caller,
                &w,
                "RuleOnApplication",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| {
                    app::rule(rec, outcome, &r.ground_code, r.document.as_ref(), now, cal)
                },
            )
            .await
        }
        .await;
        masked(result.map(|a| RuleOnApplicationResponse {
            application: Some(a),
        }))
    }

    async fn withdraw_application(
        &self,
        req: Request<WithdrawApplicationRequest>,
    ) -> Reply<WithdrawApplicationResponse> {
        let w = who(&req)?;
        let caller = req.metadata().clone();
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, CLERK_OR_JUDGE)?;
            self.act_routed(
                &caller,
                &w,
                "WithdrawApplication",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                app::withdraw,
            )
            .await
        }
        .await;
        masked(result.map(|a| WithdrawApplicationResponse {
            application: Some(a),
        }))
    }

    async fn file_objection(
        &self,
        req: Request<FileObjectionRequest>,
    ) -> Reply<FileObjectionResponse> {
        let w = who(&req)?;
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, CLERK_OR_JUDGE)?;
            let known = r
                .known_time
                .as_ref()
                .ok_or_else(|| FieldViolation::new("known_time", "required"))?;
            let known = fengqiao_kit::time::parse_timestamp("known_time", known)?;
            let objector = ObjectorKind::try_from(r.objector).unwrap_or_default();
            self.act(
                &w,
                "FileObjection",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| {
                    app::object(
                        rec,
                        objector,
                        known,
                        &pii::redact_text(&r.grounds),
                        now,
                        cal,
                    )
                },
            )
            .await
        }
        .await;
        masked(result.map(|a| FileObjectionResponse {
            application: Some(a),
        }))
    }

    async fn hand_off_for_enforcement(
        &self,
        req: Request<HandOffForEnforcementRequest>,
    ) -> Reply<HandOffForEnforcementResponse> {
        let w = who(&req)?;
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, CLERK_OR_JUDGE)?;
            not_personal("enforcement_reference", &r.enforcement_reference)?;
            let actor = w.as_actor();
            self.act(
                &w,
                "HandOffForEnforcement",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| {
                    app::hand_off_for_enforcement(
                        rec,
                        &r.applicant_party_id,
                        r.document.as_ref(),
                        &r.enforcement_reference,
                        actor,
                        now,
                        cal,
                    )
                },
            )
            .await
        }
        .await;
        if result.is_ok() {
            tracing::info!(application = %r.name, "handed off for enforcement");
        }
        masked(result.map(|a| HandOffForEnforcementResponse {
            application: Some(a),
        }))
    }

    async fn report_non_confirmation(
        &self,
        req: Request<ReportNonConfirmationRequest>,
    ) -> Reply<ReportNonConfirmationResponse> {
        let w = who(&req)?;
        let r = req.into_inner();
        let result = async {
            need_any_role(&w, &[rules::JUDGE_ROLE])?;
            let actor = w.as_actor();
            self.act(
                &w,
                "ReportNonConfirmation",
                &r,
                &r.name,
                &r.etag,
                &r.request_id,
                |rec, now, cal| {
                    app::report_non_confirmation(
                        rec,
                        &r.justice_bureau,
                        r.document.as_ref(),
                        &pii::redact_text(&r.note),
                        actor,
                        now,
                        cal,
                    )
                },
            )
            .await
        }
        .await;
        masked(result.map(|a| ReportNonConfirmationResponse {
            application: Some(a),
        }))
    }

    async fn get_application_statistics(
        &self,
        req: Request<GetApplicationStatisticsRequest>,
    ) -> Reply<GetApplicationStatisticsResponse> {
        let w = who(&req)?;
        reply(self.statistics(&w, req.get_ref()).await)
    }
}

// ---------------------------------------------------------------------------
// Router messages (the court is the RECEIVER on mediation-to-court-confirmation)
// ---------------------------------------------------------------------------

/// The court's inbox for the committee's applications.
struct Inbox {
    svc: JudicialConfirmation,
}

impl fengqiao_kit::deliveries::Deliveries for Inbox {
    fn receives(&self) -> &[fengqiao_kit::inbox::Receives] {
        &[(rules::ROUTE_ID, RecipientSide::Receiver)]
    }

    /// An offer becomes an application of the addressed court (every intake check of
    /// [`app::receive`], the committee's submission time counting for the 30 days); taking
    /// in the same transfer again changes nothing. Other messages on the route change
    /// nothing here: the court's own acts make them.
    async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse, Error> {
        let kind = MessageKind::try_from(envelope.kind).unwrap_or_default();
        if kind != MessageKind::TransferOffered {
            return Ok(DeliverResponse { duplicate: false });
        }
        let msg = <TransferMessage as prost::Message>::decode(envelope.payload.as_slice())
            .map_err(|_| FieldViolation::new("envelope.payload", "not a TransferMessage"))?;
        let Some(intake) = msg.transfer.as_ref().and_then(routed::intake_of) else {
            return Err(FieldViolation::new(
                "envelope.payload",
                "the transfer carries no confirmation package (case_snapshot.confirmation)",
            )
            .into());
        };
        match self.svc.take_in(&envelope.to_agency, &intake).await {
            Ok(_) => Ok(DeliverResponse { duplicate: false }),
            // An application the court's intake checks refuse (one party alone, day 31, not
            // the competent court, an incomplete package) is not taken in; the committee's
            // sender side refuses the same before sending. With the service key the court's
            // system declines it with the route's reason; an incomplete package (or no key)
            // stays offered for the court.
            Err(e @ (Error::Refused(..) | Error::Invalid(_))) => {
                tracing::warn!(transfer = %intake.transfer, error = %e, "application not taken in");
                if let Error::Refused(reason, message) = &e
                    && let Some(code) = routed::decline_for_refusal(*reason)
                {
                    // After this delivery is answered: the router is not called from inside
                    // its own push.
                    let (svc, court, transfer, message) = (
                        self.svc.clone(),
                        envelope.to_agency.clone(),
                        intake.transfer.clone(),
                        message.clone(),
                    );
                    tokio::spawn(async move {
                        if let Err(e) = svc
                            .decline_as_system(&court, &transfer, code, &message)
                            .await
                        {
                            tracing::warn!(transfer = %transfer, error = %e, "refused offer not declined on the router");
                        }
                    });
                }
                Ok(DeliverResponse { duplicate: false })
            }
            Err(e) => Err(e),
        }
    }
}
