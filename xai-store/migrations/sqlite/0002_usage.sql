-- Usage records (DESIGN §4) and daily rollups. Idempotent: the usage writer also applies it on its own.
CREATE TABLE IF NOT EXISTS usage (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id         TEXT    NOT NULL UNIQUE,
    time               TEXT    NOT NULL, -- RFC 3339 UTC with milliseconds (sorts as time)
    day                TEXT    NOT NULL, -- YYYY-MM-DD (UTC)
    account            INTEGER NOT NULL,
    account_path       TEXT    NOT NULL,
    key_id             INTEGER NOT NULL,
    inbound_protocol   TEXT    NOT NULL,
    provider           TEXT,
    upstream_key       INTEGER,
    requested_model    TEXT    NOT NULL,
    upstream_model     TEXT,
    level              INTEGER,
    status             TEXT    NOT NULL,
    http_status        INTEGER NOT NULL,
    attempts           TEXT    NOT NULL, -- JSON array
    latency_ms         INTEGER NOT NULL,
    ttft_ms            INTEGER,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    images             INTEGER NOT NULL,
    searches           INTEGER NOT NULL,
    cost               INTEGER NOT NULL, -- micro-credits
    estimated          INTEGER NOT NULL  -- 0 | 1
);
CREATE INDEX IF NOT EXISTS usage_account_time ON usage (account, time);
CREATE TABLE IF NOT EXISTS usage_daily (
    account     INTEGER NOT NULL,
    model       TEXT    NOT NULL, -- the model the client asked for
    day         TEXT    NOT NULL, -- YYYY-MM-DD (UTC)
    requests    INTEGER NOT NULL DEFAULT 0,
    prompt      INTEGER NOT NULL DEFAULT 0,
    completion  INTEGER NOT NULL DEFAULT 0,
    reasoning   INTEGER NOT NULL DEFAULT 0,
    cached      INTEGER NOT NULL DEFAULT 0,
    cache_write INTEGER NOT NULL DEFAULT 0,
    images      INTEGER NOT NULL DEFAULT 0,
    searches    INTEGER NOT NULL DEFAULT 0,
    cost        INTEGER NOT NULL DEFAULT 0, -- micro-credits
    PRIMARY KEY (account, model, day)
);
CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day);
