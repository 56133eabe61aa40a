//! # Matching — which agent gets the offer
//!
//! When a contact reaches the head of its queue, exactly one agent is
//! offered it. The choice is deterministic and explainable:
//!
//! 1. **Eligibility** ([`is_eligible`]): the agent is available, has the
//!    skill at or above the required proficiency, has room on the contact's
//!    channel (`load + pending_offers < capacity`; a missing or zero capacity
//!    means the agent does not take that channel at all — e.g. chat 3,
//!    voice 1), works at an allowed site, and has not already declined or
//!    timed out on this contact.
//! 2. **Continuity** ([`ChoiceReason::PreferredAgent`]): a patient who was
//!    helped by someone recently (or a bounced patient routed back to the
//!    last owner, see `super::frustration`) is offered to that agent first
//!    while the preference window is open. If that agent is eligible they
//!    get it. If they are *merely busy* — signed in, qualified, just not free
//!    right now — the contact is held for them ([`choose_agent`] returns
//!    `None`) until `preferred_until`; continuity is worth a short wait, and
//!    the window bounds that wait. After the window, or if the agent is gone,
//!    unqualified or has declined, anyone eligible may take it.
//! 3. **Best match** ([`ChoiceReason::BestMatch`]): highest proficiency in
//!    the skill, then longest idle (earliest `idle_since`, spreading work
//!    fairly), then agent id for a stable result.
//!
//! ## Timed relaxation ("bullseye")
//!
//! A contact first targets the best-suited agents at its home site; the
//! longer it waits, the wider the circle ([`relaxed_needs`]): by default
//! proficiency ≥ 3 at the home site at first, any proficiency at the home
//! site after 30 s, then other allowed sites after 90 s. The contact's own
//! `min_proficiency` is a hard floor relaxation never goes below, and a
//! skill that is not cross-site (clinical work tied to a site's licences,
//! protocols and local knowledge) never widens beyond its home site.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Highest proficiency level (proficiency is 1..=5).
pub const MAX_PROFICIENCY: u8 = 5;

/// Which sites may serve a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteScope {
    /// Only the contact's home site.
    Home,
    /// Any site.
    Any,
    /// The home site plus the listed sites (the home site is always allowed).
    List(Vec<String>),
}

/// What a contact needs from an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactNeeds {
    /// Skill the contact is routed on, e.g. `"scheduling"`.
    pub skill: String,
    /// Channel name, e.g. `"voice"`, `"chat"`.
    pub channel: String,
    /// Minimum proficiency in `skill`, 1..=5 (0 is treated as 1).
    pub min_proficiency: u8,
    /// The contact's home site.
    pub site: String,
    /// Sites allowed to serve it.
    pub allowed_sites: SiteScope,
    /// Agent to offer it to first (continuity), if any.
    pub preferred_agent: Option<String>,
    /// End of the preference window. While `now < preferred_until` the
    /// contact waits for a busy preferred agent; `None` means a soft
    /// preference: offered first if eligible, never waited for.
    pub preferred_until: Option<DateTime<Utc>>,
    /// Agents who declined or timed out on an offer of this contact.
    pub excluded_agents: Vec<String>,
}

/// What the router knows about one signed-in agent. Pass only signed-in
/// agents: an agent missing from the slice is treated as gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    /// Agent id.
    pub id: String,
    /// Site the agent works at.
    pub site: String,
    /// True if the agent is in an available state (not on break, not in
    /// wrap-up, not offline).
    pub available: bool,
    /// Proficiency per skill, 1..=5 (0 or missing = not skilled).
    pub skills: BTreeMap<String, u8>,
    /// Concurrent contacts the agent may handle per channel (0 or missing =
    /// does not take that channel).
    pub capacity: BTreeMap<String, u32>,
    /// Contacts currently handled per channel.
    pub load: BTreeMap<String, u32>,
    /// Since when the agent has been idle (or last finished a contact);
    /// earlier = idle longer = preferred.
    pub idle_since: DateTime<Utc>,
    /// Offers sent to the agent and not yet answered (they count against
    /// capacity so an agent is not offered more than they can accept).
    pub pending_offers: u32,
}

/// Why an agent was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceReason {
    /// The contact's preferred agent (continuity).
    PreferredAgent,
    /// The best eligible agent by proficiency, idle time and id.
    BestMatch,
}

impl ChoiceReason {
    /// Stable, bounded label value (same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceReason::PreferredAgent => "preferred_agent",
            ChoiceReason::BestMatch => "best_match",
        }
    }
}

/// The agent to offer the contact to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Agent id.
    pub agent_id: String,
    /// Why this agent.
    pub reason: ChoiceReason,
}

/// True if an agent at `agent_site` may serve a contact whose home site is
/// `home` under `scope`. The home site is always allowed.
pub fn site_allowed(scope: &SiteScope, home: &str, agent_site: &str) -> bool {
    agent_site == home
        || match scope {
            SiteScope::Home => false,
            SiteScope::Any => true,
            SiteScope::List(sites) => sites.iter().any(|s| s == agent_site),
        }
}

/// The agent's capacity on `channel` (0 if missing).
pub fn channel_capacity(agent: &AgentView, channel: &str) -> u32 {
    agent.capacity.get(channel).copied().unwrap_or(0)
}

/// True if the agent can take one more contact on `channel` right now:
/// `load + pending_offers < capacity`.
pub fn has_room(agent: &AgentView, channel: &str) -> bool {
    let load = agent.load.get(channel).copied().unwrap_or(0);
    load.saturating_add(agent.pending_offers) < channel_capacity(agent, channel)
}

/// The agent's proficiency in `skill` (0 if missing).
pub fn proficiency(agent: &AgentView, skill: &str) -> u8 {
    agent.skills.get(skill).copied().unwrap_or(0)
}

/// Qualified = skilled enough, at an allowed site, takes the channel at all,
/// not excluded. Says nothing about being free right now.
fn qualified(agent: &AgentView, needs: &ContactNeeds) -> bool {
    proficiency(agent, &needs.skill) >= needs.min_proficiency.max(1)
        && site_allowed(&needs.allowed_sites, &needs.site, &agent.site)
        && channel_capacity(agent, &needs.channel) > 0
        && !needs.excluded_agents.contains(&agent.id)
}

/// True if the agent may be offered the contact now (see the module docs).
pub fn is_eligible(agent: &AgentView, needs: &ContactNeeds) -> bool {
    agent.available && qualified(agent, needs) && has_room(agent, &needs.channel)
}

/// True if the contact must wait for its preferred agent: the preference
/// window is open (`now < preferred_until`) and the preferred agent is
/// signed in and qualified but not free right now (unavailable or at
/// capacity). In that case [`choose_agent`] returns `None`.
pub fn holding_for_preferred<A: Borrow<AgentView>>(
    needs: &ContactNeeds,
    agents: &[A],
    now: DateTime<Utc>,
) -> bool {
    let window_open = matches!(needs.preferred_until, Some(until) if now < until);
    if !window_open {
        return false;
    }
    preferred(needs, agents).is_some_and(|a| qualified(a, needs) && !is_eligible(a, needs))
}

fn preferred<'a, A: Borrow<AgentView>>(
    needs: &ContactNeeds,
    agents: &'a [A],
) -> Option<&'a AgentView> {
    let id = needs.preferred_agent.as_deref()?;
    agents.iter().map(Borrow::borrow).find(|a| a.id == id)
}

/// Picks the agent to offer the contact to, or `None` if nobody is eligible
/// or the contact is being held for its busy preferred agent (see
/// [`holding_for_preferred`]).
///
/// Order: the preferred agent if eligible (while the window is open, or
/// always for a soft preference without `preferred_until`); otherwise the
/// eligible agent with the highest proficiency, then the longest idle, then
/// the smallest id.
pub fn choose_agent<A: Borrow<AgentView>>(
    needs: &ContactNeeds,
    agents: &[A],
    now: DateTime<Utc>,
) -> Option<Choice> {
    let window_closed = matches!(needs.preferred_until, Some(until) if now >= until);
    if !window_closed {
        if let Some(agent) = preferred(needs, agents) {
            if is_eligible(agent, needs) {
                return Some(Choice {
                    agent_id: agent.id.clone(),
                    reason: ChoiceReason::PreferredAgent,
                });
            }
        }
        if holding_for_preferred(needs, agents, now) {
            return None;
        }
    }
    agents
        .iter()
        .map(Borrow::borrow)
        .filter(|a| is_eligible(a, needs))
        .min_by(|a, b| better_first(a, b, &needs.skill))
        .map(|a| Choice {
            agent_id: a.id.clone(),
            reason: ChoiceReason::BestMatch,
        })
}

/// `Less` = `a` is the better choice.
fn better_first(a: &AgentView, b: &AgentView, skill: &str) -> Ordering {
    proficiency(b, skill)
        .cmp(&proficiency(a, skill))
        .then_with(|| a.idle_since.cmp(&b.idle_since))
        .then_with(|| a.id.cmp(&b.id))
}

/// The relaxation step in force after waiting `waited_secs` (index into `cfg.steps`):
/// the latest step whose `after_secs` has passed.
pub fn relaxation_step(waited_secs: u64, cfg: &RelaxationConfig) -> Option<usize> {
    cfg.steps
        .iter()
        .enumerate()
        .filter(|(_, s)| u64::from(s.after_secs) <= waited_secs)
        .max_by_key(|(i, s)| (s.after_secs, *i))
        .map(|(i, _)| i)
}

/// How far a relaxation step widens the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteWidening {
    /// Home site only.
    Home,
    /// Whatever the contact's `allowed_sites` permits — but only for
    /// cross-site skills; others stay at home.
    AnyAllowed,
}

/// One ring of the bullseye: from `after_secs` of waiting on, these needs
/// apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaxationStep {
    /// Seconds waited from which this step applies.
    pub after_secs: u32,
    /// Minimum proficiency in this step, 1..=5 (never below the contact's
    /// own `min_proficiency`).
    pub min_proficiency: u8,
    /// Which sites this step allows.
    pub sites: SiteWidening,
}

/// Timed relaxation of a contact's needs. Reloaded live; call
/// [`RelaxationConfig::validate`] before swapping it in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelaxationConfig {
    /// Steps in increasing `after_secs`, the first at 0. Default:
    /// 0 s proficiency 3 home site; 30 s proficiency 1 home site; 90 s
    /// proficiency 1 any allowed site.
    pub steps: Vec<RelaxationStep>,
}

impl Default for RelaxationConfig {
    fn default() -> Self {
        Self {
            steps: vec![
                RelaxationStep {
                    after_secs: 0,
                    min_proficiency: 3,
                    sites: SiteWidening::Home,
                },
                RelaxationStep {
                    after_secs: 30,
                    min_proficiency: 1,
                    sites: SiteWidening::Home,
                },
                RelaxationStep {
                    after_secs: 90,
                    min_proficiency: 1,
                    sites: SiteWidening::AnyAllowed,
                },
            ],
        }
    }
}

impl RelaxationConfig {
    /// Rejects nonsense: no steps, a first step not at 0 s (a new contact
    /// would match no step), `after_secs` not strictly increasing,
    /// proficiency outside 1..=5, and steps that tighten instead of relax
    /// (proficiency going up, sites going back to home). The error names the
    /// offending field.
    pub fn validate(&self) -> Result<(), String> {
        let first = self
            .steps
            .first()
            .ok_or_else(|| "steps must not be empty".to_string())?;
        if first.after_secs != 0 {
            return Err(format!(
                "steps[0].after_secs must be 0 (got {}) so every contact has a step",
                first.after_secs
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !(1..=MAX_PROFICIENCY).contains(&step.min_proficiency) {
                return Err(format!(
                    "steps[{i}].min_proficiency must be within 1..={MAX_PROFICIENCY} (got {})",
                    step.min_proficiency
                ));
            }
            if i == 0 {
                continue;
            }
            let prev = &self.steps[i - 1];
            if step.after_secs <= prev.after_secs {
                return Err(format!(
                    "steps[{i}].after_secs ({}) must be greater than steps[{}].after_secs ({})",
                    step.after_secs,
                    i - 1,
                    prev.after_secs
                ));
            }
            if step.min_proficiency > prev.min_proficiency {
                return Err(format!(
                    "steps[{i}].min_proficiency ({}) must not exceed the previous step's ({}): relaxation only widens",
                    step.min_proficiency, prev.min_proficiency
                ));
            }
            if prev.sites == SiteWidening::AnyAllowed && step.sites == SiteWidening::Home {
                return Err(format!(
                    "steps[{i}].sites must not narrow back to home after an any_allowed step"
                ));
            }
        }
        Ok(())
    }
}

/// A contact's needs after relaxation, and which step produced them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaxedNeeds {
    /// The needs to match with.
    pub needs: ContactNeeds,
    /// Index into [`RelaxationConfig::steps`] of the step applied, or `None`
    /// if no step applies (empty or unvalidated config): the base needs are
    /// used, still restricted to the home site for non-cross-site skills.
    pub step: Option<usize>,
}

/// Applies the relaxation step for a contact that has waited `waited_secs`:
/// the step with the largest `after_secs <= waited_secs`.
///
/// * proficiency = max(contact's own `min_proficiency`, step's);
/// * sites = home for a [`SiteWidening::Home`] step; for
///   [`SiteWidening::AnyAllowed`] the contact's `allowed_sites` if
///   `cross_site_allowed` (the skill may be served across sites), else home.
///
/// A skill that is not cross-site is always restricted to the home site.
pub fn relaxed_needs(
    base: &ContactNeeds,
    waited_secs: u64,
    cfg: &RelaxationConfig,
    cross_site_allowed: bool,
) -> RelaxedNeeds {
    let mut needs = base.clone();
    let applied = relaxation_step(waited_secs, cfg).map(|i| (i, &cfg.steps[i]));
    if let Some((_, step)) = applied {
        needs.min_proficiency = base.min_proficiency.max(step.min_proficiency);
        if step.sites == SiteWidening::Home {
            needs.allowed_sites = SiteScope::Home;
        }
    }
    if !cross_site_allowed {
        needs.allowed_sites = SiteScope::Home;
    }
    RelaxedNeeds {
        needs,
        step: applied.map(|(i, _)| i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_736_150_400, 0).unwrap()
    }

    fn agent(id: &str, site: &str, prof: u8) -> AgentView {
        AgentView {
            id: id.to_string(),
            site: site.to_string(),
            available: true,
            skills: BTreeMap::from([("scheduling".to_string(), prof)]),
            capacity: BTreeMap::from([("voice".to_string(), 1), ("chat".to_string(), 3)]),
            load: BTreeMap::new(),
            idle_since: t0() - Duration::minutes(1),
            pending_offers: 0,
        }
    }

    fn needs(channel: &str) -> ContactNeeds {
        ContactNeeds {
            skill: "scheduling".to_string(),
            channel: channel.to_string(),
            min_proficiency: 1,
            site: "north".to_string(),
            allowed_sites: SiteScope::Home,
            preferred_agent: None,
            preferred_until: None,
            excluded_agents: vec![],
        }
    }

    fn pick(n: &ContactNeeds, agents: &[AgentView]) -> Option<String> {
        choose_agent(n, agents, t0()).map(|c| c.agent_id)
    }

    #[test]
    fn chat_capacity_of_three_accepts_three_chats_but_not_a_fourth() {
        let mut a = agent("a1", "north", 3);
        let n = needs("chat");
        for load in 0..3 {
            a.load.insert("chat".to_string(), load);
            assert!(is_eligible(&a, &n), "load {load}");
        }
        a.load.insert("chat".to_string(), 3);
        assert!(!is_eligible(&a, &n));
        assert_eq!(pick(&n, &[a]), None);
    }

    #[test]
    fn voice_capacity_of_one_takes_a_single_call() {
        let mut a = agent("a1", "north", 3);
        let n = needs("voice");
        assert!(is_eligible(&a, &n));
        a.load.insert("voice".to_string(), 1);
        assert!(!is_eligible(&a, &n));
    }

    #[test]
    fn pending_offers_count_against_capacity() {
        let mut a = agent("a1", "north", 3);
        a.load.insert("chat".to_string(), 2);
        a.pending_offers = 1;
        assert!(!is_eligible(&a, &needs("chat")));
    }

    #[test]
    fn missing_or_zero_channel_capacity_means_the_agent_does_not_take_that_channel() {
        let mut a = agent("a1", "north", 3);
        assert!(!is_eligible(&a, &needs("sms")));
        a.capacity.insert("sms".to_string(), 0);
        assert!(!is_eligible(&a, &needs("sms")));
    }

    #[test]
    fn unavailable_unskilled_or_excluded_agents_are_not_offered() {
        let n = needs("voice");
        let mut away = agent("away", "north", 5);
        away.available = false;
        let mut novice = agent("novice", "north", 1);
        novice.skills.clear();
        novice.skills.insert("billing".to_string(), 5);
        let declined = agent("declined", "north", 5);
        let mut n2 = n.clone();
        n2.excluded_agents = vec!["declined".to_string()];
        assert_eq!(pick(&n2, &[away, novice, declined]), None);
    }

    #[test]
    fn proficiency_below_the_minimum_is_not_eligible() {
        let mut n = needs("voice");
        n.min_proficiency = 3;
        assert!(!is_eligible(&agent("a", "north", 2), &n));
        assert!(is_eligible(&agent("a", "north", 3), &n));
    }

    #[test]
    fn best_match_prefers_proficiency_then_longest_idle_then_id() {
        let n = needs("voice");
        let mut expert = agent("z-expert", "north", 5);
        expert.idle_since = t0();
        let mut idle_long = agent("b-idle", "north", 4);
        idle_long.idle_since = t0() - Duration::hours(1);
        let mut idle_short = agent("a-short", "north", 4);
        idle_short.idle_since = t0() - Duration::minutes(5);
        let agents = vec![idle_short.clone(), idle_long.clone(), expert];
        let c = choose_agent(&n, &agents, t0()).unwrap();
        assert_eq!(c.agent_id, "z-expert");
        assert_eq!(c.reason, ChoiceReason::BestMatch);
        assert_eq!(
            pick(&n, &[idle_short.clone(), idle_long]),
            Some("b-idle".to_string())
        );
        let mut twin = idle_short.clone();
        twin.id = "0-twin".to_string();
        assert_eq!(pick(&n, &[idle_short, twin]), Some("0-twin".to_string()));
    }

    #[test]
    fn agents_at_other_sites_only_serve_when_the_scope_allows() {
        let south = agent("s1", "south", 5);
        let mut n = needs("voice");
        assert_eq!(pick(&n, std::slice::from_ref(&south)), None);
        n.allowed_sites = SiteScope::List(vec!["east".to_string()]);
        assert_eq!(pick(&n, std::slice::from_ref(&south)), None);
        n.allowed_sites = SiteScope::List(vec!["south".to_string()]);
        assert_eq!(
            pick(&n, std::slice::from_ref(&south)),
            Some("s1".to_string())
        );
        n.allowed_sites = SiteScope::Any;
        assert_eq!(pick(&n, &[south]), Some("s1".to_string()));
        assert!(site_allowed(&SiteScope::Home, "north", "north"));
    }

    #[test]
    fn eligible_preferred_agent_gets_the_offer_over_a_better_match() {
        let mut n = needs("voice");
        n.preferred_agent = Some("p".to_string());
        n.preferred_until = Some(t0() + Duration::minutes(2));
        let c = choose_agent(
            &n,
            &[agent("expert", "north", 5), agent("p", "north", 2)],
            t0(),
        )
        .unwrap();
        assert_eq!(c.agent_id, "p");
        assert_eq!(c.reason, ChoiceReason::PreferredAgent);
    }

    #[test]
    fn busy_preferred_agent_holds_the_contact_while_the_window_is_open() {
        let mut n = needs("voice");
        n.preferred_agent = Some("p".to_string());
        n.preferred_until = Some(t0() + Duration::minutes(2));
        let mut p = agent("p", "north", 3);
        p.load.insert("voice".to_string(), 1);
        let agents = vec![agent("other", "north", 5), p];
        assert!(holding_for_preferred(&n, &agents, t0()));
        assert_eq!(choose_agent(&n, &agents, t0()), None);
        // Window over: anyone skilled.
        let later = t0() + Duration::minutes(2);
        assert!(!holding_for_preferred(&n, &agents, later));
        assert_eq!(
            choose_agent(&n, &agents, later).map(|c| c.agent_id),
            Some("other".to_string())
        );
    }

    #[test]
    fn preferred_agent_on_break_also_holds_the_contact_within_the_window() {
        let mut n = needs("voice");
        n.preferred_agent = Some("p".to_string());
        n.preferred_until = Some(t0() + Duration::seconds(30));
        let mut p = agent("p", "north", 3);
        p.available = false;
        assert_eq!(
            choose_agent(&n, &[agent("other", "north", 5), p], t0()),
            None
        );
    }

    #[test]
    fn preferred_agent_who_is_gone_declined_or_unqualified_does_not_hold_the_contact() {
        let mut n = needs("voice");
        n.preferred_agent = Some("p".to_string());
        n.preferred_until = Some(t0() + Duration::minutes(2));
        let other = agent("other", "north", 3);
        // Signed out (not in the slice).
        assert_eq!(
            pick(&n, std::slice::from_ref(&other)),
            Some("other".to_string())
        );
        // Declined.
        let mut busy_p = agent("p", "north", 3);
        busy_p.load.insert("voice".to_string(), 1);
        let mut declined = n.clone();
        declined.excluded_agents.push("p".to_string());
        assert_eq!(
            pick(&declined, &[other.clone(), busy_p.clone()]),
            Some("other".to_string())
        );
        // At another site not allowed for this contact.
        busy_p.site = "south".to_string();
        assert_eq!(pick(&n, &[other, busy_p]), Some("other".to_string()));
    }

    #[test]
    fn soft_preference_without_deadline_is_offered_first_but_never_waited_for() {
        let mut n = needs("voice");
        n.preferred_agent = Some("p".to_string());
        let p = agent("p", "north", 2);
        let c = choose_agent(&n, &[agent("x", "north", 5), p.clone()], t0()).unwrap();
        assert_eq!(c.reason, ChoiceReason::PreferredAgent);
        let mut busy = p;
        busy.load.insert("voice".to_string(), 1);
        let c = choose_agent(&n, &[agent("x", "north", 5), busy], t0()).unwrap();
        assert_eq!(c.agent_id, "x");
        assert_eq!(c.reason, ChoiceReason::BestMatch);
    }

    #[test]
    fn after_the_window_the_preferred_agent_competes_like_anyone_else() {
        let mut n = needs("voice");
        n.preferred_agent = Some("p".to_string());
        n.preferred_until = Some(t0() - Duration::seconds(1));
        let c = choose_agent(
            &n,
            &[agent("expert", "north", 5), agent("p", "north", 2)],
            t0(),
        )
        .unwrap();
        assert_eq!(c.agent_id, "expert");
        assert_eq!(c.reason, ChoiceReason::BestMatch);
    }

    #[test]
    fn new_contact_targets_proficient_agents_at_home() {
        let mut base = needs("voice");
        base.allowed_sites = SiteScope::Any;
        let r = relaxed_needs(&base, 0, &RelaxationConfig::default(), true);
        assert_eq!(r.step, Some(0));
        assert_eq!(r.needs.min_proficiency, 3);
        assert_eq!(r.needs.allowed_sites, SiteScope::Home);
        assert_eq!(pick(&r.needs, &[agent("novice", "north", 2)]), None);
    }

    #[test]
    fn after_thirty_seconds_any_proficiency_at_home_is_accepted() {
        let mut base = needs("voice");
        base.allowed_sites = SiteScope::Any;
        let r = relaxed_needs(&base, 45, &RelaxationConfig::default(), true);
        assert_eq!(r.step, Some(1));
        assert_eq!(r.needs.min_proficiency, 1);
        assert_eq!(r.needs.allowed_sites, SiteScope::Home);
        assert_eq!(
            pick(&r.needs, &[agent("novice", "north", 2)]),
            Some("novice".to_string())
        );
    }

    #[test]
    fn after_ninety_seconds_a_cross_site_skill_widens_to_the_allowed_sites() {
        let mut base = needs("voice");
        base.allowed_sites = SiteScope::List(vec!["south".to_string()]);
        let r = relaxed_needs(&base, 90, &RelaxationConfig::default(), true);
        assert_eq!(r.step, Some(2));
        assert_eq!(r.needs.allowed_sites, base.allowed_sites);
        assert_eq!(
            pick(&r.needs, &[agent("s1", "south", 1)]),
            Some("s1".to_string())
        );
    }

    #[test]
    fn clinical_skill_that_is_not_cross_site_never_leaves_home() {
        let mut base = needs("voice");
        base.skill = "clinical".to_string();
        base.allowed_sites = SiteScope::Any;
        for waited in [0, 30, 90, 10_000] {
            let r = relaxed_needs(&base, waited, &RelaxationConfig::default(), false);
            assert_eq!(r.needs.allowed_sites, SiteScope::Home, "waited {waited}");
        }
        let r = relaxed_needs(&base, 0, &RelaxationConfig { steps: vec![] }, false);
        assert_eq!(r.step, None);
        assert_eq!(r.needs.allowed_sites, SiteScope::Home);
    }

    #[test]
    fn relaxation_never_goes_below_the_contacts_own_minimum() {
        let mut base = needs("voice");
        base.min_proficiency = 4;
        let r = relaxed_needs(&base, 500, &RelaxationConfig::default(), true);
        assert_eq!(r.needs.min_proficiency, 4);
    }

    #[test]
    fn default_relaxation_is_valid_and_round_trips_through_json() {
        let cfg = RelaxationConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"any_allowed\""));
        let back: RelaxationConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<RelaxationConfig>(r#"{"stepz": []}"#).is_err());
        let scope: SiteScope = serde_json::from_str(r#"{"list": ["south"]}"#).unwrap();
        assert_eq!(scope, SiteScope::List(vec!["south".to_string()]));
    }

    #[test]
    fn nonsense_relaxation_configs_are_rejected_naming_the_field() {
        let step = |after_secs, min_proficiency, sites| RelaxationStep {
            after_secs,
            min_proficiency,
            sites,
        };
        use SiteWidening::{AnyAllowed, Home};
        let cases: Vec<(Vec<RelaxationStep>, &str)> = vec![
            (vec![], "steps"),
            (vec![step(10, 3, Home)], "steps[0].after_secs"),
            (vec![step(0, 0, Home)], "steps[0].min_proficiency"),
            (vec![step(0, 6, Home)], "steps[0].min_proficiency"),
            (
                vec![step(0, 3, Home), step(0, 1, Home)],
                "steps[1].after_secs",
            ),
            (
                vec![step(0, 2, Home), step(30, 3, Home)],
                "steps[1].min_proficiency",
            ),
            (
                vec![step(0, 2, AnyAllowed), step(30, 1, Home)],
                "steps[1].sites",
            ),
        ];
        for (steps, field) in cases {
            let err = RelaxationConfig { steps }.validate().unwrap_err();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }
}
