//! Browser sessions through the real server, on both backends: a cookie
//! bound to the token it was signed in with (scopes, actor, revocation),
//! the CSRF defence of cookie-authenticated writes, streams by cookie, and
//! signing out.

mod common;

use std::time::Duration;

use common::{send_checked, Reply, TestServer};
use futures_util::StreamExt;
use reqwest::Method;
use runledger::auth::Scope;
use serde_json::{json, Value};

/// Signs in with `secret`; the reply and the `name=value` of its cookie.
async fn sign_in(s: &TestServer, secret: &str) -> (Reply, String) {
    let req = s.client.post(s.url("/api/session")).bearer_auth(secret);
    let reply = TestServer::reply(send_checked(req).await.unwrap()).await;
    let set = reply.headers["set-cookie"].to_str().unwrap().to_owned();
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (reply, pair)
}

/// A request with the session cookie and the given extra headers.
async fn with_cookie(
    s: &TestServer,
    cookie: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = s.client.request(method, s.url(path)).header("cookie", cookie);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    TestServer::reply(send_checked(req).await.unwrap()).await
}

async fn a_session_is_its_token(s: TestServer) {
    let secret = s
        .ledger
        .create_token("oncall", &[Scope::RunsWrite, Scope::LedgerRead])
        .await
        .unwrap();
    let (reply, cookie) = sign_in(&s, &secret).await;
    let body = reply.ok(201);
    assert_eq!(body["actor"], "oncall");
    assert_eq!(body["scopes"], json!(["runs:write", "ledger:read"]));
    assert_eq!(body["via"], "bearer");
    assert!(body["expires_at"].is_string());
    let set = reply.headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("runledger_session="), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");

    // Reads by cookie alone.
    let me = with_cookie(&s, &cookie, Method::GET, "/api/session", &[], None).await;
    assert_eq!(me.ok(200)["via"], "cookie");
    assert_eq!(me.body["actor"], "oncall");
    assert!(me.body["expires_at"].is_string());
    let listed = with_cookie(&s, &cookie, Method::GET, "/api/runs", &[], None).await;
    assert_eq!(listed.ok(200)["total"], 0);

    // A write from this server's own page: the actor is the token's name.
    let origin = s.base.clone();
    let created = with_cookie(
        &s,
        &cookie,
        Method::POST,
        "/api/runs",
        &[("origin", &origin)],
        Some(json!({"task_name": "etl"})),
    )
    .await;
    let id = created.ok(201)["id"].as_str().unwrap().to_owned();
    let events = with_cookie(&s, &cookie, Method::GET, &format!("/api/runs/{id}/events"), &[], None).await;
    assert_eq!(events.ok(200)["events"][0]["metadata"]["actor"], "oncall");

    // The token's scopes, no more: runs:write cannot delete.
    let refused = with_cookie(
        &s,
        &cookie,
        Method::DELETE,
        &format!("/api/runs/{id}"),
        &[("origin", &origin)],
        Some(json!({})),
    )
    .await;
    assert_eq!(
        refused.problem(403, "insufficient_scope")["required_scope"],
        "runs:admin"
    );

    // Behind a TLS-terminating proxy the cookie is Secure.
    let req = s
        .client
        .post(s.url("/api/session"))
        .bearer_auth(&secret)
        .header("x-forwarded-proto", "https");
    let secure = TestServer::reply(send_checked(req).await.unwrap()).await;
    secure.ok(201);
    assert!(secure.headers["set-cookie"].to_str().unwrap().contains("; Secure"));

    // A cookie is no way to sign in, an unknown token is refused, and a
    // stray cookie is no credential.
    let again = with_cookie(&s, &cookie, Method::POST, "/api/session", &[("origin", &origin)], None).await;
    again.problem(401, "unauthorized");
    let req = s.client.post(s.url("/api/session")).bearer_auth("rl_nope");
    TestServer::reply(send_checked(req).await.unwrap())
        .await
        .problem(401, "unauthorized");
    let stray = with_cookie(&s, "runledger_session=00", Method::GET, "/api/runs", &[], None).await;
    stray.problem(401, "unauthorized");
    // The session route reads no query.
    let req = s.client.post(s.url("/api/session?remember=1")).bearer_auth(&secret);
    let bad = TestServer::reply(send_checked(req).await.unwrap()).await;
    bad.invalid_at("query.remember");
    s.stop().await;
}

async fn cookie_writes_need_their_own_origin(s: TestServer) {
    let secret = s.ledger.create_token("oncall", &[Scope::RunsWrite]).await.unwrap();
    let (_, cookie) = sign_in(&s, &secret).await;
    let before = s.event_count().await;
    let body = || Some(json!({"task_name": "etl"}));
    let no_origin = with_cookie(&s, &cookie, Method::POST, "/api/runs", &[], body()).await;
    assert!(no_origin.problem(403, "cross_site_request")["detail"]
        .as_str()
        .unwrap()
        .contains("Origin"));
    let elsewhere = with_cookie(
        &s,
        &cookie,
        Method::POST,
        "/api/runs",
        &[("origin", "https://evil.example")],
        body(),
    )
    .await;
    assert!(elsewhere.problem(403, "cross_site_request")["detail"]
        .as_str()
        .unwrap()
        .contains("evil.example"));
    // A foreign origin is refused even with the custom header.
    let both = with_cookie(
        &s,
        &cookie,
        Method::POST,
        "/api/runs",
        &[("origin", "https://evil.example"), ("x-runledger-csrf", "1")],
        body(),
    )
    .await;
    both.problem(403, "cross_site_request");
    assert_eq!(s.event_count().await, before, "nothing appended");

    // Accepted: the custom header without an Origin, or this server's origin.
    let header = with_cookie(
        &s,
        &cookie,
        Method::POST,
        "/api/runs",
        &[("x-runledger-csrf", "1")],
        body(),
    )
    .await;
    header.ok(201);
    let origin = s.base.clone();
    let own = with_cookie(&s, &cookie, Method::POST, "/api/runs", &[("origin", &origin)], body()).await;
    own.ok(201);
    assert_eq!(s.event_count().await, before + 2);
    // A bearer token needs no CSRF defence: a browser never sends one by itself.
    let bearer = s.send_as(Some(&secret), Method::POST, "/api/runs", body()).await;
    bearer.ok(201);
    s.stop().await;
}

/// Reads the stream until it ends (the server closes it).
async fn ended<T, E>(stream: &mut (impl futures_util::Stream<Item = Result<T, E>> + Unpin)) -> bool {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await
    .is_ok()
}

async fn streams_follow_the_cookie_and_end_with_the_session(s: TestServer) {
    let secret = s
        .ledger
        .create_token("watcher", &[Scope::LedgerRead, Scope::RunsWrite])
        .await
        .unwrap();
    // Another token keeps the API closed once `watcher` is revoked.
    s.ledger.create_token("other", &[Scope::RunsRead]).await.unwrap();
    s.send_as(
        Some(&secret),
        Method::POST,
        "/api/runs",
        Some(json!({"task_name": "etl"})),
    )
    .await
    .ok(201);
    let open = |cookie: String| {
        let req = s
            .client
            .get(s.url("/api/events/stream?after=0"))
            .header("cookie", cookie);
        async move {
            let response = send_checked(req).await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"));
            response.bytes_stream()
        }
    };
    // Signing out ends the session's streams, and the cookie is cleared.
    let (_, first) = sign_in(&s, &secret).await;
    let mut stream = open(first.clone()).await;
    let frame = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&frame).contains("event: run.created"));
    let origin = s.base.clone();
    let out = with_cookie(&s, &first, Method::DELETE, "/api/session", &[("origin", &origin)], None).await;
    assert_eq!(out.status, 204);
    let cleared = out.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("runledger_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(ended(&mut stream).await, "the stream outlived its session");
    with_cookie(&s, &first, Method::GET, "/api/session", &[], None)
        .await
        .problem(401, "unauthorized");

    // Signing out is a write: it needs the CSRF defence too.
    let (_, second) = sign_in(&s, &secret).await;
    with_cookie(&s, &second, Method::DELETE, "/api/session", &[], None)
        .await
        .problem(403, "cross_site_request");
    // Revoking the token ends its sessions and their streams.
    let mut stream = open(second.clone()).await;
    stream.next().await.unwrap().unwrap();
    s.ledger.revoke_token("watcher").await.unwrap();
    assert!(ended(&mut stream).await, "the stream outlived its token");
    with_cookie(&s, &second, Method::GET, "/api/runs", &[], None)
        .await
        .problem(401, "unauthorized");
    s.stop().await;
}

async fn an_open_api_has_nothing_to_sign_in_to(s: TestServer) {
    let req = s.client.post(s.url("/api/session"));
    let bare = TestServer::reply(send_checked(req).await.unwrap()).await;
    {
        let r = &bare;
        assert!(r.problem(409, "api_runs_open")["detail"]
            .as_str()
            .unwrap()
            .contains("open"));
        assert!(!r.headers.contains_key("set-cookie"));
    }
    let me = s.get("/api/session").await;
    assert_eq!(me.ok(200)["actor"], "anonymous");
    assert_eq!(me.body["via"], "open");
    assert_eq!(me.body["expires_at"], Value::Null);
    s.stop().await;
}

mod backends {
    use super::*;
    backend_tests!(
        a_session_is_its_token,
        cookie_writes_need_their_own_origin,
        streams_follow_the_cookie_and_end_with_the_session,
        an_open_api_has_nothing_to_sign_in_to,
    );
}
