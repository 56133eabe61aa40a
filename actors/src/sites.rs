//! The site directory: where each site is, when it is open, and what its clock says.
//!
//! Patients read times in their site's local time ("Tue 3 Mar 2026, 09:30 CST"),
//! never in UTC; opening hours, holidays and quiet hours are local too. Local time
//! comes from the IANA time-zone database (`chrono-tz`), so daylight-saving changes
//! follow the law of the place, not a fixed offset.
//!
//! | rule | what it means |
//! |---|---|
//! | opening hours | per weekday, local `open-close` intervals; close after open, no overlaps |
//! | holidays | local dates the site is closed all day |
//! | a local time that does not exist (spring forward) | the first instant after the gap |
//! | a local time that exists twice (fall back) | the earlier of the two |
//! | a site missing from the directory | UTC, and a warning at start |
//! | quiet hours | local window (default 21:00–08:00) in which non-urgent messages wait |
//!
//! Configuration (`[sites.<site_id>]`) arrives as [`SiteConfig`] (plain strings) and
//! is checked by [`SiteDirectory::from_config`], which names the key of the first
//! mistake: an unknown time zone refuses to start.

use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::ids::SiteId;

/// Weekday keys in configuration, Monday first (chrono's `num_days_from_monday`).
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// How far ahead [`Site::next_opening`] looks (a year of holidays at most).
const LOOKAHEAD_DAYS: i64 = 370;

/// One site as written in configuration (`[sites.<site_id>]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// IANA time zone (`America/Chicago`); required.
    pub time_zone: String,
    /// Name patients know the site by ("Riverside Clinic").
    pub name: String,
    /// Street address, as printed in messages.
    pub address: String,
    /// Front-desk phone number, as printed in messages.
    pub phone: String,
    /// Parking and directions text.
    pub directions: String,
    /// Opening hours per weekday: `{ mon = ["08:00-12:00", "13:00-17:00"], ... }`;
    /// a day not listed is closed.
    pub hours: BTreeMap<String, Vec<String>>,
    /// Local dates the site is closed (`"2026-12-25"`).
    pub holidays: Vec<String>,
    /// Quiet hours (local, may wrap midnight): non-urgent messages wait until the end.
    /// Empty: the default, `21:00-08:00`; `"off"`: none.
    pub quiet_hours: String,
    /// Telehealth login instructions sent with the video link (empty: the
    /// runtime's default text).
    pub telehealth_instructions: String,
}

/// Opening hours: per weekday (Monday first), sorted non-overlapping local intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpeningHours {
    /// `days[d]`: the intervals of weekday `d` (0 = Monday), `open < close`.
    days: [Vec<(NaiveTime, NaiveTime)>; 7],
}

impl OpeningHours {
    /// Parses `{ mon = ["08:00-17:00"], ... }`; `key` prefixes error messages
    /// (`sites.main.hours`).
    pub fn parse(hours: &BTreeMap<String, Vec<String>>, key: &str) -> Result<Self, String> {
        let mut days: [Vec<(NaiveTime, NaiveTime)>; 7] = Default::default();
        for (day, intervals) in hours {
            let Some(d) = WEEKDAYS.iter().position(|w| w == day) else {
                return Err(format!(
                    "{key}.{day}: unknown weekday (use mon, tue, wed, thu, fri, sat, sun)"
                ));
            };
            let mut parsed = Vec::with_capacity(intervals.len());
            for text in intervals {
                let (open, close) = parse_interval(text)
                    .ok_or_else(|| format!("{key}.{day}: {text:?} is not HH:MM-HH:MM"))?;
                if close <= open {
                    return Err(format!(
                        "{key}.{day}: {text:?} closes before it opens (an interval may not cross midnight)"
                    ));
                }
                parsed.push((open, close));
            }
            parsed.sort();
            if let Some(w) = parsed.windows(2).find(|w| w[1].0 < w[0].1) {
                return Err(format!(
                    "{key}.{day}: {}-{} overlaps {}-{}",
                    w[0].0.format("%H:%M"),
                    w[0].1.format("%H:%M"),
                    w[1].0.format("%H:%M"),
                    w[1].1.format("%H:%M")
                ));
            }
            days[d] = parsed;
        }
        Ok(OpeningHours { days })
    }

    /// The intervals of one weekday.
    pub fn on(&self, day: Weekday) -> &[(NaiveTime, NaiveTime)] {
        &self.days[day.num_days_from_monday() as usize]
    }
}

/// Quiet hours: a local window, possibly wrapping midnight (`21:00-08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Local time the window starts.
    pub start: NaiveTime,
    /// Local time the window ends (before `start` when it wraps midnight).
    pub end: NaiveTime,
}

impl Default for QuietHours {
    fn default() -> Self {
        // unwrap: constant, valid times
        QuietHours {
            start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        }
    }
}

impl QuietHours {
    /// True when local time-of-day `t` falls in the window.
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// One site of the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The IANA time zone all of the site's local times are in.
    pub time_zone: Tz,
    /// Name patients know the site by.
    pub name: String,
    /// Street address.
    pub address: String,
    /// Front-desk phone number.
    pub phone: String,
    /// Parking and directions text.
    pub directions: String,
    /// Local opening hours per weekday.
    pub hours: OpeningHours,
    /// Local dates the site is closed all day.
    pub holidays: Vec<NaiveDate>,
    /// Local window in which non-urgent messages wait (`None`: no quiet hours).
    pub quiet_hours: Option<QuietHours>,
    /// Telehealth login instructions (empty: the runtime's default).
    pub telehealth_instructions: String,
}

impl Site {
    /// A site in UTC with no hours (the fallback for a site missing from configuration).
    pub fn utc() -> Site {
        Site {
            time_zone: Tz::UTC,
            name: String::new(),
            address: String::new(),
            phone: String::new(),
            directions: String::new(),
            hours: OpeningHours::default(),
            holidays: Vec::new(),
            quiet_hours: Some(QuietHours::default()),
            telehealth_instructions: String::new(),
        }
    }

    /// Checks one `[sites.<id>]` table; errors name the key (`sites.<id>.time_zone`).
    pub fn from_config(id: &str, c: &SiteConfig) -> Result<Site, String> {
        let key = format!("sites.{id}");
        if c.time_zone.trim().is_empty() {
            return Err(format!(
                "{key}.time_zone is required (an IANA name such as \"America/Chicago\")"
            ));
        }
        let time_zone: Tz = c.time_zone.trim().parse().map_err(|_| {
            format!(
                "{key}.time_zone: unknown time zone {:?} (use an IANA name such as \"America/Chicago\")",
                c.time_zone
            )
        })?;
        let hours = OpeningHours::parse(&c.hours, &format!("{key}.hours"))?;
        let mut holidays = Vec::with_capacity(c.holidays.len());
        for h in &c.holidays {
            let date = NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d")
                .map_err(|_| format!("{key}.holidays: {h:?} is not a date (YYYY-MM-DD)"))?;
            holidays.push(date);
        }
        holidays.sort();
        holidays.dedup();
        let quiet_hours = match c.quiet_hours.trim() {
            "" => Some(QuietHours::default()),
            "off" => None,
            text => {
                let (start, end) = parse_interval(text).ok_or_else(|| {
                    format!("{key}.quiet_hours: {text:?} is not HH:MM-HH:MM or \"off\"")
                })?;
                if start == end {
                    return Err(format!(
                        "{key}.quiet_hours: {text:?} is empty (use \"off\" for none)"
                    ));
                }
                Some(QuietHours { start, end })
            }
        };
        Ok(Site {
            time_zone,
            name: c.name.clone(),
            address: c.address.clone(),
            phone: c.phone.clone(),
            directions: c.directions.clone(),
            hours,
            holidays,
            quiet_hours,
            telehealth_instructions: c.telehealth_instructions.clone(),
        })
    }

    /// `at` on the site's clock.
    pub fn local(&self, at: DateTime<Utc>) -> DateTime<Tz> {
        at.with_timezone(&self.time_zone)
    }

    /// True when `date` (local) is a holiday.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        self.holidays.binary_search(&date).is_ok()
    }

    /// True when the site is open at `at`: inside one of the local day's intervals
    /// and not on a holiday.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = self.local(at);
        if self.is_holiday(local.date_naive()) {
            return false;
        }
        let t = local.time();
        self.hours
            .on(local.weekday())
            .iter()
            .any(|&(open, close)| open <= t && t < close)
    }

    /// The first instant at or after `at` when the site is open (`at` itself when it
    /// is open now); `None` when it opens on no day of the next year.
    pub fn next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(at) {
            return Some(at);
        }
        let start = self.local(at).date_naive();
        for offset in 0..LOOKAHEAD_DAYS {
            let date = start + Duration::days(offset);
            if self.is_holiday(date) {
                continue;
            }
            for &(open, close) in self.hours.on(date.weekday()) {
                let opens = self.instant(date.and_time(open));
                // An interval that lies wholly in a spring-forward gap never opens.
                if opens >= self.instant(date.and_time(close)) {
                    continue;
                }
                if opens >= at {
                    return Some(opens);
                }
            }
        }
        None
    }

    /// When the quiet hours that hold `at` end (`None`: `at` is outside them, or the
    /// site has none). A message held until then goes out at the first minute the
    /// window allows.
    pub fn quiet_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let quiet = self.quiet_hours?;
        let local = self.local(at);
        let t = local.time();
        if !quiet.contains(t) {
            return None;
        }
        let date = local.date_naive();
        // The window ends today when we are before its end, else tomorrow.
        let end_date = if t < quiet.end {
            date
        } else {
            date + Duration::days(1)
        };
        Some(self.instant(end_date.and_time(quiet.end)))
    }

    /// The UTC instant of a local wall-clock time: the earlier one when the time
    /// happens twice (fall back), the first instant after the gap when it does not
    /// happen (spring forward).
    pub fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self.time_zone.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
            LocalResult::None => {
                // Gaps are whole minutes and at most a few hours long: step
                // forward a minute at a time to the first local time that exists.
                let mut probe = local;
                for _ in 0..(24 * 60) {
                    probe += Duration::minutes(1);
                    if let Some(t) = self.time_zone.from_local_datetime(&probe).earliest() {
                        return t.with_timezone(&Utc);
                    }
                }
                // Unreachable for any real zone; UTC keeps the answer defined.
                local.and_utc()
            }
        }
    }
}

/// All configured sites, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteDirectory {
    /// Sites by id.
    sites: BTreeMap<SiteId, Site>,
}

impl SiteDirectory {
    /// Checks every `[sites.<id>]`; the first mistake is returned as one line naming
    /// its key.
    pub fn from_config(config: &BTreeMap<String, SiteConfig>) -> Result<SiteDirectory, String> {
        let mut sites = BTreeMap::new();
        for (id, c) in config {
            let site_id = SiteId::parse(id).map_err(|e| format!("sites.{id}: the site id {e}"))?;
            sites.insert(site_id, Site::from_config(id, c)?);
        }
        Ok(SiteDirectory { sites })
    }

    /// The configured site, if any.
    pub fn get(&self, site: &SiteId) -> Option<&Site> {
        self.sites.get(site)
    }

    /// The site, or the UTC fallback for a site missing from configuration.
    pub fn site_or_utc(&self, site: &SiteId) -> std::borrow::Cow<'_, Site> {
        match self.sites.get(site) {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(Site::utc()),
        }
    }

    /// The configured site ids.
    pub fn ids(&self) -> impl Iterator<Item = &SiteId> {
        self.sites.keys()
    }

    /// Of `used`, the site ids not in the directory (warned about at start: their
    /// times fall back to UTC).
    pub fn missing<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> = used
            .into_iter()
            .filter(|s| *s != "*")
            .filter(|s| SiteId::parse(s).map_or(true, |id| !self.sites.contains_key(&id)))
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `at` on the site's clock (UTC for a site missing from configuration).
    pub fn local_time(&self, site: &SiteId, at: DateTime<Utc>) -> DateTime<Tz> {
        let tz = self.sites.get(site).map_or(Tz::UTC, |s| s.time_zone);
        at.with_timezone(&tz)
    }

    /// `at` as a patient reads it, in the site's local time: "Tue 3 Mar 2026, 09:30 CST".
    pub fn patient_time(&self, site: &SiteId, at: DateTime<Utc>) -> String {
        format_patient_time(&self.local_time(site, at))
    }
}

/// A local time as patient messages show it: "Tue 3 Mar 2026, 09:30 CST".
pub fn format_patient_time(local: &DateTime<Tz>) -> String {
    local.format("%a %-d %b %Y, %H:%M %Z").to_string()
}

/// `"08:00-17:00"` as two times.
fn parse_interval(text: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = text.trim().split_once('-')?;
    let open = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
    let close = NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?;
    Some((open, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        // unwrap: test literals
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn chicago() -> SiteConfig {
        SiteConfig {
            time_zone: "America/Chicago".into(),
            name: "Riverside Clinic".into(),
            hours: BTreeMap::from([
                (
                    "mon".into(),
                    vec!["08:00-12:00".into(), "13:00-17:00".into()],
                ),
                ("tue".into(), vec!["08:00-17:00".into()]),
                ("wed".into(), vec!["08:00-17:00".into()]),
                ("thu".into(), vec!["08:00-17:00".into()]),
                ("fri".into(), vec!["08:00-17:00".into()]),
                (
                    "sun".into(),
                    vec!["02:00-03:00".into(), "09:00-12:00".into()],
                ),
            ]),
            holidays: vec!["2026-12-25".into()],
            ..SiteConfig::default()
        }
    }

    fn dir() -> SiteDirectory {
        SiteDirectory::from_config(&BTreeMap::from([("main".into(), chicago())])).unwrap()
    }

    fn site() -> Site {
        Site::from_config("main", &chicago()).unwrap()
    }

    fn main_id() -> SiteId {
        SiteId::parse("main").unwrap()
    }

    #[test]
    fn patient_times_are_local_with_the_zone_abbreviation_on_both_sides_of_a_dst_change() {
        let d = dir();
        // 2026-03-08 02:00 CST → CDT in Chicago.
        assert_eq!(
            d.patient_time(&main_id(), utc("2026-03-03T15:30:00Z")),
            "Tue 3 Mar 2026, 09:30 CST"
        );
        assert_eq!(
            d.patient_time(&main_id(), utc("2026-03-10T14:30:00Z")),
            "Tue 10 Mar 2026, 09:30 CDT"
        );
        // 2026-11-01 02:00 CDT → CST.
        assert_eq!(
            d.patient_time(&main_id(), utc("2026-10-30T14:30:00Z")),
            "Fri 30 Oct 2026, 09:30 CDT"
        );
        assert_eq!(
            d.patient_time(&main_id(), utc("2026-11-02T15:30:00Z")),
            "Mon 2 Nov 2026, 09:30 CST"
        );
    }

    #[test]
    fn a_site_missing_from_the_directory_reads_utc() {
        let d = dir();
        let other = SiteId::parse("elsewhere").unwrap();
        assert_eq!(
            d.patient_time(&other, utc("2026-03-03T15:30:00Z")),
            "Tue 3 Mar 2026, 15:30 UTC"
        );
        assert_eq!(d.site_or_utc(&other).time_zone, Tz::UTC);
        assert_eq!(d.missing(["main", "elsewhere", "*"]), vec!["elsewhere"]);
    }

    #[test]
    fn open_inside_the_local_hours_closed_at_lunch_at_night_and_on_holidays() {
        let s = site();
        // Mon 2 Mar 2026, CST = UTC-6.
        assert!(s.is_open(utc("2026-03-02T14:00:00Z"))); // 08:00 local
        assert!(!s.is_open(utc("2026-03-02T13:59:00Z"))); // 07:59
        assert!(!s.is_open(utc("2026-03-02T18:30:00Z"))); // 12:30 lunch
        assert!(!s.is_open(utc("2026-03-02T23:00:00Z"))); // 17:00 closed (end exclusive)
        assert!(!s.is_open(utc("2026-03-07T16:00:00Z"))); // Saturday
                                                          // Fri 25 Dec 2026 is a holiday although Friday is open.
        assert!(!s.is_open(utc("2026-12-25T16:00:00Z")));
        assert!(s.is_open(utc("2026-12-24T16:00:00Z")));
    }

    #[test]
    fn next_opening_skips_lunch_weekends_holidays_and_follows_the_dst_change() {
        let s = site();
        // Mon 12:30 CST → 13:00 CST the same day.
        assert_eq!(
            s.next_opening(utc("2026-03-02T18:30:00Z")),
            Some(utc("2026-03-02T19:00:00Z"))
        );
        // Open now: now.
        assert_eq!(
            s.next_opening(utc("2026-03-02T15:00:00Z")),
            Some(utc("2026-03-02T15:00:00Z"))
        );
        // Sat 7 Mar evening → Sun 8 Mar: 02:00 does not exist (spring forward), the
        // 02:00-03:00 interval lies in the gap, so the next opening is 09:00 CDT = 14:00Z.
        assert_eq!(
            s.next_opening(utc("2026-03-07T23:00:00Z")),
            Some(utc("2026-03-08T14:00:00Z"))
        );
        // Thu 24 Dec 2026 after hours → Fri 25 is a holiday, Sat closed, Sun 02:00 CST.
        assert_eq!(
            s.next_opening(utc("2026-12-24T23:30:00Z")),
            Some(utc("2026-12-27T08:00:00Z"))
        );
        // Sun 1 Nov 2026: 02:00 local happens once after fall back (01:00-02:00 twice).
        assert_eq!(
            s.next_opening(utc("2026-11-01T05:00:00Z")),
            Some(utc("2026-11-01T08:00:00Z"))
        );
        // A site with no hours never opens.
        let closed = Site::utc();
        assert_eq!(closed.next_opening(utc("2026-03-02T15:00:00Z")), None);
    }

    #[test]
    fn ambiguous_local_times_take_the_earlier_instant_and_gaps_the_first_after() {
        let s = site();
        let fall = NaiveDate::from_ymd_opt(2026, 11, 1)
            .unwrap()
            .and_hms_opt(1, 30, 0)
            .unwrap();
        assert_eq!(s.instant(fall), utc("2026-11-01T06:30:00Z")); // 01:30 CDT
        let spring = NaiveDate::from_ymd_opt(2026, 3, 8)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(s.instant(spring), utc("2026-03-08T08:00:00Z")); // 03:00 CDT
    }

    #[test]
    fn quiet_hours_default_to_nine_pm_until_eight_am_local() {
        let s = site();
        // 20:59 CST: not quiet.
        assert_eq!(s.quiet_until(utc("2026-03-03T02:59:00Z")), None);
        // 21:00 CST Mon 2 Mar → 08:00 CST Tue 3 Mar.
        assert_eq!(
            s.quiet_until(utc("2026-03-03T03:00:00Z")),
            Some(utc("2026-03-03T14:00:00Z"))
        );
        // 03:00 CST → 08:00 the same morning.
        assert_eq!(
            s.quiet_until(utc("2026-03-03T09:00:00Z")),
            Some(utc("2026-03-03T14:00:00Z"))
        );
        // Across spring forward: Sat 7 Mar 22:00 CST → Sun 8 Mar 08:00 CDT = 13:00Z.
        assert_eq!(
            s.quiet_until(utc("2026-03-08T04:00:00Z")),
            Some(utc("2026-03-08T13:00:00Z"))
        );
        let mut c = chicago();
        c.quiet_hours = "off".into();
        let off = Site::from_config("main", &c).unwrap();
        assert_eq!(off.quiet_until(utc("2026-03-03T03:00:00Z")), None);
        c.quiet_hours = "12:00-13:00".into();
        let noon = Site::from_config("main", &c).unwrap();
        assert_eq!(
            noon.quiet_until(utc("2026-03-03T18:30:00Z")),
            Some(utc("2026-03-03T19:00:00Z"))
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_one_line_naming_the_key() {
        let refused = |f: &dyn Fn(&mut SiteConfig)| {
            let mut c = chicago();
            f(&mut c);
            SiteDirectory::from_config(&BTreeMap::from([("main".into(), c)])).unwrap_err()
        };
        let e = refused(&|c| c.time_zone = "America/Chikago".into());
        assert!(
            e.starts_with("sites.main.time_zone: unknown time zone \"America/Chikago\""),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let e = refused(&|c| c.time_zone = String::new());
        assert!(e.starts_with("sites.main.time_zone is required"), "{e}");
        let e = refused(&|c| {
            c.hours.insert(
                "tue".into(),
                vec!["08:00-12:00".into(), "11:00-17:00".into()],
            );
        });
        assert_eq!(e, "sites.main.hours.tue: 08:00-12:00 overlaps 11:00-17:00");
        let e = refused(&|c| {
            c.hours.insert("wed".into(), vec!["17:00-08:00".into()]);
        });
        assert!(
            e.starts_with("sites.main.hours.wed: \"17:00-08:00\" closes before it opens"),
            "{e}"
        );
        let e = refused(&|c| {
            c.hours.insert("wen".into(), vec!["08:00-17:00".into()]);
        });
        assert!(
            e.starts_with("sites.main.hours.wen: unknown weekday"),
            "{e}"
        );
        let e = refused(&|c| {
            c.hours.insert("thu".into(), vec!["8am-5pm".into()]);
        });
        assert!(
            e.starts_with("sites.main.hours.thu: \"8am-5pm\" is not HH:MM-HH:MM"),
            "{e}"
        );
        let e = refused(&|c| c.holidays = vec!["25/12/2026".into()]);
        assert!(e.starts_with("sites.main.holidays: \"25/12/2026\""), "{e}");
        let e = refused(&|c| c.quiet_hours = "late".into());
        assert!(e.starts_with("sites.main.quiet_hours:"), "{e}");
        let e = SiteDirectory::from_config(&BTreeMap::from([("bad site".into(), chicago())]))
            .unwrap_err();
        assert!(e.starts_with("sites.bad site: the site id"), "{e}");
    }
    /// Outside material: the same instants, read by Python's `zoneinfo` (the system
    /// tzdb), must give the same local wall time and abbreviation as chrono-tz.
    #[test]
    fn local_times_agree_with_python_zoneinfo_across_dst_changes() {
        let zones = [
            "America/Chicago",
            "America/New_York",
            "America/Phoenix",
            "Europe/Berlin",
            "Australia/Sydney",
            "Asia/Kolkata",
        ];
        // Every 6 hours through 2026, plus the minutes around the US changes.
        let start = utc("2026-01-01T00:00:00Z");
        let mut instants: Vec<DateTime<Utc>> = (0..(365 * 4))
            .map(|i| start + Duration::hours(6 * i))
            .collect();
        for around in ["2026-03-08T08:00:00Z", "2026-11-01T07:00:00Z"] {
            let t = utc(around);
            instants.extend((-3..=3).map(|m| t + Duration::minutes(30 * m)));
        }
        let script = "import sys, datetime, zoneinfo\n\
            for line in sys.stdin:\n\
            \x20   zone, ts = line.split()\n\
            \x20   t = datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc)\n\
            \x20   print(t.astimezone(zoneinfo.ZoneInfo(zone)).strftime('%a %-d %b %Y, %H:%M %Z'))\n";
        let mut input = String::new();
        let mut ours = Vec::new();
        for zone in zones {
            let tz: Tz = zone.parse().unwrap();
            for t in &instants {
                input.push_str(&format!("{zone} {}\n", t.timestamp()));
                ours.push(format_patient_time(&t.with_timezone(&tz)));
            }
        }
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (with zoneinfo, 3.9+) runs this cross-check");
        // Written from a thread: python answers line by line, and a full stdout
        // pipe would otherwise block both sides.
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(input.as_bytes())
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "python3 failed");
        let theirs: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(theirs.len(), ours.len());
        let differ: Vec<_> = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a != *b)
            .take(5)
            .collect();
        assert!(differ.is_empty(), "chrono-tz vs zoneinfo: {differ:?}");
    }
}
