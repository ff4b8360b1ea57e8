//! The command line: `serve`, `migrate`, `verify`, `rebuild`, `export`,
//! `import` and `token`, configured by flags with `RUNLEDGER_` environment-variable
//! fallbacks. Only `serve` and `migrate` create a ledger; the others refuse
//! a database that holds none. `runs` and `tasks` talk to a running server
//! instead (`crate::client`).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::anchors::{AnchorArgs, Anchoring, Cadence};
use crate::auth::Scope;
use crate::http::{self, HttpConfig};
use crate::ledger::{bundle, DatabaseUrl, Ledger};
use crate::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(name = "runledger", version, about = "An event-sourced ledger for job runs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
    /// How the log on stderr is written: `text` (coloured only on a
    /// terminal) or `json` (one object per line).
    #[arg(long, global = true, env = "RUNLEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Cli {
    /// Where `serve` exports its spans, if anywhere (an empty value: nowhere).
    pub fn otlp_endpoint(&self) -> Option<&str> {
        match &self.command {
            Cmd::Serve(args) => args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()),
            _ => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(DatabaseArgs),
    /// Re-compute the hash chain and check the log against its anchors; exit
    /// 1 naming the first position that was altered, removed or reordered, a
    /// truncated tail, a re-sealed chain or a forged anchor.
    Verify(AnchoredArgs),
    /// Drop every projection and replay the log into it (refused when the log
    /// is behind its anchors).
    Rebuild(AnchoredArgs),
    /// Write the log's events after a position as NDJSON, as stored.
    Export(ExportArgs),
    /// Load an NDJSON export, or one run's debug bundle, into an empty ledger
    /// made by `migrate` (the chain is checked first; a bundle's events are
    /// re-sealed as 1..n).
    Import(ImportArgs),
    /// Create, list and revoke API tokens.
    Token(TokenArgs),
    /// List, inspect, follow, retry, cancel, delete and restore runs on a
    /// running server (`--server` / `RUNLEDGER_SERVER`).
    Runs(crate::client::args::RunsArgs),
    /// Every task on a running server: run counts by status, the last run.
    Tasks(crate::client::args::TasksArgs),
    /// Print a shell completion script, e.g. `runledger completions bash >
    /// /etc/bash_completion.d/runledger`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum TokenCmd {
    /// Create a token and print its secret, once: only its hash is stored.
    Create {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The token's name: the actor of every event it appends.
        #[arg(long)]
        name: String,
        /// Comma-separated: runs:read, runs:write, runs:admin, ledger:read.
        #[arg(long, value_parser = crate::auth::parse_scopes)]
        scopes: std::vec::Vec<Scope>,
    },
    /// List every token (never its secret), revoked ones included.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; servers refuse it within a second.
    Revoke {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The token's name.
        name: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Export the events after this position.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Write here instead of standard output.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// An NDJSON file written by `runledger export`, or a debug bundle
    /// (`GET /api/runs/{id}/debug-bundle`).
    pub file: std::path::PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` or `postgres://…` (only `serve` and `migrate` create
    /// the ledger).
    #[arg(long, env = "RUNLEDGER_DATABASE_URL", default_value = "sqlite://runledger.db", value_parser = DatabaseUrl::parse)]
    pub database_url: DatabaseUrl,
}

/// A ledger and its anchors file.
#[derive(Args, Debug, Clone)]
pub struct AnchoredArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub anchors: AnchorArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "RUNLEDGER_LISTEN", default_value = "127.0.0.1:9477")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "RUNLEDGER_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Longest a request may take to produce its response, in seconds
    /// (streams answer at once and are not cut).
    #[arg(long, env = "RUNLEDGER_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Browser origins allowed to call the API (CORS), comma-separated; `*`
    /// for any. Unset: no CORS headers.
    #[arg(long, env = "RUNLEDGER_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Requests a second allowed per token (per client address when the API
    /// runs open); 0 turns rate limiting off.
    #[arg(long, env = "RUNLEDGER_RATE_LIMIT_PER_SECOND", default_value_t = 1_000)]
    pub rate_limit_per_second: u32,
    /// Requests allowed at once above the steady rate.
    #[arg(long, env = "RUNLEDGER_RATE_LIMIT_BURST", default_value_t = 5_000)]
    pub rate_limit_burst: u32,
    /// The most runs one bulk call may select (a larger selection is refused
    /// with 422 and its size).
    #[arg(long, env = "RUNLEDGER_BULK_MAX_RUNS", default_value_t = 100_000)]
    pub bulk_max_runs: usize,
    /// How long the response to a POST sent with an `Idempotency-Key` header
    /// is kept (and replayed to a retry), in seconds.
    #[arg(long, env = "RUNLEDGER_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,
    /// The most events (or children) a run's debug bundle may hold; a larger
    /// run's bundle is refused with 422, never truncated.
    #[arg(long, env = "RUNLEDGER_BUNDLE_MAX_EVENTS", default_value_t = 100_000)]
    pub bundle_max_events: usize,
    /// The most connections open at once; past it, new connections wait
    /// until one closes (and the log says so). Keep it below the process's
    /// file-descriptor limit.
    #[arg(long, env = "RUNLEDGER_MAX_CONNECTIONS", default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Longest a client may take to send a request's headers, in seconds.
    #[arg(long, env = "RUNLEDGER_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Longest a client may leave the server's writes unread, in seconds; a
    /// stream client that stopped reading is then dropped (it resumes with
    /// `Last-Event-ID`).
    #[arg(long, env = "RUNLEDGER_STALLED_CLIENT_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub stalled_client_timeout_secs: u64,
    /// How many tasks `/metrics` names in `runledger_task_runs` (those with
    /// the most live runs); every other task's runs are summed as `other`.
    #[arg(long, env = "RUNLEDGER_METRICS_TOP_TASKS", default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub metrics_top_tasks: u16,
    /// The longest the deadline enforcer sleeps between looks for due runs,
    /// in milliseconds (it also wakes at the next known deadline): a run
    /// created with a sooner deadline is ended at most this late. 0: this
    /// node enforces no deadline (an offline copy under inspection, say).
    #[arg(long, env = "RUNLEDGER_DEADLINE_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub deadline_poll_ms: u64,
    /// How long the LLM chunks POSTed to one run are gathered into one
    /// `run.chunks` ledger event, in milliseconds (64 KiB waiting also ends
    /// the wait); 0: append at once, coalescing only what arrives while
    /// the previous append commits.
    #[arg(long, env = "RUNLEDGER_CHUNK_WINDOW_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub chunk_window_ms: u64,
    /// Export request spans over OpenTelemetry (OTLP/HTTP, protobuf) to this
    /// collector base URL, e.g. `http://127.0.0.1:4318` (spans go to its
    /// `/v1/traces`). Unset: no export; a caller's `traceparent` is still
    /// recorded on the events its requests append.
    #[arg(long, env = "RUNLEDGER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub anchors: AnchorArgs,
    /// Anchor the head after this many new events; 0: only by time.
    #[arg(long, env = "RUNLEDGER_ANCHOR_EVERY_EVENTS", default_value_t = 1_000)]
    pub anchor_every_events: u64,
    /// Anchor the head this often, in seconds, when it moved; 0: only by count.
    #[arg(long, env = "RUNLEDGER_ANCHOR_EVERY_SECS", default_value_t = 10)]
    pub anchor_every_secs: u64,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve(args) => serve(args).await,
        Cmd::Migrate(args) => {
            Ledger::open(&args.database_url).await?;
            println!("migrated {:?}", args.database_url);
            Ok(())
        }
        Cmd::Verify(args) => verify(args).await,
        Cmd::Rebuild(args) => {
            let ledger = Ledger::open_existing(&args.database.database_url).await?;
            Anchoring::resolve(&args.anchors, &args.database.database_url, &ledger)
                .await?
                .refuse_behind(&ledger, "rebuild")
                .await?;
            let started = std::time::Instant::now();
            let (events, runs) = ledger.rebuild().await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "rebuilt {runs} runs from {events} events in {secs:.2} s ({:.0} events/s)",
                events as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Cmd::Export(args) => export(args).await,
        Cmd::Import(args) => import(args).await,
        Cmd::Token(args) => token(args).await,
        Cmd::Runs(args) => Ok(crate::client::runs(args).await?),
        Cmd::Tasks(args) => Ok(crate::client::tasks(args).await?),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "runledger", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Whether a failure is the answer (or the silence) of a server that a
/// client subcommand talked to.
pub fn is_client_error(error: &anyhow::Error) -> bool {
    error.downcast_ref::<crate::client::ClientError>().is_some()
}

/// The exit status of a failed command: the client's own statuses (see
/// `crate::client::exit`), 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    error
        .downcast_ref::<crate::client::ClientError>()
        .map_or(crate::client::exit::OTHER, crate::client::ClientError::exit_code)
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let database = match &args.command {
        TokenCmd::Create { database, .. } | TokenCmd::List { database, .. } | TokenCmd::Revoke { database, .. } => {
            database
        }
    };
    let ledger = Ledger::open_existing(&database.database_url).await?;
    match args.command {
        TokenCmd::Create { name, scopes, .. } => {
            let secret = ledger.create_token(&name, &scopes).await?;
            eprintln!(
                "created token {name} with scopes {}; its secret is below and is not shown again",
                crate::auth::scopes_text(&scopes)
            );
            println!("{secret}");
        }
        TokenCmd::List { json, .. } => {
            let tokens = ledger.tokens().await?;
            if json {
                for token in &tokens {
                    println!("{}", serde_json::to_string(token)?);
                }
            } else {
                println!("{:<32} {:<44} {:<27} REVOKED", "NAME", "SCOPES", "CREATED");
                for t in &tokens {
                    println!(
                        "{:<32} {:<44} {:<27} {}",
                        t.name,
                        crate::auth::scopes_text(&t.scopes),
                        t.created_at.to_rfc3339(),
                        t.revoked_at.as_ref().map_or_else(|| "-".to_owned(), |r| r.to_rfc3339())
                    );
                }
            }
        }
        TokenCmd::Revoke { name, .. } => {
            ledger.revoke_token(&name).await?;
            println!("revoked token {name}");
        }
    }
    Ok(())
}

async fn verify(args: AnchoredArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let ledger = Ledger::open_existing(url).await?;
    let anchoring = Anchoring::resolve(&args.anchors, url, &ledger).await?;
    // Anchors first: every anchor read is then at or below the log read.
    let anchors = anchoring.read().await?;
    let report = ledger.verify().await?;
    let mut failed = false;
    match report.first_break {
        None => println!("ok: {} events, head {}, hash chain intact", report.events, report.head),
        Some((position, why)) => {
            println!(
                "broken at position {position}: {why} ({} events before it verified)",
                report.events
            );
            failed = true;
        }
    }
    let path = anchoring.path.display();
    match anchors {
        None => println!("note: no anchors file at {path}: a truncated tail or a re-sealed chain cannot be detected"),
        Some(log) => {
            let checked = anchoring.check(&ledger, &log).await?;
            for fault in &checked.faults {
                println!("{fault}");
            }
            failed |= !checked.faults.is_empty();
            if !checked.unreadable.is_empty() {
                println!(
                    "note: lines {:?} of {path} hold no anchor (writes torn by a crash); skipped",
                    checked.unreadable
                );
            }
            let signatures = match (&anchoring.key, log.anchors.iter().any(|(_, a)| a.hmac.is_some())) {
                (Some(_), _) => "signatures checked with the anchor key",
                (None, true) => "signed, but no anchor key was given: signatures not checked",
                (None, false) => "unsigned",
            };
            match &checked.last {
                Some(last) if checked.faults.is_empty() => println!(
                    "ok: {} anchors in {path} agree with the log, the last at position {} (written {}); {signatures}",
                    checked.trusted, last.position, last.at
                ),
                Some(_) => println!(
                    "{} of {} anchors in {path} trusted; {signatures}",
                    checked.trusted, checked.anchors
                ),
                None => println!("note: {path} holds no trusted anchor; {signatures}"),
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let ledger = Ledger::open_existing(&args.database.database_url).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut after, mut count) = (args.after, 0u64);
    loop {
        let page = ledger.export_page(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for envelope in &page {
            serde_json::to_writer(&mut out, envelope)?;
            out.write_all(b"\n")?;
            count += 1;
        }
    }
    out.flush()?;
    eprintln!("exported {count} events");
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    // A bundle is one JSON object with a `format`; an export is one event per
    // line, and events have no `format`.
    let first = serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .next();
    if let Some(Ok(serde_json::Value::Object(first))) = first {
        if first.contains_key("format") {
            return import_bundle(&args, &text).await;
        }
    }
    let mut envelopes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let envelope = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not an exported event: {e}", args.file.display(), i + 1))?;
        envelopes.push(envelope);
    }
    let ledger = Ledger::open_existing(&args.database.database_url).await?;
    let (events, runs) = ledger.import(envelopes).await?;
    println!("imported {events} events ({runs} runs)");
    Ok(())
}

/// The parts of a debug bundle that import needs; the rest (details,
/// lineage, children) is rebuilt from the events or stays in the file.
#[derive(serde::Deserialize)]
struct BundleFile {
    format: String,
    version: u32,
    run: BundleRun,
    events: Vec<runledger_events::EventEnvelope>,
    verification: bundle::Verification,
}

#[derive(serde::Deserialize)]
struct BundleRun {
    id: uuid::Uuid,
}

/// Loads a debug bundle's run into an empty ledger. Its events are re-sealed
/// as positions 1..n of a new chain (one run's events are not a contiguous
/// log); every other field is kept, and the original positions and hashes
/// remain in the bundle file.
async fn import_bundle(args: &ImportArgs, text: &str) -> anyhow::Result<()> {
    let file = args.file.display();
    let bundle: BundleFile =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{file}: not a runledger debug bundle: {e}"))?;
    if bundle.format != bundle::BUNDLE_FORMAT {
        anyhow::bail!(
            "{file}: format {:?} is not {:?}; expected a debug bundle or an NDJSON export",
            bundle.format,
            bundle::BUNDLE_FORMAT
        );
    }
    if bundle.version != bundle::BUNDLE_VERSION {
        anyhow::bail!(
            "{file}: bundle version {} is not supported (this runledger reads version {})",
            bundle.version,
            bundle::BUNDLE_VERSION
        );
    }
    if !bundle.verification.verified {
        let at = bundle
            .verification
            .first_failure
            .map(|f| format!(" (position {}: {})", f.position, f.reason))
            .unwrap_or_default();
        anyhow::bail!(
            "{file}: the server that wrote this bundle found its events do not verify{at}; refusing to import"
        );
    }
    let ledger = Ledger::open_existing(&args.database.database_url).await?;
    let (events, _) = ledger.import_run_events(bundle.run.id, bundle.events).await?;
    println!(
        "imported run {} from a debug bundle: {events} events, re-sealed as positions 1..{events} of a new chain (the original positions and hashes remain in the bundle)",
        bundle.run.id
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ledger = Arc::new(Ledger::open(&args.database.database_url).await?);
    let anchoring = Anchoring::resolve(&args.anchors, &args.database.database_url, &ledger).await?;
    let anchored = anchoring.refuse_behind(&ledger, "start").await?;
    let active = ledger.tokens().await?.iter().filter(|t| t.revoked_at.is_none()).count();
    // Without tokens the API is open: it may only listen where nobody but
    // this machine can reach it.
    if active == 0 && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve an unauthenticated API on {}: create a token first (runledger token create --name NAME --scopes …) or listen on a loopback address (127.0.0.1, ::1)",
            args.listen
        );
    }
    let listener = listen(args.listen, args.max_connections)?;
    let addr = listener.local_addr()?;
    let cadence = Cadence {
        every_events: args.anchor_every_events,
        every: std::time::Duration::from_secs(args.anchor_every_secs),
    };
    tracing::info!(anchors = %anchoring.path.display(), signed = anchoring.key.is_some(), "anchoring the head");
    let stop_anchoring = tokio_util::sync::CancellationToken::new();
    let anchoring = crate::anchors::start(ledger.clone(), anchoring, cadence, anchored, stop_anchoring.clone())?;
    if active == 0 {
        tracing::warn!(%addr, "no tokens are configured: the API is open to anyone who can reach this loopback address");
    } else {
        tracing::info!(%addr, tokens = active, "the API needs a bearer token");
    }
    tracing::info!(%addr, database = ?args.database.database_url, "runledger is ready");
    // Scripts wait for this line; it is printed only once the port is bound.
    println!("runledger listening on http://{addr}");
    let rate_limit = match std::num::NonZeroU32::new(args.rate_limit_per_second) {
        None => None,
        Some(per_second) => Some(http::RateLimit {
            per_second,
            burst: std::num::NonZeroU32::new(args.rate_limit_burst)
                .ok_or_else(|| anyhow::anyhow!("--rate-limit-burst must be at least 1"))?,
        }),
    };
    let config = HttpConfig {
        max_body_bytes: args.max_body_bytes,
        request_timeout: std::time::Duration::from_secs(args.request_timeout_secs),
        cors_origins: args.cors_origins,
        rate_limit,
        bulk_cap: args.bulk_max_runs,
        idempotency_ttl: std::time::Duration::from_secs(args.idempotency_ttl_secs),
        bundle_max_events: args.bundle_max_events,
        max_connections: args.max_connections as usize,
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout_secs),
        stalled_client_timeout: std::time::Duration::from_secs(args.stalled_client_timeout_secs),
        metrics_top_tasks: usize::from(args.metrics_top_tasks),
        deadline_poll: std::time::Duration::from_millis(args.deadline_poll_ms),
        chunk_window: std::time::Duration::from_millis(args.chunk_window_ms),
        ..HttpConfig::default()
    };
    let served = http::serve(ledger, config, listener, shutdown_signal()).await;
    // Every acknowledged write is committed: anchor the final head.
    stop_anchoring.cancel();
    anchoring.await?;
    served?;
    tracing::info!("runledger stopped");
    Ok(())
}

/// Binds `addr` with an accept queue as deep as the connection cap (at most
/// 4096): with the default 128, a burst of new connections is dropped by
/// the kernel and each client waits a second to retry.
fn listen(addr: SocketAddr, max_connections: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(max_connections.clamp(128, 4096))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
