//! The four extension points of xai (DESIGN §3), all object safe, plus the upstream transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::body::Body;
use crate::error::{BoxError, GatewayError};
use crate::ids::{AccountId, Level, UpstreamKeyId};
use crate::ir::{ChatRequest, ChatResponse, StreamDecoder, StreamEncoder};
use crate::money::Micros;
use crate::policy::Principal;
use crate::protocol::{Endpoint, Protocol};
use crate::routing::{Provider, RouteTable, UpstreamKey};
use crate::secret::KeyDigest;
use crate::usage::{Outcome, Price, Usage, UsageRecord};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A value that is often ready at once (a memory hit) and sometimes needs I/O: keeps the hot path free of boxing.
pub enum Maybe<'a, T> {
    /// Available now.
    Ready(T),
    /// Needs I/O.
    Pending(BoxFuture<'a, T>),
}

impl<T> Maybe<'_, T> {
    /// Awaits the value.
    pub async fn get(self) -> T {
        match self {
            Maybe::Ready(t) => t,
            Maybe::Pending(f) => f.await,
        }
    }
}

impl<T> std::fmt::Debug for Maybe<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Maybe::Ready(_) => "Maybe::Ready",
            Maybe::Pending(_) => "Maybe::Pending",
        })
    }
}

/// A store failure (database or cache unreachable); never carries secrets.
#[derive(Debug, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// Accounts, keys, policies, providers and prices (DESIGN §3).
pub trait PolicyStore: Send + Sync + 'static {
    /// Resolves a virtual key digest to its principal (key, account path, policies), `None` when unknown.
    fn principal(&self, digest: &KeyDigest) -> Maybe<'_, Result<Option<Arc<Principal>>, StoreError>>;
    /// The current routing topology (a snapshot; cheap to call per request).
    fn route_table(&self) -> Arc<RouteTable>;
    /// The price of a model, when known.
    fn price(&self, model: &str) -> Option<Price>;
    /// Model names the price table knows (for model lists).
    fn priced_models(&self) -> Vec<Arc<str>>;
    /// Whether the store is reachable (readiness).
    fn ready(&self) -> BoxFuture<'_, bool>;
}

/// A leased upstream key.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Its provider.
    pub provider: Arc<Provider>,
    /// The key.
    pub key: UpstreamKey,
}

/// Why no key could be leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// When the earliest cooling key comes back, when any is cooling.
    pub retry_after: Option<Duration>,
}

/// Healthy upstream keys, round-robin per level (DESIGN §3). Selection is synchronous over a snapshot.
pub trait KeyPool: Send + Sync + 'static {
    /// The next healthy key of `level` whose provider serves `model`, skipping `exclude`.
    fn pick(&self, level: Level, model: &str, exclude: &[UpstreamKeyId]) -> Result<Lease, Exhausted>;
    /// Reports how an attempt with `key` ended; drives cooldowns and disabling.
    fn report(&self, key: UpstreamKeyId, outcome: Outcome);
}

/// What admission needs to know about a request.
#[derive(Debug)]
pub struct AdmitRequest<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// Model asked.
    pub model: &'a str,
    /// Upper-bound token estimate (input + max output).
    pub estimate_tokens: u64,
    /// The route step's resolution, when routing ran: per-model limits match the name each account saw.
    pub resolution: Option<&'a crate::policy::ModelResolution>,
    /// Upper-bound cost of the request (the token estimate at the model's prices); zero when unpriced.
    pub cost: Micros,
    /// The funds the request draws on, when budgets apply (filled by [`crate::control::SpendingMeter`]).
    pub funds: Option<Funds>,
}

/// The funds a request draws on, as the control plane sees them at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Funds {
    /// The account that pays: the caller, or its nearest funded ancestor.
    pub account: AccountId,
    /// What its sources hold right now: today's subscription allowance left, add-ons, cards and balance.
    pub available: Micros,
    /// The total cost the control plane has charged to this account since it was loaded (own settlements, and
    /// every settlement reflected in a reload). A meter compares it with the settlements it has seen to count
    /// the ones the control plane has not applied yet, so a settlement is never missed nor counted twice.
    pub applied: i64,
    /// Bumped when the control plane reloads balances from the store (the `applied` baseline moves).
    pub generation: u64,
}

/// A reservation taken at admission, settled by [`Meter::record`].
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Accounts charged, root first.
    pub chain: Option<Arc<[AccountId]>>,
    /// Tokens reserved.
    pub tokens: u64,
    /// Implementation-defined slot (e.g. the window second the tokens were reserved in).
    pub slot: u64,
    /// The counters charged (accounts, keys, per-model rules), for settlement.
    pub nodes: Arc<[LimitNode]>,
    /// Cost held on the paying account's funds and on every daily credit limit of the path, until settlement.
    pub cost: Micros,
    /// The account whose funds hold `cost`, when budgets applied.
    pub funder: Option<AccountId>,
    /// The tightest request and token bounds at admission, for `x-ratelimit-*` headers.
    pub rate: Option<RateInfo>,
}

/// The tightest bounds a request met at admission, as OpenAI's `x-ratelimit-*` headers show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateInfo {
    /// Requests: (limit, remaining after this request, seconds until the window frees one).
    pub requests: Option<(u64, u64, u64)>,
    /// Tokens: (limit, remaining after this request's estimate, seconds until the window frees some).
    pub tokens: Option<(u64, u64, u64)>,
}

impl RateInfo {
    /// Keeps the tighter of `self.requests` and `(limit, remaining, reset)`.
    pub fn requests_bound(&mut self, limit: u64, remaining: u64, reset: u64) {
        if self.requests.is_none_or(|(_, r, _)| remaining < r) {
            self.requests = Some((limit, remaining, reset));
        }
    }

    /// Keeps the tighter of `self.tokens` and `(limit, remaining, reset)`.
    pub fn tokens_bound(&mut self, limit: u64, remaining: u64, reset: u64) {
        if self.tokens.is_none_or(|(_, r, _)| remaining < r) {
            self.tokens = Some((limit, remaining, reset));
        }
    }
}

/// A counter that admission charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitNode {
    /// An account (aggregate over its subtree).
    Account(AccountId),
    /// A key's own limits.
    Key(crate::ids::KeyId),
    /// A per-model rule of an account: the index in its `model_limits`.
    Model(AccountId, u16),
    /// A per-model rule of a key.
    KeyModel(crate::ids::KeyId, u16),
}

impl Default for Reservation {
    fn default() -> Self {
        Self {
            chain: None,
            tokens: 0,
            slot: 0,
            nodes: Arc::from(Vec::new()),
            cost: Micros::ZERO,
            funder: None,
            rate: None,
        }
    }
}

/// Limits, budgets and usage records (DESIGN §3).
pub trait Meter: Send + Sync + 'static {
    /// Reserves the estimate on the caller and every ancestor atomically, or refuses with the bound and account.
    fn admit<'a>(&'a self, req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, GatewayError>>;
    /// Queues a usage record and settles its reservation. Synchronous: callable from a dropped body.
    fn record(&self, record: UsageRecord, reservation: Reservation);
    /// The most recent records, newest last (an operational view; analytics belong to the store).
    fn recent(&self, limit: usize) -> Vec<UsageRecord>;
    /// Writes everything queued (shutdown).
    fn flush(&self) -> BoxFuture<'_, ()>;
}

/// What the decode step extracts from a client body: only what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// Model asked by the client.
    pub model: Arc<str>,
    /// Streaming asked.
    pub stream: bool,
    /// The client asked for usage in the stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Output cap asked, when any.
    pub max_tokens: Option<u64>,
    /// Body size (for input estimates).
    pub body_len: usize,
    /// Where the fields a passthrough rewrites sit in the body (byte ranges), so it is parsed once.
    pub spans: BodySpans,
}

/// Byte ranges of fields in a client JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodySpans {
    /// The `model` value (with its quotes).
    pub model: Option<std::ops::Range<usize>>,
    /// The `stream_options` value.
    pub stream_options: Option<std::ops::Range<usize>>,
}

/// One model in a list answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Client-visible name.
    pub id: Arc<str>,
    /// Who serves it (provider name).
    pub owned_by: Arc<str>,
}

/// Incremental processing of an upstream stream: forwards (possibly rewritten) bytes, reads usage on the fly.
pub trait StreamTap: Send + 'static {
    /// Feeds a chunk of upstream bytes; returns the bytes to send to the client (often the chunk itself).
    fn feed(&mut self, chunk: Bytes) -> Bytes;
    /// The upstream ended cleanly (`Ok`) or failed (`Err`); returns the final bytes for the client (e.g. an error
    /// event when the stream ended without its terminal event).
    fn finish(&mut self, upstream_error: Option<&str>) -> Bytes;
    /// Usage so far; `reported` is false while it is an estimate.
    fn usage(&self) -> (Usage, bool);
    /// Whether the stream failed (an error event was seen or sent).
    fn failed(&self) -> bool;
}

/// One wire protocol (DESIGN §3): decoding client requests, encoding errors and lists, passthrough rewriting,
/// usage extraction and upstream error classification.
pub trait ProtocolAdapter: Send + Sync + 'static {
    /// The protocol.
    fn protocol(&self) -> Protocol;
    /// Reads what routing needs from a client body (`Err` = 400 with a clear message).
    fn inspect(&self, endpoint: &Endpoint, body: &Bytes) -> Result<RequestMeta, GatewayError>;
    /// Renders a gateway error in this protocol (status, body) for a non-streaming answer.
    fn error_body(&self, err: &GatewayError) -> Bytes;
    /// Renders an error as a stream event, after the stream started.
    fn stream_error(&self, message: &str, code: &str) -> Bytes;
    /// A model list answer.
    fn models_body(&self, models: &[ModelInfo]) -> Bytes;
    /// Path appended to the provider base URL.
    fn upstream_path(&self, endpoint: &Endpoint, model: &str, stream: bool) -> String;
    /// Puts the upstream credential where this protocol expects it.
    fn authorize(&self, key: &str, headers: &mut HeaderMap);
    /// Same-protocol passthrough: rewrites only the model (and asks for stream usage); unknown fields kept.
    fn passthrough_request(
        &self,
        body: &Bytes,
        meta: &RequestMeta,
        upstream_model: &str,
    ) -> Result<Bytes, GatewayError>;
    /// Usage in a complete (non-streaming) response body.
    fn response_usage(&self, body: &[u8]) -> Option<Usage>;
    /// A stream tap for a passthrough stream; `client_wants_usage` decides whether a usage-only chunk is kept.
    fn stream_tap(&self, meta: &RequestMeta) -> Box<dyn StreamTap>;
    /// Classifies an upstream non-2xx answer for the key pool and failover.
    fn classify_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        default_retry_after: Duration,
    ) -> Outcome;

    // ---- Cross-protocol translation (DESIGN §6, [`crate::ir`]). The defaults refuse with 501. ----

    /// Decodes a client body of this protocol into the canonical request (`Err` = 400 in this protocol).
    fn decode_request(&self, endpoint: &Endpoint, body: &Bytes) -> Result<ChatRequest, GatewayError> {
        let _ = (endpoint, body);
        Err(not_translated(self.protocol()))
    }
    /// Encodes the canonical request for an upstream of this protocol (`req.model` is already the upstream
    /// model, `req.stream` the stream flag).
    fn encode_request(&self, req: &ChatRequest) -> Result<Bytes, GatewayError> {
        let _ = req;
        Err(not_translated(self.protocol()))
    }
    /// Decodes a complete upstream answer of this protocol.
    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, GatewayError> {
        let _ = body;
        Err(not_translated(self.protocol()))
    }
    /// Encodes a complete answer for a client of this protocol.
    fn encode_response(&self, resp: &ChatResponse, endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
        let _ = (resp, endpoint, meta);
        Bytes::new()
    }
    /// A decoder of this protocol's upstream stream, `None` when translation is not available.
    fn stream_decoder(&self) -> Option<Box<dyn StreamDecoder>> {
        None
    }
    /// An encoder of a stream for a client of this protocol (`endpoint` tells Gemini SSE from the JSON array,
    /// `meta` whether an OpenAI client asked for the usage chunk).
    fn stream_encoder(&self, endpoint: &Endpoint, meta: &RequestMeta) -> Option<Box<dyn StreamEncoder>> {
        let _ = (endpoint, meta);
        None
    }
    /// The message of an upstream error body of this protocol, when it has one.
    fn error_message(&self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
    }
}

fn not_translated(p: Protocol) -> GatewayError {
    GatewayError::NotImplemented(format!("translation to and from {p} is not available"))
}

/// Adapters by protocol. One `Arc` inside: cloning it per request (every layer holds one) is one increment.
#[derive(Clone, Default)]
pub struct Adapters {
    by: Arc<[Option<Arc<dyn ProtocolAdapter>>; 4]>,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.by.iter().flatten().map(|a| a.protocol()).collect();
        f.debug_struct("Adapters").field("protocols", &names).finish()
    }
}

fn slot(p: Protocol) -> usize {
    match p {
        Protocol::OpenAiChat => 0,
        Protocol::OpenAiResponses => 1,
        Protocol::Anthropic => 2,
        Protocol::Gemini => 3,
    }
}

impl Adapters {
    /// Registers an adapter (replacing one of the same protocol).
    pub fn with(self, a: Arc<dyn ProtocolAdapter>) -> Self {
        let mut by: [Option<Arc<dyn ProtocolAdapter>>; 4] = (*self.by).clone();
        let i = slot(a.protocol());
        by[i] = Some(a);
        Self { by: Arc::new(by) }
    }

    /// The adapter of a protocol.
    pub fn get(&self, p: Protocol) -> Option<&Arc<dyn ProtocolAdapter>> {
        self.by[slot(p)].as_ref()
    }
}

/// Sends requests to upstream providers (the server provides one over hyper + rustls).
pub trait UpstreamClient: Send + Sync + 'static {
    /// Sends one request; resolves at response headers.
    fn send(&self, req: http::Request<Bytes>) -> BoxFuture<'static, Result<http::Response<Body>, BoxError>>;
}
