//! The console served by `runledger serve`: its pages and assets over HTTP
//! on both backends, and the whole scenario in a real browser (Debian's
//! chromium driven by playwright-core; `.ci/run` installs both). With
//! `CI=true` the browser part must run; elsewhere it says SKIPPED when the
//! browser or playwright-core is missing.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{send_checked, TestServer};
use runledger::auth::Scope;
use serde_json::json;

async fn fetch(s: &TestServer, path: &str, cookie: Option<&str>) -> (u16, String, String) {
    let mut req = s.client.get(s.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = send_checked(req).await.unwrap();
    let status = resp.status().as_u16();
    // Every console answer keeps the browser on this server.
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{path}: {csp}"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff", "{path}");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, resp.text().await.unwrap())
}

/// Every `src` and `href` of a page: none may leave the server.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            out.push(part.split('"').next().unwrap_or_default().to_owned());
        }
    }
    out
}

fn assert_local(html: &str, page: &str) {
    for r in references(html) {
        assert!(
            r.starts_with('/') || r.starts_with('#') || r.starts_with('?'),
            "{page} refers to {r:?}, outside this server"
        );
        assert!(!r.starts_with("//"), "{page} refers to {r:?}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{page} names an external URL"
    );
}

async fn pages_and_assets_are_served_from_the_binary(s: TestServer) {
    let run = s
        .run_through(
            "etl",
            json!({"tags": {"team": "<script>alert(1)</script>"}}),
            &["start"],
        )
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let (status, ct, html) = fetch(&s, "/?status=running&task_name=etl", None).await;
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(html.contains(&format!("data-id=\"{id}\"")), "the run is listed");
    assert!(html.contains(r#"<span class="count" id="total">1</span>"#));
    assert!(
        html.contains(r#"value="running""#),
        "the filter form shows the URL's filter"
    );
    assert_local(&html, "/");
    let (status, _, page) = fetch(&s, &format!("/runs/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<code>run.started</code>") && page.contains("Hash chain verifies"));
    // Ledger text is escaped on its way into the markup.
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped");
    assert!(!page.contains("<script>alert"), "never markup");
    assert!(page.contains(&format!("/api/runs/{id}/debug-bundle")));
    assert_local(&page, "/runs/{id}");
    let (status, _, diff) = fetch(&s, "/diff?from=0", None).await;
    assert_eq!(status, 200);
    assert!(diff.contains(&id));
    assert_local(&diff, "/diff");
    for (path, content_type, marker) in [
        (
            "/console/assets/console.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        (
            "/console/assets/console.css",
            "text/css; charset=utf-8",
            "prefers-color-scheme",
        ),
    ] {
        let (status, ct, body) = fetch(&s, path, None).await;
        assert_eq!((status, ct.as_str()), (200, content_type), "{path}");
        assert!(body.contains(marker), "{path}");
        assert_local(&body, path);
    }
    s.stop().await;
}

async fn bad_console_input_is_an_html_page_naming_the_field(s: TestServer) {
    s.run_through("etl", json!({}), &["start"]).await;
    let count = s.event_count().await;
    for (path, status, location) in [
        ("/?status=bogus", 422, "query.status"),
        ("/?limit=0", 422, "query.limit"),
        ("/?as_of=yesterday", 422, "query.as_of"),
        ("/?nonsense=1", 422, "query.nonsense"),
        ("/runs/not-a-uuid", 422, "path.id"),
        ("/diff?from=2&to=1", 422, "query.from"),
        ("/?q=%ZZ", 422, "query.q"),
    ] {
        let (got, ct, html) = fetch(&s, path, None).await;
        assert_eq!(got, status, "{path}: {html}");
        assert_eq!(ct, "text/html; charset=utf-8", "{path}");
        assert!(html.contains(&format!("<code>{location}</code>")), "{path}: {html}");
        assert_local(&html, path);
    }
    let (got, _, html) = fetch(&s, "/runs/0195f2a0-0000-7000-8000-000000000000", None).await;
    assert_eq!(got, 404);
    assert!(html.contains("does not exist"));
    assert_eq!(s.event_count().await, count, "nothing appended");
    s.stop().await;
}

async fn with_tokens_the_console_asks_to_sign_in(s: TestServer) {
    let reader = s.ledger.create_token("auditor", &[Scope::RunsRead]).await.unwrap();
    let watcher = s.ledger.create_token("watcher", &[Scope::LedgerRead]).await.unwrap();
    let (status, ct, html) = fetch(&s, "/", None).await;
    assert_eq!((status, ct.as_str()), (401, "text/html; charset=utf-8"));
    assert!(html.contains(r#"id="sign-in""#));
    assert_local(&html, "the sign-in page");
    let sign_in = |secret: String| {
        let req = s.client.post(s.url("/api/session")).bearer_auth(secret);
        async move {
            let resp = send_checked(req).await.unwrap();
            let cookie = resp.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            cookie
        }
    };
    let cookie = sign_in(reader).await;
    let (status, _, html) = fetch(&s, "/", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains("signed in as <strong>auditor</strong>"));
    // A session without runs:read is told what it lacks.
    let cookie = sign_in(watcher).await;
    let (status, _, html) = fetch(&s, "/", Some(&cookie)).await;
    assert_eq!(status, 403);
    assert!(html.contains("runs:read"));
    s.stop().await;
}

/// An event altered in the database is shown as a broken chain on every
/// page that shows its run.
async fn a_tampered_run_is_shown_unverified(s: TestServer) {
    let run = s.run_through("etl", json!({}), &["start", "end:failed"]).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let other = s.run_through("etl", json!({}), &["start"]).await;
    let (_, _, before) = fetch(&s, "/", None).await;
    assert!(
        before.contains("✔ Hash chain verifies for the 2 runs on screen (5 events)"),
        "{before}"
    );
    let disable = match &s.backend {
        common::Backend::Sqlite { .. } => {
            "DROP TRIGGER events_are_append_only_update; DROP TRIGGER events_are_append_only_delete"
        }
        common::Backend::Postgres { .. } => "ALTER TABLE events DISABLE TRIGGER USER",
    };
    for statement in disable.split("; ") {
        s.exec_sql(statement).await.unwrap();
    }
    let position = s
        .query_i64(&format!(
            "SELECT position FROM events WHERE stream_id = 'run-{id}' AND event_type = 'run.ended'"
        ))
        .await;
    let changed = s
        .exec_sql(&format!(
            "UPDATE events SET data = replace(data, '\"failed\"', '\"success\"') WHERE position = {position}"
        ))
        .await;
    assert_eq!(changed, Ok(1));
    let broken = format!("Hash chain does NOT verify: run <a href=\"/runs/{id}\">{id}</a> at position {position}");
    let (_, _, list) = fetch(&s, "/", None).await;
    assert!(list.contains(&broken), "{list}");
    let (_, _, page) = fetch(&s, &format!("/runs/{id}"), None).await;
    assert!(
        page.contains(&format!("Hash chain does NOT verify at position {position}")),
        "{page}"
    );
    let (_, _, diff) = fetch(&s, "/diff?from=0", None).await;
    assert!(diff.contains(&broken), "{diff}");
    // A view without the altered run still verifies.
    let (_, _, only) = fetch(&s, &format!("/?search={}", other["id"].as_str().unwrap()), None).await;
    assert!(
        only.contains("✔ Hash chain verifies for the 1 runs on screen"),
        "{only}"
    );
    s.stop().await;
}

/// Pages are charged to the caller's rate limit, like its API calls.
async fn pages_share_the_callers_rate_limit(s: TestServer) {
    for _ in 0..2 {
        assert_eq!(fetch(&s, "/", None).await.0, 200);
    }
    let req = s.client.get(s.url("/"));
    let resp = send_checked(req).await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert!(resp.text().await.unwrap().contains("Too many requests"));
    s.stop().await;
}

fn tight_limit() -> runledger::http::HttpConfig {
    runledger::http::HttpConfig {
        rate_limit: Some(runledger::http::RateLimit {
            per_second: std::num::NonZeroU32::new(1).unwrap(),
            burst: std::num::NonZeroU32::new(2).unwrap(),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pages_share_the_callers_rate_limit() {
    pages_share_the_callers_rate_limit(TestServer::sqlite_with(tight_limit()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pages_share_the_callers_rate_limit() {
    if let Some(s) = TestServer::postgres_with("pages_share_the_callers_rate_limit", tight_limit()).await {
        pages_share_the_callers_rate_limit(s).await;
    }
}

mod backends {
    use super::*;
    backend_tests!(
        pages_and_assets_are_served_from_the_binary,
        bad_console_input_is_an_html_page_naming_the_field,
        with_tokens_the_console_asks_to_sign_in,
        a_tampered_run_is_shown_unverified,
    );
}

/// playwright-core (from `.ci/console`) and chromium, or why not.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = std::env::var_os("RUNLEDGER_CONSOLE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/ci-tools/console"))
        .join("node_modules");
    let chromium = std::env::var_os("RUNLEDGER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !modules.join("playwright-core").is_dir() {
        return Err(format!("no playwright-core in {}", modules.display()));
    }
    if !chromium.exists() {
        return Err(format!("no browser at {}", chromium.display()));
    }
    Ok((modules, chromium))
}

fn scenario(s: &TestServer, phase: &str, token: Option<&str>, modules: &PathBuf, chromium: &PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(root.join("tests/console/scenario.mjs"))
        .env("NODE_PATH", modules)
        .env("BASE", &s.base)
        .env("PHASE", phase)
        .env("SHOTS", &shots)
        .env("CHROMIUM", chromium)
        .env("TOKEN", token.unwrap_or_default())
        .output()
        .expect("node");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "browser scenario {phase} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(&format!("console scenario {phase}: ok")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let (modules, chromium) = match browser_tools() {
        Ok(tools) => tools,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true: the browser tests must run, but {why} (run .ci/run)")
        }
        Err(why) => {
            eprintln!("SKIPPED the_console_in_a_real_browser: {why}");
            return;
        }
    };
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let s = TestServer::sqlite().await;
    let (s, modules_c, chromium_c) = (s, modules.clone(), chromium.clone());
    let s = tokio::task::spawn_blocking(move || {
        scenario(&s, "open", None, &modules_c, &chromium_c);
        s
    })
    .await
    .unwrap();
    let secret = s
        .ledger
        .create_token("oncall", &[Scope::RunsWrite, Scope::LedgerRead])
        .await
        .unwrap();
    let s = tokio::task::spawn_blocking(move || {
        scenario(&s, "signed", Some(&secret), &modules, &chromium);
        s
    })
    .await
    .unwrap();
    s.stop().await;
}
