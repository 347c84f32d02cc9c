-- xai control plane (SQLite). Times are Unix microseconds; money is integer micro-credits; days are 'YYYY-MM-DD'.
-- Policies are the JSON object of the admin API (xai_core::policy::wire::policy_json).
-- The migration runner creates xai_migrations(version, applied_at) itself before applying this file.

CREATE TABLE xai_accounts (
    id          INTEGER PRIMARY KEY,
    parent      INTEGER,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    role        TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    policy      TEXT    NOT NULL DEFAULT '{}',
    balance     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX xai_accounts_parent ON xai_accounts (parent);

-- Virtual keys: only the SHA-256 digest of the key is stored, never the key.
CREATE TABLE xai_keys (
    id          INTEGER PRIMARY KEY,
    account     INTEGER NOT NULL REFERENCES xai_accounts (id),
    prefix      TEXT    NOT NULL,
    digest      TEXT    NOT NULL UNIQUE,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    expires_at  INTEGER,
    name        TEXT,
    policy      TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX xai_keys_account ON xai_keys (account);

CREATE TABLE xai_ledger (
    id            INTEGER PRIMARY KEY,
    time          INTEGER NOT NULL,
    from_account  INTEGER,
    to_account    INTEGER,
    amount        INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('allocate', 'reclaim', 'mint', 'burn', 'spend')),
    note          TEXT
);
CREATE INDEX xai_ledger_from ON xai_ledger (from_account, id);
CREATE INDEX xai_ledger_to ON xai_ledger (to_account, id);

CREATE TABLE xai_products (
    id               INTEGER PRIMARY KEY,
    account          INTEGER NOT NULL REFERENCES xai_accounts (id),
    kind             TEXT    NOT NULL CHECK (kind IN ('subscription', 'addon', 'card')),
    daily_allowance  INTEGER,
    credits          INTEGER,
    remaining        INTEGER NOT NULL,
    starts           TEXT,
    ends             TEXT,
    expires          TEXT,
    used_day         TEXT,
    used             INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);
CREATE INDEX xai_products_account ON xai_products (account);

CREATE TABLE xai_providers (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    protocol    TEXT    NOT NULL,
    base_url    TEXT    NOT NULL,
    models      TEXT    NOT NULL DEFAULT '[]',
    level       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Upstream credentials: only sealed (AES-256-GCM under the master key, context 'xai-upstream-key:<provider>:<id>').
CREATE TABLE xai_upstream_keys (
    provider    INTEGER NOT NULL REFERENCES xai_providers (id) ON DELETE CASCADE,
    id          INTEGER NOT NULL,
    sealed      TEXT    NOT NULL CHECK (sealed LIKE 'v1:%'),
    weight      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (provider, id)
);
