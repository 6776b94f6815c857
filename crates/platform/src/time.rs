//! Conversions between `chrono` times and protobuf timestamps.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&to_timestamp(now)), Some(now));
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
