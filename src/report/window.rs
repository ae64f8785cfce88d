//! The report's window from the command line: `--since` and `--until` as a
//! date (`2026-11-30`, a day in the report's time zone) or an RFC 3339
//! instant (`2026-11-30T09:00:00Z`, `2026-11-30T09:00:00-05:00`), and the
//! time zone by IANA name.
//!
//! `--since` is inclusive and `--until` exclusive; a date given to
//! `--until` means the end of that day (the next midnight), so
//! `--since 2026-11-30 --until 2026-11-30` is the whole of that one day.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// A `--since`, `--until` or `--tz` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("--{flag} {value:?}: expected a date (2026-11-30) or an RFC 3339 instant (2026-11-30T09:00:00Z)")]
    Bound { flag: &'static str, value: String },
    #[error("--{flag} {value:?}: that day has no such time in {zone}")]
    NoSuchDay { flag: &'static str, value: String, zone: String },
    #[error("--tz {0:?}: not a time zone this build knows (an IANA name like America/New_York, or UTC)")]
    Zone(String),
    #[error("--since {since} is not before --until {until}: the window is empty")]
    Empty { since: String, until: String },
}

/// Which end of the window a bound is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Since,
    Until,
}

impl End {
    fn flag(self) -> &'static str {
        match self {
            End::Since => "since",
            End::Until => "until",
        }
    }
}

/// The instant a `--since` or `--until` value names, dates read in `tz`.
pub fn parse_bound(value: &str, end: End, tz: &TimeZone) -> Result<Timestamp, WindowError> {
    let value = value.trim();
    if let Ok(t) = value.parse::<Timestamp>() {
        return Ok(t);
    }
    let bad = || WindowError::Bound { flag: end.flag(), value: value.to_string() };
    let date: Date = value.parse().map_err(|_| bad())?;
    let day = match end {
        End::Since => date,
        End::Until => date.tomorrow().map_err(|_| bad())?,
    };
    // The first instant of the day in the zone (midnight, or the end of a DST gap at midnight).
    day.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|_| WindowError::NoSuchDay {
        flag: end.flag(),
        value: value.to_string(),
        zone: super::zone_name(tz),
    })
}

/// The zone named by `--tz`, or the system's own without it.
pub fn zone(name: Option<&str>) -> Result<TimeZone, WindowError> {
    match name {
        None => Ok(TimeZone::system()),
        Some(n) if n.eq_ignore_ascii_case("utc") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| WindowError::Zone(n.to_string())),
    }
}

/// Both bounds, checked to leave a window.
pub fn window(
    since: Option<&str>,
    until: Option<&str>,
    tz: &TimeZone,
) -> Result<(Option<Timestamp>, Option<Timestamp>), WindowError> {
    let since = since.map(|s| parse_bound(s, End::Since, tz)).transpose()?;
    let until = until.map(|u| parse_bound(u, End::Until, tz)).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(WindowError::Empty { since: s.to_string(), until: u.to_string() });
    }
    Ok((since, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    #[test]
    fn a_date_is_a_day_in_the_zone_and_until_takes_the_whole_day() {
        let tz = ny();
        assert_eq!(parse_bound("2026-11-30", End::Since, &tz).unwrap().to_string(), "2026-11-30T05:00:00Z");
        assert_eq!(parse_bound("2026-11-30", End::Until, &tz).unwrap().to_string(), "2026-12-01T05:00:00Z");
        // Summer time: the offset is -4.
        assert_eq!(parse_bound("2026-07-01", End::Since, &tz).unwrap().to_string(), "2026-07-01T04:00:00Z");
        // The day DST ends (2026-11-01) is 25 hours long.
        let (s, u) = window(Some("2026-11-01"), Some("2026-11-01"), &tz).unwrap();
        assert_eq!(u.unwrap().duration_since(s.unwrap()).as_hours(), 25);
    }

    #[test]
    fn an_instant_is_taken_as_given() {
        let tz = ny();
        assert_eq!(parse_bound("2026-11-30T09:00:00Z", End::Until, &tz).unwrap().to_string(), "2026-11-30T09:00:00Z");
        assert_eq!(
            parse_bound("2026-11-30T09:00:00+01:00", End::Since, &tz).unwrap().to_string(),
            "2026-11-30T08:00:00Z"
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let tz = TimeZone::UTC;
        let e = parse_bound("yesterday", End::Since, &tz).unwrap_err();
        assert_eq!(e, WindowError::Bound { flag: "since", value: "yesterday".into() });
        assert!(e.to_string().contains("--since \"yesterday\": expected a date (2026-11-30)"), "{e}");
        assert!(parse_bound("2026-13-01", End::Until, &tz).is_err());
        assert!(matches!(zone(Some("Mars/Olympus")), Err(WindowError::Zone(_))));
        assert_eq!(zone(Some("utc")).unwrap(), TimeZone::UTC);
        assert!(matches!(window(Some("2026-11-30"), Some("2026-11-29"), &tz), Err(WindowError::Empty { .. })));
    }
}
