//! Instants are Unix milliseconds (`i64`) everywhere inside Gatehouse; text appears only at the
//! Graph boundary, as `DateTimeOffset` strings.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub const MINUTE: Millis = 60_000;

/// `2025-02-28T17:12:03Z`, or with milliseconds when they are not zero.
pub fn format(ms: Millis) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    let frac = ms.rem_euclid(1000);
    if frac == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

/// Parses a Graph `DateTimeOffset`: `Z` or a numeric offset (the Python SDK sends `+00:00`),
/// fractions of up to 9 digits (Graph emits 7). A date alone means midnight UTC.
pub fn parse(text: &str) -> Option<Millis> {
    let text = text.trim();
    let t = if text.len() == 10 {
        OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339).ok()?
    } else {
        OffsetDateTime::parse(text, &Rfc3339).ok()?
    };
    let t = t.to_offset(UtcOffset::UTC);
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_sdk_forms() {
        let ms = parse("2025-02-28T17:12:03Z").unwrap();
        assert_eq!(format(ms), "2025-02-28T17:12:03Z");
        assert_eq!(parse("2025-02-28T17:12:03+00:00"), Some(ms));
        assert_eq!(parse("2025-02-28T18:12:03+01:00"), Some(ms));
        assert_eq!(parse("2025-02-28T17:12:03.3404527Z"), Some(ms + 340));
        assert_eq!(format(ms + 5), "2025-02-28T17:12:03.005Z");
        assert_eq!(parse("2025-02-28"), parse("2025-02-28T00:00:00Z"));
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("2025-02-30T00:00:00Z"), None);
    }
}
