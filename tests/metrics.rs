//! `/metrics` as a Prometheus server reads it: text that a strict parse
//! of the exposition format accepts line by line, HELP and TYPE once for
//! every family (and `promtool check metrics` clean, where promtool is
//! installed; CI installs it), process and build metrics, and run gauges
//! that follow the ledger — on both backends. The README's alert rules only
//! name metrics that are served.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestServer;
use runledger::http::HttpConfig;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One family of an exposition: its TYPE, whether it has HELP, and its
/// samples as (series name, labels, value).
#[derive(Default, Debug)]
struct Family {
    kind: Option<Kind>,
    help: bool,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A sample line of the text format: `name{label="value",…} value [timestamp]`,
/// label values with their escapes (`\\`, `\"`, `\n`) undone.
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("unclosed {")?;
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find('=').ok_or("a label without =")? + start;
            let key = &inner[start..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("a dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("unknown escape \\{c}")),
                    },
                    '\n' => return Err("a raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err("labels not separated by ,".into()),
            }
        }
    }
    let mut parts = rest.strip_prefix(' ').ok_or("no space before the value")?.split(' ');
    let value = parts.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("value {v:?} is not a number"))?,
    };
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("timestamp {timestamp:?}"))?;
    }
    if parts.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok((name.to_owned(), labels, value))
}

/// The exposition's families by name; panics on anything `promtool check
/// metrics` refuses or lints: a line that is not HELP, TYPE, a sample or
/// blank; a value that is not a number; a family described or typed twice,
/// or whose samples are not together after its TYPE; a family without HELP
/// or TYPE; a counter not named `_total`, or a gauge that is.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut closed = BTreeSet::new();
    let mut enter = |current: &mut Option<String>, name: &str, at: &str| {
        if current.as_deref() != Some(name) {
            assert!(!closed.contains(name), "{name} appears twice, again at {at}");
            closed.extend(current.replace(name.to_owned()));
        }
    };
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name) && !doc.trim().is_empty(), "{at}");
            enter(&mut current, name, &at);
            let family = out.entry(name.to_owned()).or_default();
            assert!(!family.help, "a second HELP for {name} at {at}");
            assert!(family.samples.is_empty(), "HELP after the samples of {name} at {at}");
            family.help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{at}"));
            let kind = match kind {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                "summary" => Kind::Summary,
                "untyped" => Kind::Untyped,
                other => panic!("unknown type {other:?} at {at}"),
            };
            assert!(is_metric_name(name), "{at}");
            enter(&mut current, name, &at);
            let family = out.entry(name.to_owned()).or_default();
            assert!(family.kind.is_none(), "a second TYPE for {name} at {at}");
            assert!(family.samples.is_empty(), "TYPE after the samples of {name} at {at}");
            assert_ne!(kind, Kind::Untyped, "{at}");
            family.kind = Some(kind);
        } else {
            assert!(
                !line.starts_with('#'),
                "a comment that is neither HELP nor TYPE at {at}"
            );
            let (name, labels, value) = parse_sample(line).unwrap_or_else(|e| panic!("{e} at {at}"));
            let family = current
                .clone()
                .unwrap_or_else(|| panic!("a sample before any TYPE at {at}"));
            let suffixes: &[&str] = match out[&family].kind {
                Some(Kind::Histogram) => &["_bucket", "_sum", "_count"],
                Some(Kind::Summary) => &["", "_sum", "_count"],
                _ => &[""],
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{family}{s}")),
                "a sample of {name} among the family {family} at {at}"
            );
            if name.ends_with("_bucket") {
                assert!(labels.contains_key("le"), "a bucket without le at {at}");
            }
            out.get_mut(&family).unwrap().samples.push((name, labels, value));
        }
    }
    for (name, family) in &out {
        assert!(family.help, "{name} has no HELP");
        let kind = family.kind.unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
        assert!(!family.samples.is_empty(), "{name} has no sample");
        let series: BTreeSet<_> = family.samples.iter().map(|(n, l, _)| (n, l)).collect();
        assert_eq!(series.len(), family.samples.len(), "{name} repeats a series");
    }
    out
}

#[test]
fn the_strict_parse_refuses_what_promtool_refuses() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{route=\"/x/{id}\",q=\"a\\\"b,c\"} 1\n";
    assert_eq!(families(ok)["a_total"].samples[0].1["q"], "a\"b,c");
    for bad in [
        "# TYPE a gauge\na 1\n",
        "# HELP a A.\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na one\n",
        "# HELP a A.\n# TYPE a gauge\na{b=c} 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na 2\n",
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
    ] {
        assert!(std::panic::catch_unwind(|| families(bad)).is_err(), "accepted {bad:?}");
    }
}

/// What `promtool check metrics` says of `text` (empty when it is clean),
/// or `None` when promtool is not installed (`RUNLEDGER_PROMTOOL`, or
/// `promtool` on the PATH); in CI it must be.
fn promtool(text: &str) -> Option<String> {
    use std::io::Write;
    let tool = std::env::var("RUNLEDGER_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = std::process::Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{tool}: {e}; CI must check /metrics with promtool (.ci/run installs it)")
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED promtool check metrics: {tool}: {e}");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        said
    } else {
        format!("exit {}: {said}", out.status)
    })
}

async fn scrape(s: &TestServer) -> BTreeMap<String, Family> {
    let reply = s.get("/metrics").await;
    assert!(reply.content_type.starts_with("text/plain"), "{}", reply.content_type);
    families(reply.ok(200).as_str().expect("text"))
}

/// The value of the series of `family` with exactly `labels`.
fn value(families: &BTreeMap<String, Family>, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    families
        .get(family)?
        .samples
        .iter()
        .find(|(n, l, _)| n == family && *l == want)
        .map(|(_, _, v)| *v)
}

async fn every_family_has_help_and_type_and_parses(s: TestServer) {
    // Traffic that touches every recorded metric: requests, appends,
    // commits, a stream.
    let run = s
        .run_through("m", json!({"max_attempts": 1}), &["start", "end:failed:1"])
        .await;
    let stream = s.client.get(s.url("/api/events/stream?after=0")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let families = scrape(&s).await;
    let text = s.get("/metrics").await.body.as_str().unwrap().to_owned();
    if let Some(said) = promtool(&text) {
        assert_eq!(said.trim(), "", "promtool check metrics:\n{text}");
    }
    drop(stream);
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "runledger_appended_events_total",
        "runledger_commit_batch_size",
        "runledger_commit_seconds",
        "runledger_sse_clients",
        "runledger_anchors_written_total",
        "runledger_anchor_failures_total",
        "runledger_log_head_position",
        "runledger_stream_tail_lag_events",
        "runledger_runs",
        "runledger_ended_runs",
        "runledger_task_runs",
        "runledger_dead_letter_runs",
        "runledger_oldest_pending_run_age_seconds",
        "runledger_build_info",
        "runledger_deadlines_enforced_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            families.contains_key(name),
            "{name} is not served: {:?}",
            families.keys()
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&families, "runledger_build_info", &[("version", version)]),
        Some(1.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&families, "process_start_time_seconds", &[]).unwrap();
    assert!(
        started > now - 3_600.0 && started <= now + 1.0,
        "start time {started}, now {now}"
    );
    assert!(value(&families, "process_resident_memory_bytes", &[]).unwrap() > 1_000_000.0);
    assert!(value(&families, "process_open_fds", &[]).unwrap() >= 3.0);
    assert!(value(&families, "process_cpu_seconds_total", &[]).is_some());
    let head = s.query_i64("SELECT MAX(position) FROM events").await;
    assert_eq!(value(&families, "runledger_log_head_position", &[]), Some(head as f64));
    assert!(value(&families, "runledger_stream_tail_lag_events", &[]).unwrap() >= 0.0);
    assert!(
        value(&families, "runledger_sse_clients", &[]).unwrap() >= 1.0,
        "the open stream"
    );
    // Route templates, never ids.
    assert!(!text.contains(run["id"].as_str().unwrap()));
    s.stop().await;
}

async fn run_gauges_follow_the_ledger(s: TestServer) {
    let at_start = scrape(&s).await;
    assert_eq!(value(&at_start, "runledger_runs", &[("status", "pending")]), Some(0.0));
    assert_eq!(
        value(&at_start, "runledger_oldest_pending_run_age_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(value(&at_start, "runledger_task_runs", &[("task", "other")]), Some(0.0));
    // The server names 2 tasks (see below): etl (4 live runs), report (2),
    // then small (1) and a task called other (1) fall into `other`.
    let oldest = s.create(json!({"task_name": "etl"})).await;
    s.run_through("etl", json!({}), &["start"]).await;
    s.run_through("etl", json!({}), &["start", "end:success:0"]).await;
    s.run_through("etl", json!({"max_attempts": 1}), &["start", "end:failed:3"])
        .await;
    s.run_through("report", json!({}), &["start", "pause"]).await;
    s.run_through("report", json!({}), &["start", "end:timeout"]).await;
    s.create(json!({"task_name": "small"})).await;
    s.run_through("other", json!({}), &["start"]).await;
    s.run_through("gone", json!({}), &["delete"]).await;
    let g = scrape(&s).await;
    let runs = |status: &str| value(&g, "runledger_runs", &[("status", status)]);
    assert_eq!(
        (runs("pending"), runs("running"), runs("paused"), runs("ended")),
        (Some(2.0), Some(2.0), Some(1.0), Some(3.0)),
        "deleted runs are not counted"
    );
    let ended = |reason: &str| value(&g, "runledger_ended_runs", &[("end_reason", reason)]);
    assert_eq!(
        (ended("success"), ended("failed"), ended("timeout"), ended("crashed")),
        (Some(1.0), Some(1.0), Some(1.0), Some(0.0))
    );
    assert_eq!(g["runledger_ended_runs"].samples.len(), 8, "every end reason, always");
    assert_eq!(value(&g, "runledger_dead_letter_runs", &[]), Some(1.0));
    let tasks: BTreeMap<String, f64> = g["runledger_task_runs"]
        .samples
        .iter()
        .map(|(_, l, v)| (l["task"].clone(), *v))
        .collect();
    assert_eq!(
        tasks,
        BTreeMap::from([("etl".into(), 4.0), ("report".into(), 2.0), ("other".into(), 2.0)]),
        "the top 2 tasks, then everything else"
    );
    // The oldest pending run's age, from its own created_at.
    let created = chrono::DateTime::parse_from_rfc3339(oldest["created_at"].as_str().unwrap()).unwrap();
    let age = value(&g, "runledger_oldest_pending_run_age_seconds", &[]).unwrap();
    let since = (chrono::Utc::now() - created.with_timezone(&chrono::Utc)).as_seconds_f64();
    assert!(age > 0.0 && age <= since + 0.001, "age {age}, created {since} s ago");
    // Ending it leaves the newer pending run (small) the oldest; ending
    // that leaves none.
    let id = oldest["id"].as_str().unwrap();
    s.post(&format!("/api/runs/{id}/cancel"), json!({})).await.ok(200);
    let small = s.get("/api/runs?task_name=small").await.ok(200)["runs"][0].clone();
    let later = value(&scrape(&s).await, "runledger_oldest_pending_run_age_seconds", &[]).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(small["created_at"].as_str().unwrap()).unwrap();
    let small_since = (chrono::Utc::now() - created.with_timezone(&chrono::Utc)).as_seconds_f64();
    assert!(
        later > 0.0 && later <= small_since + 0.001,
        "age {later}, created {small_since} s ago"
    );
    let small = small["id"].as_str().unwrap();
    s.post(&format!("/api/runs/{small}/cancel"), json!({})).await.ok(200);
    let g = scrape(&s).await;
    assert_eq!(value(&g, "runledger_oldest_pending_run_age_seconds", &[]), Some(0.0));
    assert_eq!(value(&g, "runledger_runs", &[("status", "pending")]), Some(0.0));
    assert_eq!(
        value(&g, "runledger_ended_runs", &[("end_reason", "stopped")]),
        Some(2.0)
    );
    // A replay empties the dead-letter queue and makes a pending run.
    let dlq = s.get("/api/runs/dlq").await;
    let dead = dlq.ok(200)["runs"][0]["id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/runs/{dead}/dlq-replay"), json!({})).await.ok(202);
    let g = scrape(&s).await;
    assert_eq!(value(&g, "runledger_dead_letter_runs", &[]), Some(0.0));
    assert_eq!(value(&g, "runledger_runs", &[("status", "pending")]), Some(1.0));
    assert!(value(&g, "runledger_oldest_pending_run_age_seconds", &[]).unwrap() > 0.0);
    assert_eq!(value(&g, "runledger_task_runs", &[("task", "etl")]), Some(5.0));
    s.stop().await;
}

/// A database that cannot answer leaves the run gauges out of a scrape,
/// and says so; the node's own metrics are still served.
async fn a_scrape_that_cannot_read_the_runs_serves_the_rest(s: TestServer) {
    let failures = |f: &BTreeMap<String, Family>| value(f, "runledger_metrics_read_failures_total", &[]).unwrap();
    let before = scrape(&s).await;
    assert!(before.contains_key("runledger_runs"));
    s.exec_sql("DROP TABLE task_counts").await.unwrap();
    let after = scrape(&s).await;
    for gone in ["runledger_runs", "runledger_task_runs", "runledger_dead_letter_runs"] {
        assert!(!after.contains_key(gone), "{gone} without its table");
    }
    for kept in [
        "runledger_stream_tail_lag_events",
        "process_resident_memory_bytes",
        "http_requests_total",
    ] {
        assert!(after.contains_key(kept), "{kept} is still served");
    }
    assert!(failures(&after) >= failures(&before) + 1.0);
    s.stop().await;
}

/// The README's `yaml` block that holds `key`, parsed.
fn readme_yaml(key: &str) -> yaml_rust2::Yaml {
    let mut docs = yaml_rust2::YamlLoader::load_from_str(&readme_block(key)).expect("the README's yaml parses");
    docs.remove(0)
}

/// The text of the README's `yaml` block that holds `key`.
fn readme_block(key: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(b, _)| b))
        .find(|b| b.lines().any(|l| l.starts_with(&format!("{key}:"))))
        .unwrap_or_else(|| panic!("the README has no yaml block with {key}:"));
    block.to_owned()
}

/// The metric names an expression reads (identifiers of our families'
/// prefixes; PromQL functions, labels and durations are none of these).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| ["runledger_", "process_", "http_"].iter().any(|p| w.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

async fn the_readme_scrape_config_and_alert_rules_name_served_metrics(s: TestServer) {
    let served = scrape(&s).await;
    let config = readme_yaml("scrape_configs");
    let job = &config["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let target = job["static_configs"][0]["targets"][0].as_str().expect("a target");
    assert!(target.ends_with(":9477"), "the default port: {target}");
    // promtool parses the rules' PromQL too, where it is installed.
    let tool = std::env::var("RUNLEDGER_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, readme_block("groups")).unwrap();
    match std::process::Command::new(&tool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{tool}: {e}"),
        Err(e) => eprintln!("SKIPPED promtool check rules: {tool}: {e}"),
    }
    let rules = readme_yaml("groups");
    let rules = rules["groups"][0]["rules"].as_vec().expect("rules");
    let mut alerts = Vec::new();
    for rule in rules {
        let alert = rule["alert"].as_str().expect("an alert name");
        let expr = rule["expr"].as_str().expect("an expr");
        assert!(rule["for"].as_str().is_some(), "{alert} has a for:");
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{alert} has a summary"
        );
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{alert} reads no metric: {expr}");
        for name in names {
            assert!(
                served.contains_key(&name),
                "{alert} reads {name}, which /metrics does not serve"
            );
        }
        alerts.push(alert.to_owned());
    }
    assert!(alerts.len() >= 2, "{alerts:?}");
    let reads: Vec<String> = rules
        .iter()
        .flat_map(|r| metric_names(r["expr"].as_str().unwrap()))
        .collect();
    for name in ["runledger_dead_letter_runs", "runledger_stream_tail_lag_events"] {
        assert!(reads.iter().any(|r| r == name), "no rule reads {name}");
    }
    s.stop().await;
}

/// Each run the enforcer ends counts once under the end it gave. The
/// recorder is the process's, shared by the tests running beside this one,
/// so the counts are compared before and after.
async fn deadline_ends_are_counted_by_reason(s: TestServer) {
    let count = |families: &BTreeMap<String, Family>, reason: &str| {
        value(families, "runledger_deadlines_enforced_total", &[("reason", reason)])
            .unwrap_or_else(|| panic!("no series for {reason}"))
    };
    let before = scrape(&s).await;
    let in_a_second = runledger_events::Timestamp::now().plus_secs(1).unwrap().to_rfc3339();
    let timed = s.run_through("late", json!({"timeout_secs": 1}), &["start"]).await;
    let silent = s
        .run_through("quiet", json!({"heartbeat_timeout_secs": 1}), &["start"])
        .await;
    let queued = s
        .create(json!({"task_name": "queued", "expires_at": in_a_second}))
        .await;
    let waited = std::time::Instant::now();
    for run in [&timed, &silent, &queued] {
        let id = run["id"].as_str().unwrap();
        while s.get(&format!("/api/runs/{id}")).await.ok(200)["status"] != "ended" {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(20),
                "{id} never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let after = scrape(&s).await;
    for reason in ["timeout", "crashed", "expired"] {
        assert!(
            count(&after, reason) >= count(&before, reason) + 1.0,
            "{reason}: {} then {}",
            count(&before, reason),
            count(&after, reason)
        );
    }
    s.stop().await;
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadline_ends_are_counted_by_reason() {
        super::deadline_ends_are_counted_by_reason(TestServer::sqlite().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_readme_scrape_config_and_alert_rules_name_served_metrics() {
        super::the_readme_scrape_config_and_alert_rules_name_served_metrics(TestServer::sqlite().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_that_cannot_read_the_runs_serves_the_rest() {
        super::a_scrape_that_cannot_read_the_runs_serves_the_rest(TestServer::sqlite().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_family_has_help_and_type_and_parses() {
        super::every_family_has_help_and_type_and_parses(TestServer::sqlite().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_gauges_follow_the_ledger() {
        let config = HttpConfig {
            metrics_top_tasks: 2,
            ..HttpConfig::default()
        };
        super::run_gauges_follow_the_ledger(TestServer::sqlite_with(config).await).await
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_readme_scrape_config_and_alert_rules_name_served_metrics() {
        if let Some(s) = TestServer::postgres("the_readme_scrape_config_and_alert_rules_name_served_metrics").await {
            super::the_readme_scrape_config_and_alert_rules_name_served_metrics(s).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_that_cannot_read_the_runs_serves_the_rest() {
        if let Some(s) = TestServer::postgres("a_scrape_that_cannot_read_the_runs_serves_the_rest").await {
            super::a_scrape_that_cannot_read_the_runs_serves_the_rest(s).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_family_has_help_and_type_and_parses() {
        if let Some(s) = TestServer::postgres("every_family_has_help_and_type_and_parses").await {
            super::every_family_has_help_and_type_and_parses(s).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadline_ends_are_counted_by_reason() {
        if let Some(s) = TestServer::postgres("deadline_ends_are_counted_by_reason").await {
            super::deadline_ends_are_counted_by_reason(s).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_gauges_follow_the_ledger() {
        let config = HttpConfig {
            metrics_top_tasks: 2,
            ..HttpConfig::default()
        };
        if let Some(s) = TestServer::postgres_with("run_gauges_follow_the_ledger", config).await {
            super::run_gauges_follow_the_ledger(s).await
        }
    }
}
