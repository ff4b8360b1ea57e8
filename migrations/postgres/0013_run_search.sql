-- `search` (a substring of a run's task name or id, any case) served by
-- trigram indexes (see projections/src/query.rs). pg_trgm is a trusted
-- extension: a database owner can create it. It is made once per database,
-- in `public` unless it already exists elsewhere, under a lock so that
-- ledgers migrating in other schemas at the same time do not race.
DO $$
DECLARE
    home TEXT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('runledger: CREATE EXTENSION pg_trgm'));
    CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
    SELECT n.nspname INTO home FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX runs_search_task ON runs USING gin (lower(task_name) %I.gin_trgm_ops)', home);
    EXECUTE format('CREATE INDEX runs_search_id ON runs USING gin (lower(id) %I.gin_trgm_ops)', home);
END
$$;
