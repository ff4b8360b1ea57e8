//! OpenTelemetry, on both backends: a caller's W3C `traceparent` puts its
//! trace id on the events its request appends (shown by the run's events,
//! the global log and the debug bundle; bulk operations included); a
//! malformed one is ignored; and the real binary with `--otlp-endpoint`
//! exports its request spans, children of the caller's span and named by
//! route template, to an OTLP/HTTP receiver this test starts.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};

use common::{send_checked, TestServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

/// Sends `body` to `base` + `path` with the given extra headers; the reply's
/// status and JSON body.
async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = send_checked(req).await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The metadata of a run's events, oldest first.
async fn event_metadata(base: &str, run: &str) -> Vec<Value> {
    let (status, body) = send(
        base,
        reqwest::Method::GET,
        &format!("/api/runs/{run}/events"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["metadata"].clone())
        .collect()
}

async fn a_callers_trace_id_is_on_the_events_its_request_appends(s: TestServer) {
    let tp = traceparent(TRACE, PARENT);
    let (status, run) = send(
        &s.base,
        reqwest::Method::POST,
        "/api/runs",
        &[("traceparent", &tp), ("tracestate", "vendor=abc")],
        Some(json!({"task_name": "traced"})),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let other = "0af7651916cd43dd8448eb211c80319c";
    let tp2 = traceparent(other, "b7ad6b7169203331");
    let (status, _) = send(
        &s.base,
        reqwest::Method::POST,
        &format!("/api/runs/{id}/start"),
        &[("traceparent", &tp2)],
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);

    let metadata = event_metadata(&s.base, &id).await;
    let traces: Vec<&str> = metadata.iter().map(|m| m["trace_id"].as_str().unwrap()).collect();
    assert_eq!(traces, [TRACE, other], "each event carries its own request's trace");
    assert!(
        metadata[0]["request_id"].is_string(),
        "beside the request id: {}",
        metadata[0]
    );

    // The global log and the debug bundle show the same metadata.
    let (_, log) = send(
        &s.base,
        reqwest::Method::GET,
        &format!("/api/events?run_id={id}"),
        &[],
        None,
    )
    .await;
    let logged: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged, [TRACE, other]);
    let (_, bundle) = send(
        &s.base,
        reqwest::Method::GET,
        &format!("/api/runs/{id}/debug-bundle"),
        &[],
        None,
    )
    .await;
    assert_eq!(bundle["events"][0]["metadata"]["trace_id"], TRACE);
    s.stop().await;
}

async fn without_a_traceparent_events_carry_no_trace_id(s: TestServer) {
    let run = s.create(json!({"task_name": "untraced", "triggered_by": "api"})).await;
    let id = run["id"].as_str().unwrap();
    let metadata = event_metadata(&s.base, id).await;
    assert_eq!(metadata.len(), 1);
    assert!(metadata[0].get("trace_id").is_none(), "{}", metadata[0]);
    assert_eq!(metadata[0]["actor"], "anonymous");
    s.stop().await;
}

async fn a_malformed_traceparent_is_ignored(s: TestServer) {
    let malformed = [
        "garbage".to_owned(),
        // Version ff is forbidden; all-zero trace and span ids are invalid.
        format!("ff-{TRACE}-{PARENT}-01"),
        traceparent("00000000000000000000000000000000", PARENT),
        traceparent(TRACE, "0000000000000000"),
        // Upper-case hex is not allowed.
        traceparent(&TRACE.to_uppercase(), PARENT),
    ];
    for tp in &malformed {
        let (status, run) = send(
            &s.base,
            reqwest::Method::POST,
            "/api/runs",
            &[("traceparent", tp), ("tracestate", "vendor=abc")],
            Some(json!({"task_name": "malformed"})),
        )
        .await;
        assert_eq!(
            status, 201,
            "a bad traceparent {tp:?} is not the request's fault: {run}"
        );
        let metadata = event_metadata(&s.base, run["id"].as_str().unwrap()).await;
        assert!(metadata[0].get("trace_id").is_none(), "{tp:?} gave {}", metadata[0]);
    }
    s.stop().await;
}

async fn bulk_events_carry_the_trace_id_of_their_request(s: TestServer) {
    let a = s.create(json!({"task_name": "bulk-traced"})).await;
    let b = s.create(json!({"task_name": "bulk-traced"})).await;
    let ids = [a["id"].as_str().unwrap(), b["id"].as_str().unwrap()];
    let tp = traceparent(TRACE, PARENT);
    let (status, body) = send(
        &s.base,
        reqwest::Method::POST,
        "/api/runs/bulk/cancel",
        &[("traceparent", &tp)],
        Some(json!({"ids": ids})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["canceled"], 2, "{body}");
    for id in ids {
        let metadata = event_metadata(&s.base, id).await;
        let last = metadata.last().unwrap();
        assert!(last["operation_id"].is_string(), "{last}");
        assert_eq!(last["trace_id"], TRACE, "{last}");
        assert!(metadata[0].get("trace_id").is_none());
    }
    s.stop().await;
}

/// An OTLP/HTTP (protobuf) traces receiver on port 0; every span it is sent.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    use axum::body::Bytes;
    use axum::extract::State;
    let spans = Arc::new(Mutex::new(Vec::new()));
    async fn receive(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> impl axum::response::IntoResponse {
        let request = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
        let received = request
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        spans.lock().unwrap().extend(received);
        (
            [("content-type", "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, spans)
}

async fn the_binary_exports_request_spans_as_children_of_the_callers_span(mut s: TestServer) {
    let (collector, spans) = otlp_receiver().await;
    s.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &s.database_url()])
        .arg("--anchors")
        .arg(dir.path().join("anchors"))
        .args(["--otlp-endpoint", &collector])
        // The log's level does not decide what is exported.
        .env("RUST_LOG", "warn")
        .env_remove("RUNLEDGER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start runledger");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("ready line");
    let base = line.trim().rsplit(' ').next().expect("address").to_owned();

    let tp = traceparent(TRACE, PARENT);
    let (status, run) = send(
        &base,
        reqwest::Method::POST,
        "/api/runs",
        &[("traceparent", &tp), ("tracestate", "vendor=abc")],
        Some(json!({"task_name": "exported"})),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let (status, _) = send(
        &base,
        reqwest::Method::POST,
        &format!("/api/runs/{id}/start"),
        &[("traceparent", "00-bad")],
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let metadata = event_metadata(&base, &id).await;
    assert_eq!(metadata[0]["trace_id"], TRACE);
    // A malformed traceparent is ignored: the request began a trace of its
    // own, and its event carries that trace's id.
    let own = metadata[1]["trace_id"]
        .as_str()
        .expect("the server's own trace")
        .to_owned();
    assert!(own.len() == 32 && own != TRACE, "{own}");

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "serve stops cleanly");

    // Shutdown flushed the exporter: the spans are there without waiting.
    let spans = spans.lock().unwrap().clone();
    let of_trace = |trace: &str| {
        spans
            .iter()
            .filter(|span| hex(&span.trace_id) == trace)
            .collect::<Vec<_>>()
    };
    let traced = of_trace(TRACE);
    // The request span is the caller's span's child; the server's inner
    // spans are its descendants, in the same trace.
    let roots: Vec<&&Span> = traced
        .iter()
        .filter(|span| hex(&span.parent_span_id) == PARENT)
        .collect();
    assert_eq!(roots.len(), 1, "one child of the caller's span among {traced:?}");
    let create = roots[0];
    assert_eq!(create.name, "POST /api/runs");
    assert_eq!(create.trace_state, "vendor=abc", "the caller's tracestate goes on");
    assert_eq!(create.kind, 2, "a server span");
    let status = create
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code")
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(
        status,
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(201)),
        "the answer's status: {:?}",
        create.attributes
    );
    let own_spans = of_trace(&own);
    let roots: Vec<&&Span> = own_spans.iter().filter(|span| span.parent_span_id.is_empty()).collect();
    assert_eq!(
        roots.len(),
        1,
        "one root span, the malformed parent ignored: {own_spans:?}"
    );
    assert_eq!(roots[0].name, "POST /api/runs/{id}/start");
    // Reads are traced too.
    assert!(spans.iter().any(|span| span.name == "GET /api/runs/{id}/events"));
    s.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

backend_tests!(
    a_callers_trace_id_is_on_the_events_its_request_appends,
    without_a_traceparent_events_carry_no_trace_id,
    a_malformed_traceparent_is_ignored,
    bulk_events_carry_the_trace_id_of_their_request,
    the_binary_exports_request_spans_as_children_of_the_callers_span,
);
