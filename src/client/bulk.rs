//! `runledger runs bulk ACTION`: a dry run first, which counts the runs and
//! names the log position the selection was taken at; only with `--yes` the
//! call is made again, pinned at that position (`as_of`), so it acts on
//! exactly the runs that were counted even if others match by now.

use serde_json::{json, Map, Value};

use super::args::{BulkAction, BulkArgs};
use super::commands::{out, out_json};
use super::{render, Client, ClientError};

/// The request body without `dry_run` and `as_of`.
fn selector(args: &BulkArgs) -> Result<Map<String, Value>, ClientError> {
    let filter = args.filter.filter();
    let mut body = Map::new();
    if !args.ids.is_empty() {
        body.insert("ids".into(), args.ids.clone().into());
        // Passed on so that the server names what does not belong.
        if !filter.is_empty() {
            body.insert("filter".into(), filter.into());
        }
    } else if args.match_all || !filter.is_empty() {
        body.insert("match_all".into(), true.into());
        if !filter.is_empty() {
            body.insert("filter".into(), filter.into());
        }
    } else {
        return Err(ClientError::Other(
            "give a selector: --ids, filter flags (--status, --task-name, …), or --match-all for every run".into(),
        ));
    }
    if !args.except_id.is_empty() {
        body.insert("except_ids".into(), args.except_id.clone().into());
    }
    if let Some(reason) = &args.reason {
        body.insert("reason".into(), reason.clone().into());
    }
    Ok(body)
}

fn verb(action: BulkAction) -> &'static str {
    match action {
        BulkAction::Delete => "delete",
        BulkAction::Restore => "restore",
        BulkAction::Rerun => "rerun the tasks of",
        BulkAction::Cancel => "cancel",
        BulkAction::Retry => "retry",
        BulkAction::DlqReplay => "replay",
    }
}

pub async fn bulk(client: &Client, args: &BulkArgs, json: bool) -> Result<(), ClientError> {
    let body = selector(args)?;
    let path = format!("/api/runs/bulk/{}", args.action.path());
    let mut dry = body.clone();
    dry.insert("dry_run".into(), true.into());
    let count = client.post(&path, &Value::Object(dry)).await?;
    let (affected, selected, as_of) = (
        count["affected"].as_u64().unwrap_or(0),
        count["selected"].as_u64().unwrap_or(0),
        count["as_of"].as_i64().unwrap_or(0),
    );
    let summary = format!(
        "dry run: would {} {affected} runs ({selected} selected) as of position {as_of}",
        verb(args.action)
    );
    let unknown = count["unknown_ids"].as_array().cloned().unwrap_or_default();
    let unknown_text = (!unknown.is_empty()).then(|| {
        let ids: Vec<String> = unknown.iter().map(render::text).collect();
        format!("unknown ids: {}", ids.join(", "))
    });
    // With --json stdout holds one document: the dry run's, or the act's.
    let note = |line: &str| -> Result<(), ClientError> {
        if json {
            eprintln!("{line}");
            Ok(())
        } else {
            out(line)
        }
    };
    note(&summary)?;
    if let Some(text) = &unknown_text {
        note(text)?;
    }
    if !args.yes {
        if json {
            out_json(&count)?;
        }
        eprintln!("nothing changed; run again with --yes to act on these {affected} runs");
        return Ok(());
    }
    if affected == 0 {
        if json {
            out_json(&count)?;
        }
        eprintln!("nothing to do");
        return Ok(());
    }
    let mut act = body;
    // Ids name their runs; a filter is pinned where it was counted.
    if act.contains_key("match_all") {
        act.insert("as_of".into(), json!(as_of));
    }
    let answer = client.post(&path, &Value::Object(act)).await?;
    if json {
        return out_json(&answer);
    }
    print_answer(args.action, &answer, affected)
}

fn print_answer(action: BulkAction, answer: &Value, counted: u64) -> Result<(), ClientError> {
    let affected = answer["affected"].as_u64().unwrap_or(0);
    let operation = render::text(&answer["operation_id"]);
    match action {
        BulkAction::Retry | BulkAction::DlqReplay | BulkAction::Rerun => {
            let runs: Vec<Value> = match &answer["runs"] {
                Value::Array(runs) => runs.clone(),
                Value::Object(by_task) => by_task.values().cloned().collect(),
                _ => Vec::new(),
            };
            out(&format!("created {} runs (operation {operation}):", runs.len()))?;
            out(&render::runs(&runs).trim_fmt())?;
        }
        BulkAction::Cancel => out(&format!(
            "canceled {} runs, {} failed (operation {operation})",
            render::text(&answer["canceled"]),
            render::text(&answer["failed"])
        ))?,
        BulkAction::Delete | BulkAction::Restore => {
            out(&format!("{}d {affected} runs (operation {operation})", action.path()))?
        }
    }
    let failures = match action {
        BulkAction::Cancel => answer["results"]
            .as_array()
            .map(|r| r.iter().filter(|r| r["status"] == "failed").cloned().collect())
            .unwrap_or_default(),
        _ => answer["failed"].as_array().cloned().unwrap_or_default(),
    };
    for f in &failures {
        eprintln!(
            "not acted on: {}: {}",
            render::text(&f["id"]),
            render::text(&f["error"])
        );
    }
    if affected != counted {
        eprintln!("note: the dry run counted {counted} runs; {affected} changed");
    }
    Ok(())
}
