//! runledger's side: the real server in this process on a ledger file, the
//! runs each transition acts on (made beforehand through `ledger.execute`,
//! in the phase the route needs), and the writer's group-commit figures
//! from `/metrics`.

use std::path::Path;
use std::sync::Arc;

use runledger::commands::{Action, Command, CreateRun, RunCommand};
use runledger::domain::TaskName;
use runledger::http::{self, HttpConfig};
use runledger::ledger::Ledger;
use runledger_events::{Metadata, RunStarted};
use uuid::Uuid;

use crate::load::{Case, Targets};
use crate::{Commits, Serving};

/// Every run the bench makes is of this task, so that its runs can be told
/// from those of a large ledger it is given.
pub const TASK: &str = "http-bench";
pub const CREATE_BODY: &str = r#"{"task_name":"http-bench","tags":{"env":"bench"}}"#;

/// The routes measured, in the order they run: each leaves runs in the
/// phase the next one needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Create,
    Start,
    Heartbeat,
    End,
}

impl Route {
    pub const ALL: [Route; 4] = [Self::Create, Self::Start, Self::Heartbeat, Self::End];

    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Heartbeat => "heartbeat",
            Self::End => "end",
        }
    }

    pub fn shown(self) -> &'static str {
        match self {
            Self::Create => "POST /api/runs",
            Self::Start => "POST /api/runs/{id}/start",
            Self::Heartbeat => "POST /api/runs/{id}/heartbeat",
            Self::End => "POST /api/runs/{id}/end",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Self::Create => CREATE_BODY,
            Self::Start | Self::Heartbeat => "{}",
            Self::End => r#"{"end_reason":"success","exit_code":0}"#,
        }
    }
}

/// The server on `ledger`, rate limit off (its default of 1,000 requests a
/// second per client would be what is measured).
pub async fn serve(ledger: Arc<Ledger>) -> Serving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = HttpConfig {
        rate_limit: None,
        ..HttpConfig::default()
    };
    Serving::spawn(addr, move |stopped| {
        http::serve(ledger, config, listener, async {
            let _ = stopped.await;
        })
    })
}

/// Up to `limit` of the bench's runs in `status`, oldest first.
fn runs_in(path: &Path, status: &str, limit: usize) -> Vec<Uuid> {
    let conn = runledger_events::sqlite::open_reader(path).expect("a reader");
    let mut stmt = conn
        .prepare(
            "SELECT id FROM runs WHERE task_name = ?1 AND status = ?2 AND NOT deleted \
             ORDER BY created_at LIMIT ?3",
        )
        .unwrap();
    let ids = stmt
        .query_map(rusqlite::params![TASK, status, limit as i64], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|id| id.unwrap().parse().expect("a run id"))
        .collect();
    ids
}

/// Runs `command(item)` for every item, from `WRITERS` concurrent tasks.
async fn execute_all<T, F>(ledger: &Arc<Ledger>, items: Vec<T>, command: F)
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Command + Send + Sync + 'static,
{
    const WRITERS: usize = 64;
    let items = Arc::new(items);
    let command = Arc::new(command);
    crate::common::concurrently(WRITERS, |w| {
        let (ledger, items, command) = (ledger.clone(), items.clone(), command.clone());
        async move {
            for item in items.iter().skip(w).step_by(WRITERS) {
                ledger
                    .execute(command(item), Metadata::actor("bench"))
                    .await
                    .expect("a set-up command");
            }
        }
    })
    .await;
}

fn start_command(id: &Uuid) -> Command {
    Command::Run(RunCommand {
        run_id: *id,
        expected_version: None,
        action: Action::Start(RunStarted::default()),
    })
}

/// What one route's set-up did, to be said with its figures.
#[derive(Default)]
pub struct SetUp {
    pub created: usize,
    pub started: usize,
    pub secs: f64,
}

impl SetUp {
    pub fn shown(&self) -> Option<String> {
        (self.created + self.started > 0).then(|| {
            format!(
                "set-up through ledger.execute: {} runs created, {} started, in {:.1} s",
                self.created, self.started, self.secs
            )
        })
    }
}

/// At least `n` pending runs of the bench (creating what is missing).
async fn pending(ledger: &Arc<Ledger>, path: &Path, n: usize, setup: &mut SetUp) -> Vec<Uuid> {
    let have = runs_in(path, "pending", n).len();
    if have < n {
        let task = TaskName::parse(TASK).unwrap();
        execute_all(ledger, vec![(); n - have], move |()| {
            let mut create = CreateRun::new(task.clone());
            create.tags.insert("env".into(), "bench".into());
            Command::Create(create)
        })
        .await;
        setup.created += n - have;
    }
    runs_in(path, "pending", n)
}

/// At least `n` running runs of the bench (starting, and creating, what is missing).
async fn running(ledger: &Arc<Ledger>, path: &Path, n: usize, setup: &mut SetUp) -> Vec<Uuid> {
    let have = runs_in(path, "running", n).len();
    if have < n {
        let ids = pending(ledger, path, n - have, setup).await;
        setup.started += ids.len();
        execute_all(ledger, ids, start_command).await;
    }
    runs_in(path, "running", n)
}

/// Connection `c`'s `i`-th request acts on run `c + i * connections`: each
/// run once.
fn one_run_each(base: &str, route: Route, runs: Vec<Uuid>, connections: usize) -> Targets {
    let urls: Vec<String> = runs
        .iter()
        .map(|id| format!("{base}/api/runs/{id}/{}", route.name()))
        .collect();
    Arc::new(move |c, i| urls.get(c + i * connections).cloned())
}

/// The case for `route`: `enough` is how many requests it may send in all.
/// Start and end need a run each, in the right phase; heartbeats repeat on
/// one running run per connection.
pub async fn case(
    ledger: &Arc<Ledger>,
    path: &Path,
    base: &str,
    route: Route,
    connections: usize,
    enough: usize,
) -> (Case, SetUp) {
    let started = std::time::Instant::now();
    let mut setup = SetUp::default();
    let targets: Targets = match route {
        Route::Create => {
            let url = format!("{base}/api/runs");
            Arc::new(move |_, _| Some(url.clone()))
        }
        Route::Start => one_run_each(
            base,
            route,
            pending(ledger, path, enough, &mut setup).await,
            connections,
        ),
        Route::Heartbeat => {
            let urls: Vec<String> = running(ledger, path, connections, &mut setup)
                .await
                .iter()
                .map(|id| format!("{base}/api/runs/{id}/heartbeat"))
                .collect();
            Arc::new(move |c, _| urls.get(c).cloned())
        }
        Route::End => one_run_each(
            base,
            route,
            running(ledger, path, enough, &mut setup).await,
            connections,
        ),
    };
    setup.secs = started.elapsed().as_secs_f64();
    (
        Case {
            targets,
            body: route.body(),
        },
        setup,
    )
}

/// The writer's group-commit figures so far, from `/metrics`; `None` if it
/// has none (a histogram appears with its first commit).
pub async fn commits(base: &str) -> Option<Commits> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics")
        .text()
        .await
        .expect("GET /metrics");
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some(Commits {
        batches: value("runledger_commit_batch_size_count")?,
        units: value("runledger_commit_batch_size_sum")?,
        seconds: value("runledger_commit_seconds_sum")?,
    })
}

/// The ledger's size: runs and events.
pub fn size(path: &Path) -> (i64, i64) {
    let conn = runledger_events::sqlite::open_reader(path).expect("a reader");
    let runs = conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    let events = conn
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0))
        .unwrap();
    (runs, events)
}
