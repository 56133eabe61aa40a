//! Whole batches in the store: a group commit writes one statement per table, and a
//! group of identity resolutions looks every identifier up at once and claims in one
//! transaction. The outcomes must be exactly those of one event at a time.

use std::sync::Arc;

use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::{Identifier, IdentifierKind, PatientId};
use frontdoor_actors::ports::AppendOutcome;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::helpers::{days_ago, event, spawn_app, Backend, TestApp};

fn message(mrn: &str, text: &str) -> Value {
    event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": format!("chat-{mrn}"), "from": "patient", "text": text}),
    )
}

fn envelope(v: &Value) -> Arc<Envelope> {
    Arc::new(Envelope::parse(v.to_string().as_bytes(), 1 << 16).unwrap())
}

fn mrn(v: &str) -> Identifier {
    Identifier::parse(IdentifierKind::Mrn, v).unwrap()
}

fn phone(v: &str) -> Identifier {
    Identifier::parse(IdentifierKind::Phone, v).unwrap()
}

async fn sql(app: &TestApp, statement: String) {
    let url = app.settings.store.url.expose_secret().to_string();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute(sqlx::AssertSqlSafe(statement.clone()))
            .await
            .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        c.execute(sqlx::AssertSqlSafe(statement.clone()))
            .await
            .unwrap();
    }
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let url = app.settings.store.url.expose_secret().to_string();
    let q = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

async fn one_batch_names_stored_duplicate_and_moved_events_as_one_at_a_time_would(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let a = app
        .store
        .resolve_patient(&[mrn("MRN-B-A")], uuid::Uuid::new_v4())
        .await
        .unwrap()
        .patient;
    let gone = app
        .store
        .resolve_patient(&[mrn("MRN-B-G")], uuid::Uuid::new_v4())
        .await
        .unwrap()
        .patient;
    sql(
        &app,
        format!("UPDATE patients SET merged_into = '{a}' WHERE id = '{gone}'"),
    )
    .await;
    let earlier = envelope(&message("MRN-B-A", "stored before"));
    let first = app
        .store
        .append_batch(&[(a, earlier.clone(), Default::default())])
        .await
        .unwrap();
    assert!(
        matches!(first[0], Ok(AppendOutcome::Stored { .. })),
        "{first:?}"
    );

    let fresh = envelope(&message("MRN-B-A", "new"));
    let other = envelope(&message("MRN-B-A", "another"));
    let to_gone = envelope(&message("MRN-B-G", "to a merged record"));
    let batch = vec![
        (a, fresh.clone(), Default::default()),
        (a, earlier.clone(), Default::default()), // stored in an earlier batch
        (a, fresh.clone(), Default::default()),   // twice in this batch
        (gone, to_gone.clone(), Default::default()),
        (a, other.clone(), Default::default()),
    ];
    let out = app.store.append_batch(&batch).await.unwrap();
    let seq = |o: &Result<AppendOutcome, _>| match o {
        Ok(AppendOutcome::Stored { seq, relinked }) => {
            assert!(relinked.is_empty());
            *seq
        }
        other => panic!("expected stored, got {other:?}"),
    };
    let (s0, s4) = (seq(&out[0]), seq(&out[4]));
    assert!(s0 < s4, "store order follows batch order: {s0} < {s4}");
    assert!(
        matches!(out[1], Ok(AppendOutcome::Duplicate)),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(out[2], Ok(AppendOutcome::Duplicate)),
        "{:?}",
        out[2]
    );
    assert!(
        matches!(out[3], Ok(AppendOutcome::Moved { to }) if to == a),
        "{:?}",
        out[3]
    );
    let log: Vec<String> = app
        .store
        .event_log()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        log,
        [
            earlier.id.to_string(),
            fresh.id.to_string(),
            other.id.to_string()
        ],
        "each stored once, nothing for the merged record"
    );
}

#[actix_web::test]
async fn one_batch_names_stored_duplicate_and_moved_events_as_one_at_a_time_would_on_sqlite() {
    one_batch_names_stored_duplicate_and_moved_events_as_one_at_a_time_would(Backend::Sqlite).await;
}

#[actix_web::test]
async fn one_batch_names_stored_duplicate_and_moved_events_as_one_at_a_time_would_on_postgres() {
    one_batch_names_stored_duplicate_and_moved_events_as_one_at_a_time_would(Backend::Postgres)
        .await;
}

async fn a_group_of_resolutions_sees_the_claims_made_earlier_in_the_group(backend: Backend) {
    let app = spawn_app(backend).await;
    let known = app
        .store
        .resolve_patient(
            &[mrn("MRN-R-K"), phone("+15550000001")],
            uuid::Uuid::new_v4(),
        )
        .await
        .unwrap()
        .patient;
    let patients_before = count(&app, "patients").await;
    let links_before = count(&app, "identity_links").await;
    let requests = vec![
        // A new caller's first two events, in one group: one patient.
        (vec![phone("+15550000002")], uuid::Uuid::new_v4()),
        (vec![phone("+15550000002")], uuid::Uuid::new_v4()),
        // A new MRN and phone, then the MRN alone, then the phone with a new e-mail.
        (
            vec![mrn("MRN-R-N"), phone("+15550000003")],
            uuid::Uuid::new_v4(),
        ),
        (vec![mrn("MRN-R-N")], uuid::Uuid::new_v4()),
        (
            vec![
                phone("+15550000003"),
                Identifier::parse(IdentifierKind::Email, "n@example.org").unwrap(),
            ],
            uuid::Uuid::new_v4(),
        ),
        // Someone already known, and a new MRN beside a known MRN holder's phone:
        // a different person (the identity rules), even within a group.
        (vec![mrn("MRN-R-K")], uuid::Uuid::new_v4()),
        (
            vec![mrn("MRN-R-X"), phone("+15550000001")],
            uuid::Uuid::new_v4(),
        ),
    ];
    let out: Vec<_> = app
        .store
        .resolve_batch(&requests)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        out[0].patient, out[1].patient,
        "one new caller, one patient"
    );
    assert_eq!(out[0].claims.len(), 1);
    assert!(out[1].claims.is_empty(), "the second claims nothing");
    assert_eq!(out[2].patient, out[3].patient);
    assert_eq!(
        out[2].patient, out[4].patient,
        "the phone claimed earlier in the group"
    );
    assert_eq!(out[4].claims.len(), 1, "only the e-mail is new");
    assert_eq!(out[5].patient, known);
    assert_ne!(out[6].patient, known, "a new MRN is a different person");
    let distinct: std::collections::BTreeSet<PatientId> = out.iter().map(|r| r.patient).collect();
    assert_eq!(distinct.len(), 4);
    assert_eq!(
        count(&app, "patients").await - patients_before,
        3,
        "no orphan records"
    );
    // Claims: phone 2; MRN-R-N and phone 3; the e-mail; MRN-R-X.
    assert_eq!(count(&app, "identity_links").await - links_before, 5);
}

#[actix_web::test]
async fn a_group_of_resolutions_sees_the_claims_made_earlier_in_the_group_on_sqlite() {
    a_group_of_resolutions_sees_the_claims_made_earlier_in_the_group(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_group_of_resolutions_sees_the_claims_made_earlier_in_the_group_on_postgres() {
    a_group_of_resolutions_sees_the_claims_made_earlier_in_the_group(Backend::Postgres).await;
}
