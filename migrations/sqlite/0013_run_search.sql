-- `search` (a substring of a run's task name or id, any case) served by a
-- trigram index: candidates from here, decided by LIKE on the run (see
-- projections/src/query.rs). Written when a run is created (neither column
-- changes afterwards).
CREATE VIRTUAL TABLE run_search USING fts5(task_name, id, tokenize = 'trigram');

INSERT INTO run_search (task_name, id) SELECT task_name, id FROM runs;
