//! The runs list query, written once for both backends: the SQL uses `$n`
//! placeholders numbered in order of first use, which PostgreSQL reads as
//! positional parameters and SQLite as named ones bound in the same order.

use std::collections::BTreeMap;

use runledger_events::{EndReason, Timestamp, TriggeredBy};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{RunState, RunStatus};

/// One value of the `status` filter: a phase, an end reason, or a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusValue {
    Phase(RunStatus),
    EndReason(EndReason),
    Deleted,
    DeadLetter,
}

impl StatusValue {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "deleted" => Some(Self::Deleted),
            "dead_letter" => Some(Self::DeadLetter),
            _ => RunStatus::parse(text)
                .map(Self::Phase)
                .or_else(|| text.parse().ok().map(Self::EndReason)),
        }
    }

    pub fn allowed() -> String {
        let mut all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        all.extend(EndReason::ALL.iter().map(|r| r.as_str()));
        all.extend(["deleted", "dead_letter"]);
        all.join(", ")
    }
}

/// The filters of the runs list, also used by bulk selectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    /// A run matches if it matches any of these.
    pub statuses: Vec<StatusValue>,
    pub project: Option<String>,
    pub task_name: Option<String>,
    /// A run matches if it was triggered by any of these.
    pub triggered_by: Vec<TriggeredBy>,
    /// Inclusive.
    pub created_after: Option<Timestamp>,
    /// Inclusive.
    pub created_before: Option<Timestamp>,
    /// Runs whose next deadline is at or before this time (inclusive).
    pub deadline_before: Option<Timestamp>,
    pub exit_code_min: Option<i64>,
    pub exit_code_max: Option<i64>,
    pub retries_only: bool,
    /// Case-insensitive substring of the task name or the run id.
    pub search: Option<String>,
    /// Every pair must match.
    pub tags: Vec<(String, String)>,
    pub parent_run_id: Option<Uuid>,
    /// Runs created by this bulk operation.
    pub operation_id: Option<Uuid>,
    /// Runs whose payload contains this object (PostgreSQL's `@>`; see
    /// `payload`).
    pub payload: Option<serde_json::Map<String, serde_json::Value>>,
    /// Deleted runs are hidden unless this is set or `statuses` asks for them.
    pub include_deleted: bool,
    /// Only dead-lettered runs (the dead-letter queue), whatever else matches.
    pub dead_lettered_only: bool,
    /// Only the runs a command can act on, whatever else matches.
    pub candidates: Option<Candidates>,
}

/// The runs a command can act on: a bulk selection by filter selects among
/// these only, so that what it counts is what it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// Runs that are not deleted (delete).
    Live,
    /// Soft-deleted runs (restore), whatever `include_deleted` says.
    Deleted,
    /// Runs that have not ended (cancel).
    Unfinished,
    /// Runs that have ended (retry).
    Ended,
    /// Dead-lettered runs (dead-letter replay).
    DeadLettered,
}

impl Candidates {
    fn condition(self) -> &'static str {
        match self {
            Self::Live => "NOT deleted",
            Self::Deleted => "deleted",
            Self::Unfinished => "status <> 'ended'",
            Self::Ended => "status = 'ended'",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortField {
    TaskName,
    Status,
    StartAt,
    ExitCode,
    Duration,
    #[default]
    CreatedAt,
    /// The run's next deadline (`deadline_at`); runs with none sort last.
    DeadlineAt,
}

impl SortField {
    pub const NAMES: &'static [&'static str] = &[
        "task_name",
        "status",
        "start_at",
        "exit_code",
        "duration",
        "created_at",
        "deadline_at",
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "task_name" => Self::TaskName,
            "status" => Self::Status,
            "start_at" => Self::StartAt,
            "exit_code" => Self::ExitCode,
            "duration" => Self::Duration,
            "created_at" => Self::CreatedAt,
            "deadline_at" => Self::DeadlineAt,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Duration => "duration",
            other => other.column(),
        }
    }

    /// Whether the column has no value for some runs (they sort last).
    fn nullable(&self) -> bool {
        matches!(self, Self::StartAt | Self::ExitCode | Self::Duration | Self::DeadlineAt)
    }

    /// The run's value of the column, as the column stores it.
    fn value(&self, run: &RunState) -> Option<Arg> {
        match self {
            Self::TaskName => Some(Arg::Text(run.task_name.clone())),
            Self::Status => Some(Arg::Text(run.status.as_str().to_owned())),
            Self::StartAt => run.start_at.map(|t| Arg::Int(t.as_micros())),
            Self::ExitCode => run.exit_code.map(Arg::Int),
            Self::Duration => run.duration_ms.map(Arg::Int),
            Self::CreatedAt => Some(Arg::Int(run.created_at.as_micros())),
            Self::DeadlineAt => run.deadline_at.map(|t| Arg::Int(t.as_micros())),
        }
    }

    /// The index that holds the runs in this order, ties by id.
    fn index(&self) -> &'static str {
        match self {
            Self::TaskName => "runs_task_id",
            Self::Status => "runs_status_id",
            Self::StartAt => "runs_start_id",
            Self::ExitCode => "runs_exit_code_id",
            Self::Duration => "runs_duration_id",
            Self::CreatedAt => "runs_created_id",
            Self::DeadlineAt => "runs_deadline_id",
        }
    }

    fn column(&self) -> &'static str {
        match self {
            Self::TaskName => "task_name",
            Self::Status => "status",
            Self::StartAt => "start_at",
            Self::ExitCode => "exit_code",
            Self::Duration => "duration_ms",
            Self::CreatedAt => "created_at",
            Self::DeadlineAt => "deadline_at",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortDirection {
    Asc,
    #[default]
    Desc,
}

impl SortDirection {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "asc" => Some(Self::Asc),
            "desc" => Some(Self::Desc),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }

    fn sql(&self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
    }

    /// How a later row compares with an earlier one.
    fn after(&self) -> &'static str {
        match self {
            Self::Asc => ">",
            Self::Desc => "<",
        }
    }
}

/// Where a keyset page starts: after the row with this sort value and id,
/// in the sort it was issued for. Unlike an offset, it does not move when
/// runs are added or changed before it. Opaque to clients: hex of a JSON
/// array.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    pub sort_field: SortField,
    pub sort_direction: SortDirection,
    /// The last row's sort value (`None`: it had none, so it sorts last).
    pub value: Option<Arg>,
    pub id: String,
}

impl Cursor {
    /// The cursor after `run` in the sort of `query`.
    pub fn after(run: &RunState, query: &RunQuery) -> Self {
        Self {
            sort_field: query.sort_field,
            sort_direction: query.sort_direction,
            value: query.sort_field.value(run),
            id: run.id.to_string(),
        }
    }

    pub fn encode(&self) -> String {
        let value = match &self.value {
            None => serde_json::Value::Null,
            Some(Arg::Int(i)) => (*i).into(),
            Some(Arg::Text(t)) => t.as_str().into(),
        };
        let json = serde_json::json!([self.sort_field.as_str(), self.sort_direction.as_str(), value, self.id]);
        hex::encode(json.to_string())
    }

    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const BAD: &str = "must be a next_cursor this server answered";
        let bytes = hex::decode(text).map_err(|_| BAD)?;
        let parts: (String, String, serde_json::Value, Uuid) = serde_json::from_slice(&bytes).map_err(|_| BAD)?;
        let sort_field = SortField::parse(&parts.0).ok_or(BAD)?;
        let value = match parts.2 {
            serde_json::Value::Null => None,
            serde_json::Value::Number(n) => Some(Arg::Int(n.as_i64().ok_or(BAD)?)),
            serde_json::Value::String(s) => Some(Arg::Text(s)),
            _ => return Err(BAD),
        };
        let text_column = matches!(sort_field, SortField::TaskName | SortField::Status);
        if value.as_ref().is_some_and(|v| matches!(v, Arg::Text(_)) != text_column)
            || (value.is_none() && !sort_field.nullable())
        {
            return Err(BAD);
        }
        Ok(Self {
            sort_field,
            sort_direction: SortDirection::parse(&parts.1).ok_or(BAD)?,
            value,
            id: parts.3.to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunQuery {
    pub filter: RunFilter,
    pub sort_field: SortField,
    pub sort_direction: SortDirection,
    pub limit: i64,
    pub offset: i64,
    /// The runs table as it was at this log position: answered from
    /// `run_history`, the version of each run valid there.
    pub as_of: Option<i64>,
    /// Start after this row instead of at `offset` (which is then 0).
    pub cursor: Option<Cursor>,
}

impl Default for RunQuery {
    fn default() -> Self {
        Self {
            filter: RunFilter::default(),
            sort_field: SortField::default(),
            sort_direction: SortDirection::default(),
            limit: 50,
            offset: 0,
            as_of: None,
            cursor: None,
        }
    }
}

/// Which database a query is for: the few conditions whose index differs
/// (search) are written per backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bind value.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Int(i64),
    Text(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SqlQuery {
    pub sql: String,
    pub args: Vec<Arg>,
}

pub(crate) struct Builder {
    pub(crate) args: Vec<Arg>,
    pub(crate) dialect: Dialect,
    /// For a count, or a page read from the index of its conditions and
    /// then sorted (`RunQuery::driven`): the conditions need not follow an
    /// order.
    pub(crate) counting: bool,
    /// For a page read from the index of its conditions (`RunQuery::driven`):
    /// PostgreSQL is made to start from that index (its estimate of a
    /// payload's matches, ten times too many, had it walk the created-order
    /// index instead: 179 ms for 1,006 matches at 1M runs).
    pub(crate) driving: bool,
}

/// For SQL that is the same in both dialects.
impl Default for Builder {
    fn default() -> Self {
        Self::new(Dialect::Sqlite)
    }
}

impl Builder {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            args: Vec::new(),
            dialect,
            counting: false,
            driving: false,
        }
    }

    pub(crate) fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    pub(crate) fn text(&mut self, value: &str) -> String {
        self.bind(Arg::Text(value.to_owned()))
    }

    pub(crate) fn int(&mut self, value: i64) -> String {
        self.bind(Arg::Int(value))
    }
}

/// `LIKE` pattern for a literal substring, escaped with `\`.
fn contains_pattern(needle: &str) -> String {
    let mut out = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Whether `needle` can be part of a run id (lowercase hex and hyphens;
/// matched in any case).
fn may_be_in_an_id(needle: &str) -> bool {
    needle.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The FTS5 query of the runs whose id holds every trigram of `needle`
/// (`run_search` keeps no positions, so it cannot match a phrase; the
/// `LIKE` beside it decides). `needle` is hex and hyphens: nothing to quote.
fn id_trigrams(needle: &str) -> String {
    let chars: Vec<char> = needle.to_lowercase().chars().collect();
    let grams: Vec<String> = chars
        .windows(3)
        .map(|w| format!("\"{}\"", w.iter().collect::<String>()))
        .collect();
    grams.join(" AND ")
}

/// Runs whose task name or id contains `needle`, case-insensitively.
/// Task names are few: the names that match come from `run_counts` (it has
/// a row for every task any run has, deleted or not), their runs from the
/// task indexes, and the total is a sum over `run_counts` (see `counted`).
/// Only a needle of hex digits and hyphens can be in an id; for one of three
/// characters or more, the candidates come from a trigram index (SQLite's
/// FTS5 table `run_search`, PostgreSQL's `pg_trgm` index on `runs`) and the
/// `LIKE` decides; a shorter one is a scan.
fn search_condition(needle: &str, table: &str, b: &mut Builder) -> String {
    // Bound in the order they appear (see the module's note on placeholders).
    let p = b.text(&contains_pattern(needle));
    // Distinct: run_counts has a row per combination, many per task.
    let names = format!("SELECT DISTINCT task_name FROM run_counts WHERE lower(task_name) LIKE {p} ESCAPE '\\'");
    // PostgreSQL reads `= ANY` of an array computed once from an index, also
    // inside an OR; an `IN (subquery)` there is a scan.
    let tasks = match b.dialect {
        Dialect::Sqlite => format!("task_name IN ({names})"),
        Dialect::Postgres => format!("task_name = ANY(ARRAY({names}))"),
    };
    match search_ids_condition(needle, &p, table, b) {
        Some(ids) => format!("({tasks} OR ({ids}))"),
        None => tasks,
    }
}

/// The id half of `search_condition` (`p` is its bound `LIKE` pattern), if
/// the needle can be in an id.
fn search_ids_condition(needle: &str, p: &str, table: &str, b: &mut Builder) -> Option<String> {
    if !may_be_in_an_id(needle) {
        return None;
    }
    let like = format!("lower(id) LIKE {p} ESCAPE '\\'");
    let ids = match b.dialect {
        _ if needle.chars().count() < 3 => like,
        Dialect::Sqlite => {
            let m = b.text(&id_trigrams(needle));
            format!("{like} AND id IN (SELECT id FROM run_search WHERE run_search MATCH {m})")
        }
        // The trigram index is on `runs`; `run_history` (as_of) asks it.
        Dialect::Postgres if table == "runs" => like,
        Dialect::Postgres => format!("id IN (SELECT id FROM runs WHERE {like})"),
    };
    Some(ids)
}

/// The condition of a merged page's last branch, given the placeholders of
/// the values before it (`RunQuery::merged_sql`).
type OtherBranch<'a> = dyn Fn(&mut Builder, &[String]) -> String + 'a;

/// What a list read before its page (`RunQuery::page_sql`).
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The answer of `RunQuery::search_tasks_sql`, if it was asked.
    pub search_tasks: Option<Vec<String>>,
    /// The total, if counted first.
    pub total: Option<i64>,
    /// The answer of `RunQuery::live_runs_sql`, if it was asked.
    pub live_runs: Option<i64>,
}

/// The largest total of a tag or payload list whose page is read from the
/// index of its condition (`RunQuery::driven`): sorting 2,000 runs costs
/// about what a walk costs to find 50 among 100,000 (measured with
/// `cargo bench --bench queries`: at 10,000, a tag of one run in ten at
/// 100k runs took 33 ms driven against 4 ms walked).
const MAX_DRIVEN_TOTAL: i64 = 2_000;

/// The most task names a search page reads as one index range each
/// (`RunQuery::search_tasks_sql`); a needle matching more is one query.
const MAX_MERGED_TASKS: i64 = 32;

/// Runs whose payload contains `needle`. As with tags, a page checks each
/// run it reads in order, and a count starts from the index: PostgreSQL's
/// GIN index on `run_payloads`; on SQLite the runs having the needle's first
/// term, every other term checked by key, and `payload_contains` deciding.
fn payload_condition(needle: &serde_json::Map<String, serde_json::Value>, table: &str, b: &mut Builder) -> String {
    let text = serde_json::Value::Object(needle.clone()).to_string();
    if b.dialect == Dialect::Postgres {
        let n = b.text(&text);
        let ids = format!("SELECT p.run_id FROM run_payloads p WHERE p.payload @> {n}::jsonb");
        return if b.driving {
            format!("id = ANY(ARRAY({ids}))")
        } else if b.counting {
            format!("id IN ({ids})")
        } else {
            format!("EXISTS (SELECT 1 FROM run_payloads p WHERE p.run_id = {table}.id AND p.payload @> {n}::jsonb)")
        };
    }
    let mut parts = Vec::new();
    for (i, term) in crate::payload::needle_terms(needle).into_iter().enumerate() {
        let t = b.int(term);
        parts.push(if i == 0 && b.counting {
            format!("id IN (SELECT p.run_id FROM run_payload_terms p WHERE p.term = {t})")
        } else {
            format!("EXISTS (SELECT 1 FROM run_payload_terms p WHERE p.term = {t} AND p.run_id = {table}.id)")
        });
    }
    let n = b.text(&text);
    let payload = if table == "runs" {
        "runs.state -> '$.payload'".to_owned()
    } else {
        format!("(SELECT r.state -> '$.payload' FROM runs r WHERE r.id = {table}.id)")
    };
    parts.push(format!("payload_contains({payload}, {n})"));
    parts.join(" AND ")
}

impl RunFilter {
    fn conditions(&self, table: &str, b: &mut Builder) -> Vec<String> {
        let mut parts = Vec::new();
        if !self.statuses.is_empty() {
            // One IN list per column, so a long list is a flat expression.
            let mut phases = Vec::new();
            let mut reasons = Vec::new();
            let mut any = Vec::new();
            for s in &self.statuses {
                match s {
                    StatusValue::Phase(p) => phases.push(b.text(p.as_str())),
                    StatusValue::EndReason(r) => reasons.push(b.text(r.as_str())),
                    StatusValue::Deleted => any.push("deleted".to_owned()),
                    StatusValue::DeadLetter => any.push("dead_lettered".to_owned()),
                }
            }
            if !phases.is_empty() {
                any.insert(0, format!("status IN ({})", phases.join(", ")));
            }
            if !reasons.is_empty() {
                any.insert(
                    usize::from(!phases.is_empty()),
                    format!("end_reason IN ({})", reasons.join(", ")),
                );
            }
            any.dedup();
            parts.push(format!("({})", any.join(" OR ")));
        }
        let asks_for_deleted =
            self.statuses.contains(&StatusValue::Deleted) || self.candidates == Some(Candidates::Deleted);
        if !self.include_deleted && !asks_for_deleted {
            parts.push("NOT deleted".to_owned());
        }
        if let Some(candidates) = self.candidates {
            parts.push(candidates.condition().to_owned());
        }
        if let Some(project) = &self.project {
            parts.push(format!("project = {}", b.text(project)));
        }
        if let Some(task) = &self.task_name {
            parts.push(format!("task_name = {}", b.text(task)));
        }
        if !self.triggered_by.is_empty() {
            let any: Vec<String> = self.triggered_by.iter().map(|t| b.text(t.as_str())).collect();
            parts.push(format!("triggered_by IN ({})", any.join(", ")));
        }
        if let Some(t) = self.created_after {
            parts.push(format!("created_at >= {}", b.int(t.as_micros())));
        }
        if let Some(t) = self.created_before {
            parts.push(format!("created_at <= {}", b.int(t.as_micros())));
        }
        if let Some(t) = self.deadline_before {
            parts.push(format!("deadline_at <= {}", b.int(t.as_micros())));
        }
        if let Some(code) = self.exit_code_min {
            parts.push(format!("exit_code >= {}", b.int(code)));
        }
        if let Some(code) = self.exit_code_max {
            parts.push(format!("exit_code <= {}", b.int(code)));
        }
        if self.retries_only {
            parts.push("retry_attempt > 0".to_owned());
        }
        if let Some(search) = &self.search {
            parts.push(search_condition(search, table, b));
        }
        for (i, (key, value)) in self.tags.iter().enumerate() {
            let (k, v) = (b.text(key), b.text(value));
            // A page reads runs in its order and checks each one's tags; a
            // count starts from the first tag's index entries and checks
            // the others by key (as lists, every tag's ids were gathered).
            let ids = format!("SELECT t.run_id FROM run_tags t WHERE t.key = {k} AND t.value = {v}");
            parts.push(if b.driving && i == 0 && b.dialect == Dialect::Postgres {
                // See `Builder::driving`.
                format!("id = ANY(ARRAY({ids}))")
            } else if b.counting && i == 0 {
                format!("id IN ({ids})")
            } else {
                format!(
                    "EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = {table}.id AND t.key = {k} AND t.value = {v})"
                )
            });
        }
        if self.dead_lettered_only {
            parts.push("dead_lettered".to_owned());
        }
        if let Some(parent) = &self.parent_run_id {
            parts.push(format!("parent_run_id = {}", b.text(&parent.to_string())));
        }
        // Both are fixed when a run is created, so one table keyed by run
        // serves `runs` and every version in `run_history`.
        if let Some(operation) = &self.operation_id {
            let o = b.text(&operation.to_string());
            parts.push(format!(
                "id IN (SELECT o.run_id FROM run_operations o WHERE o.operation_id = {o})"
            ));
        }
        if let Some(needle) = &self.payload {
            parts.push(payload_condition(needle, table, b));
        }
        parts
    }
}

impl RunFilter {
    /// Whether every condition is on a column of `run_counts`, so that the
    /// total is a sum over it.
    fn counted(&self) -> bool {
        let Self {
            statuses: _,
            project: _,
            task_name: _,
            triggered_by: _,
            created_after,
            created_before,
            deadline_before,
            exit_code_min: _,
            exit_code_max: _,
            retries_only: _,
            search,
            tags,
            parent_run_id,
            operation_id,
            payload,
            include_deleted: _,
            dead_lettered_only: _,
            candidates: _,
        } = self;
        created_after.is_none()
            && created_before.is_none()
            && deadline_before.is_none()
            && search.as_deref().is_none_or(|s| !may_be_in_an_id(s))
            && tags.is_empty()
            && parent_run_id.is_none()
            && operation_id.is_none()
            && payload.is_none()
    }
}

impl RunQuery {
    fn table(&self) -> &'static str {
        if self.as_of.is_some() {
            "run_history"
        } else {
            "runs"
        }
    }

    fn where_parts(&self, b: &mut Builder) -> Vec<String> {
        let mut parts = Vec::new();
        if let Some(position) = self.as_of {
            let p = b.int(position);
            parts.push(format!("position <= {p} AND valid_to > {p}"));
            // A page in created order walks `run_history_created` down from
            // the time of the position, not every version after it.
            if !b.counting && self.sort_field == SortField::CreatedAt {
                parts.push(format!("created_at <= {}", crate::columns::time_at_sql(&p)));
            }
        }
        parts.extend(self.filter.conditions(self.table(), b));
        parts
    }

    fn where_sql(&self, b: &mut Builder) -> String {
        let parts = self.where_parts(b);
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    }

    /// The page: the state of each matching row, in order (for a past
    /// version, the current state and its changes: `RunChanges::decode`).
    /// Run the queries in turn until `limit` rows have come: after a cursor
    /// on a column some runs lack, the rows with a value come first and those
    /// without after them, each from its own index range.
    /// `known`: what was read before the page, which can choose its plan.
    pub fn page_sql(&self, dialect: Dialect, known: &Known) -> Vec<SqlQuery> {
        if let Some(merged) = self
            .merged_statuses_sql(dialect)
            .or_else(|| self.merged_search_sql(dialect, known.search_tasks.as_deref()?))
        {
            return merged;
        }
        let driven = self.driven(known.total);
        let table = self.table();
        let from = match self.walked_index(dialect, known) {
            Some(index) if !driven => format!("{table} INDEXED BY {index}"),
            _ => table.to_owned(),
        };
        let dir = self.sort_direction.sql();
        let column = self.sort_field.column();
        let state = if self.as_of.is_some() {
            crate::columns::HISTORY_STATE
        } else {
            "state"
        };
        // `after`: the keyset condition, if any; `select`: what a row gives.
        let rows = |after: Option<&dyn Fn(&mut Builder) -> String>, order: &str, select: &str| {
            let mut b = Builder::new(dialect);
            b.counting = driven;
            b.driving = driven;
            let mut parts = self.where_parts(&mut b);
            if let Some(after) = after {
                parts.push(after(&mut b));
            }
            let filter = if parts.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", parts.join(" AND "))
            };
            let limit = b.int(self.limit);
            let offset = if self.cursor.is_some() {
                String::new()
            } else {
                format!(" OFFSET {}", b.int(self.offset))
            };
            SqlQuery {
                sql: format!("SELECT {select} FROM {from}{filter} ORDER BY {order} LIMIT {limit}{offset}"),
                args: b.args,
            }
        };
        let page = |after: Option<&dyn Fn(&mut Builder) -> String>, order: &str| rows(after, order, state);
        // Runs without a value sort last; on a column every run has, saying
        // so would only keep PostgreSQL from reading its index backwards.
        let nulls_last = if self.sort_field.nullable() { " NULLS LAST" } else { "" };
        let order = format!("{column} {dir}{nulls_last}, id {dir}");
        let Some(cursor) = &self.cursor else {
            if self.offset == 0 || table != "runs" {
                return vec![page(None, &order)];
            }
            // The rows an offset skips are found from an index alone
            // (PostgreSQL read each one's row: 115 ms for an offset of
            // 50,000 at 100k runs, 8 ms so), then the page's rows by id.
            let keys = rows(None, &order, &format!("id, {column}"));
            return vec![SqlQuery {
                sql: format!(
                    "SELECT r.state FROM runs r JOIN ({}) k ON r.id = k.id \
                     ORDER BY k.{column} {dir}{nulls_last}, k.id {dir}",
                    keys.sql
                ),
                args: keys.args,
            }];
        };
        let cmp = self.sort_direction.after();
        let nulls_order = format!("id {dir}");
        let nulls = |b: &mut Builder| format!("{column} IS NULL AND id {cmp} {}", b.text(&cursor.id));
        match &cursor.value {
            None => vec![page(Some(&nulls), &nulls_order)],
            Some(value) => {
                let valued = |b: &mut Builder| {
                    let v = b.bind(value.clone());
                    format!("({column}, id) {cmp} ({v}, {})", b.text(&cursor.id))
                };
                let mut queries = vec![page(Some(&valued), &order)];
                if self.sort_field.nullable() {
                    let all_nulls = |_: &mut Builder| format!("{column} IS NULL");
                    queries.push(page(Some(&all_nulls), &nulls_order));
                }
                queries
            }
        }
    }

    /// A newest- (or oldest-) first page of several phases, or several end
    /// reasons: one `(status|end_reason, created_at)` index range per value,
    /// merged (see `merged_sql`). One `IN` over that index sorted every
    /// matching run before the first page (all failures and timeouts); the
    /// created-at index filtered would read the whole table for rare values.
    /// `None` where it does not apply.
    fn merged_statuses_sql(&self, dialect: Dialect) -> Option<Vec<SqlQuery>> {
        let statuses = &self.filter.statuses;
        let column = if statuses.iter().all(|s| matches!(s, StatusValue::Phase(_))) {
            "status"
        } else if statuses.iter().all(|s| matches!(s, StatusValue::EndReason(_))) {
            "end_reason"
        } else {
            return None;
        };
        if statuses.len() < 2 {
            return None;
        }
        let rest = RunFilter {
            statuses: Vec::new(),
            ..self.filter.clone()
        };
        let values: Vec<&str> = statuses
            .iter()
            .map(|s| match s {
                StatusValue::Phase(p) => p.as_str(),
                StatusValue::EndReason(r) => r.as_str(),
                _ => unreachable!("checked above"),
            })
            .collect();
        self.merged_sql(dialect, &rest, column, &values, None)
    }

    /// The task names a `search` page reads one by one (`merged_search_sql`),
    /// at most one more than it takes: `None` where a page would not use them.
    pub fn search_tasks_sql(&self, dialect: Dialect) -> Option<SqlQuery> {
        let needle = self.filter.search.as_deref()?;
        if !self.mergeable() {
            return None;
        }
        let mut b = Builder::new(dialect);
        let p = b.text(&contains_pattern(needle));
        let limit = b.int(MAX_MERGED_TASKS + 1);
        Some(SqlQuery {
            sql: format!(
                "SELECT DISTINCT task_name FROM run_counts WHERE lower(task_name) LIKE {p} ESCAPE '\\' \
                 ORDER BY task_name LIMIT {limit}"
            ),
            args: b.args,
        })
    }

    /// A `search` page in created order: one `(task_name, created_at)` index
    /// range per task name that matches (`tasks`, from `search_tasks_sql`),
    /// and for a needle that can be in an id, the runs of other tasks whose
    /// id holds it; merged (see `merged_sql`). As one query, the runs of
    /// every matching task were sorted before the first page.
    fn merged_search_sql(&self, dialect: Dialect, tasks: &[String]) -> Option<Vec<SqlQuery>> {
        let needle = self.filter.search.as_deref()?;
        if tasks.len() as i64 > MAX_MERGED_TASKS {
            return None;
        }
        let rest = RunFilter {
            search: None,
            ..self.filter.clone()
        };
        let values: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let ids = |b: &mut Builder, names: &[String]| {
            let p = b.text(&contains_pattern(needle));
            let mut parts: Vec<String> = search_ids_condition(needle, &p, "runs", b).into_iter().collect();
            // Placeholders already bound: each run comes once.
            if !names.is_empty() {
                parts.push(format!("task_name NOT IN ({})", names.join(", ")));
            }
            parts.join(" AND ")
        };
        let ids: Option<&OtherBranch<'_>> = may_be_in_an_id(needle).then_some(&ids);
        self.merged_sql(dialect, &rest, "task_name", &values, ids)
    }

    /// Whether a page of few matching runs is read from its tag or payload
    /// index (as its count is) and sorted, rather than by walking the sort
    /// order and checking each run: a walk reads about `limit × runs /
    /// total` runs to fill a page, which for a rare tag or payload is most
    /// of the table.
    fn driven(&self, total: Option<i64>) -> bool {
        (!self.filter.tags.is_empty() || self.filter.payload.is_some()) && total.is_some_and(|t| t <= MAX_DRIVEN_TOTAL)
    }

    /// The number of live runs (`Known::live_runs`), asked where a page may
    /// walk its sort's index (`walked_index`): on SQLite, a filtered page in
    /// an order other than created.
    pub fn live_runs_sql(&self, dialect: Dialect) -> Option<SqlQuery> {
        (dialect == Dialect::Sqlite
            && self.as_of.is_none()
            && self.sort_field != SortField::CreatedAt
            && self.filter != RunFilter::default())
        .then(|| RunQuery::default().count_sql(dialect))
    }

    /// The sort's index, where a page walks it in order and checks each run,
    /// as it would without a filter: SQLite's planner, which keeps no
    /// statistics here, reads every run matching a filter it has an index
    /// for (a task, a phase, an end reason) and sorts them all before the
    /// first row (96 ms for task-3's 27,000 runs by status at 1M runs). A
    /// walk reads about `(offset + limit) × live / total` runs, a sort
    /// `total`: the walk is taken when it reads fewer.
    fn walked_index(&self, dialect: Dialect, known: &Known) -> Option<&'static str> {
        self.live_runs_sql(dialect)?;
        let (total, live) = (known.total?, known.live_runs?);
        let needed = self.limit.saturating_add(self.offset);
        (i128::from(total) * i128::from(total) > i128::from(needed) * i128::from(live)).then(|| self.sort_field.index())
    }

    /// The same query with the deleted runs shown.
    fn with_deleted(&self) -> Self {
        RunQuery {
            filter: RunFilter {
                include_deleted: true,
                ..self.filter.clone()
            },
            ..self.clone()
        }
    }

    /// `(SELECT COUNT(*) …)` of the deleted runs among what the query's
    /// conditions select with the deleted shown: what a total taken over
    /// every run (from an index, or from ordinals) subtracts. Read from the
    /// partial index of the deleted runs (`runs_deleted`,
    /// `run_history_deleted`); on `runs` SQLite is told so, since it would
    /// rather count them from the covering created-order index, every entry
    /// of a window again.
    fn deleted_count(&self, b: &mut Builder) -> String {
        let counting = std::mem::replace(&mut b.counting, true);
        let conditions = self.with_deleted().where_sql(b);
        b.counting = counting;
        let from = match (b.dialect, self.table()) {
            (Dialect::Sqlite, "runs") => "runs INDEXED BY runs_deleted",
            (_, table) => table,
        };
        let and = if conditions.is_empty() { " WHERE" } else { " AND" };
        format!("(SELECT COUNT(*) FROM {from}{conditions}{and} deleted)")
    }

    /// The total of the live runs of at most one task, of some phases, or
    /// of some end reasons, or dead-lettered: a sum of columns over at most
    /// one row per task of `task_counts`, which counts exactly these. The
    /// default list and its sorts, a status and a task's list are these; a
    /// sum over `run_counts` for them read its thousands of combinations
    /// (PostgreSQL: 5 ms at 1M runs, its hot rows' table bloated to 900
    /// pages). `None` where a filter has anything else.
    fn task_counts_sql(&self, dialect: Dialect) -> Option<SqlQuery> {
        let RunFilter {
            statuses,
            task_name,
            dead_lettered_only,
            ..
        } = &self.filter;
        let rest = RunFilter {
            statuses: Vec::new(),
            task_name: None,
            dead_lettered_only: false,
            ..self.filter.clone()
        };
        if rest != RunFilter::default() {
            return None;
        }
        // Columns whose runs are disjoint, so that their sum counts each
        // run once: phases, or end reasons, or dead letters alone.
        let mut columns: Vec<&str> = statuses
            .iter()
            .map(|s| match s {
                StatusValue::Phase(p) => Some(p.as_str()),
                StatusValue::EndReason(r) => Some(r.as_str()),
                StatusValue::DeadLetter => Some("dead_letter"),
                StatusValue::Deleted => None,
            })
            .collect::<Option<_>>()?;
        columns.sort_unstable();
        columns.dedup();
        let phases = statuses.iter().all(|s| matches!(s, StatusValue::Phase(_)));
        let reasons = statuses.iter().all(|s| matches!(s, StatusValue::EndReason(_)));
        let dead = statuses.iter().all(|s| matches!(s, StatusValue::DeadLetter));
        if !(phases || reasons || dead) {
            return None;
        }
        if *dead_lettered_only {
            if !(columns.is_empty() || dead) {
                return None;
            }
            columns = vec!["dead_letter"];
        }
        if columns.is_empty() {
            columns.push("total");
        }
        let mut b = Builder::new(dialect);
        let task = match task_name {
            Some(task) => format!(" WHERE task_name = {}", b.text(task)),
            None => String::new(),
        };
        Some(SqlQuery {
            sql: format!(
                "SELECT CAST(COALESCE(SUM({}), 0) AS BIGINT) FROM task_counts{task}",
                columns.join(" + ")
            ),
            args: b.args,
        })
    }

    /// Whether a page can be merged from index ranges in created order.
    fn mergeable(&self) -> bool {
        self.sort_field == SortField::CreatedAt && self.as_of.is_none()
    }

    /// A page in created order merged from disjoint sets of runs matching
    /// `rest`: those with each of `values` in `column`, then those matching
    /// `other` (given the placeholders of `values`), if any. Each set is read
    /// from the end of its own index range for as many rows as the page
    /// needs (after the cursor, if any), then merged. SQLite reads one
    /// branch per value; PostgreSQL one `LATERAL` subquery over the values,
    /// since planning a branch per value cost more than reading them.
    /// `None` where it does not apply.
    fn merged_sql(
        &self,
        dialect: Dialect,
        rest: &RunFilter,
        column: &str,
        values: &[&str],
        other: Option<&OtherBranch<'_>>,
    ) -> Option<Vec<SqlQuery>> {
        if !self.mergeable()
            || self
                .cursor
                .as_ref()
                .is_some_and(|c| c.sort_field != SortField::CreatedAt || c.value.is_none())
        {
            return None;
        }
        let dir = self.sort_direction.sql();
        let cmp = self.sort_direction.after();
        let mut b = Builder::new(dialect);
        // One branch's rows: `condition` and the rest, after the cursor, as
        // many as the page needs, in order.
        let branch = |b: &mut Builder, condition: &mut dyn FnMut(&mut Builder) -> String| {
            let mut parts = rest.conditions("runs", b);
            parts.push(condition(b));
            if let Some(Cursor { value: Some(v), id, .. }) = &self.cursor {
                let v = b.bind(v.clone());
                parts.push(format!("(created_at, id) {cmp} ({v}, {})", b.text(id)));
            }
            let needed = b.int(self.limit.saturating_add(self.offset));
            format!(
                "SELECT created_at, id, state FROM runs WHERE {} ORDER BY created_at {dir}, id {dir} LIMIT {needed}",
                parts.join(" AND ")
            )
        };
        let mut selects = Vec::new();
        let mut placeholders = Vec::new();
        match dialect {
            Dialect::Sqlite => {
                for value in values {
                    let rows = branch(&mut b, &mut |b: &mut Builder| {
                        let p = b.text(value);
                        let condition = format!("{column} = {p}");
                        placeholders.push(p);
                        condition
                    });
                    selects.push(format!("SELECT * FROM ({rows}) b{}", selects.len()));
                }
            }
            Dialect::Postgres if !values.is_empty() => {
                placeholders = values.iter().map(|v| b.text(v)).collect();
                let rows = branch(&mut b, &mut |_: &mut Builder| format!("{column} = v.value"));
                selects.push(format!(
                    "SELECT r.* FROM unnest(ARRAY[{}]::text[]) AS v(value) CROSS JOIN LATERAL ({rows}) r",
                    placeholders.join(", ")
                ));
            }
            Dialect::Postgres => {}
        }
        if let Some(other) = other {
            let rows = branch(&mut b, &mut |b: &mut Builder| other(b, &placeholders));
            selects.push(format!("SELECT * FROM ({rows}) b{}", selects.len()));
        }
        if selects.is_empty() {
            // Nothing can match: no query.
            return Some(Vec::new());
        }
        let (limit, offset) = (b.int(self.limit), b.int(self.offset));
        Some(vec![SqlQuery {
            sql: format!(
                "SELECT state FROM ({}) merged ORDER BY created_at {dir}, id {dir} LIMIT {limit} OFFSET {offset}",
                selects.join(" UNION ALL ")
            ),
            args: b.args,
        }])
    }

    /// The ids of every matching run, in id order, ignoring sort, limit and
    /// offset: a bulk operation's selection.
    pub fn ids_sql(&self, dialect: Dialect) -> SqlQuery {
        let table = self.table();
        let mut b = Builder::new(dialect);
        // The selection is sorted by id whatever the conditions' shape.
        b.counting = true;
        let filter = self.where_sql(&mut b);
        SqlQuery {
            sql: format!("SELECT id FROM {table}{filter} ORDER BY id"),
            args: b.args,
        }
    }

    /// The number of matching rows, ignoring limit and offset: a sum over
    /// the maintained `run_counts` when the filter allows (see
    /// `run_counts`), else a count of the rows.
    pub fn count_sql(&self, dialect: Dialect) -> SqlQuery {
        let one_tag_alone = self.filter.tags.len() == 1
            && RunFilter {
                tags: Vec::new(),
                ..self.filter.clone()
            } == RunFilter::default();
        if self.as_of.is_none() && one_tag_alone {
            let mut b = Builder::new(dialect);
            let (key, value) = &self.filter.tags[0];
            let (k, v) = (b.text(key), b.text(value));
            return SqlQuery {
                sql: format!(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM tag_counts WHERE key = {k} AND value = {v}"
                ),
                args: b.args,
            };
        }
        let window_alone = RunFilter {
            created_after: None,
            created_before: None,
            ..self.filter.clone()
        } == RunFilter::default();
        if window_alone && self.as_of.is_none() && !self.filter.counted() {
            // A time window alone: the runs created in it are a range of
            // ordinals (`runs.seq`; see `LAST_SEQ_SQL`), whose ends are the
            // least ordinal of the earliest runs in the window and the
            // greatest of the latest, each one seek into
            // `runs_created_id`; less the deleted ones, from theirs.
            let mut b = Builder::new(dialect);
            let first = match self.filter.created_after {
                Some(t) => format!(
                    "(SELECT MIN(seq) FROM runs WHERE created_at = \
                     (SELECT MIN(created_at) FROM runs WHERE created_at >= {}))",
                    b.int(t.as_micros())
                ),
                None => "1".to_owned(),
            };
            let until = match self.filter.created_before {
                Some(t) => format!(" WHERE created_at <= {}", b.int(t.as_micros())),
                None => String::new(),
            };
            let last =
                format!("(SELECT MAX(seq) FROM runs WHERE created_at = (SELECT MAX(created_at) FROM runs{until}))");
            let deleted = self.deleted_count(&mut b);
            return SqlQuery {
                sql: format!(
                    "SELECT (SELECT CASE WHEN l >= f THEN l - f + 1 ELSE 0 END FROM (SELECT {first} AS f, {last} AS l) ends) \
                     - {deleted}"
                ),
                args: b.args,
            };
        }
        let every_run = RunFilter {
            include_deleted: false,
            ..self.filter.clone()
        } == RunFilter::default();
        if let (Some(position), true) = (self.as_of, every_run) {
            // The table at a position: the runs created at or before it,
            // which the ordinal of the last of them counts (its first
            // version from the end of `run_history_first`), less those
            // deleted there (from `run_history_deleted`).
            let mut b = Builder::new(dialect);
            let p = b.int(position);
            let created = format!(
                "COALESCE((SELECT r.seq FROM runs r WHERE r.id = (SELECT h.id FROM run_history h \
                 WHERE h.version = 1 AND h.position <= {p} ORDER BY h.position DESC LIMIT 1)), 0)"
            );
            let sql = if self.filter.include_deleted {
                format!("SELECT {created}")
            } else {
                format!("SELECT {created} - {}", self.deleted_count(&mut b))
            };
            return SqlQuery { sql, args: b.args };
        }
        if window_alone && self.as_of.is_some() {
            // The table at a position (and a time window in it): every row
            // of it from an index alone, less the deleted ones from theirs
            // (NOT deleted would read each row).
            let table = self.table();
            let mut b = Builder::new(dialect);
            b.counting = true;
            let every = self.with_deleted().where_sql(&mut b);
            let deleted = self.deleted_count(&mut b);
            return SqlQuery {
                sql: format!("SELECT (SELECT COUNT(*) FROM {table}{every}) - {deleted}"),
                args: b.args,
            };
        }
        if let Some(sql) = self.as_of.is_none().then(|| self.task_counts_sql(dialect)).flatten() {
            return sql;
        }
        if self.as_of.is_none() && self.filter.counted() {
            let mut b = Builder::new(dialect);
            b.counting = true;
            let parts = self.filter.conditions("run_counts", &mut b);
            let filter = if parts.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", parts.join(" AND "))
            };
            return SqlQuery {
                sql: format!("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM run_counts{filter}"),
                args: b.args,
            };
        }
        let table = self.table();
        let mut b = Builder::new(dialect);
        b.counting = true;
        let filter = self.where_sql(&mut b);
        SqlQuery {
            sql: format!("SELECT COUNT(*) FROM {table}{filter}"),
            args: b.args,
        }
    }
}

/// One row of `GET /api/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct TaskSummary {
    pub task_name: String,
    /// Runs of the task that are not deleted.
    pub total: i64,
    /// Run counts by phase (`pending`, `running`, `paused`, `ended`), by end
    /// reason, and `dead_letter`.
    pub counts: BTreeMap<String, i64>,
    pub last_run: Option<RunState>,
    pub last_success: Option<RunState>,
    pub last_failure: Option<RunState>,
}

impl TaskSummary {
    /// A page of tasks: name, total, then one count per key of
    /// `count_keys()`, then the ids of its latest run, success and failure
    /// (NULL where it has none), from the maintained `task_counts` (see
    /// `task_counts`).
    pub fn counts_sql(limit: i64, offset: i64) -> SqlQuery {
        let mut b = Builder::default();
        let (limit, offset) = (b.int(limit), b.int(offset));
        let mut columns = crate::task_counts::count_columns();
        let latest: Vec<String> = crate::task_counts::Latest::ALL
            .iter()
            .map(|k| format!("{}_id", k.column()))
            .collect();
        columns.extend(latest.iter().map(String::as_str));
        SqlQuery {
            sql: format!(
                "SELECT task_name, {} FROM task_counts ORDER BY task_name LIMIT {limit} OFFSET {offset}",
                columns.join(", ")
            ),
            args: b.args,
        }
    }

    pub const TASK_COUNT_SQL: &'static str = "SELECT COUNT(*) FROM task_counts";

    /// The keys of the counts, in the column order of `counts_sql` (after `total`).
    pub fn count_keys() -> Vec<&'static str> {
        let mut keys: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        keys.extend(EndReason::ALL.iter().map(|r| r.as_str()));
        keys.push("dead_letter");
        keys
    }

    /// A row of `counts_sql`, given its columns after the name in order
    /// (total, counts, latest ids), and the states of the runs the ids name.
    pub fn from_row(
        task_name: String,
        columns: &[i64],
        latest: [Option<String>; 3],
        states: &std::collections::HashMap<String, RunState>,
    ) -> Self {
        let counts = Self::count_keys()
            .into_iter()
            .zip(&columns[1..])
            .map(|(k, n)| (k.to_owned(), *n))
            .collect();
        let [last_run, last_success, last_failure] = latest.map(|id| id.and_then(|id| states.get(&id).cloned()));
        Self {
            task_name,
            total: columns[0],
            counts,
            last_run,
            last_success,
            last_failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_of_first_use() {
        let q = RunQuery {
            filter: RunFilter {
                statuses: vec![StatusValue::Phase(RunStatus::Running), StatusValue::Deleted],
                task_name: Some("t".into()),
                search: Some("50%_".into()),
                tags: vec![("env".into(), "prod".into())],
                ..Default::default()
            },
            ..Default::default()
        };
        let page = q.page_sql(Dialect::Sqlite, &Known::default()).remove(0);
        assert!(page.sql.contains("status IN ($1)"), "{}", page.sql);
        assert!(page.sql.contains("task_name = $2"));
        assert!(page.sql.contains("LIKE $3"), "{}", page.sql);
        assert!(!page.sql.contains("MATCH"), "no id has a % in it: {}", page.sql);
        assert!(page.sql.contains("t.key = $4 AND t.value = $5"));
        assert!(page.sql.ends_with("LIMIT $6 OFFSET $7"));
        assert!(!page.sql.contains("NOT deleted"), "asking for deleted runs shows them");
        assert_eq!(page.args[2], Arg::Text("%50\\%\\_%".into()));
        assert_eq!(q.count_sql(Dialect::Sqlite).args.len(), 5);
        let id_like = RunQuery {
            filter: RunFilter {
                search: Some("0aB-1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let page = id_like.page_sql(Dialect::Sqlite, &Known::default()).remove(0);
        assert!(
            page.sql.contains("MATCH $2") && page.sql.contains("lower(id) LIKE $1"),
            "{}",
            page.sql
        );
        assert_eq!(page.args[1], Arg::Text("\"0ab\" AND \"ab-\" AND \"b-1\"".into()));
        assert!(id_like
            .count_sql(Dialect::Sqlite)
            .sql
            .starts_with("SELECT COUNT(*) FROM runs"));
        let pg = id_like.page_sql(Dialect::Postgres, &Known::default()).remove(0);
        assert!(pg.sql.contains("OR (lower(id) LIKE $1"), "{}", pg.sql);
        let task_only = RunQuery {
            filter: RunFilter {
                search: Some("etl".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(task_only.count_sql(Dialect::Postgres).sql.contains("FROM run_counts"));
    }

    #[test]
    fn deleted_runs_are_hidden_by_default() {
        let q = RunQuery::default();
        // task_counts counts live runs only.
        assert!(q
            .count_sql(Dialect::Sqlite)
            .sql
            .ends_with("SUM(total), 0) AS BIGINT) FROM task_counts"));
        let page = q.page_sql(Dialect::Sqlite, &Known::default()).remove(0);
        assert!(page.sql.contains("WHERE NOT deleted"), "{}", page.sql);
        let all = RunQuery {
            filter: RunFilter {
                include_deleted: true,
                ..Default::default()
            },
            ..q
        };
        assert!(!all.count_sql(Dialect::Sqlite).sql.contains("deleted"));
    }

    #[test]
    fn totals_of_a_task_and_disjoint_statuses_are_sums_over_task_counts() {
        let total = |statuses: Vec<StatusValue>, task: Option<&str>| {
            RunQuery {
                filter: RunFilter {
                    statuses,
                    task_name: task.map(str::to_owned),
                    ..Default::default()
                },
                ..Default::default()
            }
            .count_sql(Dialect::Postgres)
            .sql
        };
        let (failed, timeout) = (
            StatusValue::EndReason(EndReason::Failed),
            StatusValue::EndReason(EndReason::Timeout),
        );
        assert_eq!(
            total(vec![failed, timeout], Some("etl")),
            "SELECT CAST(COALESCE(SUM(failed + timeout), 0) AS BIGINT) FROM task_counts WHERE task_name = $1"
        );
        assert!(
            total(vec![StatusValue::DeadLetter], None).ends_with("SUM(dead_letter), 0) AS BIGINT) FROM task_counts")
        );
        // A phase and an end reason can hold the same run: not a sum.
        let ended = StatusValue::Phase(RunStatus::Ended);
        assert!(total(vec![ended, failed], None).contains("FROM run_counts"));
        assert!(total(vec![StatusValue::Deleted], None).contains("FROM run_counts"));
    }

    #[test]
    fn status_values_cover_phases_reasons_and_flags() {
        assert_eq!(
            StatusValue::parse("running"),
            Some(StatusValue::Phase(RunStatus::Running))
        );
        assert_eq!(
            StatusValue::parse("timeout"),
            Some(StatusValue::EndReason(EndReason::Timeout))
        );
        assert_eq!(StatusValue::parse("dead_letter"), Some(StatusValue::DeadLetter));
        assert_eq!(StatusValue::parse("done"), None);
    }
}
