//! What the database benchmarks (`meterbench`, `catalogbench`) share: a throwaway Postgres database, a random
//! suffix for names, and the median.

use std::time::{Duration, SystemTime};

use sqlx::Connection;

/// A database `xai_bench_<pid>_<random>` created for one run; [`ScratchDb::drop_db`] removes it.
#[derive(Debug)]
pub struct ScratchDb {
    admin: String,
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl ScratchDb {
    /// Creates it through the admin URL `admin`; `Ok(None)`, with a message, when Postgres does not answer.
    pub async fn create(admin: &str) -> Result<Option<ScratchDb>, String> {
        let mut conn = match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(admin)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                eprintln!("SKIPPED: Postgres unreachable at {admin} ({e}); start it to measure it");
                return Ok(None);
            }
            Err(_) => {
                eprintln!("SKIPPED: Postgres at {admin} did not answer within 3 s");
                return Ok(None);
            }
        };
        let name = format!("xai_bench_{}_{:08x}", std::process::id(), rand_u32());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("create database {name}: {e}"))?;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Ok(Some(ScratchDb { admin: admin.to_owned(), url: format!("{base}/{name}"), name }))
    }

    /// Drops it (closing other sessions on it first); best effort.
    pub async fn drop_db(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await;
        }
    }
}

/// A random-enough 32-bit suffix for names of one run.
pub fn rand_u32() -> u32 {
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)).wrapping_mul(2_654_435_761)
}

/// The median (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
