-- Upstream keys an upstream rejected (401/403), by a fingerprint of the credential (SHA-256 under a context of its
-- own, never the key): they stay disabled across restarts until an operator enables them again.
CREATE TABLE IF NOT EXISTS xai_disabled_upstream_keys (
    fingerprint TEXT   PRIMARY KEY,
    disabled_at BIGINT NOT NULL
);
