//! The load generator: a fixed number of keep-alive connections, each a
//! client of its own sending one request at a time for a fixed time, every
//! latency kept (measured here, from send to the last byte of the answer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;

/// The URL of connection `c`'s `i`-th request; `None` when it has no more
/// work (the runs made for it are used up).
pub type Targets = Arc<dyn Fn(usize, usize) -> Option<String> + Send + Sync>;

/// What one case sends.
pub struct Case {
    pub targets: Targets,
    pub body: &'static str,
}

/// What came back from one case.
pub struct Report {
    pub requests: usize,
    /// Answers that were not 2xx, and requests that got no answer, by status.
    pub failures: BTreeMap<String, usize>,
    /// Connections that ran out of work before the time was up.
    pub exhausted: usize,
    pub elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.failures.values().sum()
    }

    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        match self.latencies.len() {
            0 => Duration::ZERO,
            n => self.latencies[((n - 1) as f64 * p).round() as usize],
        }
    }

    pub fn failures_shown(&self) -> String {
        let all: Vec<String> = self.failures.iter().map(|(s, n)| format!("{s} x{n}")).collect();
        all.join(", ")
    }
}

/// One connection's share.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failures: BTreeMap<String, usize>,
    exhausted: bool,
}

async fn connection(c: usize, case: Arc<Case>, until: Instant) -> Tally {
    // One idle connection per client: each client is one keep-alive connection.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .expect("a client");
    let mut tally = Tally::default();
    let mut i = 0;
    while Instant::now() < until {
        let Some(url) = (case.targets)(c, i) else {
            tally.exhausted = true;
            break;
        };
        i += 1;
        let sent = Instant::now();
        let reply = client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(case.body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let failure = match reply {
            Ok(reply) => {
                let status = reply.status();
                match reply.bytes().await {
                    Ok(_) if status.is_success() => None,
                    Ok(_) => Some(status.as_u16().to_string()),
                    Err(_) => Some("body error".to_owned()),
                }
            }
            Err(_) => Some("no answer".to_owned()),
        };
        tally.latencies.push(sent.elapsed());
        if let Some(failure) = failure {
            *tally.failures.entry(failure).or_default() += 1;
        }
    }
    tally
}

/// Runs `case` from `connections` connections for `duration`. A request in
/// flight when the time is up is waited for and counted.
pub async fn run(case: Case, connections: usize, duration: Duration) -> Report {
    let case = Arc::new(case);
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(connection(c, case.clone(), until)))
        .collect();
    let mut report = Report {
        requests: 0,
        failures: BTreeMap::new(),
        exhausted: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let tally = task.await.expect("a load connection");
        report.latencies.extend(tally.latencies);
        for (failure, n) in tally.failures {
            *report.failures.entry(failure).or_default() += n;
        }
        report.exhausted += usize::from(tally.exhausted);
    }
    report.elapsed = started.elapsed();
    report.requests = report.latencies.len();
    report.latencies.sort_unstable();
    report
}
