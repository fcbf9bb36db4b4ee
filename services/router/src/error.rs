//! The router's errors: the kit's one error type ([`fengqiao_kit::Error`]), so the same
//! situation has the same stable reason in every service (catalogue: [`fengqiao_kit::Reason`]),
//! and the few constructors only the router needs.

use fengqiao_kit::{ApiError, Reason};

pub use fengqiao_kit::error::{Error, Result};

/// The clock asked for is not running (`CLOCK_NOT_RUNNING`).
pub fn clock_not_running(message: impl Into<String>) -> Error {
    Error::Refused(Reason::ClockNotRunning, message.into())
}

/// An open transfer of the same case on the same route from the same sender exists
/// (`OPEN_TRANSFER_EXISTS`, its name in `metadata["transfer"]`).
pub fn open_transfer_exists(name: String) -> Error {
    Error::Api(
        ApiError::new(
            Reason::OpenTransferExists,
            format!("{name} is an open transfer of this case on this route from this agency"),
        )
        .with_metadata("transfer", name),
    )
}

/// The router's policy data (routes, calendar) is invalid: a fault of its configuration.
pub fn config(detail: impl std::fmt::Display) -> Error {
    Error::Internal(format!("configuration: {detail}"))
}
