//! The code lists the FHIR edge checks against: R4 resource types and value sets, and
//! the LOINC codes Front Door keeps as glucose readings.

/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// UCUM units.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// HL7 observation categories.
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// HL7 v2 table 0203 (identifier types; `MR` is the medical record number).
pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// Every resource type of FHIR R4 (4.0.1). A `resourceType` outside this list is not
/// FHIR R4; the list also bounds the `resource` label of the entry metric.
pub const R4_RESOURCE_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// The R4 resource type named `s`, as a `'static` label.
pub fn resource_type(s: &str) -> Option<&'static str> {
    R4_RESOURCE_TYPES.iter().find(|t| **t == s).copied()
}

/// `Bundle.type` (R4), plus R4B's `subscription-notification`, which R4 senders of
/// the Subscriptions Backport also use.
pub const BUNDLE_TYPES: [&str; 10] = [
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
    "subscription-notification",
];

/// `Appointment.status` (R4).
pub const APPOINTMENT_STATUS: [&str; 10] = [
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
];

/// `MedicationRequest.status` (R4).
pub const MEDICATION_REQUEST_STATUS: [&str; 8] = [
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
];

/// `MedicationRequest.intent` (R4).
pub const MEDICATION_REQUEST_INTENT: [&str; 8] = [
    "proposal",
    "plan",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
];

/// `MedicationStatement.status` (R4).
pub const MEDICATION_STATEMENT_STATUS: [&str; 8] = [
    "active",
    "completed",
    "entered-in-error",
    "intended",
    "stopped",
    "on-hold",
    "unknown",
    "not-taken",
];

/// `Observation.status` (R4).
pub const OBSERVATION_STATUS: [&str; 8] = [
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
];

/// `Communication.status` (R4 EventStatus).
pub const COMMUNICATION_STATUS: [&str; 8] = [
    "preparation",
    "in-progress",
    "not-done",
    "on-hold",
    "stopped",
    "completed",
    "entered-in-error",
    "unknown",
];

/// `Encounter.status` (R4).
pub const ENCOUNTER_STATUS: [&str; 9] = [
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
];

/// Where a glucose reading was measured: the `device` of its `device.readings` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlucoseSource {
    /// Blood, serum or plasma in a laboratory.
    Lab,
    /// Capillary blood or a test strip (a meter).
    Meter,
    /// Interstitial fluid: a continuous glucose monitor (readings and summaries).
    Cgm,
}

impl GlucoseSource {
    /// The `device` value.
    pub fn device(self) -> &'static str {
        match self {
            GlucoseSource::Lab => "lab",
            GlucoseSource::Meter => "glucometer",
            GlucoseSource::Cgm => "cgm",
        }
    }
}

/// The LOINC glucose codes Front Door keeps, by specimen (they differ: map by code).
/// CGM sensor readings and summaries follow the HL7 CGM implementation guide.
pub const GLUCOSE_LOINC: [(&str, GlucoseSource); 15] = [
    ("2345-7", GlucoseSource::Lab), // Glucose [Mass/volume] in Serum or Plasma
    ("2339-0", GlucoseSource::Lab), // Glucose [Mass/volume] in Blood
    ("1558-6", GlucoseSource::Lab), // Fasting glucose [Mass/volume] in Serum or Plasma
    ("14749-6", GlucoseSource::Lab), // Glucose [Moles/volume] in Serum or Plasma
    ("15074-8", GlucoseSource::Lab), // Glucose [Moles/volume] in Blood
    ("41653-7", GlucoseSource::Meter), // Glucose [Mass/volume] in Capillary blood by Glucometer
    ("32016-8", GlucoseSource::Meter), // Glucose [Mass/volume] in Capillary blood
    ("14743-9", GlucoseSource::Meter), // Glucose [Moles/volume] in Capillary blood by Glucometer
    ("2340-8", GlucoseSource::Meter), // Glucose [Mass/volume] in Blood by Automated test strip
    ("2341-6", GlucoseSource::Meter), // Glucose [Mass/volume] in Blood by Test strip manual
    ("99504-3", GlucoseSource::Cgm), // Glucose [Mass/volume] in Interstitial fluid (CGM reading)
    ("14745-4", GlucoseSource::Cgm), // Glucose [Moles/volume] (CGM reading, molar)
    ("97507-8", GlucoseSource::Cgm), // Average glucose in interstitial fluid (CGM summary)
    ("97506-0", GlucoseSource::Cgm), // Glucose management indicator (CGM summary)
    ("97510-2", GlucoseSource::Cgm), // Time in target range (CGM summary)
];

/// The glucose source of a LOINC code, if Front Door keeps it.
pub fn glucose(loinc: &str) -> Option<GlucoseSource> {
    GLUCOSE_LOINC
        .iter()
        .find(|(c, _)| *c == loinc)
        .map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_list_is_r4_sorted_and_without_repeats() {
        let mut sorted = R4_RESOURCE_TYPES.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, R4_RESOURCE_TYPES.to_vec());
        // R4 has these; R4B and R5 renamed or dropped them.
        for t in [
            "MedicinalProduct",
            "EffectEvidenceSynthesis",
            "Media",
            "RequestGroup",
        ] {
            assert!(resource_type(t).is_some(), "{t}");
        }
        assert_eq!(resource_type("SubscriptionTopic"), None, "R5 only");
    }

    #[test]
    fn glucose_is_told_apart_by_specimen() {
        assert_eq!(glucose("2345-7"), Some(GlucoseSource::Lab));
        assert_eq!(glucose("41653-7"), Some(GlucoseSource::Meter));
        assert_eq!(glucose("99504-3"), Some(GlucoseSource::Cgm));
        assert_eq!(glucose("4548-4"), None, "HbA1c is not a glucose reading");
    }
}
