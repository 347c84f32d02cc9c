//! The load driver: HTTP/1.1 keep-alive connections (one per virtual user, hyper's low-level
//! client), every reply verified, latencies in HDR histograms.
//!
//! Two schedules:
//! - [`run_paced`]: open loop on one connection. Request `i` is due at `start + i / rate`;
//!   its latency is measured from that *intended* send time, so a slow reply that delays the
//!   next sends is charged to every request it delayed (no coordinated omission). Pacing
//!   sleeps to just before the due time and spins the rest, so timer slack is not measured.
//! - [`run_closed`]: closed loop at a fixed concurrency for a duration (max throughput);
//!   requests in flight at the deadline are awaited and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::check;
use crate::procstat::{CpuSnapshot, CpuUsage};

/// Name of the driver's threads (at most 15 bytes).
pub const DRIVER_THREAD_NAME: &str = "xb-driver";

/// Time limit of one request (connect, headers and the whole body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// "direct" or "xai".
    pub name: String,
    /// Server address.
    pub addr: SocketAddr,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Bearer token sent in `Authorization`, if any.
    pub bearer: Option<String>,
    /// Anthropic client credentials: this key in `x-api-key`, with `anthropic-version: 2023-06-01`.
    pub api_key: Option<String>,
}

/// What each request is.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Streaming (`"stream": true`) or not.
    pub stream: bool,
    /// Whether the request asked for a usage chunk (`stream_options.include_usage`).
    pub expect_usage: bool,
    /// An Anthropic `POST /v1/messages` request: the reply is checked as an Anthropic stream.
    pub anthropic: bool,
    /// The JSON request body.
    pub body: Bytes,
}

/// Reads CPU counters (of the gateway process when `server_pid` is set, and of this process's
/// mock and driver threads).
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The gateway process, if the target is one.
    pub server_pid: Option<u32>,
    /// Clock ticks per second.
    pub tck: u64,
}

impl Probe {
    fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot::take(self.server_pid, crate::mock::MOCK_THREAD_NAME, DRIVER_THREAD_NAME)
    }
}

/// What one run of one phase against one target measured.
#[derive(Debug, Clone)]
pub struct PhaseRun {
    /// Requests sent, warm-up and failures included (to compare with what the upstream saw).
    pub sent: u64,
    /// Verified successful requests in the measured window.
    pub ok: u64,
    /// Failed requests (any time, warm-up included).
    pub errors: u64,
    /// The first few failure messages.
    pub error_samples: Vec<String>,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Latency (ns): from the intended send time (paced) or the send time (closed loop) to
    /// the last byte of the reply.
    pub latency: Histogram<u64>,
    /// Time to the first body byte (ns), same origin.
    pub ttfb: Histogram<u64>,
    /// CPU used in the measured window.
    pub cpu: CpuUsage,
}

impl PhaseRun {
    /// Successful requests per second of the measured window.
    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }
}

/// A new latency histogram: ns, 1 µs .. 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(e);
        }
    }
}

/// Timestamps of one verified reply.
#[derive(Debug, Clone, Copy)]
struct Timing {
    first_byte: Instant,
    done: Instant,
}

/// One keep-alive HTTP/1.1 connection to a target; reconnects after an error.
#[derive(Debug)]
struct Conn {
    target: Arc<Target>,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    api_key: Option<HeaderValue>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(target: Arc<Target>) -> Result<Self, String> {
        let host = HeaderValue::from_str(&target.addr.to_string()).map_err(|e| e.to_string())?;
        let auth = match &target.bearer {
            Some(k) => Some(HeaderValue::from_str(&format!("Bearer {k}")).map_err(|e| e.to_string())?),
            None => None,
        };
        let api_key = target.api_key.as_deref().map(HeaderValue::from_str).transpose().map_err(|e| e.to_string())?;
        Ok(Self { target, host, auth, api_key, sender: None })
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads and verifies the whole reply.
    async fn request(&mut self, w: &Workload) -> Result<Timing, String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(w)).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("timeout after {REQUEST_TIMEOUT:?}"))
            }
        }
    }

    async fn request_inner(&mut self, w: &Workload) -> Result<Timing, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.target.path.as_str())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(k) = &self.api_key {
            req =
                req.header("x-api-key", k.clone()).header("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        let req = req.body(Full::new(w.body.clone())).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut first_byte = None;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading body: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if first_byte.is_none() {
                    first_byte = Some(Instant::now());
                }
                buf.extend_from_slice(&data);
            }
        }
        let done = Instant::now();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&buf[..buf.len().min(300)])));
        }
        if w.anthropic && w.stream {
            check::check_anthropic_stream(&buf)?;
        } else if w.stream {
            check::check_stream(&buf, w.expect_usage)?;
        } else {
            check::check_completion(&buf)?;
        }
        Ok(Timing { first_byte: first_byte.unwrap_or(done), done })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until `at`: sleeps the thread to ~200 µs before, then spins.
fn wait_until(at: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if at > now + SPIN {
        std::thread::sleep(at - now - SPIN);
    }
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// Open loop on one connection: `warmup` requests (not recorded), then `requests` requests
/// due at `rate` per second, latency measured from each request's intended send time.
/// Runs on its own thread and current-thread runtime.
pub fn run_paced(target: Arc<Target>, w: Workload, warmup: u64, requests: u64, rate: f64, probe: Probe) -> PhaseRun {
    let th = std::thread::Builder::new()
        .name(DRIVER_THREAD_NAME.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
            rt.block_on(paced(target, w, warmup, requests, rate, probe))
        })
        .expect("spawn driver thread");
    th.join().expect("driver thread panicked")
}

// The pacing blocks this thread on purpose: it is a dedicated current-thread runtime whose only
// work is this one connection, idle between requests.
async fn paced(target: Arc<Target>, w: Workload, warmup: u64, requests: u64, rate: f64, probe: Probe) -> PhaseRun {
    let mut tally = Tally::default();
    let mut latency = new_histogram();
    let mut ttfb = new_histogram();
    let mut conn = match Conn::new(target) {
        Ok(c) => c,
        Err(e) => {
            tally.error(e);
            return PhaseRun {
                sent: 0,
                ok: 0,
                errors: tally.errors,
                error_samples: tally.error_samples,
                elapsed: Duration::ZERO,
                latency,
                ttfb,
                cpu: CpuUsage::default(),
            };
        }
    };
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let start = Instant::now();
    for i in 0..warmup {
        wait_until(start + interval * u32::try_from(i).unwrap_or(u32::MAX));
        tally.sent += 1;
        if let Err(e) = conn.request(&w).await {
            tally.error(e);
        }
    }
    let cpu0 = probe.snapshot();
    let start = Instant::now() + interval;
    let mut end = start;
    for i in 0..requests {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        wait_until(due);
        tally.sent += 1;
        match conn.request(&w).await {
            Ok(t) => {
                tally.ok += 1;
                latency.saturating_record(nanos(t.done - due));
                ttfb.saturating_record(nanos(t.first_byte.saturating_duration_since(due)));
                end = t.done;
            }
            Err(e) => {
                tally.error(e);
                end = Instant::now();
            }
        }
    }
    let cpu1 = probe.snapshot();
    PhaseRun {
        sent: tally.sent,
        ok: tally.ok,
        errors: tally.errors,
        error_samples: tally.error_samples,
        elapsed: end.saturating_duration_since(start),
        latency,
        ttfb,
        cpu: CpuUsage::between(&cpu0, &cpu1, probe.tck),
    }
}

struct TaskOut {
    tally: Tally,
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
}

/// Closed loop: `concurrency` connections each sending back to back for `warmup` (not
/// recorded) then `duration` (recorded). `threads` tokio workers drive them.
pub fn run_closed(
    target: Arc<Target>,
    w: Workload,
    concurrency: usize,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    probe: Probe,
) -> PhaseRun {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(DRIVER_THREAD_NAME)
        .enable_all()
        .build()
        .expect("driver runtime");
    let w = Arc::new(w);
    rt.block_on(async move {
        let t0 = Instant::now();
        let measure_from = t0 + warmup;
        let deadline = measure_from + duration;
        let mut tasks = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let target = target.clone();
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = TaskOut { tally: Tally::default(), latency: new_histogram(), ttfb: new_histogram() };
                let mut conn = match Conn::new(target) {
                    Ok(c) => c,
                    Err(e) => {
                        out.tally.error(e);
                        return out;
                    }
                };
                loop {
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    out.tally.sent += 1;
                    match conn.request(&w).await {
                        Ok(t) if sent >= measure_from => {
                            out.tally.ok += 1;
                            out.latency.saturating_record(nanos(t.done - sent));
                            out.ttfb.saturating_record(nanos(t.first_byte - sent));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            out.tally.error(e);
                            // Do not hammer a dead server.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                out
            }));
        }
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu0 = probe.snapshot();
        let mut tally = Tally::default();
        let mut latency = new_histogram();
        let mut ttfb = new_histogram();
        for t in tasks {
            match t.await {
                Ok(out) => {
                    tally.sent += out.tally.sent;
                    tally.ok += out.tally.ok;
                    tally.errors += out.tally.errors;
                    for e in out.tally.error_samples {
                        if tally.error_samples.len() < 5 {
                            tally.error_samples.push(e);
                        }
                    }
                    let _ = latency.add(&out.latency);
                    let _ = ttfb.add(&out.ttfb);
                }
                Err(e) => tally.error(format!("driver task failed: {e}")),
            }
        }
        let end = Instant::now();
        let cpu1 = probe.snapshot();
        PhaseRun {
            sent: tally.sent,
            ok: tally.ok,
            errors: tally.errors,
            error_samples: tally.error_samples,
            elapsed: end.saturating_duration_since(measure_from),
            latency,
            ttfb,
            cpu: CpuUsage::between(&cpu0, &cpu1, probe.tck),
        }
    })
}
