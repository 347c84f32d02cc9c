-- The audit trail (append-only): who changed an account's standing and why. Times are Unix microseconds;
-- `detail` is a JSON object (for anomaly freezes: the flags with their numbers).
CREATE TABLE xai_audit (
    id       BIGINT PRIMARY KEY,
    time     BIGINT NOT NULL,
    actor    TEXT   NOT NULL,
    action   TEXT   NOT NULL,
    account  BIGINT,
    detail   TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX xai_audit_account ON xai_audit (account, id);
