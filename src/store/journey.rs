//! Patients, identifiers, identity links and the append-only event log.

use std::sync::Arc;

use chrono::Utc;
use frontdoor_actors::event::{Envelope, EventKind};
use std::collections::HashMap;

use frontdoor_actors::identity::{self, KnownIdentifier, LinkAction, Resolution, Target};
use frontdoor_actors::ids::{Identifier, IdentifierKind, PatientId};
use frontdoor_actors::journey::IdentifierView;
use frontdoor_actors::ports::Effects;
use frontdoor_actors::ports::{AppendOutcome, BoxFuture, JourneyStore, PortError, StoredJourney};
use sqlx::{AnyConnection, Row};

use super::{millis, timed, Store, StoreError};

fn parse_patient(s: &str) -> Result<PatientId, StoreError> {
    PatientId::parse(s).ok_or_else(|| StoreError::Corrupt("patient id is not a UUID".into()))
}

fn view(id: &Identifier) -> IdentifierView {
    IdentifierView {
        kind: id.kind(),
        value: id.value().to_string(),
    }
}

/// Who holds each of `ids` now, inside a transaction or on the pool.
async fn known_identifiers(
    conn: &mut AnyConnection,
    ids: &[Identifier],
) -> Result<Vec<KnownIdentifier>, StoreError> {
    let refs: Vec<&Identifier> = ids.iter().collect();
    Ok(known_of(ids, &known_many(conn, &refs).await?))
}

/// One identity link, as `identity_links` and the audit log record it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Link<'a> {
    /// An identifier new to Front Door now names the patient.
    Claim { identifier: &'a Identifier },
    /// A provisional record (and everything merged into it) merged into the patient.
    Merge { from: PatientId },
    /// An identifier moved to the patient from another one.
    Move {
        identifier: &'a Identifier,
        from: PatientId,
    },
}

impl Link<'_> {
    /// The stored word (`identity_links.action`; the audit resource is `identity.<it>`).
    pub(crate) fn action(&self) -> &'static str {
        match self {
            Link::Claim { .. } => "claim",
            Link::Merge { .. } => "merge",
            Link::Move { .. } => "move",
        }
    }

    /// The identifier linked or moved (none for a merge).
    pub(crate) fn identifier(&self) -> Option<&Identifier> {
        match self {
            Link::Claim { identifier } | Link::Move { identifier, .. } => Some(identifier),
            Link::Merge { .. } => None,
        }
    }

    /// The patient it came from (none for a claim).
    pub(crate) fn from(&self) -> Option<PatientId> {
        match self {
            Link::Claim { .. } => None,
            Link::Merge { from } | Link::Move { from, .. } => Some(*from),
        }
    }
}

async fn record_link(
    tx: &mut AnyConnection,
    event_id: Option<String>,
    link: Link<'_>,
    to: PatientId,
) -> Result<(), StoreError> {
    let identifier = link.identifier();
    sqlx::query(
        "INSERT INTO identity_links (event_id, action, kind, value, from_patient, to_patient, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event_id.clone())
    .bind(link.action())
    .bind(identifier.map(|i| i.kind().as_str().to_string()))
    .bind(identifier.map(|i| i.value().to_string()))
    .bind(link.from().map(|p| p.to_string()))
    .bind(to.to_string())
    .bind(Utc::now().timestamp_millis())
    .execute(&mut *tx)
    .await?;
    // Every link is audited in the transaction that makes it.
    super::audit::record_identity_link(tx, event_id, link, to).await
}

/// Inserts an identifier for a patient unless someone holds it; true when inserted.
async fn claim(
    tx: &mut AnyConnection,
    id: &Identifier,
    patient: PatientId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO identities (kind, value, patient_id, linked_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, value) DO NOTHING",
    )
    .bind(id.kind().as_str())
    .bind(id.value().to_string())
    .bind(patient.to_string())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The outcome of resolving an event's identifiers.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The patient the event belongs to.
    pub patient: PatientId,
    /// Identifiers newly linked to that patient by this event.
    pub claims: Vec<IdentifierView>,
    /// The rule's decision (grade, conflicts) for metrics and audit.
    pub resolution: Resolution,
}

/// Claims what `resolution` says for one event inside an open transaction: a new
/// patient when it names none, then each unknown identifier (audited). A claim
/// someone else made first (another event of the same new caller, on this or
/// another node) joins that patient instead. Returns the patient and what it claimed.
async fn claim_in(
    tx: &mut AnyConnection,
    resolution: &Resolution,
    event_id: uuid::Uuid,
    now_ms: i64,
) -> Result<(PatientId, Vec<IdentifierView>), StoreError> {
    let (mut patient, is_new) = match resolution.target {
        Target::Existing(p) => (p, false),
        Target::New => (PatientId::new(), true),
    };
    if is_new {
        sqlx::query("INSERT INTO patients (id, created_at_ms) VALUES ($1, $2)")
            .bind(patient.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
    let mut claims = Vec::new();
    for id in &resolution.claims {
        if claim(tx, id, patient, now_ms).await? {
            record_link(
                tx,
                Some(event_id.to_string()),
                Link::Claim { identifier: id },
                patient,
            )
            .await?;
            claims.push(view(id));
        } else if is_new && claims.is_empty() {
            // A concurrent event created this patient first: join it.
            let owner = known_identifiers(tx, std::slice::from_ref(id)).await?;
            if let Some(k) = owner.first() {
                patient = k.owner;
            }
        }
    }
    Ok((patient, claims))
}

/// Who holds each of `ids` now, in one statement per chunk: identifier → (owner,
/// whether the owner has an MRN).
async fn known_many(
    conn: &mut AnyConnection,
    ids: &[&Identifier],
) -> Result<HashMap<Identifier, (PatientId, bool)>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    for range in super::batch::pow2_chunks(ids.len(), super::batch::MAX_ROWS_PER_STATEMENT) {
        let chunk = &ids[range];
        let terms: Vec<String> = (0..chunk.len())
            .map(|i| format!("(i.kind = ${} AND i.value = ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        // Built from placeholders only; the identifiers are bound.
        let sql = format!(
            "SELECT i.kind, i.value, i.patient_id, \
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM identities m \
                         WHERE m.patient_id = i.patient_id AND m.kind = 'mrn') THEN 1 ELSE 0 END AS BIGINT) AS has_mrn \
             FROM identities i WHERE {}",
            terms.join(" OR ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.kind().as_str()).bind(id.value().to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let kind: String = row.try_get(0)?;
            let value: String = row.try_get(1)?;
            let owner: String = row.try_get(2)?;
            let has_mrn: i64 = row.try_get(3)?;
            // The stored text is the identifier's normal form: match it as asked.
            if let Some(id) = chunk
                .iter()
                .find(|id| id.kind().as_str() == kind && id.value() == value)
            {
                out.insert((*id).clone(), (parse_patient(&owner)?, has_mrn != 0));
            }
        }
    }
    Ok(out)
}

/// What `known` says of one event's identifiers, as the identity rules read it.
fn known_of(
    ids: &[Identifier],
    known: &HashMap<Identifier, (PatientId, bool)>,
) -> Vec<KnownIdentifier> {
    ids.iter()
        .filter_map(|id| {
            known.get(id).map(|(owner, has_mrn)| KnownIdentifier {
                identifier: id.clone(),
                owner: *owner,
                owner_has_mrn: *has_mrn,
            })
        })
        .collect()
}

impl Store {
    /// Resolves identifiers to a patient, creating a provisional or new patient and
    /// claiming unknown identifiers as the identity rules decide. Idempotent. With
    /// group commit, concurrent resolutions go through [`super::resolver`] together.
    #[tracing::instrument(name = "store.resolve_patient", skip_all)]
    pub async fn resolve_patient(
        &self,
        ids: &[Identifier],
        event_id: uuid::Uuid,
    ) -> Result<Resolved, StoreError> {
        if let Some(r) = self.resolver() {
            return r.resolve(ids.to_vec(), event_id).await;
        }
        self.resolve_one(ids, event_id).await
    }

    /// One event's resolution on its own (its claims in a transaction of their own).
    async fn resolve_one(
        &self,
        ids: &[Identifier],
        event_id: uuid::Uuid,
    ) -> Result<Resolved, StoreError> {
        timed("resolve_patient", async {
            let mut conn = self.pool().acquire().await?;
            let known = known_identifiers(&mut conn, ids).await?;
            drop(conn);
            let resolution = identity::resolve(ids, &known);
            if resolution.claims.is_empty() {
                if let Target::Existing(p) = resolution.target {
                    return Ok(Resolved {
                        patient: p,
                        claims: Vec::new(),
                        resolution,
                    });
                }
            }
            let now_ms = Utc::now().timestamp_millis();
            let mut tx = self.begin_write().await?;
            let (patient, claims) = claim_in(&mut tx, &resolution, event_id, now_ms).await?;
            tx.commit().await?;
            Ok(Resolved {
                patient,
                claims,
                resolution,
            })
        })
        .await
    }

    /// Resolves the identifiers of many events together: one lookup statement for
    /// all their identifiers, then one transaction for every event that claims
    /// something, in order, each seeing the claims of the ones before it (two first
    /// events of the same new caller in one batch make one patient). When that
    /// transaction fails for a non-transient reason, the claiming events are resolved
    /// one by one instead, so one bad event fails alone.
    #[tracing::instrument(name = "store.resolve_batch", skip_all, fields(events = requests.len()))]
    pub async fn resolve_batch(
        &self,
        requests: &[(Vec<Identifier>, uuid::Uuid)],
    ) -> Result<Vec<Result<Resolved, StoreError>>, StoreError> {
        timed("resolve_batch", async {
            let mut all: Vec<&Identifier> = requests.iter().flat_map(|(ids, _)| ids).collect();
            all.sort();
            all.dedup();
            let mut conn = self.pool().acquire().await?;
            let mut known = known_many(&mut conn, &all).await?;
            drop(conn);
            let mut out: Vec<Option<Result<Resolved, StoreError>>> =
                requests.iter().map(|_| None).collect();
            let mut claiming = Vec::new();
            for (i, (ids, _)) in requests.iter().enumerate() {
                let resolution = identity::resolve(ids, &known_of(ids, &known));
                match resolution.target {
                    Target::Existing(patient) if resolution.claims.is_empty() => {
                        out[i] = Some(Ok(Resolved {
                            patient,
                            claims: Vec::new(),
                            resolution,
                        }))
                    }
                    _ => claiming.push(i),
                }
            }
            if !claiming.is_empty() {
                let now_ms = Utc::now().timestamp_millis();
                let together = async {
                    let mut tx = self.begin_write().await?;
                    let mut resolved = Vec::with_capacity(claiming.len());
                    for &i in &claiming {
                        let (ids, event_id) = &requests[i];
                        let resolution = identity::resolve(ids, &known_of(ids, &known));
                        let (patient, claims) = if resolution.claims.is_empty() {
                            match resolution.target {
                                Target::Existing(p) => (p, Vec::new()),
                                Target::New => claim_in(&mut tx, &resolution, *event_id, now_ms).await?,
                            }
                        } else {
                            claim_in(&mut tx, &resolution, *event_id, now_ms).await?
                        };
                        // The next events of this batch see what this one claimed.
                        let has_mrn = claims.iter().any(|c| c.kind == IdentifierKind::Mrn)
                            || known.values().any(|(o, m)| *o == patient && *m);
                        for id in ids {
                            if let Some(k) = resolution.claims.iter().find(|c| *c == id) {
                                if claims.iter().any(|c| c.kind == k.kind() && c.value == k.value()) {
                                    known.insert(k.clone(), (patient, has_mrn));
                                }
                            }
                        }
                        if has_mrn {
                            for (o, m) in known.values_mut() {
                                if *o == patient {
                                    *m = true;
                                }
                            }
                        }
                        resolved.push(Resolved {
                            patient,
                            claims,
                            resolution,
                        });
                    }
                    tx.commit().await?;
                    Ok::<_, StoreError>(resolved)
                };
                match together.await {
                    Ok(resolved) => {
                        for (i, r) in claiming.iter().zip(resolved) {
                            out[*i] = Some(Ok(r));
                        }
                    }
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error.message = %e, events = claiming.len(), "a batch of identity claims was refused; resolving them one by one");
                        for &i in &claiming {
                            let (ids, event_id) = &requests[i];
                            out[i] = Some(self.resolve_one(ids, *event_id).await);
                        }
                    }
                }
            }
            Ok(out
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err(StoreError::Batch("no outcome".into()))))
                .collect())
        })
        .await
    }

    /// The patient holding an identifier, if any.
    #[tracing::instrument(name = "store.find_patient", skip_all, fields(identifier.kind = id.kind().as_str()))]
    pub async fn find_patient(&self, id: &Identifier) -> Result<Option<PatientId>, StoreError> {
        timed("find_patient", async {
            let mut conn = self.pool().acquire().await?;
            let known = known_identifiers(&mut conn, std::slice::from_ref(id)).await?;
            Ok(known.first().map(|k| k.owner))
        })
        .await
    }

    /// The surviving record for a patient id (following a merge), or None if unknown.
    #[tracing::instrument(name = "store.surviving_patient", skip_all, fields(patient_id = %patient))]
    pub async fn surviving_patient(
        &self,
        patient: PatientId,
    ) -> Result<Option<PatientId>, StoreError> {
        timed("surviving_patient", async {
            let row = sqlx::query("SELECT merged_into FROM patients WHERE id = $1")
                .bind(patient.to_string())
                .fetch_optional(self.pool())
                .await?;
            let Some(row) = row else { return Ok(None) };
            let merged: Option<String> = row.try_get(0)?;
            match merged {
                Some(to) => Ok(Some(parse_patient(&to)?)),
                None => Ok(Some(patient)),
            }
        })
        .await
    }

    /// Patients with a contact started since `since_ms` that has not ended or been
    /// abandoned and that routing has no record of (its route request was lost:
    /// routing reconciles them when it becomes active), as surviving records.
    #[tracing::instrument(name = "store.patients_with_open_contacts", skip_all)]
    pub async fn patients_with_open_contacts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<PatientId>, StoreError> {
        timed("patients_with_open_contacts", async {
            let rows = sqlx::query(
                "SELECT DISTINCT COALESCE(p.merged_into, e.patient_id) FROM events e \
                 JOIN patients p ON p.id = e.patient_id \
                 WHERE e.type = 'contact.started' AND e.occurred_at_ms >= $1 \
                 AND NOT EXISTS (SELECT 1 FROM events x WHERE x.contact_id = e.contact_id \
                                 AND x.type IN ('contact.ended', 'contact.abandoned')) \
                 AND NOT EXISTS (SELECT 1 FROM routing_contacts r WHERE r.contact_id = e.contact_id)",
            )
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.try_get(0)?;
                out.push(parse_patient(&id)?);
            }
            Ok(out)
        })
        .await
    }

    /// True when the patient (or a record merged into it) has an event at one of
    /// `sites`: a supervisor's site scope over patient data.
    #[tracing::instrument(name = "store.patient_seen_at_sites", skip_all, fields(patient_id = %patient))]
    pub async fn patient_seen_at_sites(
        &self,
        patient: PatientId,
        sites: &[String],
    ) -> Result<bool, StoreError> {
        if sites.is_empty() {
            return Ok(false);
        }
        timed("patient_seen_at_sites", async {
            let placeholders: Vec<String> =
                (0..sites.len()).map(|i| format!("${}", i + 2)).collect();
            // Built from placeholders only; the sites are bound.
            // Two indexed branches (the patient's own events, then its merged
            // records'), as `load_journey` reads them: an `OR ... IN (subquery)`
            // makes PostgreSQL scan the whole events table.
            let list = placeholders.join(", ");
            let sql = format!(
                "SELECT 1 FROM events WHERE patient_id = $1 AND site IN ({list}) \
                 UNION ALL \
                 SELECT 1 FROM patients p JOIN events e ON e.patient_id = p.id \
                 WHERE p.merged_into = $1 AND e.site IN ({list}) LIMIT 1"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(patient.to_string());
            for site in sites {
                q = q.bind(site.clone());
            }
            Ok(q.fetch_optional(self.pool()).await?.is_some())
        })
        .await
    }

    /// True when the patient (or a record merged into it) has an appointment at one of
    /// `sites` (`*`: any) in one of `departments` (lower-cased) whose latest status is
    /// not cancelled: a clinician's treatment relationship.
    #[tracing::instrument(name = "store.patient_has_appointment_in", skip_all, fields(patient_id = %patient))]
    pub async fn patient_has_appointment_in(
        &self,
        patient: PatientId,
        sites: &[String],
        departments: &[String],
    ) -> Result<bool, StoreError> {
        if sites.is_empty() || departments.is_empty() {
            return Ok(false);
        }
        timed("patient_has_appointment_in", async {
            let all_sites = sites.iter().any(|s| s == "*");
            let site_filter = if all_sites {
                String::new()
            } else {
                let placeholders: Vec<String> =
                    (0..sites.len()).map(|i| format!("${}", i + 2)).collect();
                format!(" AND e.site IN ({})", placeholders.join(", "))
            };
            // Two indexed branches, as in `patient_seen_at_sites`.
            let sql = format!(
                "SELECT e.site, e.type, e.body, e.seq FROM events e \
                 WHERE e.patient_id = $1 AND e.type LIKE 'appointment.%'{site_filter} \
                 UNION ALL \
                 SELECT e.site, e.type, e.body, e.seq FROM patients p JOIN events e ON e.patient_id = p.id \
                 WHERE p.merged_into = $1 AND e.type LIKE 'appointment.%'{site_filter} \
                 ORDER BY 4"
            );
            // Built from placeholders only; the sites are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(patient.to_string());
            if !all_sites {
                for site in sites {
                    q = q.bind(site.clone());
                }
            }
            let rows = q.fetch_all(self.pool()).await?;
            let mut appointments = Vec::with_capacity(rows.len());
            for r in rows {
                let site: String = r.try_get(0)?;
                let event_type: String = r.try_get(1)?;
                let body: String = r.try_get(2)?;
                let body: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|_| StoreError::Corrupt("stored event is not JSON".into()))?;
                let field = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
                appointments.push(crate::auth::AppointmentFact {
                    key: format!("{site}/{}", field("appointment_id").unwrap_or_default()),
                    cancelled: event_type == "appointment.cancelled",
                    department: field("department"),
                });
            }
            Ok(crate::auth::in_departments(&appointments, departments))
        })
        .await
    }

    /// Events stored for a patient (its own log only; tests and drills count with it).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn count_events(&self, patient: Option<PatientId>) -> Result<i64, StoreError> {
        let row = match patient {
            Some(p) => {
                sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE patient_id = $1")
                    .bind(p.to_string())
                    .fetch_one(self.pool())
                    .await?
            }
            None => {
                sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM events")
                    .fetch_one(self.pool())
                    .await?
            }
        };
        Ok(row.try_get(0)?)
    }

    /// The whole event log in store order as (patient id, event id): drills compare it
    /// with what they published (lost, duplicated, out of order).
    #[cfg(any(test, feature = "test-util"))]
    #[tracing::instrument(name = "store.event_log", skip_all)]
    pub async fn event_log(&self) -> Result<Vec<(String, String)>, StoreError> {
        timed("event_log", async {
            let rows = sqlx::query("SELECT patient_id, id FROM events ORDER BY seq")
                .fetch_all(self.pool())
                .await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
        .await
    }

    /// Every event id with the time it was stored (ms since the epoch): the broker
    /// benchmark measures publish-to-stored latency with it.
    #[cfg(any(test, feature = "test-util"))]
    #[tracing::instrument(name = "store.event_receipts", skip_all)]
    pub async fn event_receipts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        timed("event_receipts", async {
            let rows = sqlx::query("SELECT id, received_at_ms FROM events ORDER BY seq")
                .fetch_all(self.pool())
                .await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
        .await
    }

    /// Loads the log of a patient and of every record merged into it.
    #[tracing::instrument(name = "store.load_journey", skip_all, fields(patient_id = %patient))]
    pub async fn load_journey(&self, patient: PatientId) -> Result<StoredJourney, StoreError> {
        timed("load_journey", async {
            let pid = patient.to_string();
            // Three independent reads, run at once on the pool (one round trip of
            // latency instead of three). The events of merged records are a second
            // indexed branch: `patient_id = $1 OR patient_id IN (subquery)` made
            // PostgreSQL scan the whole events table (8.8 s at 6,000,000 events,
            // EXPLAIN ANALYZE in docs/benchmarks.md).
            let merged = sqlx::query("SELECT id FROM patients WHERE merged_into = $1 ORDER BY id")
                .bind(pid.clone())
                .fetch_all(self.pool());
            let ids = sqlx::query("SELECT kind, value FROM identities WHERE patient_id = $1")
                .bind(pid.clone())
                .fetch_all(self.pool());
            let evs = sqlx::query(
                "SELECT seq, body FROM events WHERE patient_id = $1 \
                 UNION ALL \
                 SELECT e.seq, e.body FROM patients p JOIN events e ON e.patient_id = p.id \
                 WHERE p.merged_into = $1 \
                 ORDER BY seq",
            )
            .bind(pid)
            .fetch_all(self.pool());
            let (merged_rows, id_rows, rows) =
                futures_util::future::try_join3(merged, ids, evs).await?;
            let mut merged_from = Vec::with_capacity(merged_rows.len());
            for r in merged_rows {
                let id: String = r.try_get(0)?;
                merged_from.push(parse_patient(&id)?);
            }
            let mut identifiers = Vec::with_capacity(id_rows.len());
            for r in id_rows {
                let kind: String = r.try_get(0)?;
                let value: String = r.try_get(1)?;
                let kind = IdentifierKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt("unknown identifier kind".into()))?;
                identifiers.push(IdentifierView { kind, value });
            }
            let mut events = Vec::with_capacity(rows.len());
            for r in rows {
                let seq: i64 = r.try_get(0)?;
                let body: String = r.try_get(1)?;
                let e = Envelope::from_stored(&body).map_err(|e| {
                    StoreError::Corrupt(format!("stored event does not parse: {e}"))
                })?;
                events.push((u64::try_from(seq).unwrap_or_default(), Arc::new(e)));
            }
            Ok(StoredJourney {
                identifiers,
                merged_from,
                events,
            })
        })
        .await
    }

    /// Appends an event to a patient's log with its identity effects, atomically.
    #[tracing::instrument(name = "store.append_event", skip_all, fields(patient_id = %patient, event.id = %event.id, event.type = event.type_label()))]
    pub async fn append_event(
        &self,
        patient: PatientId,
        event: &Envelope,
        effects: &Effects,
    ) -> Result<AppendOutcome, StoreError> {
        timed("append_event", async {
            let partition = patient.partition(self.partitions());
            let fence = self.partition_fence(partition)?;
            let mut tx = self.begin_write().await?;
            if let Some(f) = &fence {
                super::cluster::check_fence(&mut tx, f).await?;
            }
            let outcome = append_in(&mut tx, patient, event, effects, partition).await?;
            if matches!(outcome, AppendOutcome::Stored { .. }) {
                tx.commit().await?;
                crate::outreach::observe_stored(event, &effects.outreach);
                if !effects.commands.is_empty() {
                    self.outbox_written().notify_one();
                }
            } else {
                tx.rollback().await?;
            }
            Ok(outcome)
        })
        .await
    }

    /// Appends several events in one transaction (group commit): one multi-row
    /// statement per table for the whole batch (the merged-record check, the events
    /// with `ON CONFLICT DO NOTHING ... RETURNING` naming the duplicates as a set, the
    /// outbox rows). A batch holding an `identity.linked` (which merges records other
    /// events of the batch may belong to), or one whose whole-batch statement the
    /// store refused, is written event by event instead, each in its own savepoint: a
    /// duplicate, a moved patient or a non-transient error then undoes only its own
    /// event. A transient error fails the whole batch (nothing committed; every
    /// caller retries). Outcomes are known only once the batch committed. In a
    /// cluster, the events of a partition this node no longer holds are refused
    /// (`Fenced`) and the others are written.
    #[tracing::instrument(name = "store.append_batch", skip_all, fields(events = jobs.len()))]
    pub async fn append_batch(
        &self,
        jobs: &[(PatientId, Arc<Envelope>, Effects)],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        timed("append_batch", async {
            let links = jobs
                .iter()
                .any(|(_, e, _)| matches!(e.kind, EventKind::IdentityLinked));
            if !links {
                match self.append_whole_batch(jobs).await {
                    Err(e) if !e.is_transient() => {
                        tracing::warn!(error.message = %e, events = jobs.len(), "a whole-batch statement was refused; writing the batch event by event");
                    }
                    other => return other,
                }
            }
            self.append_each(jobs).await
        })
        .await
    }

    /// Checks each partition's fence once, first: the lease rows stay locked
    /// (shared) until the batch commits, so no takeover lands in the middle of it.
    /// In lease-name order, as the renewal locks them (no deadlock). True: refused.
    async fn batch_fences(
        &self,
        tx: &mut AnyConnection,
        jobs: &[(PatientId, Arc<Envelope>, Effects)],
    ) -> Result<std::collections::BTreeMap<u32, bool>, StoreError> {
        let mut partitions: Vec<u32> = jobs
            .iter()
            .map(|(patient, _, _)| patient.partition(self.partitions()))
            .collect();
        partitions.sort_by_key(|p| crate::cluster::partition_lease(*p));
        partitions.dedup();
        let mut fenced = std::collections::BTreeMap::new();
        for p in partitions {
            let ok = match self.partition_fence(p) {
                Ok(None) => true,
                Ok(Some(f)) => match super::cluster::check_fence(&mut *tx, &f).await {
                    Ok(()) => true,
                    Err(StoreError::Fenced(_)) => false,
                    Err(e) => return Err(e),
                },
                Err(_) => false,
            };
            fenced.insert(p, !ok);
        }
        Ok(fenced)
    }

    /// The whole batch in one statement per table (no `identity.linked` in it).
    async fn append_whole_batch(
        &self,
        jobs: &[(PatientId, Arc<Envelope>, Effects)],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let fenced = self.batch_fences(&mut tx, jobs).await?;
        let mut out: Vec<Option<Result<AppendOutcome, StoreError>>> =
            jobs.iter().map(|_| None).collect();
        for (slot, (patient, _, _)) in out.iter_mut().zip(jobs) {
            let partition = patient.partition(self.partitions());
            if fenced.get(&partition).copied().unwrap_or(false) {
                *slot = Some(Err(StoreError::Fenced(crate::cluster::partition_lease(
                    partition,
                ))));
            }
        }
        // Records merged into another: their events go to the survivor (Moved).
        let mut patients: Vec<PatientId> = jobs
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|((p, _, _), _)| *p)
            .collect();
        patients.sort();
        patients.dedup();
        let merged = merged_into_of(&mut tx, &patients).await?;
        // The same id twice in one batch: the first is the one stored.
        let mut seen = std::collections::HashSet::new();
        let mut to_insert = Vec::new();
        for (i, (slot, (patient, event, _))) in out.iter_mut().zip(jobs).enumerate() {
            if slot.is_some() {
                continue;
            }
            if let Some(to) = merged.get(patient) {
                *slot = Some(Ok(AppendOutcome::Moved { to: *to }));
            } else if !seen.insert(event.id) {
                *slot = Some(Ok(AppendOutcome::Duplicate));
            } else {
                to_insert.push(i);
            }
        }
        let received_ms = Utc::now().timestamp_millis();
        let mut seqs: std::collections::HashMap<String, i64> =
            std::collections::HashMap::with_capacity(to_insert.len());
        for range in
            super::batch::pow2_chunks(to_insert.len(), super::batch::MAX_ROWS_PER_STATEMENT)
        {
            let chunk = &to_insert[range];
            let sql = super::batch::multi_row_sql(
                "INSERT INTO events (id, patient_id, type, channel, site, contact_id, occurred_at_ms, received_at_ms, body)",
                9,
                chunk.len(),
                "ON CONFLICT (id) DO NOTHING RETURNING id, seq",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &i in chunk {
                let (patient, event, _) = &jobs[i];
                q = bind_event(q, *patient, event, received_ms);
            }
            for row in q.fetch_all(&mut *tx).await? {
                seqs.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        let mut commands = Vec::new();
        let mut outreach = Vec::new();
        let mut stored = Vec::new();
        for &i in &to_insert {
            let (patient, event, effects) = &jobs[i];
            match seqs.get(&event.id.to_string()) {
                None => out[i] = Some(Ok(AppendOutcome::Duplicate)),
                Some(seq) => {
                    let partition = patient.partition(self.partitions());
                    commands.extend(effects.commands.iter().map(|c| (c, Some(partition))));
                    if !effects.outreach.is_empty() {
                        outreach.push((*patient, partition, &effects.outreach));
                    }
                    stored.push((event, &effects.outreach));
                    out[i] = Some(Ok(AppendOutcome::Stored {
                        seq: u64::try_from(*seq).unwrap_or_default(),
                        relinked: Vec::new(),
                    }));
                }
            }
        }
        super::outbox::insert_command_rows(&mut tx, &commands).await?;
        super::outreach::write_changes_of_batch(&mut tx, &outreach).await?;
        tx.commit().await?;
        for (event, changes) in stored {
            crate::outreach::observe_stored(event, changes);
        }
        if !commands.is_empty() {
            self.outbox_written().notify_one();
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Batch("no outcome".into()))))
            .collect())
    }

    /// The batch event by event, each in its own savepoint.
    async fn append_each(
        &self,
        jobs: &[(PatientId, Arc<Envelope>, Effects)],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let fenced = self.batch_fences(&mut tx, jobs).await?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut wrote_commands = false;
        let mut stored = Vec::new();
        for (patient, event, effects) in jobs {
            let partition = patient.partition(self.partitions());
            if fenced.get(&partition).copied().unwrap_or(false) {
                out.push(Err(StoreError::Fenced(crate::cluster::partition_lease(
                    partition,
                ))));
                continue;
            }
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            match append_in(&mut sp, *patient, event, effects, partition).await {
                Ok(o @ AppendOutcome::Stored { .. }) => {
                    sp.commit().await?;
                    wrote_commands |= !effects.commands.is_empty();
                    stored.push((event, &effects.outreach));
                    out.push(Ok(o));
                }
                Ok(o) => {
                    sp.rollback().await?;
                    out.push(Ok(o));
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    sp.rollback().await?;
                    out.push(Err(e));
                }
            }
        }
        tx.commit().await?;
        for (event, changes) in stored {
            crate::outreach::observe_stored(event, changes);
        }
        if wrote_commands {
            self.outbox_written().notify_one();
        }
        Ok(out)
    }
}

/// The survivor of each of `patients` that was merged into another record.
async fn merged_into_of(
    conn: &mut AnyConnection,
    patients: &[PatientId],
) -> Result<std::collections::HashMap<PatientId, PatientId>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for range in super::batch::pow2_chunks(patients.len(), super::batch::MAX_ROWS_PER_STATEMENT) {
        let chunk = &patients[range];
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        // Built from placeholders only; the ids are bound.
        let sql = format!(
            "SELECT id, merged_into FROM patients WHERE merged_into IS NOT NULL AND id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q.bind(p.to_string());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let id: String = row.try_get(0)?;
            let to: String = row.try_get(1)?;
            out.insert(parse_patient(&id)?, parse_patient(&to)?);
        }
    }
    Ok(out)
}

/// A query on either backend, as sqlx's `Any` driver builds it.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds one `events` row, in the column order `id, patient_id, type, channel, site,
/// contact_id, occurred_at_ms, received_at_ms, body`.
pub(crate) fn bind_event<'q>(
    q: AnyQuery<'q>,
    patient: PatientId,
    event: &Envelope,
    received_ms: i64,
) -> AnyQuery<'q> {
    q.bind(event.id.to_string())
        .bind(patient.to_string())
        .bind(event.event_type.clone())
        .bind(event.channel.as_str())
        .bind(event.site.to_string())
        .bind(event.contact_id.as_ref().map(|c| c.to_string()))
        .bind(millis(event.occurred_at))
        .bind(received_ms)
        .bind(event.to_json())
}

/// One event appended inside an open transaction; the caller commits it only when
/// the outcome is `Stored` (otherwise it rolls back: nothing half-stored).
async fn append_in(
    conn: &mut AnyConnection,
    patient: PatientId,
    event: &Envelope,
    effects: &Effects,
    partition: u32,
) -> Result<AppendOutcome, StoreError> {
    let seq = bind_event(
        sqlx::query(
            "INSERT INTO events (id, patient_id, type, channel, site, contact_id, occurred_at_ms, received_at_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING RETURNING seq",
        ),
        patient,
        event,
        Utc::now().timestamp_millis(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(seq) = seq else {
        return Ok(AppendOutcome::Duplicate);
    };
    let seq: i64 = seq.try_get(0)?;
    let merged_into: Option<Option<String>> =
        sqlx::query("SELECT merged_into FROM patients WHERE id = $1")
            .bind(patient.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    if let Some(Some(to)) = merged_into {
        return Ok(AppendOutcome::Moved {
            to: parse_patient(&to)?,
        });
    }
    let mut relinked = Vec::new();
    if matches!(event.kind, EventKind::IdentityLinked) {
        relinked = link_identities(conn, patient, event).await?;
    }
    super::outbox::insert_commands(conn, &effects.commands, Some(partition)).await?;
    super::outreach::write_changes(conn, patient, partition, &effects.outreach).await?;
    Ok(AppendOutcome::Stored {
        seq: u64::try_from(seq).unwrap_or_default(),
        relinked,
    })
}

/// Applies an explicit `identity.linked` to `target` inside the event's transaction.
async fn link_identities(
    tx: &mut AnyConnection,
    target: PatientId,
    event: &Envelope,
) -> Result<Vec<PatientId>, StoreError> {
    let ids = event
        .patient
        .as_ref()
        .map(|p| p.to_list())
        .unwrap_or_default();
    let now_ms = Utc::now().timestamp_millis();
    let event_id = Some(event.id.to_string());
    for id in &ids {
        if claim(tx, id, target, now_ms).await? {
            record_link(tx, event_id.clone(), Link::Claim { identifier: id }, target).await?;
        }
    }
    let known = known_identifiers(tx, &ids).await?;
    let mut relinked = Vec::new();
    for action in identity::plan_link(target, &known) {
        match action {
            LinkAction::Merge { from } => {
                sqlx::query(
                    "UPDATE patients SET merged_into = $1 WHERE id = $2 OR merged_into = $2",
                )
                .bind(target.to_string())
                .bind(from.to_string())
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE identities SET patient_id = $1 WHERE patient_id = $2")
                    .bind(target.to_string())
                    .bind(from.to_string())
                    .execute(&mut *tx)
                    .await?;
                record_link(tx, event_id.clone(), Link::Merge { from }, target).await?;
                relinked.push(from);
            }
            LinkAction::Move { identifier, from } => {
                sqlx::query("UPDATE identities SET patient_id = $1, linked_at_ms = $2 WHERE kind = $3 AND value = $4")
                    .bind(target.to_string())
                    .bind(now_ms)
                    .bind(identifier.kind().as_str())
                    .bind(identifier.value().to_string())
                    .execute(&mut *tx)
                    .await?;
                record_link(
                    tx,
                    event_id.clone(),
                    Link::Move {
                        identifier: &identifier,
                        from,
                    },
                    target,
                )
                .await?;
                relinked.push(from);
            }
        }
    }
    relinked.dedup();
    Ok(relinked)
}

/// A store error as the actors' port sees it (kept as its source).
pub(crate) fn port_error(e: StoreError) -> PortError {
    match e {
        StoreError::Fenced(lease) => PortError::Fenced(lease),
        e if e.is_transient() => PortError::unavailable(e),
        e => PortError::rejected(e),
    }
}

impl JourneyStore for Store {
    fn load_journey(
        &self,
        patient: PatientId,
    ) -> BoxFuture<'static, Result<StoredJourney, PortError>> {
        let store = self.clone();
        Box::pin(async move { store.load_journey(patient).await.map_err(port_error) })
    }

    fn append_event(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        effects: Effects,
    ) -> BoxFuture<'static, Result<AppendOutcome, PortError>> {
        let store = self.clone();
        Box::pin(async move {
            match store.writer() {
                Some(w) => w.append(patient, event, effects).await,
                None => store.append_event(patient, &event, &effects).await,
            }
            .map_err(port_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_error_keeps_the_store_error_as_its_source() {
        let e = port_error(StoreError::Corrupt("event 7".into()));
        assert!(matches!(e, PortError::Rejected(_)));
        let source = std::error::Error::source(&e).expect("the store's error is kept");
        assert_eq!(source.to_string(), "stored data is unreadable: event 7");
        let batch = port_error(StoreError::Batch("lost".into()));
        assert!(matches!(batch, PortError::Unavailable(_)));
        // Through the ingest boundary, the chain is whole.
        let ingest =
            crate::ingest::IngestError::from(frontdoor_actors::patient::PatientError::Store(e));
        let chain: Vec<String> =
            std::iter::successors(Some(&ingest as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .map(|e| e.to_string())
            .collect();
        assert_eq!(chain.len(), 4, "{chain:?}");
        assert!(matches!(ingest, crate::ingest::IngestError::Rejected(_)));
        assert_eq!(chain[3], "stored data is unreadable: event 7");
    }
}
