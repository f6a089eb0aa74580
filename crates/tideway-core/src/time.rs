//! Reading the instants that sources send.
//!
//! One parser for every loader: the collector reads `timestamp` and `sentAt` with it, the
//! normalizer uses [`parse_instant`] to decide whether a string is a timestamp.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Parses the ISO-8601 forms sources send: RFC 3339 with any fraction, `Z` or an offset (also
/// without a colon, `+0100`), a space instead of `T`, no zone (taken as UTC), or a date alone.
///
/// ```
/// use tideway_core::time::parse_time;
/// assert!(parse_time("2026-11-25T14:03:00.123Z").is_some());
/// assert!(parse_time("2026-11-25 14:03:00+0100").is_some());
/// assert!(parse_time("2026-11-25").is_some());
/// assert!(parse_time("yesterday").is_none());
/// ```
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Some(t) = parse_date_time(text) {
        return Some(t);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

/// Parses a date *and* time in the forms of [`parse_time`], without trimming; a date alone or
/// anything that is not shaped `YYYY-MM-DD?HH:MM` is `None`, cheaply. Type inference uses
/// this: a string becomes a timestamp only when it clearly is one.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let shaped = b.len() >= 16
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
        && b[..4].iter().all(u8::is_ascii_digit);
    if !shaped {
        return None;
    }
    parse_date_time(text)
}

/// A date and time in any of the forms of [`parse_time`] (chrono also takes signed, extended
/// years here).
fn parse_date_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Parses `"15m"`, `"1h"`, `"2 hours"`, `"1d"`, `"30 minutes"`, `"hourly"`, `"daily"`.
pub fn parse_interval(text: &str) -> Option<std::time::Duration> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "hourly" => return Some(std::time::Duration::from_secs(3600)),
        "daily" => return Some(std::time::Duration::from_secs(86_400)),
        "weekly" => return Some(std::time::Duration::from_secs(7 * 86_400)),
        _ => {}
    }
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok().filter(|&n| n > 0)?;
    let unit_secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(unit_secs).map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_need_a_date_and_a_time() {
        assert!(parse_instant("2025-06-01T10:00:00.000Z").is_some());
        assert!(parse_instant("2025-06-01 10:00:00").is_some());
        assert!(parse_instant("2025-06-01T10:00").is_some());
        assert!(parse_instant("2025-06-01").is_none());
        assert!(parse_instant("#123456").is_none());
        assert!(parse_instant("2025-06-01T99:00:00Z").is_none());
        assert_eq!(
            parse_instant("2025-06-01T12:00:00+02:00"),
            parse_instant("2025-06-01T10:00:00Z")
        );
    }
}
