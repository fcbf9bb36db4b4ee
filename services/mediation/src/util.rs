//! Small helpers shared by the roster and the cases: times, etags, actors, roles.

use fengqiao_kit::Identity;
use fengqiao_kit::Reason;

use crate::error::{Error, Result};

/// Role that may change the roster and act on cases (调解组织管理员).
pub const ROLE_ADMIN: &str = "mediation_admin";
/// Role that may act on cases (人民调解员).
pub const ROLE_MEDIATOR: &str = "mediator";

pub use fengqiao_kit::time::{from_timestamp, to_timestamp};

/// Seal contexts (`"<table>.<column>"`) of this service's bodies: cases and case-file entries
/// hold the parties and what they said, the route pins what the case reports, the roster holds
/// mediators' names; none is stored in the clear (PIPL Art 51, [`fengqiao_store::seal`]).
pub const CASES_BODY: &str = "mediation_cases.body";
/// See [`CASES_BODY`].
pub const CASES_ROUTE: &str = "mediation_cases.route";
/// See [`CASES_BODY`].
pub const ENTRIES_BODY: &str = "mediation_case_entries.body";
/// See [`CASES_BODY`].
pub const MEDIATORS_BODY: &str = "mediation_mediators.body";
/// See [`CASES_BODY`].
pub const ORGANIZATIONS_BODY: &str = "mediation_organizations.body";

/// Seals `m` for the column `ctx`.
pub fn sealed(ctx: &str, m: &impl prost::Message) -> Result<Vec<u8>> {
    fengqiao_kit::records::seal_message(ctx, m)
}

/// Opens and decodes what [`sealed`] wrote for `ctx`.
pub fn opened<M: prost::Message + Default>(ctx: &str, body: &[u8]) -> Result<M> {
    fengqiao_kit::records::open_message(ctx, body)
}

/// The etag of a row version.
pub fn etag(version: i64) -> String {
    fengqiao_kit::etag::etag(version)
}

/// Refuses a non-empty `given` etag that differs from the row's.
pub use fengqiao_kit::agency::check_etag;

/// Checks the caller holds `mediation_admin`.
pub fn require_admin(id: &Identity) -> Result<()> {
    fengqiao_kit::agency::need_role(id, ROLE_ADMIN, "changing the roster")
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

/// Checks a free-text field (the kit's one check).
pub use fengqiao_kit::agency::text;

/// `Err(Invalid)` when there are violations.
pub fn violations(v: Vec<fengqiao_kit::FieldViolation>) -> Result<()> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(v))
    }
}
