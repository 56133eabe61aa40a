//! No PHI where it does not belong: every event type with canary values in every PHI
//! field, every read, and the error paths; then no canary may appear in the captured
//! logs (debug level for the frontdoor crates, closed spans with their fields), in
//! `/metrics`, or in any error body.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{captured_logs, days_ago, event, spawn_app, token_for, Backend, TestApp};

/// Canary values, unique to this run so other tests' output cannot match.
struct Canary {
    /// Letters embedded in every text canary (lower case: emails are lower-cased).
    marker: String,
    /// A phone number (digits only, so checked on its own).
    phone: String,
    /// Another phone, only ever sent in invalid or refused requests.
    phone2: String,
}

impl Canary {
    fn new() -> Canary {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let digits: String = id
            .bytes()
            .filter(u8::is_ascii_digit)
            .chain(std::iter::repeat(b'7'))
            .take(7)
            .map(char::from)
            .collect();
        Canary {
            marker: format!("cnry{}", &id[..10]),
            phone: format!("+1555{digits}"),
            phone2: format!("+1556{digits}"),
        }
    }

    fn text(&self, what: &str) -> String {
        format!("{what}-{}", self.marker)
    }

    fn mrn(&self) -> String {
        self.text("MRN").to_uppercase()
    }

    fn email(&self) -> String {
        format!("pat.{}@example.org", self.marker)
    }

    fn portal(&self) -> String {
        self.text("portal")
    }

    /// The places a canary was found in `text`, if any.
    fn find_in(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        let mut found = Vec::new();
        if let Some(i) = lower.find(&self.marker) {
            let start = i.saturating_sub(200);
            found.push(lower[start..(i + 40).min(lower.len())].to_string());
        }
        for phone in [&self.phone, &self.phone2] {
            let bare = &phone[1..];
            if let Some(i) = lower.find(bare) {
                let start = i.saturating_sub(200);
                found.push(lower[start..(i + 40).min(lower.len())].to_string());
            }
        }
        found
    }
}

async fn send_all_event_types(app: &TestApp, c: &Canary) {
    let all_ids =
        json!({"mrn": c.mrn(), "phone": c.phone, "email": c.email(), "portal_id": c.portal()});
    let by_portal = json!({"portal_id": c.portal()});
    let by_mrn = json!({"mrn": c.mrn()});
    let appt = |id: &str| {
        json!({"appointment_id": id, "starts_at": days_ago(-3, 0).to_rfc3339(),
        "department": c.text("department"), "reason": c.text("visit reason"),
        "provider": c.text("Dr Name"), "location": c.text("Clinic"),
        "telehealth_url": format!("https://visit.example.org/{}", c.marker)})
    };
    let agent = desktop(
        "agent.state",
        json!({"agent_id": "agent-7", "state": "available",
        "skills": {"billing": 3, "scheduling": 3}, "capacity": {"chat": 5, "voice": 1, "iva": 1}}),
    );
    let events = vec![
        agent,
        event(
            "appointment.booked",
            "portal",
            days_ago(3, 0),
            all_ids.clone(),
            appt("appt-c1"),
        ),
        event(
            "appointment.rescheduled",
            "portal",
            days_ago(2, 0),
            by_mrn.clone(),
            appt("appt-c1"),
        ),
        event(
            "medications.updated",
            "ehr",
            days_ago(2, 0),
            by_mrn.clone(),
            json!({
            "medications": [{"name": c.text("methotrexate"), "dose": c.text("dose"), "frequency": c.text("weekly")}]}),
        ),
        event(
            "prescription.routed",
            "ehr",
            days_ago(2, 0),
            by_mrn.clone(),
            json!({
            "prescription_id": "rx-c1", "medication": c.text("insulin"), "pharmacy": c.text("Pharmacy")}),
        ),
        event(
            "prescription.ready",
            "pharmacy",
            days_ago(1, 0),
            by_mrn.clone(),
            json!({
            "prescription_id": "rx-c1", "medication": c.text("insulin"), "pharmacy": c.text("Pharmacy")}),
        ),
        event(
            "device.readings",
            "device",
            days_ago(1, 0),
            by_mrn.clone(),
            json!({
            "device": c.text("cgm"), "summary": {"note": c.text("glucose high")}}),
        ),
        event(
            "contact.started",
            "iva",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "bot-c1", "intent": "scheduling"}),
        ),
        event(
            "bot.turn",
            "iva",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "bot-c1", "resolved": false, "intent": "scheduling",
            "patient_text": c.text("my rash is worse"), "bot_text": c.text("let me help")}),
        ),
        event(
            "bot.turn",
            "iva",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "bot-c1", "resolved": false,
            "patient_text": c.text("still worse"), "bot_text": c.text("connecting you")}),
        ),
        event(
            "contact.started",
            "chat",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "chat-c1", "skill": "billing", "intent": "billing"}),
        ),
        event(
            "contact.message",
            "chat",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "chat-c1", "from": "patient", "text": c.text("Should I stop my medication")}),
        ),
        desktop(
            "offer.declined",
            json!({"agent_id": "agent-7", "contact_id": "chat-c1"}),
        ),
        event(
            "contact.transferred",
            "chat",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "chat-c1", "to": "billing", "from_agent": "agent-7"}),
        ),
        event(
            "note.recorded",
            "desktop",
            days_ago(0, 0),
            by_mrn.clone(),
            json!({
            "contact_id": "chat-c1", "author": "rn-jlee", "role": "nurse", "text": c.text("note text")}),
        ),
        event(
            "contact.ended",
            "chat",
            days_ago(0, 0),
            by_portal.clone(),
            json!({
            "contact_id": "chat-c1", "disposition": "answered", "summary": c.text("summary"), "agent": "agent-7"}),
        ),
        event(
            "contact.started",
            "voice",
            days_ago(0, 0),
            json!({"phone": c.phone}),
            json!({
            "contact_id": "call-c1", "skill": "billing"}),
        ),
        desktop(
            "offer.accepted",
            json!({"agent_id": "agent-7", "contact_id": "call-c1"}),
        ),
        event(
            "contact.ended",
            "voice",
            days_ago(0, 0),
            json!({"phone": c.phone}),
            json!({
            "contact_id": "call-c1", "summary": c.text("call summary")}),
        ),
        desktop(
            "contact.wrapped",
            json!({"agent_id": "agent-7", "contact_id": "call-c1"}),
        ),
        event(
            "contact.started",
            "sms",
            days_ago(0, 0),
            json!({"phone": c.phone2.clone(), "mrn": c.text("OTHER-MRN").to_uppercase()}),
            json!({"contact_id": "sms-c1"}),
        ),
        event(
            "contact.abandoned",
            "sms",
            days_ago(0, 0),
            json!({"phone": c.phone2.clone()}),
            json!({"contact_id": "sms-c1"}),
        ),
        event(
            "identity.linked",
            "ehr",
            days_ago(0, 0),
            json!({"mrn": c.mrn(), "phone": c.phone2.clone()}),
            json!({}),
        ),
        event(
            "appointment.cancelled",
            "portal",
            days_ago(0, 0),
            by_mrn.clone(),
            appt("appt-c1"),
        ),
        event(
            "survey.completed",
            "sms",
            days_ago(0, 0),
            by_mrn.clone(),
            json!({"comment": c.text("survey comment")}),
        ),
    ];
    for e in &events {
        let res = app.post_event(e).await;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert!(
            status < 300,
            "{} was not accepted: {status} {body}",
            e["type"]
        );
    }
}

fn desktop(ty: &str, fields: Value) -> Value {
    let mut e = event(ty, "desktop", days_ago(0, 0), Value::Null, fields);
    e.as_object_mut().unwrap().remove("patient");
    e
}

/// Sends a request and returns (status, body text).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    who: Option<&str>,
    body: Option<String>,
) -> (u16, String) {
    let token = who.map(token_for);
    let res = app.request(method, path, token.as_deref(), &[], body).await;
    (res.status().as_u16(), res.text().await.unwrap())
}

#[actix_web::test]
async fn no_canary_from_any_phi_field_reaches_logs_metrics_or_error_bodies_on_sqlite() {
    canary_run(Backend::Sqlite).await;
}

#[actix_web::test]
async fn no_canary_from_any_phi_field_reaches_logs_metrics_or_error_bodies_on_postgres() {
    canary_run(Backend::Postgres).await;
}

async fn canary_run(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = Canary::new();
    send_all_event_types(&app, &c).await;

    // Reads that succeed (their bodies are PHI by design and are not checked).
    let pid = app.patient_id("mrn", &c.mrn()).await;
    for (kind, value) in [
        ("phone", c.phone.clone()),
        ("email", c.email()),
        ("portal_id", c.portal()),
    ] {
        app.patient_id(kind, &value).await;
    }
    let ctx = app.context(&pid).await;
    assert!(
        !c.find_in(&ctx.to_string()).is_empty(),
        "the canaries were stored, served and are detectable"
    );
    let enc = crate::helpers::urlencode;
    let mut errors: Vec<(String, u16, String)> = Vec::new();
    let mut record = |what: &str, (status, body): (u16, String)| {
        assert!(status >= 400, "{what}: expected an error, got {status}");
        errors.push((what.to_string(), status, body));
    };
    for path in [
        "/v1/contacts/chat-c1",
        "/v1/contacts/call-c1",
        "/v1/contacts/bot-c1",
        &format!("/v1/audit?patient={pid}"),
        &format!("/v1/audit?format=fhir&patient={pid}"),
    ] {
        let (status, _) = call(&app, Method::GET, path, Some("test-admin"), None).await;
        assert!(status == 200 || status == 404, "{path}: {status}");
    }

    // Error paths with canaries in the request.
    let lookups = [
        format!("/v1/patients?phone={}", enc(&format!("555-{}", c.marker))),
        format!(
            "/v1/patients?email={}",
            enc(&format!("not-an-email-{}", c.marker))
        ),
        format!("/v1/patients?mrn={}", enc(&c.text("UNKNOWN"))),
        format!("/v1/patients?mrn={}&phone={}", enc(&c.mrn()), enc(&c.phone)),
        format!(
            "/v1/patients?portal_id={}",
            enc(&format!("{} with spaces", c.marker))
        ),
        format!(
            "/v1/patients?phone={}&phone={}",
            enc(&c.phone),
            enc(&c.phone)
        ),
    ];
    for path in &lookups {
        record(
            path,
            call(&app, Method::GET, path, Some("test-admin"), None).await,
        );
    }
    let by_phone = format!("/v1/patients?phone={}", enc(&c.phone));
    record(
        "lookup, no token",
        call(&app, Method::GET, &by_phone, None, None).await,
    );
    record(
        "lookup, adapter",
        call(&app, Method::GET, &by_phone, Some("ehr-adapter"), None).await,
    );
    record(
        "lookup, agent not holding",
        call(&app, Method::GET, &by_phone, Some("agent-8"), None).await,
    );
    record(
        "lookup, supervisor without reason",
        call(&app, Method::GET, &by_phone, Some("sup-north"), None).await,
    );
    let res = app
        .request(
            Method::GET,
            &by_phone,
            Some("bogus"),
            &[("X-Access-Reason", &c.text("reason"))],
            None,
        )
        .await;
    record(
        "lookup, unknown token",
        (res.status().as_u16(), res.text().await.unwrap()),
    );
    let res = app
        .request(
            Method::GET,
            &by_phone,
            Some(&token_for("sup-south")),
            &[
                ("X-Access-Reason", &c.text("reason")),
                ("X-Purpose-Of-Use", &c.marker),
            ],
            None,
        )
        .await;
    record(
        "lookup, bad purpose",
        (res.status().as_u16(), res.text().await.unwrap()),
    );
    record(
        "context, bad id",
        call(
            &app,
            Method::GET,
            &format!("/v1/patients/{}/context", c.marker),
            Some("test-admin"),
            None,
        )
        .await,
    );
    record(
        "context, agent",
        call(
            &app,
            Method::GET,
            &format!("/v1/patients/{}/context", c.marker),
            Some("agent-7"),
            None,
        )
        .await,
    );
    record(
        "unknown route",
        call(
            &app,
            Method::GET,
            &format!("/v1/{}", enc(&c.mrn())),
            Some("test-admin"),
            None,
        )
        .await,
    );
    record(
        "contact, unknown",
        call(
            &app,
            Method::GET,
            &format!("/v1/contacts/{}", c.marker),
            Some("test-admin"),
            None,
        )
        .await,
    );
    record(
        "audit, bad principal",
        call(
            &app,
            Method::GET,
            &format!("/v1/audit?principal={}&limit=0", c.marker),
            Some("test-admin"),
            None,
        )
        .await,
    );
    record(
        "audit, bad patient",
        call(
            &app,
            Method::GET,
            &format!("/v1/audit?patient={}", c.marker),
            Some("test-admin"),
            None,
        )
        .await,
    );
    record("agent state, bad body", call(&app, Method::POST, "/v1/agents/agent-7/state", Some("agent-7"),
        Some(json!({"site": c.marker.clone(), "state": c.text("state"), "skills": c.marker.clone()}).to_string())).await);
    record(
        "agent state, not json",
        call(
            &app,
            Method::POST,
            "/v1/agents/agent-7/state",
            Some("agent-7"),
            Some(format!("{{\"site\": \"{}", c.marker)),
        )
        .await,
    );
    record(
        "agent state, someone else",
        call(
            &app,
            Method::POST,
            &format!("/v1/agents/{}/state", c.marker),
            Some("agent-7"),
            Some(json!({"site": "north"}).to_string()),
        )
        .await,
    );

    // Events refused at the edge, canaries in the fields at fault.
    let valid = || {
        event(
            "contact.started",
            "chat",
            days_ago(0, 0),
            json!({"mrn": c.mrn()}),
            json!({"contact_id": "x-1"}),
        )
    };
    let mut bad = Vec::new();
    let mut e = valid();
    e["patient"] = json!({"phone": format!("555-{}", c.marker)});
    bad.push(e.to_string());
    let mut e = valid();
    e["patient"] = json!({"email": c.marker.clone()});
    bad.push(e.to_string());
    let mut e = valid();
    e["patient"] = json!({"mrn": format!("{} has spaces", c.marker)});
    bad.push(e.to_string());
    let mut e = valid();
    e["patient"] = json!({"phone": c.phone2.replace('+', "00")});
    bad.push(e.to_string());
    let mut e = valid();
    e["occurred_at"] = json!(c.marker.clone());
    bad.push(e.to_string());
    let mut e = valid();
    e["channel"] = json!(c.marker.clone());
    bad.push(e.to_string());
    let mut e = valid();
    e["id"] = json!(c.marker.clone());
    bad.push(e.to_string());
    let mut e = event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        json!({"mrn": c.mrn()}),
        json!({"contact_id": "x", "from": c.marker.clone(), "text": c.text("text")}),
    );
    bad.push(e.to_string());
    e = event(
        "medications.updated",
        "ehr",
        days_ago(0, 0),
        json!({"mrn": c.mrn()}),
        json!({"medications": c.text("aspirin")}),
    );
    bad.push(e.to_string());
    bad.push(format!(
        "{{\"id\": \"{}\", \"patient\": {{\"mrn\": \"{}\"",
        c.marker,
        c.mrn()
    ));
    let mut e = valid();
    e["intent"] = json!(format!("{} {}", c.marker, "x".repeat(70_000)));
    bad.push(e.to_string());
    for body in bad {
        record(
            "event",
            call(
                &app,
                Method::POST,
                "/v1/events",
                Some("ehr-adapter"),
                Some(body.clone()),
            )
            .await,
        );
    }
    record(
        "event, no token",
        call(
            &app,
            Method::POST,
            "/v1/events",
            None,
            Some(valid().to_string()),
        )
        .await,
    );
    record(
        "event, agent",
        call(
            &app,
            Method::POST,
            "/v1/events",
            Some("agent-7"),
            Some(valid().to_string()),
        )
        .await,
    );

    let metrics = call(&app, Method::GET, "/metrics", Some("prometheus"), None)
        .await
        .1;
    // Spans close and log lines flush asynchronously on the server's workers.
    tokio::task::yield_now().await;
    let logs = captured_logs();
    assert!(
        logs.contains("http.patient_context"),
        "the capture sees the server's spans"
    );

    let mut leaks = Vec::new();
    for (what, status, body) in &errors {
        for hit in c.find_in(body) {
            leaks.push(format!("error body of {what} ({status}): …{hit}…"));
        }
        let problem: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert!(
            problem["status"].is_u64(),
            "{what}: not problem+json: {body}"
        );
    }
    for hit in c.find_in(&metrics) {
        leaks.push(format!("/metrics: …{hit}…"));
    }
    for hit in c.find_in(&logs) {
        leaks.push(format!("logs: …{hit}…"));
    }
    assert!(
        leaks.is_empty(),
        "PHI canaries leaked:\n{}",
        leaks.join("\n")
    );
}
