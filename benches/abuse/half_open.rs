//! Connections that send part of a request's headers and stall: each must
//! be closed within the header-read timeout + 3 s, while an ordinary client
//! is still served.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger::http::HttpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::fixtures::{Backend, Db, Server};
use crate::{Checks, Plan};

const HALF_OPEN_REQUEST: &[u8] = b"GET /api/runs HTTP/1.1\r\nHost: x\r\n";
/// How long past the header-read timeout a stalled connection may stay open.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long past that a connection is watched, to say how long it outlived it.
const WATCH_BEYOND: Duration = Duration::from_secs(5);

enum HalfOpen {
    ConnectFailed,
    /// Closed by the server this long after the partial headers were sent.
    Closed(Duration),
    StillOpen,
}

/// Connects in flight at once: the flood is of stalled headers, not of SYNs.
const CONNECTING: usize = 64;

/// Shared by the stalling connections: a cap on connects in flight, a
/// permit per connection tried, and how many are open now.
struct Flood {
    connecting: Semaphore,
    tried: Semaphore,
    open: AtomicUsize,
}

async fn stall(addr: SocketAddr, flood: Arc<Flood>, watch_for: Duration) -> HalfOpen {
    let connected = {
        let _permit = flood.connecting.acquire().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.write_all(HALF_OPEN_REQUEST).await?;
            Ok::<_, std::io::Error>((tcp, Instant::now()))
        })
        .await
    };
    let Ok(Ok((mut tcp, sent))) = connected else {
        flood.tried.add_permits(1);
        return HalfOpen::ConnectFailed;
    };
    flood.open.fetch_add(1, Ordering::SeqCst);
    flood.tried.add_permits(1);
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout_at((sent + watch_for).into(), async {
        // Whatever the server answers (a 408, say), it must then close.
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    flood.open.fetch_sub(1, Ordering::SeqCst);
    match closed {
        Ok(()) => HalfOpen::Closed(sent.elapsed()),
        Err(_) => HalfOpen::StillOpen,
    }
}

const PROBE_EVERY: Duration = Duration::from_millis(200);

struct Probe {
    status: String,
    latency: Duration,
    /// Half-open connections open when it was sent.
    open: usize,
}

/// An ordinary client's `/healthz`, each on a new connection (it must be
/// accepted beside the stalled ones), until `flooded`.
async fn probe_health(base: String, flood: Arc<Flood>, flooded: Arc<AtomicBool>) -> Vec<Probe> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut probes = Vec::new();
    while !flooded.load(Ordering::SeqCst) {
        let open = flood.open.load(Ordering::SeqCst);
        let asked = Instant::now();
        let reply = client
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let status = match reply {
            Ok(reply) => reply.status().as_u16().to_string(),
            Err(e) => format!("no answer ({e})"),
        };
        probes.push(Probe {
            status,
            latency: asked.elapsed(),
            open,
        });
        tokio::time::sleep(PROBE_EVERY).await;
    }
    probes
}

pub async fn half_open(backend: &Backend, plan: &Plan, checks: &mut Checks) {
    let db = Db::fresh(backend).await;
    let timeout = Duration::from_secs(2);
    let config = HttpConfig {
        header_read_timeout: timeout,
        max_connections: 4096,
        rate_limit: None,
        ..HttpConfig::default()
    };
    let server = Server::start(db.open().await, config).await;
    let count = plan.half_open;
    let limit = timeout + CLOSE_GRACE;
    println!(
        "half-open: {count} connections ({CONNECTING} connecting at a time) send {:?} and stall; \
         header_read_timeout {} s, max_connections 4096, listen backlog 128 (tokio's, as `runledger serve`), \
         each must close within {} s",
        String::from_utf8_lossy(HALF_OPEN_REQUEST),
        timeout.as_secs(),
        limit.as_secs()
    );
    let flood = Arc::new(Flood {
        connecting: Semaphore::new(CONNECTING),
        tried: Semaphore::new(0),
        open: AtomicUsize::new(0),
    });
    let overflows = listen_overflows();
    let start = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|_| tokio::spawn(stall(server.addr, flood.clone(), limit + WATCH_BEYOND)))
        .collect();
    let flooded = Arc::new(AtomicBool::new(false));
    let probes = tokio::spawn(probe_health(server.base.clone(), flood.clone(), flooded.clone()));
    let _all = flood.tried.acquire_many(count as u32).await.unwrap();
    let opening = start.elapsed();
    let (mut failed, mut in_time, mut late, mut still_open) = (0, 0, 0, 0);
    let mut longest = Duration::ZERO;
    for task in tasks {
        match task.await.unwrap() {
            HalfOpen::ConnectFailed => failed += 1,
            HalfOpen::Closed(open) => {
                longest = longest.max(open);
                if open <= limit {
                    in_time += 1;
                } else {
                    late += 1;
                }
            }
            HalfOpen::StillOpen => still_open += 1,
        }
    }
    flooded.store(true, Ordering::SeqCst);
    let mut probes = probes.await.unwrap();
    let overflows = match (overflows, listen_overflows()) {
        (Some(before), Some(after)) => (after - before).to_string(),
        _ => "unknown".into(),
    };
    server.stop().await;
    println!(
        "  opened {} of {count} in {:.2} s ({failed} failed to connect)",
        count - failed,
        opening.as_secs_f64()
    );
    println!(
        "  closed by the server within {} s: {in_time}; later: {late}; still open after {} s: {still_open}",
        limit.as_secs(),
        (limit + WATCH_BEYOND).as_secs()
    );
    let longest = if still_open > 0 {
        format!("over {:.1} s", (limit + WATCH_BEYOND).as_secs_f64())
    } else {
        format!("{:.2} s", longest.as_secs_f64())
    };
    println!("  longest open: {longest}");
    println!("  accept-queue overflows on this host meanwhile (each a SYN retried after 1 s): {overflows}");
    probes.sort_by_key(|p| p.latency);
    let answered = probes.iter().filter(|p| p.status == "200").count();
    let busiest = probes.iter().map(|p| p.open).max().unwrap_or(0);
    let ms = |p: Option<&Probe>| p.map_or(f64::NAN, |p| p.latency.as_secs_f64() * 1e3);
    println!(
        "  GET /healthz during the flood, a new connection every {} ms: {answered} of {} answered 200, \
         with up to {busiest} half-open connections open; latency median {:.1} ms, max {:.1} ms",
        PROBE_EVERY.as_millis(),
        probes.len(),
        ms(probes.get(probes.len() / 2)),
        ms(probes.last())
    );
    for p in probes.iter().filter(|p| p.status != "200") {
        println!("  /healthz: {} after {:.1} ms", p.status, p.latency.as_secs_f64() * 1e3);
    }
    checks.expect(failed == 0, format!("half-open: {failed} connections failed to open"));
    checks.expect(
        late + still_open == 0,
        format!(
            "half-open: {} connections outlived {} s",
            late + still_open,
            limit.as_secs()
        ),
    );
    checks.expect(
        !probes.is_empty() && answered == probes.len(),
        format!("half-open: {answered} of {} /healthz probes answered 200", probes.len()),
    );
    db.remove().await;
}

/// The kernel's count of connections dropped because a listener's accept
/// queue was full (all processes: other load on the host adds to it).
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}
