//! Conversions between stored times (unix microseconds, database clock) and protobuf.

/// A protobuf timestamp from unix microseconds.
pub fn to_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Unix microseconds from a protobuf timestamp.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for m in [0, 1, 1_700_000_000_123_456, -1, -1_500_000] {
            assert_eq!(from_timestamp(&to_timestamp(m)), m);
        }
    }
}
