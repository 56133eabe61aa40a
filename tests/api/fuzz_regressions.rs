//! Failures the outside fuzzer (`.ci/fuzz-api.sh`, schemathesis against
//! `/openapi.json`) found, kept as regression tests.

use serde_json::{json, Value};

use crate::helpers::{days_ago, event, spawn_app, Backend};

/// A contact event with `"contact_id": null` was accepted with no contact id (the
/// "required" check looked only for the key's absence).
#[actix_web::test]
async fn a_contact_event_with_a_null_contact_id_is_refused_naming_the_field() {
    let app = spawn_app(Backend::Sqlite).await;
    let started = event(
        "contact.started",
        "chat",
        days_ago(0, 0),
        json!({"portal_id": "web-fuzz-1"}),
        json!({"contact_id": null, "intent": "scheduling"}),
    );
    let res = app.post_event(&started).await;
    assert_eq!(res.status().as_u16(), 400);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "contact_id", "{problem}");
    // Outside contact events null is the same as absent (docs/envelope.schema.json).
    let booked = event(
        "appointment.booked",
        "portal",
        days_ago(0, 0),
        json!({"portal_id": "web-fuzz-1"}),
        json!({"contact_id": null, "appointment_id": "a-1", "starts_at": "2026-12-01T09:00:00Z"}),
    );
    assert_eq!(app.post_event(&booked).await.status().as_u16(), 202);
}

/// `"reason": null` in a configuration change is no reason (documented as nullable);
/// a reason that is not a string is refused.
#[actix_web::test]
async fn a_configuration_change_takes_a_null_reason_and_refuses_a_non_string_one() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, body) = app
        .put(
            "/v1/runtime/config",
            &json!({"reason": null, "routing": {}, "supervision": {"patient": {}, "tasks": {}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .put("/v1/runtime/config", &json!({"reason": 7, "routing": {}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "reason");
}

/// A merge patch's `null` undoes earlier changes of a section (RFC 7396): the fuzzer
/// sent `"tasks": null`, accepted as documented; a value that is neither an object nor
/// null is refused.
#[actix_web::test]
async fn a_null_section_in_a_configuration_change_undoes_its_earlier_changes() {
    let app = spawn_app(Backend::Sqlite).await;
    let threshold = "/config/routing/frustration/repeat_contacts_threshold";
    let (status, body) = app
        .put(
            "/v1/runtime/config",
            &json!({"routing": {"frustration": {"repeat_contacts_threshold": 2}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.pointer(threshold), Some(&json!(2)));
    let (status, body) = app
        .put(
            "/v1/runtime/config",
            &json!({"routing": null, "supervision": {"tasks": null}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.pointer(threshold),
        Some(&json!(3)),
        "back to the file's value"
    );
    let (status, _) = app.put("/v1/runtime/config", &json!({"routing": 5})).await;
    assert_eq!(status, 400);
}
