-- A run's details: one row per event, written with the event and rebuilt
-- from the log. `record` is the detail as the API shows it (JSON); the other
-- columns exist to filter, order and sum.
CREATE TABLE run_checkpoints (
    run_id    TEXT COLLATE "C" NOT NULL,
    sequence  BIGINT  NOT NULL,
    position  BIGINT  NOT NULL,
    record    TEXT    NOT NULL,
    PRIMARY KEY (run_id, sequence)
);

CREATE TABLE run_logs (
    run_id    TEXT COLLATE "C" NOT NULL,
    position  BIGINT  NOT NULL,
    level     TEXT    NOT NULL,
    log_type  TEXT,
    record    TEXT    NOT NULL,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE run_usage (
    run_id             TEXT COLLATE "C" NOT NULL,
    position           BIGINT  NOT NULL,
    task_name          TEXT COLLATE "C" NOT NULL,
    provider           TEXT COLLATE "C" NOT NULL,
    model              TEXT COLLATE "C" NOT NULL,
    prompt_tokens      BIGINT  NOT NULL,
    completion_tokens  BIGINT  NOT NULL,
    total_tokens       BIGINT  NOT NULL,
    cost_microusd      BIGINT  NOT NULL,
    record             TEXT    NOT NULL,
    PRIMARY KEY (run_id, position)
);

CREATE INDEX run_usage_task_model ON run_usage (task_name, provider, model);

CREATE TABLE run_tool_calls (
    run_id     TEXT COLLATE "C" NOT NULL,
    position   BIGINT  NOT NULL,
    tool_name  TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    record     TEXT    NOT NULL,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE run_outputs (
    run_id      TEXT COLLATE "C" NOT NULL,
    position    BIGINT  NOT NULL,
    output_key  TEXT    NOT NULL,
    record      TEXT    NOT NULL,
    PRIMARY KEY (run_id, position)
);
