//! The stream of new contacts, drawn from the seed alone: arrivals are generated
//! in fixed one-second slices of simulated time with their own random source, so
//! the same seed and options give the same contacts (time, site, skill, channel,
//! patient, id) whatever the wall clock and the runtime do. What happens to them
//! afterwards (offers, waits, abandonment) depends on the runtime.

use std::collections::VecDeque;

use super::model::{arrivals_per_hour, expected_arrivals, surge_multiplier, Weekday};
use super::rng::Rng;
use super::scenario::{Patient, CHANNELS, SITES, SKILLS};

/// Share of new contacts from a patient who contacted the same site recently.
pub const REPEAT_SHARE: f64 = 0.12;

/// Recent patients kept per site (repeat contacts are drawn from them).
const RECENT_KEPT: usize = 400;

/// One new contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// When, in simulated seconds since the start.
    pub at_sim: f64,
    /// Index into [`SITES`].
    pub site: usize,
    /// Index into [`SKILLS`].
    pub skill: usize,
    /// Index into [`CHANNELS`].
    pub channel: usize,
    /// Who.
    pub patient: Patient,
    /// The same patient contacted this site before.
    pub repeat: bool,
    /// The channel's contact id.
    pub contact_id: String,
}

/// Generates arrivals slice by slice.
#[derive(Debug, Clone)]
pub struct ArrivalStream {
    /// The stream's own random source.
    rng: Rng,
    /// Simulated seconds generated so far.
    generated_until: f64,
    /// First simulated hour.
    start_hour: f64,
    /// Day of the week.
    weekday: Weekday,
    /// Volume multiplier.
    volume_scale: f64,
    /// Surge from the start.
    surge: bool,
    /// Patients created so far.
    next_patient: u64,
    /// Recent patients per site.
    recent: Vec<VecDeque<Patient>>,
}

impl ArrivalStream {
    /// A stream for `seed`.
    pub fn new(
        seed: u64,
        start_hour: f64,
        weekday: Weekday,
        volume_scale: f64,
        surge: bool,
    ) -> ArrivalStream {
        ArrivalStream {
            rng: Rng::new(seed ^ 0xA5A5_5A5A_0F0F_F0F0),
            generated_until: 0.0,
            start_hour,
            weekday,
            volume_scale,
            surge,
            next_patient: 0,
            recent: vec![VecDeque::new(); SITES.len()],
        }
    }

    /// Arrivals in every whole simulated second up to `now_sim` not yet generated.
    pub fn until(&mut self, now_sim: f64) -> Vec<Arrival> {
        let mut out = Vec::new();
        while self.generated_until + 1.0 <= now_sim {
            let t = self.generated_until;
            let hour = self.start_hour + t / 3600.0;
            let surge = surge_multiplier(self.surge.then_some(t / 60.0));
            for (site, spec) in SITES.iter().enumerate() {
                let rate =
                    arrivals_per_hour(spec.daily_volume * self.volume_scale, self.weekday, hour)
                        * surge;
                let n = self.rng.poisson(expected_arrivals(rate, 1.0));
                for _ in 0..n {
                    let at = t + self.rng.unit();
                    let a = self.draw(site, at);
                    out.push(a);
                }
            }
            self.generated_until += 1.0;
        }
        out.sort_by(|a, b| a.at_sim.total_cmp(&b.at_sim));
        out
    }

    fn draw(&mut self, site: usize, at_sim: f64) -> Arrival {
        let weights: Vec<f64> = SKILLS
            .iter()
            .map(|s| if self.surge { s.surge_share } else { s.share })
            .collect();
        let skill = self.rng.weighted(&weights);
        let channel = self
            .rng
            .weighted(&CHANNELS.iter().map(|c| c.1).collect::<Vec<_>>());
        let recent = &self.recent[site];
        let repeat = !recent.is_empty() && self.rng.chance(REPEAT_SHARE);
        let patient = if repeat {
            let i = self.rng.below(recent.len());
            recent[i].clone()
        } else {
            self.next_patient += 1;
            Patient::new(site, self.next_patient)
        };
        let recent = &mut self.recent[site];
        recent.push_back(patient.clone());
        if recent.len() > RECENT_KEPT {
            recent.pop_front();
        }
        Arrival {
            at_sim,
            site,
            skill,
            channel,
            patient,
            repeat,
            contact_id: format!("sim-{}", self.rng.uuid().simple()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(seed: u64, surge: bool) -> ArrivalStream {
        ArrivalStream::new(seed, 9.0, Weekday::Mon, 1.0, surge)
    }

    #[test]
    fn the_same_seed_gives_the_same_contacts_however_the_clock_ticks() {
        let mut a = stream(5, false);
        let mut b = stream(5, false);
        // One stream polled every 0.3 s, the other once: same contacts.
        let mut stepped = Vec::new();
        let mut t = 0.0;
        while t < 600.0 {
            t += 0.3;
            stepped.extend(a.until(t));
        }
        let once = b.until(t);
        assert_eq!(stepped, once);
        assert!(!once.is_empty());
        assert_ne!(stream(6, false).until(t), once);
    }

    #[test]
    fn an_hour_of_monday_nine_oclock_brings_the_modelled_volume() {
        let expected: f64 = SITES
            .iter()
            .map(|s| arrivals_per_hour(s.daily_volume, Weekday::Mon, 9.0))
            .sum();
        let n = stream(8, false).until(3600.0).len() as f64;
        // Poisson: within four standard deviations.
        assert!(
            (n - expected).abs() < 4.0 * expected.sqrt(),
            "{n} vs {expected}"
        );
    }

    #[test]
    fn a_surge_brings_ten_times_the_modelled_volume_once_ramped() {
        // Monday 09:10–10:00 (all inside the morning peak), after the ramp.
        let per_sec: f64 = SITES
            .iter()
            .map(|s| arrivals_per_hour(s.daily_volume, Weekday::Mon, 9.0) / 3600.0)
            .sum();
        for (surge, factor) in [(false, 1.0), (true, crate::model::SURGE_FACTOR)] {
            let mut s = stream(9, surge);
            s.until(600.0);
            let n = s.until(3600.0).len() as f64;
            let expected = per_sec * 3000.0 * factor;
            assert!(
                (n - expected).abs() < 4.0 * expected.sqrt(),
                "surge {surge}: {n} vs {expected}"
            );
        }
    }

    #[test]
    fn some_contacts_are_repeats_from_the_same_site() {
        let all = stream(10, false).until(3600.0);
        let repeats = all.iter().filter(|a| a.repeat).count() as f64;
        let share = repeats / all.len() as f64;
        assert!((share - REPEAT_SHARE).abs() < 0.05, "share {share}");
    }
}
