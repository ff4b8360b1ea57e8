//! The command line: `serve` and `migrate`, configured by flags with
//! `RUNLEDGER_` environment-variable fallbacks.

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
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve(args) => serve(args).await,
        Cmd::Migrate(args) => {
            Ledger::open(&args.database_url).await?;
            println!("migrated {:?}", args.database_url);
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ledger = Arc::new(Ledger::open(&args.database.database_url).await?);
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address with no authentication");
    }
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
