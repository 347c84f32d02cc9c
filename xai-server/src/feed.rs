//! The change feed: after an admin change is saved, every other instance on the same database reloads the
//! account tree and keys. Redis pub/sub when Redis is configured, else Postgres LISTEN/NOTIFY; a single SQLite
//! instance needs none.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use xai_core::control::{ControlPlane, KeyChange};
use xai_store::catalog_cache::CatalogCache;
use xai_store::sql::SqlStore;

/// Where changes are announced.
#[derive(Clone, Debug)]
pub enum Feed {
    /// Redis pub/sub on `<prefix>changes`.
    Redis {
        /// The client.
        client: redis::Client,
        /// The channel.
        channel: String,
    },
    /// Postgres `NOTIFY xai_changes`.
    Postgres(sqlx::PgPool),
    /// One instance: nothing to tell.
    None,
}

const PG_CHANNEL: &str = "xai_changes";

impl Feed {
    /// Chooses the feed for this deployment.
    pub fn new(redis_url: Option<&str>, prefix: &str, sql: &SqlStore) -> Result<Feed, String> {
        if let Some(url) = redis_url {
            let client = redis::Client::open(url).map_err(|e| format!("redis: {e}"))?;
            return Ok(Feed::Redis { client, channel: format!("{prefix}changes") });
        }
        Ok(sql.postgres_pool().cloned().map(Feed::Postgres).unwrap_or(Feed::None))
    }

    /// What the startup summary says.
    pub fn describe(&self) -> &'static str {
        match self {
            Feed::Redis { .. } => "changes announced through Redis pub/sub",
            Feed::Postgres(_) => "changes announced through Postgres LISTEN/NOTIFY",
            Feed::None => "single instance (no change feed)",
        }
    }

    /// Announces a saved change (best effort: a lost announcement is healed by the next one).
    pub async fn publish(&self, instance: &str) {
        let r = match self {
            Feed::Redis { client, channel } => match client.get_multiplexed_async_connection().await {
                Ok(mut c) => redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(instance)
                    .query_async::<i64>(&mut c)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Feed::Postgres(pool) => sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PG_CHANNEL)
                .bind(instance)
                .execute(pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Feed::None => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "announcing a change failed; other instances see it at their next reload");
        }
    }

    /// Listens for other instances' changes and reloads the tree after each (reconnecting on failure).
    /// With `cache`, the catalog is taken through its Redis tier (memory → Redis → database).
    pub fn spawn_listener(
        &self,
        instance: String,
        sql: Arc<SqlStore>,
        control: Arc<ControlPlane>,
        cache: Option<CatalogCache>,
    ) {
        let feed = self.clone();
        tokio::spawn(async move {
            let reloader = Reloader { sql, control, cache };
            loop {
                let r = match &feed {
                    Feed::Redis { client, channel } => listen_redis(client, channel, &instance, &reloader).await,
                    Feed::Postgres(pool) => listen_postgres(pool, &instance, &reloader).await,
                    Feed::None => return,
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "change feed interrupted; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Whatever was announced meanwhile: catch up.
                reloader.reload().await;
            }
        });
    }
}

async fn listen_redis(client: &redis::Client, channel: &str, me: &str, reloader: &Reloader) -> Result<(), String> {
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let from: String = msg.get_payload().unwrap_or_default();
        if from != me {
            reloader.reload().await;
        }
    }
    Err("subscription closed".into())
}

async fn listen_postgres(pool: &sqlx::PgPool, me: &str, reloader: &Reloader) -> Result<(), String> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await.map_err(|e| e.to_string())?;
    listener.listen(PG_CHANNEL).await.map_err(|e| e.to_string())?;
    loop {
        let n = listener.recv().await.map_err(|e| e.to_string())?;
        if n.payload() != me {
            reloader.reload().await;
        }
    }
}

/// What a reload needs.
struct Reloader {
    sql: Arc<SqlStore>,
    control: Arc<ControlPlane>,
    cache: Option<CatalogCache>,
}

impl Reloader {
    /// Saves this instance's pending changes, then takes the tree (through the Redis tier when there is one),
    /// balances and products (from the database).
    async fn reload(&self) {
        let (sql, control) = (&self.sql, &self.control);
        if let Err(e) = crate::durable::save(sql, control, control.take_changes()).await {
            tracing::warn!(error = %e, "saving before a reload failed");
        }
        match sql.load_live(self.cache.as_ref()).await {
            Ok((snap, source)) => {
                let meta: std::collections::HashMap<_, _> = snap.key_meta.iter().map(|m| (m.id, m)).collect();
                let keys = snap
                    .catalog
                    .keys
                    .into_iter()
                    .map(|k| {
                        let m = meta.get(&k.id);
                        KeyChange {
                            name: m.and_then(|m| m.name.clone()),
                            created_at: m.map_or_else(std::time::SystemTime::now, |m| m.created_at),
                            key: k,
                        }
                    })
                    .collect();
                match control.reload_tree(snap.catalog.accounts, keys) {
                    Ok(()) => tracing::debug!(?source, "reloaded the account tree after a change elsewhere"),
                    Err(e) => tracing::warn!(error = %e, "reloading the account tree failed"),
                }
                let products = snap.products.iter().map(crate::durable::product_of).collect();
                if let Err(e) = control.reload_products(products) {
                    tracing::warn!(error = %e, "reloading products failed");
                }
                crate::durable::apply_saved_prices(sql, control).await;
            }
            Err(e) => tracing::warn!(error = %e, "reloading the account tree failed"),
        }
    }
}
