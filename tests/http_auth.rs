//! Tokens, scopes and rate limits through the real server, on both backends.

mod common;

use common::SendChecked;

use std::num::NonZeroU32;

use common::{Reply, TestServer};
use reqwest::Method;
use runledger::auth::Scope;
use runledger::http::{HttpConfig, RateLimit};
use serde_json::{json, Value};

/// One token per scope, named after it: `runs-read`, `runs-write`…
async fn token_per_scope(s: &TestServer) -> Vec<(Scope, String)> {
    let mut tokens = Vec::new();
    for scope in Scope::ALL {
        let name = scope.as_str().replace(':', "-");
        tokens.push((scope, s.ledger.create_token(&name, &[scope]).await.expect("token")));
    }
    tokens
}

/// Every operation of the OpenAPI document with the scope it states: none
/// (public), any token (`Some(None)`, the session route) or one scope.
fn operations(doc: &Value) -> Vec<(Method, String, Option<Option<Scope>>)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method: Method = method.to_uppercase().parse().expect("method");
            let scope = op["security"].as_array().map(|reqs| {
                // The bearer scope, or nothing when the API runs open.
                assert_eq!(reqs.len(), 2, "{method} {path}: a token, or none when open");
                assert_eq!(reqs[1], json!({}), "{method} {path}: the open alternative");
                let scopes = reqs[0]["bearer"].as_array().expect("bearer scopes");
                if scopes.is_empty() {
                    return None;
                }
                assert_eq!(scopes.len(), 1, "{method} {path}: one scope");
                Some(Scope::parse(scopes[0].as_str().unwrap()).expect("a known scope"))
            });
            out.push((method, path.clone(), scope));
        }
    }
    out
}

/// A concrete URL for a route template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0195f2a0-0000-7000-8000-000000000000")
        .replace("{taskName}", "nightly")
}

/// A token that lacks `required` (and everything that covers it).
fn without(required: Scope) -> Scope {
    match required {
        Scope::RunsRead => Scope::LedgerRead,
        Scope::RunsWrite => Scope::RunsRead,
        Scope::RunsAdmin => Scope::RunsWrite,
        Scope::LedgerRead => Scope::RunsAdmin,
    }
}

async fn call(s: &TestServer, token: Option<&str>, method: &Method, path: &str) -> Reply {
    let body = (method != Method::GET).then(|| json!({}));
    if path.ends_with("/stream") {
        // A stream that opens never ends: take its head only.
        let mut req = s.client.request(method.clone(), s.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send_checked().await.expect("request");
        if resp.status().is_success() {
            return Reply {
                status: resp.status(),
                content_type: String::new(),
                headers: resp.headers().clone(),
                body: Value::Null,
            };
        }
        return TestServer::reply(resp).await;
    }
    s.send_as(token, method.clone(), path, body).await
}

/// Every route × no token, a token without the scope, a token with it; the
/// scopes are the ones the OpenAPI document states.
async fn every_route_needs_its_scope_and_only_that(s: TestServer) {
    let tokens = token_per_scope(&s).await;
    let secret = |scope: Scope| {
        tokens
            .iter()
            .find(|(s, _)| *s == scope)
            .map(|(_, t)| t.as_str())
            .unwrap()
    };
    let doc = s.get("/openapi.json").await.ok(200).clone();
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    let operations = operations(&doc);
    let guarded: Vec<_> = operations.iter().filter(|o| o.2.is_some()).collect();
    assert!(guarded.len() >= 20, "only {} guarded operations", guarded.len());
    for (method, path, scope) in &operations {
        let url = concrete(path);
        let Some(required) = *scope else {
            assert!(!path.starts_with("/api/"), "{method} {path} is public");
            let reply = call(&s, None, method, &url).await;
            assert_eq!(reply.status, 200, "{method} {path} is public: {}", reply.body);
            continue;
        };
        let anonymous = call(&s, None, method, &url).await;
        assert_eq!(anonymous.problem(401, "unauthorized")["details"], json!({}));
        assert!(anonymous.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let Some(required) = required else {
            // Any token will do, whatever its scopes.
            for scope in Scope::ALL {
                let allowed = call(&s, Some(secret(scope)), method, &url).await;
                assert!(
                    ![401, 403, 429].contains(&allowed.status.as_u16()),
                    "{method} {path} with {scope}: {} {}",
                    allowed.status,
                    allowed.body
                );
            }
            continue;
        };

        let wrong = without(required);
        let refused = call(&s, Some(secret(wrong)), method, &url).await;
        let body = refused.problem(403, "insufficient_scope");
        assert_eq!(body["required_scope"], required.as_str(), "{method} {path}");
        assert_eq!(body["token_scopes"], json!([wrong.as_str()]), "{method} {path}");
        assert_eq!(
            body["details"],
            json!({"required_scope": required.as_str(), "token_scopes": [wrong.as_str()]}),
            "{method} {path}"
        );
        assert!(refused.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(&format!("scope=\"{required}\"")));

        let allowed = call(&s, Some(secret(required)), method, &url).await;
        assert!(
            ![401, 403, 429].contains(&allowed.status.as_u16()),
            "{method} {path} with {required}: {} {}",
            allowed.status,
            allowed.body
        );
        assert!(allowed.headers.contains_key("x-ratelimit-limit"), "{method} {path}");
    }
    // A stronger scope of the same family covers a weaker one.
    let listed = s
        .send_as(Some(secret(Scope::RunsAdmin)), Method::GET, "/api/runs", None)
        .await;
    listed.ok(200);
    s.stop().await;
}

async fn unknown_malformed_and_revoked_tokens_are_401(s: TestServer) {
    let secret = s.ledger.create_token("ops", &[Scope::RunsRead]).await.expect("token");
    s.send_as(Some(&secret), Method::GET, "/api/runs", None).await.ok(200);
    let unknown = s.send_as(Some("rl_0000"), Method::GET, "/api/runs", None).await;
    assert!(unknown.problem(401, "unauthorized")["detail"]
        .as_str()
        .unwrap()
        .contains("unknown or revoked"));
    let basic = s
        .client
        .get(s.url("/api/runs"))
        .header("authorization", "Basic b3BzOnNlY3JldA==")
        .send_checked()
        .await
        .unwrap();
    TestServer::reply(basic).await.problem(401, "unauthorized");
    s.ledger.revoke_token("ops").await.expect("revoke");
    s.send_as(Some(&secret), Method::GET, "/api/runs", None)
        .await
        .problem(401, "unauthorized");
    // A revoked name is never given to another token.
    assert!(s.ledger.create_token("ops", &[Scope::RunsRead]).await.is_err());
    s.stop().await;
}

/// Open (no tokens, loopback): the actor is `anonymous`. The first token ends
/// that at once: from then on a request without one is refused.
async fn the_open_api_closes_when_a_token_exists_and_the_token_is_the_actor(s: TestServer) {
    let open = s.create(json!({"task_name": "nightly"})).await;
    let id = open["id"].as_str().unwrap().to_owned();
    let events = s.get(&format!("/api/runs/{id}/events")).await;
    assert_eq!(events.ok(200)["events"][0]["metadata"]["actor"], "anonymous");

    let writer = s
        .ledger
        .create_token("scheduler-7", &[Scope::RunsWrite])
        .await
        .expect("token");
    let reader = s
        .ledger
        .create_token("auditor", &[Scope::LedgerRead])
        .await
        .expect("token");
    s.get("/api/runs").await.problem(401, "unauthorized");
    s.post("/api/runs", json!({"task_name": "nightly"}))
        .await
        .problem(401, "unauthorized");

    let run = s
        .send_as(
            Some(&writer),
            Method::POST,
            "/api/runs",
            Some(json!({"task_name": "nightly"})),
        )
        .await
        .ok(201)
        .clone();
    let run_id = run["id"].as_str().unwrap();
    s.send_as(
        Some(&writer),
        Method::POST,
        &format!("/api/runs/{run_id}/start"),
        Some(json!({})),
    )
    .await
    .ok(200);
    let events = s
        .send_as(Some(&writer), Method::GET, &format!("/api/runs/{run_id}/events"), None)
        .await
        .ok(200)
        .clone();
    let actors: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["scheduler-7", "scheduler-7"]);
    // Who did what: the auditor asks the log for the scheduler's events.
    let by_actor = s
        .send_as(Some(&reader), Method::GET, "/api/events?actor=scheduler-7", None)
        .await
        .ok(200)
        .clone();
    let found: Vec<&str> = by_actor["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_id"].as_str().unwrap())
        .collect();
    let stream = format!("run-{run_id}");
    assert_eq!(found, [stream.as_str(), stream.as_str()]);
    // A failed write changes nothing.
    let count = s.event_count().await;
    s.send_as(
        Some(&reader),
        Method::POST,
        "/api/runs",
        Some(json!({"task_name": "x"})),
    )
    .await
    .problem(403, "insufficient_scope");
    assert_eq!(s.event_count().await, count);
    // Public routes stay public.
    s.get("/healthz").await.ok(200);
    s.get("/readyz").await.ok(200);
    s.stop().await;
}

fn limited() -> HttpConfig {
    HttpConfig {
        rate_limit: Some(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        }),
        ..HttpConfig::default()
    }
}

fn header(reply: &Reply, name: &str) -> u64 {
    reply.headers[name].to_str().unwrap().parse().unwrap()
}

/// A burst of 3 at 1 a second: three answers count down, the fourth is 429
/// with Retry-After; each token has its own budget.
async fn rate_limits_answer_429_with_headers(s: TestServer) {
    let a = s.ledger.create_token("a", &[Scope::RunsRead]).await.unwrap();
    let b = s.ledger.create_token("b", &[Scope::RunsRead]).await.unwrap();
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    for remaining in [2, 1, 0] {
        let before = unix_now();
        let reply = s.send_as(Some(&a), Method::GET, "/api/runs", None).await;
        reply.ok(200);
        assert_eq!(header(&reply, "x-ratelimit-limit"), 3);
        assert_eq!(header(&reply, "x-ratelimit-remaining"), remaining);
        // The Unix time at which the burst is full again: one second per spent request.
        let reset = header(&reply, "x-ratelimit-reset");
        let spent = 3 - remaining;
        assert!(
            (before + spent..=unix_now() + spent + 1).contains(&reset),
            "reset {reset}, now {}",
            unix_now()
        );
    }
    let before = unix_now();
    let refused = s.send_as(Some(&a), Method::GET, "/api/runs", None).await;
    let problem = refused.problem(429, "rate_limited");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), 0);
    let retry_after = header(&refused, "retry-after");
    assert_eq!(retry_after, 1, "one request refills in a second");
    let reset = header(&refused, "x-ratelimit-reset");
    assert!((before + 3..=unix_now() + 4).contains(&reset), "reset {reset}");
    assert_eq!(
        problem["details"],
        json!({"retry_after": retry_after, "limit": 3, "window": "3s"})
    );
    // Another token is not charged for a's requests.
    let other = s.send_as(Some(&b), Method::GET, "/api/runs", None).await;
    other.ok(200);
    assert_eq!(header(&other, "x-ratelimit-remaining"), 2);
    // Routes without a scope are not limited.
    let health = s.get("/healthz").await;
    health.ok(200);
    assert!(!health.headers.contains_key("x-ratelimit-limit"));
    s.stop().await;
}

/// Open mode: the limit is per client address.
async fn the_open_api_is_limited_per_client_address(s: TestServer) {
    for _ in 0..3 {
        s.get("/api/tasks").await.ok(200);
    }
    let refused = s.get("/api/runs").await;
    refused.problem(429, "rate_limited");
    assert!(header(&refused, "retry-after") >= 1);
    s.stop().await;
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limits_answer_429_with_headers() {
        super::rate_limits_answer_429_with_headers(TestServer::sqlite_with(limited()).await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_api_is_limited_per_client_address() {
        super::the_open_api_is_limited_per_client_address(TestServer::sqlite_with(limited()).await).await
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limits_answer_429_with_headers() {
        if let Some(s) = TestServer::postgres_with("rate_limits_answer_429_with_headers", limited()).await {
            super::rate_limits_answer_429_with_headers(s).await
        }
    }
}

mod both {
    use super::*;
    backend_tests!(
        every_route_needs_its_scope_and_only_that,
        unknown_malformed_and_revoked_tokens_are_401,
        the_open_api_closes_when_a_token_exists_and_the_token_is_the_actor,
    );
}
