//! A Postgres database of its own for one test: created from `XAI_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped when the handle is dropped, also when the test fails.
//! When Postgres is unreachable the test is skipped with a message, except under `CI=true`, where it fails.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The admin URL tests create their databases through.
pub fn postgres_admin_url() -> String {
    std::env::var("XAI_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// 12 random hex digits (std's randomly keyed hasher over the time, the process and a counter): database names,
/// Redis prefixes.
pub fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Skips (`None`, with a message) or, under `CI=true`, fails: for a service a test needs.
pub fn unavailable(what: &str, e: &dyn std::fmt::Display) -> Option<std::convert::Infallible> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true but is unreachable: {e}");
    }
    eprintln!("SKIPPED: {what} unreachable ({e}); start it to run this test");
    None
}

/// A database created for one test; dropped on drop (declare it before the servers using it, so they stop first).
#[derive(Debug)]
pub struct TestDatabase {
    /// `xai_test_<random>`.
    pub name: String,
    /// `postgres://…/<name>`, straight to Postgres.
    pub url: String,
}

impl TestDatabase {
    /// A fresh database; `None` (skipped) when Postgres is unreachable outside CI.
    pub async fn create() -> Option<TestDatabase> {
        let admin = postgres_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                unavailable(&format!("Postgres at {admin}"), &e)?;
                unreachable!()
            }
        };
        let name = format!("xai_test_{}", random_hex());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(TestDatabase { name, url })
    }

    async fn drop_database(name: String) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
            let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
            if let Err(e) = dropped {
                eprintln!("could not drop the test database {name}: {e}");
            }
            let _ = conn.close().await;
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on: drop the database from a thread of its own.
        let dropped =
            std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(TestDatabase::drop_database(name)),
                Err(e) => eprintln!("no runtime to drop the test database: {e}"),
            });
        let _ = dropped.join();
    }
}
