//! The mediation service's errors: the kit's one error type ([`fengqiao_kit::Error`]), so the
//! same situation has the same stable reason in every service (catalogue:
//! [`fengqiao_kit::Reason`]).

pub use fengqiao_kit::error::{Error, Result};
