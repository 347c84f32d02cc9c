//! Durable stores for xai: `PolicyStore`, key-pool shared state and `Meter` over SQLite, Postgres and Redis.
//!
//! Not built yet: until the storage work lands, `xai-server` runs on the in-memory implementations of
//! [`xai_core`]. This crate exists so that the dependency graph of the workspace is the final one.
#![forbid(unsafe_code)]
