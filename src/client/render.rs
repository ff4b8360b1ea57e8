//! Tables for people: kubectl-style columns with no borders, fitted to the
//! terminal's width and coloured only when stdout is a terminal (comfy-table
//! detects both; piped output is plain and never wrapped).

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde_json::Value;

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(Cell::new));
    // Borderless columns still need a gap; NOTHING leaves one space of
    // padding on each side, so the first column starts one space in.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// A field as text: strings bare, null as `-`, anything else as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a list shows as a run's status: its end reason once ended, plus
/// its flags.
pub fn status(run: &Value) -> String {
    let mut status = match run["end_reason"].as_str() {
        Some(reason) => reason.to_owned(),
        None => text(&run["status"]),
    };
    if run["dead_lettered"] == true {
        status.push_str(",dead_letter");
    }
    if run["deleted"] == true {
        status.push_str(",deleted");
    }
    status
}

fn status_cell(run: &Value) -> Cell {
    let text = status(run);
    let colour = match run["end_reason"]
        .as_str()
        .unwrap_or_else(|| run["status"].as_str().unwrap_or(""))
    {
        "success" => Color::Green,
        "failed" | "timeout" | "crashed" | "log_overflow" => Color::Red,
        "running" => Color::Cyan,
        "pending" | "paused" => Color::Yellow,
        _ => Color::Reset,
    };
    Cell::new(text).fg(colour)
}

fn duration(run: &Value) -> String {
    match run["duration_ms"].as_i64() {
        None => "-".to_owned(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) if ms < 3_600_000 => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000),
        Some(ms) => format!("{}h{}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

pub fn runs(runs: &[Value]) -> Table {
    let mut t = table(&[
        "ID", "TASK", "STATUS", "EXIT", "ATTEMPT", "TRIGGER", "CREATED", "DURATION",
    ]);
    for run in runs {
        t.add_row(vec![
            Cell::new(text(&run["id"])),
            Cell::new(text(&run["task_name"])),
            status_cell(run),
            Cell::new(text(&run["exit_code"])),
            Cell::new(text(&run["retry_attempt"])),
            Cell::new(text(&run["triggered_by"])),
            Cell::new(text(&run["created_at"])),
            Cell::new(duration(run)),
        ]);
    }
    t
}

/// One run as FIELD / VALUE rows, in the server's field order; empty
/// fields are left out.
pub fn run(run: &Value) -> Table {
    let mut t = table(&["FIELD", "VALUE"]);
    if let Some(fields) = run.as_object() {
        for (name, value) in fields {
            let empty = match value {
                Value::Null => true,
                Value::Object(o) => o.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if !empty {
                t.add_row(vec![Cell::new(name), Cell::new(text(value))]);
            }
        }
    }
    t
}

pub fn events(events: &[Value]) -> Table {
    let mut t = table(&["POSITION", "VERSION", "TYPE", "ACTOR", "RECORDED", "DATA"]);
    for e in events {
        t.add_row(vec![
            text(&e["position"]),
            text(&e["stream_version"]),
            text(&e["type"]),
            text(&e["metadata"]["actor"]),
            text(&e["recorded_at"]),
            text(&e["data"]),
        ]);
    }
    t
}

pub fn history(items: &[Value]) -> Table {
    let mut t = table(&["VERSION", "POSITION", "TYPE", "STATUS", "RECORDED", "ACTOR"]);
    for item in items {
        let (e, state) = (&item["event"], &item["state"]);
        t.add_row(vec![
            Cell::new(text(&e["stream_version"])),
            Cell::new(text(&e["position"])),
            Cell::new(text(&e["type"])),
            status_cell(state),
            Cell::new(text(&e["recorded_at"])),
            Cell::new(text(&e["metadata"]["actor"])),
        ]);
    }
    t
}

pub fn tasks(tasks: &[Value]) -> Table {
    let mut t = table(&[
        "TASK",
        "TOTAL",
        "PENDING",
        "RUNNING",
        "SUCCESS",
        "FAILED",
        "DEAD_LETTER",
        "LAST_RUN",
        "LAST_STATUS",
    ]);
    for task in tasks {
        let count = |key: &str| text(&task["counts"][key]);
        let last = &task["last_run"];
        t.add_row(vec![
            Cell::new(text(&task["task_name"])),
            Cell::new(text(&task["total"])),
            Cell::new(count("pending")),
            Cell::new(count("running")),
            Cell::new(count("success")),
            Cell::new(count("failed")),
            Cell::new(count("dead_letter")),
            Cell::new(text(&last["created_at"])),
            if last.is_null() {
                Cell::new("-")
            } else {
                status_cell(last)
            },
        ]);
    }
    t
}

/// One event of `tail` as a line: position, time, type, run, actor.
pub fn event_line(e: &Value) -> String {
    let run = e["stream_id"]
        .as_str()
        .map_or("-", |s| s.strip_prefix("run-").unwrap_or(s));
    format!(
        "{:>8}  {}  {:<24}  {}  {}",
        text(&e["position"]),
        text(&e["recorded_at"]),
        text(&e["type"]),
        run,
        text(&e["metadata"]["actor"])
    )
}
