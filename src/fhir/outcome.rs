//! What the FHIR edge answers: `OperationOutcome`s and the `transaction-response` /
//! `batch-response` Bundle with one outcome per entry.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::element::Issue;

/// An `OperationOutcome` holding `issues` (never a value from the request).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({
                "severity": i.severity.as_str(),
                "code": i.code,
                "diagnostics": i.diagnostics,
            });
            if let Some(e) = &i.expression {
                v["expression"] = json!([e]);
            }
            v
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// One entry of the response Bundle: `response.status` (`"201 Created"`), the etag
/// when the resource had a version, and its outcome.
pub fn entry_response(status: &str, etag: Option<&str>, issues: &[Issue]) -> Value {
    let mut response = json!({"status": status, "outcome": operation_outcome(issues)});
    if let Some(t) = etag {
        response["etag"] = json!(t);
    }
    json!({"response": response})
}

/// The response Bundle.
pub fn response_bundle(bundle_type: &str, entries: Vec<Value>, now: DateTime<Utc>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "type": bundle_type,
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issue_names_its_element_in_expression() {
        let o = operation_outcome(&[Issue::error(
            "required",
            "Bundle.entry[0].resource.status",
            "is required",
        )]);
        assert_eq!(
            o["issue"][0]["expression"][0],
            "Bundle.entry[0].resource.status"
        );
        assert_eq!(o["issue"][0]["severity"], "error");
        let o = operation_outcome(&[Issue::info("informational", "stored")]);
        assert!(
            o["issue"][0].get("expression").is_none(),
            "no nulls in FHIR JSON"
        );
    }
}
