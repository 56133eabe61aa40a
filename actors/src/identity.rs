//! Identity resolution: which patient an event's identifiers name.
//!
//! The rules, and why:
//! - The MRN is authoritative; a portal id is an authenticated login; an email or a
//!   phone may be shared by a household. The strongest known identifier wins.
//! - Identifiers that arrive together on one event and are not yet known are
//!   *claimed* by the patient the event resolves to (a portal event carrying portal
//!   id and MRN links them).
//! - Two existing patients are **never merged automatically** (the pitfall of
//!   systems whose wrong merges cannot be undone). When an event's identifiers point
//!   at different patients, it resolves to the strongest and the others are reported
//!   as conflicts. Only an explicit `identity.linked` merges or moves, and every merge
//!   or move is recorded as a reversible link (FHIR `Patient.link`).
//! - A new MRN never attaches to a patient that already has a different MRN: that
//!   is a different person sharing a phone or email.

use serde::Serialize;

use crate::ids::{Identifier, IdentifierKind, PatientId};

/// What the store knows about one identifier of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownIdentifier {
    /// The identifier.
    pub identifier: Identifier,
    /// The patient who holds it now.
    pub owner: PatientId,
    /// Whether that patient has an MRN (is confirmed, not provisional).
    pub owner_has_mrn: bool,
}

/// How sure the match is (FHIR `Patient/$match` grades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchGrade {
    /// Matched on the MRN, or a new record.
    Certain,
    /// Matched on an authenticated portal login.
    Probable,
    /// Matched on an email or phone only.
    Possible,
}

/// Which patient the event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An existing patient.
    Existing(PatientId),
    /// A new patient (provisional when it has no MRN).
    New,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The patient the event belongs to.
    pub target: Target,
    /// Unknown identifiers the target claims.
    pub claims: Vec<Identifier>,
    /// Known identifiers that belong to someone else and were left there.
    pub conflicts: Vec<IdentifierKind>,
    /// How sure the match is.
    pub grade: MatchGrade,
}

impl Resolution {
    /// True when the new patient has no MRN (an unknown caller).
    pub fn provisional(&self) -> bool {
        !self.claims.iter().any(|i| i.kind() == IdentifierKind::Mrn)
    }
}

/// Resolves an event's identifiers against what the store knows of them.
pub fn resolve(ids: &[Identifier], known: &[KnownIdentifier]) -> Resolution {
    let known_of = |id: &Identifier| known.iter().find(|k| &k.identifier == id);
    let strongest = known
        .iter()
        .max_by_key(|k| (k.identifier.kind().strength(), std::cmp::Reverse(k.owner)));
    let unknown_mrn = ids
        .iter()
        .any(|i| i.kind() == IdentifierKind::Mrn && known_of(i).is_none());

    let target = match strongest {
        None => Target::New,
        // A new MRN with a stronger-known owner who already has an MRN: a different person.
        Some(k) if unknown_mrn && k.owner_has_mrn => Target::New,
        Some(k) => Target::Existing(k.owner),
    };
    let claims: Vec<Identifier> = ids
        .iter()
        .filter(|i| known_of(i).is_none())
        .cloned()
        .collect();
    let conflicts: Vec<IdentifierKind> = known
        .iter()
        .filter(|k| Target::Existing(k.owner) != target)
        .map(|k| k.identifier.kind())
        .collect();
    let grade = match (target, strongest) {
        (Target::New, _) | (_, None) => MatchGrade::Certain,
        (Target::Existing(_), Some(k)) => match k.identifier.kind() {
            IdentifierKind::Mrn => MatchGrade::Certain,
            IdentifierKind::PortalId => MatchGrade::Probable,
            _ => MatchGrade::Possible,
        },
    };
    Resolution {
        target,
        claims,
        conflicts,
        grade,
    }
}

/// One step of an explicit `identity.linked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAction {
    /// A provisional patient (no MRN) is merged whole into the target: its journey
    /// shows in the target's timeline and its identifiers move over.
    Merge { from: PatientId },
    /// One identifier moves from a confirmed patient to the target (the other
    /// patient keeps its own MRN and journey).
    Move {
        identifier: Identifier,
        from: PatientId,
    },
}

/// Plans an `identity.linked` for `target`, given who holds each identifier now.
pub fn plan_link(target: PatientId, known: &[KnownIdentifier]) -> Vec<LinkAction> {
    let mut actions: Vec<LinkAction> = Vec::new();
    for k in known.iter().filter(|k| k.owner != target) {
        let action = if k.owner_has_mrn {
            LinkAction::Move {
                identifier: k.identifier.clone(),
                from: k.owner,
            }
        } else {
            LinkAction::Merge { from: k.owner }
        };
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Mrn, PhoneNumber, PortalId};

    fn mrn(s: &str) -> Identifier {
        Identifier::Mrn(Mrn::parse(s).unwrap())
    }
    fn phone(s: &str) -> Identifier {
        Identifier::Phone(PhoneNumber::parse(s).unwrap())
    }
    fn portal(s: &str) -> Identifier {
        Identifier::PortalId(PortalId::parse(s).unwrap())
    }
    fn known(identifier: Identifier, owner: PatientId, owner_has_mrn: bool) -> KnownIdentifier {
        KnownIdentifier {
            identifier,
            owner,
            owner_has_mrn,
        }
    }

    #[test]
    fn an_unknown_caller_becomes_a_new_provisional_patient() {
        let r = resolve(&[phone("+15550001111")], &[]);
        assert_eq!(r.target, Target::New);
        assert!(r.provisional());
        assert_eq!(r.claims, vec![phone("+15550001111")]);
    }

    #[test]
    fn identifiers_that_arrive_together_are_claimed_by_the_known_patient() {
        let p = PatientId::new();
        let r = resolve(&[mrn("M1"), portal("web-1")], &[known(mrn("M1"), p, true)]);
        assert_eq!(r.target, Target::Existing(p));
        assert_eq!(r.claims, vec![portal("web-1")]);
        assert_eq!(r.grade, MatchGrade::Certain);
    }

    #[test]
    fn the_strongest_identifier_wins_and_two_patients_are_not_merged_automatically() {
        let by_mrn = PatientId::new();
        let by_phone = PatientId::new();
        let r = resolve(
            &[mrn("M1"), phone("+15550001111")],
            &[
                known(phone("+15550001111"), by_phone, false),
                known(mrn("M1"), by_mrn, true),
            ],
        );
        assert_eq!(r.target, Target::Existing(by_mrn));
        assert!(r.claims.is_empty());
        assert_eq!(r.conflicts, vec![IdentifierKind::Phone]);
    }

    #[test]
    fn a_new_mrn_on_a_shared_family_phone_is_a_different_person() {
        let parent = PatientId::new();
        let r = resolve(
            &[mrn("CHILD-2"), phone("+15550001111")],
            &[known(phone("+15550001111"), parent, true)],
        );
        assert_eq!(r.target, Target::New);
        assert_eq!(r.claims, vec![mrn("CHILD-2")]);
        assert_eq!(r.conflicts, vec![IdentifierKind::Phone]);
    }

    #[test]
    fn a_provisional_patient_claims_its_first_mrn() {
        let caller = PatientId::new();
        let r = resolve(
            &[mrn("M9"), phone("+15550001111")],
            &[known(phone("+15550001111"), caller, false)],
        );
        assert_eq!(r.target, Target::Existing(caller));
        assert_eq!(r.claims, vec![mrn("M9")]);
        assert_eq!(r.grade, MatchGrade::Possible);
    }

    #[test]
    fn linking_merges_a_provisional_patient_and_moves_from_a_confirmed_one() {
        let target = PatientId::new();
        let provisional = PatientId::new();
        let other = PatientId::new();
        let plan = plan_link(
            target,
            &[
                known(mrn("M1"), target, true),
                known(phone("+15550001111"), provisional, false),
                known(portal("x"), provisional, false),
                known(
                    Identifier::Email(crate::ids::Email::parse("a@b.org").unwrap()),
                    other,
                    true,
                ),
            ],
        );
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0], LinkAction::Merge { from: provisional });
        assert!(matches!(&plan[1], LinkAction::Move { from, .. } if *from == other));
    }
}
