//! The connection loop: every connection bounded in number and in how long
//! its client may stall. A client that never finishes its request headers
//! is closed after `header_read_timeout`; one that stops reading (a stalled
//! SSE client, say) after `write_timeout` (a stream resumes by
//! `Last-Event-ID`); past `max_connections` the server stops accepting until
//! one closes, and says so in its log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Limits on connections and on clients that stall.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    /// After shutdown is asked for, how long connections may take to finish.
    pub shutdown_grace: Duration,
}

/// How often the log says again that the connection cap is reached.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` is cancelled, then lets open
/// connections finish for the grace period.
pub async fn run(router: Router, listener: TcpListener, limits: ConnectionLimits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut warned_at: Option<Instant> = None;
    loop {
        if slots.available_permits() == 0 && warned_at.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
            tracing::warn!(
                max_connections = limits.max_connections,
                "the connection cap is reached; new connections wait until one closes"
            );
            warned_at = Some(Instant::now());
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
        io.set_write_timeout(Some(limits.write_timeout));
        let io = TokioIo::new(Box::pin(io));
        let app = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            app.clone().oneshot(request)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, client = %addr, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace period; dropping them");
        }
    }
}
