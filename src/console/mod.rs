//! The console: server-rendered HTML pages over the same queries as the
//! API (`/` is `GET /api/runs` with the same query string; `/runs/{id}` is
//! the run's debug bundle), a small script of our own for live updates,
//! time travel and actions, and a stylesheet, all embedded in the binary.

// A handler's error is the page that says what went wrong; it is built once
// per request and never passed far, so it is not boxed.
#![allow(clippy::result_large_err)]

mod page;

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Extension, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::auth::Scope;
use crate::http::auth::{limit_key, Caller, Gate, Via};
use crate::http::error::ApiError;
use crate::http::extract::{decode_query, QueryParams, MAX_QUERY_BYTES};
use crate::http::runs::{parse_as_of, resolve, run_query};
use crate::ledger::Ledger;
use page::{attr, esc, Viewer};

const SCRIPT: &str = include_str!("../../assets/console.js");
const STYLE: &str = include_str!("../../assets/console.css");

/// What the console's pages read from.
pub struct Console {
    pub ledger: Arc<Ledger>,
    pub gate: Arc<Gate>,
    pub bundle_cap: usize,
}

pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(runs_view))
        .route("/runs/{id}", get(run_page))
        .route("/diff", get(diff_view))
        .route(
            "/console/assets/console.js",
            get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/console/assets/console.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .layer(Extension(Arc::new(console)))
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    page::guard(&mut response);
    response
}

/// A failure as a page: refused input names each field, anything else is
/// logged and said in general words.
fn failure(e: ApiError) -> Response {
    let problem = e.into_response();
    let status = problem.status();
    let p = problem.extensions().get::<crate::http::Problem>().cloned();
    let Some(p) = p else {
        return page::error(status, "Error", "the request failed", &[]);
    };
    let faults: Vec<(String, String)> = p
        .errors
        .iter()
        .map(|f| (f.location.clone(), f.message.clone()))
        .collect();
    if status == StatusCode::UNAUTHORIZED {
        return page::sign_in(&p.detail);
    }
    page::error(status, &p.title, &p.detail, &faults)
}

impl Console {
    /// Whether the hash chain verifies for every event of these runs (each
    /// linked into the log), as a line for the page.
    async fn chain_verdict(&self, ids: &[uuid::Uuid]) -> Result<String, Response> {
        let mut checked = 0;
        for id in ids {
            let events = self
                .ledger
                .run_events_stored(*id)
                .await
                .map_err(|e| failure(e.into()))?;
            let Some(events) = events else { continue };
            let v = self
                .ledger
                .verify_run(*id, &events)
                .await
                .map_err(|e| failure(e.into()))?;
            checked += v.events_checked;
            if let Some(f) = v.first_failure {
                return Ok(format!(
                    r#"<p class="chain bad" id="chain" role="alert">✖ Hash chain does NOT verify: run {} at position {}: {}</p>"#,
                    page::run_link(&id.to_string(), &id.to_string()),
                    f.position,
                    esc(&f.reason)
                ));
            }
        }
        Ok(format!(
            r#"<p class="chain ok" id="chain">✔ Hash chain verifies for the {} runs on screen ({checked} events).</p>"#,
            ids.len()
        ))
    }

    /// The viewer, who must hold `runs:read`; otherwise the page to show.
    /// Pages are charged to the same rate limit as the API calls of the
    /// same caller.
    async fn viewer(&self, parts: &Parts) -> Result<(Caller, Viewer), Response> {
        let identity = self.gate.identify(&parts.headers).await;
        let key = limit_key(identity.as_ref().ok().map(|(c, _, _)| c), &parts.extensions);
        if let Err(too_many) = self.gate.charge(key) {
            let retry = too_many.headers().get(header::RETRY_AFTER).cloned();
            let mut page = page::error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "this caller has used its request budget; wait a moment and reload",
                &[],
            );
            if let Some(retry) = retry {
                page.headers_mut().insert(header::RETRY_AFTER, retry);
            }
            return Err(page);
        }
        let (caller, _, via) = identity.map_err(failure)?;
        if !caller.covers(Scope::RunsRead) {
            return Err(failure(ApiError::Forbidden {
                required: Scope::RunsRead,
                granted: caller.scopes,
            }));
        }
        let viewer = Viewer {
            actor: caller.name.clone(),
            by_cookie: matches!(via, Via::Cookie(_)),
            open: via == Via::Open,
        };
        Ok((caller, viewer))
    }
}

/// The query string as pairs, with the API's limits on it.
fn pairs_of(uri: &axum::http::Uri) -> Result<Vec<(String, String)>, Response> {
    let raw = uri.query().unwrap_or_default();
    if raw.len() > MAX_QUERY_BYTES {
        return Err(failure(ApiError::invalid_one(
            "query",
            format!(
                "the query string is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
                raw.len()
            ),
            None,
        )));
    }
    decode_query(raw).map_err(failure)
}

fn json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The most rows a run page shows per section; the debug bundle has all.
const MAX_ROWS: usize = 1_000;

/// The list filters of a runs view, for a bulk call's `filter`.
const NOT_FILTERS: [&str; 6] = ["limit", "offset", "cursor", "sort_field", "sort_direction", "as_of"];

async fn runs_view(Extension(c): Extension<Arc<Console>>, parts: Parts) -> Response {
    match runs_view_inner(&c, &parts).await {
        Ok(r) | Err(r) => r,
    }
}

async fn runs_view_inner(c: &Console, parts: &Parts) -> Result<Response, Response> {
    let (_, viewer) = c.viewer(parts).await?;
    let pairs = pairs_of(&parts.uri)?;
    let mut params = QueryParams::from_pairs("query", pairs.clone());
    let mut query = run_query(&mut params);
    let as_of = params.parsed("as_of", parse_as_of);
    params.finish().map_err(failure)?;
    let head = *c.ledger.head().borrow();
    if let Some(at) = as_of {
        query.as_of = Some(resolve(&c.ledger, at).await.map_err(failure)?);
    }
    let (runs, total) = c.ledger.list_runs(query.clone()).await.map_err(|e| failure(e.into()))?;
    let runs: Vec<Value> = runs.iter().map(json).collect();
    let (tasks, _) = c.ledger.tasks(50, 0).await.map_err(|e| failure(e.into()))?;

    let ids: Vec<uuid::Uuid> = runs.iter().filter_map(|r| r["id"].as_str()?.parse().ok()).collect();
    let chain = c.chain_verdict(&ids).await?;

    let mut html = String::new();
    let at_text = match query.as_of {
        Some(p) => format!(
            r#"as of position <strong id="as-of-position">{p}</strong> (head is {head}) · <a href="/{}">back to now</a>"#,
            attr(&page::query(&page::with(&pairs, &[("as_of", None)])))
        ),
        None => format!(r#"live · head position <strong id="head-position">{head}</strong>"#),
    };
    let _ = write!(html, r#"<h1>Runs</h1><p class="when">{at_text}</p>"#);
    time_travel(&mut html, &pairs, query.as_of.unwrap_or(head), head, "/");
    html.push_str(&chain);
    filters(&mut html, &pairs);
    tasks_summary(&mut html, &tasks, query.as_of.is_some());

    // The table, with selection and bulk actions.
    let filter: serde_json::Map<String, Value> = {
        let mut m = serde_json::Map::new();
        for (k, v) in pairs
            .iter()
            .filter(|(k, v)| !v.is_empty() && !NOT_FILTERS.contains(&k.as_str()))
        {
            if k == "tag" {
                let entry = m.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(a) = entry {
                    a.push(Value::String(v.clone()));
                }
            } else {
                m.insert(k.clone(), Value::String(v.clone()));
            }
        }
        m
    };
    let _ = write!(
        html,
        r#"<section aria-labelledby="runs-h"><h2 id="runs-h">Runs <span class="count" id="total">{total}</span></h2>
<form id="bulk" class="bulk" data-filter="{}" data-as-of="{}">
<fieldset><legend>Bulk action</legend>
<label><input type="radio" name="scope" value="selected" checked> selected runs</label>
<label><input type="radio" name="scope" value="all"> all <span id="bulk-count">{total}</span> matching</label>
<select name="action" aria-label="Action"><option value="cancel">cancel</option><option value="retry">retry</option><option value="delete">delete</option><option value="restore">restore</option><option value="rerun">rerun</option></select>
<button type="submit">Review…</button>
</fieldset>
<div id="bulk-result" role="status" aria-live="polite"></div>
</form>
<div id="live-region">"#,
        attr(&Value::Object(filter).to_string()),
        query.as_of.map(|p| p.to_string()).unwrap_or_default()
    );
    runs_table(&mut html, &pairs, &runs, &query);
    let shown_from = if runs.is_empty() { 0 } else { query.offset + 1 };
    let shown_to = query.offset + runs.len() as i64;
    let _ = write!(
        html,
        r#"<nav class="pages" aria-label="Pages"><span id="shown">{shown_from}–{shown_to} of {total}</span> "#
    );
    if query.offset > 0 {
        let prev = (query.offset - query.limit).max(0).to_string();
        let _ = write!(
            html,
            r#"<a rel="prev" href="/{}">← previous</a> "#,
            attr(&page::query(&page::with(&pairs, &[("offset", Some(&prev))])))
        );
    }
    if shown_to < total {
        let next = shown_to.to_string();
        let _ = write!(
            html,
            r#"<a rel="next" href="/{}">next →</a>"#,
            attr(&page::query(&page::with(&pairs, &[("offset", Some(&next))])))
        );
    }
    html.push_str("</nav></div></section>");
    // The stream carries the view's task and project filters, so a busy
    // ledger wakes only the views its events can change.
    let stream = format!(
        "/api/events/stream{}",
        page::query(
            &pairs
                .iter()
                .filter(|(k, _)| k == "task_name" || k == "project")
                .cloned()
                .collect::<Vec<_>>()
        )
    );
    let live = query.as_of.is_none().then_some(stream.as_str());
    Ok(page::respond(
        StatusCode::OK,
        page::frame("Runs", Some(&viewer), live, &html),
    ))
}

/// The position/time control: a slider over the log and a free field.
fn time_travel(html: &mut String, pairs: &[(String, String)], at: i64, head: i64, action: &str) {
    let hidden: String = pairs
        .iter()
        .filter(|(k, v)| k != "as_of" && k != "offset" && !v.is_empty())
        .map(|(k, v)| format!(r#"<input type="hidden" name="{}" value="{}">"#, attr(k), attr(v)))
        .collect();
    let _ = write!(
        html,
        r#"<form class="travel card" id="travel" action="{action}" method="get">
<fieldset><legend>Time travel</legend>{hidden}
<label for="as-of-slider">Position</label>
<input type="range" id="as-of-slider" min="0" max="{head}" value="{at}" aria-describedby="as-of-hint">
<label for="as-of-time">or a time</label>
<input type="datetime-local" id="as-of-time" step="1" aria-describedby="as-of-hint">
<label for="as_of">as_of</label>
<input id="as_of" name="as_of" value="{at}" size="28" aria-describedby="as-of-hint">
<button type="submit">Go</button>
<span id="as-of-hint" class="hint">a log position, or an RFC 3339 time such as 2026-12-04T10:02:00Z</span>
</fieldset></form>"#
    );
}

fn filters(html: &mut String, pairs: &[(String, String)]) {
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| attr(v))
            .unwrap_or_default()
    };
    let field = |name: &str, label: &str, hint: &str| {
        format!(
            r#"<label>{} <input name="{name}" value="{}" placeholder="{}"></label>"#,
            esc(label),
            value(name),
            attr(hint)
        )
    };
    let checked = |name: &str| if value(name) == "true" { " checked" } else { "" };
    let select = |name: &str, options: &[&str]| {
        let current = value(name);
        let mut s = format!(r#"<label>{name} <select name="{name}"><option value="">default</option>"#);
        for o in options {
            let sel = if current == *o { " selected" } else { "" };
            let _ = write!(s, r#"<option{sel}>{o}</option>"#);
        }
        s.push_str("</select></label>");
        s
    };
    let tags: String = pairs
        .iter()
        .filter(|(k, v)| k == "tag" && !v.is_empty())
        .map(|(_, v)| format!(r#"<input type="hidden" name="tag" value="{}">"#, attr(v)))
        .collect();
    let _ = write!(
        html,
        r#"<details class="card"{}><summary>Filters</summary>
<form id="filters" action="/" method="get" class="filters">
{}{}{}{}{}{}{}{}{}{}{}
<label><input type="checkbox" name="retries_only" value="true"{}> retries only</label>
<label><input type="checkbox" name="include_deleted" value="true"{}> include deleted</label>
{}{}{}{}{}
<input type="hidden" name="as_of" value="{}">
<button type="submit">Apply</button> <a href="/">Clear</a>
</form></details>"#,
        if pairs
            .iter()
            .any(|(k, v)| !v.is_empty() && !["as_of", "offset"].contains(&k.as_str()))
        {
            " open"
        } else {
            ""
        },
        field("status", "status", "failed,running"),
        field("task_name", "task", "etl"),
        field("project", "project", "default"),
        field("triggered_by", "triggered by", "cron,api"),
        field("search", "search", "task or id"),
        field("created_after", "created after", "RFC 3339"),
        field("created_before", "created before", "RFC 3339"),
        field("exit_code_min", "exit code ≥", ""),
        field("exit_code_max", "exit code ≤", ""),
        field("parent_run_id", "parent run", "run id"),
        field("tag", "tag", "key:value"),
        checked("retries_only"),
        checked("include_deleted"),
        select(
            "sort_field",
            &["created_at", "start_at", "task_name", "status", "exit_code", "duration"]
        ),
        select("sort_direction", &["desc", "asc"]),
        field("limit", "page size", "50"),
        field("operation_id", "operation", "operation id"),
        field("payload", "payload", r#"{"key": "value"}"#),
        value("as_of"),
    );
    let _ = tags;
}

fn tasks_summary(html: &mut String, tasks: &[runledger_projections::TaskSummary], past: bool) {
    let _ = write!(
        html,
        r#"<details class="card"><summary>Tasks ({}){}</summary><div class="scroll"><table><thead><tr><th scope=col>task</th><th scope=col>runs</th><th scope=col>by status</th><th scope=col>last success</th><th scope=col>last failure</th></tr></thead><tbody>"#,
        tasks.len(),
        if past {
            " · now, not as of the position shown"
        } else {
            ""
        }
    );
    for t in tasks {
        let counts: Vec<String> = t
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{} {n}", esc(k)))
            .collect();
        let last = |r: &Option<runledger_projections::RunState>| match r {
            Some(r) => {
                let v = json(r);
                format!(
                    "{} {}",
                    page::run_link(v["id"].as_str().unwrap_or_default(), "open"),
                    page::time(&v["end_at"])
                )
            }
            None => "—".to_owned(),
        };
        let _ = write!(
            html,
            r#"<tr><td><a href="/?task_name={0}">{1}</a></td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>"#,
            attr(&t.task_name),
            esc(&t.task_name),
            t.total,
            counts.join(", "),
            last(&t.last_success),
            last(&t.last_failure)
        );
    }
    html.push_str("</tbody></table></div></details>");
}

fn runs_table(html: &mut String, pairs: &[(String, String)], runs: &[Value], query: &runledger_projections::RunQuery) {
    let sort = |field: &str, label: &str| {
        let current = query.sort_field.as_str() == field;
        let desc = query.sort_direction.as_str() == "desc";
        let next_dir = if current && desc { "asc" } else { "desc" };
        let mark = match (current, desc) {
            (true, true) => " ▼",
            (true, false) => " ▲",
            _ => "",
        };
        let aria = match (current, desc) {
            (true, true) => r#" aria-sort="descending""#,
            (true, false) => r#" aria-sort="ascending""#,
            _ => "",
        };
        let href = page::query(&page::with(
            pairs,
            &[
                ("sort_field", Some(field)),
                ("sort_direction", Some(next_dir)),
                ("offset", None),
                ("cursor", None),
            ],
        ));
        format!(
            r#"<th scope=col{aria}><a href="/{}">{}{mark}</a></th>"#,
            attr(&href),
            esc(label)
        )
    };
    let _ = write!(
        html,
        r#"<div class="scroll"><table id="runs"><thead><tr><th scope=col><input type="checkbox" id="select-all" aria-label="Select all on this page"></th><th scope=col>run</th>{}{}<th scope=col>trigger</th>{}{}{}{}</tr></thead><tbody>"#,
        sort("task_name", "task"),
        sort("status", "status"),
        sort("created_at", "created"),
        sort("start_at", "started"),
        sort("duration", "duration"),
        sort("exit_code", "exit"),
    );
    if runs.is_empty() {
        html.push_str(r#"<tr><td colspan="8" class="empty">No runs match.</td></tr>"#);
    }
    for run in runs {
        let id = run["id"].as_str().unwrap_or_default();
        let as_of = query.as_of.map(|p| format!("?as_of={p}")).unwrap_or_default();
        let duration = run["duration_ms"]
            .as_i64()
            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let _ = write!(
            html,
            r#"<tr data-id="{0}" data-status="{1}"><td><input type="checkbox" name="id" value="{0}" aria-label="Select run {0}"></td><td><a href="/runs/{0}{2}"><code>{3}</code></a></td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td><td>{8}</td><td>{9}</td><td>{10}</td></tr>"#,
            attr(id),
            attr(run["status"].as_str().unwrap_or_default()),
            attr(&as_of),
            esc(&id.chars().take(13).collect::<String>()),
            esc(run["task_name"].as_str().unwrap_or_default()),
            page::status(run),
            esc(&page::text_of(&run["triggered_by"])),
            page::time(&run["created_at"]),
            page::time(&run["start_at"]),
            esc(&duration),
            esc(&page::text_of(&run["exit_code"])),
        );
    }
    html.push_str("</tbody></table></div>");
}

async fn run_page(Extension(c): Extension<Arc<Console>>, Path(id): Path<String>, parts: Parts) -> Response {
    match run_page_inner(&c, &id, &parts).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run_page_inner(c: &Console, raw_id: &str, parts: &Parts) -> Result<Response, Response> {
    let (_, viewer) = c.viewer(parts).await?;
    let pairs = pairs_of(&parts.uri)?;
    let mut params = QueryParams::from_pairs("query", pairs.clone());
    let id = params.faults.path_id(raw_id);
    let as_of = params.parsed("as_of", parse_as_of);
    params.finish().map_err(failure)?;
    let id = id.expect("checked");
    let bundle = crate::http::debug_bundle::collect(&c.ledger, id, c.bundle_cap)
        .await
        .map_err(failure)?;
    let position = match as_of {
        Some(at) => Some(resolve(&c.ledger, at).await.map_err(failure)?),
        None => None,
    };
    let run = match position {
        Some(p) => match c.ledger.run_as_of(id, p).await.map_err(|e| failure(e.into()))? {
            Some(r) => json(&r),
            None => {
                return Err(page::error(
                    StatusCode::NOT_FOUND,
                    "Not yet",
                    &format!("run {id} did not exist yet at position {p}"),
                    &[],
                ))
            }
        },
        None => json(&bundle.run),
    };
    let b = json(&bundle);
    // What existed at the position shown.
    let upto = |items: &Value| -> Vec<Value> {
        items
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| position.is_none_or(|p| i["position"].as_i64().is_none_or(|q| q <= p)))
            .cloned()
            .collect()
    };
    let events = upto(&b["events"]);
    let all_events = events.len();
    // A page stays readable and fast: the newest rows, the rest in the bundle.
    let events = events[all_events.saturating_sub(MAX_ROWS)..].to_vec();
    let first = b["events"][0]["position"].as_i64().unwrap_or(0);
    let last = b["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["position"].as_i64())
        .unwrap_or(0);
    let task = run["task_name"].as_str().unwrap_or_default();
    let ended = run["status"] == "ended";
    let deleted = run["deleted"] == Value::Bool(true);

    let mut html = String::new();
    let _ = write!(
        html,
        r#"<p class="crumbs"><a href="/">Runs</a> › <a href="/?task_name={0}">{1}</a></p>
<h1>{1} <span class="run-status" id="run-status">{2}</span></h1>
<p><code id="run-id">{3}</code></p>"#,
        attr(task),
        esc(task),
        page::status(&run),
        esc(&id.to_string())
    );
    match position {
        Some(p) => {
            let _ = write!(
                html,
                r#"<p class="when">as of position <strong id="as-of-position">{p}</strong> · <a href="/runs/{id}">back to now</a></p>"#
            );
        }
        None => {
            let _ = write!(
                html,
                r#"<p class="when">{}</p>"#,
                if ended {
                    "ended"
                } else {
                    "live: this page follows the run"
                }
            );
        }
    }
    let actions = format!(
        r#"<div class="actions" id="actions" data-run="{id}">
<button type="button" data-action="retry"{}>Retry</button>
<button type="button" data-action="cancel"{}>Cancel</button>
<button type="button" data-action="{}">{}</button>
<a class="button" href="/api/runs/{id}/debug-bundle" download="run-{id}.json">Debug bundle</a></div>
<div id="action-result" role="status" aria-live="polite"></div>"#,
        if ended {
            ""
        } else {
            r#" disabled title="only an ended run can be retried""#
        },
        if ended { " disabled" } else { "" },
        if deleted { "restore" } else { "delete" },
        if deleted { "Restore" } else { "Delete" },
    );
    html.push_str(&actions);
    time_travel(&mut html, &[], position.unwrap_or(last), last, &format!("/runs/{id}"));
    let _ = write!(
        html,
        r#"<p class="hint">This run's events lie between positions {first} and {last}. <a href="/diff?from={}&amp;to={last}">What changed meanwhile</a></p>"#,
        first.saturating_sub(1)
    );
    let v = &b["verification"];
    if v["verified"] == Value::Bool(true) {
        let _ = write!(
            html,
            r#"<p class="chain ok" id="chain">✔ Hash chain verifies for this run's {} events.</p>"#,
            v["events_checked"]
        );
    } else {
        let _ = write!(
            html,
            r#"<p class="chain bad" id="chain" role="alert">✖ Hash chain does NOT verify at position {}: {}</p>"#,
            v["first_failure"]["position"],
            esc(&page::text_of(&v["first_failure"]["reason"]))
        );
    }

    html.push_str(r#"<div id="live-region">"#);
    // State.
    html.push_str(r#"<section class="card" aria-labelledby="state-h"><h2 id="state-h">State</h2><dl class="state">"#);
    for key in [
        "status",
        "end_reason",
        "exit_code",
        "error",
        "triggered_by",
        "project",
        "retry_attempt",
        "max_attempts",
        "created_at",
        "scheduled_at",
        "start_at",
        "heartbeat_at",
        "end_at",
        "duration_ms",
        "priority",
        "idempotency_key",
        "concurrency_key",
        "timeout_secs",
        "dead_lettered",
        "deleted",
        "deleted_at",
        "version",
        "position",
        "tags",
        "metadata",
        "payload",
        "result",
    ] {
        let value = &run[key];
        if value.is_null() {
            continue;
        }
        let shown = if key.ends_with("_at") {
            page::time(value)
        } else {
            format!("<code>{}</code>", esc(&page::text_of(value)))
        };
        let _ = write!(html, "<dt>{key}</dt><dd>{shown}</dd>");
    }
    html.push_str("</dl></section>");

    // Timeline.
    let _ = write!(
        html,
        r#"<section class="card" aria-labelledby="timeline-h"><h2 id="timeline-h">Timeline <span class="count">{}</span></h2><div class="scroll"><table id="timeline"><thead><tr><th scope=col>#</th><th scope=col>position</th><th scope=col>type</th><th scope=col>time</th><th scope=col>actor</th><th scope=col>request id</th><th scope=col>operation id</th><th scope=col>data</th></tr></thead><tbody>"#,
        all_events
    );
    if all_events > events.len() {
        let _ = write!(
            html,
            r#"<tr><td colspan="8" class="empty">{} older events are in the debug bundle and at <code>/api/runs/{id}/events</code>.</td></tr>"#,
            all_events - events.len()
        );
    }
    for e in &events {
        let p = e["position"].as_i64().unwrap_or_default();
        let op = e["metadata"]["operation_id"].as_str().unwrap_or_default();
        let op_cell = if op.is_empty() {
            String::new()
        } else {
            format!(
                r#"<a href="/?operation_id={0}&amp;include_deleted=true"><code>{0}</code></a>"#,
                attr(op)
            )
        };
        let mut data = e["data"].to_string();
        if data.len() > 200 {
            let cut = (0..=200).rev().find(|i| data.is_char_boundary(*i)).unwrap_or(0);
            data.truncate(cut);
            data.push('…');
        }
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td><a href="/runs/{id}?as_of={p}" title="the run as of this event">{p}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{op_cell}</td><td><code>{}</code></td></tr>"#,
            esc(&page::text_of(&e["stream_version"])),
            esc(&page::text_of(&e["type"])),
            page::time(&e["recorded_at"]),
            esc(&page::text_of(&e["metadata"]["actor"])),
            esc(&page::text_of(&e["metadata"]["request_id"])),
            esc(&data),
        );
    }
    html.push_str("</tbody></table></div></section>");

    for (title, key, columns) in [
        ("Checkpoints", "checkpoints", &[][..]),
        ("Logs", "logs", &["position", "level", "message", "recorded_at"][..]),
        ("Tool calls", "tool_calls", &[][..]),
        ("Outputs", "outputs", &[][..]),
    ] {
        let mut items = upto(&b[key]);
        items.truncate(MAX_ROWS);
        let _ = write!(
            html,
            r#"<section class="card" aria-labelledby="{key}-h"><h2 id="{key}-h">{title} <span class="count">{}</span></h2>{}</section>"#,
            items.len(),
            page::records(
                &items,
                if items
                    .first()
                    .is_some_and(|i| columns.iter().all(|c| i.get(*c).is_some()))
                {
                    columns
                } else {
                    &[]
                }
            )
        );
    }
    let usage = upto(&b["usage"]["records"]);
    let totals = &b["usage"]["totals"];
    let _ = write!(
        html,
        r#"<section class="card" aria-labelledby="usage-h"><h2 id="usage-h">Usage <span class="count">{}</span></h2><p class="totals">Totals (all records): {}</p>{}{}</section>"#,
        usage.len(),
        totals
            .as_object()
            .map(|o| o
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{} <strong>{}</strong>", esc(k), esc(&page::text_of(v))))
                .collect::<Vec<_>>()
                .join(" · "))
            .unwrap_or_default(),
        page::records(&usage, &[]),
        page::records(
            b["usage"]["by_model"].as_array().map(Vec::as_slice).unwrap_or_default(),
            &[]
        ),
    );

    // Lineage and children.
    let links = |items: &Value| -> String {
        let list: Vec<String> = items
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let rid = r["id"].as_str().unwrap_or_default();
                let me = if rid == id.to_string() { " (this run)" } else { "" };
                format!(
                    "<li>{} {} {}{me}</li>",
                    page::run_link(rid, rid),
                    esc(r["task_name"].as_str().unwrap_or_default()),
                    page::status(r)
                )
            })
            .collect();
        if list.is_empty() {
            r#"<p class="empty">None.</p>"#.to_owned()
        } else {
            format!("<ol>{}</ol>", list.join(""))
        }
    };
    let _ = write!(
        html,
        r#"<section class="card" aria-labelledby="lineage-h"><h2 id="lineage-h">Lineage</h2>{}</section><section class="card" aria-labelledby="children-h"><h2 id="children-h">Children</h2>{}</section>"#,
        links(&b["lineage"]),
        links(&b["children"]),
    );
    html.push_str("</div>");
    let live_url = format!("/api/events/stream?run_id={id}");
    let live = (position.is_none() && !ended).then_some(live_url.as_str());
    Ok(page::respond(
        StatusCode::OK,
        page::frame(&format!("{task} {id}"), Some(&viewer), live, &html),
    ))
}

async fn diff_view(Extension(c): Extension<Arc<Console>>, parts: Parts) -> Response {
    match diff_inner(&c, &parts).await {
        Ok(r) | Err(r) => r,
    }
}

async fn diff_inner(c: &Console, parts: &Parts) -> Result<Response, Response> {
    let (_, viewer) = c.viewer(parts).await?;
    let pairs = pairs_of(&parts.uri)?;
    let mut params = QueryParams::from_pairs("query", pairs);
    let from = params.parsed("from", parse_as_of);
    let to = params.parsed("to", parse_as_of);
    let limit = params.int_in("limit", 1, 1000).unwrap_or(100);
    params.finish().map_err(failure)?;
    let head = *c.ledger.head().borrow();
    let from = match from {
        Some(f) => resolve(&c.ledger, f).await.map_err(failure)?,
        None => 0,
    };
    let to = match to {
        Some(t) => resolve(&c.ledger, t).await.map_err(failure)?,
        None => head,
    };
    if from > to {
        return Err(failure(ApiError::invalid_one(
            "query.from",
            format!("resolves to position {from}, after `to` ({to})"),
            None,
        )));
    }
    let (changes, total) = c.ledger.diff(from, to, limit).await.map_err(|e| failure(e.into()))?;
    let mut html = format!(
        r#"<h1>What changed</h1>
<form class="card travel" action="/diff" method="get"><fieldset><legend>Between two points</legend>
<label for="from">from</label> <input id="from" name="from" value="{from}" size="28">
<label for="to">to</label> <input id="to" name="to" value="{to}" size="28">
<button type="submit">Compare</button> <span class="hint">positions or RFC 3339 times; head is {head}</span></fieldset></form>
<p id="diff-total">{total} runs changed after position {from} up to {to}{}.</p>
<div class="scroll"><table id="diff"><thead><tr><th scope=col>run</th><th scope=col>task</th><th scope=col>before (at {from})</th><th scope=col>after (at {to})</th><th scope=col>versions</th></tr></thead><tbody>"#,
        if (changes.len() as i64) < total {
            format!(" (showing {})", changes.len())
        } else {
            String::new()
        }
    );
    for ch in &changes {
        let after = json(&ch.after);
        let before = ch.before.as_ref().map(json);
        let rid = ch.run_id.to_string();
        let _ = write!(
            html,
            r#"<tr><td><a href="/runs/{0}?as_of={to}"><code>{1}</code></a></td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5} → {6}</td></tr>"#,
            attr(&rid),
            esc(&rid.chars().take(13).collect::<String>()),
            esc(after["task_name"].as_str().unwrap_or_default()),
            before
                .as_ref()
                .map(page::status)
                .unwrap_or_else(|| "did not exist".to_owned()),
            page::status(&after),
            before
                .as_ref()
                .map(|b| page::text_of(&b["version"]))
                .unwrap_or_else(|| "–".to_owned()),
            page::text_of(&after["version"]),
        );
    }
    html.push_str("</tbody></table></div>");
    let ids: Vec<uuid::Uuid> = changes.iter().map(|ch| ch.run_id).collect();
    html.push_str(&c.chain_verdict(&ids).await?);
    Ok(page::respond(
        StatusCode::OK,
        page::frame("Diff", Some(&viewer), None, &html),
    ))
}
