//! The service's error type, mapped to `tonic::Status` in one place. Messages name fields,
//! resources and codes, never personal information.

use fengqiao_kit::{ApiError, FieldViolation};
use tonic::Code;

use crate::rules::RuleError;

/// Everything that can go wrong in the court-diversion service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] fengqiao_store::Error),
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No such resource, or not visible to the caller (same answer either way).
    #[error("{0} not found")]
    NotFound(String),
    /// A different case already has this pre-filing number in the court.
    #[error("pre-filing number already used by a different case")]
    NumberReused,
    /// A roster entry with this id already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The caller lacks the role for this action.
    #[error("permission denied: {1}")]
    PermissionDenied(&'static str, String),
    /// The `etag` does not match the current version.
    #[error("etag mismatch on {0}")]
    EtagMismatch(String),
    /// The case is in a state that does not allow the action.
    #[error("{resource} is {state}; cannot {action}")]
    WrongState {
        /// Stable reason.
        reason: &'static str,
        /// The resource name.
        resource: String,
        /// Its current state.
        state: String,
        /// The refused action.
        action: String,
    },
    /// A domain rule refused (not bad input).
    #[error("{0}")]
    Rule(RuleError),
    /// The method is part of the contract but not built yet.
    #[error("not built: {0}")]
    NotBuilt(&'static str),
    /// Not yet possible; the caller (the router's delivery) tries again later.
    #[error("not yet: {0}")]
    NotYet(&'static str),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A call to the router failed; passed through unchanged.
    #[error("router: {0}")]
    Router(tonic::Status),
}

impl From<fengqiao_kit::idem::IdemError> for Error {
    fn from(e: fengqiao_kit::idem::IdemError) -> Self {
        match e {
            fengqiao_kit::idem::IdemError::Invalid(v) => Error::Invalid(vec![v]),
            fengqiao_kit::idem::IdemError::Store(s) => Error::Store(s),
            fengqiao_kit::idem::IdemError::Corrupt(d) => {
                Error::Corrupt(format!("idempotent response: {d}"))
            }
        }
    }
}

impl From<FieldViolation> for Error {
    fn from(v: FieldViolation) -> Self {
        Error::Invalid(vec![v])
    }
}

impl From<fengqiao_store::sqlx::Error> for Error {
    fn from(e: fengqiao_store::sqlx::Error) -> Self {
        Error::Store(fengqiao_store::Error::from(e))
    }
}

impl From<RuleError> for Error {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::InvalidField { field, message } => {
                Error::Invalid(vec![FieldViolation::new(field, message)])
            }
            e => Error::Rule(e),
        }
    }
}

impl From<Vec<RuleError>> for Error {
    fn from(errs: Vec<RuleError>) -> Self {
        let mut violations = Vec::new();
        for e in errs {
            match e {
                RuleError::InvalidField { field, message } => {
                    violations.push(FieldViolation::new(field, message));
                }
                e => return Error::Rule(e),
            }
        }
        Error::Invalid(violations)
    }
}

impl Error {
    /// The client-facing form.
    pub fn api(&self) -> ApiError {
        match self {
            Error::Store(fengqiao_store::Error::IdempotencyConflict) => ApiError::new(
                Code::AlreadyExists,
                "REQUEST_ID_REUSED",
                "request_id was already used for a different request",
            ),
            Error::Store(e) if e.is_retryable() => {
                ApiError::new(Code::Aborted, "STORE_CONFLICT", "concurrent update; retry")
            }
            Error::Store(e) => ApiError::internal(e),
            Error::Invalid(v) => ApiError::invalid(v.clone()),
            Error::NotFound(what) => ApiError::not_found("NOT_FOUND", format!("{what} not found")),
            Error::NumberReused => ApiError::new(
                Code::AlreadyExists,
                "PRE_FILING_NUMBER_REUSED",
                "a different case was already registered under this pre-filing number",
            ),
            Error::AlreadyExists(what) => ApiError::new(
                Code::AlreadyExists,
                "ALREADY_EXISTS",
                format!("{what} exists"),
            ),
            Error::PermissionDenied(reason, msg) => {
                ApiError::permission_denied(reason, msg.clone())
            }
            Error::EtagMismatch(what) => ApiError::new(
                Code::Aborted,
                "ETAG_MISMATCH",
                format!("{what} was changed by someone else; read it again and retry"),
            ),
            Error::WrongState {
                reason,
                resource,
                state,
                action,
            } => ApiError::failed_precondition(
                reason,
                format!("{resource} is {state}; cannot {action}"),
            )
            .with_metadata("state", state.clone()),
            Error::Rule(e) => ApiError::failed_precondition(e.reason(), e.to_string()),
            Error::NotBuilt(what) => ApiError::new(
                Code::Unimplemented,
                "NOT_BUILT",
                format!("not built yet: {what}"),
            ),
            Error::NotYet(what) => ApiError::unavailable("NOT_YET", what.to_string()),
            Error::Corrupt(detail) => ApiError::internal(&format!("corrupt stored data: {detail}")),
            Error::Router(_) => ApiError::internal(&"router status"),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Router(s) => s,
            e => e.api().to_status(),
        }
    }
}

/// Service result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
