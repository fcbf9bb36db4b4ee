//! The router's error type, mapped to `tonic::Status` in one place.

use fengqiao_kit::{ApiError, FieldViolation};
use tonic::Code;

/// Everything that can go wrong in the router.
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
    /// The resource already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The caller lacks the role or standing for this action.
    #[error("permission denied: {1}")]
    PermissionDenied(&'static str, String),
    /// The `etag` does not match the current version.
    #[error("etag mismatch on {0}")]
    EtagMismatch(String),
    /// The resource is in a state that does not allow the action.
    #[error("{resource} is {state}; cannot {action}")]
    WrongState {
        /// The resource name.
        resource: String,
        /// Its current state.
        state: String,
        /// The refused action.
        action: &'static str,
    },
    /// A clock rule refused the operation.
    #[error("clock: {0}")]
    Clock(#[from] crate::clock::ClockError),
    /// A clock operation is not allowed (not pausable, beyond the cap, …).
    #[error("clock refused: {0}")]
    ClockRefused(String),
    /// A rule refuses the action in the current state, with its own stable reason (e.g.
    /// `ACCEPTANCE_DEADLINE_PASSED`).
    #[error("refused: {1}")]
    Refused(&'static str, String),
    /// A non-terminal transfer of the same case on the same route from the same sender exists
    /// (its name).
    #[error("open transfer {0} exists")]
    OpenTransferExists(String),
    /// The router's policy data (routes, calendar) is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A `request_id` was reused with a different request.
    #[error("request_id reused with a different request")]
    RequestIdReused,
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The pinned route does not allow the action (stable reason, message).
    #[error("{1}")]
    Precondition(&'static str, String),
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

impl Error {
    /// The client-facing form.
    pub fn api(&self) -> ApiError {
        match self {
            Error::Store(fengqiao_store::Error::IdempotencyConflict) | Error::RequestIdReused => {
                ApiError::new(
                    Code::AlreadyExists,
                    "REQUEST_ID_REUSED",
                    "request_id was already used for a different request",
                )
            }
            Error::Store(e) if e.is_retryable() => {
                ApiError::new(Code::Aborted, "STORE_CONFLICT", "concurrent update; retry")
            }
            Error::Store(e) => ApiError::internal(e),
            Error::Invalid(v) => ApiError::invalid(v.clone()),
            Error::NotFound(what) => ApiError::not_found("NOT_FOUND", format!("{what} not found")),
            Error::AlreadyExists(what) => ApiError::new(
                Code::AlreadyExists,
                "ALREADY_EXISTS",
                format!("{what} already exists"),
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
                resource,
                state,
                action,
            } => ApiError::failed_precondition(
                "WRONG_STATE",
                format!("{resource} is {state}; cannot {action}"),
            )
            .with_metadata("state", state.clone()),
            Error::Clock(e) => e.api(),
            Error::ClockRefused(msg) => ApiError::failed_precondition("CLOCK_REFUSED", msg.clone()),
            Error::Refused(reason, msg) => ApiError::failed_precondition(reason, msg.clone()),
            Error::OpenTransferExists(name) => ApiError::new(
                Code::AlreadyExists,
                "OPEN_TRANSFER_EXISTS",
                format!("{name} is an open transfer of this case on this route from this agency"),
            )
            .with_metadata("transfer", name.clone()),
            Error::Config(detail) => ApiError::internal(&format!("configuration: {detail}")),
            Error::Corrupt(detail) => ApiError::internal(&format!("corrupt stored data: {detail}")),
            Error::Precondition(reason, msg) => ApiError::failed_precondition(reason, msg.clone()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.api().to_status()
    }
}

/// Router result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
