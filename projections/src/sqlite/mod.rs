//! The projection tables on SQLite.

pub mod details;
pub mod runs;

use crate::{Arg, SqlQuery};

/// The bind values of a shared query, for rusqlite.
pub(crate) fn bind(args: &[Arg]) -> Vec<rusqlite::types::Value> {
    args.iter()
        .map(|a| match a {
            Arg::Int(i) => rusqlite::types::Value::Integer(*i),
            Arg::Text(t) => rusqlite::types::Value::Text(t.clone()),
        })
        .collect()
}

/// The first column of every row of `q`, as text.
pub fn texts(conn: &rusqlite::Connection, q: &SqlQuery) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(bind(&q.args)), |r| r.get::<_, String>(0))?;
    rows.collect()
}
