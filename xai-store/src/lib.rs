//! Durable stores for xai: the state behind `PolicyStore`, the key pool's shared state and the `Meter` over SQL
//! (SQLite embedded by default, Postgres for clusters) and Redis (shared counters, change feed).
//!
//! `xai-server` uses them: [`sql::SqlStore`] keeps the control plane (SQLite by default, Postgres for clusters)
//! with upstream keys sealed by [`secrets::MasterKey`]; [`usage::DurableMeter`] writes usage off the hot path;
//! [`redis_limits::RedisMeter`] makes limits cluster-wide.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog_cache;
pub mod prices;
pub mod redis_limits;
pub mod secrets;
pub mod sql;
pub mod usage;
pub mod usage_query;
pub mod usage_series;

/// Test support: a throwaway Postgres database and Redis key prefix per test run.
#[cfg(test)]
pub(crate) mod testenv;
