//! The Redis tier of the catalog's read path: memory → Redis → database.
//!
//! Every instance serves requests from its in-memory snapshot of the catalog (accounts and their policies,
//! virtual keys, providers and levels). When another instance changes the tree, each instance takes the catalog
//! again ([`crate::sql::SqlStore::load_live`]): first from Redis, from the database only when Redis does not hold
//! the database's current version, and a database read refreshes Redis for the instances after it. With N
//! instances a change costs the database one catalog read instead of N.
//!
//! The database stays the truth: its catalog version (raised in the same transaction as every change to these
//! rows) is read from the database on every reload, and the cached copy is used only when it carries that exact
//! version and the database's epoch. An announcement lost while Redis was down cannot leave a stale copy in use.
//!
//! What Redis holds: one hash `<prefix>catalog` with the epoch, the version and the rows as stored (upstream keys
//! still sealed, virtual keys as digests), the whole sealed again under the master key (AES-256-GCM) with the epoch
//! and version as associated data. So Redis never holds a credential in the clear, a copy moved to another version
//! does not open, and whoever can write to Redis cannot plant an account or a key: a copy that does not open is
//! ignored and the database read. The hash expires after a day without a refresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::secrets::MasterKey;
use crate::sql::{CatalogRows, StoreError};

/// Catalog loads served from Redis.
pub static FROM_REDIS: AtomicU64 = AtomicU64::new(0);
/// Catalog loads that read the database while a Redis tier was configured (missing, older or unreadable copy).
pub static FROM_DATABASE: AtomicU64 = AtomicU64::new(0);
/// Redis errors and copies that would not open.
pub static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Keeps the copy of the newest version: a slower reader never replaces a newer copy with an older one, and a copy
/// of another database (another epoch) is replaced.
const PUT_LUA: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if epoch ~= ARGV[1] or tonumber(ARGV[2]) > version then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'version', ARGV[2], 'blob', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
";

const TTL: Duration = Duration::from_secs(24 * 3600);

/// The Redis tier of the catalog.
#[derive(Clone)]
pub struct CatalogCache {
    conn: ConnectionManager,
    key: String,
    master: Arc<MasterKey>,
    put: redis::Script,
}

impl std::fmt::Debug for CatalogCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCache").field("key", &self.key).finish_non_exhaustive()
    }
}

fn context(epoch: &str, version: i64) -> Vec<u8> {
    format!("xai catalog cache\0{epoch}\0{version}").into_bytes()
}

impl CatalogCache {
    /// The tier over the Redis at `url`, under `<prefix>catalog`, connecting lazily (an unreachable Redis makes
    /// every load read the database). Must be called within a Tokio runtime.
    pub fn connect(url: &str, prefix: &str, master: Arc<MasterKey>) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Invalid(format!("redis url: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Invalid(format!("redis: {e}")))?;
        Ok(Self::new(conn, prefix, master))
    }

    /// Over an existing connection.
    pub fn new(conn: ConnectionManager, prefix: &str, master: Arc<MasterKey>) -> Self {
        Self { conn, key: format!("{prefix}catalog"), master, put: redis::Script::new(PUT_LUA) }
    }

    /// The Redis key of the hash.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The cached rows when they are exactly the database's `epoch` and `version`; `None` otherwise (missing,
    /// another version, unreachable, or a copy that does not open), counted in [`FROM_REDIS`] / [`FROM_DATABASE`].
    pub async fn get(&self, epoch: &str, version: i64) -> Option<CatalogRows> {
        let got = self.lookup(epoch, version).await;
        match got {
            Ok(Some(rows)) => {
                FROM_REDIS.fetch_add(1, Ordering::Relaxed);
                return Some(rows);
            }
            Ok(None) => {}
            Err(e) => {
                ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "the catalog's Redis tier failed; reading the database");
            }
        }
        FROM_DATABASE.fetch_add(1, Ordering::Relaxed);
        None
    }

    async fn lookup(&self, epoch: &str, version: i64) -> Result<Option<CatalogRows>, String> {
        let mut conn = self.conn.clone();
        let (e, v, blob): (Option<String>, Option<i64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(&self.key)
            .arg("epoch")
            .arg("version")
            .arg("blob")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let (Some(e), Some(v), Some(blob)) = (e, v, blob) else { return Ok(None) };
        if e != epoch || v != version {
            return Ok(None);
        }
        let json = self
            .master
            .open_bytes(&blob, &context(epoch, version))
            .map_err(|_| "the cached catalog does not open with this master key (ignored)".to_string())?;
        let rows: CatalogRows =
            serde_json::from_slice(&json).map_err(|e| format!("the cached catalog does not parse: {e}"))?;
        if rows.epoch != epoch || rows.version != version {
            return Err("the cached catalog's rows carry another version (ignored)".into());
        }
        Ok(Some(rows))
    }

    /// Offers rows just read from the database; kept unless Redis already holds a newer version of the same
    /// database. Best effort: a failure is logged and counted.
    pub async fn put(&self, rows: &CatalogRows) {
        let json = match serde_json::to_vec(rows) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "serializing the catalog for Redis failed");
                return;
            }
        };
        let blob = self.master.seal_bytes(&json, &context(&rows.epoch, rows.version));
        let mut conn = self.conn.clone();
        let r: Result<i64, _> = self
            .put
            .key(&self.key)
            .arg(&rows.epoch)
            .arg(rows.version)
            .arg(blob)
            .arg(TTL.as_secs())
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            ERRORS.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "refreshing the catalog's Redis tier failed");
        }
    }
}
