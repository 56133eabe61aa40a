//! The arrival model: Poisson arrivals whose rate follows the hour of the day
//! and the day of the week (Monday morning is the peak of the week), and a
//! surge ramp for flu-season days. Plain functions, unit-tested.

/// Day of the week, Monday first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Parses `mon`, `monday`, `tue`, ... (case-insensitive).
    pub fn parse(s: &str) -> Option<Weekday> {
        let s = s.to_ascii_lowercase();
        let d = match s.get(..3)? {
            "mon" => Weekday::Mon,
            "tue" => Weekday::Tue,
            "wed" => Weekday::Wed,
            "thu" => Weekday::Thu,
            "fri" => Weekday::Fri,
            "sat" => Weekday::Sat,
            "sun" => Weekday::Sun,
            _ => return None,
        };
        Some(d)
    }

    /// Volume of the day relative to a midweek day. Patients who could not reach
    /// anyone over the weekend call on Monday.
    pub fn volume_factor(self) -> f64 {
        match self {
            Weekday::Mon => 1.35,
            Weekday::Tue => 1.1,
            Weekday::Wed | Weekday::Thu => 1.0,
            Weekday::Fri => 0.9,
            Weekday::Sat => 0.35,
            Weekday::Sun => 0.25,
        }
    }
}

/// Share of a weekday's contacts arriving in each hour (sums to 1): quiet at
/// night, a morning peak from 8 to 11, a smaller one after lunch.
pub const HOURLY_SHARE: [f64; 24] = [
    0.004, 0.003, 0.002, 0.002, 0.003, 0.006, // 00-05
    0.020, 0.055, 0.105, 0.115, 0.105, 0.085, // 06-11
    0.070, 0.080, 0.080, 0.070, 0.060, 0.045, // 12-17
    0.030, 0.020, 0.014, 0.010, 0.008, 0.008, // 18-23
];

/// Extra weight on Monday 08:00–11:00 (the backlog of the weekend).
pub const MONDAY_MORNING_BOOST: f64 = 1.4;

/// How much a surge multiplies arrivals once it has ramped up.
pub const SURGE_FACTOR: f64 = 10.0;

/// Minutes (simulated) a surge takes to ramp from 1x to [`SURGE_FACTOR`].
pub const SURGE_RAMP_MINUTES: f64 = 5.0;

/// Arrival rate in contacts per hour for a site handling `daily_volume` contacts
/// on a midweek day, at `hour` (fractional, 0–24) on `day`.
pub fn arrivals_per_hour(daily_volume: f64, day: Weekday, hour: f64) -> f64 {
    let h = (hour.rem_euclid(24.0)) as usize;
    let mut rate = daily_volume * HOURLY_SHARE[h.min(23)] * day.volume_factor();
    if day == Weekday::Mon && (8..11).contains(&h) {
        rate *= MONDAY_MORNING_BOOST;
    }
    rate
}

/// The surge multiplier `minutes_since_start` simulated minutes after a surge
/// began: 1 before it, ramping linearly to [`SURGE_FACTOR`] over
/// [`SURGE_RAMP_MINUTES`], then held.
pub fn surge_multiplier(minutes_since_start: Option<f64>) -> f64 {
    match minutes_since_start {
        None => 1.0,
        Some(m) if m <= 0.0 => 1.0,
        Some(m) => 1.0 + (SURGE_FACTOR - 1.0) * (m / SURGE_RAMP_MINUTES).min(1.0),
    }
}

/// Expected arrivals in a slice of `dt_secs` simulated seconds starting at `hour`.
pub fn expected_arrivals(rate_per_hour: f64, dt_secs: f64) -> f64 {
    rate_per_hour * dt_secs / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn hourly_shares_sum_to_one() {
        let s: f64 = HOURLY_SHARE.iter().sum();
        assert!((s - 1.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn a_midweek_day_integrates_to_its_daily_volume() {
        let total: f64 = (0..24)
            .map(|h| arrivals_per_hour(1000.0, Weekday::Wed, h as f64))
            .sum();
        assert!((total - 1000.0).abs() < 1e-6, "{total}");
    }

    #[test]
    fn monday_morning_is_the_peak_of_the_week() {
        let peak = |day| {
            (0..24)
                .map(|h| arrivals_per_hour(1000.0, day, h as f64))
                .fold(0.0, f64::max)
        };
        let monday = peak(Weekday::Mon);
        for day in [
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ] {
            assert!(monday > peak(day), "{day:?}");
        }
        let busiest =
            (0..24)
                .max_by(|a, b| {
                    arrivals_per_hour(1000.0, Weekday::Mon, *a as f64)
                        .total_cmp(&arrivals_per_hour(1000.0, Weekday::Mon, *b as f64))
                })
                .unwrap_or(0);
        assert!((8..11).contains(&busiest), "busiest hour {busiest}");
        // Monday 09:00 on a 1000-contact site: 1000 × 0.115 × 1.35 × 1.4.
        let r = arrivals_per_hour(1000.0, Weekday::Mon, 9.5);
        assert!((r - 217.35).abs() < 1e-6, "{r}");
    }

    #[test]
    fn nights_are_quiet() {
        assert!(
            arrivals_per_hour(1000.0, Weekday::Mon, 3.0)
                < arrivals_per_hour(1000.0, Weekday::Mon, 9.0) / 20.0
        );
    }

    #[test]
    fn a_surge_ramps_to_ten_times_within_minutes_and_holds() {
        assert_eq!(surge_multiplier(None), 1.0);
        assert_eq!(surge_multiplier(Some(0.0)), 1.0);
        let half = surge_multiplier(Some(SURGE_RAMP_MINUTES / 2.0));
        assert!((half - 5.5).abs() < 1e-9, "{half}");
        assert_eq!(surge_multiplier(Some(SURGE_RAMP_MINUTES)), SURGE_FACTOR);
        assert_eq!(surge_multiplier(Some(120.0)), SURGE_FACTOR);
        let mut prev = 0.0;
        for m in 0..20 {
            let x = surge_multiplier(Some(m as f64 / 2.0));
            assert!(x >= prev);
            prev = x;
        }
    }

    #[test]
    fn poisson_arrivals_over_an_hour_match_the_hourly_rate() {
        // One simulated Monday 09:00–10:00 in one-second slices, 200 times.
        let rate = arrivals_per_hour(1000.0, Weekday::Mon, 9.0);
        let mut rng = Rng::new(11);
        let runs = 200;
        let mut total = 0u64;
        for _ in 0..runs {
            for _ in 0..3600 {
                total += rng.poisson(expected_arrivals(rate, 1.0));
            }
        }
        let mean = total as f64 / runs as f64;
        assert!((mean - rate).abs() < 0.02 * rate, "mean {mean} vs {rate}");
    }

    #[test]
    fn a_surge_multiplies_poisson_arrivals_tenfold() {
        let rate = arrivals_per_hour(1000.0, Weekday::Tue, 14.0);
        let mut rng = Rng::new(12);
        let count = |rng: &mut Rng, mult: f64| -> u64 {
            (0..36_000)
                .map(|_| rng.poisson(expected_arrivals(rate * mult, 1.0)))
                .sum()
        };
        let normal = count(&mut rng, surge_multiplier(None)) as f64;
        let surged = count(&mut rng, surge_multiplier(Some(30.0))) as f64;
        let ratio = surged / normal;
        assert!((ratio - 10.0).abs() < 0.5, "ratio {ratio}");
    }

    #[test]
    fn weekdays_parse_by_their_first_three_letters() {
        assert_eq!(Weekday::parse("Monday"), Some(Weekday::Mon));
        assert_eq!(Weekday::parse("sun"), Some(Weekday::Sun));
        assert_eq!(Weekday::parse("x"), None);
    }
}
