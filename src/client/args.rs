//! The flags of `runledger runs …` and `runledger tasks`. Filter flags are
//! the list query parameters of `GET /api/runs`, one to one (`--task-name`
//! is `task_name`); their values are passed through, so the server's rules
//! and its 422 problems apply unchanged.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};

use super::EXIT_CODES_HELP;

/// The server to talk to, shared by every client subcommand.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The runledger server's base URL.
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_SERVER",
        default_value = "http://127.0.0.1:9477"
    )]
    pub server: String,
    /// A bearer token (`runledger token create`), when the server needs one.
    #[arg(long, global = true, env = "RUNLEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON (one document; NDJSON for `tail`) instead of
    /// a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct RunsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: RunsCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum RunsCmd {
    /// List runs (`GET /api/runs`, or the dead-letter queue with `--dlq`).
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Show one run.
    #[command(after_help = EXIT_CODES_HELP)]
    Get {
        id: String,
        /// The run as it was at this log position or RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// A run's ledger events, oldest first (every page).
    #[command(after_help = EXIT_CODES_HELP)]
    Events {
        id: String,
        /// Only events of these types (repeat, or comma-separated).
        #[arg(long = "type", value_delimiter = ',')]
        types: Vec<String>,
    },
    /// A run's story: each event with the run's status after it (every page).
    #[command(after_help = EXIT_CODES_HELP)]
    History { id: String },
    /// Retry an ended run: a new run in its lineage (the source is kept).
    #[command(after_help = EXIT_CODES_HELP)]
    Retry {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Retry the run's failed children instead, in one operation.
        #[arg(long)]
        failed_only: bool,
    },
    /// Cancel an unfinished run (it ends `stopped`).
    #[command(after_help = EXIT_CODES_HELP)]
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Soft-delete a run (hidden from lists; `restore` brings it back).
    #[command(after_help = EXIT_CODES_HELP)]
    Delete {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Restore a soft-deleted run.
    #[command(after_help = EXIT_CODES_HELP)]
    Restore {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Follow the whole log live (`/api/events/stream`); reconnects after a
    /// dropped connection from the last event it printed, never printing
    /// one twice.
    #[command(after_help = EXIT_CODES_HELP)]
    Tail(TailArgs),
    /// Act on many runs by selector: prints the dry-run count first, and
    /// acts only with `--yes`, on exactly the runs it counted.
    #[command(after_help = EXIT_CODES_HELP)]
    Bulk(BulkArgs),
}

/// The list filters of `GET /api/runs` (and of a bulk selector's `filter`).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Filters (the list query parameters of the same names)")]
pub struct FilterArgs {
    /// A phase (`pending`, `running`, `paused`, `ended`), an end reason
    /// (`success`, `failed`, …), `deleted` or `dead_letter`; repeat or
    /// comma-separate: a run matches any.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Exact task name.
    #[arg(long)]
    pub task_name: Option<String>,
    /// Exact project.
    #[arg(long)]
    pub project: Option<String>,
    /// `cron`, `api`, `retry`, …; repeat or comma-separate.
    #[arg(long, value_delimiter = ',')]
    pub triggered_by: Vec<String>,
    /// RFC 3339; inclusive.
    #[arg(long)]
    pub created_after: Option<String>,
    /// RFC 3339; inclusive.
    #[arg(long)]
    pub created_before: Option<String>,
    /// Inclusive.
    #[arg(long, allow_hyphen_values = true)]
    pub exit_code_min: Option<String>,
    /// Inclusive.
    #[arg(long, allow_hyphen_values = true)]
    pub exit_code_max: Option<String>,
    /// Only retries (`retry_attempt > 0`).
    #[arg(long)]
    pub retries_only: bool,
    /// A substring of the task name or the run id.
    #[arg(long)]
    pub search: Option<String>,
    /// `key:value`; repeat: all must match.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Children of this run.
    #[arg(long)]
    pub parent_run_id: Option<String>,
    /// Show soft-deleted runs too.
    #[arg(long)]
    pub include_deleted: bool,
}

impl FilterArgs {
    fn scalars(&self) -> Vec<(&'static str, &Option<String>)> {
        vec![
            ("task_name", &self.task_name),
            ("project", &self.project),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("exit_code_min", &self.exit_code_min),
            ("exit_code_max", &self.exit_code_max),
            ("search", &self.search),
            ("parent_run_id", &self.parent_run_id),
        ]
    }

    fn flags(&self) -> [(&'static str, bool); 2] {
        [
            ("retries_only", self.retries_only),
            ("include_deleted", self.include_deleted),
        ]
    }

    /// As query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for (name, values) in [("status", &self.status), ("triggered_by", &self.triggered_by)] {
            if !values.is_empty() {
                pairs.push((name.to_owned(), values.join(",")));
            }
        }
        for (name, value) in self.scalars() {
            if let Some(v) = value {
                pairs.push((name.to_owned(), v.clone()));
            }
        }
        pairs.extend(self.tag.iter().map(|t| ("tag".to_owned(), t.clone())));
        for (name, set) in self.flags() {
            if set {
                pairs.push((name.to_owned(), "true".to_owned()));
            }
        }
        pairs
    }

    /// As a bulk selector's `filter` object.
    pub fn filter(&self) -> Map<String, Value> {
        let mut filter = Map::new();
        for (name, values) in [
            ("status", &self.status),
            ("triggered_by", &self.triggered_by),
            ("tag", &self.tag),
        ] {
            if !values.is_empty() {
                filter.insert(name.to_owned(), values.clone().into());
            }
        }
        for (name, value) in self.scalars() {
            if let Some(v) = value {
                filter.insert(name.to_owned(), v.clone().into());
            }
        }
        for (name, set) in self.flags() {
            if set {
                filter.insert(name.to_owned(), true.into());
            }
        }
        filter
    }
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// The dead-letter queue (`GET /api/runs/dlq`) instead of every run.
    #[arg(long)]
    pub dlq: bool,
    /// `task_name`, `status`, `start_at`, `exit_code`, `duration` or
    /// `created_at` (the server's default).
    #[arg(long)]
    pub sort_field: Option<String>,
    /// `asc` or `desc` (the server's default).
    #[arg(long)]
    pub sort_direction: Option<String>,
    /// The list as it was at this log position or RFC 3339 time.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Runs per page (the server's `limit`: 1–1000; default 50, or 1000
    /// with `--all`).
    #[arg(long)]
    pub limit: Option<String>,
    /// Runs to skip.
    #[arg(long)]
    pub offset: Option<String>,
    /// Start after this page cursor (a previous `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow `next_cursor` to the last page and print every run.
    #[arg(long, conflicts_with = "offset")]
    pub all: bool,
    // Last: the flags after it would share its help heading.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// The page size of `list --all` when none is given: the server's largest.
const ALL_PAGE: &str = "1000";

impl ListArgs {
    pub fn query(&self) -> Vec<(String, String)> {
        let mut pairs = self.filter.query();
        for (name, value) in [
            ("sort_field", &self.sort_field),
            ("sort_direction", &self.sort_direction),
            ("as_of", &self.as_of),
            (
                "limit",
                &self.limit.clone().or_else(|| self.all.then(|| ALL_PAGE.to_owned())),
            ),
            ("offset", &self.offset),
        ] {
            if let Some(v) = value {
                pairs.push((name.to_owned(), v.clone()));
            }
        }
        pairs
    }
}

#[derive(Args, Debug, Clone)]
pub struct TailArgs {
    /// Start after this position (`0`: the whole log first). Without it the
    /// stream starts at the head: only new events.
    #[arg(long)]
    pub after: Option<u64>,
    /// Only events of these types (repeat, or comma-separated).
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only events of this task's runs.
    #[arg(long)]
    pub task_name: Option<String>,
    /// Only this run's events.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Only events of this project's runs.
    #[arg(long)]
    pub project: Option<String>,
    /// The token name (or `anonymous`) that appended the events.
    #[arg(long)]
    pub actor: Option<String>,
}

impl TailArgs {
    /// The stream's filters (not its position).
    pub fn query(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if !self.types.is_empty() {
            pairs.push(("type".to_owned(), self.types.join(",")));
        }
        for (name, value) in [
            ("task_name", &self.task_name),
            ("run_id", &self.run_id),
            ("project", &self.project),
            ("actor", &self.actor),
        ] {
            if let Some(v) = value {
                pairs.push((name.to_owned(), v.clone()));
            }
        }
        pairs
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Delete,
    Restore,
    Rerun,
    Cancel,
    Retry,
    DlqReplay,
}

impl BulkAction {
    /// The route's last segment.
    pub fn path(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Restore => "restore",
            Self::Rerun => "rerun",
            Self::Cancel => "cancel",
            Self::Retry => "retry",
            Self::DlqReplay => "dlq-replay",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct BulkArgs {
    /// What to do to the selected runs.
    pub action: BulkAction,
    /// These runs (comma-separated or repeated), instead of a filter.
    #[arg(long, value_delimiter = ',', conflicts_with = "match_all")]
    pub ids: Vec<String>,
    /// Select by filter; with no filter flag, every run the action can act on.
    #[arg(long)]
    pub match_all: bool,
    /// Leave this run out of a filter selection (repeat).
    #[arg(long)]
    pub except_id: Vec<String>,
    /// Recorded on every event of the call.
    #[arg(long)]
    pub reason: Option<String>,
    /// Act. Without it only the dry run is made, and nothing changes.
    #[arg(long, short = 'y')]
    pub yes: bool,
    // Last: the flags after it would share its help heading.
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct TasksArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Tasks per page (1–1000, default 100).
    #[arg(long)]
    pub limit: Option<String>,
    #[arg(long)]
    pub offset: Option<String>,
}
