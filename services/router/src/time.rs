//! Conversions between stored times (unix microseconds, database clock) and protobuf: the
//! kit's one conversion for every service (`fengqiao_kit::time`, tested there).

pub use fengqiao_kit::time::{from_timestamp, to_timestamp};
