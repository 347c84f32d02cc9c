//! # xai-core
//!
//! The storage-agnostic core of the xai AI gateway: domain types (accounts, policies, virtual keys, levels,
//! upstream keys, usage in micro-credits), the four extension traits ([`PolicyStore`], [`KeyPool`], [`Meter`],
//! [`ProtocolAdapter`]) with in-memory implementations, and the Tower layers of the request path. It depends on
//! no HTTP server or client, no database and no CLI library: embed it in any Rust service.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(upstream: Arc<dyn xai_core::UpstreamClient>, adapters: xai_core::Adapters) {
//! use xai_core::memory::{Catalog, InMemoryKeyPool, InMemoryMeter, InMemoryPolicyStore, PoolConfig};
//! use xai_core::{Gateway, GatewayConfig, PolicyStore};
//!
//! let store = Arc::new(InMemoryPolicyStore::new(Catalog::default()).unwrap());
//! let pool = Arc::new(InMemoryKeyPool::new(&store.route_table(), PoolConfig::default()));
//! let gateway = Gateway {
//!     store,
//!     pool,
//!     meter: Arc::new(InMemoryMeter::default()),
//!     adapters,
//!     upstream,
//!     config: GatewayConfig::default(),
//! };
//! let service = gateway.service::<http_body_util::Full<bytes::Bytes>>();
//! # let _ = service;
//! # }
//! ```
//!
//! ## The request path
//! [`Gateway::service`] stacks these layers, outermost first (DESIGN §2):
//!
//! | # | layer | does |
//! |---|---|---|
//! | 1 | [`layers::classify`] | endpoint and inbound protocol from method and path; request id; arrival time |
//! | 2 | [`layers::respond`] | the only place errors become HTTP, in the client's protocol; echoes `x-request-id` |
//! | 3 | [`layers::auth`] | credential where the protocol puts it → digest → principal (cached); body untouched |
//! | 4 | [`layers::decode`] | body under the size limit (413) → [`RequestMeta`] (model, stream, max_tokens) |
//! | 5 | [`layers::acl`] | key/account status, key expiry, IP allowlists, endpoint resources, along the whole path |
//! | 6 | [`layers::route`] | allowlists and model mappers caller → root (exact-match cache), level, switch-over plan |
//! | 7 | [`layers::admit`] | reserves an estimate on the caller and every ancestor (RPM/TPM) |
//! | 8 | [`layers::meter`] | wraps the body; records usage exactly once (end, error, disconnect); settles |
//! | 9 | [`layers::failover`] | next healthy key, then the switch-over level, before the first byte; deadline |
//! | 10 | [`layers::attempt`] | lease, encode (or pass through), send, classify, report to the pool, tap usage |
//!
//! ## Request extensions
//!
//! | extension | inserted by | read by |
//! |---|---|---|
//! | [`layers::ClientAddr`] | the server, before the stack | acl (IP allowlists) |
//! | [`RequestId`] | classify (kept from `x-request-id` when sane) | respond, failover (logs), meter |
//! | [`layers::ReceivedAt`] | classify | meter (latency, time to first token) |
//! | [`Endpoint`] / [`layers::UnknownEndpoint`] | classify | respond, auth, decode, acl, route, meter, failover |
//! | `Arc<`[`Principal`]`>` | auth | acl, route, admit, meter |
//! | [`RequestMeta`] | decode | route, admit, meter, failover |
//! | `Arc<`[`policy::ModelResolution`]`>` | route | admit (per-model limits match the name each account saw) |
//! | [`RoutePlan`] | route | meter, failover |
//! | [`Reservation`] | admit | meter (removes it; settles it with the record) |
//! | [`layers::AttemptLog`] | meter | failover (appends every attempt) |
//!
//! Response extension: [`layers::UsageProbe`], inserted by attempt (updated as the body streams), read by meter.
//!
//! Failover hands each try to attempt as an [`layers::attempt::AttemptRequest`] (endpoint, meta, body, model,
//! leased key, forwarded headers, timeout) rather than an `http::Request`: nothing else crosses that boundary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod anomaly;
pub mod body;
pub mod control;
pub mod day;
pub mod error;
pub mod ids;
pub mod ir;
pub mod layers;
pub mod memory;
pub mod money;
pub mod policy;
pub mod protocol;
pub mod routing;
pub mod secret;
pub mod traits;
pub mod usage;

pub use body::Body;
pub use error::{BoxError, GatewayError};
pub use ids::{AccountId, KeyId, Level, ProviderId, RequestId, UpstreamKeyId};
pub use layers::{Gateway, GatewayConfig, GatewayService};
pub use money::Micros;
pub use policy::{Account, ModelPattern, Policy, Principal, Role, Status, VirtualKey};
pub use protocol::{Endpoint, EndpointKind, Protocol};
pub use routing::{Provider, RoutePlan, RouteTable, UpstreamKey};
pub use secret::{KeyDigest, Secret};
pub use traits::{
    Adapters, AdmitRequest, BodySpans, BoxFuture, Exhausted, Funds, KeyPool, Lease, Maybe, Meter, ModelInfo,
    PolicyStore, ProtocolAdapter, RateInfo, RequestMeta, Reservation, StreamTap, UpstreamClient,
};
pub use usage::{AttemptRecord, Outcome, Price, RecordStatus, Usage, UsageRecord};
