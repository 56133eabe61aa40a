//! The docs say what the code does: the example principal cannot be copied into a
//! working one, the audit timestamp format, the Grafana mount path, the compose
//! stack's host ports.

use std::path::PathBuf;

use crate::helpers::{spawn_app, Backend};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `token_sha256 = "…"` example in the docs is a placeholder the runtime
/// refuses, never a digest: a digest of a guessable word ("test") copied from the
/// docs would be a working principal.
#[test]
fn the_docs_example_principals_hold_no_usable_digest() {
    for doc in ["README.md", "docs/security.md", "docs/operations.md"] {
        let text = read(doc);
        for value in text.split("token_sha256 = \"").skip(1) {
            let value = value.split('"').next().unwrap_or("");
            assert!(
                !(value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit())),
                "{doc}: the example token_sha256 {value} is a usable digest; use a placeholder"
            );
        }
    }
}

#[actix_web::test]
async fn audit_records_carry_recorded_at_in_rfc_3339_as_docs_security_md_says() {
    let app = spawn_app(Backend::Sqlite).await;
    // A search is itself audited: two searches leave at least one record.
    let _ = app.get("/v1/audit").await;
    let (status, body) = app.get("/v1/audit").await;
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().expect("records");
    assert!(!records.is_empty(), "{body}");
    for r in records {
        let at = r["recorded_at"].as_str().expect("recorded_at is a string");
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap_or_else(|e| panic!("recorded_at {at}: {e}"));
    }
    let doc = read("docs/security.md");
    let said = doc
        .split("(`recorded_at`, ")
        .nth(1)
        .expect("docs/security.md describes recorded_at");
    assert!(said.starts_with("an RFC 3339"), "{}", &said[..40]);
}

/// The provisioning file's comment, the compose mount and docs/dashboards.md name
/// the path the provider reads.
#[test]
fn the_grafana_dashboards_mount_path_is_the_one_the_provider_reads() {
    let prov = read("grafana/provisioning/dashboards/dashboards.yml");
    let path = prov
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .expect("options.path")
        .trim()
        .to_string();
    let comment: String = prov
        .lines()
        .filter(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [
        ("the provisioning comment", comment),
        ("docker-compose.yml", read("docker-compose.yml")),
        ("docs/dashboards.md", read("docs/dashboards.md")),
    ] {
        // Every Grafana path named is the provider's (or inside it).
        let mut named = 0;
        for at in text.split("/var/lib/grafana").skip(1) {
            let target: String = format!(
                "/var/lib/grafana{}",
                at.split(|c: char| c.is_whitespace() || "):;`\"".contains(c))
                    .next()
                    .unwrap_or("")
            );
            assert!(
                target.trim_end_matches('/') == path,
                "{what} names {target} but the provider reads {path}"
            );
            named += 1;
        }
        assert!(named > 0, "{what} names no dashboards path");
    }
}

/// Every host port the compose stack publishes can be moved with a variable, and
/// README.md names each variable.
#[test]
fn every_compose_host_port_is_overridable_and_documented() {
    let compose = read("docker-compose.yml");
    let readme = read("README.md");
    let mut seen = 0;
    let mut in_ports = false;
    for line in compose.lines() {
        let t = line.trim();
        if t == "ports:" {
            in_ports = true;
            continue;
        }
        if in_ports && t.starts_with("- ") {
            let mapping = t.trim_start_matches("- ").trim_matches('"');
            let var = mapping
                .strip_prefix("${")
                .and_then(|m| m.split(":-").next())
                .unwrap_or_else(|| panic!("host port {mapping} is not overridable"));
            assert!(var.starts_with("FRONTDOOR_"), "{mapping}");
            assert!(
                readme.contains(&format!("`{var}`")),
                "README.md does not name {var}"
            );
            seen += 1;
        } else {
            in_ports = false;
        }
    }
    assert!(seen >= 8, "found {seen} published ports");
}
