//! # Red flags — a safety net, not triage
//!
//! Some words must never wait in a queue behind an invoice question. When a
//! patient writes "I have chest pain" into a chat, says it to the virtual agent,
//! or a bot classifies a turn as `overdose`, the contact is raised to the
//! emergency level, supervisors are paged and the channel is told at once what to
//! say (call 911, or 988 for a crisis), in the same step as the event.
//!
//! | category (defaults) | phrases (excerpt) | instruction |
//! | --- | --- | --- |
//! | `chest_pain` | chest pain, chest pressure, dolor de pecho | 911 |
//! | `breathing` | difficulty breathing, can't breathe, short of breath | 911 |
//! | `stroke` | stroke, face drooping, slurred speech, arm weakness | 911 |
//! | `suicidal` | suicidal, kill myself, end my life, want to die | 988 |
//! | `overdose` | overdose, overdosed, took too many pills | 911 |
//!
//! Matching is on words, case- and punctuation-insensitive: both the text and the
//! phrase are lowercased (Unicode), every character that is not a letter or a digit
//! becomes a space, and the phrase must appear as whole words ("can't breathe"
//! matches "I CAN'T... breathe!" and "cant breathe"; "chest pain" does not match
//! "chest painting"). The lists lean towards matching: a false positive costs a
//! supervisor a look, a false negative can cost a life.
//! Lists may hold any language; the defaults include Spanish phrases.
//!
//! It is a keyword net: a patient who describes an emergency in words no list
//! holds is not caught (docs/operations.md says so). It never lowers a level.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One category of red flag: what triggers it and what the channel must say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedFlagCategory {
    /// Phrases that trigger it (any language; matched on whole words).
    #[serde(default)]
    pub phrases: Vec<String>,
    /// Intents (as a bot or channel classifies them) that trigger it.
    #[serde(default)]
    pub intents: Vec<String>,
    /// What the bot or channel tells the patient at once.
    pub instruction: String,
}

/// The red-flag lists, by category (reloadable with the routing rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedFlagConfig {
    /// Off only for a deployment whose channels triage themselves.
    pub enabled: bool,
    /// The skill an emergency that is not yet with a human is queued for.
    pub skill: String,
    /// Priority boost of a red flag (default the largest allowed, so it is
    /// served before anything else in any queue).
    pub boost: i64,
    /// Categories by name (a bounded label: it appears in metrics).
    pub categories: BTreeMap<String, RedFlagCategory>,
}

const EMERGENCY: &str =
    "If this is an emergency, call 911 now or go to the nearest emergency room. \
A nurse is being told about your message.";
const CRISIS: &str = "If you are thinking about suicide or hurting yourself, call or text 988 \
(Suicide & Crisis Lifeline) now, or call 911. A nurse is being told about your message.";

fn category(phrases: &[&str], intents: &[&str], instruction: &str) -> RedFlagCategory {
    RedFlagCategory {
        phrases: phrases.iter().map(|s| s.to_string()).collect(),
        intents: intents.iter().map(|s| s.to_string()).collect(),
        instruction: instruction.to_string(),
    }
}

impl Default for RedFlagConfig {
    fn default() -> Self {
        RedFlagConfig {
            enabled: true,
            skill: "nurse_advice".into(),
            boost: super::frustration::MAX_BOOST,
            categories: BTreeMap::from([
                (
                    "chest_pain".into(),
                    category(
                        &[
                            "chest pain",
                            "chest pains",
                            "chest pressure",
                            "chest tightness",
                            "tight chest",
                            "heart attack",
                            "dolor de pecho",
                            "dolor en el pecho",
                        ],
                        &["chest_pain"],
                        EMERGENCY,
                    ),
                ),
                (
                    "breathing".into(),
                    category(
                        &[
                            "difficulty breathing",
                            "trouble breathing",
                            "hard to breathe",
                            "can't breathe",
                            "cant breathe",
                            "cannot breathe",
                            "short of breath",
                            "shortness of breath",
                            "no puedo respirar",
                            "dificultad para respirar",
                        ],
                        &["breathing_difficulty"],
                        EMERGENCY,
                    ),
                ),
                (
                    "stroke".into(),
                    category(
                        &[
                            "stroke",
                            "face drooping",
                            "face is drooping",
                            "slurred speech",
                            "arm weakness",
                            "one side numb",
                            "derrame cerebral",
                        ],
                        &["stroke"],
                        EMERGENCY,
                    ),
                ),
                (
                    "suicidal".into(),
                    category(
                        &[
                            "suicidal",
                            "suicide",
                            "kill myself",
                            "end my life",
                            "want to die",
                            "hurt myself",
                            "quiero morir",
                            "suicidarme",
                        ],
                        &["suicidal_thoughts", "self_harm"],
                        CRISIS,
                    ),
                ),
                (
                    "overdose".into(),
                    category(
                        &[
                            "overdose",
                            "overdosed",
                            "took too many pills",
                            "too many pills",
                            "sobredosis",
                        ],
                        &["overdose"],
                        EMERGENCY,
                    ),
                ),
            ]),
        }
    }
}

impl RedFlagConfig {
    /// Rejects lists that cannot be meant: an empty instruction, a phrase with no
    /// letters or digits (it would match nothing), a bad category name. The error
    /// names the key (`categories.<name>.phrases[i]`).
    pub fn validate(&self) -> Result<(), String> {
        if self.skill.trim().is_empty() {
            return Err("skill must not be empty".into());
        }
        if !(0..=super::frustration::MAX_BOOST).contains(&self.boost) {
            return Err(format!(
                "boost must be 0-{} (got {})",
                super::frustration::MAX_BOOST,
                self.boost
            ));
        }
        for (name, c) in &self.categories {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            {
                return Err(format!(
                    "categories.{name}: a category name is a lowercase label ([a-z0-9_])"
                ));
            }
            if c.instruction.trim().is_empty() {
                return Err(format!("categories.{name}.instruction must not be empty"));
            }
            if c.phrases.is_empty() && c.intents.is_empty() {
                return Err(format!(
                    "categories.{name}: needs at least one phrase or intent"
                ));
            }
            for (i, p) in c.phrases.iter().enumerate() {
                if normalize(p).trim().is_empty() {
                    return Err(format!(
                        "categories.{name}.phrases[{i}] has no letters or digits"
                    ));
                }
            }
            for (i, p) in c.intents.iter().enumerate() {
                if p.trim().is_empty() {
                    return Err(format!("categories.{name}.intents[{i}] is empty"));
                }
            }
        }
        Ok(())
    }
}

/// A red flag that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedFlag {
    /// The category (bounded label).
    pub category: String,
    /// Whether a phrase in the text or the intent matched (never the text itself:
    /// it is PHI).
    pub matched_on: MatchedOn,
    /// What the channel must tell the patient.
    pub instruction: String,
}

/// What matched: the free text or the classified intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedOn {
    /// A phrase in what the patient wrote or said.
    Text,
    /// The intent a bot or channel gave the turn.
    Intent,
}

impl RedFlag {
    /// An explanation without patient data, for reasons and escalations.
    pub fn detail(&self) -> String {
        let on = match self.matched_on {
            MatchedOn::Text => "a phrase in the patient's words",
            MatchedOn::Intent => "the intent",
        };
        format!("red flag {}: {on}", self.category)
    }
}

/// Lowercase, every non-alphanumeric character a space, single spaces, padded
/// with one space on each side (so a phrase matches on whole words). An apostrophe
/// inside a word joins it ("can't" = "cant"); see [`matches`] for the other reading.
pub fn normalize(text: &str) -> String {
    normalize_with(text, true)
}

fn normalize_with(text: &str, join_apostrophes: bool) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    let mut last_space = true;
    for ch in text.chars() {
        if join_apostrophes && (ch == '\'' || ch == '\u{2019}') {
            continue;
        }
        if ch.is_alphanumeric() {
            for l in ch.to_lowercase() {
                out.push(l);
            }
            last_space = false;
        } else if !last_space {
            out.push(' ');
            last_space = true;
        }
    }
    if !last_space {
        out.push(' ');
    }
    out
}

/// Text prepared for matching: both readings of apostrophes, joined ("can't" =
/// "cant") and split (French "j'étouffe" = "j étouffe").
pub struct Prepared([String; 2]);

impl Prepared {
    /// Prepares `text`.
    pub fn new(text: &str) -> Prepared {
        Prepared([normalize_with(text, true), normalize_with(text, false)])
    }

    /// True when `phrase` appears in either reading as whole words.
    pub fn contains(&self, phrase: &str) -> bool {
        [normalize_with(phrase, true), normalize_with(phrase, false)]
            .iter()
            .filter(|p| !p.trim().is_empty())
            .any(|p| self.0.iter().any(|t| t.contains(p.as_str())))
    }
}

/// The first category (in name order) whose intent or phrase matches, if any.
pub fn detect(text: Option<&str>, intent: Option<&str>, cfg: &RedFlagConfig) -> Option<RedFlag> {
    if !cfg.enabled {
        return None;
    }
    let intent = intent.map(|i| i.trim().to_lowercase());
    let text = text.map(Prepared::new);
    for (name, c) in &cfg.categories {
        let by_intent = intent
            .as_deref()
            .is_some_and(|i| c.intents.iter().any(|x| x.trim().to_lowercase() == i));
        let by_text = !by_intent
            && text
                .as_ref()
                .is_some_and(|t| c.phrases.iter().any(|p| t.contains(p)));
        if by_intent || by_text {
            return Some(RedFlag {
                category: name.clone(),
                matched_on: if by_intent {
                    MatchedOn::Intent
                } else {
                    MatchedOn::Text
                },
                instruction: c.instruction.clone(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(text: &str) -> Option<String> {
        detect(Some(text), None, &RedFlagConfig::default()).map(|f| f.category)
    }

    #[test]
    fn the_default_lists_are_valid() {
        RedFlagConfig::default().validate().unwrap();
    }

    #[test]
    fn phrases_match_whatever_the_case_and_punctuation() {
        assert_eq!(cat("I have CHEST-PAIN!!").as_deref(), Some("chest_pain"));
        assert_eq!(cat("i...can't   breathe").as_deref(), Some("breathing"));
        assert_eq!(cat("I cant breathe").as_deref(), Some("breathing"));
        assert_eq!(
            cat("My husband's face is drooping, slurred speech").as_deref(),
            Some("stroke")
        );
        assert_eq!(cat("I want to die.").as_deref(), Some("suicidal"));
        assert_eq!(cat("she took too many pills").as_deref(), Some("overdose"));
    }

    #[test]
    fn other_languages_match_with_their_accents() {
        assert_eq!(cat("Tengo DOLOR DE PECHO").as_deref(), Some("chest_pain"));
        let mut cfg = RedFlagConfig::default();
        cfg.categories
            .get_mut("breathing")
            .unwrap()
            .phrases
            .push("Atemnot".into());
        assert_eq!(
            detect(Some("ich habe ATEMNOT"), None, &cfg)
                .map(|f| f.category)
                .as_deref(),
            Some("breathing")
        );
        cfg.categories
            .get_mut("suicidal")
            .unwrap()
            .phrases
            .push("Je veux en finir, c'est trop".into());
        assert!(detect(
            Some("ÇA VA PAS... je veux en finir. C'EST TROP"),
            None,
            &cfg
        )
        .is_some());
        cfg.categories
            .get_mut("breathing")
            .unwrap()
            .phrases
            .push("Étouffe".into());
        assert!(
            detect(Some("j'ÉTOUFFE"), None, &cfg).is_some(),
            "elision splits"
        );
        assert!(detect(Some("il ÉTOUFFE!"), None, &cfg).is_some());
    }

    #[test]
    fn a_phrase_matches_whole_words_only() {
        assert_eq!(cat("I need to reschedule my appointment"), None);
        assert_eq!(
            cat("the chest painting class"),
            None,
            "painting is not pain"
        );
        assert_eq!(cat("what does my bill say"), None);
    }

    #[test]
    fn an_intent_matches_without_any_text_and_says_so() {
        let f = detect(None, Some("Overdose"), &RedFlagConfig::default()).unwrap();
        assert_eq!(f.category, "overdose");
        assert_eq!(f.matched_on, MatchedOn::Intent);
        assert!(f.instruction.contains("911"));
        assert!(
            !f.detail().contains("Overdose"),
            "the detail names no patient words"
        );
    }

    #[test]
    fn suicidal_thoughts_get_the_crisis_line() {
        let f = detect(
            Some("I keep thinking I should kill myself"),
            None,
            &RedFlagConfig::default(),
        )
        .unwrap();
        assert!(f.instruction.contains("988"));
    }

    #[test]
    fn disabled_lists_match_nothing() {
        let cfg = RedFlagConfig {
            enabled: false,
            ..RedFlagConfig::default()
        };
        assert_eq!(detect(Some("chest pain"), Some("overdose"), &cfg), None);
    }

    #[test]
    fn lists_that_cannot_match_are_refused_with_their_key() {
        let mut cfg = RedFlagConfig::default();
        cfg.categories
            .get_mut("stroke")
            .unwrap()
            .phrases
            .push("?!".into());
        let e = cfg.validate().unwrap_err();
        assert!(e.contains("categories.stroke.phrases[7]"), "{e}");
        let mut cfg = RedFlagConfig::default();
        cfg.categories.get_mut("overdose").unwrap().instruction = " ".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("categories.overdose.instruction"));
        let mut cfg = RedFlagConfig::default();
        cfg.categories
            .insert("Chest Pain".into(), category(&["x"], &[], "call"));
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("categories.Chest Pain"));
    }
}
