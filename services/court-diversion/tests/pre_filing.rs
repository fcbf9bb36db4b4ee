//! Pre-filing judicial confirmation (诉前调确) without the court's judicial confirmation
//! service in the process: the hand-over answers NOT_BUILT and nothing changes. (With it:
//! tests/tests/judicial_confirmation.rs, the real suite.) SQLite and PostgreSQL.

use fengqiao_court_diversion::{CourtDiversion, migrate};
use fengqiao_kit::auth::{AuthMethod, Identity};
use fengqiao_proto::courtdiversion::court_diversion_service_server::CourtDiversionService as _;
use fengqiao_proto::courtdiversion::{DecideNextStepRequest, NextStep};
use fengqiao_store::{Store, both_backends};
use fengqiao_testkit::answers::Refusal as _;
use tonic::{Code, Request};

fn clerk<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(Identity {
        agency: "agencies/xigang-court".into(),
        actor: "clerk-01".into(),
        roles: vec!["court_clerk".into(), "judge".into()],
        method: AuthMethod::Token,
        person: None,
    });
    r
}

both_backends!(
    without_the_confirmation_service_the_hand_over_is_not_built,
    |store: Store| async move {
        migrate(&store).await?;
        let router = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let svc = CourtDiversion::new(store.clone(), router);
        let request = |applicants: &[&str], step: NextStep| DecideNextStepRequest {
            name: "cases/00000000-0000-4000-8000-000000000001".into(),
            next_step: step as i32,
            applicant_party_ids: applicants.iter().map(|s| (*s).to_string()).collect(),
            request_id: "00000000-0000-4000-8000-0000000000aa".into(),
            ..Default::default()
        };
        let e = svc
            .decide_next_step(clerk(request(
                &["p1", "p2"],
                NextStep::JudicialConfirmation,
            )))
            .await
            .refusal(Code::Unimplemented, "not built");
        assert_eq!(
            fengqiao_kit::error::reason_of(&e).as_deref(),
            Some("NOT_BUILT")
        );
        // Applicants belong to the judicial confirmation step only.
        svc.decide_next_step(clerk(request(&["p1", "p2"], NextStep::MediationDocument)))
            .await
            .refusal(Code::InvalidArgument, "wrong step");
        // Without applicants the step is recorded as before (here: no such case).
        svc.decide_next_step(clerk(request(&[], NextStep::JudicialConfirmation)))
            .await
            .refusal(Code::NotFound, "no case");
        Ok::<(), Box<dyn std::error::Error>>(())
    }
);
