//! The command line: `serve`, `migrate`, `verify`, `rebuild`, `export` and
//! `import`, configured by flags with `RUNLEDGER_` environment-variable
//! fallbacks.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::http::{self, HttpConfig};
use crate::ledger::{DatabaseUrl, Ledger};

#[derive(Parser, Debug)]
#[command(name = "runledger", version, about = "An event-sourced ledger for job runs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(DatabaseArgs),
    /// Re-compute the hash chain; exit 1 naming the first position that was
    /// altered, removed or reordered.
    Verify(DatabaseArgs),
    /// Drop every projection and replay the log into it.
    Rebuild(DatabaseArgs),
    /// Write the log's events after a position as NDJSON, as stored.
    Export(ExportArgs),
    /// Load an NDJSON export into an empty ledger (the chain is checked first).
    Import(ImportArgs),
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
    /// An NDJSON file written by `runledger export`.
    pub file: std::path::PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created on first start).
    #[arg(long, env = "RUNLEDGER_DATABASE_URL", default_value = "sqlite://runledger.db", value_parser = DatabaseUrl::parse)]
    pub database_url: DatabaseUrl,
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
            let ledger = Ledger::open(&args.database_url).await?;
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
    }
}

async fn verify(args: DatabaseArgs) -> anyhow::Result<()> {
    let ledger = Ledger::open(&args.database_url).await?;
    let report = ledger.verify().await?;
    match report.first_break {
        None => {
            println!("ok: {} events, head {}, hash chain intact", report.events, report.head);
            Ok(())
        }
        Some((position, why)) => {
            println!(
                "broken at position {position}: {why} ({} events before it verified)",
                report.events
            );
            std::process::exit(1);
        }
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let ledger = Ledger::open(&args.database.database_url).await?;
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
    use std::io::BufRead;
    let file = std::io::BufReader::new(std::fs::File::open(&args.file)?);
    let mut envelopes = Vec::new();
    for (i, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let envelope = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not an exported event: {e}", args.file.display(), i + 1))?;
        envelopes.push(envelope);
    }
    let ledger = Ledger::open(&args.database.database_url).await?;
    let (events, runs) = ledger.import(envelopes).await?;
    println!("imported {events} events ({runs} runs)");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // No tokens exist yet, so the API is open: it may only listen where
    // nobody but this machine can reach it.
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve an unauthenticated API on {}: listen on a loopback address (127.0.0.1, ::1)",
            args.listen
        );
    }
    let ledger = Arc::new(Ledger::open(&args.database.database_url).await?);
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::warn!(%addr, "no tokens are configured: the API is open to anyone who can reach this loopback address");
    tracing::info!(%addr, database = ?args.database.database_url, "runledger is ready");
    // Scripts wait for this line; it is printed only once the port is bound.
    println!("runledger listening on http://{addr}");
    let config = HttpConfig {
        max_body_bytes: args.max_body_bytes,
        ..HttpConfig::default()
    };
    http::serve(ledger, config, listener, shutdown_signal()).await?;
    tracing::info!("runledger stopped");
    Ok(())
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
