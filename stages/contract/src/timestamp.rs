//! Result and DLQ timestamps: `2025-11-25T19:00:03.045406+00:00` (UTC, microseconds,
//! `+00:00`), as Python's `datetime.now(timezone.utc).isoformat()` writes them.

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Now, truncated to the microseconds the wire format carries.
    pub fn now() -> Self {
        Timestamp(Utc::now().trunc_subsecs(6))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// Any RFC 3339 time whose UTC year is 0000-9999: one that an offset moves out of
    /// those years (`9999-12-31T23:59:59-01:00`) could not be written back in RFC 3339.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = DateTime::parse_from_rfc3339(&s)
            .map_err(serde::de::Error::custom)?
            .with_timezone(&Utc);
        if !(0..=9999).contains(&t.year()) {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is outside the years 0000-9999 in UTC"
            )));
        }
        Ok(Timestamp(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Caught by the round trip of fuzz/fuzz_targets/frame_decoder.rs (input kept as
    /// fuzz/seeds/frame_decoder/regress-timestamp-year-10000): a result whose timestamp
    /// an offset moved into the year 10000 decoded, then was written back as
    /// `+10000-01-01T00:59:59.000000+00:00`, which is not RFC 3339 and did not decode.
    #[test]
    fn only_times_that_can_be_written_back_are_read() {
        for s in [
            "9999-12-31T23:59:59.000000-01:00",
            "0000-01-01T00:00:00+00:01",
        ] {
            let e = serde_json::from_str::<Timestamp>(&format!("\"{s}\"")).unwrap_err();
            assert!(e.to_string().contains("outside the years"), "{s}: {e}");
        }
        for s in [
            "9999-12-31T23:59:59.999999+00:00",
            "0000-01-01T00:00:00.000000+00:00",
            "2025-11-25T20:00:03.045406123+01:00",
        ] {
            let t: Timestamp = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            let written = serde_json::to_string(&t).unwrap();
            let again: Timestamp = serde_json::from_str(&written).unwrap();
            assert_eq!(serde_json::to_string(&again).unwrap(), written, "{s}");
        }
    }
}
