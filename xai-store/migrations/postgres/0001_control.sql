-- xai control plane (Postgres). Times are Unix microseconds; money is integer micro-credits; days are 'YYYY-MM-DD'.
-- Policies are the JSON object of the admin API (xai_core::policy::wire::policy_json), kept as text so that the
-- field order of the mapper tables (which is significant) is preserved.
-- The migration runner creates xai_migrations(version, applied_at) itself before applying this file.

CREATE TABLE xai_accounts (
    id          BIGINT  PRIMARY KEY,
    parent      BIGINT,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    role        TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    policy      TEXT    NOT NULL DEFAULT '{}',
    balance     BIGINT  NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX xai_accounts_parent ON xai_accounts (parent);

-- Virtual keys: only the SHA-256 digest of the key is stored, never the key.
CREATE TABLE xai_keys (
    id          BIGINT  PRIMARY KEY,
    account     BIGINT  NOT NULL REFERENCES xai_accounts (id),
    prefix      TEXT    NOT NULL,
    digest      TEXT    NOT NULL UNIQUE,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    expires_at  BIGINT,
    name        TEXT,
    policy      TEXT,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX xai_keys_account ON xai_keys (account);

CREATE TABLE xai_ledger (
    id            BIGINT  PRIMARY KEY,
    time          BIGINT  NOT NULL,
    from_account  BIGINT,
    to_account    BIGINT,
    amount        BIGINT  NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('allocate', 'reclaim', 'mint', 'burn', 'spend')),
    note          TEXT
);
CREATE INDEX xai_ledger_from ON xai_ledger (from_account, id);
CREATE INDEX xai_ledger_to ON xai_ledger (to_account, id);

CREATE TABLE xai_products (
    id               BIGINT  PRIMARY KEY,
    account          BIGINT  NOT NULL REFERENCES xai_accounts (id),
    kind             TEXT    NOT NULL CHECK (kind IN ('subscription', 'addon', 'card')),
    daily_allowance  BIGINT,
    credits          BIGINT,
    remaining        BIGINT  NOT NULL,
    starts           TEXT,
    ends             TEXT,
    expires          TEXT,
    used_day         TEXT,
    used             BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL
);
CREATE INDEX xai_products_account ON xai_products (account);

CREATE TABLE xai_providers (
    id          BIGINT  PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    protocol    TEXT    NOT NULL,
    base_url    TEXT    NOT NULL,
    models      TEXT    NOT NULL DEFAULT '[]',
    level       BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- Upstream credentials: only sealed (AES-256-GCM under the master key, context 'xai-upstream-key:<provider>:<id>').
CREATE TABLE xai_upstream_keys (
    provider    BIGINT  NOT NULL REFERENCES xai_providers (id) ON DELETE CASCADE,
    id          BIGINT  NOT NULL,
    sealed      TEXT    NOT NULL CHECK (sealed LIKE 'v1:%'),
    weight      BIGINT  NOT NULL DEFAULT 1,
    PRIMARY KEY (provider, id)
);
