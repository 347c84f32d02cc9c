//! `GET /admin/v1/anomalies` and `GET /admin/v1/audit` (docs/anomalies.md), scoped like the rest of the admin API.
//!
//! Anomalies are computed on each request from the usage database with the `[anomalies]` thresholds. In memory
//! mode (`--database-url memory`) there is no usage history: the list is empty and a `note` says why.

use std::sync::OnceLock;
use std::time::SystemTime;

use http::{Response, StatusCode, Uri};
use xai_core::anomaly::AnomalyConfig;
use xai_core::control::{AdminError, Scope};
use xai_core::policy::Status;
use xai_core::usage::rfc3339;
use xai_core::{AccountId, Body};

use crate::admin::{Admin, json};

static CONFIG: OnceLock<AnomalyConfig> = OnceLock::new();

/// Sets the thresholds the endpoint uses (once, at start; the defaults otherwise). A process-wide setting so the
/// admin API's state stays as it is.
pub fn configure(cfg: AnomalyConfig) {
    let _ = CONFIG.set(cfg);
}

fn config() -> &'static AnomalyConfig {
    CONFIG.get_or_init(AnomalyConfig::default)
}

fn query<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `?account=<id>`, checked against the scope.
fn account_filter(admin: &Admin, scope: Scope, uri: &Uri) -> Result<Option<AccountId>, AdminError> {
    let Some(v) = query(uri, "account") else { return Ok(None) };
    let id = v.parse().map_err(|_| AdminError::BadRequest(format!("account: {v:?} is not an account id")))?;
    admin.control.account(scope, AccountId(id))?;
    Ok(Some(AccountId(id)))
}

/// `GET /admin/v1/anomalies[?account=<id>]`
pub async fn anomalies(admin: &Admin, scope: Scope, uri: &Uri) -> Result<Response<Body>, AdminError> {
    let only = account_filter(admin, scope, uri)?;
    let cfg = config();
    let now = SystemTime::now();
    let Some(db) = admin.sql.as_deref().and_then(crate::anomaly_task::usage_db) else {
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "anomalies": [],
                "note": "anomaly detection reads the usage history in the database; this instance keeps state in memory",
            }),
        ));
    };
    let flags = crate::anomaly_task::current_flags(&admin.control, &db, cfg, now).await.map_err(|e| {
        tracing::warn!(error = %e, "reading usage for anomalies failed");
        AdminError::Invalid("anomalies are unavailable: the database did not answer".into())
    })?;
    let list: Vec<serde_json::Value> = flags
        .into_iter()
        .filter(|f| only.is_none_or(|a| f.account == a))
        .filter_map(|f| {
            let view = admin.control.account(scope, f.account).ok()?;
            let mut v = serde_json::to_value(&f).ok()?;
            v["account_status"] = serde_json::to_value(view.account.status).unwrap_or_default();
            v["frozen"] = (view.account.status == Status::Disabled).into();
            v["freeze_on_anomaly"] = admin.control.freezes_on_anomaly(f.account).into();
            Some(v)
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "generated_at": rfc3339(now),
            "anomalies": list,
            "rules": {
                "threshold": cfg.threshold, "history_days": cfg.history_days,
                "min_history_days": cfg.min_history_days, "hourly_factor": cfg.hourly_factor,
            },
        }),
    ))
}

/// `GET /admin/v1/audit[?account=<id>][&limit=N]`, newest first.
pub async fn audit(admin: &Admin, scope: Scope, uri: &Uri) -> Result<Response<Body>, AdminError> {
    let only = account_filter(admin, scope, uri)?;
    let limit = match query(uri, "limit") {
        Some(v) => v.parse::<usize>().map_err(|_| AdminError::BadRequest(format!("limit: {v:?} is not a number")))?,
        None => 100,
    }
    .min(1000);
    let entries = match &admin.sql {
        Some(sql) => {
            let ids: Option<Vec<AccountId>> = match (only, scope) {
                (Some(a), _) => Some(vec![a]),
                (None, Scope::Root) => None,
                (None, Scope::Subtree(_)) => {
                    Some(admin.control.accounts(scope).into_iter().map(|v| v.account.id).collect())
                }
            };
            sql.audit(ids.as_deref(), limit as i64).await.map_err(|e| {
                tracing::warn!(error = %e, "reading the audit trail failed");
                AdminError::Invalid("the audit trail is unavailable: the database did not answer".into())
            })?
        }
        None => admin.control.audit(scope, only, limit)?,
    };
    Ok(json(StatusCode::OK, &serde_json::json!({ "entries": entries })))
}
