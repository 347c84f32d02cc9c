-- Usage records (DESIGN §4) and daily rollups. Idempotent: the usage writer also applies it on its own.
CREATE TABLE IF NOT EXISTS usage (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id         TEXT        NOT NULL UNIQUE,
    time               TIMESTAMPTZ NOT NULL,
    day                DATE        NOT NULL, -- UTC
    account            BIGINT      NOT NULL,
    account_path       TEXT        NOT NULL,
    key_id             BIGINT      NOT NULL,
    inbound_protocol   TEXT        NOT NULL,
    provider           TEXT,
    upstream_key       BIGINT,
    requested_model    TEXT        NOT NULL,
    upstream_model     TEXT,
    level              BIGINT,
    status             TEXT        NOT NULL,
    http_status        INTEGER     NOT NULL,
    attempts           TEXT        NOT NULL, -- JSON array
    latency_ms         BIGINT      NOT NULL,
    ttft_ms            BIGINT,
    prompt_tokens      BIGINT      NOT NULL,
    completion_tokens  BIGINT      NOT NULL,
    reasoning_tokens   BIGINT      NOT NULL,
    cached_tokens      BIGINT      NOT NULL,
    cache_write_tokens BIGINT      NOT NULL,
    images             BIGINT      NOT NULL,
    searches           BIGINT      NOT NULL,
    cost               BIGINT      NOT NULL, -- micro-credits
    estimated          BOOLEAN     NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_account_time ON usage (account, time);
CREATE TABLE IF NOT EXISTS usage_daily (
    account     BIGINT NOT NULL,
    model       TEXT   NOT NULL, -- the model the client asked for
    day         DATE   NOT NULL, -- UTC
    requests    BIGINT NOT NULL DEFAULT 0,
    prompt      BIGINT NOT NULL DEFAULT 0,
    completion  BIGINT NOT NULL DEFAULT 0,
    reasoning   BIGINT NOT NULL DEFAULT 0,
    cached      BIGINT NOT NULL DEFAULT 0,
    cache_write BIGINT NOT NULL DEFAULT 0,
    images      BIGINT NOT NULL DEFAULT 0,
    searches    BIGINT NOT NULL DEFAULT 0,
    cost        BIGINT NOT NULL DEFAULT 0, -- micro-credits
    PRIMARY KEY (account, model, day)
);
CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day);
