//! Durable state for the server: the control plane saved to SQL (SQLite under the data dir by default, Postgres
//! with `--database-url`), upstream keys sealed under the master key, usage written through a [`DurableMeter`],
//! and limits in Redis with `--redis-url`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use xai_core::control::{Changes, ControlPlane, Product, Saved};
use xai_core::memory::{Catalog, InMemoryMeter};
use xai_core::routing::Provider;
use xai_core::{Meter, Micros};
use xai_store::secrets::MasterKey;
use xai_store::sql::{Change, ProductRow, SqlStore};
use xai_store::usage::{DurableConfig, DurableMeter, UsageDb};

/// The opened state.
pub struct Durable {
    /// The database.
    pub sql: Arc<SqlStore>,
    /// The control plane, restored and merged with the configuration.
    pub control: Arc<ControlPlane>,
}

/// The database URL: the flag or config, else SQLite in the data dir.
pub fn database_url(flag: Option<&str>, config: Option<&str>, data_dir: &Path) -> String {
    flag.or(config)
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("xai.db").display()))
}

/// A URL fit for a log line: the password, if any, is hidden.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s && url[s + 3..at].contains(':') => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn row_of(p: &Product) -> ProductRow {
    let (used_day, used) = p.used_on();
    ProductRow {
        id: p.id,
        account: p.account,
        kind: p.kind,
        daily_allowance: p.daily_allowance,
        credits: p.credits,
        remaining: p.remaining,
        starts: p.starts,
        ends: p.ends,
        expires: p.expires,
        used_day: Some(used_day),
        used,
    }
}

/// A stored product row as the control plane's product.
pub fn product_of(r: &ProductRow) -> Product {
    let used = (r.used_day.unwrap_or_else(xai_core::day::Day::today), r.used);
    Product::restore(
        r.id,
        r.account,
        r.kind,
        r.daily_allowance,
        r.credits,
        r.remaining,
        (r.starts, r.ends, r.expires),
        used,
    )
}

/// Saves what changed, in one transaction; on failure the changes are queued again.
pub async fn save(sql: &SqlStore, control: &ControlPlane, changes: Changes) -> Result<(), String> {
    if changes.is_empty() {
        return Ok(());
    }
    let rows: Vec<ProductRow> = changes.products.iter().map(row_of).collect();
    let mut list: Vec<Change<'_>> = Vec::new();
    // Balances and product counters are saved as movements: instances on one database add up.
    // An account edited here is saved whole (a catalog change); one that only moved money, as its movement alone.
    list.extend(changes.accounts.iter().filter_map(|a| {
        let delta = changes.balance_deltas.get(&a.id).copied().unwrap_or(0);
        if changes.edited.contains(&a.id) {
            Some(Change::AccountMoved(a, delta))
        } else {
            (delta != 0).then_some(Change::Balance(a.id, delta))
        }
    }));
    list.extend(changes.keys.iter().map(|k| Change::Key {
        key: &k.key,
        name: k.name.as_deref(),
        created_at: k.created_at,
    }));
    list.extend(changes.entries.iter().map(Change::Ledger));
    list.extend(rows.iter().map(|r| {
        let (remaining, used) = changes.product_deltas.get(&r.id).copied().unwrap_or((0, 0));
        Change::ProductMoved(r, remaining, used)
    }));
    list.extend(changes.audit.iter().map(Change::Audit));
    match sql.save(&list).await {
        Ok(()) => Ok(()),
        Err(e) => {
            control.requeue(&changes);
            Err(e.to_string())
        }
    }
}

/// Whether a stored provider is exactly the configured one (every field, the keys' secrets and weights included).
fn same_provider(a: &Provider, b: &Provider) -> bool {
    fn models(p: &Provider) -> Vec<&str> {
        p.models.iter().map(|m| m.as_str()).collect()
    }
    a.id == b.id
        && a.name == b.name
        && a.protocol == b.protocol
        && a.base_url == b.base_url
        && a.level == b.level
        && models(a) == models(b)
        && a.keys.len() == b.keys.len()
        && a.keys.iter().zip(&b.keys).all(|(x, y)| x.id == y.id && x.weight == y.weight && x.secret == y.secret)
}

/// Opens the database, restores the control plane and applies the configuration (idempotently: missing accounts
/// and keys are added; providers, switch-over and prices come from the file).
pub async fn open(url: &str, data_dir: &Path, config: Catalog) -> Result<Durable, String> {
    let master = MasterKey::load(data_dir).map_err(|e| e.to_string())?;
    let sql = SqlStore::connect(url, master).await.map_err(|e| format!("database {}: {e}", redact_url(url)))?;
    let snap = sql.load().await.map_err(|e| format!("loading state: {e}"))?;
    // Providers follow the file: save those that differ from the stored ones (keys sealed), drop the ones it no
    // longer lists. An unchanged file writes nothing, so a start does not re-seal every key or make the other
    // instances' cached catalog out of date.
    let mut list: Vec<Change<'_>> = config
        .providers
        .iter()
        .filter(|p| !snap.catalog.providers.iter().any(|old| same_provider(old, p)))
        .map(|p| Change::Provider(p))
        .collect();
    for old in &snap.catalog.providers {
        if !config.providers.iter().any(|p| p.id == old.id) {
            list.push(Change::DeleteProvider(old.id));
        }
    }
    sql.save(&list).await.map_err(|e| format!("saving providers: {e}"))?;
    let saved = Saved {
        catalog: Catalog {
            accounts: snap.catalog.accounts,
            keys: snap.catalog.keys,
            providers: config.providers.clone(),
            switch_over: config.switch_over.clone(),
            prices: config.prices.clone(),
        },
        key_meta: snap.key_meta.iter().map(|m| (m.id, m.name.clone(), m.created_at)).collect(),
        ledger: snap.ledger,
        products: snap.products.iter().map(product_of).collect(),
        // The audit trail stays in the database (`GET /admin/v1/audit` reads it there).
        audit: vec![],
    };
    let control = Arc::new(ControlPlane::restore(saved).map_err(|e| format!("restoring state: {e}"))?);
    control.import(&config).map_err(|e| format!("applying the configuration: {e}"))?;
    save(&sql, &control, control.take_changes()).await.map_err(|e| format!("saving the configuration: {e}"))?;
    Ok(Durable { sql: Arc::new(sql), control })
}

/// Saves the control plane's changes every `every` (spend, balances, product counters from traffic).
pub fn spawn_saver(sql: Arc<SqlStore>, control: Arc<ControlPlane>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match save(&sql, &control, control.take_changes()).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("state saves recovered");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "saving state failed; retrying every second");
                }
                Err(_) => {}
            }
        }
    })
}

/// The usage writer over the same database.
pub async fn usage_meter(sql: &SqlStore, inner: Arc<dyn Meter>, data_dir: &Path) -> Result<DurableMeter, String> {
    let db = sql
        .sqlite_pool()
        .cloned()
        .map(UsageDb::Sqlite)
        .or_else(|| sql.postgres_pool().cloned().map(UsageDb::Postgres))
        .ok_or("no database pool for usage")?;
    DurableMeter::start(inner, db, data_dir.join("spool").join("usage"), DurableConfig::default())
        .await
        .map_err(|e| format!("usage writer: {e}"))
}

/// The limits meter and this instance's live counters (what `today` reports).
pub struct Limits {
    /// Admission and settlement.
    pub meter: Arc<dyn Meter>,
    /// Live counters of this instance.
    pub local: Arc<InMemoryMeter>,
    /// The Redis meter, when configured (for metrics).
    pub redis: Option<Arc<xai_store::redis_limits::RedisMeter>>,
}

/// Limits: cluster-wide in Redis when a URL is given (falling back to this instance's counters while Redis is
/// unreachable), else per instance.
pub fn limits(redis_url: Option<&str>, prefix: &str) -> Result<Limits, String> {
    let local = Arc::new(InMemoryMeter::default());
    match redis_url {
        Some(url) => {
            let m = Arc::new(
                xai_store::redis_limits::RedisMeter::connect(url, prefix, local.clone())
                    .map_err(|e| format!("redis {}: {e}", redact_url(url)))?,
            );
            Ok(Limits { meter: m.clone(), local, redis: Some(m) })
        }
        None => Ok(Limits { meter: local.clone(), local, redis: None }),
    }
}

/// Balance shown in summaries.
pub fn total_credits(control: &ControlPlane) -> Micros {
    Micros(control.total_balance().clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// The configuration file's `[pricing]`, kept at start: prices deleted through the API fall back to them.
static FILE_PRICES: std::sync::OnceLock<std::collections::HashMap<std::sync::Arc<str>, xai_core::Price>> =
    std::sync::OnceLock::new();

/// Remembers the configuration file's prices (once, at start).
pub fn set_file_prices(prices: std::collections::HashMap<std::sync::Arc<str>, xai_core::Price>) {
    let _ = FILE_PRICES.set(prices);
}

/// Applies the prices: the configuration's, overridden by those set through the admin API (a price deleted through
/// the API falls back to the file's, or is gone).
pub async fn apply_saved_prices(sql: &SqlStore, control: &ControlPlane) {
    match sql.load_prices().await {
        Ok(saved) => {
            let mut prices = FILE_PRICES.get().cloned().unwrap_or_default();
            prices.extend(saved.into_iter().map(|(m, p)| (std::sync::Arc::from(m.as_str()), p)));
            let current = control.prices();
            let same = current.len() == prices.len() && prices.iter().all(|(m, p)| current.get(&**m) == Some(p));
            if !same && let Err(e) = control.replace_prices(prices) {
                tracing::warn!(error = %e, "the saved prices were not applied");
            }
        }
        Err(e) => tracing::warn!(error = %e, "loading saved prices failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/xai"), "postgres://app:***@db:5432/xai");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("postgres://postgres@db/x"), "postgres://postgres@db/x");
        let d = database_url(None, None, Path::new("/tmp/x"));
        assert_eq!(d, "sqlite:///tmp/x/xai.db?mode=rwc");
        assert_eq!(database_url(Some("postgres://a/b"), Some("sqlite://c"), Path::new("/")), "postgres://a/b");
    }

    fn config(key: &str) -> Catalog {
        let src = format!(
            "[[providers]]\nname = \"up\"\nprotocol = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             keys = [\"{key}\", \"sk-two\"]\nmodels = [\"gpt-*\"]\n"
        );
        crate::config::Config::parse(&src, &|_| None).unwrap().catalog()
    }

    /// A start with the same providers writes none of them (no re-sealing, no catalog version raised, so other
    /// instances' cached catalog stays current); a changed key is saved and used.
    #[tokio::test]
    async fn a_start_saves_only_providers_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let url = database_url(None, None, dir.path());
        let first = open(&url, dir.path(), config("sk-one")).await.unwrap();
        let stamp = first.sql.catalog_stamp().await.unwrap();
        let sealed = |sql: Arc<SqlStore>| async move {
            let p = sql.sqlite_pool().unwrap().clone();
            sqlx::query_scalar::<_, String>("SELECT sealed FROM xai_upstream_keys ORDER BY id")
                .fetch_all(&p)
                .await
                .unwrap()
        };
        let before = sealed(first.sql.clone()).await;
        first.sql.close().await;

        let again = open(&url, dir.path(), config("sk-one")).await.unwrap();
        assert_eq!(again.sql.catalog_stamp().await.unwrap(), stamp, "an unchanged file changes nothing");
        assert_eq!(sealed(again.sql.clone()).await, before, "the keys were not sealed again");
        again.sql.close().await;

        let changed = open(&url, dir.path(), config("sk-rotated")).await.unwrap();
        assert!(changed.sql.catalog_stamp().await.unwrap().1 > stamp.1, "a rotated key is a catalog change");
        let loaded = changed.sql.load().await.unwrap();
        let secrets: Vec<String> =
            loaded.catalog.providers[0].keys.iter().map(|k| k.secret.expose().to_string()).collect();
        assert_eq!(secrets, ["sk-rotated", "sk-two"]);
        changed.sql.close().await;
    }
}
