//! The one time format Warden writes: RFC 3339, UTC, millisecond precision
//! (`2026-12-02T19:01:47.123Z`), in the API, exports, CSV files, webhook payloads and the CLI's
//! JSON. The audit chain hashes times as unix milliseconds, so every written time is exactly
//! what the chain recorded. Readers accept any RFC 3339 time (other offsets, other precisions).
//!
//! Pure: formatting and parsing only; this module never reads a clock.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `t` in UTC, truncated to milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses any RFC 3339 time.
pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

/// `#[serde(with = "warden_core::timefmt::rfc3339_ms")]`.
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<OffsetDateTime>` (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&crate::timefmt::format(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => crate::timefmt::parse(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_utc_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_764_702_107_123_456_789).unwrap();
        assert_eq!(format(t), "2025-12-02T19:01:47.123Z");
        let whole = OffsetDateTime::from_unix_timestamp(1_764_702_107).unwrap();
        assert_eq!(format(whole), "2025-12-02T19:01:47.000Z");
        let east = whole.to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(format(east), "2025-12-02T19:01:47.000Z");
        assert_eq!(
            parse("2025-12-02T21:01:47.5+02:00").unwrap().millisecond(),
            500
        );
    }

    #[test]
    fn serde_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct X {
            #[serde(with = "rfc3339_ms")]
            a: OffsetDateTime,
            #[serde(with = "rfc3339_ms::option")]
            b: Option<OffsetDateTime>,
        }
        let a = OffsetDateTime::from_unix_timestamp_nanos(1_764_702_107_123_000_000).unwrap();
        let x = X { a, b: None };
        let text = serde_json::to_string(&x).unwrap();
        assert_eq!(text, r#"{"a":"2025-12-02T19:01:47.123Z","b":null}"#);
        assert_eq!(serde_json::from_str::<X>(&text).unwrap(), x);
    }
}
