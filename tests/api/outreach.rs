//! Patient outreach end to end: reminders planned, re-planned, dropped and fired
//! by the supervised tick (on the injected clock, and once in real time), across a
//! restart; consent (STOP/START) and replies (C, R); local time in every message,
//! across a daylight-saving change.

use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Days, TimeZone, Utc};
use frontdoor::configuration::Settings;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::routing::Clock;
use serde_json::{json, Value};

use crate::helpers::{event, spawn_app_with, test_settings, Backend, FencedPair, TestApp};

const PHONE: &str = "+15550142001";

/// Settings whose reminder tick runs every 50 ms (on the test's manual clock).
async fn settings(backend: Backend) -> (Settings, Option<crate::helpers::TempDir>) {
    let (mut s, dir) = test_settings(backend).await;
    s.outreach.tick_ms = 50;
    (s, dir)
}

async fn app(backend: Backend) -> TestApp {
    let (s, dir) = settings(backend).await;
    spawn_app_with(s, dir).await
}

/// Moves the manual clock to `t` (forward only).
fn advance_to(app: &TestApp, t: DateTime<Utc>) {
    let now = app.clock.now();
    assert!(t >= now, "the clock only moves forward");
    app.clock
        .advance((t - now).to_std().expect("a forward step"));
}

/// Tomorrow (or later) at 16:00 UTC: 10:00 or 11:00 in Chicago, outside quiet hours.
fn morning_after(now: DateTime<Utc>) -> DateTime<Utc> {
    let d = (now + Days::days(1)).date_naive();
    Utc.from_utc_datetime(&d.and_hms_opt(16, 0, 0).unwrap())
}

fn patient(mrn: &str) -> Value {
    json!({"mrn": mrn, "phone": PHONE})
}

async fn book(app: &TestApp, ty: &str, mrn: &str, id: &str, starts: DateTime<Utc>, extra: Value) {
    let mut fields = json!({
        "appointment_id": id, "starts_at": starts.to_rfc3339(),
        "department": "dermatology", "location": "North Clinic"
    });
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    app.store_event(&event(ty, "ehr", app.clock.now(), patient(mrn), fields))
        .await;
}

async fn pid(app: &TestApp, mrn: &str) -> PatientId {
    PatientId::parse(&app.patient_id("mrn", mrn).await).unwrap()
}

/// notify.send commands in the outbox with this template.
async fn sent(app: &TestApp, template: &str) -> Vec<Value> {
    app.store
        .pending_commands(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == "notify.send")
        .map(|c| serde_json::from_str::<Value>(&c.body).unwrap())
        .filter(|b| b["template"] == template)
        .collect()
}

/// (offset, state) of the patient's reminder records for an appointment.
async fn reminders(app: &TestApp, p: PatientId, appointment: &str) -> Vec<(String, String)> {
    app.store
        .outreach_of(p)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.template == "appointment.reminder")
        .filter(|r| r.appointment_id.as_deref() == Some(appointment))
        .map(|r| {
            let c: Value = serde_json::from_str(&r.command).unwrap();
            (
                c["payload"]["offset"].as_str().unwrap().to_string(),
                r.state,
            )
        })
        .collect()
}

/// Waits (polling, at most 10 s) until the reminder records are as expected.
async fn wait_reminders(app: &TestApp, p: PatientId, appointment: &str, expected: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = reminders(app, p, appointment).await;
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reminders of {appointment}: {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A counter's value in the exposition (0 when absent). Metrics are per process
/// and tests run side by side: compare deltas with `>=`.
async fn counter(app: &TestApp, series: &str) -> f64 {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn reminders_follow_bookings_reschedules_and_cancellations_across_days_sqlite() {
    reminders_across_days(Backend::Sqlite).await
}

#[actix_web::test]
async fn reminders_follow_bookings_reschedules_and_cancellations_across_days_postgres() {
    reminders_across_days(Backend::Postgres).await
}

async fn reminders_across_days(backend: Backend) {
    {
        let app = app(backend).await;
        let cancelled = "frontdoor_appointments_total{outcome=\"cancelled\"}";
        let cancelled_before = counter(&app, cancelled).await;
        let t0 = morning_after(app.clock.now());
        advance_to(&app, t0);
        // Four days ahead: 72 h and 24 h SMS reminders are planned.
        book(
            &app,
            "appointment.booked",
            "OUT-1",
            "A1",
            t0 + Days::days(4),
            json!({}),
        )
        .await;
        let p = pid(&app, "OUT-1").await;
        wait_reminders(&app, p, "A1", &[("72h", "planned"), ("24h", "planned")]).await;
        // Less than an hour away (telehealth): none. In the past: none.
        book(
            &app,
            "appointment.booked",
            "OUT-1",
            "SOON",
            t0 + Days::minutes(30),
            json!({"telehealth_url": "https://video.example.org/j/SOON"}),
        )
        .await;
        book(
            &app,
            "appointment.booked",
            "OUT-1",
            "PAST",
            t0 - Days::days(1),
            json!({}),
        )
        .await;
        assert!(reminders(&app, p, "SOON").await.is_empty());
        assert!(reminders(&app, p, "PAST").await.is_empty());

        // A day passes: the 72 h reminder fires (within the tick), once.
        advance_to(&app, t0 + Days::days(1) + Days::minutes(1));
        wait_reminders(&app, p, "A1", &[("72h", "sent"), ("24h", "planned")]).await;
        let fired = sent(&app, "appointment.reminder").await;
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0]["to"], PHONE);
        assert_eq!(fired[0]["channel"], "sms");
        assert_eq!(fired[0]["appointment_id"], "A1");
        assert_eq!(fired[0]["offset"], "72h");

        // Rescheduled two days later: both are re-planned at the new time.
        let moved = t0 + Days::days(6) + Days::hours(2);
        book(
            &app,
            "appointment.rescheduled",
            "OUT-1",
            "A1",
            moved,
            json!({}),
        )
        .await;
        wait_reminders(
            &app,
            p,
            "A1",
            &[("72h", "sent"), ("72h", "planned"), ("24h", "planned")],
        )
        .await;
        // The old 24 h time passes: nothing goes out for the old start.
        advance_to(&app, t0 + Days::days(3) + Days::minutes(1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sent(&app, "appointment.reminder").await.len(), 1);
        // Cancelled: the plan is dropped; nothing more goes out.
        book(
            &app,
            "appointment.cancelled",
            "OUT-1",
            "A1",
            moved,
            json!({}),
        )
        .await;
        wait_reminders(&app, p, "A1", &[("72h", "sent")]).await;
        advance_to(&app, moved);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sent(&app, "appointment.reminder").await.len(), 1);
        assert!(counter(&app, cancelled).await >= cancelled_before + 1.0);
    }
}

#[actix_web::test]
async fn a_restart_between_planning_and_firing_neither_loses_nor_doubles_a_reminder() {
    let (s, _) = settings(Backend::Postgres).await;
    let mut first = spawn_app_with(s.clone(), None).await;
    let t0 = morning_after(first.clock.now());
    advance_to(&first, t0);
    book(
        &first,
        "appointment.booked",
        "OUT-R",
        "R1",
        t0 + Days::days(2),
        json!({}),
    )
    .await;
    let p = pid(&first, "OUT-R").await;
    wait_reminders(&first, p, "R1", &[("24h", "planned")]).await;
    first.stop().await;

    // A new process, a day later: the stored plan is loaded and fires once.
    let mut second = spawn_app_with(s.clone(), None).await;
    advance_to(&second, t0 + Days::days(1) + Days::seconds(30));
    wait_reminders(&second, p, "R1", &[("24h", "sent")]).await;
    // The EHR sends the same booking again: the sent reminder is not planned again.
    book(
        &second,
        "appointment.booked",
        "OUT-R",
        "R1",
        t0 + Days::days(2),
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_reminders(&second, p, "R1", &[("24h", "sent")]).await;
    second.stop().await;

    // And once more after it fired: still exactly one.
    let third = spawn_app_with(s, None).await;
    advance_to(&third, t0 + Days::days(1) + Days::minutes(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(&third, "appointment.reminder").await.len(), 1);
}

#[actix_web::test]
async fn in_real_time_an_appointment_61_minutes_away_gets_its_1h_reminder_within_seconds() {
    let (mut s, dir) = settings(Backend::Sqlite).await;
    s.outreach.tick_ms = 1_000;
    let app = frontdoor::startup::Application::build(s)
        .await
        .expect("the application builds");
    let store = app.ingest().store().clone();
    let address = format!("http://127.0.0.1:{}", app.port());
    let trigger = app.shutdown_trigger();
    let running = actix_rt::spawn(app.run_until_stopped());
    let starts = Utc::now() + Days::minutes(61);
    let booking = event(
        "appointment.booked",
        "ehr",
        Utc::now(),
        patient("OUT-RT"),
        json!({"appointment_id": "RT1", "starts_at": starts.to_rfc3339(),
               "telehealth_url": "https://video.example.org/j/RT1"}),
    );
    let res = reqwest::Client::new()
        .post(format!("{address}/v1/events"))
        .bearer_auth(crate::helpers::token_for("test-admin"))
        .json(&booking)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let due = starts - Days::hours(1);
    let deadline = Instant::now() + Duration::from_secs(75);
    let fired_at = loop {
        let found = store
            .pending_commands(100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| serde_json::from_str::<Value>(&c.body).unwrap())
            .find(|b| b["template"] == "appointment.reminder" && b["offset"] == "1h");
        if let Some(b) = found {
            break (Utc::now(), b);
        }
        assert!(Instant::now() < deadline, "the 1 h reminder never left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let late = (fired_at.0 - due).num_milliseconds();
    println!("1 h reminder sent {late} ms after its time");
    assert!(late >= 0, "sent {late} ms early");
    assert!(late <= 5_000, "sent {late} ms after its time");
    assert_eq!(fired_at.1["join_url"], "https://video.example.org/j/RT1");
    trigger.trigger();
    let _ = running.await;
    drop(dir);
}

#[actix_web::test]
async fn stop_then_a_booking_sends_no_sms_and_start_restores_it_sqlite() {
    stop_then_start(Backend::Sqlite).await
}

#[actix_web::test]
async fn stop_then_a_booking_sends_no_sms_and_start_restores_it_postgres() {
    stop_then_start(Backend::Postgres).await
}

async fn stop_then_start(backend: Backend) {
    {
        let app = app(backend).await;
        let suppressed = "frontdoor_outreach_suppressed_total{template=\"appointment.confirmation\",reason=\"opted_out\"}";
        let suppressed_before = counter(&app, suppressed).await;
        let t0 = morning_after(app.clock.now());
        advance_to(&app, t0);
        book(
            &app,
            "appointment.booked",
            "OUT-S",
            "S0",
            t0 + Days::days(5),
            json!({}),
        )
        .await;
        assert_eq!(sent(&app, "appointment.confirmation").await.len(), 1);
        let stop = event(
            "contact.started",
            "sms",
            t0,
            json!({"phone": PHONE}),
            json!({"contact_id": "sms-stop", "text": "Stop"}),
        );
        app.store_event(&stop).await;
        // The carrier-required answer goes out; nobody is asked to handle the text.
        let answers = sent(&app, "consent.opted_out").await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        let (status, contact) = app.get("/v1/contacts/sms-stop").await;
        assert_eq!(status, 404, "a STOP is not routed to anyone: {contact}");
        let p = pid(&app, "OUT-S").await;
        assert!(app.store.opted_out(p, "sms").await.unwrap());
        let ctx = app.context(&p.to_string()).await;
        assert_eq!(ctx["opted_out"], json!(["sms"]), "{ctx}");
        // Planned reminders are suppressed when they come due.
        advance_to(&app, t0 + Days::days(2) + Days::minutes(1));
        wait_reminders(&app, p, "S0", &[("72h", "suppressed"), ("24h", "planned")]).await;

        book(
            &app,
            "appointment.booked",
            "OUT-S",
            "S1",
            t0 + Days::days(6),
            json!({}),
        )
        .await;
        assert_eq!(
            sent(&app, "appointment.confirmation").await.len(),
            1,
            "no SMS after STOP"
        );
        let records = app.store.outreach_of(p).await.unwrap();
        assert!(
            records
                .iter()
                .any(|r| r.template == "appointment.confirmation"
                    && r.state == "suppressed"
                    && r.reason.as_deref() == Some("opted_out")),
            "{records:?}"
        );
        assert!(counter(&app, suppressed).await >= suppressed_before + 1.0);

        let start = event(
            "contact.started",
            "sms",
            t0,
            json!({"phone": PHONE}),
            json!({"contact_id": "sms-start", "text": "START"}),
        );
        app.store_event(&start).await;
        assert_eq!(sent(&app, "consent.opted_in").await.len(), 1);
        assert!(!app.store.opted_out(p, "sms").await.unwrap());
        book(
            &app,
            "appointment.booked",
            "OUT-S",
            "S2",
            t0 + Days::days(7),
            json!({}),
        )
        .await;
        assert_eq!(
            sent(&app, "appointment.confirmation").await.len(),
            2,
            "START restores SMS"
        );
    }
}

#[actix_web::test]
async fn a_confirmation_and_a_reminder_show_the_site_local_time_across_a_dst_change() {
    let app = app(Backend::Sqlite).await;
    // Chicago moves from CST (UTC-6) to CDT (UTC-5) on Sun 14 Mar 2027.
    let t0 = Utc.with_ymd_and_hms(2027, 3, 11, 16, 0, 0).unwrap();
    advance_to(&app, t0);
    book(
        &app,
        "appointment.booked",
        "OUT-D",
        "D1",
        Utc.with_ymd_and_hms(2027, 3, 15, 15, 30, 0).unwrap(),
        json!({}),
    )
    .await;
    book(
        &app,
        "appointment.booked",
        "OUT-D",
        "D0",
        Utc.with_ymd_and_hms(2027, 3, 12, 15, 30, 0).unwrap(),
        json!({}),
    )
    .await;
    let confirmations = sent(&app, "appointment.confirmation").await;
    let by_id = |id: &str| {
        confirmations
            .iter()
            .find(|c| c["appointment_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("D1")["local_time"], "Mon 15 Mar 2027, 10:30 CDT");
    assert_eq!(by_id("D1")["time"], "10:30 CDT");
    assert_eq!(by_id("D1")["date"], "2027-03-15");
    assert_eq!(by_id("D1")["time_zone"], "America/Chicago");
    assert_eq!(by_id("D0")["local_time"], "Fri 12 Mar 2027, 09:30 CST");
    assert_eq!(by_id("D0")["site_name"], "North Clinic");
    // The 72 h reminder of D1 leaves on Fri 12 Mar (CST) and names Monday's CDT time.
    advance_to(&app, Utc.with_ymd_and_hms(2027, 3, 12, 15, 31, 0).unwrap());
    let p = pid(&app, "OUT-D").await;
    wait_reminders(&app, p, "D1", &[("72h", "sent"), ("24h", "planned")]).await;
    let r = sent(&app, "appointment.reminder").await;
    let d1 = r.iter().find(|c| c["appointment_id"] == "D1").unwrap();
    assert_eq!(d1["local_time"], "Mon 15 Mar 2027, 10:30 CDT");
    // The context view gives both UTC and local times.
    let ctx = app.context(&p.to_string()).await;
    let a = ctx["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "D1")
        .unwrap();
    assert_eq!(a["starts_at"], "2027-03-15T15:30:00Z");
    assert_eq!(a["starts_at_local"], "2027-03-15T10:30:00-05:00");
    assert_eq!(a["time_zone"], "America/Chicago");
}

#[actix_web::test]
async fn quiet_hours_hold_a_reminder_until_eight_local_and_replies_confirm_or_reschedule() {
    let (mut s, dir) = settings(Backend::Sqlite).await;
    // The default window: 21:00-08:00 local.
    s.sites.get_mut("north").unwrap().quiet_hours = String::new();
    let app = spawn_app_with(s, dir).await;
    let t0 = Utc.with_ymd_and_hms(2027, 3, 10, 16, 0, 0).unwrap();
    advance_to(&app, t0);
    // Starts Mon 15 Mar 03:30 UTC (Sun 22:30 CDT): the 72 h reminder is due on
    // Fri 12 Mar 03:30 UTC = Thu 11 Mar 21:30 CST, in quiet hours.
    let starts = Utc.with_ymd_and_hms(2027, 3, 15, 3, 30, 0).unwrap();
    book(&app, "appointment.booked", "OUT-Q", "Q1", starts, json!({})).await;
    let p = pid(&app, "OUT-Q").await;
    advance_to(&app, starts - Days::hours(72) + Days::minutes(1));
    // Held until Fri 12 Mar 08:00 CST = 14:00 UTC.
    let until = Utc
        .with_ymd_and_hms(2027, 3, 12, 14, 0, 0)
        .unwrap()
        .timestamp_millis();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = app.store.outreach_of(p).await.unwrap();
        let h = rows
            .iter()
            .find(|r| r.template == "appointment.reminder" && r.command.contains("\"72h\""))
            .unwrap();
        if h.due_at_ms == until {
            assert_eq!(h.state, "planned");
            break;
        }
        assert!(Instant::now() < deadline, "not held: {h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent(&app, "appointment.reminder").await.is_empty());
    advance_to(&app, Utc.with_ymd_and_hms(2027, 3, 12, 14, 0, 1).unwrap());
    wait_reminders(&app, p, "Q1", &[("72h", "sent"), ("24h", "planned")]).await;

    // "C" confirms the next appointment; the contact closes itself.
    let at = app.clock.now();
    app.store_event(&event(
        "contact.started",
        "sms",
        at,
        json!({"phone": PHONE}),
        json!({"contact_id": "sms-c", "text": "c"}),
    ))
    .await;
    let ctx = app.context(&p.to_string()).await;
    let a = ctx["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "Q1")
        .unwrap()
        .clone();
    assert!(a["confirmed_at"].is_string(), "{a}");
    assert!(ctx["open_contacts"].as_array().unwrap().is_empty(), "{ctx}");
    assert!(counter(&app, "frontdoor_appointments_total{outcome=\"confirmed\"}").await >= 1.0);
    // "R" opens a scheduling contact about it.
    app.store_event(&event(
        "contact.started",
        "sms",
        at,
        json!({"phone": PHONE}),
        json!({"contact_id": "sms-r", "text": "R"}),
    ))
    .await;
    let ctx = app.context(&p.to_string()).await;
    let open = &ctx["open_contacts"][0];
    assert_eq!(open["skill"], "scheduling", "{ctx}");
    assert_eq!(open["appointment_id"], "Q1");
    let (status, routed) = app.get("/v1/contacts/sms-r").await;
    assert_eq!(status, 200, "{routed}");
    assert_eq!(routed["skill"], "scheduling", "{routed}");
    // Anything else is a normal contact.
    app.store_event(&event(
        "contact.started",
        "sms",
        at,
        json!({"phone": PHONE}),
        json!({"contact_id": "sms-x", "text": "Can I bring my daughter?"}),
    ))
    .await;
    let (status, other) = app.get("/v1/contacts/sms-x").await;
    assert_eq!(status, 200, "{other}");
}

#[actix_web::test]
async fn a_reminder_is_fired_by_the_partitions_new_owner_and_never_by_the_node_that_lost_it() {
    use frontdoor::cluster::{Cluster, Ownership};
    use frontdoor::store::StoreError;
    use frontdoor_actors::event::Envelope;
    use frontdoor_actors::journey::Journey;
    use frontdoor_actors::outreach::{on_event, Outreach, OutreachChanges};
    use frontdoor_actors::ports::Effects;

    let pair = FencedPair::new().await;
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let owning = |node: &str, p: u32| {
        let mut own = Ownership::joining(node, 4);
        own.mine.insert(p, 1);
        Cluster::new(own).0
    };
    a.cluster_prepare_leases(&["partition:1".to_string()])
        .await
        .unwrap();
    let got = a
        .cluster_acquire("partition:1", "node-0", 300)
        .await
        .unwrap();
    pair.set_token(0, got.unwrap().token);
    let patient = loop {
        let p = PatientId::new();
        if p.partition(4) == 1 {
            break p;
        }
    };
    // Node A plans a reminder with the booking (one transaction).
    let now = Utc::now();
    // Due at noon UTC tomorrow: never inside the default quiet hours (21:00-08:00),
    // whatever time of day the test runs.
    let starts = now.date_naive().and_hms_opt(12, 0, 0).unwrap().and_utc() + Days::days(2);
    let booked = Envelope::parse(
        event(
            "appointment.booked",
            "ehr",
            now,
            patient_json(),
            json!({"appointment_id": "C1", "starts_at": starts.to_rfc3339()}),
        )
        .to_string()
        .as_bytes(),
        1 << 16,
    )
    .unwrap();
    let outreach = Outreach::default();
    let before = Journey::new(patient, Default::default());
    let mut after = before.clone();
    after.apply(1, &booked);
    let mut changes = OutreachChanges::default();
    let commands = on_event(&outreach, &booked, &before, &after, now, &mut changes);
    a.append_event(
        patient,
        &booked,
        &Effects {
            commands,
            outreach: changes,
        },
    )
    .await
    .expect("A holds the lease");
    let due = starts - Days::hours(24) + Days::seconds(1);
    // A node holding another partition does not see it.
    let other = frontdoor::outreach::fire_due(&b, &outreach, &owning("node-2", 2), due)
        .await
        .unwrap();
    assert_eq!(other.sent, 0);
    // A stalls past its lease; B takes the partition.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = b
        .cluster_acquire("partition:1", "node-1", 60_000)
        .await
        .unwrap()
        .expect("B takes the expired lease");
    pair.set_token(1, taken.token);
    // A, not knowing, ticks: its write is refused, nothing is sent.
    let stale = frontdoor::outreach::fire_due(&a, &outreach, &owning("node-0", 1), due).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");
    // B, the new owner, sends it; a second tick sends nothing more.
    let fired = frontdoor::outreach::fire_due(&b, &outreach, &owning("node-1", 1), due)
        .await
        .unwrap();
    assert_eq!(fired.sent, 1);
    let again = frontdoor::outreach::fire_due(&b, &outreach, &owning("node-1", 1), due)
        .await
        .unwrap();
    assert_eq!(again.sent, 0);
    let reminders: Vec<_> = b
        .pending_commands(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.body.contains("\"appointment.reminder\""))
        .collect();
    assert_eq!(reminders.len(), 1);
}

fn patient_json() -> Value {
    json!({"mrn": "OUT-CL", "phone": PHONE})
}
