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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use frontdoor_actors::patient::PatientDeps;
use frontdoor_actors::routing::router::{Routing, RoutingDeps};
use frontdoor_actors::routing::{Clock, SystemClock};
use frontdoor_actors::shard::PatientRegistry;

use crate::broker::shutdown::{self, ShutdownTrigger};
use crate::broker::{consumer, relay, BrokerHealth};
use crate::configuration::Settings;
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::metrics as m;
use crate::store::Store;

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
        let handle = m::install();
        let store = Store::connect(&settings.store)
            .await
            .context("Failed to connect to the store and run migrations")?;
        let routing = Routing::new(RoutingDeps {
            config: settings.routing.clone(),
            clock,
            commands: Arc::new(store.clone()),
            observer: Arc::new(m::MetricsObserver),
        });
        routing.spawn_timers();
        let deps = PatientDeps {
            store: Arc::new(store.clone()),
            limits: settings.patients.limits(),
            idle_timeout: Duration::from_secs(settings.patients.idle_timeout_secs.max(1)),
            notify: settings.notify.clone(),
            routing: Some(routing.clone()),
        };
        let patients = PatientRegistry::start(deps, settings.patients.shards);
        let ingest = Ingest::new(store.clone(), patients.clone(), routing);
        spawn_resident_gauge(patients);
        let (shutdown, _) = shutdown::channel();
        let health = BrokerHealth::new(settings.broker.enabled);
        let mut broker: Vec<Part> = Vec::new();
        if settings.broker.enabled {
            let ctx = consumer::ConsumerContext {
                settings: settings.broker.clone(),
                ingest: ingest.clone(),
                health: health.clone(),
                max_event_bytes: settings.application.max_event_bytes,
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
            metrics: handle,
            max_event_bytes: settings.application.max_event_bytes,
            broker: health.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(http::query_error))
                .app_data(
                    web::JsonConfig::default()
                        .limit(64 * 1024)
                        .error_handler(http::json_error),
                )
                .configure(http::routes)
                .default_service(web::to(http::not_found))
        })
        // One drain for everything: our signal listener stops the server.
        .disable_signals()
        .shutdown_timeout(settings.application.shutdown_grace_secs)
        .listen(listener)
        .context("Failed to listen")?
        .run();
        tracing::info!(
            port,
            broker = settings.broker.enabled,
            "Front Door API listening"
        );
        Ok(Application {
            port,
            server,
            ingest,
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

fn spawn_resident_gauge(patients: PatientRegistry) {
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let n = patients.resident().await;
            metrics::gauge!(m::RESIDENT_PATIENTS).set(n as f64);
        }
    });
}
