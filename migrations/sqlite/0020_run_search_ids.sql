-- `search` matches task names through `run_counts` (a few rows per task)
-- and only ids through this trigram index, which keeps no positions and no
-- sizes (`detail=none`, `columnsize=0`): it answers which runs hold every
-- trigram of the needle, and the `LIKE` beside it decides (see
-- projections/src/query.rs).
DROP TABLE run_search;
CREATE VIRTUAL TABLE run_search USING fts5(id, detail = none, columnsize = 0, tokenize = 'trigram');
INSERT INTO run_search (id) SELECT id FROM runs;
