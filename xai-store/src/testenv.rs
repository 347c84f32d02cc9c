//! Real Postgres and Redis for tests: each test gets its own database and key prefix and removes them.
#![allow(dead_code)] // shared by the store tests; not every test module uses every helper
//!
//! Postgres: `XAI_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`); Redis: `XAI_TEST_REDIS`
//! (default `redis://127.0.0.1:6379`). When one is unreachable, a test is skipped with a visible message, except
//! under `CI=true`, where it fails.

use sqlx::Connection;

/// The admin URL of the test Postgres.
pub fn postgres_admin_url() -> String {
    std::env::var("XAI_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of the test Redis.
pub fn redis_url() -> String {
    std::env::var("XAI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> Option<std::convert::Infallible> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true but is unreachable: {e}");
    }
    eprintln!("SKIPPED: {what} unreachable ({e}); start it to run this test");
    None
}

/// A database created for one test; call [`TestDb::drop_db`] at the end.
#[derive(Debug)]
pub struct TestDb {
    /// URL of the new database.
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates `xai_test_<random>`; `None` (skipped) when Postgres is unreachable outside CI.
    pub async fn create() -> Option<TestDb> {
        let admin = postgres_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                unavailable("Postgres", &e)?;
                unreachable!()
            }
        };
        let name = format!("xai_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(TestDb { url: format!("{base}/{name}"), name })
    }

    /// Drops the database (closing other sessions on it first).
    pub async fn drop_db(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
            let _ =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await;
        }
    }
}

/// A Redis connection manager and a random key prefix; `None` (skipped) when Redis is unreachable outside CI.
pub async fn redis() -> Option<(redis::aio::ConnectionManager, String)> {
    let client = match redis::Client::open(redis_url()) {
        Ok(c) => c,
        Err(e) => {
            unavailable("Redis", &e)?;
            unreachable!()
        }
    };
    match redis::aio::ConnectionManager::new(client).await {
        Ok(m) => Some((m, format!("xai-test-{}:", hex::encode(rand::random::<[u8; 6]>())))),
        Err(e) => {
            unavailable("Redis", &e)?;
            unreachable!()
        }
    }
}

/// Deletes every key under `prefix`.
pub async fn redis_cleanup(conn: &mut redis::aio::ConnectionManager, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(conn).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(conn).await;
    }
}
