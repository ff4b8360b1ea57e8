//! Slow and stalled clients cannot hold the server: unfinished headers are
//! cut after a timeout, connections are capped, a stream client that stopped
//! reading is dropped, and a revoked token's open streams end.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::StreamExt;
use runledger::auth::Scope;
use runledger::commands::{Command, CreateRun};
use runledger::domain::TaskName;
use runledger::http::HttpConfig;
use runledger_events::Metadata;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; the time it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .ok()
        .map(|()| started.elapsed())
}

fn half_open() -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_secs(1),
        ..HttpConfig::default()
    }
}

/// Clients that never finish their headers are closed after the timeout;
/// the server goes on answering others meanwhile.
async fn unfinished_headers_are_cut_after_the_timeout(s: TestServer) {
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
        tcp.write_all(b"GET /api/runs HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(tcp);
    }
    // Each request on a connection of its own: the server also closes an
    // idle keep-alive connection after the header timeout, and a pooled
    // client reusing one just as it closes would see an incomplete message.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let healthy = fresh.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
    for tcp in &mut idle {
        let took = closed_within(tcp, Duration::from_secs(10)).await;
        assert!(took.is_some(), "a half-open connection is still open after 10 s");
    }
    let runs = fresh.get(s.url("/api/runs")).send().await.unwrap();
    assert_eq!(runs.status(), 200);
    s.stop().await;
}

fn capped() -> HttpConfig {
    HttpConfig {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(60),
        ..HttpConfig::default()
    }
}

/// Past the cap, a new connection waits until one closes.
async fn connections_are_capped(s: TestServer) {
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let waiting = client
        .get(s.url("/healthz"))
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(waiting.is_err(), "a fifth connection was served while four were open");
    drop(held);
    let served = client
        .get(s.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert_eq!(served.expect("served once a connection closed").status(), 200);
    s.stop().await;
}

fn stalling() -> HttpConfig {
    HttpConfig {
        stalled_client_timeout: Duration::from_secs(1),
        ..HttpConfig::default()
    }
}

/// A stream client that stops reading is dropped once the server's writes
/// have waited for it longer than the timeout.
async fn a_stalled_stream_client_is_dropped(s: TestServer) {
    // A small receive buffer: the kernel holds less of what is not read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr(&s).parse().unwrap()).await.unwrap();
    tcp.write_all(b"GET /api/events/stream?after=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Far more than socket buffers hold, while the client reads nothing.
    let task = TaskName::parse("t").unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let ledger = s.ledger.clone();
        let task = task.clone();
        writers.spawn(async move {
            for _ in 0..1_500 {
                let create = Command::Create(CreateRun::new(task.clone()));
                ledger.execute(create, Metadata::actor("loader")).await.expect("append");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now drains what the kernel holds, then meets the close.
    let took = closed_within(&mut tcp, Duration::from_secs(20)).await;
    assert!(took.is_some(), "the stalled stream is still open");
    s.get("/healthz").await.ok(200);
    s.stop().await;
}

/// A stream opened with a token ends within about a second of the token's
/// revocation by another process, as its new requests are refused.
async fn a_revoked_tokens_streams_end(s: TestServer) {
    let secret = s.ledger.create_token("watcher", &[Scope::LedgerRead]).await.unwrap();
    let writer = s.ledger.create_token("writer", &[Scope::RunsWrite]).await.unwrap();
    let open = |path: &'static str| {
        let request = s.client.get(s.url(path)).bearer_auth(&secret);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes_stream()
        }
    };
    let mut global = open("/api/events/stream?after=0").await;
    let run = s
        .send_as(
            Some(&writer),
            reqwest::Method::POST,
            "/api/runs",
            Some(json!({"task_name": "t"})),
        )
        .await
        .ok(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run_path: &'static str = Box::leak(format!("/api/runs/{run}/stream").into_boxed_str());
    let mut one = open(run_path).await;
    let first = tokio::time::timeout(Duration::from_secs(5), global.next()).await;
    assert!(first.unwrap().unwrap().unwrap().starts_with(b"id: 1"));
    let revoked = s.cli(&["token", "revoke", "watcher"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let revoked_at = Instant::now();
    for stream in [&mut global, &mut one] {
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "a revoked token's stream is still open");
    }
    let took = revoked_at.elapsed();
    let refused = s
        .send_as(Some(&secret), reqwest::Method::GET, "/api/events", None)
        .await;
    refused.problem(401, "unauthorized");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    s.stop().await;
}

macro_rules! with_config {
    ($($name:ident => $config:expr),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestServer::sqlite_with($config).await).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::TestServer::postgres_with(stringify!($name), $config).await {
                        super::$name(s).await
                    }
                }
            )+
        }
    };
}

with_config!(
    unfinished_headers_are_cut_after_the_timeout => super::half_open(),
    connections_are_capped => super::capped(),
    a_stalled_stream_client_is_dropped => super::stalling(),
    a_revoked_tokens_streams_end => runledger::http::HttpConfig::default(),
);
