//! The runtime as a process of its own (the `frontdoor` binary), for checks about
//! the runtime's own resources: its resident memory is not mixed with the test
//! harness, the broker client playing the adapters, or other tests' apps.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use frontdoor::configuration::Settings;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::amqp::eventually;

/// The admin token of `config/principals.local.toml` (published development tokens).
const ADMIN_TOKEN: &str = "dev-admin-local-token";

/// A `frontdoor` process started with the store and broker of `settings`; killed
/// when dropped.
pub struct RuntimeProcess {
    /// The process.
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// HTTP client.
    client: reqwest::Client,
}

/// The `frontdoor` binary run from the workspace root (it reads `config/`,
/// environment `local`: the published development tokens) on `port`, with the store
/// and every broker name and timing of `settings`.
pub fn command(settings: &Settings, port: u16) -> Command {
    let b = &settings.broker;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdoor"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FRONTDOOR_ENVIRONMENT", "local")
        .env("FRONTDOOR__APPLICATION__PORT", port.to_string())
        .env("FRONTDOOR__STORE__URL", settings.store.url.expose_secret())
        .env("FRONTDOOR__BROKER__ENABLED", b.enabled.to_string())
        .env("FRONTDOOR__BROKER__URL", b.url.expose_secret());
    for (key, value) in [
        ("CONNECTION_NAME", b.connection_name.clone()),
        ("EVENTS_EXCHANGE", b.events_exchange.clone()),
        ("PARTITION_EXCHANGE", b.partition_exchange.clone()),
        ("QUEUE_PREFIX", b.queue_prefix.clone()),
        ("COMMANDS_EXCHANGE", b.commands_exchange.clone()),
        ("DEAD_LETTER_EXCHANGE", b.dead_letter_exchange.clone()),
        ("DEAD_LETTER_QUEUE", b.dead_letter_queue.clone()),
        ("ROUTING_QUEUE", b.routing_queue.clone()),
        ("CLUSTER_EXCHANGE", b.cluster_exchange.clone()),
        ("PARTITIONS", b.partitions.to_string()),
        ("PREFETCH", b.prefetch.to_string()),
        ("DELIVERY_LIMIT", b.delivery_limit.to_string()),
        ("RECONNECT_MIN_MS", b.reconnect_min_ms.to_string()),
        ("RECONNECT_MAX_MS", b.reconnect_max_ms.to_string()),
        ("RELAY_INTERVAL_MS", b.relay_interval_ms.to_string()),
    ] {
        cmd.env(format!("FRONTDOOR__BROKER__{key}"), value);
    }
    cmd
}

/// A free local port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

impl RuntimeProcess {
    /// Starts the binary from the workspace root (it reads `config/`, environment
    /// `local`) with `settings`' store and broker, and waits until `/readyz` says ready.
    pub async fn start(settings: &Settings) -> RuntimeProcess {
        let port = free_port();
        let mut cmd = command(settings, port);
        cmd.env_remove("RUST_LOG")
            .env("FRONTDOOR__TELEMETRY__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start the frontdoor binary");
        let p = RuntimeProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        eventually(
            Duration::from_secs(60),
            "the runtime process ready",
            || async {
                let (status, body) = p.get("/readyz").await?;
                (status == 200 && body["broker"] == "up").then_some(())
            },
        )
        .await;
        p
    }

    /// GET as the admin: status and JSON body (None when the request failed).
    pub async fn get(&self, path: &str) -> Option<(u16, Value)> {
        let res = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.unwrap_or(Value::Null)))
    }

    /// Messages queued or in progress for patient actors (`/v1/runtime`).
    pub async fn patient_mailbox_depth(&self) -> u64 {
        let (status, body) = self.get("/v1/runtime").await.expect("GET /v1/runtime");
        assert_eq!(status, 200, "{body}");
        body["mailbox_depth"]["patient"]
            .as_u64()
            .expect("mailbox_depth.patient")
    }

    /// A field of `/proc/<pid>/status` in bytes (`VmRSS`: resident now; `VmHWM`:
    /// the most ever resident).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the runtime process is running (Linux /proc)");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        kib * 1024
    }

    /// Stops the process as SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..600 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
