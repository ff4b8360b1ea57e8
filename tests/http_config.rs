//! Server settings that change behaviour at the edge: CORS for a browser
//! console, and refusing to serve an open API beyond this machine.

mod common;

use common::SendChecked;

use common::TestServer;
use runledger::http::HttpConfig;

async fn cors_admits_only_the_configured_origins(s: TestServer) {
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/api/runs"))
        .header("origin", "https://console.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send_checked()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let other = s
        .client
        .get(s.url("/api/runs"))
        .header("origin", "https://evil.example")
        .send_checked()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "other origins get no grant"
    );
    s.stop().await;
}

fn console() -> HttpConfig {
    HttpConfig {
        cors_origins: vec!["https://console.example".into()],
        ..HttpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cors_admits_only_the_configured_origins() {
    cors_admits_only_the_configured_origins(TestServer::sqlite_with(console()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cors_admits_only_the_configured_origins() {
    if let Some(s) = TestServer::postgres_with("postgres_cors_admits_only_the_configured_origins", console()).await {
        cors_admits_only_the_configured_origins(s).await;
    }
}

#[tokio::test]
async fn without_cors_configured_no_origin_is_granted() {
    let s = TestServer::sqlite().await;
    let r = s
        .client
        .get(s.url("/api/runs"))
        .header("origin", "https://console.example")
        .send_checked()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}
