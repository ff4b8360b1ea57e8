-- `search` matches task names through `run_counts` (a few rows per task),
-- so the trigram index on task names, written with every run created, goes;
-- ids keep theirs (see projections/src/query.rs).
DROP INDEX runs_search_task;
