//! What every experiment starts from: a fresh database on either backend
//! and the server in this process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use runledger::http::{self, HttpConfig};
use runledger::ledger::{DatabaseUrl, Ledger};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::oneshot;
use uuid::Uuid;

#[derive(Clone)]
pub enum Backend {
    Sqlite,
    Postgres(PgConnectOptions, String),
}

/// A fresh ledger database: a temporary SQLite file or a PostgreSQL schema
/// dropped by `remove`.
pub enum Db {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        base: PgConnectOptions,
        url: String,
        schema: String,
    },
}

impl Db {
    pub async fn fresh(backend: &Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
                let path = dir.path().join("abuse.db");
                Self::Sqlite { path, _dir: dir }
            }
            Backend::Postgres(base, url) => {
                let schema = format!("rl_bench_{}", Uuid::new_v4().simple());
                let mut conn = base.connect().await.expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Postgres {
                    base: base.clone(),
                    url: url.clone(),
                    schema,
                }
            }
        }
    }

    fn options(base: &PgConnectOptions, schema: &str) -> PgConnectOptions {
        base.clone().options([("search_path", schema)])
    }

    /// The `--database-url` that makes a `runledger` process use this database.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Self::Postgres { url, schema, .. } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    pub async fn open(&self) -> Ledger {
        match self {
            Self::Sqlite { path, .. } => Ledger::open(&DatabaseUrl::Sqlite(path.clone())).await,
            Self::Postgres { base, schema, .. } => Ledger::open_postgres(Self::options(base, schema)).await,
        }
        .expect("open the ledger")
    }

    pub async fn exec(&self, sql: &str) {
        match self {
            Self::Sqlite { path, .. } => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .execute_batch(sql)
                    .expect("SQL");
            }
            Self::Postgres { base, schema, .. } => {
                let mut conn = Self::options(base, schema).connect().await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.expect("SQL");
            }
        }
    }

    pub async fn events(&self) -> i64 {
        const SQL: &str = "SELECT COUNT(*) FROM events";
        match self {
            Self::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(SQL, [], |r| r.get(0))
                .unwrap(),
            Self::Postgres { base, schema, .. } => {
                let mut conn = Self::options(base, schema).connect().await.unwrap();
                sqlx::query_scalar(SQL).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    pub async fn remove(self) {
        if let Self::Postgres { base, schema, .. } = self {
            let mut conn = base.connect().await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// The server in this process, on a port-0 listener.
pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(ledger: Ledger, config: HttpConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(http::serve(Arc::new(ledger), config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            base: format!("http://{addr}"),
            stop,
            handle,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().expect("the server ran");
    }
}
