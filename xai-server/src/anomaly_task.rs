//! Anomaly scans (docs/anomalies.md): every `[anomalies] scan_every_secs`, the usage series of every account are
//! read from the database and evaluated ([`xai_core::anomaly`]); an account flagged while its effective policy
//! sets `freeze_on_anomaly` is disabled (exactly as `DELETE /admin/v1/accounts/{id}`) with an audit entry that
//! carries the numbers, then the change is saved and announced like an admin change.
//!
//! Idempotent: an account already disabled is left alone and gets no new entry. Several instances may scan the
//! same database; the first to save wins, the others see the account disabled after the change feed reloads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use xai_core::AccountId;
use xai_core::anomaly::{AnomalyConfig, Flag, evaluate_all};
use xai_core::control::{ControlPlane, Scope};
use xai_core::day::Day;
use xai_store::sql::SqlStore;
use xai_store::usage::UsageDb;

use crate::feed::Feed;

/// The usage database behind the control-plane store (the same pool).
pub fn usage_db(sql: &SqlStore) -> Option<UsageDb> {
    sql.sqlite_pool().cloned().map(UsageDb::Sqlite).or_else(|| sql.postgres_pool().cloned().map(UsageDb::Postgres))
}

/// The current flags of every account that still exists, with its current path.
pub async fn current_flags(
    control: &ControlPlane,
    db: &UsageDb,
    cfg: &AnomalyConfig,
    now: SystemTime,
) -> Result<Vec<Flag>, sqlx::Error> {
    let mut series = db.anomaly_series(Day::of(now), now, cfg.history_days).await?;
    let paths: HashMap<AccountId, String> =
        control.accounts(Scope::Root).into_iter().map(|v| (v.account.id, v.account.path.to_string())).collect();
    series.retain_mut(|s| match paths.get(&s.account) {
        Some(p) => {
            s.path.clone_from(p);
            true
        }
        None => false,
    });
    Ok(evaluate_all(cfg, &series))
}

/// One scan: freezes the flagged accounts whose policy asks for it. Returns how many were frozen now.
pub async fn scan_once(
    control: &ControlPlane,
    sql: &SqlStore,
    feed: &Feed,
    instance: &str,
    cfg: &AnomalyConfig,
    now: SystemTime,
) -> Result<usize, String> {
    let db = usage_db(sql).ok_or("no database pool for usage")?;
    let flags = current_flags(control, &db, cfg, now).await.map_err(|e| format!("reading usage: {e}"))?;
    let mut by_account: BTreeMap<AccountId, Vec<Flag>> = BTreeMap::new();
    for f in flags {
        by_account.entry(f.account).or_default().push(f);
    }
    let mut frozen = 0;
    for (id, flags) in by_account {
        if !control.freezes_on_anomaly(id) {
            continue;
        }
        match control.freeze_for_anomaly(id, &flags) {
            Ok(true) => {
                frozen += 1;
                let rules: Vec<&str> = flags.iter().map(|f| f.rule.as_str()).collect();
                tracing::warn!(account = %id, path = %flags[0].path, rules = ?rules, "account frozen by anomaly detection");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(account = %id, error = %e, "freezing a flagged account failed"),
        }
    }
    if frozen > 0 {
        crate::durable::save(sql, control, control.take_changes()).await?;
        feed.publish(instance).await;
    }
    Ok(frozen)
}

/// Scans every `cfg.scan_every_secs` (at least one second) until aborted.
pub fn spawn(
    sql: Arc<SqlStore>,
    control: Arc<ControlPlane>,
    feed: Feed,
    instance: String,
    cfg: AnomalyConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(cfg.scan_every_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match scan_once(&control, &sql, &feed, &instance, &cfg, SystemTime::now()).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("anomaly scans recovered");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "anomaly scan failed; retrying at the next interval");
                }
                Err(_) => {}
            }
        }
    })
}
