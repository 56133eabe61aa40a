//! Builds the application from [`Settings`] and runs it until it stops.
//!
//! [`Application::build`] runs named steps, each a function below: validate the
//! settings, connect the store, start routing, start the patient shards, the
//! ingest path, the background loops (every one under [`supervise`]), the broker
//! parts (consumer, relay, and in a cluster the node link and the coordinator),
//! and the HTTP server.
//!
//! The parts run side by side. SIGINT/SIGTERM start one drain for all of them:
//! the server stops accepting and finishes its requests, the consumer stops taking
//! deliveries, finishes the batch in hand and acks what was stored, the relay
//! finishes its round, a cluster member gives its partitions and the router back.
//! Whatever is still running when the grace period ends is abandoned (unacked
//! deliveries are redelivered, unconfirmed commands stay in the outbox). If one
//! part stops on its own, the others are drained too, and the log says why each
//! stopped. SIGHUP re-reads the principals and the reloadable settings (one
//! listener for both).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use frontdoor_actors::outreach::Outreach;
use frontdoor_actors::patient::PatientDeps;
use frontdoor_actors::ports::BoxFuture;
use frontdoor_actors::routing::router::{Routing, RoutingDeps};
use frontdoor_actors::routing::{Clock, SystemClock};
use frontdoor_actors::shard::PatientRegistry;

use crate::auth::{AssignmentCheck, Principals};
use crate::broker::cluster::{LinkContext, NodeLink};
use crate::broker::shutdown::{self, ShutdownTrigger};
use crate::broker::{cluster as link, consumer, relay, BrokerHealth};
use crate::cluster::coordinator::{Coordinator, Hooks, SharedSettings};
use crate::cluster::{default_node_id, Cluster, Ownership};
use crate::configuration::{Settings, TlsSettings};
use crate::http::{self, AppState};
use crate::ingest::{ClusterPaths, Ingest};
use crate::metrics as m;
use crate::runtime::Runtime;
use crate::store::routing::RoutingTables;
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
    /// The broker and cluster parts, when the broker is enabled.
    parts: Vec<Part>,
    /// How long the drain may take.
    grace: Duration,
    /// The broker side's state.
    health: BrokerHealth,
}

/// Restart policies and what supervision has seen.
#[derive(Clone)]
struct Supervision {
    /// Restarts, escalations, poison and shed messages by kind.
    stats: Arc<ActorStats>,
    /// Patient actors' policy (reloadable).
    patient: SharedPolicy,
    /// Long-running components' policy (reloadable).
    tasks: SharedPolicy,
}

impl Application {
    /// Connects the store, starts the actors, binds the API and (when enabled)
    /// starts the broker parts.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock routing timers run on (tests
    /// pass a manual clock and tick routing themselves).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        validate(&settings)?;
        let outreach = Arc::new(settings.outreach().map_err(anyhow::Error::msg)?);
        let metrics = m::install();
        m::zero_routing_series(&settings.routing);
        let principals = Principals::load(&settings.security, settings.application.environment)
            .context("Failed to load the principals")?;
        let sup = Supervision {
            stats: Arc::new(ActorStats::default()),
            patient: Arc::new(RwLock::new(settings.supervision.patient.clone())),
            tasks: Arc::new(RwLock::new(settings.supervision.tasks.clone())),
        };
        let clustered = settings.cluster.enabled;
        let node_id = match settings.cluster.node_id.as_str() {
            "" => default_node_id(settings.application.port),
            id => id.to_string(),
        };
        let partitions = u32::from(settings.broker.partitions.max(1));
        let (cluster, publisher) = if clustered {
            let (c, tx) = Cluster::new(Ownership::joining(&node_id, partitions));
            (c, Some(tx))
        } else {
            (Cluster::standalone(&node_id, partitions), None)
        };
        let store = connect_store(&settings, &cluster).await?;
        let routing = start_routing(&settings, clock.clone(), &store, &cluster);
        let patients = start_patients(
            &settings,
            &store,
            &routing,
            &sup,
            clustered,
            (&outreach, &clock),
        );
        let link = clustered.then(|| NodeLink::new(settings.broker.clone(), node_id.clone()));
        let ingest = Ingest::new(
            store.clone(),
            patients.clone(),
            routing.clone(),
            ClusterPaths {
                cluster: cluster.clone(),
                link: link.clone(),
                handover_wait: Duration::from_millis(settings.cluster.handover_wait_ms),
                rpc_timeout: Duration::from_millis(settings.cluster.rpc_timeout_ms.max(1)),
            },
            settings.patients.limits(),
            settings.application.max_event_bytes,
        )
        .with_outreach(outreach.clone());
        if !clustered {
            lead_alone(&ingest).await?;
        }
        let runtime = Arc::new(Runtime::new(
            &settings,
            store.clone(),
            routing.clone(),
            patients.clone(),
            sup.patient.clone(),
            sup.tasks.clone(),
            sup.stats.clone(),
            cluster.clone(),
            settings.config_dir.clone().or_else(|| {
                Path::new("config")
                    .join("base.toml")
                    .exists()
                    .then(|| Path::new("config").to_path_buf())
            }),
        ));
        // The stored live changes, before the API listens (a version this node
        // cannot apply leaves it not ready; the poll below retries).
        if let Err(e) = runtime.sync().await {
            tracing::warn!(error.message = %e, "stored configuration not read at start; the poll retries");
        }
        spawn_background(&settings, &sup, &ingest, &principals, &runtime, clustered);
        spawn_reminders(&sup, &ingest, &outreach, &cluster, &clock);

        let (shutdown, _) = shutdown::channel();
        let health = match clustered {
            true => BrokerHealth::new(settings.broker.enabled).clustered(),
            false => BrokerHealth::new(settings.broker.enabled),
        };
        let parts = match (settings.broker.enabled, link, publisher) {
            (false, _, _) => Vec::new(),
            (true, None, _) | (true, _, None) => broker_parts(
                &settings,
                &ingest,
                &health,
                &sup,
                &cluster,
                consumer::Assignment::of(0..settings.broker.partitions.max(1)),
                &shutdown,
            ),
            (true, Some(link), Some(publisher)) => {
                let assignment = consumer::Assignment::of([]);
                let mut parts = broker_parts(
                    &settings,
                    &ingest,
                    &health,
                    &sup,
                    &cluster,
                    assignment.clone(),
                    &shutdown,
                );
                parts.extend(cluster_parts(
                    &settings,
                    &ingest,
                    &health,
                    &sup,
                    link,
                    publisher,
                    assignment,
                    node_id.clone(),
                    &shutdown,
                ));
                parts
            }
        };

        let assignments: Arc<dyn AssignmentCheck> = Arc::new(store.clone());
        let state = web::Data::new(AppState {
            ingest: ingest.clone(),
            runtime: runtime.clone(),
            metrics,
            max_event_bytes: settings.application.max_event_bytes,
            principals,
            assignments,
            security: settings.security.clone(),
            rate_limiter: http::guard::RateLimiter::default(),
            broker: health.clone(),
            fhir: settings.fhir.clone(),
            // validate() refused a bad directory before anything started.
            sites: Arc::new(settings.site_directory().unwrap_or_default()),
        });
        let (server, port) = http_server(&settings, state)?;
        tracing::info!(
            port,
            node_id = %node_id,
            cluster = clustered,
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
            parts,
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
            parts,
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
        let mut parts: Vec<Part> = parts;
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
        ingest.routing().deactivate().await;
        ingest.store().close().await;
        Ok(())
    }
}

/// Refuses settings that cannot work, naming the key.
pub fn validate(settings: &Settings) -> anyhow::Result<()> {
    settings.check_transport().map_err(anyhow::Error::msg)?;
    settings
        .routing
        .validate()
        .map_err(|e| anyhow::anyhow!("Invalid [routing] configuration: {e}"))?;
    for (name, p) in [
        ("patient", &settings.supervision.patient),
        ("tasks", &settings.supervision.tasks),
    ] {
        p.validate()
            .map_err(|e| anyhow::anyhow!("Invalid [supervision.{name}] configuration: {e}"))?;
    }
    settings
        .fhir
        .validate()
        .map_err(|e| anyhow::anyhow!("Invalid [fhir] configuration: {e}"))?;
    settings
        .cluster
        .validate()
        .map_err(|e| anyhow::anyhow!("Invalid [cluster] configuration: {e}"))?;
    let outreach = settings.outreach().map_err(anyhow::Error::msg)?;
    for site in settings.sites_missing_from_directory(&outreach.sites) {
        tracing::warn!(site = %site, "site missing from [sites]: its patients read times in UTC");
    }
    if settings.cluster.enabled && !(settings.store.is_postgres() && settings.broker.enabled) {
        anyhow::bail!(
            "Invalid [cluster] configuration: cluster.enabled needs a PostgreSQL store (store.url) and the broker (broker.enabled)"
        );
    }
    Ok(())
}

/// Connects the store and runs migrations; in a cluster, journey writes are fenced
/// by the partition leases this node holds.
async fn connect_store(settings: &Settings, cluster: &Cluster) -> anyhow::Result<Store> {
    let mut store = Store::connect(&settings.store)
        .await
        .context("Failed to connect to the store and run migrations")?
        .with_partitions(u32::from(settings.broker.partitions.max(1)));
    if settings.cluster.enabled {
        let cluster = cluster.clone();
        store = store.with_fences(Arc::new(move |p| cluster.now().partition_fence(p)));
    }
    Ok(store.with_group_commit(settings.store.group_commit_max_batch))
}

/// Starts the router (inactive until it leads); in a cluster its writes are fenced
/// by the router's lease.
fn start_routing(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    store: &Store,
    cluster: &Cluster,
) -> Routing {
    let tables = if settings.cluster.enabled {
        let cluster = cluster.clone();
        RoutingTables::fenced(store.clone(), move || cluster.now().router_fence())
    } else {
        RoutingTables::unfenced(store.clone())
    };
    Routing::new(RoutingDeps {
        config: settings.routing.clone(),
        clock,
        store: Arc::new(tables),
        observer: Arc::new(m::MetricsObserver),
        // validate() refused a bad directory before anything started.
        sites: Arc::new(settings.site_directory().unwrap_or_default()),
    })
}

/// Starts the patient shards.
fn start_patients(
    settings: &Settings,
    store: &Store,
    routing: &Routing,
    sup: &Supervision,
    clustered: bool,
    (outreach, clock): (&Arc<Outreach>, &Arc<dyn Clock>),
) -> PatientRegistry {
    let deps = PatientDeps {
        store: Arc::new(store.clone()),
        limits: settings.patients.limits(),
        idle_timeout: Duration::from_secs(settings.patients.idle_timeout_secs.max(1)),
        outreach: outreach.clone(),
        clock: clock.clone(),
        ehr: Arc::new(settings.fhir.ehr()),
        routing: Some(routing.clone()),
        supervision: sup.patient.clone(),
        observer: sup.stats.clone(),
        fault_injection: settings.supervision.fault_injection,
        route_through_outbox: clustered,
    };
    PatientRegistry::start(deps, settings.patients.shards, settings.patients.bounds())
}

/// A single node leads routing itself: rebuild it from the store now (before the
/// API listens), then reconcile the open contacts routing never heard of.
async fn lead_alone(ingest: &Ingest) -> anyhow::Result<()> {
    // A cluster of one: it owns every partition and leads routing.
    metrics::gauge!(m::CLUSTER_NODES).set(1.0);
    metrics::gauge!(m::CLUSTER_PARTITIONS_OWNED).set(f64::from(ingest.store().partitions()));
    metrics::gauge!(m::ROUTER_LEADER).set(1.0);
    let started = std::time::Instant::now();
    let restored = ingest
        .routing()
        .activate()
        .await
        .map_err(|e| anyhow::anyhow!("Failed to rebuild routing from the store: {e}"))?;
    let reconciled = ingest
        .recover_routing()
        .await
        .context("Failed to recover routing of open contacts")?;
    metrics::histogram!(m::CLUSTER_TAKEOVER_SECONDS, "lease" => "router")
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        contacts = restored,
        reconciled,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "routing rebuilt from the store"
    );
    Ok(())
}

/// The reminder tick, under [`supervise`]: due reminders and held messages of the
/// partitions this node holds go out through the outbox.
fn spawn_reminders(
    sup: &Supervision,
    ingest: &Ingest,
    outreach: &Arc<Outreach>,
    cluster: &Cluster,
    clock: &Arc<dyn Clock>,
) {
    let (store, outreach, cluster, clock) = (
        ingest.store().clone(),
        outreach.clone(),
        cluster.clone(),
        clock.clone(),
    );
    supervise(
        "reminders",
        sup.tasks.clone(),
        sup.stats.clone(),
        move || {
            Box::pin(crate::outreach::reminder_loop(
                store.clone(),
                outreach.clone(),
                cluster.clone(),
                clock.clone(),
            )) as BoxLocal
        },
    );
}

/// Every background loop, each under [`supervise`] (restart, backoff, escalation).
fn spawn_background(
    settings: &Settings,
    sup: &Supervision,
    ingest: &Ingest,
    principals: &Principals,
    runtime: &Arc<Runtime>,
    clustered: bool,
) {
    let loop_of = |kind: &'static str, task: Box<dyn Fn() -> BoxLocal>| {
        supervise(kind, sup.tasks.clone(), sup.stats.clone(), task);
    };
    let routing = ingest.routing().clone();
    loop_of(
        "router_timers",
        Box::new(move || {
            let r = routing.clone();
            Box::pin(async move {
                r.run_timers().await;
                Ok(())
            })
        }),
    );
    let store = ingest.store().clone();
    let every = Duration::from_millis(settings.supervision.store_probe_interval_ms.max(10));
    let stats = sup.stats.clone();
    loop_of(
        "store_probe",
        Box::new(move || Box::pin(store_probe(store.clone(), every, stats.clone()))),
    );
    if !clustered {
        // A single node's router goes inactive if a write fails: rebuild it when
        // the store is back (a cluster's coordinator does this for the leader).
        let ingest = ingest.clone();
        loop_of(
            "router_keeper",
            Box::new(move || Box::pin(keep_routing(ingest.clone()))),
        );
    }
    let patients = ingest.patients().clone();
    loop_of(
        "resident_gauge",
        Box::new(move || Box::pin(resident_gauge(patients.clone()))),
    );
    let store = ingest.store().clone();
    let (days, every) = (
        settings.security.audit_retention_days,
        settings.security.audit_purge_interval_secs,
    );
    if every > 0 {
        loop_of(
            "audit_purge",
            Box::new(move || Box::pin(audit_purge(store.clone(), days, every))),
        );
    }
    let ingest2 = ingest.clone();
    loop_of(
        "routing_purge",
        Box::new(move || Box::pin(routing_purge(ingest2.clone()))),
    );
    let rt = runtime.clone();
    loop_of(
        "config_sync",
        Box::new(move || Box::pin(config_sync(rt.clone()))),
    );
    let p = principals.clone();
    let interval = Duration::from_secs(settings.security.reload_interval_secs.max(1));
    loop_of(
        "principals_watch",
        Box::new(move || Box::pin(p.clone().watch_file(interval))),
    );
    // Registered before build returns, so a SIGHUP from then on reloads (never kills).
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            let hup = Arc::new(tokio::sync::Mutex::new(hup));
            let (p, rt) = (principals.clone(), runtime.clone());
            loop_of(
                "sighup",
                Box::new(move || Box::pin(reload_on_sighup(hup.clone(), p.clone(), rt.clone()))),
            );
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "cannot listen for SIGHUP; reload through the admin API only")
        }
    }
}

/// A supervised loop's future.
type BoxLocal = Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// The consumer and the relay.
fn broker_parts(
    settings: &Settings,
    ingest: &Ingest,
    health: &BrokerHealth,
    sup: &Supervision,
    cluster: &Cluster,
    assignment: consumer::Assignment,
    shutdown: &ShutdownTrigger,
) -> Vec<Part> {
    let ctx = consumer::ConsumerContext {
        settings: settings.broker.clone(),
        ingest: ingest.clone(),
        health: health.clone(),
        max_event_bytes: settings.application.max_event_bytes,
        restarts: RestartBook::new("broker_consumer", sup.stats.clone(), sup.tasks.clone()),
        assignment,
    };
    let c = actix_rt::spawn(consumer::run(ctx, shutdown.subscribe()));
    let r = actix_rt::spawn(relay::run(
        settings.broker.clone(),
        ingest.store().clone(),
        health.clone(),
        RestartBook::new("outbox_relay", sup.stats.clone(), sup.tasks.clone()),
        cluster.clone(),
        shutdown.subscribe(),
    ));
    vec![part("broker consumer", c), part("outbox relay", r)]
}

/// A spawned part that answers why it stopped.
fn part(name: &'static str, task: tokio::task::JoinHandle<String>) -> Part {
    Box::pin(async move { (name, task.await.unwrap_or_else(|e| format!("failed: {e}"))) })
}

/// A cluster member's link to the other nodes and its coordinator.
#[allow(clippy::too_many_arguments)] // the wiring of one step: each is used once
fn cluster_parts(
    settings: &Settings,
    ingest: &Ingest,
    health: &BrokerHealth,
    sup: &Supervision,
    link: NodeLink,
    publisher: tokio::sync::watch::Sender<Arc<Ownership>>,
    assignment: consumer::Assignment,
    node_id: String,
    shutdown: &ShutdownTrigger,
) -> Vec<Part> {
    let ctx = LinkContext {
        link: link.clone(),
        health: health.clone(),
        handler: Arc::new(ingest.clone()),
        routing: ingest.routing().clone(),
        store: ingest.store().clone(),
        restarts: RestartBook::new("cluster_link", sup.stats.clone(), sup.tasks.clone()),
    };
    let l = actix_rt::spawn(link::run(ctx, shutdown.subscribe()));
    let b = &settings.broker;
    let shared = SharedSettings::new(&[
        ("protocol", "1".to_string()),
        ("partitions", b.partitions.to_string()),
        ("events_exchange", b.events_exchange.clone()),
        ("partition_exchange", b.partition_exchange.clone()),
        ("queue_prefix", b.queue_prefix.clone()),
        ("routing_queue", b.routing_queue.clone()),
        ("cluster_exchange", b.cluster_exchange.clone()),
        ("commands_exchange", b.commands_exchange.clone()),
    ]);
    let hooks = Arc::new(RuntimeHooks {
        ingest: ingest.clone(),
        link,
        health: health.clone(),
        assignment,
        wait: Duration::from_millis(settings.cluster.renew_interval_ms.max(500) * 2),
    });
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "port": settings.application.port,
    });
    let coordinator = Coordinator::new(
        ingest.store().clone(),
        settings.cluster.clone(),
        node_id,
        u32::from(b.partitions.max(1)),
        shared,
        info,
        publisher,
        hooks,
    );
    let c = actix_rt::spawn(coordinator.run(shutdown.subscribe()));
    vec![part("cluster link", l), part("cluster coordinator", c)]
}

/// What the coordinator asks of this node.
struct RuntimeHooks {
    /// Patients, routing, the store.
    ingest: Ingest,
    /// The link (routing queue consumption while leading).
    link: NodeLink,
    /// Broker readiness.
    health: BrokerHealth,
    /// Which partition queues the consumer takes.
    assignment: consumer::Assignment,
    /// How long a change may take before the coordinator moves on.
    wait: Duration,
}

impl Hooks for RuntimeHooks {
    fn eligible(&self) -> bool {
        self.health.state() == "up"
    }

    fn apply(&self, own: Arc<Ownership>, changed: Vec<u32>) -> BoxFuture<'static, ()> {
        let assignment = self.assignment.clone();
        let patients = self.ingest.patients().clone();
        let wait = self.wait;
        Box::pin(async move {
            let wanted: BTreeSet<u16> = own
                .mine
                .keys()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect();
            assignment.assign(wanted, wait).await;
            let dropped = patients.drop_partitions(&changed, own.partitions).await;
            if dropped > 0 {
                tracing::info!(
                    patients = dropped,
                    "resident patients of moved partitions dropped"
                );
            }
        })
    }

    fn lead(&self, own: Arc<Ownership>) -> BoxFuture<'static, ()> {
        let ingest = self.ingest.clone();
        let link = self.link.clone();
        let wait = self.wait;
        Box::pin(async move {
            let routing = ingest.routing().clone();
            if own.is_leader() {
                if !routing.is_active() {
                    match routing.activate().await {
                        Ok(n) => {
                            tracing::info!(
                                contacts = n,
                                "leading routing: state rebuilt from the store"
                            );
                            match ingest.recover_routing().await {
                                Ok(k) if k > 0 => tracing::info!(
                                    contacts = k,
                                    "open contacts routing never heard of routed"
                                ),
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error.message = %e, "reconciling open contacts failed; retried next round")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error.message = %e, "routing could not be rebuilt; retried next round")
                        }
                    }
                }
                link.set_leading(routing.is_active(), wait).await;
            } else {
                link.set_leading(false, wait).await;
                if routing.is_active() {
                    routing.deactivate().await;
                }
            }
        })
    }
}

/// Keeps a single node's router active (rebuilt from the store after a failed write).
async fn keep_routing(ingest: Ingest) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !ingest.routing().is_active() {
            ingest
                .routing()
                .activate()
                .await
                .map_err(|e| anyhow::anyhow!("routing could not be rebuilt: {e}"))?;
            ingest.recover_routing().await?;
            tracing::info!("routing rebuilt from the store");
        }
    }
}

/// Publishes the resident-patient, memory and mailbox gauges every 5 s.
async fn resident_gauge(patients: PatientRegistry) -> anyhow::Result<()> {
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
}

/// How soon a periodic purge tries again after the store refused it. A store outage
/// is the store probe's to report (readiness); a purge that cannot run now is not a
/// failed component, and must not keep the node unready after the store is back.
const PURGE_RETRY: Duration = Duration::from_secs(30);

/// Purges audit records past retention every `interval_secs` (see docs/security.md).
async fn audit_purge(store: Store, retention_days: u32, interval_secs: u64) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(interval_secs));
    loop {
        tick.tick().await;
        loop {
            let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days));
            match store.audit_purge(cutoff).await {
                Ok(n) => {
                    tracing::info!(purged = n, retention_days, "audit retention purge ran");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, retry_secs = PURGE_RETRY.as_secs(), "audit retention purge failed; trying again");
                    tokio::time::sleep(PURGE_RETRY).await;
                }
            }
        }
    }
}

/// Where routing runs, purges ended contact records and applied-input ids older
/// than `routing.record_retention_secs`, hourly.
async fn routing_purge(ingest: Ingest) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if !ingest.routing().is_active() {
            continue;
        }
        let keep = i64::from(ingest.routing().config().record_retention_secs);
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(keep);
        match ingest.store().purge_routing(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "ended contact records purged"),
            Ok(_) => {}
            // The next hourly tick tries again (see PURGE_RETRY for why this is no failure).
            Err(e) => {
                tracing::warn!(error.message = %e, "routing record purge failed; trying at the next tick")
            }
        }
    }
}

/// Applies the latest stored configuration version every second (every node), so a
/// change taken by one node is in force on all of them within a few seconds.
async fn config_sync(runtime: Arc<Runtime>) -> anyhow::Result<()> {
    // The first poll one interval after start: the build applied the stored version
    // already, and the store has enough to do while the node starts.
    let every = crate::runtime::SYNC_INTERVAL;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A store outage is the store probe's to report; the next tick retries.
        let _ = runtime.sync().await;
    }
}

/// The one SIGHUP listener: re-reads the principals and the reloadable settings.
async fn reload_on_sighup(
    hup: Arc<tokio::sync::Mutex<tokio::signal::unix::Signal>>,
    principals: Principals,
    runtime: Arc<Runtime>,
) -> anyhow::Result<()> {
    let mut hup = hup.lock().await;
    while hup.recv().await.is_some() {
        principals.reload_logged("sighup");
        match runtime.reload_from_files() {
            Ok(v) => tracing::info!(
                config.version = v,
                "SIGHUP: configuration files re-read, stored changes re-applied"
            ),
            Err(reason) => tracing::error!(
                reason,
                "SIGHUP: configuration rejected; the old values stay"
            ),
        }
    }
    Ok(())
}

/// Binds and starts the HTTP server (TLS when configured).
fn http_server(settings: &Settings, state: web::Data<AppState>) -> anyhow::Result<(Server, u16)> {
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
    Ok((server, port))
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
