//! The process's log: to stderr, at the level `RUST_LOG` sets (default
//! `info`), as text for people or as JSON lines for a log shipper
//! (`--log-format` / `RUNLEDGER_LOG_FORMAT`). Text is coloured only on a
//! terminal, so a file or a pipe never receives escape codes. Spans go to
//! OpenTelemetry too when `serve --otlp-endpoint` asks for it.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::telemetry::Telemetry;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people; ANSI colour only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`,
    /// the event's fields, and the spans it happened in (`span`, `spans`).
    Json,
}

/// Installs the process's subscriber; call once, before anything logs.
/// `telemetry`'s spans are exported whatever `RUST_LOG` says: the log's
/// level does not decide what a trace holds.
pub fn init(format: LogFormat, telemetry: &Telemetry) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    };
    let spans = telemetry
        .layer()
        .map(|layer| layer.with_filter(Targets::new().with_target("runledger", tracing::Level::INFO)));
    tracing_subscriber::registry().with(log).with(spans).init();
}
