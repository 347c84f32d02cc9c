//! Durable stores for xai: the state behind `PolicyStore`, the key pool's shared state and the `Meter` over SQL
//! (SQLite embedded by default, Postgres for clusters) and Redis (shared counters, change feed).
//!
//! Work in progress (the storage issue): the building blocks below are tested against real SQLite, Postgres and
//! Redis, and are not wired into `xai-server` yet; the server still runs on the in-memory implementations of
//! [`xai_core`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod redis_limits;
pub mod secrets;
pub mod sql;
pub mod usage;
pub mod usage_query;

/// Test support: a throwaway Postgres database and Redis key prefix per test run.
#[cfg(test)]
pub(crate) mod testenv;
