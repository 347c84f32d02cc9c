//! Test support for xai's end-to-end suites (docs/test-contract.md).
//!
//! - [`mock`]: a scriptable mock OpenAI upstream (library and the `mock-upstream` binary);
//! - [`harness`]: runs a real `xai-server` process against it and reads its usage records;
//! - [`fixtures`]: the contract config with two mocks, request builders and assertions on error bodies;
//! - [`client`]: a tiny HTTP client with bounded waits and chunk arrival times, for streams and disconnects.
//!
//! ```no_run
//! # async fn demo() {
//! use xai_tests::{client, harness::XaiServer, mock::MockUpstream};
//! let mock = MockUpstream::start().await;
//! let server = XaiServer::builder("admin_token = \"t\"\n[[providers]]\nbase_url = \"{{MOCK}}/v1\"\n")
//!     .var("MOCK", mock.url())
//!     .start()
//!     .await;
//! let health = client::get(&format!("{}/healthz", server.url()), None).await;
//! assert_eq!(health.status, 200);
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod fixtures;
pub mod harness;
pub mod mock;
pub mod pg;
