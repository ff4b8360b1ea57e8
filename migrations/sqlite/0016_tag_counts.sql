-- How many live runs have each tag, maintained with every append (see
-- projections/src/run_counts.rs): the total of a list filtered by one tag
-- alone is one row.
CREATE TABLE tag_counts (
    key    TEXT   NOT NULL,
    value  TEXT   NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (key, value)
);

INSERT INTO tag_counts (key, value, n)
SELECT t.key, t.value, COUNT(*) FROM run_tags t JOIN runs r ON r.id = t.run_id
WHERE NOT r.deleted GROUP BY t.key, t.value;
