-- One row per run: the run it retries or continues (none for the root of a
-- lineage). The lineage of a run is walked through it in both directions.
CREATE TABLE run_lineage (
    run_id         TEXT COLLATE "C" PRIMARY KEY,
    source_run_id  TEXT COLLATE "C"
);

CREATE INDEX run_lineage_source ON run_lineage (source_run_id) WHERE source_run_id IS NOT NULL;
