#![forbid(unsafe_code)]

use clap::Parser;
use runledger::logging::LogFormat;
use runledger::telemetry::Telemetry;

fn main() -> anyhow::Result<()> {
    // Parsed first: the log's format is one of its options.
    let cli = runledger::cli::Cli::parse();
    let format = cli.log_format;
    // Built outside the runtime: the OTLP exporter's HTTP client blocks.
    let telemetry = match cli.otlp_endpoint() {
        Some(endpoint) => Telemetry::otlp(endpoint)?,
        None => Telemetry::default(),
    };
    runledger::logging::init(format, &telemetry);
    let result = tokio::runtime::Runtime::new()?.block_on(runledger::cli::run(cli));
    // The runtime is gone; every request span has ended: export what is left.
    telemetry.shutdown();
    match result {
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
