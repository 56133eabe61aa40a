//! The command line explains itself: `--help`, `--version`, each subcommand's
//! `--help`; list settings from the environment; production refuses to start with
//! no principals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SUBCOMMANDS: &[&str] = &["serve", "check-config", "openapi", "hash-token", "simulate"];

fn frontdoor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdoor"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("FRONTDOOR_ENVIRONMENT")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run frontdoor")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version_list_every_subcommand() {
    let help = frontdoor(&["--help"], &[]);
    assert!(help.status.success(), "{}", stderr(&help));
    let text = stdout(&help);
    for sub in SUBCOMMANDS {
        assert!(text.contains(sub), "--help does not list {sub}: {text}");
    }
    let version = frontdoor(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        stdout(&version).trim(),
        format!("frontdoor {}", env!("CARGO_PKG_VERSION"))
    );
    for sub in ["serve", "check-config", "openapi", "hash-token"] {
        let o = frontdoor(&[sub, "--help"], &[]);
        assert!(o.status.success(), "{sub} --help: {}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("Usage: frontdoor {sub}")),
            "{sub}"
        );
    }
    let unknown = frontdoor(&["frobnicate"], &[]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("frobnicate"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn hash_token_prints_the_digest_a_principal_holds() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run frontdoor hash-token");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-token-of-its-own\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        frontdoor::auth::token_digest("a-token-of-its-own")
    );
}

#[test]
fn check_config_reads_a_list_setting_from_the_environment() {
    let o = frontdoor(
        &["check-config"],
        &[(
            "FRONTDOOR__ROUTING__OVERFLOW__CROSS_SITE_SKILLS",
            "scheduling,billing,refills",
        )],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let values: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(
        values["routing"]["overflow"]["cross_site_skills"],
        serde_json::json!(["billing", "refills", "scheduling"])
    );
}

/// A configuration directory: the repository's base.toml, and a production.toml
/// written here.
fn config_dir(production: &str) -> (tempfile_dir::Dir, PathBuf) {
    let dir = tempfile_dir::Dir::new("fd-cli");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/base.toml");
    std::fs::copy(base, dir.path().join("base.toml")).unwrap();
    std::fs::write(dir.path().join("production.toml"), production).unwrap();
    let p = dir.path().to_path_buf();
    (dir, p)
}

#[test]
fn production_refuses_to_start_with_no_principals() {
    let (_keep, dir) = config_dir("[security]\nprincipals_file = \"\"\n");
    let dir = dir.to_str().unwrap();
    let env = [("FRONTDOOR_ENVIRONMENT", "production")];
    for args in [
        ["--config-dir", dir, "check-config"],
        ["--config-dir", dir, "serve"],
    ] {
        let o = frontdoor(&args, &env);
        assert!(!o.status.success(), "{args:?} started");
        assert!(
            stderr(&o).contains("no principals configured"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // The same directory in the local environment starts (and warns).
    let o = frontdoor(&["--config-dir", dir, "check-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A temporary directory removed on drop (no extra dev-dependency).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A clean SIGTERM in broker mode logs no ERROR (lapin used to log two
/// "invalid channel state: Closing" lines: channels dropped while the connection
/// closed).
#[actix_web::test]
async fn a_clean_sigterm_in_broker_mode_logs_no_error() {
    let (mut settings, _dir) = crate::helpers::test_settings(crate::helpers::Backend::Sqlite).await;
    crate::amqp::enable_broker(&mut settings, &crate::amqp::amqp_url());
    let port = crate::child::free_port();
    let mut child = crate::child::command(&settings, port)
        .env_remove("RUST_LOG")
        .env("FRONTDOOR__TELEMETRY__FORMAT", "json")
        .env("FRONTDOOR__TELEMETRY__LEVEL", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start frontdoor");
    let client = reqwest::Client::new();
    let ready = crate::amqp::eventually(
        std::time::Duration::from_secs(60),
        "ready with the broker up",
        || async {
            let res = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .bearer_auth("dev-monitor-local-token")
                .send()
                .await
                .ok()?;
            let body: serde_json::Value = res.json().await.ok()?;
            (body["broker"] == "up").then_some(body)
        },
    )
    .await;
    assert_eq!(ready["status"], "ready");
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let out = tokio::task::spawn_blocking(move || {
        let _ = &mut child;
        child.wait_with_output()
    })
    .await
    .unwrap()
    .expect("frontdoor exits");
    assert!(out.status.success(), "exit status {:?}", out.status);
    let logs = format!("{}{}", stdout(&out), stderr(&out));
    assert!(logs.contains("drained on shutdown"), "{logs}");
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        errors.is_empty(),
        "a clean shutdown logged errors: {errors:#?}"
    );
}

#[test]
fn replay_refuses_bad_input_with_a_non_zero_exit_code_that_says_why() {
    let dir = std::env::temp_dir().join(format!("fd-replay-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let day = path("day.jsonl");
    let made = frontdoor(
        &[
            "replay",
            "--synthetic-day",
            &day,
            "--contacts-per-site",
            "5",
        ],
        &[],
    );
    assert!(made.status.success(), "{}", stderr(&made));

    // A patch key that does not exist: refused before the window is read, named.
    std::fs::write(path("typo.toml"), "[routing]\noffer_timout_secs = 10\n").unwrap();
    let o = frontdoor(
        &[
            "replay",
            "--file",
            &day,
            "--patch",
            &path("typo.toml"),
            "--quiet",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("patch refused") && stderr(&o).contains("offer_timout_secs"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "nothing ran: {}", stdout(&o));

    // A window with no events (the export's header alone): says so, exits 1.
    let text = std::fs::read_to_string(&day).unwrap();
    let header = text.lines().next().unwrap();
    std::fs::write(path("empty.jsonl"), format!("{header}\n")).unwrap();
    let o = frontdoor(&["replay", "--file", &path("empty.jsonl"), "--quiet"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no events in the window"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "no report: {}", stdout(&o));

    // An export from a newer schema version: refused, both versions named.
    assert!(header.contains("\"schema_version\":2"), "{header}");
    let newer = text.replacen("\"schema_version\":2", "\"schema_version\":9", 1);
    std::fs::write(path("newer.jsonl"), newer).unwrap();
    let o = frontdoor(&["replay", "--file", &path("newer.jsonl"), "--quiet"], &[]);
    assert!(!o.status.success(), "a newer export was replayed");
    assert!(
        stderr(&o).contains("version 9") && stderr(&o).contains("up to version 2"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "no report: {}", stdout(&o));

    // The same day, unpatched, replays (exit 0, a report on stdout).
    let o = frontdoor(&["replay", "--file", &day, "--quiet"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
