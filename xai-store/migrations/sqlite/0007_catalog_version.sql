-- The catalog's version: raised in the same transaction as every change to what instances cache of the tree
-- (accounts, virtual keys, providers). A copy of the catalog cached in Redis is tagged with this database's epoch
-- (random, set once) and the version it was read at, and is used only while the database still says both: the
-- database stays the truth, and a Redis shared by another database never serves that database's catalog.
CREATE TABLE IF NOT EXISTS xai_catalog (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   TEXT    NOT NULL,
    version BIGINT  NOT NULL
);
INSERT INTO xai_catalog (id, epoch, version) VALUES (1, lower(hex(randomblob(16))), 0) ON CONFLICT (id) DO NOTHING;
