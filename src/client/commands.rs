//! The subcommands: each calls the API and prints a table or the JSON.

use std::io::Write;

use serde_json::{json, Value};

use super::args::{ListArgs, RunsArgs, RunsCmd, TasksArgs};
use super::{bulk, render, segment, tail, Client, ClientError};

/// Writes a line to stdout; a closed pipe (`| head`) ends the program
/// quietly, as other command-line tools do.
pub fn out(line: &str) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(ClientError::Other(format!("cannot write to stdout: {e}"))),
    }
}

pub fn out_json(value: &Value) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ClientError::Other(e.to_string()))?;
    out(&text)
}

fn table_or_empty(table: comfy_table::Table, empty: bool, what: &str) -> Result<(), ClientError> {
    if empty {
        eprintln!("no {what} found");
        Ok(())
    } else {
        out(&table.trim_fmt())
    }
}

pub async fn runs(args: RunsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let json = args.server.json;
    match &args.command {
        RunsCmd::List(list) => list_runs(&client, list, json).await,
        RunsCmd::Get { id, as_of } => {
            let query: Vec<(String, String)> = as_of.iter().map(|a| ("as_of".to_owned(), a.clone())).collect();
            let run = client.get(&format!("/api/runs/{}", segment(id)), &query).await?;
            if json {
                out_json(&run)
            } else {
                out(&render::run(&run).trim_fmt())
            }
        }
        RunsCmd::Events { id, types } => {
            let path = format!("/api/runs/{}/events", segment(id));
            let mut base = Vec::new();
            if !types.is_empty() {
                base.push(("type".to_owned(), types.join(",")));
            }
            let mut events = Vec::new();
            let mut after: Option<i64> = None;
            loop {
                let mut query = base.clone();
                if let Some(a) = after {
                    query.push(("after_version".to_owned(), a.to_string()));
                }
                let page = client.get(&path, &query).await?;
                events.extend(page["events"].as_array().cloned().unwrap_or_default());
                match page["next_after_version"].as_i64() {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if json {
                out_json(&json!({ "events": events }))
            } else {
                table_or_empty(render::events(&events), events.is_empty(), "events")
            }
        }
        RunsCmd::History { id } => {
            const PAGE: usize = 1000;
            let path = format!("/api/runs/{}/history", segment(id));
            let mut history = Vec::new();
            loop {
                let after = history
                    .last()
                    .and_then(|item: &Value| item["event"]["stream_version"].as_i64())
                    .unwrap_or(0);
                let query = [
                    ("after_version".to_owned(), after.to_string()),
                    ("limit".to_owned(), PAGE.to_string()),
                ];
                let page = client.get(&path, &query).await?;
                let items = page["history"].as_array().cloned().unwrap_or_default();
                let full = items.len() == PAGE;
                history.extend(items);
                if !full {
                    break;
                }
            }
            if json {
                out_json(&json!({ "history": history }))
            } else {
                out(&render::history(&history).trim_fmt())
            }
        }
        RunsCmd::Retry {
            id,
            reason,
            failed_only,
        } => {
            let mut body = json!({});
            if let Some(r) = reason {
                body["reason"] = r.clone().into();
            }
            if *failed_only {
                body["failed_only"] = true.into();
            }
            let answer = client.post(&format!("/api/runs/{}/retry", segment(id)), &body).await?;
            if json {
                out_json(&answer)
            } else {
                out(&render::text(&answer["message"]))
            }
        }
        RunsCmd::Cancel { id, reason } => transition(&client, "cancel", id, reason, json).await,
        RunsCmd::Restore { id, reason } => transition(&client, "restore", id, reason, json).await,
        RunsCmd::Delete { id, reason } => {
            let run = client
                .delete(&format!("/api/runs/{}", segment(id)), &reason_body(reason))
                .await?;
            changed(&run, "deleted", json)
        }
        RunsCmd::Tail(tail_args) => tail::tail(&client, tail_args, json).await,
        RunsCmd::Bulk(bulk_args) => bulk::bulk(&client, bulk_args, json).await,
    }
}

fn reason_body(reason: &Option<String>) -> Value {
    match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    }
}

async fn transition(
    client: &Client,
    action: &str,
    id: &str,
    reason: &Option<String>,
    json: bool,
) -> Result<(), ClientError> {
    let run = client
        .post(&format!("/api/runs/{}/{action}", segment(id)), &reason_body(reason))
        .await?;
    let done = if action == "cancel" { "canceled" } else { "restored" };
    changed(&run, done, json)
}

fn changed(run: &Value, done: &str, json: bool) -> Result<(), ClientError> {
    if json {
        out_json(run)
    } else {
        out(&format!(
            "run {} {done} (status {}, version {})",
            render::text(&run["id"]),
            render::status(run),
            render::text(&run["version"])
        ))
    }
}

async fn list_runs(client: &Client, args: &ListArgs, json: bool) -> Result<(), ClientError> {
    let path = if args.dlq { "/api/runs/dlq" } else { "/api/runs" };
    let base = args.query();
    let mut cursor = args.cursor.clone();
    let mut runs = Vec::new();
    let first = loop {
        let mut query = base.clone();
        if let Some(c) = &cursor {
            query.push(("cursor".to_owned(), c.clone()));
        }
        let page = client.get(path, &query).await?;
        runs.extend(page["runs"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !args.all || cursor.is_none() {
            break page;
        }
    };
    if json {
        // One document: the page as the server sent it, or with --all
        // every row in one array.
        return if args.all {
            out_json(&Value::Array(runs))
        } else {
            out_json(&first)
        };
    }
    table_or_empty(render::runs(&runs), runs.is_empty(), "runs")?;
    if !args.all {
        if let Some(next) = &cursor {
            eprintln!(
                "{} of {} runs; more with --cursor {next} (or --all)",
                runs.len(),
                render::text(&first["total"])
            );
        }
    }
    Ok(())
}

pub async fn tasks(args: TasksArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let mut query = Vec::new();
    for (name, value) in [("limit", &args.limit), ("offset", &args.offset)] {
        if let Some(v) = value {
            query.push((name.to_owned(), v.clone()));
        }
    }
    let page = client.get("/api/tasks", &query).await?;
    if args.server.json {
        return out_json(&page);
    }
    let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
    table_or_empty(render::tasks(&tasks), tasks.is_empty(), "tasks")
}
