//! Liveness, readiness and metrics.

use crate::helpers::{days_ago, event};
use crate::on_both_backends;
use serde_json::json;

on_both_backends! {
    async fn health_and_readiness_answer_ok_when_the_store_is_up(app: TestApp) {
        assert_eq!(app.get("/healthz").await.0, 200);
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 200);
        assert_eq!(body["store"], "up");
    }

    async fn metrics_count_accepted_and_rejected_events_by_channel_and_type(app: TestApp) {
        let e = event("contact.started", "voice", days_ago(0, 0), json!({"phone": "+15550100002"}),
            json!({"contact_id": "call-1"}));
        app.store_event(&e).await;
        app.post_raw("{}").await;
        let text = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap()
            .text().await.unwrap();
        assert!(text.contains(r#"frontdoor_events_total{channel="voice",type="contact.started",outcome="accepted"}"#), "{text}");
        assert!(text.contains(r#"frontdoor_events_rejected_total{reason="validation"}"#));
        assert!(text.contains("frontdoor_store_operation_duration_seconds_bucket"));
        assert!(!text.contains("+15550100002"), "PHI in metrics");
    }
}
