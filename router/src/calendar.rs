//! Business hours and holidays of a queue, evaluated on `now` read as Unix milliseconds (UTC).

use std::collections::HashSet;

use crate::{Millis, RouterError};

const MINUTES_PER_DAY: i64 = 1440;

/// When a queue takes new tasks. Empty hours and no holidays: always open.
#[derive(Debug, Clone, Default)]
pub(crate) struct Calendar {
    /// Half-open minute-of-week ranges in local time (Monday 00:00 = 0).
    ranges: Vec<(u32, u32)>,
    /// Local days (since 1970-01-01) on which the queue is closed.
    holidays: HashSet<i64>,
    /// Local time minus UTC, in minutes.
    offset_minutes: i64,
}

impl Calendar {
    /// Builds the calendar from the queue's configured lines.
    pub(crate) fn new(
        hours: &[String],
        holidays: &[String],
        offset_minutes: i32,
    ) -> Result<Self, RouterError> {
        let mut ranges = Vec::new();
        for line in hours {
            ranges.extend(omnigate_config::parse_hours(line).map_err(RouterError::Config)?);
        }
        let holidays = holidays
            .iter()
            .map(|d| omnigate_config::parse_date(d).map_err(RouterError::Config))
            .collect::<Result<_, _>>()?;
        Ok(Calendar {
            ranges,
            holidays,
            offset_minutes: i64::from(offset_minutes),
        })
    }

    /// Whether the queue is open at `now` (Unix milliseconds).
    pub(crate) fn is_open(&self, now: Millis) -> bool {
        if self.ranges.is_empty() && self.holidays.is_empty() {
            return true;
        }
        let local = (now.0 / 60_000) as i64 + self.offset_minutes;
        let day = local.div_euclid(MINUTES_PER_DAY);
        if self.holidays.contains(&day) {
            return false;
        }
        if self.ranges.is_empty() {
            return true;
        }
        // 1970-01-01 was a Thursday: day 3 of a week starting on Monday.
        let minute_of_week =
            ((day + 3).rem_euclid(7) * MINUTES_PER_DAY + local.rem_euclid(MINUTES_PER_DAY)) as u32;
        self.ranges
            .iter()
            .any(|&(open, close)| open <= minute_of_week && minute_of_week < close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    /// 2026-11-23 00:00 UTC, a Monday.
    const MONDAY: u64 = 20_780 * 1440 * MINUTE;

    #[test]
    fn hours_follow_the_local_week_and_holidays_close_all_day() {
        let cal = Calendar::new(
            &["mon-fri 09:00-18:00".to_owned()],
            &["2026-11-24".to_owned()],
            8 * 60,
        )
        .unwrap();
        // Monday 09:30 local = 01:30 UTC.
        assert!(cal.is_open(Millis(MONDAY + 90 * MINUTE)));
        // Monday 08:30 local = 00:30 UTC.
        assert!(!cal.is_open(Millis(MONDAY + 30 * MINUTE)));
        // Tuesday 10:00 local is a holiday.
        assert!(!cal.is_open(Millis(MONDAY + (24 * 60 + 2 * 60) * MINUTE)));
        // Saturday 10:00 local.
        assert!(!cal.is_open(Millis(MONDAY + (5 * 24 * 60 + 2 * 60) * MINUTE)));
        assert!(Calendar::default().is_open(Millis(MONDAY)));
    }
}
