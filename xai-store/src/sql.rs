//! The control-plane state in SQL: SQLite (embedded, the default) or Postgres (clusters).
//!
//! [`SqlStore::connect`] opens the pool and applies the versioned migrations embedded from `migrations/{sqlite,
//! postgres}/NNNN_*.sql` (each in its own transaction, recorded in `xai_migrations`; on Postgres under an advisory
//! lock so that instances starting together apply each version once). Writes are upserts keyed by the ids the
//! control plane assigns, so saving the same object again is harmless; [`SqlStore::save`] applies several changes
//! in one transaction (a transfer: the ledger entry and both balances). [`SqlStore::load`] rebuilds the
//! [`Catalog`] the in-memory stores start from, plus the ledger and products as plain data.
//!
//! What is stored: policies as the admin API's JSON ([`policy_json`], read back through [`PolicyPatch`]);
//! virtual keys only as their SHA-256 digest; upstream credentials only sealed under the [`MasterKey`]. Times are
//! Unix microseconds, money integer micro-credits, days `YYYY-MM-DD`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use xai_core::control::{AuditEntry, Entry, EntryKind, ProductKind};
use xai_core::day::Day;
use xai_core::ids::{AccountId, KeyId, Level, ProviderId, UpstreamKeyId};
use xai_core::memory::Catalog;
use xai_core::money::Micros;
use xai_core::policy::wire::{PolicyPatch, policy_json};
use xai_core::policy::{Account, ModelPattern, Policy, Role, Status, VirtualKey};
use xai_core::protocol::Protocol;
use xai_core::routing::{Provider, UpstreamKey};
use xai_core::secret::{KeyDigest, Secret};

use crate::catalog_cache::CatalogCache;
use crate::secrets::{MasterKey, SecretError};

/// One versioned schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version (the file's number); applied in ascending order.
    pub version: i64,
    /// Short name (the file's stem after the number).
    pub name: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// SQLite migrations, ascending. Version 2 is reserved for `0002_usage.sql`.
pub const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "control", sql: include_str!("../migrations/sqlite/0001_control.sql") },
    Migration { version: 2, name: "usage", sql: crate::usage::SQLITE_DDL },
    Migration { version: 3, name: "usage_key", sql: include_str!("../migrations/sqlite/0003_usage_key.sql") },
    Migration { version: 4, name: "audit", sql: include_str!("../migrations/sqlite/0004_audit.sql") },
    Migration { version: 5, name: "prices", sql: include_str!("../migrations/sqlite/0005_prices.sql") },
    Migration { version: 6, name: "key_state", sql: include_str!("../migrations/sqlite/0006_key_state.sql") },
    Migration { version: 7, name: "catalog", sql: include_str!("../migrations/sqlite/0007_catalog_version.sql") },
];

/// Postgres migrations, ascending.
pub const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "control", sql: include_str!("../migrations/postgres/0001_control.sql") },
    Migration { version: 2, name: "usage", sql: crate::usage::POSTGRES_DDL },
    Migration { version: 3, name: "usage_key", sql: include_str!("../migrations/postgres/0003_usage_key.sql") },
    Migration { version: 4, name: "audit", sql: include_str!("../migrations/postgres/0004_audit.sql") },
    Migration { version: 5, name: "prices", sql: include_str!("../migrations/postgres/0005_prices.sql") },
    Migration { version: 6, name: "key_state", sql: include_str!("../migrations/postgres/0006_key_state.sql") },
    Migration { version: 7, name: "catalog", sql: include_str!("../migrations/postgres/0007_catalog_version.sql") },
];

const MIGRATIONS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS xai_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// `pg_advisory_xact_lock` key serialising migrations across instances ("xai_migr").
const MIGRATION_LOCK: i64 = 0x7861_695f_6d69_6772;

/// Context (associated data) of a sealed upstream key: the credential is bound to its provider and id.
pub fn upstream_key_context(provider: ProviderId, key: UpstreamKeyId) -> Vec<u8> {
    format!("xai-upstream-key:{provider}:{key}").into_bytes()
}

/// Why a store operation failed. Never carries key material, plaintext secrets or the database URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres://`.
    #[error("unsupported database URL scheme (expected sqlite://path or postgres://...)")]
    UnsupportedUrl,
    /// A database error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed (nothing of it was applied).
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Its version.
        version: i64,
        /// Its name.
        name: &'static str,
        /// The error.
        source: sqlx::Error,
    },
    /// An upstream key could not be opened with this master key.
    #[error(
        "upstream key {key} of provider {provider}: {source} (is XAI_MASTER_KEY / master.key the one it was sealed with?)"
    )]
    Secret {
        /// Provider name.
        provider: String,
        /// Key id.
        key: UpstreamKeyId,
        /// Why.
        source: SecretError,
    },
    /// A value does not fit the schema (an id past `i64::MAX`) or a row does not parse.
    #[error("{0}")]
    Invalid(String),
}

/// A product, as stored: the fields of [`xai_core::control::Product`] plus its day counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    /// Id.
    pub id: u64,
    /// Owner.
    pub account: AccountId,
    /// Kind.
    pub kind: ProductKind,
    /// Subscriptions: credits per day.
    pub daily_allowance: Option<Micros>,
    /// Add-ons and cards: credits bought.
    pub credits: Option<Micros>,
    /// Credits left (subscriptions: of `used_day`).
    pub remaining: Micros,
    /// Window start.
    pub starts: Option<Day>,
    /// Window end (inclusive).
    pub ends: Option<Day>,
    /// Card expiry (inclusive).
    pub expires: Option<Day>,
    /// Subscriptions: the day `used` counts.
    pub used_day: Option<Day>,
    /// Subscriptions: allowance used on `used_day`.
    pub used: Micros,
}

/// A key's admin metadata (not part of [`VirtualKey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// Key id.
    pub id: KeyId,
    /// Display name.
    pub name: Option<String>,
    /// Issued at.
    pub created_at: SystemTime,
}

/// What [`SqlStore::load`] returns.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Accounts (with paths), keys and providers (keys opened). `switch_over` and `prices` stay empty: they come
    /// from the configuration.
    pub catalog: Catalog,
    /// Name and creation time of each key, by id order.
    pub key_meta: Vec<KeyMeta>,
    /// Creation time of each account.
    pub account_created: HashMap<AccountId, SystemTime>,
    /// The ledger, by id.
    pub ledger: Vec<Entry>,
    /// Products, by id.
    pub products: Vec<ProductRow>,
}

/// One change to persist; see [`SqlStore::save`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Insert or update an account (its `created_at` is set on first insert).
    Account(&'a Account),
    /// Insert an account, or update it and add `delta` to the stored balance (instances sharing the database add
    /// their own movements instead of overwriting each other's). The row is written whole: a catalog change (an
    /// account that only moved money is a [`Change::Balance`]).
    AccountMoved(&'a Account, i64),
    /// Add `delta` to a stored account's balance and change nothing else of it (traffic moved money here; the
    /// rest of the row may have been changed by another instance since this one read it).
    Balance(AccountId, i64),
    /// Insert or update a virtual key (digest only).
    Key {
        /// The key.
        key: &'a VirtualKey,
        /// Display name.
        name: Option<&'a str>,
        /// Issued at (kept from the first insert).
        created_at: SystemTime,
    },
    /// Insert a ledger entry, or update its amount and note (the day's spend entry grows).
    Ledger(&'a Entry),
    /// Insert or update a product.
    Product(&'a ProductRow),
    /// Insert a product, or update it adding the deltas to `remaining` and to today's `used` (see
    /// [`Change::AccountMoved`]).
    ProductMoved(&'a ProductRow, i64, i64),
    /// Insert or update a provider and replace its upstream keys (sealed).
    Provider(&'a Provider),
    /// Remove a provider and its upstream keys.
    DeleteProvider(ProviderId),
    /// Append an audit entry (saving it again changes nothing).
    Audit(&'a AuditEntry),
}

impl Change<'_> {
    /// Whether it changes what instances cache of the tree (accounts, keys, providers): a save with any such
    /// change raises the catalog version once.
    fn is_catalog(&self) -> bool {
        matches!(
            self,
            Change::Account(_)
                | Change::AccountMoved(..)
                | Change::Key { .. }
                | Change::Provider(_)
                | Change::DeleteProvider(_)
        )
    }
}

#[derive(Debug, Clone)]
enum Arg {
    I(Option<i64>),
    T(Option<String>),
}

#[derive(Debug)]
struct Stmt {
    sql: &'static str,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool of whichever backend (the body is compiled once per backend).
macro_rules! on_db {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::Postgres($p) => $body,
        }
    };
}

/// Reads the catalog rows and their stamp inside `$tx` (a transaction of either backend; `?` on each query).
macro_rules! read_catalog_rows {
    ($tx:expr) => {{
        let (epoch, version): (String, i64) = sqlx::query_as(CATALOG_STAMP).fetch_one(&mut *$tx).await?;
        let accounts: Vec<AccountT> = sqlx::query_as(ACCOUNTS).fetch_all(&mut *$tx).await?;
        let keys: Vec<KeyT> = sqlx::query_as(KEYS).fetch_all(&mut *$tx).await?;
        let providers: Vec<ProviderT> = sqlx::query_as(PROVIDERS).fetch_all(&mut *$tx).await?;
        let upstream_keys: Vec<UpKeyT> = sqlx::query_as(UPKEYS).fetch_all(&mut *$tx).await?;
        CatalogRows { epoch, version, accounts, keys, providers, upstream_keys }
    }};
}
/// The durable control-plane store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
    master: Arc<MasterKey>,
}

/// The SQLite connection options of the store: WAL; `synchronous = NORMAL` (with WAL it loses nothing when the
/// process dies, only the last commits on a power cut, and saves an fsync per commit); a 32 MiB page cache per
/// connection (the usage table's indexes stay in memory instead of being read back page by page); statement
/// journals and temporary tables in memory (a multi-row insert's statement journal otherwise goes to a file).
pub fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory"))
}

impl SqlStore {
    /// Connects to `sqlite://path?mode=rwc` (or `sqlite:path`) or `postgres://…` and applies missing migrations.
    pub async fn connect(url: &str, master: MasterKey) -> Result<SqlStore, StoreError> {
        let db = if url.starts_with("sqlite:") {
            let opts = sqlite_options(url)?;
            if let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
            }
            // An in-memory database exists per connection: keep one.
            let max = if url.contains(":memory:") || url.contains("mode=memory") { 1 } else { 8 };
            Db::Sqlite(SqlitePoolOptions::new().max_connections(max).connect_with(opts).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A refusing database must not hold a caller for sqlx's default 30 s: the usage writer spools, the
            // saver retries, and shutdown stays within its bounds.
            Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(std::time::Duration::from_secs(3))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let store = SqlStore { db, master: Arc::new(master) };
        store.migrate().await?;
        Ok(store)
    }

    /// The SQLite pool, when that is the backend (for other stores sharing the database).
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Sqlite(p) => Some(p),
            Db::Postgres(_) => None,
        }
    }

    /// The Postgres pool, when that is the backend.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres(p) => Some(p),
            Db::Sqlite(_) => None,
        }
    }

    /// The master key (the catalog's Redis tier seals its copy under it).
    pub fn master(&self) -> Arc<MasterKey> {
        self.master.clone()
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        on_db!(&self.db, |p| sqlx::query("SELECT 1").execute(p).await.is_ok())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_db!(&self.db, |p| p.close().await)
    }

    /// Applies the embedded migrations not yet recorded in `xai_migrations`, in order, each in a transaction.
    /// Returns the versions applied now. Idempotent; safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let (list, begin, lock) = match &self.db {
            Db::Sqlite(_) => (SQLITE_MIGRATIONS, "BEGIN IMMEDIATE", None),
            Db::Postgres(_) => (POSTGRES_MIGRATIONS, "BEGIN", Some("SELECT pg_advisory_xact_lock($1)")),
        };
        let mut applied = Vec::new();
        on_db!(&self.db, |p| {
            let mut tx = p.begin_with(begin).await?;
            if let Some(l) = lock {
                sqlx::query(l).bind(MIGRATION_LOCK).execute(&mut *tx).await?;
            }
            sqlx::query(MIGRATIONS_TABLE).execute(&mut *tx).await?;
            tx.commit().await?;
            for m in list {
                let mut tx = p.begin_with(begin).await?;
                if let Some(l) = lock {
                    sqlx::query(l).bind(MIGRATION_LOCK).execute(&mut *tx).await?;
                }
                let done: Option<i64> = sqlx::query_scalar("SELECT version FROM xai_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_some() {
                    continue; // the transaction rolls back on drop
                }
                let err = |source| StoreError::Migration { version: m.version, name: m.name, source };
                sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(err)?;
                sqlx::query("INSERT INTO xai_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(m.version)
                    .bind(to_us(SystemTime::now()))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                tx.commit().await.map_err(err)?;
                tracing::info!(version = m.version, name = m.name, "applied database migration");
                applied.push(m.version);
            }
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM xai_migrations").fetch_one(p).await?;
            if let Some(v) = newest.filter(|&v| list.last().is_some_and(|m| v > m.version)) {
                tracing::warn!(version = v, "the database schema is newer than this build (a newer xai ran here)");
            }
        });
        Ok(applied)
    }

    /// The versions recorded in `xai_migrations`, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT version FROM xai_migrations ORDER BY version";
        Ok(on_db!(&self.db, |p| sqlx::query_scalar(sql).fetch_all(p).await?))
    }

    /// Saves an account.
    pub async fn save_account(&self, a: &Account) -> Result<(), StoreError> {
        self.save(&[Change::Account(a)]).await
    }

    /// Saves a virtual key: its digest, never the key.
    pub async fn save_key(
        &self,
        key: &VirtualKey,
        name: Option<&str>,
        created_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.save(&[Change::Key { key, name, created_at }]).await
    }

    /// Saves a ledger entry (an update of an existing id changes its amount and note only).
    pub async fn append_ledger(&self, e: &Entry) -> Result<(), StoreError> {
        self.save(&[Change::Ledger(e)]).await
    }

    /// Saves a product.
    pub async fn save_product(&self, p: &ProductRow) -> Result<(), StoreError> {
        self.save(&[Change::Product(p)]).await
    }

    /// Saves a provider and its upstream keys, sealed.
    pub async fn save_provider(&self, p: &Provider) -> Result<(), StoreError> {
        self.save(&[Change::Provider(p)]).await
    }

    /// Saves several changes atomically (all or none), e.g. a transfer's ledger entry and both balances.
    pub async fn save(&self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        let mut stmts = Vec::new();
        let now = to_us(SystemTime::now());
        for c in changes {
            self.statements(c, now, &mut stmts)?;
        }
        if changes.iter().any(Change::is_catalog) {
            stmts.push(Stmt { sql: BUMP_CATALOG, args: vec![] });
        }
        on_db!(&self.db, |p| {
            let mut tx = p.begin().await?;
            for s in &stmts {
                let mut q = sqlx::query(s.sql);
                for a in &s.args {
                    q = match a {
                        Arg::I(v) => q.bind(*v),
                        Arg::T(v) => q.bind(v.clone()),
                    };
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    fn statements(&self, c: &Change<'_>, now: i64, out: &mut Vec<Stmt>) -> Result<(), StoreError> {
        use Arg::{I, T};
        match *c {
            Change::Account(a) | Change::AccountMoved(a, _) => out.push(Stmt {
                sql: if let Change::AccountMoved(..) = c {
                    "INSERT INTO xai_accounts (id, parent, name, status, role, policy, balance, created_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
                      parent = excluded.parent, name = excluded.name, status = excluded.status, role = excluded.role, \
                      policy = excluded.policy, balance = xai_accounts.balance + $9"
                } else {
                    "INSERT INTO xai_accounts (id, parent, name, status, role, policy, balance, created_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
                      parent = excluded.parent, name = excluded.name, status = excluded.status, role = excluded.role, \
                      policy = excluded.policy, balance = excluded.balance"
                },
                args: vec![
                    I(Some(id64(a.id.0)?)),
                    I(a.parent.map(|p| id64(p.0)).transpose()?),
                    T(Some(a.name.to_string())),
                    T(Some(status_str(a.status).into())),
                    T(Some(role_str(a.role).into())),
                    T(Some(policy_text(&a.policy))),
                    I(Some(a.balance.0)),
                    I(Some(now)),
                ]
                .into_iter()
                .chain(match c {
                    Change::AccountMoved(_, d) => Some(I(Some(*d))),
                    _ => None,
                })
                .collect(),
            }),
            Change::Key { key, name, created_at } => out.push(Stmt {
                sql: "INSERT INTO xai_keys (id, account, prefix, digest, status, expires_at, name, policy, created_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
                      account = excluded.account, prefix = excluded.prefix, digest = excluded.digest, \
                      status = excluded.status, expires_at = excluded.expires_at, name = excluded.name, \
                      policy = excluded.policy",
                args: vec![
                    I(Some(id64(key.id.0)?)),
                    I(Some(id64(key.account.0)?)),
                    T(Some(key.prefix.to_string())),
                    T(Some(key.digest.to_hex())),
                    T(Some(status_str(key.status).into())),
                    I(key.expires_at.map(to_us)),
                    T(name.map(str::to_string)),
                    T(key.policy.as_ref().map(policy_text)),
                    I(Some(to_us(created_at))),
                ],
            }),
            Change::Ledger(e) => out.push(Stmt {
                sql: "INSERT INTO xai_ledger (id, time, from_account, to_account, amount, kind, note) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
                      amount = excluded.amount, note = excluded.note",
                args: vec![
                    I(Some(id64(e.id)?)),
                    I(Some(to_us(e.time))),
                    I(e.from.map(|a| id64(a.0)).transpose()?),
                    I(e.to.map(|a| id64(a.0)).transpose()?),
                    I(Some(e.amount.0)),
                    T(Some(entry_kind_str(e.kind).into())),
                    T(e.note.clone()),
                ],
            }),
            Change::Product(p) | Change::ProductMoved(p, ..) => out.push(Stmt {
                sql: if let Change::ProductMoved(..) = c {
                    "INSERT INTO xai_products (id, account, kind, daily_allowance, credits, remaining, starts, ends, \
                      expires, used_day, used, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                      ON CONFLICT (id) DO UPDATE SET account = excluded.account, kind = excluded.kind, \
                      daily_allowance = excluded.daily_allowance, credits = excluded.credits, \
                      remaining = xai_products.remaining + $13, starts = excluded.starts, ends = excluded.ends, \
                      expires = excluded.expires, \
                      used = CASE WHEN xai_products.used_day = excluded.used_day THEN xai_products.used + $14 \
                      ELSE $14 END, used_day = excluded.used_day"
                } else {
                    "INSERT INTO xai_products (id, account, kind, daily_allowance, credits, remaining, starts, ends, \
                      expires, used_day, used, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                      ON CONFLICT (id) DO UPDATE SET account = excluded.account, kind = excluded.kind, \
                      daily_allowance = excluded.daily_allowance, credits = excluded.credits, \
                      remaining = excluded.remaining, starts = excluded.starts, ends = excluded.ends, \
                      expires = excluded.expires, used_day = excluded.used_day, used = excluded.used"
                },
                args: vec![
                    I(Some(id64(p.id)?)),
                    I(Some(id64(p.account.0)?)),
                    T(Some(product_kind_str(p.kind).into())),
                    I(p.daily_allowance.map(|m| m.0)),
                    I(p.credits.map(|m| m.0)),
                    I(Some(p.remaining.0)),
                    T(p.starts.map(|d| d.to_string())),
                    T(p.ends.map(|d| d.to_string())),
                    T(p.expires.map(|d| d.to_string())),
                    T(p.used_day.map(|d| d.to_string())),
                    I(Some(p.used.0)),
                    I(Some(now)),
                ]
                .into_iter()
                .chain(match c {
                    Change::ProductMoved(_, r, u) => vec![I(Some(*r)), I(Some(*u))],
                    _ => vec![],
                })
                .collect(),
            }),
            Change::Audit(e) => out.push(Stmt {
                sql: "INSERT INTO xai_audit (id, time, actor, action, account, detail) VALUES ($1, $2, $3, $4, $5, $6) \
                      ON CONFLICT (id) DO NOTHING",
                args: vec![
                    I(Some(id64(e.id)?)),
                    I(Some(to_us(e.time))),
                    T(Some(e.actor.clone())),
                    T(Some(e.action.clone())),
                    I(e.account.map(|a| id64(a.0)).transpose()?),
                    T(Some(e.detail.to_string())),
                ],
            }),
            Change::Balance(id, delta) => out.push(Stmt {
                sql: "UPDATE xai_accounts SET balance = balance + $2 WHERE id = $1",
                args: vec![I(Some(id64(id.0)?)), I(Some(delta))],
            }),
            Change::DeleteProvider(id) => {
                out.push(Stmt { sql: "DELETE FROM xai_providers WHERE id = $1", args: vec![I(Some(i64::from(id.0)))] })
            }
            Change::Provider(p) => {
                let models: Vec<&str> = p.models.iter().map(ModelPattern::as_str).collect();
                let pid = i64::from(p.id.0);
                out.push(Stmt {
                    sql: "INSERT INTO xai_providers (id, name, protocol, base_url, models, level, created_at) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
                          name = excluded.name, protocol = excluded.protocol, base_url = excluded.base_url, \
                          models = excluded.models, level = excluded.level",
                    args: vec![
                        I(Some(pid)),
                        T(Some(p.name.to_string())),
                        T(Some(p.protocol.as_str().into())),
                        T(Some(p.base_url.to_string())),
                        T(Some(serde_json::Value::from(models).to_string())),
                        I(Some(i64::from(p.level.0))),
                        I(Some(now)),
                    ],
                });
                out.push(Stmt { sql: "DELETE FROM xai_upstream_keys WHERE provider = $1", args: vec![I(Some(pid))] });
                for k in &p.keys {
                    let sealed = self.master.seal(k.secret.expose(), &upstream_key_context(p.id, k.id));
                    out.push(Stmt {
                        sql: "INSERT INTO xai_upstream_keys (provider, id, sealed, weight) VALUES ($1, $2, $3, $4)",
                        args: vec![
                            I(Some(pid)),
                            I(Some(i64::from(k.id.0))),
                            T(Some(sealed)),
                            I(Some(i64::from(k.weight))),
                        ],
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads everything back, in one read transaction: the catalog (accounts with paths and policies, keys,
    /// providers with their keys opened), key metadata, the ledger and products.
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let (rows, ledger, products) = on_db!(&self.db, |p| {
            let mut tx = p.begin_with(self.read_tx()).await?;
            let rows = read_catalog_rows!(tx);
            let l: Vec<LedgerT> = sqlx::query_as(LEDGER).fetch_all(&mut *tx).await?;
            let pr: Vec<ProductT> = sqlx::query_as(PRODUCTS).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            (rows, l, pr)
        });
        let mut snap = Snapshot::default();
        self.open_catalog_rows(rows, &mut snap)?;
        for (id, time, from, to, amount, kind, note) in ledger {
            snap.ledger.push(Entry {
                id: uid(id)?,
                time: from_us(time),
                from: from.map(uid).transpose()?.map(AccountId),
                to: to.map(uid).transpose()?.map(AccountId),
                amount: Micros(amount),
                kind: parse_entry_kind(&kind)?,
                note,
            });
        }
        snap.products = products.into_iter().map(product_row).collect::<Result<_, _>>()?;
        Ok(snap)
    }

    /// What another instance's change is taken from: the catalog through the Redis tier when one is given (the
    /// database is read only when the cached copy is missing or older than the database's version, and the copy
    /// is then refreshed), with balances and products always read from the database. The ledger is not read
    /// (instances do not reload it); the snapshot's `ledger` stays empty.
    pub async fn load_live(&self, cache: Option<&CatalogCache>) -> Result<(Snapshot, CatalogSource), StoreError> {
        if let Some(c) = cache {
            let (stamp, balances, products) = on_db!(&self.db, |p| {
                let mut tx = p.begin_with(self.read_tx()).await?;
                let stamp: (String, i64) = sqlx::query_as(CATALOG_STAMP).fetch_one(&mut *tx).await?;
                let b: Vec<(i64, i64)> = sqlx::query_as(BALANCES).fetch_all(&mut *tx).await?;
                let pr: Vec<ProductT> = sqlx::query_as(PRODUCTS).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (stamp, b, pr)
            });
            if let Some(mut rows) = c.get(&stamp.0, stamp.1).await {
                // Money is never taken from a cache: the balances read with the stamp overlay the cached rows'
                // (an account created since the cached version is not in the rows yet; the next version brings
                // it).
                let balances: HashMap<i64, i64> = balances.into_iter().collect();
                for a in &mut rows.accounts {
                    if let Some(b) = balances.get(&a.0) {
                        a.6 = *b;
                    }
                }
                return Ok((self.live_snapshot(rows, products)?, CatalogSource::Redis));
            }
        }
        // From the database: the rows, their balances and the products of one transaction.
        let (rows, products) = on_db!(&self.db, |p| {
            let mut tx = p.begin_with(self.read_tx()).await?;
            let rows = read_catalog_rows!(tx);
            let pr: Vec<ProductT> = sqlx::query_as(PRODUCTS).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            (rows, pr)
        });
        if let Some(c) = cache {
            c.put(&rows).await;
        }
        Ok((self.live_snapshot(rows, products)?, CatalogSource::Database))
    }

    /// The snapshot of [`SqlStore::load_live`]: the catalog, and the products of the accounts it holds.
    fn live_snapshot(&self, rows: CatalogRows, products: Vec<ProductT>) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        self.open_catalog_rows(rows, &mut snap)?;
        let known: std::collections::HashSet<AccountId> = snap.catalog.accounts.iter().map(|a| a.id).collect();
        for p in products {
            let p = product_row(p)?;
            if known.contains(&p.account) {
                snap.products.push(p);
            }
        }
        Ok(snap)
    }

    /// The catalog rows as stored (upstream keys sealed), tagged with the database's epoch and catalog version
    /// read in the same transaction.
    pub async fn catalog_rows(&self) -> Result<CatalogRows, StoreError> {
        Ok(on_db!(&self.db, |p| {
            let mut tx = p.begin_with(self.read_tx()).await?;
            let rows = read_catalog_rows!(tx);
            tx.commit().await?;
            rows
        }))
    }

    /// The database's epoch and catalog version (see `migrations/*/0007_catalog_version.sql`).
    pub async fn catalog_stamp(&self) -> Result<(String, i64), StoreError> {
        Ok(on_db!(&self.db, |p| sqlx::query_as(CATALOG_STAMP).fetch_one(p).await?))
    }

    fn read_tx(&self) -> &'static str {
        match &self.db {
            Db::Sqlite(_) => "BEGIN",
            Db::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    /// Parses catalog rows into the snapshot's catalog, key metadata and account creation times, opening the
    /// upstream keys with the master key.
    fn open_catalog_rows(&self, rows: CatalogRows, snap: &mut Snapshot) -> Result<(), StoreError> {
        let CatalogRows { accounts, keys, providers, upstream_keys, .. } = rows;
        for (id, parent, name, status, role, policy, balance, created_at) in accounts {
            let id = AccountId(uid(id)?);
            snap.account_created.insert(id, from_us(created_at));
            snap.catalog.accounts.push(Account {
                id,
                parent: parent.map(uid).transpose()?.map(AccountId),
                name: name.into(),
                path: "".into(),
                status: parse_status(&status)?,
                role: parse_role(&role)?,
                policy: parse_policy(&policy)?,
                balance: Micros(balance),
            });
        }
        fill_paths(&mut snap.catalog.accounts);
        for (id, account, prefix, digest, status, expires_at, name, policy, created_at) in keys {
            let id = KeyId(uid(id)?);
            let mut d = [0u8; 32];
            hex::decode_to_slice(&digest, &mut d).map_err(|_| invalid(format!("key {id}: malformed digest")))?;
            snap.catalog.keys.push(VirtualKey {
                id,
                account: AccountId(uid(account)?),
                prefix: prefix.into(),
                digest: KeyDigest(d),
                status: parse_status(&status)?,
                expires_at: expires_at.map(from_us),
                policy: policy.as_deref().map(parse_policy).transpose()?,
            });
            snap.key_meta.push(KeyMeta { id, name, created_at: from_us(created_at) });
        }
        let mut by_provider: HashMap<i64, Vec<UpKeyT>> = HashMap::new();
        for k in upstream_keys {
            by_provider.entry(k.0).or_default().push(k);
        }
        for (id, name, protocol, base_url, models, level) in providers {
            let pid = ProviderId(u32::try_from(id).map_err(|_| invalid(format!("provider id {id} out of range")))?);
            let models: Vec<String> = serde_json::from_str(&models)
                .map_err(|e| invalid(format!("provider {name}: malformed models: {e}")))?;
            let models = models
                .iter()
                .map(|m| ModelPattern::new(m).map_err(|e| invalid(format!("provider {name}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let mut keys = Vec::new();
            for (_, kid, sealed, weight) in by_provider.remove(&id).unwrap_or_default() {
                let kid = UpstreamKeyId(u32::try_from(kid).map_err(|_| invalid(format!("key id {kid} out of range")))?);
                let secret = self
                    .master
                    .open(&sealed, &upstream_key_context(pid, kid))
                    .map_err(|source| StoreError::Secret { provider: name.clone(), key: kid, source })?;
                keys.push(UpstreamKey {
                    id: kid,
                    secret: Secret::new(secret.into()),
                    weight: u32::try_from(weight).map_err(|_| invalid(format!("key {kid}: bad weight")))?,
                });
            }
            snap.catalog.providers.push(Arc::new(Provider {
                id: pid,
                protocol: Protocol::from_str(&protocol)
                    .map_err(|_| invalid(format!("provider {name}: unknown protocol {protocol:?}")))?,
                name: name.into(),
                base_url: base_url.into(),
                models,
                level: Level(u32::try_from(level).map_err(|_| invalid(format!("provider {id}: bad level")))?),
                keys,
            }));
        }
        Ok(())
    }
}

type AccountT = (i64, Option<i64>, String, String, String, String, i64, i64);
type KeyT = (i64, i64, String, String, String, Option<i64>, Option<String>, Option<String>, i64);
type LedgerT = (i64, i64, Option<i64>, Option<i64>, i64, String, Option<String>);
type ProductT = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);
type ProviderT = (i64, String, String, String, String, i64);
type UpKeyT = (i64, i64, String, i64);
const ACCOUNTS: &str =
    "SELECT id, parent, name, status, role, policy, balance, created_at FROM xai_accounts ORDER BY id";
const BALANCES: &str = "SELECT id, balance FROM xai_accounts";
const KEYS: &str =
    "SELECT id, account, prefix, digest, status, expires_at, name, policy, created_at FROM xai_keys ORDER BY id";
const LEDGER: &str = "SELECT id, time, from_account, to_account, amount, kind, note FROM xai_ledger ORDER BY id";
const PRODUCTS: &str = "SELECT id, account, kind, daily_allowance, credits, remaining, starts, ends, expires, \
                        used_day, used FROM xai_products ORDER BY id";
const PROVIDERS: &str = "SELECT id, name, protocol, base_url, models, level FROM xai_providers ORDER BY id";
const UPKEYS: &str = "SELECT provider, id, sealed, weight FROM xai_upstream_keys ORDER BY provider, id";
const CATALOG_STAMP: &str = "SELECT epoch, version FROM xai_catalog WHERE id = 1";
const BUMP_CATALOG: &str = "UPDATE xai_catalog SET version = version + 1 WHERE id = 1";

fn product_row(r: ProductT) -> Result<ProductRow, StoreError> {
    let (id, account, kind, daily, credits, remaining, starts, ends, expires, used_day, used) = r;
    Ok(ProductRow {
        id: uid(id)?,
        account: AccountId(uid(account)?),
        kind: parse_product_kind(&kind)?,
        daily_allowance: daily.map(Micros),
        credits: credits.map(Micros),
        remaining: Micros(remaining),
        starts: parse_day(starts)?,
        ends: parse_day(ends)?,
        expires: parse_day(expires)?,
        used_day: parse_day(used_day)?,
        used: Micros(used),
    })
}

/// The catalog as stored: accounts, virtual keys (digests), providers and their upstream keys (still sealed),
/// tagged with the database's epoch and the catalog version they were read at. This is what the Redis tier
/// caches ([`CatalogCache`]): no opened secret is ever in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatalogRows {
    /// The database's epoch (random, set once by migration 7).
    pub epoch: String,
    /// The catalog version read with these rows.
    pub version: i64,
    accounts: Vec<AccountT>,
    keys: Vec<KeyT>,
    providers: Vec<ProviderT>,
    upstream_keys: Vec<UpKeyT>,
}

/// Where [`SqlStore::load_live`] took the catalog from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogSource {
    /// The Redis tier held the database's current version.
    Redis,
    /// The database (no Redis tier, or its copy was missing, older or unreadable).
    Database,
}

impl SqlStore {
    /// The audit trail, newest first: of `accounts` when given (an empty list matches nothing), at most `limit`.
    pub async fn audit(&self, accounts: Option<&[AccountId]>, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        type AuditT = (i64, i64, String, String, Option<i64>, String);
        let ids: Vec<i64> = accounts.unwrap_or_default().iter().map(|a| id64(a.0)).collect::<Result<_, _>>()?;
        let filter = match accounts {
            None => String::new(),
            Some(_) if ids.is_empty() => return Ok(vec![]),
            Some(_) => format!("WHERE account IN ({})", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
        };
        let sql = format!(
            "SELECT id, time, actor, action, account, detail FROM xai_audit {filter} ORDER BY id DESC LIMIT $1"
        );
        let rows: Vec<AuditT> = on_db!(&self.db, |p| sqlx::query_as(&sql).bind(limit).fetch_all(p).await?);
        rows.into_iter()
            .map(|(id, time, actor, action, account, detail)| {
                Ok(AuditEntry {
                    id: uid(id)?,
                    time: from_us(time),
                    actor,
                    action,
                    account: account.map(uid).transpose()?.map(AccountId),
                    detail: serde_json::from_str(&detail).map_err(|e| invalid(format!("audit entry {id}: {e}")))?,
                })
            })
            .collect()
    }
}

fn invalid(s: String) -> StoreError {
    StoreError::Invalid(s)
}

fn id64(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| invalid(format!("id {id} does not fit a BIGINT")))
}

fn uid(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| invalid(format!("negative id {v}")))
}

/// Unix microseconds (negative before 1970).
fn to_us(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |v| -v),
    }
}

fn from_us(v: i64) -> SystemTime {
    let d = Duration::from_micros(v.unsigned_abs());
    if v >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

fn policy_text(p: &Policy) -> String {
    serde_json::Value::Object(policy_json(p)).to_string()
}

fn parse_policy(s: &str) -> Result<Policy, StoreError> {
    let patch: PolicyPatch = serde_json::from_str(s).map_err(|e| invalid(format!("malformed stored policy: {e}")))?;
    let mut p = Policy::default();
    patch.apply(&mut p).map_err(|e| invalid(format!("stored policy: {e}")))?;
    Ok(p)
}

fn parse_day(s: Option<String>) -> Result<Option<Day>, StoreError> {
    s.map(|s| Day::from_str(&s).map_err(|_| invalid(format!("malformed day {s:?}")))).transpose()
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Disabled => "disabled",
    }
}

fn parse_status(s: &str) -> Result<Status, StoreError> {
    match s {
        "active" => Ok(Status::Active),
        "disabled" => Ok(Status::Disabled),
        _ => Err(invalid(format!("unknown status {s:?}"))),
    }
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn parse_role(s: &str) -> Result<Role, StoreError> {
    match s {
        "owner" => Ok(Role::Owner),
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        _ => Err(invalid(format!("unknown role {s:?}"))),
    }
}

fn entry_kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Allocate => "allocate",
        EntryKind::Reclaim => "reclaim",
        EntryKind::Mint => "mint",
        EntryKind::Burn => "burn",
        EntryKind::Spend => "spend",
    }
}

fn parse_entry_kind(s: &str) -> Result<EntryKind, StoreError> {
    Ok(match s {
        "allocate" => EntryKind::Allocate,
        "reclaim" => EntryKind::Reclaim,
        "mint" => EntryKind::Mint,
        "burn" => EntryKind::Burn,
        "spend" => EntryKind::Spend,
        _ => return Err(invalid(format!("unknown ledger kind {s:?}"))),
    })
}

fn product_kind_str(k: ProductKind) -> &'static str {
    match k {
        ProductKind::Subscription => "subscription",
        ProductKind::Addon => "addon",
        ProductKind::Card => "card",
    }
}

fn parse_product_kind(s: &str) -> Result<ProductKind, StoreError> {
    Ok(match s {
        "subscription" => ProductKind::Subscription,
        "addon" => ProductKind::Addon,
        "card" => ProductKind::Card,
        _ => return Err(invalid(format!("unknown product kind {s:?}"))),
    })
}

/// Sets each account's `path` (names from the root, `/`-separated), as the control plane does.
fn fill_paths(accounts: &mut [Account]) {
    let by_id: HashMap<AccountId, (Option<AccountId>, Arc<str>)> =
        accounts.iter().map(|a| (a.id, (a.parent, a.name.clone()))).collect();
    for a in accounts.iter_mut() {
        let mut parts = Vec::new();
        let mut cur = Some(a.id);
        while let Some(c) = cur {
            let Some((parent, name)) = by_id.get(&c) else { break };
            parts.push(name.clone());
            cur = *parent;
            if parts.len() > 256 {
                break; // a cycle; the catalog check reports it
            }
        }
        parts.reverse();
        a.path = parts.join("/").into();
    }
}

#[cfg(test)]
mod tests;
