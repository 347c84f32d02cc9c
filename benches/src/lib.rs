//! Benchmarks of xai.
//!
//! - `loadbench` (src/bin/loadbench.rs): the load benchmark: a real `xai-server` process in
//!   front of the in-process [`mock`] upstream, against the mock alone ("direct"), measured by
//!   the [`driver`]. See benches/README.md.
//! - benches/route.rs: criterion micro-benchmark of the route step.
//! - `meterbench` (src/bin/meterbench.rs): usage records/s into SQLite and Postgres; benches/metering.rs: the
//!   meter calls of the request path, metering off vs on. Records come from [`usagegen`].

pub mod check;
pub mod driver;
pub mod mock;
pub mod procstat;
pub mod scratch;
pub mod server;
pub mod usagegen;
