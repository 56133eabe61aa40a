//! A broker resource alarm (`connection.blocked`): publishing pauses and resumes,
//! and nothing is lost or sent twice as a different command.
//!
//! The alarm is raised on the shared broker by lowering its memory watermark, so it
//! blocks every publisher on it: the window is kept as short as the checks allow,
//! and the watermark is restored when the guard is dropped, even on a panic.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::amqp::{amqp_url, enable_broker, eventually, Adapter};
use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend};
use crate::{alone, series};

const WITHIN: Duration = Duration::from_secs(30);

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed with the broker (see .ci/run)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The broker's memory alarm, raised while this lives.
struct MemoryAlarm {
    /// The watermark to put back (`0.4`, or `absolute <bytes>`).
    restore: Vec<String>,
}

impl MemoryAlarm {
    fn raise() -> MemoryAlarm {
        let current = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
        let restore = match current.strip_prefix("{absolute,") {
            Some(rest) => vec![
                "absolute".to_string(),
                rest.trim_end_matches('}').to_string(),
            ],
            None => {
                let v: f64 = current
                    .parse()
                    .unwrap_or_else(|_| panic!("a watermark, not {current:?}"));
                vec![v.to_string()]
            }
        };
        let alarm = MemoryAlarm { restore };
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0001"]);
        alarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.restore.iter().map(String::as_str));
        let _ = Command::new("rabbitmqctl").args(&args).output();
    }
}

#[actix_web::test]
async fn a_broker_memory_alarm_pauses_command_publishing_which_resumes_when_it_clears() {
    let _alone = alone().await;
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    // A blocked round times out quickly; the check below outlasts one.
    settings.broker.confirm_timeout_ms = 500;
    let mut adapter = Adapter::connect(&settings).await;
    let sink = adapter.command_queue("#").await;
    let app = spawn_app_with(settings, dir).await;
    eventually(WITHIN, "the broker side ready", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 200 && body["broker"] == "up").then_some(())
    })
    .await;
    let blocked = r#"frontdoor_broker_blocked_total{component="relay"}"#;
    let before = series(&app.metrics().await, blocked);

    let alarm = MemoryAlarm::raise();
    let booking = event(
        "appointment.booked",
        "portal",
        days_ago(0, 0),
        json!({"mrn": "MRN-AL-1", "phone": "+15550109001"}),
        json!({"appointment_id": "appt-al", "starts_at": days_ago(-3, 0).to_rfc3339(),
               "department": "cardiology"}),
    );
    app.store_event(&booking).await;
    // The relay tries to publish the confirmation; the broker blocks it.
    eventually(WITHIN, "the relay's connection blocked", || async {
        (series(&app.metrics().await, blocked) > before).then_some(())
    })
    .await;
    // Longer than a relay round's confirm timeout: a round ran out while blocked.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        app.store.outbox_counts().await.unwrap(),
        (1, 0, 0),
        "the command waits in the outbox while blocked"
    );
    assert_eq!(adapter.ready(&sink).await, 0, "nothing published");
    drop(alarm);

    eventually(
        WITHIN,
        "the command published once the alarm cleared",
        || async { (app.store.outbox_counts().await.ok()? == (0, 1, 0)).then_some(()) },
    )
    .await;
    eventually(WITHIN, "the command in the adapter's queue", || async {
        (adapter.ready(&sink).await >= 1).then_some(())
    })
    .await;
    let ids: HashSet<String> = adapter
        .take_all(&sink)
        .await
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one command (a republish keeps its id)");
    adapter.cleanup().await;
}
