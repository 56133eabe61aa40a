//! Live configuration is one, durable and audited: a change through the API is
//! stored with who, when and why, applied by every node on the database within a
//! few seconds, kept across restarts and SIGHUP, listed and reverted by an admin;
//! a node that cannot apply a stored version reports not ready.

use std::process::Stdio;
use std::time::{Duration, Instant};

use frontdoor::store::runtime_config::{Appended, ConfigChange};
use serde_json::{json, Value};

use crate::amqp::eventually;
use crate::helpers::{principal_of, spawn_app, spawn_app_with, test_settings, Backend};

/// A child process killed when dropped (also when a test fails half-way).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const THRESHOLD: &str = "/config/routing/frustration/repeat_contacts_threshold";

async fn post(app: &crate::helpers::TestApp, path: &str, body: &Value) -> (u16, Value) {
    let res = app
        .request(
            reqwest::Method::POST,
            path,
            Some(&app.token),
            &[],
            Some(body.to_string()),
        )
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn config_of(app: &crate::helpers::TestApp) -> Value {
    let (status, body) = app.get("/v1/runtime/config").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[actix_web::test]
async fn a_change_is_stored_with_who_and_why_applied_by_every_node_and_kept_across_restarts() {
    let (settings, _) = test_settings(Backend::Postgres).await;
    let a = spawn_app_with(settings.clone(), None).await;
    let mut b = spawn_app_with(settings.clone(), None).await;
    let admin = principal_of(frontdoor::auth::Role::Admin);
    assert_eq!(config_of(&b).await["config_version"], 1);

    let changed = Instant::now();
    let (status, body) = a
        .put(
            "/v1/runtime/config",
            &json!({"routing": {"frustration": {"repeat_contacts_threshold": 2}},
                    "reason": "flu season: escalate sooner"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    assert_eq!(body.pointer(THRESHOLD), Some(&json!(2)));
    // The other node applies it within a few seconds, and both show one version.
    eventually(
        Duration::from_secs(5),
        "node b applies version 2",
        || async {
            let c = config_of(&b).await;
            (c["config_version"] == 2 && c.pointer(THRESHOLD) == Some(&json!(2))).then_some(())
        },
    )
    .await;
    let propagated = changed.elapsed();
    assert!(propagated < Duration::from_secs(3), "{propagated:?}");
    for app in [&a, &b] {
        let (_, rt) = app.get("/v1/runtime").await;
        assert_eq!(rt["config_version"], 2, "{rt}");
        let (_, ready) = app.get("/readyz").await;
        assert_eq!(ready["config_version"], 2, "{ready}");
    }

    // Who, when, why and what, on any node.
    let (status, history) = b.get("/v1/runtime/config/history").await;
    assert_eq!(status, 200, "{history}");
    let latest = &history["changes"][0];
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["changed_by"], admin);
    assert_eq!(latest["kind"], "change");
    assert_eq!(latest["reason"], "flu season: escalate sooner");
    assert_eq!(
        latest["patch"],
        json!({"routing": {"frustration": {"repeat_contacts_threshold": 2}}})
    );
    chrono::DateTime::parse_from_rfc3339(latest["changed_at"].as_str().unwrap()).unwrap();
    // The audit trail has it too.
    let (_, audit) = a.get(&format!("/v1/audit?principal={admin}")).await;
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resource"] == "runtime.config"
                && r["reason"] == "flu season: escalate sooner"),
        "{audit}"
    );

    // A restart keeps it: a new node on the same database starts with version 2.
    b.stop().await;
    let c = spawn_app_with(settings.clone(), None).await;
    let cfg = config_of(&c).await;
    assert_eq!(cfg["config_version"], 2, "{cfg}");
    assert_eq!(cfg.pointer(THRESHOLD), Some(&json!(2)));

    // An invalid change is refused and stores nothing.
    let (status, _) = c
        .put(
            "/v1/runtime/config",
            &json!({"routing": {"offer_timeout_secs": 0}}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = post(&c, "/v1/runtime/config/revert", &json!({"version": 99})).await;
    assert_eq!(status, 404);
    let (_, history) = c.get("/v1/runtime/config/history").await;
    assert_eq!(history["changes"].as_array().unwrap().len(), 1, "{history}");

    // A revert to version 1 (the files alone) is a new version, on every node.
    let (status, body) = post(
        &c,
        "/v1/runtime/config/revert",
        &json!({"version": 1, "reason": "surge over"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 3);
    assert_eq!(body.pointer(THRESHOLD), Some(&json!(3)));
    eventually(
        Duration::from_secs(5),
        "node a applies the revert",
        || async {
            let c = config_of(&a).await;
            (c["config_version"] == 3 && c.pointer(THRESHOLD) == Some(&json!(3))).then_some(())
        },
    )
    .await;
    let (_, history) = a.get("/v1/runtime/config/history").await;
    assert_eq!(history["changes"][0]["kind"], "revert");
    assert_eq!(history["changes"][0]["patch"], json!({"revert_to": 1}));
    // Only an admin changes or reverts; a supervisor reads the history.
    let supervisor = principal_of(frontdoor::auth::Role::Supervisor);
    let (status, _) = a
        .get_as(Some(supervisor), "/v1/runtime/config/history", &[])
        .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_node_that_cannot_apply_a_stored_version_reports_not_ready_until_it_can() {
    let app = spawn_app(Backend::Sqlite).await;
    // A newer release stored a key this node does not know (a rolling upgrade).
    let stored = |version: u64, overlay: Value| ConfigChange {
        version,
        changed_at: chrono::Utc::now(),
        changed_by: "ops-newer-node".into(),
        kind: "change".into(),
        reason: None,
        patch: overlay.clone(),
        overlay,
    };
    assert_eq!(
        app.store
            .config_append(&stored(
                2,
                json!({"routing": {"a_knob_from_a_newer_release": 1}})
            ))
            .await
            .unwrap(),
        Appended::Stored(2)
    );
    let detail = eventually(Duration::from_secs(5), "not ready", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 503).then_some(body["detail"].as_str().unwrap_or("").to_string())
    })
    .await;
    assert!(
        detail.contains("configuration version 2 cannot be applied here"),
        "{detail}"
    );
    let (_, rt) = app.get("/v1/runtime").await;
    assert_eq!(rt["config_version"], 1, "the old values stay: {rt}");
    assert_eq!(rt["config_failure"]["version"], 2, "{rt}");
    // The same version number cannot be taken twice.
    assert_eq!(
        app.store
            .config_append(&stored(2, json!({})))
            .await
            .unwrap(),
        Appended::Conflict
    );
    // A version it can apply makes it ready again.
    app.store
        .config_append(&stored(3, json!({})))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "ready again", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 200 && body["config_version"] == 3).then_some(())
    })
    .await;
}

/// The operator's report: a threshold set to 2 through the API came back as 3 after
/// a SIGHUP sent to rotate principals. Now SIGHUP re-reads the files (a changed file
/// value applies) and then re-applies the stored change (2 stays 2).
#[actix_web::test]
async fn sighup_rereads_the_files_then_reapplies_the_stored_changes() {
    let dir = std::env::temp_dir().join(format!("fd-hup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = std::fs::read_to_string(repo.join("config/base.toml")).unwrap();
    std::fs::write(dir.join("base.toml"), &base).unwrap();
    std::fs::copy(repo.join("config/local.toml"), dir.join("local.toml")).unwrap();
    let port = crate::child::free_port();
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .args(["--config-dir", dir.to_str().unwrap(), "serve"])
            .current_dir(repo)
            .env("FRONTDOOR_ENVIRONMENT", "local")
            .env("FRONTDOOR__APPLICATION__PORT", port.to_string())
            .env(
                "FRONTDOOR__STORE__URL",
                format!("sqlite://{}", dir.join("hup.db").display()),
            )
            .env("FRONTDOOR__TELEMETRY__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start frontdoor"),
    );
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let get_config = || async {
        let res = client
            .get(url("/v1/runtime/config"))
            .bearer_auth("dev-admin-local-token")
            .send()
            .await
            .ok()?;
        res.json::<Value>().await.ok()
    };
    eventually(Duration::from_secs(60), "the runtime up", || get_config()).await;
    let res = client
        .put(url("/v1/runtime/config"))
        .bearer_auth("dev-admin-local-token")
        .json(&json!({"routing": {"frustration": {"repeat_contacts_threshold": 2}}, "reason": "surge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // The operator edits a file value, then sends SIGHUP.
    std::fs::write(
        dir.join("base.toml"),
        base.replace("offer_timeout_secs = 30", "offer_timeout_secs = 45"),
    )
    .unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGHUP);
    }
    let cfg = eventually(
        Duration::from_secs(10),
        "the file value applied",
        || async {
            let c = get_config().await?;
            (c["config"]["routing"]["offer_timeout_secs"] == 45).then_some(c)
        },
    )
    .await;
    assert_eq!(cfg.pointer(THRESHOLD), Some(&json!(2)), "{cfg}");
    assert_eq!(cfg["config_version"], 2, "{cfg}");
    // SAFETY: as above.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.0.wait();
    // And a restart keeps the stored change over the files.
    let again = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .args(["--config-dir", dir.to_str().unwrap()])
            .current_dir(repo)
            .env("FRONTDOOR_ENVIRONMENT", "local")
            .env("FRONTDOOR__APPLICATION__PORT", port.to_string())
            .env(
                "FRONTDOOR__STORE__URL",
                format!("sqlite://{}", dir.join("hup.db").display()),
            )
            .env("FRONTDOOR__TELEMETRY__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("restart frontdoor"),
    );
    let cfg = eventually(Duration::from_secs(60), "the runtime up again", || {
        get_config()
    })
    .await;
    assert_eq!(cfg.pointer(THRESHOLD), Some(&json!(2)), "{cfg}");
    assert_eq!(cfg["config"]["routing"]["offer_timeout_secs"], 45, "{cfg}");
    assert_eq!(cfg["config_version"], 2);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
