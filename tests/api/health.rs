//! Liveness and readiness (event counters: tests/alone/metrics.rs, in a process of
//! their own).

use crate::on_both_backends;

on_both_backends! {
    async fn health_and_readiness_answer_ok_when_the_store_is_up(app: TestApp) {
        assert_eq!(app.get("/healthz").await.0, 200);
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 200);
        assert_eq!(body["store"], "up");
    }

}
