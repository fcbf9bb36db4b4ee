//! Times as the suite stores them (unix microseconds read from the database's clock) and as the
//! contracts carry them (`google.protobuf.Timestamp`): one conversion for every service.

use crate::error::FieldViolation;

/// Earliest instant a request may name: 0001-01-01T00:00:00Z (the range of
/// `google.protobuf.Timestamp`).
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// Latest instant a request may name: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A protobuf timestamp from unix microseconds.
pub fn to_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Unix microseconds from a protobuf timestamp the server made itself (saturating).
pub fn from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos) / 1000)
}

/// Unix microseconds from a timestamp a client sent, refused with the field named when it is
/// outside the range the contracts allow (0001-01-01 to 9999-12-31, nanos in `0..1e9`).
pub fn parse_timestamp(field: &str, ts: &prost_types::Timestamp) -> Result<i64, FieldViolation> {
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds)
        || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(FieldViolation::new(
            field,
            "must be a timestamp between 0001-01-01 and 9999-12-31",
        ));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for m in [0, 1, 1_700_000_000_123_456, -1, -1_500_000] {
            assert_eq!(from_timestamp(&to_timestamp(m)), m);
            assert_eq!(parse_timestamp("t", &to_timestamp(m)).ok(), Some(m));
        }
    }

    #[test]
    fn client_timestamps_out_of_range_are_refused() {
        let bad = [
            prost_types::Timestamp {
                seconds: MAX_TIMESTAMP_SECONDS + 1,
                nanos: 0,
            },
            prost_types::Timestamp {
                seconds: MIN_TIMESTAMP_SECONDS - 1,
                nanos: 0,
            },
            prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            },
            prost_types::Timestamp {
                seconds: 0,
                nanos: 1_000_000_000,
            },
        ];
        for ts in bad {
            let e = parse_timestamp("filter.after", &ts).expect_err("out of range");
            assert_eq!(e.field, "filter.after");
        }
        assert!(
            parse_timestamp(
                "t",
                &prost_types::Timestamp {
                    seconds: MAX_TIMESTAMP_SECONDS,
                    nanos: 999_999_999
                }
            )
            .is_ok()
        );
    }
}
