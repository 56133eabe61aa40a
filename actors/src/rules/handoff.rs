//! # When the virtual agent hands over
//!
//! A bot that cannot help must stop trying, and a patient who asks for a person
//! gets one. The virtual agent hands the contact to a human when:
//!
//! | reason | when |
//! | --- | --- |
//! | [`HandoffReason::Unresolved`] | `bot_handoff_after_exchanges` unresolved turns (frustration config, default 2) |
//! | [`HandoffReason::AskedForPerson`] | the patient asks for a person (phrases or intents below) |
//! | [`HandoffReason::RedFlag`] | a red flag (`super::red_flags`) |
//! | [`HandoffReason::Intent`] | the intent is one the bot hands over by design (billing) or does not know |
//!
//! The router then sends the channel a `bot.release` (stop, and say the estimated
//! wait and the queue position) and counts the hand-off per intent.
//!
//! "Person" phrases match like red flags: whole words, any case, no punctuation.

use serde::{Deserialize, Serialize};

use super::red_flags::{normalize, Prepared};

/// Why a bot session went to a human (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffReason {
    /// The bot failed to resolve repeatedly.
    Unresolved,
    /// The patient asked for a person.
    AskedForPerson,
    /// A red flag.
    RedFlag,
    /// The intent goes to people (billing) or the bot does not know it.
    Intent,
}

impl HandoffReason {
    /// Every reason (metric label pre-registration).
    pub const ALL: [HandoffReason; 4] = [
        HandoffReason::Unresolved,
        HandoffReason::AskedForPerson,
        HandoffReason::RedFlag,
        HandoffReason::Intent,
    ];

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffReason::Unresolved => "unresolved",
            HandoffReason::AskedForPerson => "asked_for_person",
            HandoffReason::RedFlag => "red_flag",
            HandoffReason::Intent => "intent",
        }
    }
}

/// What makes a bot hand over besides failures and red flags (reloadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    /// Phrases with which a patient asks for a person (any language).
    pub person_phrases: Vec<String>,
    /// Intents a bot gives a turn when the patient asks for a person.
    pub person_intents: Vec<String>,
    /// Intents the bot answers (the per-intent containment label set; anything
    /// else is counted as `other`).
    pub bot_intents: Vec<String>,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        HandoffConfig {
            person_phrases: s(&[
                "agent",
                "representative",
                "a person",
                "real person",
                "a human",
                "talk to someone",
                "speak to someone",
                "operator",
                "nurse please",
                "hablar con una persona",
                "representante",
            ]),
            person_intents: s(&["agent", "human", "speak_to_person"]),
            bot_intents: s(&[
                "appointment.next",
                "directions",
                "refill.status",
                "billing",
                "scheduling",
                "reschedule",
                "refill",
                "prescription",
                "medication_question",
            ]),
        }
    }
}

impl HandoffConfig {
    /// Refuses phrases that match nothing, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (i, p) in self.person_phrases.iter().enumerate() {
            if normalize(p).trim().is_empty() {
                return Err(format!("person_phrases[{i}] has no letters or digits"));
            }
        }
        for (i, p) in self.bot_intents.iter().enumerate() {
            if p.trim().is_empty() || p.len() > 64 {
                return Err(format!("bot_intents[{i}] must be 1-64 characters"));
            }
        }
        Ok(())
    }

    /// The bounded metric label of an intent: itself when configured, else `other`.
    pub fn intent_label<'a>(&'a self, intent: Option<&str>) -> &'a str {
        intent
            .and_then(|i| self.bot_intents.iter().find(|x| x.as_str() == i))
            .map(String::as_str)
            .unwrap_or("other")
    }
}

/// True when the patient's words or the turn's intent ask for a person.
pub fn asks_for_person(text: Option<&str>, intent: Option<&str>, cfg: &HandoffConfig) -> bool {
    if let Some(i) = intent {
        let i = i.trim().to_lowercase();
        if cfg.person_intents.iter().any(|p| p.to_lowercase() == i) {
            return true;
        }
    }
    let Some(text) = text else { return false };
    let t = Prepared::new(text);
    cfg.person_phrases.iter().any(|p| t.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_for_a_person_is_heard_in_words_or_intent() {
        let cfg = HandoffConfig::default();
        assert!(asks_for_person(Some("AGENT!!!"), None, &cfg));
        assert!(asks_for_person(
            Some("can I talk to someone please"),
            None,
            &cfg
        ));
        assert!(asks_for_person(
            Some("Quiero hablar con una persona"),
            None,
            &cfg
        ));
        assert!(asks_for_person(None, Some("speak_to_person"), &cfg));
        assert!(!asks_for_person(Some("when is my appointment"), None, &cfg));
        assert!(
            !asks_for_person(Some("my agency sent me"), None, &cfg),
            "agency is not agent"
        );
    }

    #[test]
    fn intent_labels_are_bounded() {
        let cfg = HandoffConfig::default();
        assert_eq!(cfg.intent_label(Some("billing")), "billing");
        assert_eq!(cfg.intent_label(Some("MRN-12345 free text")), "other");
        assert_eq!(cfg.intent_label(None), "other");
    }

    #[test]
    fn a_phrase_that_matches_nothing_is_refused_with_its_key() {
        let cfg = HandoffConfig {
            person_phrases: vec!["agent".into(), "!!".into()],
            ..HandoffConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("person_phrases[1]"));
    }
}
