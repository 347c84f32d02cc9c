//! Runnable examples of embedding xai. See `src/bin/embed-axum.rs`: an existing axum service that puts the
//! xai-core layers, with the in-memory stores, in front of AI routes next to its own routes.
#![forbid(unsafe_code)]
