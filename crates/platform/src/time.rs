//! Conversions between `chrono` times and protobuf timestamps and durations.

use chrono::{DateTime, Utc};

pub fn to_timestamp(time: DateTime<Utc>) -> picket_proto::pbjson_types::Timestamp {
    picket_proto::pbjson_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

/// `None` for a timestamp out of chrono's range or with invalid nanoseconds.
pub fn from_timestamp(timestamp: &picket_proto::pbjson_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

pub fn to_duration(duration: std::time::Duration) -> picket_proto::pbjson_types::Duration {
    picket_proto::pbjson_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or_default(),
    }
}

/// `None` for a negative duration or one with invalid nanoseconds.
pub fn from_duration(
    duration: &picket_proto::pbjson_types::Duration,
) -> Option<std::time::Duration> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)?;
    Some(std::time::Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&to_timestamp(now)), Some(now));
    }

    #[test]
    fn durations_round_trip_and_negative_ones_are_refused() {
        let span = std::time::Duration::from_millis(90_500);
        assert_eq!(from_duration(&to_duration(span)), Some(span));
        let negative = picket_proto::pbjson_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(from_duration(&negative), None);
    }

    #[test]
    fn negative_nanos_are_refused() {
        assert_eq!(
            from_timestamp(&picket_proto::pbjson_types::Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }
}
