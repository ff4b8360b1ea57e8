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
            std::process::exit(1)
        }
        result => result,
    }
}
