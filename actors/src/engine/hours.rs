//! Business hours: checking a weekly schedule when it is saved, and telling whether an instant
//! falls inside it in the schedule's own time zone.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::model::BusinessHours;

/// The weekly schedule's day keys, Monday first.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// Minutes in a day: the end of an interval that closes at `24:00`.
const MINUTES_PER_DAY: u32 = 24 * 60;

/// Why a schedule cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HoursError {
    /// The offending field, e.g. `business_hours.weekly.mon[0]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl HoursError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Validates a schedule: the time zone is an IANA name chrono-tz knows, the weekly keys are
/// `mon` … `sun`, and each interval is `["HH:MM", "HH:MM"]` with `00:00 ≤ start < end ≤ 24:00`.
pub fn validate(hours: &BusinessHours) -> Result<(), HoursError> {
    if hours.timezone.parse::<Tz>().is_err() {
        return Err(HoursError::new(
            "business_hours.timezone",
            format!("unknown time zone {:?}; use an IANA name such as \"Europe/Berlin\"", hours.timezone),
        ));
    }
    for (day, intervals) in &hours.weekly {
        if !DAYS.contains(&day.as_str()) {
            return Err(HoursError::new(
                format!("business_hours.weekly.{day}"),
                "day must be one of mon, tue, wed, thu, fri, sat, sun",
            ));
        }
        for (index, interval) in intervals.iter().enumerate() {
            let field = format!("business_hours.weekly.{day}[{index}]");
            let (start, end) = interval_minutes(interval).map_err(|message| HoursError::new(&field, message))?;
            if start >= end {
                return Err(HoursError::new(
                    field,
                    format!("opening {} must be before closing {}", interval[0], interval[1]),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `now` falls inside an opening interval, read in the schedule's local time. Days not
/// listed are closed; an interval includes its start and excludes its end. An unknown time zone
/// (which [`validate`] refuses) counts as UTC, and malformed intervals are ignored.
pub fn is_open(hours: &BusinessHours, now: DateTime<Utc>) -> bool {
    let tz: Tz = hours.timezone.parse().unwrap_or(Tz::UTC);
    let local = now.with_timezone(&tz);
    let Some(intervals) = hours.weekly.get(day_key(local.weekday())) else {
        return false;
    };
    let minute = local.hour() * 60 + local.minute();
    intervals
        .iter()
        .filter_map(|interval| interval_minutes(interval).ok())
        .any(|(start, end)| start <= minute && minute < end)
}

fn day_key(day: Weekday) -> &'static str {
    DAYS[day.num_days_from_monday() as usize]
}

/// An interval's start and end as minutes since midnight; `24:00` is allowed only as the end.
fn interval_minutes(interval: &[String; 2]) -> Result<(u32, u32), String> {
    let start = clock_minutes(&interval[0]).ok_or_else(|| format!("opening {:?} is not a time HH:MM", interval[0]))?;
    if start >= MINUTES_PER_DAY {
        return Err(format!("opening {:?} must be before 24:00", interval[0]));
    }
    let end = clock_minutes(&interval[1]).ok_or_else(|| format!("closing {:?} is not a time HH:MM", interval[1]))?;
    Ok((start, end))
}

/// `HH:MM` (two digits each, `00:00` to `24:00`) as minutes since midnight.
fn clock_minutes(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let two_digits = |part: &str| -> Option<u32> {
        if part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (hours, minutes) = (two_digits(hours)?, two_digits(minutes)?);
    let total = hours * 60 + minutes;
    (minutes < 60 && total <= MINUTES_PER_DAY).then_some(total)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;

    fn schedule(timezone: &str, days: &[(&str, &[(&str, &str)])]) -> BusinessHours {
        let weekly: BTreeMap<String, Vec<[String; 2]>> = days
            .iter()
            .map(|(day, intervals)| {
                (day.to_string(), intervals.iter().map(|(a, b)| [a.to_string(), b.to_string()]).collect())
            })
            .collect();
        BusinessHours { timezone: timezone.into(), weekly, ..BusinessHours::default() }
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn berlin_weekdays() -> BusinessHours {
        let day: &[(&str, &str)] = &[("09:00", "18:00")];
        schedule("Europe/Berlin", &[("mon", day), ("tue", day), ("wed", day), ("thu", day), ("fri", day)])
    }

    #[test]
    fn a_monday_in_berlin_winter_opens_at_nine_and_closes_at_six() {
        let hours = berlin_weekdays();
        // 2024-01-08 is a Monday; Berlin is UTC+1.
        assert!(!is_open(&hours, utc(2024, 1, 8, 7, 59)), "08:59 local");
        assert!(is_open(&hours, utc(2024, 1, 8, 8, 0)), "09:00 local");
        assert!(is_open(&hours, utc(2024, 1, 8, 16, 59)), "17:59 local");
        assert!(!is_open(&hours, utc(2024, 1, 8, 17, 0)), "18:00 local");
    }

    #[test]
    fn summer_time_shifts_the_utc_opening_by_an_hour() {
        let hours = berlin_weekdays();
        // 2024-07-08 is a Monday; Berlin is UTC+2.
        assert!(!is_open(&hours, utc(2024, 7, 8, 6, 59)), "08:59 local");
        assert!(is_open(&hours, utc(2024, 7, 8, 7, 0)), "09:00 local");
        assert!(!is_open(&hours, utc(2024, 7, 8, 16, 0)), "18:00 local");
    }

    #[test]
    fn the_day_after_the_dst_switch_uses_summer_time() {
        let hours = berlin_weekdays();
        // Clocks went forward on Sunday 2024-03-31; Monday 2024-04-01 is UTC+2.
        assert!(is_open(&hours, utc(2024, 4, 1, 7, 0)), "09:00 local");
        assert!(!is_open(&hours, utc(2024, 3, 31, 8, 0)), "Sunday is closed");
        // The Friday before was still winter time.
        assert!(!is_open(&hours, utc(2024, 3, 29, 7, 30)), "08:30 local");
        assert!(is_open(&hours, utc(2024, 3, 29, 8, 0)), "09:00 local");
    }

    #[test]
    fn the_local_day_decides_which_intervals_apply() {
        let hours = schedule("Europe/Berlin", &[("mon", &[("00:00", "02:00")])]);
        // Sunday 23:30 UTC is Monday 01:30 in Berlin summer time.
        assert!(is_open(&hours, utc(2024, 7, 7, 23, 30)));
        assert!(!is_open(&hours, utc(2024, 7, 8, 0, 0)), "02:00 local is closed");
    }

    #[test]
    fn an_interval_may_end_at_midnight() {
        let hours = schedule("UTC", &[("sat", &[("20:00", "24:00")])]);
        validate(&hours).unwrap();
        // 2024-01-06 is a Saturday.
        assert!(is_open(&hours, utc(2024, 1, 6, 23, 59)));
        assert!(!is_open(&hours, utc(2024, 1, 7, 0, 0)), "Sunday is not listed");
        assert!(!is_open(&hours, utc(2024, 1, 6, 19, 59)));
    }

    #[test]
    fn several_intervals_a_day() {
        let hours = schedule("UTC", &[("mon", &[("09:00", "12:00"), ("13:00", "17:00")])]);
        assert!(is_open(&hours, utc(2024, 1, 8, 11, 0)));
        assert!(!is_open(&hours, utc(2024, 1, 8, 12, 30)));
        assert!(is_open(&hours, utc(2024, 1, 8, 13, 0)));
    }

    #[test]
    fn an_unknown_time_zone_counts_as_utc() {
        let hours = schedule("Mars/Olympus", &[("mon", &[("09:00", "10:00")])]);
        assert!(is_open(&hours, utc(2024, 1, 8, 9, 30)));
    }

    #[test]
    fn validate_accepts_a_good_schedule_and_the_default() {
        validate(&berlin_weekdays()).unwrap();
        validate(&BusinessHours::default()).unwrap();
    }

    #[test]
    fn validate_refuses_an_unknown_time_zone() {
        let err = validate(&schedule("Europe/Atlantis", &[])).unwrap_err();
        assert_eq!(err.field, "business_hours.timezone");
    }

    #[test]
    fn validate_refuses_an_unknown_day() {
        let err = validate(&schedule("UTC", &[("monday", &[("09:00", "10:00")])])).unwrap_err();
        assert_eq!(err.field, "business_hours.weekly.monday");
    }

    #[test]
    fn validate_refuses_bad_intervals() {
        let cases: &[(&str, &str)] = &[
            ("9:00", "10:00"),
            ("09:00", "10:60"),
            ("24:00", "24:00"),
            ("10:00", "09:00"),
            ("10:00", "10:00"),
            ("09:00", "24:01"),
            ("ab:cd", "10:00"),
            ("", ""),
            ("+1:00", "10:00"),
        ];
        for &(start, end) in cases {
            let hours = schedule("UTC", &[("tue", &[("08:00", "09:00"), (start, end)])]);
            let err = validate(&hours).expect_err(&format!("{start}-{end} must be refused"));
            assert_eq!(err.field, "business_hours.weekly.tue[1]", "{start}-{end}");
        }
    }

    #[test]
    fn errors_read_field_then_message() {
        let err = validate(&schedule("UTC", &[("wed", &[("10:00", "09:00")])])).unwrap_err();
        assert_eq!(err.to_string(), "business_hours.weekly.wed[0]: opening 10:00 must be before closing 09:00");
    }
}
