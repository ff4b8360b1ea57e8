use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::Semaphore;

/// A small pool of read-only connections. Queries run on the blocking thread
/// pool; WAL lets them read committed data while the writer commits.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    pub fn new(path: PathBuf, size: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    pub async fn read<R, F>(&self, f: F) -> rusqlite::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().expect("pool lock").pop();
        let path = self.path.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(conn) => conn,
                None => super::open_reader(&path)?,
            };
            let result = f(&conn);
            Ok::<_, rusqlite::Error>((conn, result))
        })
        .await;
        let (conn, result) = match outcome {
            Ok(done) => done?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        self.idle.lock().expect("pool lock").push(conn);
        result
    }
}
