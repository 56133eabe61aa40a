//! The one table of every endpoint: its method, path, handler and who may call it.
//!
//! [`register`] builds the actix routes from [`ROUTES`] and wraps each in the
//! authorization middleware ([`super::guard`]) with that row's policy, so a route
//! cannot be served without a policy, and the role matrix test walks the same rows.
//! Add an endpoint by adding a row here (and nowhere else: a test fails on routes
//! registered outside this file).

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{web, Route};

use super::{audit, bot, events, fhir, health, openapi, patients, routing, runtime};
use crate::auth::Role;

/// What one role may do on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Refused (403).
    Deny,
    /// Allowed.
    Allow,
    /// Allowed only on the caller's own resource: the `{agent_id}` path segment must
    /// be the principal's id.
    Own,
    /// Patient data, minimum necessary: allowed only while one of that patient's
    /// contacts is offered to or assigned to the calling agent (the handler asks
    /// [`crate::auth::AssignmentCheck`]). Purpose of use: treatment.
    WhileAssigned,
    /// Patient or site data with a stated reason (`X-Access-Reason`) and within the
    /// principal's sites (the handler checks the site scope).
    WithReason,
    /// Patient data for treatment: allowed only when the patient has an appointment
    /// (not cancelled) in one of the clinician's departments at one of its sites (the
    /// handler asks the store). Purpose of use: treatment.
    InDepartment,
    /// Self-service for a virtual agent: only for the patient of a contact open now
    /// on a bot channel (`iva`, `chat`, `sms`) at one of the caller's sites (the
    /// handler checks the journey). Purpose of use: treatment.
    WhileContactOpen,
}

/// Whether a route needs a token at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Every caller needs a token.
    Required,
    /// Open to anyone (liveness only).
    Open,
    /// Open unless `security.metrics_require_token` (Prometheus supports both).
    MetricsSetting,
}

/// One endpoint.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path pattern (actix syntax).
    pub path: &'static str,
    /// The audited resource name (`patient.context`...), also the denial's subject.
    pub resource: &'static str,
    /// True when the route reads patient data: every attempt is audited, including
    /// unauthenticated ones.
    pub patient_data: bool,
    /// Token needed?
    pub auth: Auth,
    /// True when the per-token rate limit applies (`POST /v1/events`).
    pub rate_limited: bool,
    /// Access of each role.
    pub adapter: Access,
    /// Access of each role.
    pub agent: Access,
    /// Access of each role.
    pub supervisor: Access,
    /// Access of each role.
    pub admin: Access,
    /// Access of each role.
    pub monitor: Access,
    /// Access of each role.
    pub clinician: Access,
    /// Access of each role.
    pub bot: Access,
    /// Attaches the handler.
    pub handler: fn(Route) -> Route,
}

impl RouteSpec {
    /// What `role` may do here.
    pub fn access(&self, role: Role) -> Access {
        match role {
            Role::Adapter => self.adapter,
            Role::Agent => self.agent,
            Role::Supervisor => self.supervisor,
            Role::Admin => self.admin,
            Role::Monitor => self.monitor,
            Role::Clinician => self.clinician,
            Role::Bot => self.bot,
        }
    }
}

use Access::{Allow, Deny, InDepartment, Own, WhileAssigned, WhileContactOpen, WithReason};

/// Every endpoint the API serves.
pub static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: Method::GET,
        path: "/healthz",
        resource: "health",
        patient_data: false,
        auth: Auth::Open,
        rate_limited: false,
        adapter: Allow,
        agent: Allow,
        supervisor: Allow,
        admin: Allow,
        monitor: Allow,
        clinician: Allow,
        bot: Deny,
        handler: |r| r.to(health::healthz),
    },
    RouteSpec {
        method: Method::GET,
        path: "/openapi.json",
        resource: "openapi",
        patient_data: false,
        auth: Auth::Open,
        rate_limited: false,
        adapter: Allow,
        agent: Allow,
        supervisor: Allow,
        admin: Allow,
        monitor: Allow,
        clinician: Allow,
        bot: Allow,
        handler: |r| r.to(openapi::serve),
    },
    RouteSpec {
        method: Method::GET,
        path: "/readyz",
        resource: "readiness",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Allow,
        agent: Allow,
        supervisor: Allow,
        admin: Allow,
        monitor: Allow,
        clinician: Allow,
        bot: Deny,
        handler: |r| r.to(health::readyz),
    },
    RouteSpec {
        method: Method::GET,
        path: "/metrics",
        resource: "metrics",
        patient_data: false,
        auth: Auth::MetricsSetting,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Allow,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(health::metrics),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/events",
        resource: "events",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: true,
        adapter: Allow,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(events::post_event),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/patients",
        resource: "patient.lookup",
        patient_data: true,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: WhileAssigned,
        supervisor: WithReason,
        admin: Allow,
        monitor: Deny,
        clinician: InDepartment,
        bot: Deny,
        handler: |r| r.to(patients::lookup),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/patients/{patient_id}/context",
        resource: "patient.context",
        patient_data: true,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: WhileAssigned,
        supervisor: WithReason,
        admin: Allow,
        monitor: Deny,
        clinician: InDepartment,
        bot: Deny,
        handler: |r| r.to(patients::context),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/contacts/{contact_id}",
        resource: "contact.detail",
        patient_data: true,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: WhileAssigned,
        supervisor: WithReason,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(routing::contact),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/queues",
        resource: "queues",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Allow,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(routing::queues),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/agents",
        resource: "agents",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Allow,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(routing::agents),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/agents/{agent_id}/state",
        resource: "agent.state",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Own,
        supervisor: Allow,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(routing::set_agent_state),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/runtime",
        resource: "runtime",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Allow,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(runtime::show),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/runtime/config",
        resource: "runtime.config",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Allow,
        admin: Allow,
        monitor: Allow,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(runtime::config),
    },
    RouteSpec {
        method: Method::PUT,
        path: "/v1/runtime/config",
        resource: "runtime.config",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(runtime::reload),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/runtime/config/history",
        resource: "runtime.config",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Allow,
        admin: Allow,
        monitor: Allow,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(runtime::history),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/runtime/config/revert",
        resource: "runtime.config",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(runtime::revert),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/audit",
        resource: "audit.search",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(audit::search),
    },
    RouteSpec {
        method: Method::POST,
        path: "/fhir/r4",
        resource: "fhir.ingest",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: true,
        adapter: Allow,
        agent: Deny,
        supervisor: Deny,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Deny,
        handler: |r| r.to(fhir::post_bundle),
    },
    RouteSpec {
        method: Method::GET,
        path: "/fhir/r4/Patient/{patient_id}/$front-door-context",
        resource: "patient.context",
        patient_data: true,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: WhileAssigned,
        supervisor: WithReason,
        admin: Allow,
        monitor: Deny,
        clinician: InDepartment,
        bot: Deny,
        handler: |r| r.to(fhir::context),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/contacts/{contact_id}/callback",
        resource: "contact.callback",
        patient_data: false,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Allow,
        agent: Deny,
        supervisor: Allow,
        admin: Allow,
        monitor: Deny,
        clinician: Deny,
        bot: Allow,
        handler: |r| r.to(routing::request_callback),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/bot/contacts/{contact_id}/answer",
        resource: "bot.answer",
        patient_data: true,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Deny,
        monitor: Deny,
        clinician: Deny,
        bot: WhileContactOpen,
        handler: |r| r.to(bot::answer),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/bot/contacts/{contact_id}/appointment",
        resource: "bot.appointment",
        patient_data: true,
        auth: Auth::Required,
        rate_limited: false,
        adapter: Deny,
        agent: Deny,
        supervisor: Deny,
        admin: Deny,
        monitor: Deny,
        clinician: Deny,
        bot: WhileContactOpen,
        handler: |r| r.to(bot::appointment_action),
    },
];

/// Registers every row of [`ROUTES`], each behind its policy.
pub fn register(cfg: &mut web::ServiceConfig) {
    // One actix resource per path, so two methods on a path both reach their routes.
    let mut by_path: BTreeMap<&'static str, Vec<&'static RouteSpec>> = BTreeMap::new();
    let mut order = Vec::new();
    for spec in ROUTES {
        if !by_path.contains_key(spec.path) {
            order.push(spec.path);
        }
        by_path.entry(spec.path).or_default().push(spec);
    }
    for path in order {
        // A 405 names the methods the path takes (RFC 9110, 15.5.6).
        let allow = by_path[path]
            .iter()
            .map(|s| s.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut resource = web::resource(path)
            .default_service(web::to(move || super::method_not_allowed(allow.clone())));
        for spec in &by_path[path] {
            let route = (spec.handler)(web::method(spec.method.clone()));
            let spec: &'static RouteSpec = spec;
            resource =
                resource.route(route.wrap(actix_web::middleware::from_fn(move |req, next| {
                    super::guard::authorize(spec, req, next)
                })));
        }
        cfg.service(resource);
    }
}
