//! Calendar days for products, day limits (rpd, tpd, daily_limit), rollups and the "today" view.
//!
//! A day starts at midnight in the gateway's time zone ([`set_time_zone`], config `time_zone`; UTC when unset).
//! Every part of the gateway asks [`Day::of`], so limits, products, usage rollups and the usage API agree on
//! where a day ends, including across daylight-saving changes (a day may last 23 or 25 hours).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A time zone's days: the day of an instant and the instants a day starts and ends at.
#[derive(Debug)]
pub struct Calendar {
    name: String,
    tz: Option<jiff::tz::TimeZone>,
    /// The last day looked up: `[start, end)` in Unix seconds, and the day (most calls fall in it).
    last: ArcSwap<(i64, i64, Day)>,
}

impl Calendar {
    /// UTC.
    pub fn utc() -> Calendar {
        Calendar { name: "UTC".into(), tz: None, last: ArcSwap::from_pointee((0, 86_400, Day(0))) }
    }

    /// The calendar of an IANA time zone (`Europe/Paris`, `America/New_York`, `UTC`).
    pub fn new(name: &str) -> Result<Calendar, String> {
        if name.eq_ignore_ascii_case("utc") || name == "Etc/UTC" {
            return Ok(Calendar::utc());
        }
        let tz = jiff::tz::TimeZone::get(name)
            .map_err(|_| format!("unknown time zone {name:?} (an IANA name such as \"Europe/Paris\")"))?;
        Ok(Calendar { name: name.to_string(), tz: Some(tz), last: ArcSwap::from_pointee((0, 0, Day(0))) })
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The day of the Unix second `secs`.
    pub fn day_of_secs(&self, secs: i64) -> Day {
        let Some(tz) = &self.tz else { return Day(secs.div_euclid(86_400)) };
        let last = self.last.load();
        if last.0 <= secs && secs < last.1 {
            return last.2;
        }
        let Ok(ts) = jiff::Timestamp::from_second(secs) else { return Day(secs.div_euclid(86_400)) };
        let date = ts.to_zoned(tz.clone()).date();
        let day = Day::from_ymd(date.year() as i64, date.month() as u32, date.day() as u32).unwrap_or(Day(0));
        let (start, end) = self.bounds(day);
        self.last.store(Arc::new((start, end, day)));
        day
    }

    /// The day of `t`.
    pub fn day_of(&self, t: SystemTime) -> Day {
        self.day_of_secs(unix_secs(t))
    }

    /// When `day` starts and ends (the next day's start), in Unix seconds.
    pub fn bounds(&self, day: Day) -> (i64, i64) {
        let Some(tz) = &self.tz else { return (day.0 * 86_400, (day.0 + 1) * 86_400) };
        let last = self.last.load();
        if last.2 == day && last.0 < last.1 {
            return (last.0, last.1);
        }
        let start = |d: Day| -> i64 {
            let (y, m, dd) = d.ymd();
            jiff::civil::Date::new(y as i16, m as i8, dd as i8)
                .ok()
                .and_then(|date| date.to_zoned(tz.clone()).ok())
                .map_or(d.0 * 86_400, |z| z.timestamp().as_second())
        };
        (start(day), start(Day(day.0 + 1)))
    }

    /// Time left until the day of `now` ends (at least one second).
    pub fn until_midnight(&self, now: SystemTime) -> Duration {
        let secs = unix_secs(now);
        let (_, end) = self.bounds(self.day_of_secs(secs));
        Duration::from_secs((end - secs).max(1) as u64)
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

static CALENDAR: std::sync::LazyLock<ArcSwap<Calendar>> =
    std::sync::LazyLock::new(|| ArcSwap::from_pointee(Calendar::utc()));

/// Sets the gateway's time zone (at start, before traffic: days already counted keep their numbers).
pub fn set_time_zone(name: &str) -> Result<(), String> {
    CALENDAR.store(Arc::new(Calendar::new(name)?));
    Ok(())
}

/// The gateway's calendar.
pub fn calendar() -> Arc<Calendar> {
    CALENDAR.load_full()
}

/// Time left until the gateway's day ends.
pub fn until_midnight() -> Duration {
    CALENDAR.load().until_midnight(SystemTime::now())
}

/// A civil day, as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// The day of `t` in the gateway's time zone.
    pub fn of(t: SystemTime) -> Day {
        CALENDAR.load().day_of(t)
    }

    /// The day of the Unix second `secs` in the gateway's time zone.
    pub fn of_secs(secs: i64) -> Day {
        CALENDAR.load().day_of_secs(secs)
    }

    /// Today in the gateway's time zone.
    pub fn today() -> Day {
        Day::of(SystemTime::now())
    }

    /// From a civil date (Howard Hinnant's days-from-civil).
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Option<Day> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = m as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe - 719_468))
    }

    /// The civil date.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = String;
    fn from_str(s: &str) -> Result<Day, String> {
        let err = || format!("{s:?} is not a date (YYYY-MM-DD)");
        let mut it = s.trim().splitn(3, '-');
        let (y, m, d) = (it.next().ok_or_else(err)?, it.next().ok_or_else(err)?, it.next().ok_or_else(err)?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(err());
        }
        let (y, m, d) = (y.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?, d.parse().map_err(|_| err())?);
        Day::from_ymd(y, m, d).ok_or_else(err)
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_days() {
        assert_eq!("1970-01-01".parse::<Day>().unwrap(), Day(0));
        assert_eq!("2000-02-29".parse::<Day>().unwrap().to_string(), "2000-02-29");
        assert!("2001-02-29".parse::<Day>().is_err());
        assert!("2026-13-01".parse::<Day>().is_err());
        assert!("26-1-1".parse::<Day>().is_err());
        assert_eq!(Day::of(UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 3 + 5)), Day(3));
    }

    #[test]
    fn a_zone_moves_midnight_and_daylight_saving_days_have_23_or_25_hours() {
        let paris = Calendar::new("Europe/Paris").unwrap();
        let d = "2026-03-29".parse::<Day>().unwrap(); // clocks go forward at 02:00
        let (start, end) = paris.bounds(d);
        assert_eq!(end - start, 23 * 3600);
        assert_eq!(start, d.0 * 86_400 - 3600, "midnight in Paris is 23:00 UTC the day before in winter");
        let (s2, e2) = paris.bounds("2026-10-25".parse().unwrap());
        assert_eq!(e2 - s2, 25 * 3600);
        // 23:30 UTC on the 28th is already the 29th in Paris, still the 28th in UTC.
        let t = d.0 * 86_400 - 1800;
        assert_eq!(paris.day_of_secs(t), d);
        assert_eq!(Calendar::utc().day_of_secs(t), Day(d.0 - 1));
        // The cached day answers the same as a fresh lookup, on both sides of each bound.
        for x in [start - 1, start, end - 1, end, t, start + 7200] {
            assert_eq!(paris.day_of_secs(x), Calendar::new("Europe/Paris").unwrap().day_of_secs(x), "{x}");
        }
        let ny = Calendar::new("America/New_York").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(d.0 as u64 * 86_400 + 3 * 3600); // 03:00 UTC = 23:00 EDT
        assert_eq!(ny.until_midnight(now), Duration::from_secs(3600));
        assert!(Calendar::new("Mars/Olympus").unwrap_err().contains("unknown time zone"));
    }

    proptest! {
        #[test]
        fn round_trips(n in -719_162i64..2_932_896) {
            let d = Day(n);
            prop_assert_eq!(d.to_string().parse::<Day>().unwrap(), d);
        }
    }
}
