//! FHIR R4: the EHR's language, in and out (docs/fhir.md).
//!
//! Inbound bundles are read and mapped into the same envelopes the event contract
//! has, and stored through the one ingest path; outbound, a patient's context is
//! served as a Bundle. (What Front Door files in the EHR, `ehr.document` and
//! `ehr.identity`, is decided by the actors: `frontdoor_actors::ehr`.) No SQL, no
//! HTTP here: plain functions over JSON, with tests beside them.
//!
//! # Layout
//! - [`element`]: reading FHIR JSON with element paths; issues name the path, never the value.
//! - [`codes`]: R4 resource types and value sets, the LOINC glucose codes.
//! - [`inbound`]: a Bundle or resource, read and planned into envelopes.
//! - [`outcome`]: `OperationOutcome` and the `transaction-response`/`batch-response` Bundle.
//! - [`context`]: the patient context as a `collection` Bundle.

pub mod codes;
pub mod context;
pub mod element;
pub mod inbound;
pub mod outcome;
