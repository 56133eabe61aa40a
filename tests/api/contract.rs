//! The event contract at the HTTP edge: malformed input is refused with
//! problem+json naming the field, nothing is half-stored, duplicates are stored once.

use serde_json::{json, Value};

use crate::helpers::{days_ago, event, TestApp};
use crate::on_both_backends;

fn valid() -> Value {
    event(
        "contact.started",
        "chat",
        days_ago(0, 0),
        json!({"portal_id": "web-CANARY-1"}),
        json!({"contact_id": "chat-1", "intent": "scheduling"}),
    )
}

async fn assert_rejected(app: &TestApp, body: String, field: &str) {
    let res = app.post_raw(body.clone()).await;
    assert_eq!(res.status().as_u16(), 400, "{field}");
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 400);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&field), "expected {field} in {problem}");
    assert!(
        !problem.to_string().contains("CANARY"),
        "problem echoes PHI: {problem}"
    );
}

fn without(field: &str) -> String {
    let mut v = valid();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

fn with(field: &str, value: Value) -> String {
    let mut v = valid();
    v[field] = value;
    v.to_string()
}

on_both_backends! {
    async fn each_malformed_envelope_is_refused_naming_its_field_and_nothing_is_stored(app: TestApp) {
        assert_rejected(&app, without("id"), "id").await;
        assert_rejected(&app, with("id", json!("not-a-uuid")), "id").await;
        assert_rejected(&app, without("occurred_at"), "occurred_at").await;
        assert_rejected(&app, with("occurred_at", json!("26/11/2026 10:00")), "occurred_at").await;
        assert_rejected(&app, without("patient"), "patient").await;
        assert_rejected(&app, with("patient", json!({})), "patient").await;
        assert_rejected(&app, with("patient", json!({"phone": "555-CANARY"})), "patient.phone").await;
        assert_rejected(&app, with("channel", json!("fax")), "channel").await;
        assert_rejected(&app, without("site"), "site").await;
        assert_rejected(&app, with("site", json!(42)), "site").await;
        assert_rejected(&app, with("contact_id", json!(["x"])), "contact_id").await;
        assert_rejected(&app, with("intent", json!(7)), "intent").await;
        assert_rejected(&app, "{\"id\": ".to_string(), "body").await;
        assert_rejected(&app, "[1,2,3]".to_string(), "body").await;
        let huge = with("intent", json!("x".repeat(70_000)));
        assert_rejected(&app, huge, "body").await;
        let bot = event("bot.turn", "iva", days_ago(0, 0), json!({"mrn": "M-1"}),
            json!({"contact_id": "b-1", "resolved": "maybe"}));
        assert_rejected(&app, bot.to_string(), "resolved").await;

        assert_eq!(app.store.count_events(None).await.unwrap(), 0);
        let (status, _) = app.get("/v1/patients?portal_id=web-CANARY-1").await;
        assert_eq!(status, 404, "a rejected event must not create a patient");
    }

    async fn the_same_event_sent_twice_is_stored_once(app: TestApp) {
        let e = valid();
        let first = app.post_event(&e).await;
        assert_eq!(first.status().as_u16(), 202);
        let second = app.post_event(&e).await;
        assert_eq!(second.status().as_u16(), 200);
        let body: Value = second.json().await.unwrap();
        assert_eq!(body["status"], "duplicate");
        assert_eq!(app.store.count_events(None).await.unwrap(), 1);
        let pid = app.patient_id("portal_id", "web-CANARY-1").await;
        assert_eq!(app.context(&pid).await["events_total"], 1);
    }

    async fn an_unknown_event_type_is_stored_and_shown_in_the_timeline(app: TestApp) {
        let e = event("survey.completed", "sms", days_ago(0, 0), json!({"phone": "+15550100001"}),
            json!({"score": 9}));
        app.store_event(&e).await;
        let pid = app.patient_id("phone", "+15550100001").await;
        let ctx = app.context(&pid).await;
        assert_eq!(ctx["timeline"][0]["type"], "survey.completed");
        assert_eq!(ctx["timeline"][0]["channel"], "sms");
    }

    async fn lookups_and_context_reads_with_bad_input_get_problem_details(app: TestApp) {
        let (status, body) = app.get("/v1/patients?phone=12345").await;
        assert_eq!((status, body["errors"][0]["field"].as_str()), (400, Some("phone")));
        let (status, _) = app.get("/v1/patients?mrn=A&phone=%2B15550100001").await;
        assert_eq!(status, 400);
        let (status, _) = app.get("/v1/patients").await;
        assert_eq!(status, 400);
        let (status, body) = app.get("/v1/patients/not-a-uuid/context").await;
        assert_eq!((status, body["errors"][0]["field"].as_str()), (400, Some("patient_id")));
        let (status, body) = app.get(&format!("/v1/patients/{}/context", uuid::Uuid::new_v4())).await;
        assert_eq!((status, body["status"].as_u64()), (404, Some(404)));
        let (status, body) = app.get("/v1/nowhere").await;
        assert_eq!((status, body["title"].as_str()), (404, Some("Not found")));
    }
}

#[test]
fn the_published_json_schema_names_the_same_channels_and_required_fields_as_the_parser() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/envelope.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let channels: Vec<&str> = schema["properties"]["channel"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = frontdoor_actors::event::Channel::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(channels, ours);
    assert_eq!(
        schema["required"],
        json!(["id", "type", "occurred_at", "site", "channel"])
    );
    let text = schema.to_string();
    for t in frontdoor_actors::event::KNOWN_TYPES {
        assert!(text.contains(t), "schema does not describe {t}");
    }
}

/// docs/contract.md marks a field "(required" exactly when the parser refuses the
/// event without it (`note.recorded` once omitted `author`).
#[actix_web::test]
async fn note_recorded_requires_author_and_text_as_docs_contract_md_says() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/contract.md")).unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `note.recorded`"))
        .expect("the note.recorded row");
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    let note = |fields: Value| {
        event(
            "note.recorded",
            "ehr",
            days_ago(0, 0),
            json!({"mrn": "MRN-NOTE-1"}),
            fields,
        )
    };
    let full = json!({"author": "dr-osei", "role": "physician", "text": "call back Monday"});
    assert_eq!(
        app.post_event(&note(full.clone())).await.status().as_u16(),
        202
    );
    for field in ["author", "text", "role"] {
        let mut fields = full.clone();
        fields.as_object_mut().unwrap().remove(field);
        let status = app.post_event(&note(fields)).await.status().as_u16();
        let documented = row.contains(&format!("`{field}` (required"));
        assert_eq!(
            status == 400,
            documented,
            "{field}: answered {status}, docs/contract.md says required = {documented}"
        );
    }
}
