//! The one place where errors become `tonic::Status`.
//!
//! Every crate keeps its own error enum and converts it into an [`ApiError`]; [`ApiError`] turns
//! into a `Status` carrying `google.rpc.ErrorInfo` (a stable `reason`, always) and
//! `google.rpc.BadRequest` (the offending fields, for bad input). Messages must never contain
//! personal information: name the field, not its value.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every Fengqiao error.
pub const ERROR_DOMAIN: &str = "fengqiao";

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

/// A client-facing error: status code, stable reason, message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// gRPC status code.
    pub code: Code,
    /// Stable machine-readable reason (`UPPER_SNAKE_CASE`), e.g. `TRANSFER_WRONG_STATE`.
    pub reason: &'static str,
    /// Human-readable message, free of personal information.
    pub message: String,
    /// Offending fields, for `INVALID_ARGUMENT`.
    pub violations: Vec<FieldViolation>,
    /// Extra `ErrorInfo.metadata` (e.g. the current state of a resource).
    pub metadata: HashMap<String, String>,
}

impl ApiError {
    /// An error with `code`, `reason` and `message`.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            violations: Vec::new(),
            metadata: HashMap::new(),
        }
    }

    /// `INVALID_ARGUMENT` naming every bad field.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        let message = format!("invalid request: {}", fields.join(", "));
        Self {
            code: Code::InvalidArgument,
            reason: "INVALID_ARGUMENT",
            message,
            violations,
            metadata: HashMap::new(),
        }
    }

    /// `INVALID_ARGUMENT` for one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid(vec![FieldViolation::new(field, description)])
    }

    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }

    /// `PERMISSION_DENIED`.
    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }

    /// `FAILED_PRECONDITION`.
    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    /// `INTERNAL`, for faults of the server only. The detail is logged, not returned.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(Code::Internal, "INTERNAL", "internal error")
    }

    /// `UNAVAILABLE`: try again later.
    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// Adds an `ErrorInfo.metadata` entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The `tonic::Status` with `google.rpc` details.
    pub fn to_status(&self) -> Status {
        let mut details =
            ErrorDetails::with_error_info(self.reason, ERROR_DOMAIN, self.metadata.clone());
        if !self.violations.is_empty() {
            let v: Vec<tonic_types::FieldViolation> = self
                .violations
                .iter()
                .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect();
            details.set_bad_request(v);
        }
        Status::with_error_details(self.code, self.message.clone(), details)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

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
    fn every_status_has_error_info() {
        let s: Status = ApiError::failed_precondition("TRANSFER_WRONG_STATE", "transfer is DRAFT")
            .with_metadata("state", "DRAFT")
            .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let info = s.get_error_details().error_info().cloned();
        let info = info.expect("error info");
        assert_eq!(info.reason, "TRANSFER_WRONG_STATE");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("state").map(String::as_str),
            Some("DRAFT")
        );
    }
}
