//! The one place where errors become `tonic::Status`.
//!
//! Every crate keeps its own error enum and converts it into an [`ApiError`]; [`ApiError`] turns
//! into a `Status` carrying `google.rpc.ErrorInfo` (a stable `reason`, always) and
//! `google.rpc.BadRequest` (the offending fields, for bad input). Messages must never contain
//! personal information: name the field, not its value.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::reason::Reason;

/// `ErrorInfo.domain` of every Fengqiao error.
pub const ERROR_DOMAIN: &str = "fengqiao";

/// Most `BadRequest` field violations one answer carries (see [`ApiError::invalid`]).
pub const MAX_VIOLATIONS: usize = 20;

/// One invalid field of a request (`google.rpc.BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `referral.parties[0].id_number`.
    pub field: String,
    /// What is wrong with it, without echoing the value.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A client-facing error: stable reason (which fixes the status code), message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable machine-readable reason from the one catalogue ([`Reason`]).
    pub reason: Reason,
    /// Human-readable message, free of personal information.
    pub message: String,
    /// Offending fields, for `INVALID_ARGUMENT`.
    pub violations: Vec<FieldViolation>,
    /// Extra `ErrorInfo.metadata` (e.g. the current state of a resource, by its enum name).
    pub metadata: HashMap<String, String>,
    /// A `google.rpc.PreconditionFailure` violation (type, subject, description), for
    /// `WRONG_STATE` and the other typed preconditions.
    pub precondition: Option<Box<(String, String, String)>>,
}

impl ApiError {
    /// An error with `reason` (and so its status code) and `message`.
    ///
    /// Personal information never reaches an error message (PIPL Art 51): an ID number or a
    /// mobile number in `message` (e.g. a resource name the caller made up) is masked.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        let mut message = message.into();
        crate::pii::redact_in_place(&mut message);
        Self {
            reason,
            message,
            violations: Vec::new(),
            metadata: HashMap::new(),
            precondition: None,
        }
    }

    /// The gRPC status code: the reason's, always.
    pub fn code(&self) -> Code {
        self.reason.code()
    }

    /// `INVALID_ARGUMENT` naming the bad fields: at most [`MAX_VIOLATIONS`] entries, so one
    /// request cannot make the answer grow with it (a request with 250 000 bad repeated values
    /// answers 20 entries). Beyond the limit, the last entry names the next bad field and says
    /// how many more were not listed.
    pub fn invalid(mut violations: Vec<FieldViolation>) -> Self {
        if violations.len() > MAX_VIOLATIONS {
            let more = violations.len() - MAX_VIOLATIONS;
            violations.truncate(MAX_VIOLATIONS);
            if let Some(last) = violations.last_mut() {
                last.description = format!(
                    "{}; and {more} more invalid field(s) not listed",
                    last.description
                );
            }
        }
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        let message = format!("invalid request: {}", fields.join(", "));
        Self {
            violations,
            ..Self::new(Reason::InvalidArgument, message)
        }
    }

    /// `INVALID_ARGUMENT` for one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid(vec![FieldViolation::new(field, description)])
    }

    /// `FAILED_PRECONDITION` / `WRONG_STATE`: `resource` is in `state` (the state enum's value
    /// name, e.g. `REFERRAL_STATE_CLOSED`), which does not allow `action`. Carries
    /// `metadata["state"]` and a typed `google.rpc.PreconditionFailure` (type `STATE`, subject
    /// the resource name).
    pub fn wrong_state(resource: &str, state: &str, action: &str) -> Self {
        let description = format!("{resource} is {state}; cannot {action}");
        Self {
            precondition: Some(Box::new((
                "STATE".into(),
                resource.into(),
                description.clone(),
            ))),
            ..Self::new(Reason::WrongState, description)
        }
        .with_metadata("state", state)
        .with_metadata("action", action)
    }

    /// `INTERNAL`, for faults of the server only. The detail is logged, not returned.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(Reason::Internal, "internal error")
    }

    /// Adds an `ErrorInfo.metadata` entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The `tonic::Status` with `google.rpc` details.
    pub fn to_status(&self) -> Status {
        let mut details = ErrorDetails::with_error_info(
            self.reason.as_str(),
            ERROR_DOMAIN,
            self.metadata.clone(),
        );
        if !self.violations.is_empty() {
            let v: Vec<tonic_types::FieldViolation> = self
                .violations
                .iter()
                .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect();
            details.set_bad_request(v);
        }
        if let Some(p) = &self.precondition {
            let (kind, subject, description) = &**p;
            details.set_precondition_failure(vec![tonic_types::PreconditionViolation::new(
                kind.clone(),
                subject.clone(),
                description.clone(),
            )]);
        }
        Status::with_error_details(self.code(), self.message.clone(), details)
    }

    /// The client-facing form of a status another Fengqiao service (the router) answered a
    /// call made for this caller. Its reason is kept when it is in the catalogue; its bad
    /// fields are renamed to the caller's request fields by `fields` (pairs of the upstream
    /// request's field path prefix and the caller's). A bad field that does not map is a bad
    /// request this service built, so a fault of the server (`INTERNAL`, logged). Transport
    /// failures become `UPSTREAM_UNAVAILABLE` (retry with the same `request_id`).
    pub fn from_upstream(status: &Status, fields: &[(&str, &str)]) -> Self {
        let details = status.get_error_details();
        let info = details.error_info();
        let reason = info
            .filter(|i| i.domain == ERROR_DOMAIN)
            .and_then(|i| i.reason.parse::<Reason>().ok());
        match (status.code(), reason) {
            (Code::Unavailable | Code::Unknown | Code::Cancelled, None) => Self::new(
                Reason::UpstreamUnavailable,
                "the router could not be reached; retry with the same request_id",
            ),
            (Code::DeadlineExceeded, _) => Self::new(
                Reason::DeadlineExceeded,
                "the router did not answer in time; retry with the same request_id",
            ),
            (Code::InvalidArgument, _) => {
                let mut mapped = Vec::new();
                let upstream = details
                    .bad_request()
                    .map(|b| b.field_violations.clone())
                    .unwrap_or_default();
                for v in &upstream {
                    let to = fields.iter().find_map(|(from, to)| {
                        let rest = v.field.strip_prefix(from)?;
                        (rest.is_empty() || rest.starts_with(['.', '[']))
                            .then(|| format!("{to}{rest}"))
                    });
                    match to {
                        Some(field) => {
                            mapped.push(FieldViolation::new(field, v.description.clone()))
                        }
                        None => {
                            return Self::internal(&format!(
                                "the router refused field {} of a request this service built",
                                v.field
                            ));
                        }
                    }
                }
                if mapped.is_empty() {
                    return Self::internal(&"the router refused a request this service built");
                }
                Self::invalid(mapped)
            }
            (_, Some(reason)) if reason.code() == status.code() => {
                let mut e = Self::new(reason, status.message());
                if let Some(i) = info {
                    e.metadata = i.metadata.clone();
                }
                if let Some(p) = details
                    .precondition_failure()
                    .and_then(|p| p.violations.first())
                {
                    e.precondition = Some(Box::new((
                        p.r#type.clone(),
                        p.subject.clone(),
                        p.description.clone(),
                    )));
                }
                e
            }
            (code, _) => Self::internal(&format!(
                "the router answered {code:?} without a known reason"
            )),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.code(), self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

/// The error of an agency service's handlers: what can go wrong, mapped to the client-facing
/// [`ApiError`] in one place ([`Error::api`]). Services use it as their error type, so the same
/// situation has the same reason everywhere.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] fengqiao_store::Error),
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No such resource, or not visible to the caller (the same answer either way).
    #[error("{0} not found")]
    NotFound(String),
    /// A resource with this name already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The `etag` does not match the current version.
    #[error("etag mismatch on {0}")]
    EtagMismatch(String),
    /// The resource is in a state that does not allow the action.
    #[error("{resource} is {state}; cannot {action}")]
    WrongState {
        /// The resource name.
        resource: String,
        /// Its current state (the enum value's name).
        state: String,
        /// The refused action.
        action: &'static str,
    },
    /// A rule refuses the action, with its stable reason (which fixes the status code) and a
    /// message free of personal information.
    #[error("{0}: {1}")]
    Refused(Reason, String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A fault of this server's configuration or code (logged, answered `INTERNAL`).
    #[error("internal: {0}")]
    Internal(String),
    /// A client-facing error built elsewhere (clock rules, the inbox, authentication).
    #[error("{0}")]
    Api(ApiError),
    /// The router answered a call made for this caller with an error; see
    /// [`ApiError::from_upstream`] for how it reaches the caller. The pairs rename the
    /// router request's fields to the caller's.
    #[error("router: {}", .0.message())]
    Upstream(Box<Status>, &'static [(&'static str, &'static str)]),
}

impl Error {
    /// A router refusal whose bad fields (if any) are not the caller's.
    pub fn upstream(status: Status) -> Self {
        Error::Upstream(Box::new(status), &[])
    }

    /// The client-facing form.
    pub fn api(&self) -> ApiError {
        match self {
            Error::Store(fengqiao_store::Error::IdempotencyConflict) => ApiError::new(
                Reason::RequestIdReused,
                "request_id was already used for a different request",
            ),
            Error::Store(e) if e.is_retryable() => {
                ApiError::new(Reason::StoreConflict, "concurrent update; retry")
            }
            Error::Store(e) => ApiError::internal(e),
            Error::Invalid(v) => ApiError::invalid(v.clone()),
            Error::NotFound(what) => ApiError::new(Reason::NotFound, format!("{what} not found")),
            Error::AlreadyExists(what) => {
                ApiError::new(Reason::AlreadyExists, format!("{what} already exists"))
            }
            Error::EtagMismatch(what) => ApiError::new(
                Reason::EtagMismatch,
                format!("{what} was changed by someone else; read it again and retry"),
            ),
            Error::WrongState {
                resource,
                state,
                action,
            } => ApiError::wrong_state(resource, state, action),
            Error::Refused(reason, msg) => ApiError::new(*reason, msg.clone()),
            Error::Corrupt(detail) => ApiError::internal(&format!("corrupt stored data: {detail}")),
            Error::Internal(detail) => ApiError::internal(detail),
            Error::Api(e) => e.clone(),
            Error::Upstream(status, fields) => ApiError::from_upstream(status, fields),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.api().to_status()
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

impl From<FieldViolation> for Error {
    fn from(v: FieldViolation) -> Self {
        Error::Invalid(vec![v])
    }
}

impl From<crate::idem::IdemError> for Error {
    fn from(e: crate::idem::IdemError) -> Self {
        match e {
            crate::idem::IdemError::Invalid(v) => Error::Invalid(vec![v]),
            crate::idem::IdemError::Store(s) => Error::Store(s),
            crate::idem::IdemError::Corrupt(d) => {
                Error::Corrupt(format!("idempotent response: {d}"))
            }
        }
    }
}

impl From<fengqiao_store::sqlx::Error> for Error {
    fn from(e: fengqiao_store::sqlx::Error) -> Self {
        Error::Store(fengqiao_store::Error::from(e))
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// The result of a service handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads the `ErrorInfo.reason` of a status (for clients and tests).
pub fn reason_of(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
}

/// Reads one `ErrorInfo.metadata` entry of a status, e.g. `transfer` of
/// `OPEN_TRANSFER_EXISTS` (for clients and tests).
pub fn metadata_of(status: &Status, key: &str) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

/// Reads the fields named by a status's `BadRequest` (for clients and tests).
pub fn bad_fields_of(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_information_never_reaches_an_error_message() {
        // A made-up resource name holding an ID number (valid check character) and a phone.
        let e = Error::NotFound("transfers/11010519491231002x-13900005201".into());
        let s = Status::from(e);
        assert!(
            !s.message().contains("11010519491231002"),
            "{}",
            s.message()
        );
        assert!(!s.message().contains("13900005201"), "{}", s.message());
        assert!(s.message().contains("not found"), "{}", s.message());
        // Other numbers are left alone.
        let plain = ApiError::new(Reason::NotFound, "transfers/110-2027-000123 not found");
        assert_eq!(plain.message, "transfers/110-2027-000123 not found");
    }

    #[test]
    fn violations_are_capped_with_a_count_of_the_rest() {
        let many: Vec<FieldViolation> = (0..250_000)
            .map(|i| FieldViolation::new(format!("group_by[{i}]"), "is not a known value"))
            .collect();
        let s = ApiError::invalid(many).to_status();
        let fields = bad_fields_of(&s);
        assert_eq!(fields.len(), MAX_VIOLATIONS);
        assert_eq!(fields[0], "group_by[0]");
        assert_eq!(fields[MAX_VIOLATIONS - 1], "group_by[19]");
        let details = s.get_error_details();
        let last = details
            .bad_request()
            .and_then(|b| b.field_violations.last().cloned())
            .expect("last violation");
        assert!(
            last.description.contains("249980 more"),
            "{}",
            last.description
        );
        assert!(s.message().len() < 400, "message stays small");
        assert!(s.details().len() < 4096, "details stay small");
        // At the limit nothing is folded.
        let exact: Vec<FieldViolation> = (0..MAX_VIOLATIONS)
            .map(|i| FieldViolation::new(format!("f{i}"), "bad"))
            .collect();
        let s = ApiError::invalid(exact).to_status();
        let details = s.get_error_details();
        let b = details.bad_request().expect("bad request");
        assert!(b.field_violations.iter().all(|v| v.description == "bad"));
    }

    #[test]
    fn invalid_carries_reason_and_fields() {
        let e = ApiError::invalid(vec![
            FieldViolation::new("parties[0].id_number", "check digit does not match"),
            FieldViolation::new("location.region_code", "unknown region code"),
        ]);
        let s = e.to_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&s).as_deref(), Some("INVALID_ARGUMENT"));
        assert_eq!(
            bad_fields_of(&s),
            vec!["parties[0].id_number", "location.region_code"]
        );
    }

    #[test]
    fn wrong_state_is_typed() {
        let s: Status =
            ApiError::wrong_state("transfers/t1", "TRANSFER_STATE_DRAFT", "accept").into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let d = s.get_error_details();
        let info = d.error_info().cloned().expect("error info");
        assert_eq!(info.reason, "WRONG_STATE");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("state").map(String::as_str),
            Some("TRANSFER_STATE_DRAFT")
        );
        let p = d
            .precondition_failure()
            .cloned()
            .expect("precondition failure");
        assert_eq!(p.violations[0].r#type, "STATE");
        assert_eq!(p.violations[0].subject, "transfers/t1");
    }

    #[test]
    fn every_reason_has_its_code() {
        for r in Reason::ALL {
            let s = ApiError::new(*r, "x").to_status();
            assert_eq!(s.code(), r.code(), "{r}");
            assert_eq!(reason_of(&s).as_deref(), Some(r.as_str()));
        }
    }

    #[test]
    fn upstream_fields_are_renamed_or_the_fault_is_ours() {
        let router =
            ApiError::invalid(vec![FieldViolation::new("reason_code", "not in route")]).to_status();
        let mapped = ApiError::from_upstream(&router, &[("reason_code", "reason.code")]);
        assert_eq!(mapped.reason, Reason::InvalidArgument);
        assert_eq!(mapped.violations[0].field, "reason.code");
        // A field the caller did not send: a request this service built, a fault of ours.
        let ours = ApiError::from_upstream(&router, &[]);
        assert_eq!(ours.reason, Reason::Internal);
        let nested = ApiError::invalid(vec![FieldViolation::new("case.parties[0].phone", "bad")])
            .to_status();
        let m = ApiError::from_upstream(&nested, &[("case", "referral")]);
        assert_eq!(m.violations[0].field, "referral.parties[0].phone");
        assert_eq!(
            ApiError::from_upstream(&nested, &[("cas", "x")]).reason,
            Reason::Internal
        );
    }

    #[test]
    fn upstream_reasons_pass_and_transport_failures_are_unavailable() {
        let st =
            ApiError::wrong_state("transfers/t1", "TRANSFER_STATE_CLOSED", "return").to_status();
        let e = ApiError::from_upstream(&st, &[]);
        assert_eq!(e.reason, Reason::WrongState);
        assert_eq!(
            e.metadata.get("state").map(String::as_str),
            Some("TRANSFER_STATE_CLOSED")
        );
        assert!(e.precondition.is_some());
        let down = ApiError::from_upstream(&Status::unavailable("connection refused"), &[]);
        assert_eq!(down.reason, Reason::UpstreamUnavailable);
        let late = ApiError::from_upstream(&Status::deadline_exceeded("late"), &[]);
        assert_eq!(late.reason, Reason::DeadlineExceeded);
        // A status without a catalogued reason is not passed on as if it were ours.
        let odd = ApiError::from_upstream(&Status::permission_denied("?"), &[]);
        assert_eq!(odd.reason, Reason::Internal);
    }
}
