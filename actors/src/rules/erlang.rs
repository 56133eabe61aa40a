//! Live staffing math: Erlang C (M/M/N) and Erlang A (M/M/N+M).
//!
//! Everything here is a pure function: no I/O, no allocation, `std` only (plus
//! `serde::Serialize` on the output structs). No function panics; invalid input
//! yields `None`.
//!
//! # Units and notation
//!
//! * Times are **seconds**, rates are **per second**.
//! * `λ` arrival rate, `AHT` average handle time, `μ = 1/AHT` service rate of one agent.
//! * Offered load `A = λ · AHT` in Erlangs. `N` agents, `T` target answer time.
//! * `θ` abandonment rate of a waiting contact (exponential patience with mean `1/θ`).
//!
//! # Conventions
//!
//! * **Probability of waiting** = P(an arriving contact finds all `N` agents busy)
//!   (arrivals see time averages, PASTA).
//! * **Service level** `SL(T)` = (contacts *answered* by an agent after a queue wait `≤ T`)
//!   / (*all* arriving contacts). Contacts answered immediately count as within target.
//!   Under Erlang A every abandoned contact counts against SL, including contacts that
//!   abandon before `T` (there is no "short abandon" exclusion). Erlang C has no
//!   abandonment, so there this is the textbook `P(W ≤ T)`.
//! * **ASA** = mean queue wait of *answered* contacts, immediately answered contacts
//!   counting as 0. Under Erlang C every contact is answered, so this is the textbook `E[W]`.
//! * **Occupancy** = `min(A / N, 1)` (the offered-load definition, also used alongside Erlang A).
//! * **Zero load** (`A = 0`): nothing ever arrives, so every target is vacuously met:
//!   P(wait) = 0, P(abandon) = 0, SL = 1, ASA = 0, occupancy = 0 for any `N` (including 0), and
//!   the agents-required searches return `Some(0)`.
//! * **Invalid input** (NaN, ±∞, negative rates/times/loads, `AHT ≤ 0`, a target service level
//!   outside `[0, 1]`, or a load above [`MAX_LOAD_ERLANGS`]) returns `None`. Nothing is clamped
//!   silently.
//!
//! # Erlang C (M/M/N, infinitely patient callers)
//!
//! ```text
//! B(0) = 1,  B(n) = A·B(n−1) / (n + A·B(n−1))            Erlang B, no factorials, no overflow
//! C(N, A) = N·B(N) / (N − A·(1 − B(N)))                  = P(wait), for N > A
//! SL(T)   = 1 − C · exp(−(N − A) · T / AHT)
//! ASA     = C · AHT / (N − A)
//! ```
//!
//! For `N ≤ A` the queue is unstable: P(wait) = 1, SL = 0 and ASA is undefined (`None`).
//! The recursion equals the closed form `[Aᴺ/N!·N/(N−A)] / [Σₖ₌₀ᴺ⁻¹ Aᵏ/k! + Aᴺ/N!·N/(N−A)]`
//! but never forms `Aᴺ` or `N!`, so `A = 2000`, `N ≈ 2100` is routine.
//!
//! # Erlang A (M/M/N+M; Garnett, Mandelbaum & Reiman 2002)
//!
//! Number of contacts in the system is a birth–death chain with birth rate `λ` and death
//! rate `min(k, N)·μ + max(k − N, 0)·θ`. In units of AHT (`μ = 1`, `θ' = θ·AHT`):
//!
//! ```text
//! π_k     ∝ Aᵏ / k!                                k ≤ N
//! π_{N+j} = π_N · Πᵢ₌₁ʲ A / (N + i·θ')             j ≥ 1
//! ```
//!
//! This is stationary for every `N` when `θ > 0`, including `N ≤ A`. It is evaluated in log
//! space with a running rescale (no overflow/underflow), summing states from `k = 0` until the
//! geometric bound on the rest of the chain, `w_k · r/(1 − r)` with `r < 1` the next
//! (non-increasing) ratio `π_{k+1}/π_k`, is below `1e-15` of the accumulated mass. At most
//! [`MAX_QUEUE_STATES`] queued states are visited; beyond that the evaluation gives `None`
//! (only reachable with a vanishing `θ` and `N` at or below `A`, where the queue is
//! astronomically long).
//!
//! A tagged arrival that finds `j ≥ 0` contacts already queued (FCFS) reaches an agent after
//! the offered wait `V_j = Σᵢ₌₀ʲ Exp(Nμ + iθ)` (those ahead leave by service or abandonment) and
//! is answered iff its own patience exceeds `V_j`. Exactly, `1 − e^{−θV_j} ~ Beta(j+1, Nμ/θ)`,
//! which gives the closed forms used here:
//!
//! ```text
//! P(answered | j)                 = Nμ / (Nμ + (j+1)θ)
//! P(answered, wait ≤ T | j)       = Nμ / (Nμ + (j+1)θ) · P(K_T > j)
//!     K_T ~ NegativeBinomial(r = Nμ/θ + 1, p = e^{−θT}) failures:
//!     P(K_T = 0) = e^{−(Nμ+θ)T},  P(K_T = a)/P(K_T = a−1) = (1 − e^{−θT})·(a + Nμ/θ)/a
//! E[wait; answered | j]           = P(answered | j) · Σᵢ₌₀ʲ 1/(Nμ + (i+1)θ)
//! ```
//!
//! Then `P(wait) = Σ_{k≥N} π_k`, `P(abandon) = Σ_j π_{N+j}·(1 − P(answered | j))`,
//! `SL = Σ_{k<N} π_k + Σ_j π_{N+j}·P(answered, wait ≤ T | j)` and ASA is
//! `E[wait; answered] / P(answered)`. The mean wait of all arrivals (including the time
//! abandoners spent waiting) is `E[queue]/λ` by Little's law, and `P(abandon) = θ·E[wait]`.
//! As `θ → 0`, `K_T → Poisson(NμT)` and every quantity converges to Erlang C (tested below).
//! Erlang A results are accurate to about `1e-15` absolute (SL uses `1 − P(K_T ≤ j)`), so
//! probabilities below that level are round-off noise.
//! `θ = 0` exactly is delegated to Erlang C (so it is `None` for `N ≤ A`).
//!
//! Abandonment makes the queue self-limiting, so Erlang A usually needs fewer agents than
//! Erlang C. Because abandoned contacts count against SL, this can reverse for very impatient
//! callers combined with a long target `T`.
//!
//! # References
//!
//! * O. Garnett, A. Mandelbaum, M. Reiman, "Designing a Call Center with Impatient
//!   Customers", *Manufacturing & Service Operations Management* 4(3), 2002, 208–227.
//! * A. Mandelbaum, S. Zeltyn, "The M/M/n+G queue: summary of performance measures"
//!   (technical note, Technion).
//! * L. Kleinrock, *Queueing Systems, Vol. I*, 1975 (Erlang B/C).

use serde::Serialize;

/// Largest offered load (Erlangs) accepted. Larger loads return `None`; the Erlang B
/// recursion is `O(A)` and no contact center comes near this.
pub const MAX_LOAD_ERLANGS: f64 = 1_000_000.0;

/// Most queued states (contacts waiting beyond `N`) the Erlang A chain will visit before
/// giving up with `None`. Only reached when `θ·AHT` is vanishingly small and `N` is below
/// (or within a hair of) `A`, where the stationary queue is astronomically long.
pub const MAX_QUEUE_STATES: u64 = 5_000_000;

/// Relative mass below which the rest of the Erlang A chain is ignored.
const TAIL_TOLERANCE: f64 = 1e-15;

/// Erlang C (M/M/N) figures for one staffing level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErlangCMetrics {
    /// P(an arrival waits), `C(N, A)`; 1 when `N ≤ A`.
    pub probability_wait: f64,
    /// P(wait ≤ target); 0 when `N ≤ A`.
    pub service_level: f64,
    /// Mean queue wait in seconds; `None` when `N ≤ A` (unbounded).
    pub asa_secs: Option<f64>,
    /// `min(A / N, 1)`; 0 for zero load.
    pub occupancy: f64,
}

/// Erlang A (M/M/N+M) figures for one staffing level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErlangAMetrics {
    /// P(an arrival finds all agents busy).
    pub probability_wait: f64,
    /// P(an arrival abandons before reaching an agent).
    pub probability_abandon: f64,
    /// P(answered with wait ≤ target) over all arrivals; abandoned contacts count as misses.
    pub service_level: f64,
    /// Mean wait of answered contacts in seconds; `None` when no contact is ever answered
    /// (`N = 0`).
    pub asa_secs: Option<f64>,
    /// Mean time spent waiting over all arrivals (answered and abandoned), seconds.
    pub mean_wait_secs: f64,
}

/// Staffing summary for one queue, as produced by [`staffing_estimate`].
///
/// Unsuffixed prediction fields use Erlang C with the staffed agents; `*_erlang_a` fields
/// and `probability_abandon` are present only when an abandonment rate was supplied and the
/// Erlang A evaluation is defined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct StaffingEstimate {
    /// Offered load `A = λ · AHT` in Erlangs.
    pub offered_load_erlangs: f64,
    /// Smallest `N` meeting the target under Erlang C (`None` if not reached within the search
    /// limit).
    pub required_agents_erlang_c: Option<u32>,
    /// Smallest `N` meeting the target under Erlang A (`None` without an abandonment rate or
    /// if not reached within the search limit).
    pub required_agents_erlang_a: Option<u32>,
    /// Erlang C service level with the staffed agents; 0 when `N ≤ A`.
    pub predicted_service_level: f64,
    /// Erlang A service level with the staffed agents.
    pub predicted_service_level_erlang_a: Option<f64>,
    /// Erlang C ASA with the staffed agents in seconds; `None` when `N ≤ A`.
    pub predicted_asa_secs: Option<f64>,
    /// `min(A / N, 1)` with the staffed agents.
    pub occupancy: f64,
    /// Erlang C probability of waiting with the staffed agents.
    pub probability_wait: f64,
    /// Erlang A probability of abandonment with the staffed agents.
    pub probability_abandon: Option<f64>,
}

fn is_non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn is_valid_load(load: f64) -> bool {
    is_non_negative(load) && load <= MAX_LOAD_ERLANGS
}

fn is_valid_aht(aht_secs: f64) -> bool {
    aht_secs.is_finite() && aht_secs > 0.0
}

fn is_fraction(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

/// Offered load `A = λ · AHT` in Erlangs.
///
/// `None` if the arrival rate is negative or not finite, `aht_secs` is not a positive finite
/// number, or the load exceeds [`MAX_LOAD_ERLANGS`].
pub fn offered_load(arrival_rate_per_sec: f64, aht_secs: f64) -> Option<f64> {
    if !is_non_negative(arrival_rate_per_sec) || !is_valid_aht(aht_secs) {
        return None;
    }
    let load = arrival_rate_per_sec * aht_secs;
    is_valid_load(load).then_some(load)
}

/// Agent occupancy `min(A / N, 1)`: 0 for zero load, 1 for a positive load on zero agents.
///
/// `None` for an invalid load.
pub fn occupancy(load: f64, agents: u32) -> Option<f64> {
    if !is_valid_load(load) {
        return None;
    }
    Some(if load == 0.0 {
        0.0
    } else if agents == 0 {
        1.0
    } else {
        (load / f64::from(agents)).min(1.0)
    })
}

/// Erlang B blocking probability `B(N, A)` by the stable recursion
/// `B(n) = A·B(n−1) / (n + A·B(n−1))`, `B(0) = 1`.
///
/// `None` for an invalid load. Cost is `O(min(N, A + O(√A)))`: the recursion stops once
/// `B` underflows to 0.
pub fn erlang_b(load: f64, agents: u32) -> Option<f64> {
    if !is_valid_load(load) {
        return None;
    }
    let mut b = 1.0_f64;
    for n in 1..=agents {
        b = load * b / (f64::from(n) + load * b);
        if b == 0.0 {
            break;
        }
    }
    Some(b)
}

/// Erlang C P(wait) and SL from a precomputed `B(N, A)`, for `N > A > 0`.
fn erlang_c_from_b(load: f64, agents: u32, b: f64, aht_secs: f64, target_secs: f64) -> (f64, f64) {
    let n = f64::from(agents);
    let p_wait = (n * b / (n - load * (1.0 - b))).clamp(0.0, 1.0);
    let sl = (1.0 - p_wait * (-(n - load) * target_secs / aht_secs).exp()).clamp(0.0, 1.0);
    (p_wait, sl)
}

/// Erlang C probability that an arrival waits, `C(N, A)`.
///
/// 0 for zero load, 1 when `N ≤ A` (with `A > 0`). `None` for an invalid load.
pub fn erlang_c_probability_wait(load: f64, agents: u32) -> Option<f64> {
    let b = erlang_b(load, agents)?;
    let n = f64::from(agents);
    Some(if load == 0.0 {
        0.0
    } else if n <= load {
        1.0
    } else {
        (n * b / (n - load * (1.0 - b))).clamp(0.0, 1.0)
    })
}

/// Erlang C figures for `agents` agents: P(wait), SL(`target_secs`), ASA and occupancy.
///
/// For `N ≤ A` (positive load): P(wait) = 1, SL = 0, ASA = `None`, occupancy = 1.
/// `None` for invalid input (see the module docs).
pub fn erlang_c(load: f64, aht_secs: f64, agents: u32, target_secs: f64) -> Option<ErlangCMetrics> {
    if !is_valid_aht(aht_secs) || !is_non_negative(target_secs) {
        return None;
    }
    let occupancy = occupancy(load, agents)?;
    let n = f64::from(agents);
    if load == 0.0 {
        return Some(ErlangCMetrics {
            probability_wait: 0.0,
            service_level: 1.0,
            asa_secs: Some(0.0),
            occupancy,
        });
    }
    if n <= load {
        return Some(ErlangCMetrics {
            probability_wait: 1.0,
            service_level: 0.0,
            asa_secs: None,
            occupancy,
        });
    }
    let b = erlang_b(load, agents)?;
    let (probability_wait, service_level) = erlang_c_from_b(load, agents, b, aht_secs, target_secs);
    Some(ErlangCMetrics {
        probability_wait,
        service_level,
        asa_secs: Some(probability_wait * aht_secs / (n - load)),
        occupancy,
    })
}

/// Smallest `N ≤ max_agents` whose Erlang C service level (answered within `target_secs`)
/// is at least `target_sl` (a fraction in `[0, 1]`).
///
/// Zero load or `target_sl = 0` gives `Some(0)`. `None` if the target is not met by
/// `max_agents`, or for invalid input. A target of exactly 1 is met once SL rounds to 1.0 in
/// `f64`.
pub fn agents_required_erlang_c(
    load: f64,
    aht_secs: f64,
    target_secs: f64,
    target_sl: f64,
    max_agents: u32,
) -> Option<u32> {
    if !is_valid_load(load)
        || !is_valid_aht(aht_secs)
        || !is_non_negative(target_secs)
        || !is_fraction(target_sl)
    {
        return None;
    }
    if load == 0.0 || target_sl <= 0.0 {
        return Some(0);
    }
    let mut b = 1.0_f64;
    for n in 1..=max_agents {
        // Same recursion as `erlang_b`, so the result agrees bit for bit with `erlang_c`.
        if b != 0.0 {
            b = load * b / (f64::from(n) + load * b);
        }
        if f64::from(n) > load {
            let (_, sl) = erlang_c_from_b(load, n, b, aht_secs, target_secs);
            if sl >= target_sl {
                return Some(n);
            }
        }
    }
    None
}

/// Sums over the Erlang A chain, in units of AHT, all scaled by the same unknown constant.
#[derive(Default)]
struct ChainSums {
    total: f64,
    waiting: f64,
    abandoned: f64,
    answered: f64,
    answered_within_target: f64,
    answered_wait: f64,
    queue_length: f64,
}

impl ChainSums {
    fn rescale(&mut self, factor: f64) {
        self.total *= factor;
        self.waiting *= factor;
        self.abandoned *= factor;
        self.answered *= factor;
        self.answered_within_target *= factor;
        self.answered_wait *= factor;
        self.queue_length *= factor;
    }
}

/// Erlang A chain in AHT units: `load > 0`, `theta > 0` finite, `t ≥ 0` finite.
fn erlang_a_chain(
    load: f64,
    theta: f64,
    agents: u32,
    t: f64,
    aht_secs: f64,
) -> Option<ErlangAMetrics> {
    let n = f64::from(agents);
    let n_states = u64::from(agents);
    let ln_load = load.ln();

    // Negative binomial K_T: P(K_T = 0) = e^{−(N+θ)T}, ratio (1 − e^{−θT})·(a + N/θ)/a.
    let x = -(-theta * t).exp_m1();
    let x_over_theta = x / theta;
    let mut log_nb_pmf = -(n + theta) * t;
    let mut nb_cdf = 0.0_f64;
    let mut harmonic = 0.0_f64;

    let mut sums = ChainSums::default();
    let mut log_w = 0.0_f64;
    let mut reference = 0.0_f64;
    let mut k: u64 = 0;
    loop {
        if log_w > reference {
            sums.rescale((reference - log_w).exp());
            reference = log_w;
        }
        let w = (log_w - reference).exp();
        sums.total += w;
        if k < n_states {
            sums.answered += w;
            sums.answered_within_target += w;
        } else {
            let j = k - n_states;
            if j >= MAX_QUEUE_STATES {
                return None;
            }
            let jf = j as f64;
            if nb_cdf < 1.0 {
                if j > 0 {
                    log_nb_pmf += (x * jf + n * x_over_theta).ln() - jf.ln();
                }
                nb_cdf = (nb_cdf + log_nb_pmf.exp()).min(1.0);
            }
            let leave = (jf + 1.0) * theta;
            let p_answer = n / (n + leave);
            let p_abandon = 1.0 / (1.0 + n / leave);
            harmonic += 1.0 / (n + leave);
            sums.waiting += w;
            sums.abandoned += w * p_abandon;
            sums.answered += w * p_answer;
            sums.answered_within_target += w * p_answer * (1.0 - nb_cdf);
            sums.answered_wait += w * p_answer * harmonic;
            sums.queue_length += w * jf;
        }
        let next = k + 1;
        let death = if next <= n_states {
            next as f64
        } else {
            n + (next - n_states) as f64 * theta
        };
        let ln_ratio = ln_load - death.ln();
        if ln_ratio < 0.0 {
            let r = ln_ratio.exp();
            let one_minus_r = -ln_ratio.exp_m1();
            if w * r / one_minus_r <= TAIL_TOLERANCE * sums.total {
                break;
            }
        }
        log_w += ln_ratio;
        k = next;
    }

    let total = sums.total;
    let metrics = ErlangAMetrics {
        probability_wait: (sums.waiting / total).clamp(0.0, 1.0),
        probability_abandon: (sums.abandoned / total).clamp(0.0, 1.0),
        service_level: (sums.answered_within_target / total).clamp(0.0, 1.0),
        asa_secs: (sums.answered > 0.0).then(|| sums.answered_wait / sums.answered * aht_secs),
        mean_wait_secs: sums.queue_length / total / load * aht_secs,
    };
    let finite = metrics.probability_wait.is_finite()
        && metrics.probability_abandon.is_finite()
        && metrics.service_level.is_finite()
        && metrics.mean_wait_secs.is_finite()
        && metrics.asa_secs.is_none_or(f64::is_finite);
    finite.then_some(metrics)
}

/// Erlang A (M/M/N+M) figures for `agents` agents, with abandonment rate
/// `abandon_rate_per_sec = θ` (1 / mean patience).
///
/// Defined for every `N` when `θ > 0`. `θ = 0` is Erlang C (abandonment 0), hence `None` for
/// `N ≤ A`. Also `None` for invalid input, or if the chain needs more than
/// [`MAX_QUEUE_STATES`] queued states.
pub fn erlang_a(
    load: f64,
    aht_secs: f64,
    abandon_rate_per_sec: f64,
    agents: u32,
    target_secs: f64,
) -> Option<ErlangAMetrics> {
    if !is_valid_load(load)
        || !is_valid_aht(aht_secs)
        || !is_non_negative(abandon_rate_per_sec)
        || !is_non_negative(target_secs)
    {
        return None;
    }
    if load == 0.0 {
        return Some(ErlangAMetrics {
            probability_wait: 0.0,
            probability_abandon: 0.0,
            service_level: 1.0,
            asa_secs: Some(0.0),
            mean_wait_secs: 0.0,
        });
    }
    if abandon_rate_per_sec == 0.0 {
        let c = erlang_c(load, aht_secs, agents, target_secs)?;
        let asa = c.asa_secs?;
        return Some(ErlangAMetrics {
            probability_wait: c.probability_wait,
            probability_abandon: 0.0,
            service_level: c.service_level,
            asa_secs: Some(asa),
            mean_wait_secs: asa,
        });
    }
    let theta = abandon_rate_per_sec * aht_secs;
    let t = target_secs / aht_secs;
    if !theta.is_finite() || !t.is_finite() {
        return None;
    }
    erlang_a_chain(load, theta, agents, t, aht_secs)
}

/// Smallest `N ≤ max_agents` whose Erlang A service level (answered within `target_secs`,
/// over all arrivals) is at least `target_sl`.
///
/// Binary search (SL is non-decreasing in `N`); staffing levels where [`erlang_a`] is `None`
/// count as missing the target. Zero load or `target_sl = 0` gives `Some(0)`. `None` if the
/// target is not met by `max_agents`, or for invalid input.
pub fn agents_required_erlang_a(
    load: f64,
    aht_secs: f64,
    abandon_rate_per_sec: f64,
    target_secs: f64,
    target_sl: f64,
    max_agents: u32,
) -> Option<u32> {
    if !is_valid_load(load)
        || !is_valid_aht(aht_secs)
        || !is_non_negative(abandon_rate_per_sec)
        || !is_non_negative(target_secs)
        || !is_fraction(target_sl)
    {
        return None;
    }
    if load == 0.0 || target_sl <= 0.0 {
        return Some(0);
    }
    let meets = |agents: u32| {
        erlang_a(load, aht_secs, abandon_rate_per_sec, agents, target_secs)
            .is_some_and(|m| m.service_level >= target_sl)
    };
    if !meets(max_agents) {
        return None;
    }
    // Invariant: `lo` misses the target (N = 0 answers nobody), `hi` meets it.
    let (mut lo, mut hi) = (0_u32, max_agents);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if meets(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Maximum-likelihood abandonment rate `θ̂` (per second) for exponential patience:
/// `θ̂ = abandoned / total waiting time`.
///
/// `total_wait_secs_of_all_contacts` must add up the queue time of *every* contact in the
/// window: answered contacts up to answer (censored patience observations), abandoned contacts
/// up to abandonment, and optionally contacts still waiting at the window's end. `None` when
/// that total is not a positive finite number (no information, or an infinite rate);
/// `Some(0.0)` when nobody abandoned.
pub fn abandonment_rate_from_observations(
    abandoned: u64,
    total_wait_secs_of_all_contacts: f64,
) -> Option<f64> {
    let total = total_wait_secs_of_all_contacts;
    if !(total.is_finite() && total > 0.0) {
        return None;
    }
    let rate = abandoned as f64 / total;
    rate.is_finite().then_some(rate)
}

/// Upper bound for the agents-required searches in [`staffing_estimate`]: `⌈A + 10√A⌉ + 100`,
/// enough for any target a floating-point SL can distinguish from 1.
fn default_search_limit(load: f64) -> u32 {
    // `load ≤ MAX_LOAD_ERLANGS`, so this fits comfortably in `u32`.
    (load + 10.0 * load.sqrt()).ceil() as u32 + 100
}

/// Staffing summary for one queue from live figures.
///
/// Arguments: arrival rate `λ` (per second), AHT (seconds), optional abandonment rate `θ`
/// (per second, e.g. from [`abandonment_rate_from_observations`]), agents currently staffed,
/// target answer time (seconds) and target service level (fraction in `[0, 1]`).
///
/// Predictions with the staffed agents use Erlang C (`predicted_service_level`,
/// `predicted_asa_secs`, `probability_wait`, `occupancy`), plus Erlang A
/// (`predicted_service_level_erlang_a`, `probability_abandon`) when `θ` is given. Required
/// agents are searched up to `⌈A + 10√A⌉ + 100`. Zero load gives 0 required agents and SL 1.
///
/// `None` for invalid input: negative/NaN/infinite rates or times, `aht_secs ≤ 0` (use a
/// configured default before any contact has been handled), `target_sl` outside `[0, 1]`, an
/// invalid `θ`, or a load above [`MAX_LOAD_ERLANGS`].
pub fn staffing_estimate(
    arrival_rate_per_sec: f64,
    aht_secs: f64,
    abandon_rate_per_sec: Option<f64>,
    agents_staffed: u32,
    target_secs: f64,
    target_sl: f64,
) -> Option<StaffingEstimate> {
    let load = offered_load(arrival_rate_per_sec, aht_secs)?;
    if !is_non_negative(target_secs)
        || !is_fraction(target_sl)
        || abandon_rate_per_sec.is_some_and(|theta| !is_non_negative(theta))
    {
        return None;
    }
    let c = erlang_c(load, aht_secs, agents_staffed, target_secs)?;
    let limit = default_search_limit(load);
    let (required_a, a) = match abandon_rate_per_sec {
        Some(theta) => (
            agents_required_erlang_a(load, aht_secs, theta, target_secs, target_sl, limit),
            erlang_a(load, aht_secs, theta, agents_staffed, target_secs),
        ),
        None => (None, None),
    };
    Some(StaffingEstimate {
        offered_load_erlangs: load,
        required_agents_erlang_c: agents_required_erlang_c(
            load,
            aht_secs,
            target_secs,
            target_sl,
            limit,
        ),
        required_agents_erlang_a: required_a,
        predicted_service_level: c.service_level,
        predicted_service_level_erlang_a: a.map(|m| m.service_level),
        predicted_asa_secs: c.asa_secs,
        occupancy: c.occupancy,
        probability_wait: c.probability_wait,
        probability_abandon: a.map(|m| m.probability_abandon),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AHT: f64 = 180.0;
    const TARGET: f64 = 20.0;

    fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{what}: got {actual}, expected {expected} ± {tolerance}"
        );
    }

    fn c_metrics(load: f64, agents: u32) -> ErlangCMetrics {
        erlang_c(load, AHT, agents, TARGET).expect("valid Erlang C input")
    }

    fn a_metrics(load: f64, theta: f64, agents: u32) -> ErlangAMetrics {
        erlang_a(load, AHT, theta, agents, TARGET).expect("valid Erlang A input")
    }

    // Reference values computed independently in Python: P(wait) with exact rational
    // arithmetic (`fractions.Fraction`, the factorial closed form), SL and ASA with mpmath at
    // 50 digits. A = 10 Erlangs (200 calls/h × 180 s), T = 20 s.
    const TEN_ERLANG_TABLE: [(u32, f64, f64, f64); 5] = [
        // (N, P(wait), SL(20 s), ASA s)
        (11, 0.682_118_204_689, 0.389_613_811_729, 122.781_276_844),
        (12, 0.449_388_224_298, 0.640_158_040_374, 40.444_940_186_8),
        (13, 0.285_270_453_036, 0.795_594_788_418, 17.116_227_182_2),
        (14, 0.174_131_933_595, 0.888_350_019_179, 7.835_937_011_78),
        (15, 0.102_042_367_008, 0.941_452_842_869, 3.673_525_212_29),
    ];

    #[test]
    fn erlang_c_matches_the_published_table_for_ten_erlangs() {
        for (agents, p_wait, sl, asa) in TEN_ERLANG_TABLE {
            let m = c_metrics(10.0, agents);
            assert_close(m.probability_wait, p_wait, 1e-10, "P(wait)");
            assert_close(m.service_level, sl, 1e-10, "SL");
            assert_close(m.asa_secs.expect("stable"), asa, 1e-8, "ASA");
            assert_close(m.occupancy, 10.0 / f64::from(agents), 1e-15, "occupancy");
        }
        // The four-decimal values as quoted in Erlang C tables.
        assert_close(
            c_metrics(10.0, 11).probability_wait,
            0.6821,
            5e-5,
            "P(wait) N=11",
        );
        assert_close(c_metrics(10.0, 11).service_level, 0.3896, 5e-5, "SL N=11");
        assert_close(
            c_metrics(10.0, 14).probability_wait,
            0.1741,
            5e-5,
            "P(wait) N=14",
        );
        assert_close(c_metrics(10.0, 14).service_level, 0.8884, 5e-5, "SL N=14");
    }

    #[test]
    fn erlang_c_matches_exact_values_for_a_fractional_load() {
        // A = 2.5, AHT 300 s, T 30 s; exact fractions + mpmath.
        for (agents, p_wait, sl) in [
            (3, 0.702_247_191_011_236, 0.332_001_808_637_139),
            (4, 0.319_856_704_196_52, 0.724_696_783_385_025),
            (5, 0.130_371_297_455_152, 0.898_466_731_451_892),
        ] {
            let m = erlang_c(2.5, 300.0, agents, 30.0).expect("valid");
            assert_close(m.probability_wait, p_wait, 1e-12, "P(wait)");
            assert_close(m.service_level, sl, 1e-12, "SL");
        }
        assert_close(
            erlang_b(10.0, 10).expect("valid"),
            0.214_582_343_107_347_33,
            1e-14,
            "B",
        );
        assert_close(
            erlang_b(10.0, 14).expect("valid"),
            0.056_819_143_386_520_86,
            1e-14,
            "B",
        );
    }

    #[test]
    fn the_hundred_calls_per_half_hour_example_needs_fourteen_agents_for_eighty_twenty() {
        let load = offered_load(100.0 / 1800.0, AHT).expect("valid");
        assert_close(load, 10.0, 1e-12, "load");
        assert_eq!(
            agents_required_erlang_c(load, AHT, TARGET, 0.80, 100),
            Some(14)
        );
        assert!(c_metrics(load, 13).service_level < 0.80);
        assert_close(
            c_metrics(load, 14).service_level,
            0.8884,
            5e-5,
            "SL with 14",
        );
    }

    #[test]
    fn agents_required_erlang_c_agrees_with_the_service_level_it_predicts() {
        for (load, target_sl) in [(0.3, 0.95), (4.2, 0.8), (57.0, 0.9), (2000.0, 0.8)] {
            let n =
                agents_required_erlang_c(load, AHT, TARGET, target_sl, 5000).expect("reachable");
            assert!(c_metrics(load, n).service_level >= target_sl);
            assert!(c_metrics(load, n - 1).service_level < target_sl);
        }
        assert_eq!(agents_required_erlang_c(10.0, AHT, TARGET, 0.8, 13), None);
    }

    #[test]
    fn two_thousand_erlangs_neither_overflow_nor_lose_precision() {
        // Exact rational arithmetic reference (Python fractions) for A = 2000, T = 20 s.
        for (agents, p_wait, sl) in [
            (2001, 0.972_422_629_318_683, 0.129_837_998_725_636),
            (2050, 0.183_354_738_702_138, 0.999_291_165_222_984),
            (2100, 0.015_596_037_475_177_7, 0.999_999_766_911_94),
        ] {
            let m = c_metrics(2000.0, agents);
            assert_close(m.probability_wait, p_wait, 1e-10, "P(wait)");
            assert_close(m.service_level, sl, 1e-10, "SL");
            assert!(m.asa_secs.is_some_and(f64::is_finite));
        }
        let n = agents_required_erlang_c(2000.0, AHT, TARGET, 0.8, 2500).expect("reachable");
        assert!(n > 2000 && n < 2050, "got {n}");
        let a = a_metrics(2000.0, 1.0 / 120.0, 2040);
        assert!(a.service_level.is_finite() && a.probability_abandon.is_finite());
    }

    #[test]
    fn erlang_c_gives_certain_wait_and_zero_service_level_when_agents_do_not_exceed_load() {
        for agents in [0, 5, 10] {
            let m = c_metrics(10.0, agents);
            assert_eq!(m.probability_wait, 1.0);
            assert_eq!(m.service_level, 0.0);
            assert_eq!(m.asa_secs, None);
            assert_eq!(m.occupancy, 1.0);
        }
        assert_eq!(erlang_c_probability_wait(10.0, 10), Some(1.0));
    }

    // Independent reference: mpmath (40 digits) stationary distribution of the truncated
    // birth-death chain, the tagged-caller absorbing chain solved by uniformization, and a
    // first-step recursion for answered waits (no Beta/negative-binomial shortcut).
    // A = 10, AHT 180 s, T = 20 s.
    const ERLANG_A_TABLE: [(f64, u32, f64, f64, f64, f64); 12] = [
        // (θ, N, P(wait), P(abandon), SL, ASA of answered)
        (
            1.0 / 180.0,
            8,
            0.779_779_353_4,
            0.246_035_096_4,
            0.323_941_965_2,
            43.717_829_93,
        ),
        (
            1.0 / 180.0,
            10,
            0.542_070_285_5,
            0.125_110_035_7,
            0.586_979_980_3,
            20.689_762_1,
        ),
        (
            1.0 / 180.0,
            11,
            0.416_960_249_8,
            0.083_414_010_74,
            0.705_371_007_2,
            13.535_126_43,
        ),
        (
            1.0 / 180.0,
            12,
            0.303_223_853_7,
            0.053_091_625_37,
            0.802_303_867_3,
            8.528_708_829,
        ),
        (
            1.0 / 180.0,
            13,
            0.208_443_523_6,
            0.032_247_273_01,
            0.875_087_681_9,
            5.163_420_78,
        ),
        (
            1.0 / 180.0,
            14,
            0.135_535_577_4,
            0.018_693_715_27,
            0.925_559_792_1,
            2.997_690_156,
        ),
        (
            1.0 / 60.0,
            8,
            0.625_179_065_7,
            0.278_352_861_6,
            0.527_552_459_4,
            14.074_539_07,
        ),
        (
            1.0 / 60.0,
            10,
            0.423_417_674_9,
            0.157_526_871_5,
            0.718_010_188_1,
            7.494_469_741,
        ),
        (
            1.0 / 60.0,
            11,
            0.326_788_6,
            0.111_780_419_6,
            0.796_522_711_5,
            5.229_401_578,
        ),
        (
            1.0 / 60.0,
            12,
            0.240_426_108_4,
            0.075_901_796_93,
            0.860_300_659_6,
            3.519_832_409,
        ),
        (
            1.0 / 60.0,
            13,
            0.168_128_463_3,
            0.049_169_083_71,
            0.908_962_492,
            2.275_712_496,
        ),
        (
            1.0 / 60.0,
            14,
            0.111_527_340_7,
            0.030_321_837_31,
            0.943_776_107_3,
            1.408_290_552,
        ),
    ];

    #[test]
    fn erlang_a_matches_an_independent_uniformization_reference() {
        for (theta, agents, p_wait, p_abandon, sl, asa) in ERLANG_A_TABLE {
            let m = a_metrics(10.0, theta, agents);
            assert_close(m.probability_wait, p_wait, 1e-9, "P(wait)");
            assert_close(m.probability_abandon, p_abandon, 1e-9, "P(abandon)");
            assert_close(m.service_level, sl, 1e-9, "SL");
            assert_close(m.asa_secs.expect("answered"), asa, 1e-7, "ASA");
        }
    }

    #[test]
    fn erlang_a_abandonment_obeys_littles_law() {
        for (theta, agents) in [(1.0 / 180.0, 8), (1.0 / 60.0, 12), (0.5, 3), (1e-4, 11)] {
            let m = a_metrics(10.0, theta, agents);
            assert_close(
                m.probability_abandon,
                theta * m.mean_wait_secs,
                1e-12,
                "P(ab)=θE[W]",
            );
        }
    }

    #[test]
    fn erlang_a_converges_to_erlang_c_as_patience_becomes_infinite() {
        for agents in 11..=15 {
            let c = c_metrics(10.0, agents);
            let c_asa = c.asa_secs.expect("stable");
            for (theta, tolerance) in [(1e-6, 1e-3), (1e-9, 1e-6), (1e-12, 1e-9)] {
                let a = a_metrics(10.0, theta, agents);
                assert_close(a.probability_wait, c.probability_wait, tolerance, "P(wait)");
                assert_close(a.service_level, c.service_level, tolerance, "SL");
                assert_close(a.probability_abandon, 0.0, tolerance, "P(abandon)");
                let a_asa = a.asa_secs.expect("answered");
                assert_close(a_asa, c_asa, tolerance * c_asa.max(1.0) * 10.0, "ASA");
            }
            let exact = a_metrics(10.0, 0.0, agents);
            assert_eq!(exact.service_level, c.service_level);
            assert_eq!(exact.probability_abandon, 0.0);
        }
        assert_eq!(erlang_a(10.0, AHT, 0.0, 10, TARGET), None);
    }

    #[test]
    fn erlang_a_needs_no_more_agents_than_erlang_c_for_realistic_patience() {
        for (load, theta, target_sl) in [
            (10.0, 1.0 / 180.0, 0.8),
            (10.0, 1.0 / 60.0, 0.8),
            (2.5, 1.0 / 300.0, 0.9),
            (250.0, 1.0 / 240.0, 0.8),
            (2000.0, 1.0 / 120.0, 0.8),
        ] {
            let c = agents_required_erlang_c(load, AHT, TARGET, target_sl, 3000).expect("C");
            let a = agents_required_erlang_a(load, AHT, theta, TARGET, target_sl, 3000).expect("A");
            assert!(a <= c, "load {load}: Erlang A {a} > Erlang C {c}");
        }
        assert_eq!(
            agents_required_erlang_a(10.0, AHT, 1.0 / 180.0, TARGET, 0.8, 100),
            Some(12)
        );
        assert_eq!(
            agents_required_erlang_a(10.0, AHT, 1.0 / 60.0, TARGET, 0.8, 100),
            Some(12)
        );
    }

    #[test]
    fn agents_required_erlang_a_binary_search_matches_a_linear_scan() {
        for (load, theta, target_sl) in [(10.0, 1.0 / 90.0, 0.85), (37.5, 1.0 / 200.0, 0.7)] {
            let scan = (0..=200).find(|&n| a_metrics(load, theta, n).service_level >= target_sl);
            let search = agents_required_erlang_a(load, AHT, theta, TARGET, target_sl, 200);
            assert_eq!(search, scan);
        }
        assert_eq!(
            agents_required_erlang_a(10.0, AHT, 1.0 / 60.0, TARGET, 0.8, 11),
            None
        );
        assert_eq!(
            agents_required_erlang_a(10.0, AHT, 0.0, TARGET, 0.8, 100),
            agents_required_erlang_c(10.0, AHT, TARGET, 0.8, 100)
        );
    }

    #[test]
    fn erlang_a_stays_finite_when_agents_do_not_exceed_the_load() {
        for agents in [1, 5, 9, 10] {
            let m = a_metrics(10.0, 1.0 / 180.0, agents);
            assert!(m.probability_abandon > 0.0 && m.probability_abandon < 1.0);
            assert!(m.probability_wait > 0.0 && m.probability_wait < 1.0);
            assert!(m.service_level > 0.0 && m.service_level < 1.0);
            assert!(m.asa_secs.is_some_and(f64::is_finite));
        }
        // Heavy overload: the fluid limit gives P(abandon) ≈ 1 − N/A = 0.05.
        let m = a_metrics(2000.0, 1.0 / 180.0, 1900);
        assert_close(m.probability_abandon, 0.05, 0.005, "fluid P(abandon)");
        assert!(m.probability_wait > 0.98);
        // Fluid queue ≈ (A − N)/(θ·AHT) = 100 contacts, drained at N/AHT ≈ 10.6/s: short waits.
        assert_close(
            m.mean_wait_secs,
            100.0 / (1900.0 / 180.0),
            1.0,
            "fluid mean wait",
        );
        // Nobody is ever answered with zero agents.
        let m = a_metrics(10.0, 1.0 / 180.0, 0);
        assert_eq!((m.probability_wait, m.probability_abandon), (1.0, 1.0));
        assert_eq!((m.service_level, m.asa_secs), (0.0, None));
        assert_close(m.mean_wait_secs, 180.0, 1e-9, "mean patience");
    }

    #[test]
    fn more_agents_never_lower_the_service_level() {
        // Erlang C is exact here; Erlang A is allowed its documented 1e-15 absolute round-off.
        for load in [0.5, 10.0, 123.4] {
            let mut previous_c = -1.0;
            let mut previous_a = -1.0;
            for agents in 0..(load as u32 + 40) {
                let c = c_metrics(load, agents).service_level;
                let a = a_metrics(load, 1.0 / 150.0, agents).service_level;
                assert!(c >= previous_c, "Erlang C SL fell at N={agents}");
                assert!(a >= previous_a - 1e-15, "Erlang A SL fell at N={agents}");
                previous_c = c;
                previous_a = a;
            }
        }
    }

    #[test]
    fn a_zero_target_time_leaves_only_immediately_answered_contacts() {
        let c = erlang_c(10.0, AHT, 12, 0.0).expect("valid");
        assert_close(c.service_level, 1.0 - c.probability_wait, 1e-15, "C");
        let a = erlang_a(10.0, AHT, 1.0 / 180.0, 12, 0.0).expect("valid");
        assert_close(a.service_level, 1.0 - a.probability_wait, 1e-15, "A");
    }

    #[test]
    fn abandonment_rate_estimator_is_the_exponential_mle() {
        assert_eq!(
            abandonment_rate_from_observations(12, 3600.0),
            Some(12.0 / 3600.0)
        );
        assert_eq!(abandonment_rate_from_observations(0, 500.0), Some(0.0));
        assert_eq!(abandonment_rate_from_observations(0, 0.0), None);
        assert_eq!(abandonment_rate_from_observations(3, 0.0), None);
        assert_eq!(abandonment_rate_from_observations(3, -1.0), None);
        assert_eq!(abandonment_rate_from_observations(3, f64::NAN), None);
        assert_eq!(abandonment_rate_from_observations(3, f64::INFINITY), None);
        assert_eq!(abandonment_rate_from_observations(u64::MAX, 1e-320), None);
    }

    #[test]
    fn zero_load_needs_no_agents_and_meets_every_target() {
        assert_eq!(
            agents_required_erlang_c(0.0, AHT, TARGET, 0.99, 10),
            Some(0)
        );
        assert_eq!(
            agents_required_erlang_a(0.0, AHT, 0.01, TARGET, 0.99, 10),
            Some(0)
        );
        let c = c_metrics(0.0, 0);
        assert_eq!(
            (c.probability_wait, c.service_level, c.occupancy),
            (0.0, 1.0, 0.0)
        );
        let a = a_metrics(0.0, 0.01, 0);
        assert_eq!((a.probability_abandon, a.service_level), (0.0, 1.0));
        let s = staffing_estimate(0.0, AHT, Some(0.01), 0, TARGET, 0.8).expect("valid");
        assert_eq!(s.required_agents_erlang_c, Some(0));
        assert_eq!(s.required_agents_erlang_a, Some(0));
        assert_eq!(s.predicted_service_level, 1.0);
    }

    #[test]
    fn invalid_inputs_return_none_instead_of_panicking() {
        for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(offered_load(bad, AHT), None);
            assert_eq!(offered_load(0.1, bad), None);
            assert_eq!(erlang_b(bad, 3), None);
            assert_eq!(erlang_c(bad, AHT, 3, TARGET), None);
            assert_eq!(erlang_c(1.0, bad, 3, TARGET), None);
            assert_eq!(erlang_c(1.0, AHT, 3, bad), None);
            assert_eq!(erlang_a(1.0, AHT, bad, 3, TARGET), None);
            assert_eq!(agents_required_erlang_c(1.0, AHT, TARGET, bad, 10), None);
            assert_eq!(
                agents_required_erlang_a(1.0, AHT, bad, TARGET, 0.8, 10),
                None
            );
            assert_eq!(staffing_estimate(0.1, AHT, Some(bad), 3, TARGET, 0.8), None);
            assert_eq!(staffing_estimate(0.1, AHT, None, 3, bad, 0.8), None);
        }
        assert_eq!(offered_load(0.1, 0.0), None);
        assert_eq!(agents_required_erlang_c(1.0, AHT, TARGET, 1.5, 10), None);
        assert_eq!(staffing_estimate(0.1, AHT, None, 3, TARGET, -0.1), None);
    }

    #[test]
    fn huge_loads_are_evaluated_or_rejected_without_panicking() {
        let load = MAX_LOAD_ERLANGS;
        let m = erlang_c(load, AHT, 1_003_000, TARGET).expect("valid");
        assert!(m.service_level.is_finite() && m.service_level > 0.5);
        assert_eq!(erlang_c(load * 10.0, AHT, 3, TARGET), None);
        assert_eq!(
            agents_required_erlang_c(load * 10.0, AHT, TARGET, 0.8, u32::MAX),
            None
        );
        let a = erlang_a(50_000.0, AHT, 1.0 / 180.0, 50_100, TARGET).expect("valid");
        assert!(a.service_level.is_finite());
        // Far more agents than load: the chain stops long before N.
        let a = erlang_a(3.0, AHT, 1.0 / 180.0, u32::MAX, TARGET).expect("valid");
        assert_eq!(a.probability_wait, 0.0);
        // Overloaded with practically infinite patience: the queue outgrows the state cap.
        assert_eq!(erlang_a(10.0, AHT, 1e-12, 5, TARGET), None);
    }

    #[test]
    fn staffing_estimate_summarises_both_models() {
        let s = staffing_estimate(100.0 / 1800.0, AHT, Some(1.0 / 180.0), 13, TARGET, 0.8)
            .expect("valid");
        assert_close(s.offered_load_erlangs, 10.0, 1e-12, "load");
        assert_eq!(s.required_agents_erlang_c, Some(14));
        assert_eq!(s.required_agents_erlang_a, Some(12));
        assert_close(s.predicted_service_level, 0.795_594_788_418, 1e-10, "SL C");
        let sl_a = s.predicted_service_level_erlang_a.expect("θ given");
        assert_close(sl_a, 0.875_087_681_9, 1e-9, "SL A");
        assert_close(
            s.predicted_asa_secs.expect("stable"),
            17.116_227_182_2,
            1e-8,
            "ASA",
        );
        assert_close(s.occupancy, 10.0 / 13.0, 1e-15, "occupancy");
        assert_close(s.probability_wait, 0.285_270_453_036, 1e-10, "P(wait)");
        let p_ab = s.probability_abandon.expect("θ given");
        assert_close(p_ab, 0.032_247_273_01, 1e-9, "P(abandon)");

        let understaffed =
            staffing_estimate(100.0 / 1800.0, AHT, None, 9, TARGET, 0.8).expect("valid");
        assert_eq!(understaffed.predicted_service_level, 0.0);
        assert_eq!(understaffed.predicted_asa_secs, None);
        assert_eq!(understaffed.probability_abandon, None);
        assert_eq!(understaffed.required_agents_erlang_a, None);

        let json = serde_json::to_value(s).expect("serializable");
        assert_eq!(json["required_agents_erlang_c"], 14);
        assert!(json["predicted_service_level_erlang_a"].is_number());
    }
}
