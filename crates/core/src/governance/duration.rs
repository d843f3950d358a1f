//! Durations and calendar arithmetic for entitlement management.
//!
//! Graph carries durations as ISO 8601 text (`P7D`, `PT8H`, `P1DT12H`, `PT0S`); the Python SDK
//! serialises a `timedelta` the way Python prints it (`7 days, 0:00:00`), and both are read.
//!
//! The calendar part of a duration (years, months, weeks, days) is *nominal*: it is counted in
//! the policy's time zone, so "7 days from Monday 10:00" ends on the next Monday at 10:00 local
//! time even when the clocks change in between (that week is then 167 or 169 hours long). The
//! time part (hours, minutes, seconds) is exact. This is what ISO 8601 says about nominal and
//! exact durations, and what a person reading "a week" expects (`docs/governance.md`).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::time::Millis;

/// A parsed duration: its calendar part and its exact part, both non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Duration {
    pub years: i64,
    pub months: i64,
    pub weeks: i64,
    pub days: i64,
    /// Hours, minutes and seconds, in milliseconds.
    pub exact_ms: i64,
}

/// The longest duration accepted anywhere (a century): beyond it arithmetic would overflow the
/// calendar, and no access package lasts that long.
const MAX_DAYS: i64 = 36_600;

impl Duration {
    pub const ZERO: Duration = Duration { years: 0, months: 0, weeks: 0, days: 0, exact_ms: 0 };

    pub fn days(days: i64) -> Duration {
        Duration { days, ..Duration::ZERO }
    }

    pub fn hours(hours: i64) -> Duration {
        Duration { exact_ms: hours * 3_600_000, ..Duration::ZERO }
    }

    pub fn is_zero(&self) -> bool {
        *self == Duration::ZERO
    }

    /// Parses ISO 8601 (`P1Y2M3W4DT5H6M7.5S`, any subset, case-insensitive) or Python's
    /// `timedelta` text (`7 days, 0:00:00`, `1 day, 2:30:00`, `8:00:00`).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let d = if t.starts_with(['P', 'p']) { parse_iso(t) } else { parse_python(t) }.ok_or_else(
            || {
                format!(
                    "`{text}` is not an ISO 8601 duration (for example `P7D`, `PT8H` or `P1DT12H`)"
                )
            },
        )?;
        if d.approx_days() > MAX_DAYS {
            return Err(format!("`{text}` is longer than {MAX_DAYS} days"));
        }
        Ok(d)
    }

    /// Roughly how many days this lasts (months as 31 days, years as 366): for bounds checks.
    pub fn approx_days(&self) -> i64 {
        self.years * 366
            + self.months * 31
            + self.weeks * 7
            + self.days
            + self.exact_ms / 86_400_000
    }

    /// At least this long, in milliseconds (months as 28 days, years as 365, days as 23 hours):
    /// for "is this longer than an hour" checks that must not depend on the calendar.
    pub fn min_ms(&self) -> i64 {
        let nominal_days = self.years * 365 + self.months * 28 + self.weeks * 7 + self.days;
        nominal_days * 23 * 3_600_000 + self.exact_ms
    }

    /// The usual length in milliseconds (days of 24 hours, months of 30 days, years of 365):
    /// for comparing two durations, never for computing an instant.
    pub fn nominal_ms(&self) -> i64 {
        let days = self.years * 365 + self.months * 30 + self.weeks * 7 + self.days;
        days * 86_400_000 + self.exact_ms
    }

    /// The ISO 8601 text Graph emits (`P7D`, `PT8H`, `PT0S`).
    pub fn to_iso(&self) -> String {
        if self.is_zero() {
            return "PT0S".into();
        }
        let mut out = String::from("P");
        for (n, unit) in
            [(self.years, 'Y'), (self.months, 'M'), (self.weeks, 'W'), (self.days, 'D')]
        {
            if n != 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
        if self.exact_ms != 0 {
            out.push('T');
            let (h, rest) = (self.exact_ms / 3_600_000, self.exact_ms % 3_600_000);
            let (m, rest) = (rest / 60_000, rest % 60_000);
            if h != 0 {
                out.push_str(&format!("{h}H"));
            }
            if m != 0 {
                out.push_str(&format!("{m}M"));
            }
            if rest != 0 {
                if rest % 1000 == 0 {
                    out.push_str(&format!("{}S", rest / 1000));
                } else {
                    out.push_str(&format!("{}.{:03}S", rest / 1000, rest % 1000));
                }
            }
        }
        out
    }

    /// `start + self`, the calendar part counted in `zone`.
    pub fn after(&self, start: Millis, zone: &Zone) -> Option<Millis> {
        let zoned = Timestamp::from_millisecond(start).ok()?.to_zoned_datetime(zone.tz.clone());
        let calendar = Span::new()
            .try_years(self.years)
            .ok()?
            .try_months(self.months)
            .ok()?
            .try_weeks(self.weeks)
            .ok()?
            .try_days(self.days)
            .ok()?;
        let moved = zoned.checked_add(calendar).ok()?;
        let exact = Span::new().try_milliseconds(self.exact_ms).ok()?;
        Some(moved.checked_add(exact).ok()?.timestamp().as_millisecond())
    }

    /// `end - self`, the calendar part counted in `zone` (reminders before an end).
    pub fn before(&self, end: Millis, zone: &Zone) -> Option<Millis> {
        let zoned = Timestamp::from_millisecond(end).ok()?.to_zoned_datetime(zone.tz.clone());
        let exact = Span::new().try_milliseconds(-self.exact_ms).ok()?;
        let moved = zoned.checked_add(exact).ok()?;
        let calendar = Span::new()
            .try_years(-self.years)
            .ok()?
            .try_months(-self.months)
            .ok()?
            .try_weeks(-self.weeks)
            .ok()?
            .try_days(-self.days)
            .ok()?;
        Some(moved.checked_add(calendar).ok()?.timestamp().as_millisecond())
    }
}

fn parse_iso(t: &str) -> Option<Duration> {
    let upper = t.to_ascii_uppercase();
    let body = upper.strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (body, None),
    };
    let mut d = Duration::ZERO;
    let mut any = false;
    for (n, unit) in fields(date)? {
        if n.contains('.') {
            return None;
        }
        let n: i64 = n.parse().ok()?;
        match unit {
            'Y' => d.years = n,
            'M' => d.months = n,
            'W' => d.weeks = n,
            'D' => d.days = n,
            _ => return None,
        }
        any = true;
    }
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        for (n, unit) in fields(time)? {
            let ms = match unit {
                'H' if !n.contains('.') => n.parse::<i64>().ok()?.checked_mul(3_600_000)?,
                'M' if !n.contains('.') => n.parse::<i64>().ok()?.checked_mul(60_000)?,
                'S' => seconds_ms(n)?,
                _ => return None,
            };
            d.exact_ms = d.exact_ms.checked_add(ms)?;
            any = true;
        }
    }
    any.then_some(d)
}

/// `12H30M` as [("12", 'H'), ("30", 'M')], each unit at most once, in order.
fn fields(s: &str) -> Option<Vec<(&str, char)>> {
    let mut out: Vec<(&str, char)> = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_digit() || c == '.' {
            continue;
        }
        let n = s.get(start..i)?;
        if n.is_empty() || out.iter().any(|(_, u)| *u == c) || n.len() > 12 {
            return None;
        }
        out.push((n, c));
        start = i + c.len_utf8();
    }
    (start == s.len()).then_some(out)
}

/// `7.5` seconds as 7500 ms (at most millisecond precision is kept).
fn seconds_ms(n: &str) -> Option<i64> {
    let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
    if whole.is_empty() || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut ms = whole.parse::<i64>().ok()?.checked_mul(1000)?;
    let frac3: String = frac.chars().chain("000".chars()).take(3).collect();
    ms += frac3.parse::<i64>().ok()?;
    Some(ms)
}

/// Python's `str(timedelta)`: `[D day[s], ]H:MM:SS[.ffffff]`.
fn parse_python(t: &str) -> Option<Duration> {
    let (days, clock) = match t.split_once(',') {
        Some((d, c)) => {
            let d = d.trim();
            let n = d.strip_suffix("days").or_else(|| d.strip_suffix("day"))?.trim();
            (n.parse::<i64>().ok()?, c.trim())
        }
        None => (0, t),
    };
    if days < 0 {
        return None;
    }
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || m.len() != 2 {
        return None;
    }
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    let s = seconds_ms(s)?;
    if !(0..60).contains(&m) || !(0..60_000).contains(&s) || h < 0 {
        return None;
    }
    Some(Duration { days, exact_ms: h * 3_600_000 + m * 60_000 + s, ..Duration::ZERO })
}

/// A time zone from the IANA database (bundled into the binary, so every node agrees).
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone { name: "UTC".into(), tz: TimeZone::UTC }
    }

    /// `Europe/London`, `America/New_York`, `UTC`…
    pub fn named(name: &str) -> Result<Zone, String> {
        let tz = TimeZone::get(name.trim()).map_err(|_| {
            format!(
                "`{name}` is not a time zone of the IANA database (for example `Europe/London`)"
            )
        })?;
        Ok(Zone { name: name.trim().to_owned(), tz })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads a Graph date-time the way a person means it in this zone:
    /// - with an offset or `Z` (`2026-07-31T17:00:00+02:00`): that instant;
    /// - a local date-time without offset (`2026-07-31T17:00:00`): that wall-clock time here;
    /// - a date alone (`2026-07-31`, "expires on 31 July"): the end of that day here, i.e. the
    ///   next midnight, so the whole day is included.
    ///
    /// A wall-clock time that does not exist (skipped by a spring-forward) is moved forward by
    /// the gap; one that happens twice (autumn) is the first of the two.
    pub fn instant(&self, text: &str) -> Option<Millis> {
        let text = text.trim();
        if let Some(ms) = crate::time::parse(text).filter(|_| text.len() != 10) {
            return Some(ms);
        }
        if text.len() == 10 {
            let date: Date = text.parse().ok()?;
            let next = date.tomorrow().ok()?;
            let zoned = next.to_zoned_datetime(self.tz.clone()).ok()?;
            return Some(zoned.timestamp().as_millisecond());
        }
        let local: DateTime = text.parse().ok()?;
        let zoned = local.to_zoned_datetime(self.tz.clone()).ok()?;
        Some(zoned.timestamp().as_millisecond())
    }

    /// The local wall-clock reading of an instant (for messages: "until 31 July 2026, 17:00").
    pub fn local_text(&self, ms: Millis) -> String {
        match Timestamp::from_millisecond(ms) {
            Ok(ts) => {
                let z = ts.to_zoned_datetime(self.tz.clone());
                let dt = z.datetime();
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02} ({})",
                    dt.year(),
                    dt.month(),
                    dt.day(),
                    dt.hour(),
                    dt.minute(),
                    self.name
                )
            }
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse as at;

    #[test]
    fn iso_forms_round_trip() {
        for (text, iso) in [
            ("P7D", "P7D"),
            ("pt8h", "PT8H"),
            ("P1DT12H", "P1DT12H"),
            ("PT0S", "PT0S"),
            ("P2W", "P2W"),
            ("PT90M", "PT1H30M"),
            ("PT1.5S", "PT1.500S"),
            ("P1Y2M", "P1Y2M"),
        ] {
            assert_eq!(Duration::parse(text).unwrap().to_iso(), iso, "{text}");
        }
    }

    #[test]
    fn python_timedelta_text_is_read() {
        assert_eq!(Duration::parse("14 days, 0:00:00").unwrap(), Duration::days(14));
        assert_eq!(Duration::parse("1 day, 2:30:00").unwrap().to_iso(), "P1DT2H30M");
        assert_eq!(Duration::parse("8:00:00").unwrap(), Duration::hours(8));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in
            ["", "P", "PT", "7D", "P7", "P1.5D", "PT1H1H", "P-1D", "days", "1:2:3", "P99999999D"]
        {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_are_calendar_days_across_daylight_saving() {
        let london = Zone::named("Europe/London").unwrap();
        // Clocks go forward on Sunday 29 March 2026 at 01:00 GMT.
        let start = at("2026-03-25T10:00:00Z").unwrap(); // 10:00 GMT
        let end = Duration::days(7).after(start, &london).unwrap();
        assert_eq!(end, at("2026-04-01T09:00:00Z").unwrap()); // 10:00 BST
        assert_eq!(end - start, 167 * 3_600_000);
        // Hours are exact.
        assert_eq!(Duration::hours(168).after(start, &london).unwrap() - start, 168 * 3_600_000);
        // Back again: 1 day before an end is the same wall-clock time the day before.
        assert_eq!(Duration::days(7).before(end, &london).unwrap(), start);
        // And in UTC a day is 24 hours.
        assert_eq!(Duration::days(7).after(start, &Zone::utc()).unwrap() - start, 168 * 3_600_000);
    }

    #[test]
    fn a_date_alone_means_the_end_of_that_day_in_the_zone() {
        let london = Zone::named("Europe/London").unwrap();
        // "Expires on 31 July": midnight at the start of 1 August, British Summer Time.
        assert_eq!(london.instant("2026-07-31"), at("2026-07-31T23:00:00Z"));
        // In winter London is on GMT.
        assert_eq!(london.instant("2026-12-31"), at("2027-01-01T00:00:00Z"));
        // A local time without offset is read in the zone; one with an offset is that instant.
        assert_eq!(london.instant("2026-07-31T17:00:00"), at("2026-07-31T16:00:00Z"));
        assert_eq!(london.instant("2026-07-31T17:00:00Z"), at("2026-07-31T17:00:00Z"));
        let paris = Zone::named("Europe/Paris").unwrap();
        assert_eq!(paris.instant("2026-07-31"), at("2026-07-31T22:00:00Z"));
        assert!(Zone::named("Mars/Olympus_Mons").is_err());
    }

    #[test]
    fn a_skipped_wall_clock_time_moves_forward() {
        let london = Zone::named("Europe/London").unwrap();
        // 01:30 on 29 March 2026 does not exist in London.
        assert_eq!(london.instant("2026-03-29T01:30:00"), at("2026-03-29T01:30:00Z"));
    }
}
