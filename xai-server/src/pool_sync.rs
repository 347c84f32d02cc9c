//! Upstream key health shared by the instances of a cluster: when one instance sees a key rate limited (429 with
//! its `retry-after`), out of quota or rejected (401/403), every other instance cools or disables the same key
//! within milliseconds, instead of each finding out by spending a request on it.
//!
//! Announcements travel on the change feed's transport: Redis pub/sub channel `<prefix>pool`, or Postgres
//! `NOTIFY xai_pool` without Redis. Payload: `<instance> <key id> <outcome> <milliseconds>`. Transient failures
//! (timeouts, connection errors, 5xx) are not shared: they may be local to one instance's network path. An operator
//! enabling a key again (`POST /admin/v1/upstream-keys/{id}/enable`) is announced as `enabled`.
//!
//! With a database, a key an upstream rejected is remembered by fingerprint (`xai_disabled_upstream_keys`) and
//! stays disabled across restarts until an operator enables it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use xai_core::memory::InMemoryKeyPool;
use xai_core::traits::{Exhausted, KeyPool, Lease};
use xai_core::{Level, Outcome, UpstreamKeyId};

use xai_store::sql::SqlStore;

use crate::feed::Feed;

const PG_CHANNEL: &str = "xai_pool";
/// Announcements waiting to be published; beyond it they are dropped (each instance still learns by itself).
const QUEUE: usize = 1024;

/// A key pool whose key-level outcomes are announced to, and received from, the other instances.
#[derive(Debug)]
pub struct SharedPool {
    inner: Arc<InMemoryKeyPool>,
    tx: Option<mpsc::Sender<(UpstreamKeyId, Option<Outcome>)>>,
    sql: Option<Arc<SqlStore>>,
}

/// The outcomes worth telling other instances: they belong to the key, not to this instance's network.
fn shareable(o: Outcome) -> bool {
    matches!(o, Outcome::RateLimited { .. } | Outcome::QuotaExhausted | Outcome::AuthRejected)
}

/// `None`: the key was enabled again.
fn encode(instance: &str, key: UpstreamKeyId, o: Option<Outcome>) -> String {
    let ms = match o {
        Some(Outcome::RateLimited { retry_after_ms }) => retry_after_ms,
        _ => 0,
    };
    format!("{instance} {} {} {ms}", key.0, o.map_or("enabled", Outcome::as_str))
}

/// Parses an announcement (`None` outcome: enabled again); `None` for malformed ones or this instance's own.
fn decode(me: &str, payload: &str) -> Option<(UpstreamKeyId, Option<Outcome>)> {
    let mut it = payload.split(' ');
    let (from, key, kind, ms) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if from == me || it.next().is_some() {
        return None;
    }
    let key = UpstreamKeyId(key.parse().ok()?);
    let outcome = match kind {
        "rate_limited" => Some(Outcome::RateLimited { retry_after_ms: ms.parse::<u64>().ok()?.min(3_600_000) }),
        "quota_exhausted" => Some(Outcome::QuotaExhausted),
        "auth_rejected" => Some(Outcome::AuthRejected),
        "enabled" => None,
        _ => return None,
    };
    Some((key, outcome))
}

impl SharedPool {
    /// Wraps `inner`; with a feed, spawns the publisher and the listener (within a Tokio runtime).
    pub fn new(
        inner: Arc<InMemoryKeyPool>,
        feed: &Feed,
        prefix: &str,
        instance: &str,
        sql: Option<Arc<SqlStore>>,
    ) -> Self {
        let target = match feed {
            Feed::Redis { client, .. } => Target::Redis(client.clone(), format!("{prefix}pool")),
            Feed::Postgres(pool) => Target::Postgres(pool.clone()),
            Feed::None => return Self { inner, tx: None, sql },
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish(target.clone(), instance.to_string(), rx));
        tokio::spawn(listen(target, instance.to_string(), inner.clone()));
        Self { inner, tx: Some(tx), sql }
    }

    /// Disables the keys remembered as rejected (at start); returns how many.
    pub async fn restore(&self) -> usize {
        let Some(sql) = &self.sql else { return 0 };
        let stored = match sql.disabled_keys().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reading the disabled upstream keys failed");
                return 0;
            }
        };
        let by_print = self.inner.fingerprints();
        let mut n = 0;
        for (print, id) in by_print {
            if stored.contains(&print.to_hex()) && self.inner.set_disabled(id, true) {
                tracing::warn!(upstream_key = %id, "upstream key stays disabled: an upstream rejected it before");
                n += 1;
            }
        }
        n
    }

    /// Enables a key again on every instance and forgets that it was rejected; `false` for an unknown id.
    pub async fn enable(&self, id: UpstreamKeyId) -> Result<bool, String> {
        if !self.inner.set_disabled(id, false) {
            return Ok(false);
        }
        if let (Some(sql), Some(print)) = (&self.sql, self.inner.fingerprint(id)) {
            sql.save_key_disabled(&print.to_hex(), false).await.map_err(|e| e.to_string())?;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.try_send((id, None));
        }
        Ok(true)
    }
}

impl KeyPool for SharedPool {
    fn pick(&self, level: Level, model: &str, exclude: &[UpstreamKeyId]) -> Result<Lease, Exhausted> {
        self.inner.pick(level, model, exclude)
    }

    fn report(&self, key: UpstreamKeyId, outcome: Outcome) {
        self.inner.report(key, outcome);
        if outcome == Outcome::AuthRejected
            && let (Some(sql), Some(print)) = (&self.sql, self.inner.fingerprint(key))
        {
            let sql = sql.clone();
            tokio::spawn(async move {
                if let Err(e) = sql.save_key_disabled(&print.to_hex(), true).await {
                    tracing::warn!(upstream_key = %key, error = %e, "remembering a disabled upstream key failed");
                }
            });
        }
        if shareable(outcome)
            && let Some(tx) = &self.tx
        {
            let _ = tx.try_send((key, Some(outcome)));
        }
    }
}

#[derive(Clone)]
enum Target {
    Redis(redis::Client, String),
    Postgres(sqlx::PgPool),
}

async fn publish(target: Target, instance: String, mut rx: mpsc::Receiver<(UpstreamKeyId, Option<Outcome>)>) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    while let Some((key, outcome)) = rx.recv().await {
        let payload = encode(&instance, key, outcome);
        let r = match &target {
            Target::Redis(client, channel) => {
                if conn.is_none() {
                    conn = client.get_multiplexed_async_connection().await.ok();
                }
                match conn.as_mut() {
                    Some(c) => {
                        redis::cmd("PUBLISH").arg(channel).arg(&payload).query_async::<i64>(c).await.map(drop).map_err(
                            |e| {
                                conn = None;
                                e.to_string()
                            },
                        )
                    }
                    None => Err("no connection".into()),
                }
            }
            Target::Postgres(pool) => sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PG_CHANNEL)
                .bind(&payload)
                .execute(pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "announcing an upstream key's health failed");
        }
    }
}

async fn listen(target: Target, instance: String, pool: Arc<InMemoryKeyPool>) {
    loop {
        let r: Result<(), String> = async {
            match &target {
                Target::Redis(client, channel) => {
                    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
                    pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        apply(&pool, &instance, &payload);
                    }
                    Err("subscription closed".into())
                }
                Target::Postgres(pg) => {
                    let mut l = sqlx::postgres::PgListener::connect_with(pg).await.map_err(|e| e.to_string())?;
                    l.listen(PG_CHANNEL).await.map_err(|e| e.to_string())?;
                    loop {
                        let n = l.recv().await.map_err(|e| e.to_string())?;
                        apply(&pool, &instance, n.payload());
                    }
                }
            }
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "key health feed interrupted; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn apply(pool: &InMemoryKeyPool, me: &str, payload: &str) {
    match decode(me, payload) {
        Some((key, Some(outcome))) => {
            tracing::debug!(upstream_key = %key, outcome = outcome.as_str(), "another instance reported an upstream key");
            pool.report(key, outcome);
        }
        Some((key, None)) => {
            tracing::info!(upstream_key = %key, "an operator enabled the upstream key again on another instance");
            pool.set_disabled(key, false);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_own_ones_are_ignored() {
        let k = UpstreamKeyId(7);
        for o in [Outcome::RateLimited { retry_after_ms: 1500 }, Outcome::QuotaExhausted, Outcome::AuthRejected] {
            assert_eq!(decode("b", &encode("a", k, Some(o))), Some((k, Some(o))));
            assert_eq!(decode("a", &encode("a", k, Some(o))), None, "an instance ignores its own announcements");
        }
        assert_eq!(decode("b", &encode("a", k, None)), Some((k, None)), "enabled again");
        assert_eq!(decode("b", "a 7 overloaded 0"), None);
        assert_eq!(decode("b", "a x rate_limited 5"), None);
        assert_eq!(decode("b", "a 7 rate_limited"), None);
        assert_eq!(decode("b", "a 7 rate_limited 5 extra"), None);
        assert!(!shareable(Outcome::Timeout) && !shareable(Outcome::Overloaded) && shareable(Outcome::AuthRejected));
    }
}
