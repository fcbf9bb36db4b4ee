//! The service's errors: the kit's one error type ([`fengqiao_kit::Error`]), so the same
//! situation has the same stable reason in every service (catalogue: [`fengqiao_kit::Reason`]),
//! and the domain's rule errors mapped into it. Messages name fields, resources and codes,
//! never personal information.

use fengqiao_kit::{FieldViolation, Reason};

use crate::rules::RuleError;

pub use fengqiao_kit::error::{Error, Result};

impl From<RuleError> for Error {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::InvalidField { field, message } => {
                Error::Invalid(vec![FieldViolation::new(field, message)])
            }
            e => Error::Refused(e.reason(), e.to_string()),
        }
    }
}

/// Every bad field of the list, or the first rule that refuses.
pub fn rules(errs: Vec<RuleError>) -> Error {
    let mut violations = Vec::new();
    for e in errs {
        match e {
            RuleError::InvalidField { field, message } => {
                violations.push(FieldViolation::new(field, message));
            }
            e => return e.into(),
        }
    }
    Error::Invalid(violations)
}

/// The method is part of the contract but not built yet (`UNIMPLEMENTED` / `NOT_BUILT`).
pub fn not_built(what: &'static str) -> Error {
    Error::Refused(Reason::NotBuilt, format!("not built yet: {what}"))
}

/// Not yet possible; the caller (the router's delivery) tries again later
/// (`UNAVAILABLE` / `NOT_YET`).
pub fn not_yet(what: &'static str) -> Error {
    Error::Refused(Reason::NotYet, what.to_string())
}

/// A different case already has this pre-filing number in the court.
pub fn number_reused() -> Error {
    Error::Refused(
        Reason::PreFilingNumberReused,
        "a different case was already registered under this pre-filing number".into(),
    )
}
