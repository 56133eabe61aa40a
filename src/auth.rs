//! Who is calling: principals, their roles and site scopes, found by the SHA-256 of
//! the bearer token they present.
//!
//! Tokens are never stored: configuration and the principals file hold only the
//! hex SHA-256 of each token. A fast hash is adequate here (and a password hash such
//! as Argon2 is not needed) because tokens are machine-generated with at least 128
//! bits of entropy: no dictionary exists to try, and a preimage search on 2^128
//! candidates is infeasible at any hash speed. Slow hashes exist to protect
//! low-entropy human passwords. A hash-map lookup by digest also means the presented
//! token is never compared byte by byte with a stored secret (no timing oracle).
//!
//! Agents' access to patient data also depends on routing state, asked through the
//! [`AssignmentCheck`] port.
//!
//! Rotation without restart: the principals file is re-read on SIGHUP and whenever
//! its modification time changes (polled every `reload_interval_secs`). A principal
//! may be listed with two tokens during a rotation window. A file that fails to
//! parse is refused as a whole and the previous set stays in force.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use frontdoor_actors::ids::{PatientId, SiteId};
use frontdoor_actors::ports::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::configuration::{Environment, PrincipalEntry, SecuritySettings};
use crate::metrics as m;

/// What a principal may do, in broad strokes (the route table refines it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A channel adapter: posts events, nothing else.
    Adapter,
    /// A front-line agent: its own state; a patient's context only while holding one
    /// of that patient's contacts.
    Agent,
    /// A supervisor: queues, agents and contacts of its sites; patient context with a
    /// stated reason.
    Supervisor,
    /// Everything, including the audit log.
    Admin,
    /// A monitoring system: readiness and metrics only.
    Monitor,
    /// A clinician (a specialist's office, a physician): reads the context of patients
    /// with an appointment in its departments at its sites, for treatment.
    Clinician,
    /// A virtual agent (IVA, chat or SMS bot): answers one routine intent at a time
    /// for the patient of a contact open on a bot channel at its sites, nothing else.
    Bot,
}

impl Role {
    /// Every role (the role matrix test walks these).
    pub const ALL: [Role; 7] = [
        Role::Adapter,
        Role::Agent,
        Role::Supervisor,
        Role::Admin,
        Role::Monitor,
        Role::Clinician,
        Role::Bot,
    ];

    /// The role's name (a bounded metric label, and what the audit log records).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Adapter => "adapter",
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Monitor => "monitor",
            Role::Clinician => "clinician",
            Role::Bot => "bot",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id: the agent id for agents, a system name for adapters. Staff and
    /// system ids, never patient data; recorded in the audit log.
    pub id: String,
    /// The role.
    pub role: Role,
    /// Sites the principal acts for; `*` means all.
    pub sites: Vec<String>,
    /// Clinicians: the departments whose patients it treats (lower-cased).
    pub departments: Vec<String>,
}

impl Principal {
    /// True when `department` is one of the principal's (case-insensitive).
    pub fn covers_department(&self, department: &str) -> bool {
        let d = department.trim().to_lowercase();
        self.departments.contains(&d)
    }

    /// True when the principal may act for `site`.
    pub fn covers_site(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == "*" || s == site)
    }

    /// True when the principal's scope is every site.
    pub fn all_sites(&self) -> bool {
        self.sites.iter().any(|s| s == "*")
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("sites", &self.sites)
            .field("departments", &self.departments)
            .finish()
    }
}

/// What the HTTP layer asks routing about agents: whether an agent holds one of a
/// patient's contacts (offered to it or assigned to it) right now, the
/// minimum-necessary rule for agents; and where routing has the agent, which the
/// caller's sites must cover. Routing implements it; the HTTP layer only asks.
pub trait AssignmentCheck: Send + Sync {
    /// True while a contact of `patient` is offered or assigned to `agent_id`.
    fn agent_holds_patient(&self, agent_id: &str, patient: PatientId) -> BoxFuture<'static, bool>;

    /// The site routing has the agent at now (None: never announced).
    fn agent_site(&self, agent_id: &str) -> BoxFuture<'static, Option<SiteId>>;
}

/// One appointment event of a patient, as the clinician rule reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentFact {
    /// The appointment (site and id): later events of the same key win.
    pub key: String,
    /// True when this event cancelled it.
    pub cancelled: bool,
    /// The department the event names, if any (later events keep an earlier one).
    pub department: Option<String>,
}

/// The clinician rule: true when, folding `facts` in store order, some appointment is
/// not cancelled and its department is one of `departments` (lower-cased).
pub fn in_departments(facts: &[AppointmentFact], departments: &[String]) -> bool {
    let mut by_key: HashMap<&str, (bool, Option<&str>)> = HashMap::new();
    for f in facts {
        let entry = by_key.entry(f.key.as_str()).or_insert((false, None));
        entry.0 = f.cancelled;
        if let Some(d) = f.department.as_deref() {
            entry.1 = Some(d);
        }
    }
    by_key.values().any(|(cancelled, department)| {
        !cancelled
            && department.is_some_and(|d| {
                let d = d.trim().to_lowercase();
                departments.contains(&d)
            })
    })
}

/// The hex SHA-256 of a token (what configuration stores).
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Why a principal set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalsError {
    /// The file could not be read.
    #[error("cannot read the principals file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not valid TOML of the expected shape.
    #[error("the principals file is invalid: {0}")]
    Parse(String),
    /// An entry is unusable.
    #[error("principal {id}: {reason}")]
    Invalid { id: String, reason: &'static str },
    /// Production refuses a token whose value is published (the development tokens).
    #[error("principal {id}: its token is a published development token, refused in production")]
    DevelopmentToken { id: String },
    /// Production refuses a principal set that is empty: such a server refuses everyone.
    #[error("no principals configured (security.principals_file and security.principals are empty): a production server would refuse every request")]
    NoneInProduction,
}

/// The digests of the development tokens published in
/// `config/principals.local.toml` (`<id>-local-token`): production refuses them.
fn development_digests() -> &'static HashSet<[u8; 32]> {
    static DIGESTS: OnceLock<HashSet<[u8; 32]>> = OnceLock::new();
    DIGESTS.get_or_init(|| {
        toml_from_str(include_str!("../config/principals.local.toml"))
            .map(|f| f.principal)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let mut d = [0u8; 32];
                hex::decode_to_slice(e.token_sha256.trim(), &mut d).ok()?;
                Some(d)
            })
            .collect()
    })
}

/// The principals file: `[[principal]]` tables.
#[derive(Debug, Deserialize)]
struct PrincipalsFile {
    /// The `[[principal]]` entries.
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

fn index(
    entries: &[PrincipalEntry],
    environment: Environment,
) -> Result<HashMap<[u8; 32], Principal>, PrincipalsError> {
    let mut out = HashMap::with_capacity(entries.len());
    for e in entries {
        let invalid = |reason| PrincipalsError::Invalid {
            id: e.id.clone(),
            reason,
        };
        if e.id.trim().is_empty() || e.id.len() > 128 {
            return Err(invalid("id must be 1 to 128 characters"));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(e.token_sha256.trim(), &mut digest)
            .map_err(|_| invalid("token_sha256 must be 64 hex characters"))?;
        if environment == Environment::Production && development_digests().contains(&digest) {
            return Err(PrincipalsError::DevelopmentToken { id: e.id.clone() });
        }
        if e.sites.is_empty() {
            return Err(invalid("sites must name at least one site, or \"*\""));
        }
        if e.role == Role::Clinician && e.departments.is_empty() {
            return Err(invalid("a clinician must name at least one department"));
        }
        let principal = Principal {
            id: e.id.clone(),
            role: e.role,
            sites: e.sites.clone(),
            departments: e
                .departments
                .iter()
                .map(|d| d.trim().to_lowercase())
                .collect(),
        };
        if out.insert(digest, principal).is_some() {
            return Err(invalid("the same token hash is listed twice"));
        }
    }
    Ok(out)
}

/// The principals in force (cheap to clone; reloads are visible to every clone).
#[derive(Clone)]
pub struct Principals {
    /// Digest → principal.
    by_digest: Arc<RwLock<HashMap<[u8; 32], Principal>>>,
    /// Principals from configuration (always in force, merged with the file's).
    inline: Arc<Vec<PrincipalEntry>>,
    /// The principals file, if configured.
    file: Option<PathBuf>,
    /// Production refuses the published development tokens, at start and on reload.
    environment: Environment,
}

impl fmt::Debug for Principals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principals")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Principals {
    /// Loads the configured principals (inline and file). In production a published
    /// development token is refused (one error line names the principal).
    pub fn load(
        settings: &SecuritySettings,
        environment: Environment,
    ) -> Result<Principals, PrincipalsError> {
        let file = settings
            .principals_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
            .cloned();
        let p = Principals {
            by_digest: Arc::new(RwLock::new(HashMap::new())),
            inline: Arc::new(settings.principals.clone()),
            file,
            environment,
        };
        if let Err(e) = p.reload() {
            if let PrincipalsError::DevelopmentToken { id } = &e {
                tracing::error!(principal.id = %id, "refusing to start: a principal holds a published development token in production; give it a token of its own");
            }
            return Err(e);
        }
        if p.by_digest.read().map(|m| m.is_empty()).unwrap_or(false) {
            tracing::warn!("no principals configured: every request that needs a token is refused (see docs/security.md)");
        }
        Ok(p)
    }

    /// Re-reads the principals file; on error the previous set stays in force.
    pub fn reload(&self) -> Result<usize, PrincipalsError> {
        let mut entries: Vec<PrincipalEntry> = self.inline.as_ref().clone();
        if let Some(path) = &self.file {
            entries.extend(read_file(path)?);
        }
        let fresh = index(&entries, self.environment)?;
        let n = fresh.len();
        if n == 0 && self.environment == Environment::Production {
            return Err(PrincipalsError::NoneInProduction);
        }
        // unwrap: the lock is only held for a swap or a lookup, neither of which panics.
        *self.by_digest.write().unwrap() = fresh;
        metrics::gauge!(m::PRINCIPALS).set(n as f64);
        Ok(n)
    }

    /// The principal holding `token`, if any.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // unwrap: see `reload`.
        self.by_digest.read().unwrap().get(&digest).cloned()
    }

    /// Re-reads the principals (SIGHUP, or a change of the file), logging and
    /// counting the outcome; on error the previous set stays in force.
    pub fn reload_logged(&self, trigger: &'static str) {
        match self.reload() {
            Ok(n) => {
                metrics::counter!(m::PRINCIPAL_RELOADS_TOTAL, "outcome" => "ok").increment(1);
                tracing::info!(principals = n, trigger, "principals reloaded");
            }
            Err(e) => {
                metrics::counter!(m::PRINCIPAL_RELOADS_TOTAL, "outcome" => "error").increment(1);
                tracing::error!(error.message = %e, trigger, "principals file refused; the previous set stays in force");
            }
        }
    }

    /// Watches the principals file's modification time every `interval` and
    /// reloads when it changes (SIGHUP is the runtime's one signal listener's job).
    /// Runs until dropped; the runtime runs it under its supervisor.
    pub async fn watch_file(self, interval: Duration) -> anyhow::Result<()> {
        let Some(path) = self.file.clone() else {
            return std::future::pending().await;
        };
        let mut last = modified(&path);
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(50)));
        loop {
            tick.tick().await;
            let now = modified(&path);
            if now != last {
                last = now;
                self.reload_logged("file changed");
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_file(path: &Path) -> Result<Vec<PrincipalEntry>, PrincipalsError> {
    let text = std::fs::read_to_string(path)?;
    let parsed: PrincipalsFile = toml_from_str(&text)?;
    Ok(parsed.principal)
}

fn toml_from_str(text: &str) -> Result<PrincipalsFile, PrincipalsError> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| PrincipalsError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, role: Role, token: &str) -> PrincipalEntry {
        PrincipalEntry {
            id: id.into(),
            role,
            sites: vec!["north".into()],
            departments: Vec::new(),
            token_sha256: token_digest(token),
        }
    }

    impl Principals {
        fn load_local(settings: &SecuritySettings) -> Result<Principals, PrincipalsError> {
            Principals::load(settings, Environment::Local)
        }
    }

    #[test]
    fn production_refuses_every_published_development_token_and_local_takes_them() {
        for who in [
            "dev-admin",
            "dev-adapter",
            "dev-agent",
            "dev-supervisor",
            "dev-monitor",
        ] {
            let token = format!("{who}-local-token");
            let s = settings(vec![entry(who, Role::Admin, &token)], None);
            match Principals::load(&s, Environment::Production) {
                Err(PrincipalsError::DevelopmentToken { id }) => assert_eq!(id, who),
                other => panic!("{who}: expected a refusal, got {other:?}"),
            }
            assert!(Principals::load(&s, Environment::Local).is_ok(), "{who}");
        }
        let own = settings(vec![entry("ops", Role::Admin, "a-token-of-its-own")], None);
        assert!(Principals::load(&own, Environment::Production).is_ok());
    }

    #[test]
    fn production_refuses_to_start_or_reload_with_no_principals() {
        let none = settings(Vec::new(), None);
        assert!(matches!(
            Principals::load(&none, Environment::Production),
            Err(PrincipalsError::NoneInProduction)
        ));
        assert!(Principals::load(&none, Environment::Local).is_ok());
        // A principals file emptied later is refused too; the old set stays.
        let dir = std::env::temp_dir().join(format!("fd-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("principals.toml");
        std::fs::write(
            &file,
            format!(
                "[[principal]]\nid = \"ops\"\nrole = \"admin\"\nsites = [\"*\"]\ntoken_sha256 = \"{}\"\n",
                token_digest("an-ops-token-of-its-own")
            ),
        )
        .unwrap();
        let p = Principals::load(
            &settings(Vec::new(), Some(file.clone())),
            Environment::Production,
        )
        .expect("one principal");
        std::fs::write(&file, "# emptied\n").unwrap();
        assert!(matches!(p.reload(), Err(PrincipalsError::NoneInProduction)));
        assert!(p.authenticate("an-ops-token-of-its-own").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn settings(entries: Vec<PrincipalEntry>, file: Option<PathBuf>) -> SecuritySettings {
        SecuritySettings {
            principals: entries,
            principals_file: file,
            ..SecuritySettings::default()
        }
    }

    #[test]
    fn a_token_authenticates_by_its_digest_and_an_unknown_one_does_not() {
        let p = Principals::load_local(&settings(
            vec![entry(
                "agent-7",
                Role::Agent,
                "tok-agent-7-abcdefghijklmnop",
            )],
            None,
        ))
        .unwrap();
        let who = p.authenticate("tok-agent-7-abcdefghijklmnop").unwrap();
        assert_eq!((who.id.as_str(), who.role), ("agent-7", Role::Agent));
        assert!(p.authenticate("tok-agent-7-abcdefghijklmnoq").is_none());
        assert!(p.authenticate("").is_none());
    }

    #[test]
    fn a_clinician_needs_departments_and_matches_them_in_any_case() {
        let mut c = entry("dr-lee", Role::Clinician, "tok-dr-lee-abcdefghijklmnop");
        assert!(Principals::load(&settings(vec![c.clone()], None), Environment::Local).is_err());
        c.departments = vec![" Dermatology ".into()];
        let p = Principals::load(&settings(vec![c], None), Environment::Local).unwrap();
        let who = p.authenticate("tok-dr-lee-abcdefghijklmnop").unwrap();
        assert!(who.covers_department("DERMATOLOGY"));
        assert!(!who.covers_department("cardiology"));
    }

    #[test]
    fn a_clinician_treats_patients_with_a_live_appointment_in_its_department() {
        let fact = |key: &str, cancelled, department: Option<&str>| AppointmentFact {
            key: key.into(),
            cancelled,
            department: department.map(str::to_string),
        };
        let derm = vec!["dermatology".to_string()];
        assert!(in_departments(
            &[fact("n/a1", false, Some("Dermatology"))],
            &derm
        ));
        assert!(!in_departments(
            &[fact("n/a1", false, Some("cardiology"))],
            &derm
        ));
        // Cancelled later (the cancellation need not repeat the department): no.
        let cancelled = [
            fact("n/a1", false, Some("dermatology")),
            fact("n/a1", true, None),
        ];
        assert!(!in_departments(&cancelled, &derm));
        // Re-booked after the cancellation: yes again.
        let rebooked = [
            fact("n/a1", false, Some("dermatology")),
            fact("n/a1", true, None),
            fact("n/a1", false, None),
        ];
        assert!(in_departments(&rebooked, &derm));
    }

    #[test]
    fn a_malformed_hash_or_a_duplicate_token_is_refused() {
        let mut bad = entry("a", Role::Admin, "x");
        bad.token_sha256 = "abc".into();
        assert!(Principals::load_local(&settings(vec![bad], None)).is_err());
        let dup = vec![
            entry("a", Role::Admin, "same"),
            entry("b", Role::Agent, "same"),
        ];
        assert!(Principals::load_local(&settings(dup, None)).is_err());
    }

    #[test]
    fn the_file_is_reloaded_and_a_broken_file_keeps_the_previous_set() {
        let dir = std::env::temp_dir().join(format!("fd-principals-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("principals.toml");
        let write = |token: &str| {
            std::fs::write(
                &path,
                format!(
                    "[[principal]]\nid = \"ehr\"\nrole = \"adapter\"\nsites = [\"north\"]\ntoken_sha256 = \"{}\"\n",
                    token_digest(token)
                ),
            )
            .unwrap();
        };
        write("old-token");
        let p = Principals::load_local(&settings(Vec::new(), Some(path.clone()))).unwrap();
        assert!(p.authenticate("old-token").is_some());
        write("new-token");
        p.reload().unwrap();
        assert!(p.authenticate("old-token").is_none());
        assert!(p.authenticate("new-token").is_some());
        std::fs::write(&path, "[[principal]]\nid = ").unwrap();
        assert!(p.reload().is_err());
        assert!(p.authenticate("new-token").is_some(), "previous set kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
