//! Builds the application from [`Settings`] and runs it until it stops.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use frontdoor_actors::patient::PatientDeps;
use frontdoor_actors::routing::router::{Routing, RoutingDeps};
use frontdoor_actors::routing::{Clock, SystemClock};
use frontdoor_actors::shard::PatientRegistry;

use crate::auth::{AssignmentCheck, Principals};
use crate::configuration::{Settings, TlsSettings};
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::metrics as m;
use crate::store::Store;

/// A built, listening application.
pub struct Application {
    /// The port the API listens on (useful when configured as 0).
    port: u16,
    /// The HTTP server.
    server: Server,
    /// The ingest service (tests reach the store through it).
    ingest: Ingest,
}

impl Application {
    /// Connects the store, starts the actors and binds the API.
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
        let principals =
            Principals::load(&settings.security).context("Failed to load the principals")?;
        principals.spawn_reloader(Duration::from_secs(
            settings.security.reload_interval_secs.max(1),
        ));
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
        // Agents read patient data only while routing says they hold a contact.
        let assignments: Arc<dyn AssignmentCheck> = Arc::new(routing.clone());
        let ingest = Ingest::new(store.clone(), patients.clone(), routing);
        spawn_resident_gauge(patients);
        spawn_audit_purge(
            store.clone(),
            settings.security.audit_retention_days,
            settings.security.audit_purge_interval_secs,
        );

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
            principals,
            assignments,
            security: settings.security.clone(),
            rate_limiter: http::guard::RateLimiter::default(),
        });
        let max_json = settings.application.max_json_bytes;
        let server = HttpServer::new(move || {
            App::new()
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
        tracing::info!(port, tls = settings.tls.enabled, "Front Door API listening");
        Ok(Application {
            port,
            server,
            ingest,
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

    /// Serves until the server stops (SIGINT/SIGTERM drain in-flight requests).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let store = self.ingest.store().clone();
        let res = self.server.await.context("HTTP server failed");
        store.close().await;
        res
    }
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
        }
    });
}
