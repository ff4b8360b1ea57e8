-- API tokens. Only the SHA-256 of each secret is kept; the secret itself is
-- shown once, when the token is created. A revoked token keeps its row (and
-- its name, which stays the actor of the events it appended), so a name is
-- never reused.
CREATE TABLE api_tokens (
    name TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
