//! One clock for the whole application, so tests can run time fast.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: every time callgate stores.
pub type UnixTime = i64;

pub trait Clock: Send + Sync + 'static {
    /// Unix time in whole seconds.
    fn now(&self) -> UnixTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: UnixTime) -> ManualClock {
        ManualClock(AtomicI64::new(start))
    }
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

/// The UTC calendar date (`2026-12-03`) of a stored time, and the seconds into that day.
pub fn utc_date(at: UnixTime) -> (String, i64) {
    let days = at.div_euclid(86_400);
    let secs = at.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), secs)
}

/// The first second (UTC) of a calendar date written `2026-12-03`; `None` for anything else.
pub fn parse_date(date: &str) -> Option<UnixTime> {
    if date.len() != 10 {
        return None;
    }
    let at = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// `2026-12-03T09:15:00Z`: a stored time as ISO 8601 in UTC.
pub fn iso8601(at: UnixTime) -> String {
    let (date, secs) = utc_date(at);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{iso8601, parse_date, utc_date};

    #[test]
    fn dates_parse_back_to_their_first_second() {
        for at in [0, 86_400 * 365, 1_795_547_498 - 1_795_547_498 % 86_400] {
            assert_eq!(parse_date(&utc_date(at).0), Some(at));
        }
        assert_eq!(parse_date("2000-02-29"), Some(951_782_400));
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2026-1-01",
            "2026-12-03T00:00:00Z",
            "x",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_print_as_iso_8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_375_700), "2026-12-04T09:15:00Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
    }
}
