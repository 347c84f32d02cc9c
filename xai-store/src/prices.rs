//! Prices set through the admin API (`xai_prices`, migration 0005): they take precedence over the configuration
//! file's `[pricing]` and are shared by every instance on the database. Also the upstream keys an upstream
//! rejected (`xai_disabled_upstream_keys`, migration 0006), by fingerprint, so they stay disabled across restarts.

use std::time::{SystemTime, UNIX_EPOCH};

use xai_core::Price;
use xai_core::traits::StoreError;

use crate::sql::SqlStore;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("prices: {e}"))
}

impl SqlStore {
    /// Sets (`Some`) or removes (`None`) the price of `model`.
    pub async fn save_price(&self, model: &str, price: Option<&Price>) -> Result<(), StoreError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let json = price.map(serde_json::to_string).transpose().map_err(err)?;
        const UPSERT: &str = "INSERT INTO xai_prices (model, price, updated_at) VALUES ($1, $2, $3) \
            ON CONFLICT (model) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at";
        const DELETE: &str = "DELETE FROM xai_prices WHERE model = $1";
        if let Some(p) = self.sqlite_pool() {
            match &json {
                Some(j) => sqlx::query(UPSERT).bind(model).bind(j).bind(now).execute(p).await.map_err(err)?,
                None => sqlx::query(DELETE).bind(model).execute(p).await.map_err(err)?,
            };
        } else if let Some(p) = self.postgres_pool() {
            match &json {
                Some(j) => sqlx::query(UPSERT).bind(model).bind(j).bind(now).execute(p).await.map_err(err)?,
                None => sqlx::query(DELETE).bind(model).execute(p).await.map_err(err)?,
            };
        }
        Ok(())
    }

    /// Every price set through the admin API, by model.
    pub async fn load_prices(&self) -> Result<Vec<(String, Price)>, StoreError> {
        const SELECT: &str = "SELECT model, price FROM xai_prices ORDER BY model";
        let rows: Vec<(String, String)> = if let Some(p) = self.sqlite_pool() {
            sqlx::query_as(SELECT).fetch_all(p).await.map_err(err)?
        } else if let Some(p) = self.postgres_pool() {
            sqlx::query_as(SELECT).fetch_all(p).await.map_err(err)?
        } else {
            vec![]
        };
        rows.into_iter()
            .map(|(m, j)| {
                let p: Price = serde_json::from_str(&j).map_err(|e| err(format!("malformed price of {m:?}: {e}")))?;
                Ok((m, p))
            })
            .collect()
    }
}

impl SqlStore {
    /// Remembers (`true`) or forgets (`false`) that the upstream key with this fingerprint is disabled.
    pub async fn save_key_disabled(&self, fingerprint: &str, disabled: bool) -> Result<(), StoreError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        const UPSERT: &str = "INSERT INTO xai_disabled_upstream_keys (fingerprint, disabled_at) VALUES ($1, $2) \
            ON CONFLICT (fingerprint) DO NOTHING";
        const DELETE: &str = "DELETE FROM xai_disabled_upstream_keys WHERE fingerprint = $1";
        let e = |e: sqlx::Error| StoreError(format!("upstream key state: {e}"));
        if let Some(p) = self.sqlite_pool() {
            match disabled {
                true => sqlx::query(UPSERT).bind(fingerprint).bind(now).execute(p).await.map_err(e)?,
                false => sqlx::query(DELETE).bind(fingerprint).execute(p).await.map_err(e)?,
            };
        } else if let Some(p) = self.postgres_pool() {
            match disabled {
                true => sqlx::query(UPSERT).bind(fingerprint).bind(now).execute(p).await.map_err(e)?,
                false => sqlx::query(DELETE).bind(fingerprint).execute(p).await.map_err(e)?,
            };
        }
        Ok(())
    }

    /// The fingerprints of every upstream key remembered as disabled.
    pub async fn disabled_keys(&self) -> Result<Vec<String>, StoreError> {
        const SELECT: &str = "SELECT fingerprint FROM xai_disabled_upstream_keys ORDER BY fingerprint";
        let e = |e: sqlx::Error| StoreError(format!("upstream key state: {e}"));
        if let Some(p) = self.sqlite_pool() {
            sqlx::query_scalar(SELECT).fetch_all(p).await.map_err(e)
        } else if let Some(p) = self.postgres_pool() {
            sqlx::query_scalar(SELECT).fetch_all(p).await.map_err(e)
        } else {
            Ok(vec![])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xai_core::Micros;

    async fn round_trip(store: SqlStore) {
        let p = Price {
            input: Micros(150_000),
            output: Micros(600_000),
            cached_input: Some(Micros(75_000)),
            ..Price::default()
        };
        store.save_price("gpt-4o-mini", Some(&p)).await.unwrap();
        store.save_price("claude-*", Some(&Price { input: Micros(3_000_000), ..p })).await.unwrap();
        store.save_price("gpt-4o-mini", Some(&Price { output: Micros(700_000), ..p })).await.unwrap();
        let got = store.load_prices().await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], ("gpt-4o-mini".into(), Price { output: Micros(700_000), ..p }));
        store.save_price("claude-*", None).await.unwrap();
        assert_eq!(store.load_prices().await.unwrap().len(), 1);
        // Disabled upstream keys, by fingerprint: idempotent both ways.
        for _ in 0..2 {
            store.save_key_disabled("ab12", true).await.unwrap();
        }
        store.save_key_disabled("cd34", true).await.unwrap();
        assert_eq!(store.disabled_keys().await.unwrap(), ["ab12", "cd34"]);
        store.save_key_disabled("ab12", false).await.unwrap();
        store.save_key_disabled("ab12", false).await.unwrap();
        assert_eq!(store.disabled_keys().await.unwrap(), ["cd34"]);
    }

    #[tokio::test]
    async fn sqlite_prices_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        round_trip(SqlStore::connect(&url, crate::secrets::MasterKey::generate()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_prices_round_trip() {
        let Some(db) = crate::testenv::TestDb::create().await else { return };
        round_trip(SqlStore::connect(&db.url, crate::secrets::MasterKey::generate()).await.unwrap()).await;
        db.drop_db().await;
    }
}
