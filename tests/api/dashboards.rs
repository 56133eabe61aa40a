//! The dashboards tell the truth: every metric is documented, every dashboard is
//! well formed, and every panel's every query returns data from a real
//! Prometheus scraping a Front Door that the simulator is driving.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use frontdoor_simulate::summary::parse_samples;
use frontdoor_simulate::{self as simulate, SimulateOptions};
use serde_json::Value;

use frontdoor::startup::Application;

use crate::amqp::{amqp_url, enable_broker, eventually, Adapter};
use crate::helpers::{test_settings, Backend};

/// Metrics the dashboards show that the runtime does not export yet, with the
/// work that adds them. Their panels are reported as pending instead of failing;
/// once such a metric is exported the test fails until its line is deleted, so
/// this list only shrinks.
const PENDING: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The metric names declared as constants in src/metrics.rs.
fn declared_metrics() -> Vec<String> {
    let src = std::fs::read_to_string(repo().join("src/metrics.rs")).expect("src/metrics.rs");
    // A declaration may wrap after `=`: read up to its `;`.
    src.split("pub const ")
        .skip(1)
        .filter_map(|decl| decl.split(';').next())
        .filter(|decl| decl.contains(": &str"))
        .filter_map(|decl| decl.split('"').nth(1).map(str::to_string))
        .filter(|name| name.starts_with("frontdoor_"))
        .collect()
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("grafana/dashboards")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("dashboard file");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().to_string(), v) // unwrap: read_dir entries have names
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel that queries (rows excluded), nested rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// The expression with Grafana's variables replaced by concrete values.
fn concrete(expr: &str) -> String {
    expr.replace("${site}", ".*")
        .replace("$site", ".*")
        .replace("${skill}", ".*")
        .replace("$skill", ".*")
        .replace("$__rate_interval", "15s")
        .replace("$__interval", "5s")
        .replace("$__range", "5m")
}

/// Metric names an expression reads: identifiers outside strings, label
/// matchers, ranges and grouping lists that are not functions or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        // Aggregation operators may be followed by `by (...)` before their `(`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    // Blank out "...", {...} and [...].
    let mut cleaned = String::with_capacity(expr.len());
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' => {
                in_str = !in_str;
                cleaned.push(' ');
            }
            _ if in_str => cleaned.push(' '),
            '{' => {
                depth_brace += 1;
                cleaned.push(' ');
            }
            '}' => {
                depth_brace -= 1;
                cleaned.push(' ');
            }
            '[' => {
                depth_bracket += 1;
                cleaned.push(' ');
            }
            ']' => {
                depth_bracket -= 1;
                cleaned.push(' ');
            }
            _ if depth_brace > 0 || depth_bracket > 0 => cleaned.push(' '),
            _ => cleaned.push(c),
        }
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let is_call = j < chars.len() && chars[j] == '(';
            let lower = word.to_ascii_lowercase();
            if matches!(lower.as_str(), "by" | "without" | "on" | "ignoring") {
                // Skip the label list that follows.
                after_grouping = true;
            } else if is_call || KEYWORDS.contains(&lower.as_str()) {
            } else if !after_grouping {
                names.insert(word);
            }
            continue;
        }
        if after_grouping && c == ')' {
            after_grouping = false;
        }
        i += 1;
    }
    names
}

#[test]
fn every_metric_in_src_metrics_is_documented_in_docs_metrics_md() {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let names = declared_metrics();
    assert!(names.len() > 20, "parsed too few constants: {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    // And the page names no metric that no longer exists.
    let stale: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.len() > "frontdoor_".len() && t.starts_with("frontdoor_"))
        .filter(|t| !t.contains([' ', '(']))
        .filter(|t| !names.iter().any(|n| n == t))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/metrics.md names undeclared metrics: {stale:?}"
    );
}

/// The store operations the code times (`timed("<operation>", ...)` in src/store/).
fn store_operations() -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("src/store")).expect("src/store") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("a store source file");
        for chunk in text.split("timed(").skip(1) {
            let chunk = chunk.trim_start();
            if let Some(rest) = chunk.strip_prefix('"') {
                if let Some(op) = rest.split('"').next() {
                    ops.insert(op.to_string());
                }
            }
        }
    }
    ops
}

#[test]
fn docs_metrics_md_lists_exactly_the_store_operations_the_code_emits() {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let section = doc
        .split("The store's `operation` label names the call")
        .nth(1)
        .and_then(|s| s.split("How to use them").next())
        .expect("the store operations list in docs/metrics.md");
    let documented: BTreeSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect();
    let emitted = store_operations();
    assert!(emitted.len() > 20, "parsed too few operations: {emitted:?}");
    let missing: Vec<_> = emitted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "store operations not in docs/metrics.md: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        stale.is_empty(),
        "docs/metrics.md lists operations no code emits: {stale:?}"
    );
}

#[test]
fn docs_metrics_md_lists_every_offer_outcome() {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `frontdoor_offers_total`"))
        .expect("the offers row");
    let src =
        std::fs::read_to_string(repo().join("actors/src/routing/router.rs")).expect("router.rs");
    let labels = src
        .split("pub fn as_str(self) -> &'static str {")
        .nth(1)
        .and_then(|s| s.split("fn rule(self)").next())
        .expect("OfferOutcome::as_str");
    let outcomes: Vec<&str> = labels.split('"').skip(1).step_by(2).collect();
    assert!(outcomes.len() >= 4, "{outcomes:?}");
    for o in outcomes {
        assert!(
            row.contains(&format!("`{o}`")),
            "offer outcome {o} is not in docs/metrics.md"
        );
    }
}

#[test]
fn every_dashboard_has_a_uid_a_datasource_variable_site_and_skill_variables_and_units() {
    let all = dashboards();
    assert!(all.len() >= 2, "expected at least two dashboards");
    let declared: BTreeSet<String> = declared_metrics().into_iter().collect();
    let mut uids = BTreeSet::new();
    for (file, d) in &all {
        let uid = d["uid"].as_str().unwrap_or("");
        assert!(!uid.is_empty(), "{file}: no uid");
        assert!(uids.insert(uid.to_string()), "{file}: duplicate uid {uid}");
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |name: &str| vars.iter().find(|v| v["name"] == name);
        assert_eq!(
            var("datasource").map(|v| v["type"].clone()),
            Some(Value::from("datasource")),
            "{file}: no datasource variable"
        );
        for name in ["site", "skill"] {
            let v = var(name).unwrap_or_else(|| panic!("{file}: no {name} variable"));
            let q = v["query"]["query"].as_str().unwrap_or("");
            assert!(q.starts_with("label_values("), "{file}: {name} query {q}");
        }
        let ps = panels(d);
        assert!(!ps.is_empty(), "{file}: no panels");
        for p in ps {
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}/{title}");
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            assert!(!unit.is_empty(), "{file}/{title}: no unit");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}/{title}: no query");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or("");
                for name in metric_names(expr) {
                    let base = name
                        .strip_suffix("_bucket")
                        .or_else(|| name.strip_suffix("_count"))
                        .or_else(|| name.strip_suffix("_sum"))
                        .unwrap_or(&name);
                    assert!(
                        declared.contains(base),
                        "{file}/{title}: {name} is not a constant in src/metrics.rs"
                    );
                }
            }
        }
    }
}

#[test]
fn metric_names_are_read_from_expressions_without_labels_functions_or_keywords() {
    let e = r#"sum by (site, skill) (increase(frontdoor_a_total{site=~"$site", within_target="true"}[15m])) / (sum by (site) (frontdoor_b) or 0 * frontdoor_c_bucket)"#;
    let names: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(
        names,
        vec!["frontdoor_a_total", "frontdoor_b", "frontdoor_c_bucket"]
    );
}

/// A Prometheus server on a free port with its own config and storage, killed
/// and cleaned up when dropped (also when the test fails).
struct Prometheus {
    /// The server process.
    child: Child,
    /// Config and TSDB directory.
    dir: PathBuf,
    /// `http://127.0.0.1:<port>`.
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("frontdoor-prom-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: frontdoor\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("prometheus.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect(
                "Failed to start `prometheus`: install Debian's package (apt-get install prometheus); .ci/run does",
            );
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                panic!("prometheus exited early: {status}\n{log}");
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn query(&self, client: &reqwest::Client, q: &str) -> Result<Vec<Value>, String> {
        let res = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", q)])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let body: Value = res.json().await.map_err(|e| format!("not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("error: {}", body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(a) => Ok(a.clone()),
            // A scalar result is one value.
            Value::Null => Ok(Vec::new()),
            other => Ok(vec![other.clone()]),
        }
    }

    async fn label_values(
        &self,
        client: &reqwest::Client,
        label: &str,
        selector: &str,
    ) -> Vec<Value> {
        let res = client
            .get(format!("{}/api/v1/label/{label}/values", self.url))
            .query(&[("match[]", selector)])
            .send()
            .await;
        match res {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|b| b["data"].as_array().cloned())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// Names exported on /metrics (sample names and `# TYPE` families).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = parse_samples(text).into_iter().map(|s| s.name).collect();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            if let Some(n) = rest.split_whitespace().next() {
                names.insert(n.to_string());
            }
        }
    }
    names
}

#[actix_web::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_simulated_day() {
    // The runtime on the wall clock (not the helpers' manual clock): its routing
    // timers, offer timeouts and sliding windows run as in production.
    let (mut settings, _dir) = test_settings(Backend::Sqlite).await;
    // test_settings parks routing's timers for manual-clock tests; run them as configured.
    settings.routing.tick_interval_ms = frontdoor::configuration::base_configuration()
        .expect("config/base.toml")
        .routing
        .tick_interval_ms;
    // With RabbitMQ, so the Broker row has data: the day goes over HTTP, then a
    // surge over AMQP (commands relayed while no adapter queue is bound yet are
    // the unroutable ones).
    enable_broker(&mut settings, &amqp_url());
    let adapter = Adapter::connect(&settings).await;
    let broker_names = settings.broker.clone();
    let app = Application::build(settings)
        .await
        .expect("Failed to build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.run_until_stopped());
    let target = address.trim_start_matches("http://").to_string();
    let client = reqwest::Client::new();
    let get_metrics = || async {
        client
            .get(format!("{address}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics body")
    };
    let mut prom = Prometheus::start(&target);
    prom.wait_ready(&client).await;

    // A Monday-morning peak, compressed: 20 real seconds of traffic.
    let opts = SimulateOptions {
        target: address.clone(),
        seed: 7,
        day_minutes: 6.0,
        start_hour: 8.0,
        end_hour: 20.0,
        max_duration: Duration::from_secs(20),
        max_contacts: 5_000,
        token: Some(
            crate::helpers::token_for(crate::helpers::principal_of(frontdoor::auth::Role::Admin))
                .into(),
        ),
        ..SimulateOptions::default()
    };
    let summary = simulate::run(opts.clone())
        .await
        .expect("the simulation runs");
    eprintln!("{summary}");
    assert!(
        summary.contacts_started > 20,
        "too little traffic: {summary}"
    );
    eventually(
        Duration::from_secs(30),
        "the consumer connected",
        || async {
            let text = get_metrics().await;
            parse_samples(&text)
                .iter()
                .any(|s| {
                    s.name == "frontdoor_broker_connected"
                        && s.label("component") == Some("consumer")
                        && s.value == 1.0
                })
                .then_some(())
        },
    )
    .await;
    let surge = SimulateOptions {
        seed: 8,
        surge: true,
        max_duration: Duration::from_secs(8),
        max_contacts: 1_000,
        amqp: Some(simulate::AmqpOptions {
            url: amqp_url().into(),
            events_exchange: broker_names.events_exchange.clone(),
            commands_exchange: broker_names.commands_exchange.clone(),
        }),
        ..opts
    };
    let summary = simulate::run(surge).await.expect("the AMQP surge runs");
    eprintln!("{summary}");
    assert!(summary.confirmed > 20, "too little traffic: {summary}");

    // Wait until Prometheus has scraped what the runtime holds now.
    let metrics_text = get_metrics().await;
    let events_now: f64 = parse_samples(&metrics_text)
        .iter()
        .filter(|s| s.name == "frontdoor_events_total")
        .map(|s| s.value)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scraped = prom
            .query(&client, "sum(frontdoor_events_total)")
            .await
            .ok()
            .and_then(|r| {
                r.first()
                    .and_then(|v| v["value"][1].as_str().map(str::to_string))
            })
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
        if scraped >= events_now && events_now > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not catch up: scraped {scraped}, runtime {events_now}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let exported = exported(&get_metrics().await);

    let mut failures = Vec::new();
    let mut pending = Vec::new();
    for (name, why) in PENDING {
        if exported.contains(*name) {
            failures.push(format!(
                "{name} is exported now ({why}): delete it from PENDING in tests/api/dashboards.rs"
            ));
        }
    }
    let mut checked = 0;
    for (file, d) in dashboards() {
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let Some(q) = v["query"]["query"].as_str() else {
                continue;
            };
            let Some(inner) = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
            else {
                continue;
            };
            let Some((selector, label)) = inner.rsplit_once(',') else {
                continue;
            };
            let values = prom
                .label_values(&client, label.trim(), &concrete(selector.trim()))
                .await;
            if values.is_empty() {
                failures.push(format!("{file} variable {}: {q} has no values", v["name"]));
            }
        }
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or("");
                let q = concrete(expr);
                checked += 1;
                let unknown: Vec<String> = metric_names(&q)
                    .into_iter()
                    .filter(|n| !exported.contains(n))
                    .collect();
                let all_pending = unknown.iter().all(|n| PENDING.iter().any(|(p, _)| p == n));
                if !unknown.is_empty() && all_pending {
                    pending.push(format!(
                        "{file} / {title} / {}: waits for {unknown:?}",
                        t["refId"]
                    ));
                    continue;
                }
                if !unknown.is_empty() {
                    failures.push(format!(
                        "{file} / {title} / {}: names metrics the runtime does not export: {unknown:?}",
                        t["refId"]
                    ));
                    continue;
                }
                match prom.query(&client, &q).await {
                    Ok(r) if r.is_empty() => failures.push(format!(
                        "{file} / {title} / {}: no data for {q}",
                        t["refId"]
                    )),
                    Ok(_) => {}
                    Err(e) => {
                        failures.push(format!("{file} / {title} / {}: {e} ({q})", t["refId"]))
                    }
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} queries found");
    if !pending.is_empty() {
        eprintln!(
            "PENDING: {} dashboard queries wait for metrics not exported yet:\n  {}\n  (see PENDING in tests/api/dashboards.rs: {})",
            pending.len(),
            pending.join("\n  "),
            PENDING
                .iter()
                .map(|(n, why)| format!("{n} — {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    adapter.cleanup().await;
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed against a live Prometheus:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
