//! Answers of calls in the service crates' tests, in one line each: the message of a call that
//! must succeed ([`Answer::answer`], [`Answer::answer_of`]), the refusal of a call that must be
//! refused with a given code, reason or bad fields ([`Refusal::refusal`], [`Refusal::refusal_for`],
//! [`Refusal::refusal_on`]), and requests that name a resource and carry a fresh request id
//! ([`Named`]).
//!
//! Every check panics with the test's own name of the step (`step`) and what it got, so a
//! failure says which step of which test went wrong.

use fengqiao_kit::error::{bad_fields_of, reason_of};
use tonic::{Code, Response, Status};

use crate::services::rid;

/// What a test expects of a call that must succeed (`Result<Response<T>, Status>`, as a
/// client or a service value answers).
pub trait Answer<T> {
    /// The reply of a call that must succeed; panics with `step` and the status otherwise.
    fn answer(self, step: &str) -> T;

    /// The one message of a reply that must carry it (`pick`, e.g. `|r| r.mediation_case`);
    /// panics with `step` when the call fails or the reply lacks the message.
    fn answer_of<U>(self, step: &str, pick: impl FnOnce(T) -> Option<U>) -> U;
}

impl<T> Answer<T> for Result<Response<T>, Status> {
    fn answer(self, step: &str) -> T {
        match self {
            Ok(r) => r.into_inner(),
            Err(e) => panic!("{step}: refused: {e:?}"),
        }
    }

    fn answer_of<U>(self, step: &str, pick: impl FnOnce(T) -> Option<U>) -> U {
        pick(self.answer(step)).unwrap_or_else(|| panic!("{step}: the reply lacks its message"))
    }
}

/// What a test expects of a call that must be refused (any `Result<T, Status>`: a client's or a
/// service value's answer, or a test's own helper that unwraps the reply).
pub trait Refusal {
    /// The refusal of a call that must be refused with `code`; panics with `step` when the
    /// call succeeds or is refused with another code.
    fn refusal(self, code: Code, step: &str) -> Status;

    /// As [`Refusal::refusal`], and the refusal's `ErrorInfo.reason` must be `reason`.
    fn refusal_for(self, code: Code, reason: &str, step: &str) -> Status;

    /// As [`Refusal::refusal`], and the refusal's bad fields must be exactly `fields`.
    fn refusal_on(self, code: Code, fields: &[&str], step: &str) -> Status;
}

impl<T> Refusal for Result<T, Status> {
    fn refusal(self, code: Code, step: &str) -> Status {
        match self {
            Ok(_) => panic!("{step}: succeeded, expected {code:?}"),
            Err(e) => {
                assert_eq!(e.code(), code, "{step}: refused with another code: {e:?}");
                e
            }
        }
    }

    fn refusal_for(self, code: Code, reason: &str, step: &str) -> Status {
        let e = self.refusal(code, step);
        assert_eq!(
            reason_of(&e).as_deref(),
            Some(reason),
            "{step}: refused for another reason: {e:?}"
        );
        e
    }

    fn refusal_on(self, code: Code, fields: &[&str], step: &str) -> Status {
        let e = self.refusal(code, step);
        assert_eq!(bad_fields_of(&e), fields, "{step}: other bad fields: {e:?}");
        e
    }
}

/// A request that names one resource (`name`), with a fresh `request_id` where it carries one and
/// every other field at its default: `AcceptCaseRequest::named(&c.name)`, or the base of a
/// request that sets more (`RecordConsentRequest { party_id, ..Named::named(&c.name) }`).
pub trait Named: Default {
    /// The request naming `name`.
    fn named(name: &str) -> Self;
}

macro_rules! named_requests {
    (with_request_id: [$($with:path),* $(,)?], without: [$($without:path),* $(,)?] $(,)?) => {
        $(
            impl Named for $with {
                // One macro for every request type: some have no other field.
                #[allow(clippy::needless_update)]
                fn named(name: &str) -> Self {
                    Self {
                        name: name.into(),
                        request_id: rid(),
                        ..Self::default()
                    }
                }
            }
        )*
        $(
            impl Named for $without {
                #[allow(clippy::needless_update)]
                fn named(name: &str) -> Self {
                    Self {
                        name: name.into(),
                        ..Self::default()
                    }
                }
            }
        )*
    };
}

/// A change of one resource at a version: `name`, `etag` and a fresh `request_id`, every other
/// field at its default (each such request is [`Named`] too): `AcceptCaseRequest::change(&c.name, &c.etag)`, or the base of a
/// request that sets more (`EndMediationRequest { reason, ..Change::change(&c.name, &c.etag) }`).
pub trait Change: Default {
    /// The change of `name` at `etag` (`""`: whatever the current version).
    fn change(name: &str, etag: &str) -> Self;
}

macro_rules! change_requests {
    ($($ty:path),* $(,)?) => {
        $(
            named_requests!(with_request_id: [$ty], without: []);

            impl Change for $ty {
                #[allow(clippy::needless_update)]
                fn change(name: &str, etag: &str) -> Self {
                    Self {
                        name: name.into(),
                        etag: etag.into(),
                        request_id: rid(),
                        ..Self::default()
                    }
                }
            }
        )*
    };
}

named_requests!(
    with_request_id: [
        fengqiao_proto::mediation::RecordFollowUpRequest,
        fengqiao_proto::router::ApproveTransferRequest,
        fengqiao_proto::router::CompleteClockRequest,
        fengqiao_proto::router::DeclineTransferRequest,
        fengqiao_proto::router::EscalateTransferRequest,
        fengqiao_proto::router::ExtendDeadlineRequest,
        fengqiao_proto::router::RejectTransferRequest,
        fengqiao_proto::router::ReturnTransferRequest,
        fengqiao_proto::router::SubmitTransferRequest,
        fengqiao_proto::router::WithdrawTransferRequest,
    ],
    without: [
        fengqiao_proto::admindispute::GetDisputeRequest,
        fengqiao_proto::courtdiversion::GetCaseRequest,
        fengqiao_proto::judicialconfirmation::GetApplicationRequest,
        fengqiao_proto::mediation::GetCaseFileRequest,
        fengqiao_proto::mediation::GetCaseRequest,
        fengqiao_proto::policereferral::GetReferralFileRequest,
        fengqiao_proto::policereferral::GetReferralRequest,
        fengqiao_proto::router::GetTransferRequest,
    ],
);

change_requests!(
    fengqiao_proto::admindispute::DraftAgreementRequest,
    fengqiao_proto::admindispute::ExtendReviewRequest,
    fengqiao_proto::admindispute::SignAgreementRequest,
    fengqiao_proto::courtdiversion::RecordConsentRequest,
    fengqiao_proto::judicialconfirmation::AcceptApplicationRequest,
    fengqiao_proto::judicialconfirmation::ExtendReviewRequest,
    fengqiao_proto::judicialconfirmation::RejectApplicationRequest,
    fengqiao_proto::judicialconfirmation::RequestSupplementRequest,
    fengqiao_proto::judicialconfirmation::RuleOnApplicationRequest,
    fengqiao_proto::judicialconfirmation::WithdrawApplicationRequest,
    fengqiao_proto::mediation::AcceptCaseRequest,
    fengqiao_proto::mediation::AssignMediatorRequest,
    fengqiao_proto::mediation::DeclineCaseRequest,
    fengqiao_proto::mediation::DraftAgreementRequest,
    fengqiao_proto::mediation::EndMediationRequest,
    fengqiao_proto::mediation::EscalateCaseRequest,
    fengqiao_proto::mediation::RecordConsentRequest,
    fengqiao_proto::mediation::RecordSessionRequest,
    fengqiao_proto::mediation::RecuseMediatorRequest,
    fengqiao_proto::mediation::RequestInvestigationRequest,
    fengqiao_proto::mediation::ScheduleFollowUpRequest,
    fengqiao_proto::mediation::SignAgreementRequest,
    fengqiao_proto::policereferral::AcknowledgeFeedbackRequest,
    fengqiao_proto::policereferral::AnswerInvestigationRequest,
    fengqiao_proto::policereferral::DraftTransferRequest,
    fengqiao_proto::policereferral::OverrideScreeningRequest,
    fengqiao_proto::router::AcceptTransferRequest,
    fengqiao_proto::router::AcknowledgeFeedbackRequest,
    fengqiao_proto::router::AnswerInvestigationRequest,
    fengqiao_proto::router::PauseClockRequest,
    fengqiao_proto::router::ResumeClockRequest,
    fengqiao_proto::router::SubmitFeedbackRequest,
);
