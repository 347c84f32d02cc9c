//! Reading usage back: the most recent records, in the JSON shape of the admin API's usage view.

use serde_json::{Value, json};
use sqlx::Row;
use xai_core::Micros;

use crate::usage::UsageDb;

const COLUMNS: &str = "request_id, time, account, account_path, key_id, inbound_protocol, provider, upstream_key, \
requested_model, upstream_model, level, status, CAST(http_status AS BIGINT) AS http_status, attempts, latency_ms, \
ttft_ms, prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cache_write_tokens, images, searches, cost";

macro_rules! to_json {
    ($r:expr, $estimated:expr) => {{
        let r = $r;
        let s = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten();
        let i = |c: &str| r.try_get::<Option<i64>, _>(c).ok().flatten();
        let attempts: Value = s("attempts").and_then(|a| serde_json::from_str(&a).ok()).unwrap_or(Value::Array(vec![]));
        json!({
            "request_id": s("request_id"), "time": s("time"), "account": i("account"), "account_path": s("account_path"),
            "key": i("key_id"), "inbound_protocol": s("inbound_protocol"), "provider": s("provider"),
            "upstream_key": i("upstream_key"), "requested_model": s("requested_model"),
            "upstream_model": s("upstream_model"), "level": i("level"), "status": s("status"),
            "http_status": i("http_status"), "attempts": attempts, "latency_ms": i("latency_ms"), "ttft_ms": i("ttft_ms"),
            "prompt_tokens": i("prompt_tokens"), "completion_tokens": i("completion_tokens"),
            "reasoning_tokens": i("reasoning_tokens"), "cached_tokens": i("cached_tokens"),
            "cache_write_tokens": i("cache_write_tokens"), "images": i("images"), "searches": i("searches"),
            "cost": Micros(i("cost").unwrap_or(0)).to_string(), "estimated": $estimated,
        })
    }};
}

impl UsageDb {
    /// The last `limit` records (oldest first), optionally only those of the accounts under `path_prefix`
    /// (the account itself and its subtree).
    pub async fn recent(&self, limit: i64, path_prefix: Option<&str>) -> Result<Vec<Value>, sqlx::Error> {
        let filter = if path_prefix.is_some() { "WHERE account_path = $1 OR account_path LIKE $2" } else { "" };
        let lim = if path_prefix.is_some() { "$3" } else { "$1" };
        let like = path_prefix.map(|p| format!("{}/%", p.replace('%', "\\%").replace('_', "\\_")));
        let mut rows: Vec<Value> = match self {
            UsageDb::Sqlite(pool) => {
                let sql = format!("SELECT {COLUMNS}, estimated FROM usage {filter} ORDER BY id DESC LIMIT {lim}")
                    .replace("LIKE $2", "LIKE $2 ESCAPE '\\'");
                let mut q = sqlx::query(&sql);
                if let Some(p) = path_prefix {
                    q = q.bind(p.to_string()).bind(like.clone());
                }
                q.bind(limit)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| to_json!(r, r.try_get::<i64, _>("estimated").unwrap_or(0) != 0))
                    .collect()
            }
            UsageDb::Postgres(pool) => {
                let sql = format!("SELECT {COLUMNS}, estimated FROM usage {filter} ORDER BY id DESC LIMIT {lim}");
                let mut q = sqlx::query(&sql);
                if let Some(p) = path_prefix {
                    q = q.bind(p.to_string()).bind(like.clone());
                }
                q.bind(limit)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| to_json!(r, r.try_get::<bool, _>("estimated").unwrap_or(false)))
                    .collect()
            }
        };
        rows.reverse();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageRow;
    use std::sync::Arc;
    use std::time::SystemTime;
    use xai_core::usage::{RecordStatus, Usage, UsageRecord};
    use xai_core::{AccountId, KeyId, Protocol, RequestId};

    fn record(path: &str, cost: i64) -> UsageRecord {
        UsageRecord {
            request_id: RequestId::generate(),
            time: SystemTime::now(),
            account: AccountId(1),
            account_path: path.into(),
            chain: Arc::from(vec![AccountId(1)]),
            key: KeyId(1),
            inbound_protocol: Protocol::OpenAiChat,
            provider: Some("p".into()),
            upstream_key: None,
            requested_model: "gpt-4o".into(),
            upstream_model: Some("gpt-4o".into()),
            level: None,
            status: RecordStatus::Ok,
            http_status: 200,
            attempts: vec![],
            latency_ms: 3,
            ttft_ms: Some(1),
            usage: Usage { prompt_tokens: 10, completion_tokens: 5, ..Usage::default() },
            cost: Micros(cost),
            estimated: false,
        }
    }

    #[tokio::test]
    async fn recent_records_by_subtree() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let db = UsageDb::Sqlite(pool);
        db.ensure_schema().await.unwrap();
        let rows: Vec<UsageRow> =
            [record("acme", 1), record("acme/r", 2_500_000), record("acmex", 3), record("other", 4)]
                .iter()
                .map(UsageRow::from)
                .collect();
        db.insert(&rows).await.unwrap();
        let sub = db.recent(10, Some("acme")).await.unwrap();
        let paths: Vec<&str> = sub.iter().map(|r| r["account_path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["acme", "acme/r"], "the account and its subtree, oldest first; not acmex");
        assert_eq!(sub[1]["cost"], "2.5");
        assert_eq!((sub[0]["prompt_tokens"].as_i64(), sub[0]["estimated"].as_bool()), (Some(10), Some(false)));
        let last = db.recent(1, None).await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0]["account_path"], "other");
    }
}
