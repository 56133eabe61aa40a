//! Identifier newtypes, each with a `parse` that is the only way to make one.
//!
//! Patient identifiers (MRN, phone, email, portal id) are PHI: their `Debug`
//! output is redacted so a stray `{:?}` in a log line cannot leak them.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Front Door's own patient id: opaque, safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PatientId(pub Uuid);

impl PatientId {
    /// A fresh random id.
    pub fn new() -> PatientId {
        PatientId(Uuid::new_v4())
    }

    /// Parses the textual form.
    pub fn parse(s: &str) -> Option<PatientId> {
        Uuid::parse_str(s).ok().map(PatientId)
    }

    /// The partition (0..`partitions`) this patient belongs to: which node applies
    /// its events in a cluster. Computed from the id's bits alone, so every node and
    /// every version agrees (a std hasher would not promise that).
    pub fn partition(&self, partitions: u32) -> u32 {
        (self.0.as_u128() % u128::from(partitions.max(1))) as u32
    }
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn a_patient_partition_is_stable_and_spreads_patients_evenly() {
        let id = PatientId::parse("6f1c2a9e-7b3d-4e5f-8a1b-2c3d4e5f6a7b").unwrap();
        // The same id always lands in the same partition (a fixed expectation: a
        // change here moves every patient and is a cluster migration).
        assert_eq!(id.partition(16), (id.0.as_u128() % 16) as u32);
        assert_eq!(id.partition(16), 11);
        let mut counts = [0u32; 16];
        for _ in 0..16_000 {
            counts[PatientId::new().partition(16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(id.partition(0), 0);
    }
}

impl Default for PatientId {
    fn default() -> Self {
        PatientId::new()
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn bounded_token(s: &str, max: usize, what: &'static str) -> Result<String, &'static str> {
    let t = s.trim();
    if t.is_empty() {
        return Err(what);
    }
    if t.len() > max
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(what);
    }
    Ok(t.to_string())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, redacted = $redacted:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if $redacted {
                    write!(f, "{}(<redacted>)", stringify!($name))
                } else {
                    write!(f, "{}({:?})", stringify!($name), self.0)
                }
            }
        }
    };
}

text_id!(
    /// A site (hospital, clinic group) — a bounded metric label.
    SiteId,
    redacted = false
);
text_id!(
    /// The channel's id for a call, chat or thread.
    ContactId,
    redacted = false
);
text_id!(
    /// Medical record number: the authoritative patient identifier.
    Mrn,
    redacted = true
);
text_id!(
    /// A phone number in E.164 form.
    PhoneNumber,
    redacted = true
);
text_id!(
    /// An email address, trimmed and lower-cased.
    Email,
    redacted = true
);
text_id!(
    /// A patient-portal account id.
    PortalId,
    redacted = true
);

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SiteId {
    /// A site id from text that was one already (a packed copy of a parsed id).
    pub(crate) fn from_trusted(s: &str) -> SiteId {
        SiteId(s.to_string())
    }

    /// A site name: 1–64 of `[A-Za-z0-9-_.:]`.
    pub fn parse(s: &str) -> Result<SiteId, &'static str> {
        bounded_token(s, 64, "must be 1-64 characters of [A-Za-z0-9-_.:]").map(SiteId)
    }
}

impl ContactId {
    /// A contact id from text that was one already (a packed copy of a parsed id).
    pub(crate) fn from_trusted(s: &str) -> ContactId {
        ContactId(s.to_string())
    }

    /// A synthetic contact id for an event that belongs to no channel contact.
    pub fn from_event_id(id: Uuid) -> ContactId {
        ContactId(id.to_string())
    }

    /// A channel's contact id: 1–128 of `[A-Za-z0-9-_.:]`.
    pub fn parse(s: &str) -> Result<ContactId, &'static str> {
        bounded_token(s, 128, "must be 1-128 characters of [A-Za-z0-9-_.:]").map(ContactId)
    }
}

impl Mrn {
    /// An MRN: 1–64 of `[A-Za-z0-9-_.:]`.
    pub fn parse(s: &str) -> Result<Mrn, &'static str> {
        bounded_token(s, 64, "must be 1-64 characters of [A-Za-z0-9-_.:]").map(Mrn)
    }
}

impl PortalId {
    /// A portal account id: 1–128 of `[A-Za-z0-9-_.:]`.
    pub fn parse(s: &str) -> Result<PortalId, &'static str> {
        bounded_token(s, 128, "must be 1-128 characters of [A-Za-z0-9-_.:]").map(PortalId)
    }
}

impl PhoneNumber {
    /// E.164: `+` then 8 to 15 digits, the first not zero.
    pub fn parse(s: &str) -> Result<PhoneNumber, &'static str> {
        const REASON: &str = "must be an E.164 number (+ then 8-15 digits)";
        let t = s.trim();
        let digits = t.strip_prefix('+').ok_or(REASON)?;
        if (8..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(PhoneNumber(t.to_string()))
        } else {
            Err(REASON)
        }
    }
}

impl Email {
    /// A plausible address (`local@domain.tld`), trimmed and lower-cased.
    pub fn parse(s: &str) -> Result<Email, &'static str> {
        const REASON: &str = "must be an email address";
        let t = s.trim().to_ascii_lowercase();
        let (local, domain) = t.split_once('@').ok_or(REASON)?;
        if local.is_empty()
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || t.len() > 254
            || t.chars().any(|c| c.is_whitespace())
        {
            return Err(REASON);
        }
        Ok(Email(t))
    }
}

/// The kind of a patient identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    Mrn,
    PortalId,
    Email,
    Phone,
}

impl IdentifierKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Mrn => "mrn",
            IdentifierKind::PortalId => "portal_id",
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<IdentifierKind> {
        match s {
            "mrn" => Some(IdentifierKind::Mrn),
            "portal_id" => Some(IdentifierKind::PortalId),
            "email" => Some(IdentifierKind::Email),
            "phone" => Some(IdentifierKind::Phone),
            _ => None,
        }
    }

    /// How strongly the identifier names one person: MRN is authoritative, a
    /// portal login is authenticated, an email or a phone may be shared.
    pub fn strength(self) -> u8 {
        match self {
            IdentifierKind::Mrn => 4,
            IdentifierKind::PortalId => 3,
            IdentifierKind::Email => 2,
            IdentifierKind::Phone => 1,
        }
    }
}

/// One patient identifier of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identifier {
    Mrn(Mrn),
    PortalId(PortalId),
    Email(Email),
    Phone(PhoneNumber),
}

impl Identifier {
    /// Its kind.
    pub fn kind(&self) -> IdentifierKind {
        match self {
            Identifier::Mrn(_) => IdentifierKind::Mrn,
            Identifier::PortalId(_) => IdentifierKind::PortalId,
            Identifier::Email(_) => IdentifierKind::Email,
            Identifier::Phone(_) => IdentifierKind::Phone,
        }
    }

    /// Its value as text (PHI: never log it).
    pub fn value(&self) -> &str {
        match self {
            Identifier::Mrn(v) => v.as_str(),
            Identifier::PortalId(v) => v.as_str(),
            Identifier::Email(v) => v.as_str(),
            Identifier::Phone(v) => v.as_str(),
        }
    }

    /// Parses a kind and a value (the query-string and store form).
    pub fn parse(kind: IdentifierKind, value: &str) -> Result<Identifier, &'static str> {
        Ok(match kind {
            IdentifierKind::Mrn => Identifier::Mrn(Mrn::parse(value)?),
            IdentifierKind::PortalId => Identifier::PortalId(PortalId::parse(value)?),
            IdentifierKind::Email => Identifier::Email(Email::parse(value)?),
            IdentifierKind::Phone => Identifier::Phone(PhoneNumber::parse(value)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(PhoneNumber::parse("+15551234567").is_ok());
        for bad in ["5551234567", "+1", "+0123456789", "+1555-123-4567", ""] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_normalised_to_lower_case() {
        assert_eq!(
            Email::parse(" Pat@Example.ORG ").unwrap().as_str(),
            "pat@example.org"
        );
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("a@b").is_err());
    }

    #[test]
    fn debug_output_of_phi_identifiers_is_redacted() {
        let mrn = Mrn::parse("MRN-CANARY").unwrap();
        let phone = PhoneNumber::parse("+15550001111").unwrap();
        let text = format!("{mrn:?} {phone:?} {:?}", Identifier::Mrn(mrn.clone()));
        assert!(!text.contains("CANARY") && !text.contains("5550001111"));
    }

    #[test]
    fn mrn_is_the_strongest_identifier() {
        assert!(IdentifierKind::Mrn.strength() > IdentifierKind::PortalId.strength());
        assert!(IdentifierKind::Email.strength() > IdentifierKind::Phone.strength());
    }
}
