//! Ordinary writers beside two whose every request must fail: no ordinary
//! write may fail, and only ordinary writes reach the log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use runledger::http::HttpConfig;

use crate::fixtures::{Backend, Db, Server};
use crate::{Checks, Plan};

const ORDINARY_BODY: &str = r#"{"task_name":"x"}"#;
const NUL_TAG_BODY: &str = r#"{"task_name":"x","tags":{"k":"a\u0000b"}}"#;
const BOOM_BODY: &str = r#"{"task_name":"boom"}"#;

/// Requests sent and their statuses (`error`: no response at all).
#[derive(Default)]
struct Tally {
    sent: usize,
    statuses: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
    }

    fn count(&self, status: &str) -> usize {
        self.statuses.get(status).copied().unwrap_or(0)
    }

    fn shown(&self) -> String {
        let all: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s} x{n}")).collect();
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }
}

async fn send_until(client: reqwest::Client, url: String, body: &'static str, until: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < until {
        let reply = client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        tally.sent += 1;
        let status = match reply {
            Ok(reply) => {
                let status = reply.status().as_u16().to_string();
                let _ = reply.bytes().await;
                status
            }
            Err(_) => "error".into(),
        };
        *tally.statuses.entry(status).or_default() += 1;
    }
    tally
}

/// What the two bad writers send, and the only status they may see.
#[derive(Clone, Copy)]
pub enum Bad {
    /// Refused at the input boundary: neither backend stores a NUL.
    NulTag,
    /// Accepted, then failing inside the database, in a busy batch.
    Boom,
}

impl Bad {
    fn name(self) -> &'static str {
        match self {
            Self::NulTag => "nul-tag",
            Self::Boom => "db-failure",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Self::NulTag => NUL_TAG_BODY,
            Self::Boom => BOOM_BODY,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::NulTag => "422",
            Self::Boom => "500",
        }
    }

    fn trigger(self, backend: &Backend) -> Option<&'static str> {
        match (self, backend) {
            (Self::NulTag, _) => None,
            (Self::Boom, Backend::Sqlite) => Some(
                "CREATE TRIGGER boom BEFORE INSERT ON runs WHEN NEW.task_name = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'forced'); END",
            ),
            (Self::Boom, Backend::Postgres(..)) => Some(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.task_name = 'boom' THEN RAISE EXCEPTION 'forced'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER boom BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION boom()",
            ),
        }
    }
}

/// 16 ordinary writers and 2 bad ones for `plan.neighbours_for`.
pub async fn neighbours(backend: &Backend, plan: &Plan, bad: Bad, checks: &mut Checks) {
    const ORDINARY: usize = 16;
    const BAD: usize = 2;
    let db = Db::fresh(backend).await;
    let ledger = db.open().await;
    if let Some(trigger) = bad.trigger(backend) {
        db.exec(trigger).await;
    }
    let (variant, expected) = (bad.name(), bad.expected());
    let bad = bad.body();
    let config = HttpConfig {
        rate_limit: None,
        ..HttpConfig::default()
    };
    let server = Server::start(ledger, config).await;
    println!(
        "neighbours/{variant}: {ORDINARY} writers POST {ORDINARY_BODY}, {BAD} writers POST {bad}, \
         for {:.0} s, one keep-alive client, rate limit off",
        plan.neighbours_for.as_secs_f64()
    );
    let client = reqwest::Client::new();
    let url = format!("{}/api/runs", server.base);
    let until = Instant::now() + plan.neighbours_for;
    let tasks: Vec<_> = (0..ORDINARY + BAD)
        .map(|w| {
            let body = if w < ORDINARY { ORDINARY_BODY } else { bad };
            tokio::spawn(send_until(client.clone(), url.clone(), body, until))
        })
        .collect();
    let (mut ordinary, mut refused) = (Tally::default(), Tally::default());
    for (w, task) in tasks.into_iter().enumerate() {
        let tally = task.await.unwrap();
        if w < ORDINARY {
            ordinary.add(tally);
        } else {
            refused.add(tally);
        }
    }
    server.stop().await;
    let created = ordinary.count("201");
    let events = db.events().await;
    println!(
        "  ordinary: {} sent, {created} 201, {} other ({})",
        ordinary.sent,
        ordinary.sent - created,
        ordinary.shown()
    );
    println!("  bad:      {} sent, statuses {}", refused.sent, refused.shown());
    println!("  events in the log afterwards: {events} (ordinary 201s: {created})");
    checks.expect(
        created == ordinary.sent,
        format!(
            "neighbours/{variant}: {} ordinary writes failed",
            ordinary.sent - created
        ),
    );
    checks.expect(
        refused.count(expected) == refused.sent,
        format!(
            "neighbours/{variant}: bad writes saw {}, not only {expected}",
            refused.shown()
        ),
    );
    checks.expect(
        events == created as i64,
        format!("neighbours/{variant}: {events} events logged for {created} ordinary 201s"),
    );
    db.remove().await;
}
