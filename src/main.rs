#![forbid(unsafe_code)]

use clap::Parser;
use runledger::logging::LogFormat;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed first: the log's format is one of its options.
    let cli = runledger::cli::Cli::parse();
    let format = cli.log_format;
    runledger::logging::init(format);
    match runledger::cli::run(cli).await {
        // A JSON log stays JSON to its last line.
        Err(error) if format == LogFormat::Json => {
            tracing::error!(error = format!("{error:#}"), "runledger failed");
            std::process::exit(runledger::cli::exit_code(&error))
        }
        // A server's answer, printed as its problem says it, with its own status.
        Err(error) if runledger::cli::is_client_error(&error) => {
            eprintln!("error: {error}");
            std::process::exit(runledger::cli::exit_code(&error))
        }
        result => result,
    }
}
