//! Event counters, as deltas in a process no other test's application writes to.

use serde_json::json;

use crate::helpers::{days_ago, event, spawn_app, Backend};
use crate::{alone, series};

#[actix_web::test]
async fn metrics_count_accepted_and_rejected_events_by_channel_and_type() {
    let _alone = alone().await;
    let app = spawn_app(Backend::Sqlite).await;
    let accepted =
        r#"frontdoor_events_total{channel="voice",type="contact.started",outcome="accepted"}"#;
    let rejected = r#"frontdoor_events_rejected_total{reason="validation"}"#;
    let before = app.metrics().await;

    let e = event(
        "contact.started",
        "voice",
        days_ago(0, 0),
        json!({"phone": "+15550100002"}),
        json!({"contact_id": "call-1"}),
    );
    assert_eq!(app.post_event(&e).await.status().as_u16(), 202);
    assert_eq!(
        app.post_raw("{}").await.status().as_u16(),
        400,
        "an empty object is not an event"
    );

    let after = app.metrics().await;
    assert_eq!(
        series(&after, accepted) - series(&before, accepted),
        1.0,
        "{after}"
    );
    assert_eq!(
        series(&after, rejected) - series(&before, rejected),
        1.0,
        "{after}"
    );
    assert!(after.contains("frontdoor_store_operation_duration_seconds_bucket"));
    assert!(!after.contains("+15550100002"), "PHI in metrics");
}
