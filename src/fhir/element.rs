//! Reading FHIR JSON with element paths: every problem is an [`Issue`] that names the
//! element (`Bundle.entry[2].resource.status`) and the rule, never the value.
//!
//! [`structure`] checks the JSON rules every FHIR resource obeys (no `null`, no empty
//! strings, objects or arrays, element names only); [`Reader`] reads the elements
//! Front Door uses, with their data types, and records what is wrong with them.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The request (or entry) cannot be processed.
    Error,
    /// Processed, with something the sender should know.
    Warning,
    /// What was done.
    Information,
}

impl Severity {
    /// The FHIR code.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One `OperationOutcome.issue`: what, where, why — never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// How bad.
    pub severity: Severity,
    /// FHIR IssueType code (`required`, `value`, `structure`, `code-invalid`...).
    pub code: &'static str,
    /// The element path (FHIRPath), when the issue is about an element.
    pub expression: Option<String>,
    /// The rule, in words (no data from the request).
    pub diagnostics: String,
}

impl Issue {
    /// An error about one element.
    pub fn error(code: &'static str, path: &str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            expression: Some(path.to_string()),
            diagnostics: diagnostics.into(),
        }
    }

    /// A warning about one element.
    pub fn warning(code: &'static str, path: &str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Warning,
            code,
            expression: Some(path.to_string()),
            diagnostics: diagnostics.into(),
        }
    }

    /// Information about what was done.
    pub fn info(code: &'static str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Information,
            code,
            expression: None,
            diagnostics: diagnostics.into(),
        }
    }
}

/// A FHIR element name: a letter (or `_` for a primitive's extension) then letters,
/// digits and `_`, at most 64 characters.
fn is_element_name(k: &str) -> bool {
    let mut chars = k.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && k.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The JSON rules of every FHIR resource: no `null` outside arrays of primitives,
/// no empty (or whitespace-only) strings, no empty objects or arrays, and property
/// names that are element names. Appends one issue per offending element.
pub fn structure(value: &Value, path: &str, issues: &mut Vec<Issue>) {
    match value {
        Value::Null => issues.push(Issue::error(
            "structure",
            path,
            "must not be null: leave the element out",
        )),
        Value::String(s) if s.trim().is_empty() => issues.push(Issue::error(
            "value",
            path,
            "must not be empty or only whitespace",
        )),
        Value::Array(items) if items.is_empty() => issues.push(Issue::error(
            "structure",
            path,
            "must not be an empty array",
        )),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                // `null` keeps primitive arrays aligned with their `_element` twins.
                if !item.is_null() {
                    structure(item, &format!("{path}[{i}]"), issues);
                }
            }
        }
        Value::Object(m) if m.is_empty() => issues.push(Issue::error(
            "structure",
            path,
            "must not be an empty object",
        )),
        Value::Object(m) => {
            for (k, v) in m {
                if !is_element_name(k) {
                    issues.push(Issue::error(
                        "structure",
                        path,
                        "holds a property whose name is not a FHIR element name",
                    ));
                    continue;
                }
                // The XHTML narrative is checked for being a string only.
                if k == "div" {
                    if !v.is_string() {
                        issues.push(Issue::error(
                            "value",
                            &format!("{path}.div"),
                            "must be a string",
                        ));
                    }
                    continue;
                }
                structure(v, &format!("{path}.{k}"), issues);
            }
        }
        _ => {}
    }
}

/// Parses a FHIR `dateTime` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a full time with a
/// zone); a partial one is taken at its first instant, UTC.
pub fn parse_date_time(s: &str) -> Option<DateTime<Utc>> {
    if s.contains('T') {
        return DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc));
    }
    let (y, m, d) = match s.len() {
        4 => (s, "01", "01"),
        7 => (s.get(..4)?, s.get(5..7)?, "01"),
        10 => (s.get(..4)?, s.get(5..7)?, s.get(8..10)?),
        _ => return None,
    };
    if s.len() >= 7 && s.as_bytes().get(4) != Some(&b'-') {
        return None;
    }
    if s.len() == 10 && s.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// One coding of a CodeableConcept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coding {
    /// Code system URI.
    pub system: Option<String>,
    /// The code.
    pub code: Option<String>,
    /// Its display text.
    pub display: Option<String>,
}

/// A CodeableConcept: codings and text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concept {
    /// Codings.
    pub codings: Vec<Coding>,
    /// Plain text.
    pub text: Option<String>,
}

impl Concept {
    /// What a person would call it: the text, else the first display, else the first code.
    pub fn label(&self) -> Option<String> {
        self.text
            .clone()
            .or_else(|| self.codings.iter().find_map(|c| c.display.clone()))
            .or_else(|| self.codings.iter().find_map(|c| c.code.clone()))
    }

    /// The code of the first coding in `system`.
    pub fn code_in(&self, system: &str) -> Option<&str> {
        self.codings
            .iter()
            .find(|c| c.system.as_deref() == Some(system))
            .and_then(|c| c.code.as_deref())
    }
}

/// An Identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ident {
    /// Namespace URI.
    pub system: Option<String>,
    /// The value.
    pub value: Option<String>,
}

/// A Reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reference {
    /// Literal reference (`Patient/1`, `urn:uuid:…`, an absolute URL).
    pub reference: Option<String>,
    /// Type the reference points at.
    pub type_: Option<String>,
    /// Logical reference by identifier.
    pub identifier: Option<Ident>,
    /// Text.
    pub display: Option<String>,
    /// Where this reference sits (for issues).
    pub path: String,
}

impl Reference {
    /// The resource type it names: `type`, else the `Type/id` form of the reference.
    pub fn target_type(&self) -> Option<&str> {
        if let Some(t) = self.type_.as_deref() {
            return Some(t);
        }
        let r = self.reference.as_deref()?;
        if r.starts_with("urn:") || r.starts_with('#') {
            return None;
        }
        let parts: Vec<&str> = r.trim_end_matches('/').split('/').collect();
        // …/Type/id or …/Type/id/_history/v
        let at = match parts.iter().position(|p| *p == "_history") {
            Some(h) if h >= 2 => h - 2,
            _ if parts.len() >= 2 => parts.len() - 2,
            _ => return None,
        };
        parts
            .get(at)
            .copied()
            .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
    }
}

/// A quantity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantity {
    /// The number.
    pub value: Option<f64>,
    /// Unit text.
    pub unit: Option<String>,
    /// UCUM code.
    pub code: Option<String>,
}

/// Reads elements of a resource, collecting issues.
#[derive(Debug, Default)]
pub struct Reader {
    /// What is wrong so far.
    pub issues: Vec<Issue>,
}

impl Reader {
    /// Records an error.
    pub fn err(&mut self, code: &'static str, path: &str, why: impl Into<String>) {
        self.issues.push(Issue::error(code, path, why));
    }

    /// An optional child of `obj`.
    pub fn get<'v>(&self, obj: &'v Value, name: &str) -> Option<&'v Value> {
        obj.get(name).filter(|v| !v.is_null())
    }

    /// An optional string element.
    pub fn string(&mut self, obj: &Value, path: &str, name: &str) -> Option<String> {
        match self.get(obj, name)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.err("value", &format!("{path}.{name}"), "must be a string");
                None
            }
        }
    }

    /// A required string element.
    pub fn required_string(&mut self, obj: &Value, path: &str, name: &str) -> Option<String> {
        if self.get(obj, name).is_none() {
            self.err("required", &format!("{path}.{name}"), "is required");
            return None;
        }
        self.string(obj, path, name)
    }

    /// A required `code` from a fixed list.
    pub fn required_code(
        &mut self,
        obj: &Value,
        path: &str,
        name: &str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let s = self.required_string(obj, path, name)?;
        match allowed.iter().find(|a| **a == s) {
            Some(a) => Some(a),
            None => {
                self.err(
                    "code-invalid",
                    &format!("{path}.{name}"),
                    format!("must be one of {}", allowed.join(", ")),
                );
                None
            }
        }
    }

    /// An optional `dateTime` (or `instant` when `instant`).
    pub fn date_time(
        &mut self,
        obj: &Value,
        path: &str,
        name: &str,
        instant: bool,
    ) -> Option<DateTime<Utc>> {
        let s = self.string(obj, path, name)?;
        let parsed = if instant && !s.contains('T') {
            None
        } else {
            parse_date_time(&s)
        };
        if parsed.is_none() {
            let what = if instant {
                "must be a FHIR instant (a full date and time with a zone)"
            } else {
                "must be a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or a date and time with a zone)"
            };
            self.err("value", &format!("{path}.{name}"), what);
        }
        parsed
    }

    /// An optional boolean.
    pub fn boolean(&mut self, obj: &Value, path: &str, name: &str) -> Option<bool> {
        match self.get(obj, name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.err("value", &format!("{path}.{name}"), "must be true or false");
                None
            }
        }
    }

    /// An optional decimal.
    pub fn decimal(&mut self, obj: &Value, path: &str, name: &str) -> Option<f64> {
        match self.get(obj, name)? {
            Value::Number(n) => n.as_f64(),
            _ => {
                self.err("value", &format!("{path}.{name}"), "must be a JSON number");
                None
            }
        }
    }

    /// An optional object element (a complex type).
    pub fn object<'v>(&mut self, obj: &'v Value, path: &str, name: &str) -> Option<&'v Value> {
        match self.get(obj, name)? {
            v @ Value::Object(_) => Some(v),
            _ => {
                self.err("structure", &format!("{path}.{name}"), "must be an object");
                None
            }
        }
    }

    /// The items of a repeating element (FHIR JSON: always an array), with their paths.
    pub fn array<'v>(
        &mut self,
        obj: &'v Value,
        path: &str,
        name: &str,
    ) -> Vec<(String, &'v Value)> {
        match self.get(obj, name) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(i, v)| (format!("{path}.{name}[{i}]"), v))
                .collect(),
            Some(_) => {
                self.err(
                    "structure",
                    &format!("{path}.{name}"),
                    "must be an array (a repeating element)",
                );
                Vec::new()
            }
        }
    }

    /// A Coding.
    pub fn coding(&mut self, v: &Value, path: &str) -> Coding {
        Coding {
            system: self.string(v, path, "system"),
            code: self.string(v, path, "code"),
            display: self.string(v, path, "display"),
        }
    }

    /// A CodeableConcept at `path`.
    pub fn concept(&mut self, v: &Value, path: &str) -> Concept {
        if !v.is_object() {
            self.err("structure", path, "must be an object (a CodeableConcept)");
            return Concept::default();
        }
        let codings = self
            .array(v, path, "coding")
            .into_iter()
            .map(|(p, c)| self.coding(c, &p))
            .collect();
        Concept {
            codings,
            text: self.string(v, path, "text"),
        }
    }

    /// An optional CodeableConcept child.
    pub fn concept_opt(&mut self, obj: &Value, path: &str, name: &str) -> Option<Concept> {
        let v = self.object(obj, path, name)?;
        Some(self.concept(v, &format!("{path}.{name}")))
    }

    /// The CodeableConcepts of a repeating child.
    pub fn concepts(&mut self, obj: &Value, path: &str, name: &str) -> Vec<Concept> {
        self.array(obj, path, name)
            .into_iter()
            .map(|(p, v)| self.concept(v, &p))
            .collect()
    }

    /// An Identifier at `path`.
    pub fn ident(&mut self, v: &Value, path: &str) -> Ident {
        if !v.is_object() {
            self.err("structure", path, "must be an object (an Identifier)");
            return Ident::default();
        }
        Ident {
            system: self.string(v, path, "system"),
            value: self.string(v, path, "value"),
        }
    }

    /// A Reference at `path`.
    pub fn reference(&mut self, v: &Value, path: &str) -> Reference {
        if !v.is_object() {
            self.err("structure", path, "must be an object (a Reference)");
            return Reference {
                path: path.to_string(),
                ..Reference::default()
            };
        }
        let identifier = self
            .object(v, path, "identifier")
            .map(|i| self.ident(i, &format!("{path}.identifier")));
        Reference {
            reference: self.string(v, path, "reference"),
            type_: self.string(v, path, "type"),
            identifier,
            display: self.string(v, path, "display"),
            path: path.to_string(),
        }
    }

    /// An optional Reference child.
    pub fn reference_opt(&mut self, obj: &Value, path: &str, name: &str) -> Option<Reference> {
        let v = self.object(obj, path, name)?;
        Some(self.reference(v, &format!("{path}.{name}")))
    }

    /// A required Reference child.
    pub fn reference_req(&mut self, obj: &Value, path: &str, name: &str) -> Option<Reference> {
        if self.get(obj, name).is_none() {
            self.err("required", &format!("{path}.{name}"), "is required");
            return None;
        }
        self.reference_opt(obj, path, name)
    }

    /// A Quantity at `path`.
    pub fn quantity(&mut self, v: &Value, path: &str) -> Quantity {
        Quantity {
            value: self.decimal(v, path, "value"),
            unit: self.string(v, path, "unit"),
            code: self.string(v, path, "code"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(issues: &[Issue]) -> Vec<&str> {
        issues
            .iter()
            .filter_map(|i| i.expression.as_deref())
            .collect()
    }

    #[test]
    fn the_json_rules_name_each_offending_element_and_never_its_value() {
        let v = json!({
            "resourceType": "Patient",
            "gender": null,
            "name": [],
            "identifier": [{"system": "", "value": "CANARY-1"}],
            "telecom": [{}],
            "text": {"status": "generated", "div": "<div>ok</div>"},
            "bad key!": "CANARY-2"
        });
        let mut issues = Vec::new();
        structure(&v, "Patient", &mut issues);
        assert_eq!(
            paths(&issues),
            vec![
                "Patient",
                "Patient.gender",
                "Patient.identifier[0].system",
                "Patient.name",
                "Patient.telecom[0]",
            ]
        );
        assert!(!format!("{issues:?}").contains("CANARY"));
    }

    #[test]
    fn fhir_date_times_may_be_partial_but_instants_may_not() {
        assert_eq!(
            parse_date_time("2026-01").unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(parse_date_time("2026-11-30T09:30:00-05:00").is_some());
        assert!(
            parse_date_time("2026-11-30T09:30:00").is_none(),
            "a time needs a zone"
        );
        assert!(parse_date_time("30/11/2026").is_none());
        let mut r = Reader::default();
        let v = json!({"start": "2026-11-30"});
        assert!(r.date_time(&v, "Appointment", "start", true).is_none());
        assert_eq!(paths(&r.issues), vec!["Appointment.start"]);
    }

    #[test]
    fn codes_outside_the_value_set_are_named_with_the_allowed_ones() {
        let mut r = Reader::default();
        let v = json!({"status": "CANARY"});
        assert!(r
            .required_code(&v, "Observation", "status", &["final", "amended"])
            .is_none());
        assert_eq!(r.issues[0].code, "code-invalid");
        assert_eq!(r.issues[0].diagnostics, "must be one of final, amended");
        r.required_code(&json!({}), "Observation", "status", &["final"]);
        assert_eq!(r.issues[1].code, "required");
    }

    #[test]
    fn a_reference_names_its_target_type() {
        let mut r = Reader::default();
        let t = |s: &str, r: &mut Reader| {
            r.reference(&json!({"reference": s}), "x")
                .target_type()
                .map(str::to_string)
        };
        assert_eq!(t("Patient/1", &mut r).as_deref(), Some("Patient"));
        assert_eq!(
            t("https://ehr.example.org/fhir/Patient/1/_history/2", &mut r).as_deref(),
            Some("Patient")
        );
        assert_eq!(t("urn:uuid:5a1c", &mut r), None);
    }
}
