//! Builds the application from [`Settings`] and runs it until it stops.
//!
//! Three parts run side by side: the HTTP server, the broker consumer and the
//! outbox relay (the last two only with `[broker] enabled`). SIGINT/SIGTERM start
//! one drain for all of them: the server stops accepting and finishes its requests,
//! the consumer stops taking deliveries, finishes the batch in hand and acks what
//! was stored, the relay finishes its round. Whatever is still running when the
//! grace period ends is abandoned (unacked deliveries are redelivered, unconfirmed
//! commands stay in the outbox). If one part stops on its own, the others are
//! drained too, and the log says why each stopped.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use frontdoor_actors::patient::PatientDeps;
use frontdoor_actors::routing::router::{Routing, RoutingDeps};
use frontdoor_actors::routing::{Clock, SystemClock};
use frontdoor_actors::shard::PatientRegistry;

use crate::auth::{AssignmentCheck, Principals};
use crate::broker::shutdown::{self, ShutdownTrigger};
use crate::broker::{consumer, relay, BrokerHealth};
use crate::configuration::{Settings, TlsSettings};
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::metrics as m;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::supervisor::{store_probe, supervise, ActorStats, RestartBook, SharedPolicy};

/// A part of the application that runs until it stops, saying why.
type Part = Pin<Box<dyn Future<Output = (&'static str, String)>>>;

/// A built, listening application.
pub struct Application {
    /// The port the API listens on (useful when configured as 0).
    port: u16,
    /// The HTTP server.
    server: Server,
    /// The ingest service (tests reach the store through it).
    ingest: Ingest,
    /// The live runtime (reload, statistics).
    runtime: Arc<Runtime>,
    /// Starts the drain (signals, tests).
    shutdown: ShutdownTrigger,
    /// The broker consumer and relay, when the broker is enabled.
    broker: Vec<Part>,
    /// How long the drain may take.
    grace: Duration,
    /// The broker side's state.
    health: BrokerHealth,
}

impl Application {
    /// Connects the store, starts the actors, binds the API and (when enabled)
    /// starts the broker consumer and the outbox relay.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock routing timers run on (tests
    /// pass a manual clock and tick routing themselves).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        settings
            .routing
            .validate()
            .map_err(|e| anyhow::anyhow!("Invalid [routing] configuration: {e}"))?;
        settings
            .fhir
            .validate()
            .map_err(|e| anyhow::anyhow!("Invalid [fhir] configuration: {e}"))?;
        for (name, p) in [
            ("patient", &settings.supervision.patient),
            ("tasks", &settings.supervision.tasks),
        ] {
            p.validate()
                .map_err(|e| anyhow::anyhow!("Invalid [supervision.{name}] configuration: {e}"))?;
        }
        let handle = m::install();
        let principals =
            Principals::load(&settings.security).context("Failed to load the principals")?;
        principals.spawn_reloader(Duration::from_secs(
            settings.security.reload_interval_secs.max(1),
        ));
        let stats = Arc::new(ActorStats::default());
        let patient_policy: SharedPolicy =
            Arc::new(RwLock::new(settings.supervision.patient.clone()));
        let task_policy: SharedPolicy = Arc::new(RwLock::new(settings.supervision.tasks.clone()));
        let store = Store::connect(&settings.store)
            .await
            .context("Failed to connect to the store and run migrations")?
            .with_group_commit(settings.store.group_commit_max_batch);
        let routing = Routing::new(RoutingDeps {
            config: settings.routing.clone(),
            clock,
            commands: Arc::new(store.clone()),
            observer: Arc::new(m::MetricsObserver),
        });
        {
            let routing = routing.clone();
            supervise(
                "router_timers",
                task_policy.clone(),
                stats.clone(),
                move || {
                    let r = routing.clone();
                    async move {
                        r.run_timers().await;
                        Ok(())
                    }
                },
            );
        }
        {
            let store = store.clone();
            let every = Duration::from_millis(settings.supervision.store_probe_interval_ms.max(10));
            let probe_stats = stats.clone();
            supervise(
                "store_probe",
                task_policy.clone(),
                stats.clone(),
                move || store_probe(store.clone(), every, probe_stats.clone()),
            );
        }
        let deps = PatientDeps {
            store: Arc::new(store.clone()),
            limits: settings.patients.limits(),
            idle_timeout: Duration::from_secs(settings.patients.idle_timeout_secs.max(1)),
            notify: settings.notify.clone(),
            ehr: Arc::new(settings.fhir.ehr()),
            routing: Some(routing.clone()),
            supervision: patient_policy.clone(),
            observer: stats.clone(),
            fault_injection: settings.supervision.fault_injection,
        };
        let patients =
            PatientRegistry::start(deps, settings.patients.shards, settings.patients.bounds());
        // Agents read patient data only while routing says they hold a contact.
        let assignments: Arc<dyn AssignmentCheck> = Arc::new(routing.clone());
        let ingest = Ingest::new(store.clone(), patients.clone(), routing.clone());
        let started = std::time::Instant::now();
        let recovered = ingest
            .recover_routing()
            .await
            .context("Failed to recover routing of open contacts")?;
        tracing::info!(
            contacts = recovered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "routing recovered for open contacts"
        );
        spawn_resident_gauge(patients.clone());
        spawn_audit_purge(
            store.clone(),
            settings.security.audit_retention_days,
            settings.security.audit_purge_interval_secs,
        );
        let config_dir = Path::new("config");
        let runtime = Arc::new(Runtime::new(
            routing,
            patients,
            patient_policy,
            task_policy.clone(),
            stats.clone(),
            config_dir
                .join("base.toml")
                .exists()
                .then(|| config_dir.to_path_buf()),
        ));
        spawn_reload_on_sighup(runtime.clone());

        let (shutdown, _) = shutdown::channel();
        let health = BrokerHealth::new(settings.broker.enabled);
        let mut broker: Vec<Part> = Vec::new();
        if settings.broker.enabled {
            let ctx = consumer::ConsumerContext {
                settings: settings.broker.clone(),
                ingest: ingest.clone(),
                health: health.clone(),
                max_event_bytes: settings.application.max_event_bytes,
                restarts: RestartBook::new("broker_consumer", stats.clone(), task_policy.clone()),
            };
            let c = actix_rt::spawn(consumer::run(ctx, shutdown.subscribe()));
            broker.push(Box::pin(async move {
                (
                    "broker consumer",
                    c.await.unwrap_or_else(|e| format!("failed: {e}")),
                )
            }));
            let r = actix_rt::spawn(relay::run(
                settings.broker.clone(),
                store,
                health.clone(),
                RestartBook::new("outbox_relay", stats.clone(), task_policy.clone()),
                shutdown.subscribe(),
            ));
            broker.push(Box::pin(async move {
                (
                    "outbox relay",
                    r.await.unwrap_or_else(|e| format!("failed: {e}")),
                )
            }));
        }

        let listener = TcpListener::bind((
            settings.application.host.as_str(),
            settings.application.port,
        ))
        .with_context(|| {
            format!(
                "Failed to bind {}:{}",
                settings.application.host, settings.application.port
            )
        })?;
        let port = listener
            .local_addr()
            .context("Failed to read the bound address")?
            .port();
        let state = web::Data::new(AppState {
            ingest: ingest.clone(),
            runtime: runtime.clone(),
            metrics: handle,
            max_event_bytes: settings.application.max_event_bytes,
            principals,
            assignments,
            security: settings.security.clone(),
            rate_limiter: http::guard::RateLimiter::default(),
            broker: health.clone(),
            fhir: settings.fhir.clone(),
        });
        let max_json = settings.application.max_json_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(http::count_requests))
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(http::query_error))
                .app_data(web::PathConfig::default().error_handler(http::path_error))
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_json)
                        .error_handler(http::json_error),
                )
                .app_data(web::PayloadConfig::default().limit(max_json))
                .configure(http::routes)
                .default_service(web::to(http::not_found))
        })
        // One drain for everything: our signal listener stops the server.
        .disable_signals()
        .shutdown_timeout(settings.application.shutdown_grace_secs);
        let server = if settings.tls.enabled {
            server
                .listen_rustls_0_23(listener, tls_config(&settings.tls)?)
                .context("Failed to listen with TLS")?
        } else {
            tracing::warn!("the API serves plain HTTP: for local use only (tls.enabled = false)");
            server.listen(listener).context("Failed to listen")?
        }
        .run();
        tracing::info!(
            port,
            tls = settings.tls.enabled,
            broker = settings.broker.enabled,
            "Front Door API listening"
        );
        Ok(Application {
            port,
            server,
            ingest,
            runtime,
            shutdown,
            broker,
            grace: Duration::from_secs(settings.application.shutdown_grace_secs),
            health,
        })
    }

    /// The API's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Routing (tests tick its timers).
    pub fn routing(&self) -> &Routing {
        self.ingest.routing()
    }

    /// The live runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The ingest service.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The broker side's state (readiness, deliveries in flight).
    pub fn broker_health(&self) -> BrokerHealth {
        self.health.clone()
    }

    /// Starts the drain when triggered (what SIGINT/SIGTERM do).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.shutdown.clone()
    }

    /// Runs until the drain (a signal, a trigger, or one part stopping), then gives
    /// the rest the grace period and reports why each part stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            ingest,
            shutdown,
            broker,
            grace,
            ..
        } = self;
        spawn_signal_listener(shutdown.clone());
        let server_handle = server.handle();
        let mut drain = shutdown.subscribe();
        actix_rt::spawn(async move {
            drain.wait().await;
            server_handle.stop(true).await;
        });
        let mut parts: Vec<Part> = broker;
        parts.push(Box::pin(async move {
            match server.await {
                Ok(()) => ("http server", "stopped".to_string()),
                Err(e) => ("http server", format!("failed: {e}")),
            }
        }));
        let ((first, why), _, rest) = futures_util::future::select_all(parts).await;
        tracing::info!(part = first, reason = %why, "stopped; draining the rest");
        shutdown.trigger();
        let deadline = tokio::time::Instant::now() + grace;
        for part in rest {
            match tokio::time::timeout_at(deadline, part).await {
                Ok((name, why)) => tracing::info!(part = name, reason = %why, "stopped"),
                Err(_) => tracing::warn!(
                    "grace period over: abandoning the rest (unacked work is redelivered)"
                ),
            }
        }
        ingest.store().close().await;
        Ok(())
    }
}

/// SIGINT and SIGTERM start the drain.
fn spawn_signal_listener(shutdown: ShutdownTrigger) {
    actix_rt::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error.message = %e, "cannot listen for SIGTERM");
                        let _ = tokio::signal::ctrl_c().await;
                        shutdown.trigger();
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.trigger();
    });
}

/// The rustls server configuration (ring provider) from PEM files.
fn tls_config(tls: &TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = std::fs::read(&tls.cert_path).with_context(|| {
        format!(
            "Failed to read the TLS certificate {}",
            tls.cert_path.display()
        )
    })?;
    let key_pem = std::fs::read(&tls.key_path)
        .with_context(|| format!("Failed to read the TLS key {}", tls.key_path.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("Failed to parse the TLS certificate chain")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file holds no certificate"
    );
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("Failed to parse the TLS key")?
        .context("the TLS key file holds no private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("Failed to choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("The TLS certificate and key do not match")
}

/// Purges audit records past retention, periodically (0: never; see docs/security.md).
fn spawn_audit_purge(store: Store, retention_days: u32, interval_secs: u64) {
    if interval_secs == 0 {
        return;
    }
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(interval_secs));
        loop {
            tick.tick().await;
            let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days));
            match store.audit_purge(cutoff).await {
                Ok(n) => tracing::info!(purged = n, retention_days, "audit retention purge ran"),
                Err(e) => tracing::warn!(error.message = %e, "audit retention purge failed"),
            }
        }
    });
}

fn spawn_resident_gauge(patients: PatientRegistry) {
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let n = patients.resident().await;
            metrics::gauge!(m::RESIDENT_PATIENTS).set(n as f64);
            if let Some(bytes) = m::process_resident_bytes() {
                metrics::gauge!(m::PROCESS_RESIDENT_MEMORY_BYTES).set(bytes);
            }
            metrics::gauge!(m::MAILBOX_DEPTH, "kind" => "patient").set(patients.in_flight() as f64);
        }
    });
}

fn spawn_reload_on_sighup(runtime: Arc<Runtime>) {
    // Registered before build returns, so a SIGHUP from then on reloads (never kills).
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin API only");
        return;
    };
    actix_rt::spawn(async move {
        while hup.recv().await.is_some() {
            match runtime.reload_from_files() {
                Ok(v) => tracing::info!(config.version = v, "SIGHUP: configuration reloaded"),
                Err(reason) => tracing::error!(
                    reason,
                    "SIGHUP: configuration rejected; the old values stay"
                ),
            }
        }
    });
}
