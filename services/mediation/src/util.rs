//! Small helpers shared by the roster and the cases: times, etags, actors, roles.

use fengqiao_kit::Identity;
use fengqiao_kit::Reason;

use crate::error::{Error, Result};

/// Role that may change the roster and act on cases (调解组织管理员).
pub const ROLE_ADMIN: &str = "mediation_admin";
/// Role that may act on cases (人民调解员).
pub const ROLE_MEDIATOR: &str = "mediator";

pub use fengqiao_kit::time::{from_timestamp, to_timestamp};

/// The etag of a row version.
pub fn etag(version: i64) -> String {
    fengqiao_kit::etag::etag(version)
}

/// Refuses a non-empty `given` etag that differs from the row's.
pub fn check_etag(resource: &str, given: &str, version: i64) -> Result<()> {
    if !given.is_empty() && !fengqiao_kit::etag::matches(given, version) {
        return Err(Error::EtagMismatch(resource.to_string()));
    }
    Ok(())
}

/// Checks the caller holds `mediation_admin`.
pub fn require_admin(id: &Identity) -> Result<()> {
    if id.has_role(ROLE_ADMIN) {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("changing the roster needs the role {ROLE_ADMIN}"),
        ))
    }
}

/// Checks the caller holds `mediator` or `mediation_admin`.
pub fn require_case_role(id: &Identity) -> Result<()> {
    if id.has_role(ROLE_MEDIATOR) || id.has_role(ROLE_ADMIN) {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::RoleRequired,
            format!("acting on a mediation case needs the role {ROLE_MEDIATOR} or {ROLE_ADMIN}"),
        ))
    }
}

/// Checks a required free-text field: non-empty and at most `max` characters.
pub fn text(
    v: &mut Vec<fengqiao_kit::FieldViolation>,
    field: &str,
    value: &str,
    required: bool,
    max: usize,
) {
    let n = value.chars().count();
    if required && value.trim().is_empty() {
        v.push(fengqiao_kit::FieldViolation::new(field, "is required"));
    } else if n > max {
        v.push(fengqiao_kit::FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

/// `Err(Invalid)` when there are violations.
pub fn violations(v: Vec<fengqiao_kit::FieldViolation>) -> Result<()> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(v))
    }
}
