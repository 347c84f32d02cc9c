//! loadbench: the load benchmark of xai-server.
//!
//! Starts the in-process mock OpenAI upstream and a real `xai-server` process in front of it
//! (auth, ACL, model mapping, limits and metering all on), then measures each phase against
//! both targets in the same run: "direct" (the mock alone) and "xai" (through the gateway).
//! Reports absolute figures, the latency xai adds and the throughput ratio, plus xai-server's
//! CPU time per request. Every reply is verified; any failure makes the exit status non-zero.
//!
//!   loadbench                      # ~1 min, release build of xai-server next to this binary
//!   loadbench --quick              # a few seconds: the CI smoke test
//!   loadbench --targets direct     # the mock alone (no xai-server needed)
//!
//! The `anthropic-stream` phase compares two arms through the gateway instead: an Anthropic
//! client (`POST /v1/messages`, streaming) whose model goes to an `anthropic` provider
//! (passthrough) vs one whose model goes to an `openai` provider (translated both ways), both
//! served by the same mock with the same content.
//!
//! All traffic stays on 127.0.0.1 and every phase is bounded in count and time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use xai_benches::driver::{self, PhaseRun, Probe, Target, Workload};
use xai_benches::mock::{MockConfig, MockStats, MockUpstream};
use xai_benches::procstat;
use xai_benches::server::{self, ServerOptions, XaiServer};

#[derive(Parser, Debug)]
#[command(name = "loadbench", about = "Load benchmark: xai-server in front of a fast mock upstream vs the mock alone")]
struct Args {
    /// Measured seconds of each throughput phase (after its warm-up).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Measured requests of each latency phase (concurrency 1).
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// Run every phase this many times per target (alternating the order) and report medians;
    /// differences and ratios are medians of same-round pairs. Use 3 or 5 on a shared machine.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// Connections of the throughput phases.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,
    /// Intended send rate of the latency phases (open loop, requests/s).
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,
    /// A few seconds in total: short phases, every reply verified (the CI smoke test).
    #[arg(long)]
    quick: bool,
    /// Targets to measure, comma separated: direct, xai.
    #[arg(long, value_delimiter = ',', default_value = "direct,xai")]
    targets: Vec<String>,
    /// Phases to run, comma separated: latency, throughput, stream-latency, stream-throughput,
    /// anthropic-stream.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,throughput,stream-latency,stream-throughput,anthropic-stream"
    )]
    phases: Vec<String>,
    /// Content chunks per streamed reply of the mock.
    #[arg(long, value_name = "N", default_value_t = 16)]
    chunks: usize,
    /// Tokio worker threads of the load driver in the throughput phases.
    #[arg(long, value_name = "N", default_value_t = 1)]
    client_threads: usize,
    /// Tokio worker threads of the mock upstream.
    #[arg(long, value_name = "N", default_value_t = 1)]
    mock_workers: usize,
    /// The xai-server binary (else $XAI_SERVER_BIN, else next to this executable).
    #[arg(long, value_name = "PATH")]
    xai_bin: Option<PathBuf>,
    /// Pin xai-server to these CPUs (`taskset -c LIST`), e.g. "1".
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<String>,
    /// XAI_LOG for xai-server (default: the server's own default level).
    #[arg(long, value_name = "LEVEL")]
    server_log: Option<String>,
    /// An extra environment variable for xai-server (repeatable), e.g. XAI_LOG_FORMAT=json.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// Serve without prices and without credits: nothing is priced, no budget applies (the `off` arm of
    /// benches/metering.sh).
    #[arg(long)]
    server_unpriced: bool,
    /// Append this file's text to the generated xai-server config (e.g. more `[pricing."…"]` tables).
    #[arg(long, value_name = "FILE")]
    server_config_extra: Option<PathBuf>,
    /// Write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Working directory for the server's config, data and log (default: a new temp dir,
    /// removed at the end unless --keep-dir).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the working directory.
    #[arg(long)]
    keep_dir: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Latency,
    Throughput,
}

#[derive(Debug, Clone, Copy)]
struct PhaseDef {
    name: &'static str,
    title: &'static str,
    kind: Kind,
    stream: bool,
    /// The Anthropic arm: passthrough vs translated, both through xai, instead of direct vs xai.
    anthropic: bool,
}

const PHASES: &[PhaseDef] = &[
    PhaseDef {
        name: "latency",
        title: "(a) latency, c=1, non-streaming",
        kind: Kind::Latency,
        stream: false,
        anthropic: false,
    },
    PhaseDef {
        name: "throughput",
        title: "(b) throughput, non-streaming",
        kind: Kind::Throughput,
        stream: false,
        anthropic: false,
    },
    PhaseDef {
        name: "stream-latency",
        title: "(c) latency, c=1, streaming (to last byte)",
        kind: Kind::Latency,
        stream: true,
        anthropic: false,
    },
    PhaseDef {
        name: "stream-throughput",
        title: "(c) throughput, streaming",
        kind: Kind::Throughput,
        stream: true,
        anthropic: false,
    },
    PhaseDef {
        name: "anthropic-stream",
        title: "(d) throughput, streaming, Anthropic client: anthropic upstream vs openai upstream",
        kind: Kind::Throughput,
        stream: true,
        anthropic: true,
    },
];

/// The two sides a phase compares: (baseline, subject).
fn sides(def: &PhaseDef) -> (&'static str, &'static str) {
    if def.anthropic { ("passthrough", "translated") } else { ("direct", "xai") }
}

/// Run settings after defaults and --quick.
#[derive(Debug, Clone)]
struct Settings {
    duration: Duration,
    warmup: Duration,
    requests: u64,
    warmup_requests: u64,
    rate: f64,
    concurrency: usize,
    client_threads: usize,
    settle: Duration,
    repeat: usize,
}

impl Settings {
    fn from(a: &Args) -> Self {
        let (duration, warmup, requests, warmup_requests, rate, settle) =
            if a.quick { (1.0, 0.3, 200, 50, 1000.0, 0.1) } else { (5.0, 1.0, 2000, 200, 500.0, 0.5) };
        Self {
            duration: Duration::from_secs_f64(a.duration.unwrap_or(duration).max(0.1)),
            warmup: Duration::from_secs_f64(warmup),
            requests: a.requests.unwrap_or(requests).max(1),
            warmup_requests,
            rate: a.rate.unwrap_or(rate).max(1.0),
            concurrency: a.concurrency.max(1),
            client_threads: a.client_threads.max(1),
            settle: Duration::from_secs_f64(settle),
            repeat: a.repeat.max(1),
        }
    }
}

const MODEL: &str = "gpt-3.5-turbo";
/// The Anthropic arm's passthrough model (mapped to `claude-haiku-bench` on the `anthropic` provider); its
/// translated side asks [`MODEL`] (mapped to `gpt-4o-mini` on the `openai` provider).
const CLAUDE_MODEL: &str = "claude-3-5-haiku-latest";

/// An Anthropic streaming request for `model`, the same conversation as [`request_body`].
fn messages_body(model: &str) -> Bytes {
    let v = json!({
        "model": model,
        "system": "You are a concise assistant.",
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
        "max_tokens": 64,
        "temperature": 0.2,
        "stream": true
    });
    Bytes::from(v.to_string())
}

/// One side of a phase: where its requests go, what they are, which mock endpoint must answer.
struct Arm {
    target: Arc<Target>,
    pid: Option<u32>,
    w: Workload,
    /// The mock answers on `/v1/messages` (else `/v1/chat/completions`).
    upstream_messages: bool,
}

fn request_body(stream: bool) -> Bytes {
    let mut v = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello in a few words."}
        ],
        "max_tokens": 64,
        "temperature": 0.2
    });
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    Bytes::from(v.to_string())
}

/// One target's measurement of one phase, with the upstream's view of it.
#[derive(Debug)]
struct Measured {
    run: PhaseRun,
    upstream: MockStats,
    /// The gateway's (VmRSS, VmHWM) in KiB right after the run.
    server_mem_kb: Option<(u64, u64)>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
        "mean": h.mean() / 1000.0,
        "count": h.len(),
    })
}

fn per_req_us(secs: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| secs * 1e6 / n as f64)
}

fn measured_json(m: &Measured, def: &PhaseDef) -> Value {
    let r = &m.run;
    let mut v = json!({
        "sent": r.sent,
        "ok": r.ok,
        "errors": r.errors,
        "error_samples": r.error_samples,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "rps": r.rps(),
        "latency_us": hist_json(&r.latency),
        "upstream_requests": m.upstream.chat + m.upstream.messages,
        "upstream_connections": m.upstream.connections,
        "upstream_per_request": if r.sent > 0 {
            (m.upstream.chat + m.upstream.messages) as f64 / r.sent as f64
        } else {
            0.0
        },
        "cpu": {
            "server_s": r.cpu.server_s,
            "server_us_per_req": r.cpu.server_s.and_then(|s| per_req_us(s, r.ok)),
            "server_ticks_us_per_req": r.cpu.server_ticks_s.and_then(|s| per_req_us(s, r.ok)),
            "mock_us_per_req": per_req_us(r.cpu.mock_s, r.ok),
            "driver_us_per_req": per_req_us(r.cpu.driver_s, r.ok),
            "machine_busy": r.cpu.machine_busy,
        },
        "server_rss_kb": m.server_mem_kb.map(|(rss, _)| rss),
        "server_hwm_kb": m.server_mem_kb.map(|(_, hwm)| hwm),
    });
    if def.stream {
        v["ttfb_us"] = hist_json(&r.ttfb);
    }
    v
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 1000.0 { format!("{x:.0}") } else { format!("{x:.1}") }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map(fmt_num).unwrap_or_else(|| "–".into())
}

fn fmt_delta(x: Option<f64>) -> String {
    x.map(|x| format!("{}{}", if x >= 0.0 { "+" } else { "" }, fmt_num(x))).unwrap_or_else(|| "–".into())
}

fn q(h: &Histogram<u64>, quantile: f64) -> Option<f64> {
    (!h.is_empty()).then(|| us(h.value_at_quantile(quantile)))
}

/// A figure read from one measurement.
#[derive(Debug, Clone, Copy)]
enum Metric {
    P50,
    P99,
    TtfbP50,
    Rps,
    ServerCpu,
    MockCpu,
    DriverCpu,
    MachineBusy,
    ServerRss,
}

fn metric(m: &Measured, k: Metric) -> Option<f64> {
    let r = &m.run;
    match k {
        Metric::P50 => q(&r.latency, 0.5),
        Metric::P99 => q(&r.latency, 0.99),
        Metric::TtfbP50 => q(&r.ttfb, 0.5),
        Metric::Rps => (r.ok > 0).then(|| r.rps()),
        Metric::ServerCpu => r.cpu.server_s.and_then(|s| per_req_us(s, r.ok)),
        Metric::MockCpu => per_req_us(r.cpu.mock_s, r.ok),
        Metric::DriverCpu => per_req_us(r.cpu.driver_s, r.ok),
        Metric::MachineBusy => r.cpu.machine_busy.map(|b| b * 100.0),
        Metric::ServerRss => m.server_mem_kb.map(|(rss, _)| rss as f64 / 1024.0),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// One figure over the rounds: the median of each side, and the median of the paired
/// (same-round) differences and ratios, which cancel most of a shared machine's drift.
#[derive(Debug, Clone, Copy)]
struct Summary {
    direct: Option<f64>,
    xai: Option<f64>,
    delta: Option<f64>,
    ratio: Option<f64>,
}

impl Summary {
    /// `{base: …, subject: …, delta, ratio}` (`direct`/`xai`, or `passthrough`/`translated`).
    fn json(&self, (base, subject): (&str, &str)) -> Value {
        json!({base: self.direct, subject: self.xai, "delta": self.delta, "ratio": self.ratio})
    }
}

/// `direct` and `xai` of the summary are the phase's baseline and subject sides.
fn summarize(rounds: &[Vec<(String, Measured)>], k: Metric, (base, subject): (&str, &str)) -> Summary {
    let side = |name: &str| -> Vec<Option<f64>> {
        rounds.iter().map(|r| r.iter().find(|(n, _)| n == name).and_then(|(_, m)| metric(m, k))).collect()
    };
    let (d, x) = (side(base), side(subject));
    let pairs: Vec<(f64, f64)> = d.iter().zip(&x).filter_map(|(d, x)| Some(((*d)?, (*x)?))).collect();
    Summary {
        direct: median(d.iter().flatten().copied().collect()),
        xai: median(x.iter().flatten().copied().collect()),
        delta: median(pairs.iter().map(|(d, x)| x - d).collect()),
        ratio: median(pairs.iter().filter(|(d, _)| *d > 0.0).map(|(d, x)| x / d).collect()),
    }
}

struct Row {
    metric: String,
    s: Summary,
    delta: bool,
    ratio: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadbench: {e}");
            ExitCode::from(2)
        }
    }
}

fn log(msg: &str) {
    eprintln!("[loadbench] {msg}");
}

fn run(args: &Args) -> Result<bool, String> {
    let set = Settings::from(args);
    for t in &args.targets {
        if t != "direct" && t != "xai" {
            return Err(format!("unknown target {t:?} (direct, xai)"));
        }
    }
    let phases: Vec<PhaseDef> = args
        .phases
        .iter()
        .map(|p| PHASES.iter().find(|d| d.name == p).copied().ok_or_else(|| format!("unknown phase {p:?}")))
        .collect::<Result<_, _>>()?;
    let want_xai = args.targets.iter().any(|t| t == "xai");
    let want_direct = args.targets.iter().any(|t| t == "direct");
    let tck = procstat::clk_tck();
    let started = Instant::now();

    let mock =
        MockUpstream::start(MockConfig { chunks: args.chunks, workers: args.mock_workers, ..MockConfig::default() })
            .map_err(|e| format!("mock: {e}"))?;
    log(&format!("mock upstream on {}", mock.url()));

    // The server, when measured.
    let (work_dir, remove_dir) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("xai-loadbench-{}", std::process::id())), !args.keep_dir),
    };
    let mut xai: Option<XaiServer> = None;
    let mut server_info = Value::Null;
    if want_xai {
        let bin = server::find_binary(args.xai_bin.as_deref())?;
        let _ = std::fs::remove_dir_all(work_dir.join("data"));
        let mut config = server::bench_config(&mock.base_url(), server::BENCH_KEY);
        if args.server_unpriced {
            config = server::unpriced(&config);
        }
        if let Some(extra) = &args.server_config_extra {
            let text = std::fs::read_to_string(extra).map_err(|e| format!("{}: {e}", extra.display()))?;
            config.push('\n');
            config.push_str(&text);
        }
        let opts = ServerOptions {
            bin: bin.clone(),
            dir: work_dir.clone(),
            config,
            log: args.server_log.clone(),
            cpus: args.server_cpus.clone(),
            env: args.server_env.clone(),
            start_timeout: Duration::from_secs(30),
        };
        let t = Instant::now();
        let s = XaiServer::start(&opts)?;
        log(&format!(
            "xai-server {} on {} (pid {:?}, up in {} ms; log {})",
            bin.display(),
            s.addr(),
            s.pid(),
            t.elapsed().as_millis(),
            s.log_path().display()
        ));
        server_info = json!({
            "bin": bin.display().to_string(),
            "addr": s.addr().to_string(),
            "log_level": args.server_log,
            "cpus": args.server_cpus,
            "env": args.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "unpriced": args.server_unpriced,
            "config_extra": args.server_config_extra.as_ref().map(|p| p.display().to_string()),
            "startup_ms": t.elapsed().as_millis() as u64,
        });
        xai = Some(s);
    }

    let path = "/v1/chat/completions".to_string();
    let mut targets: Vec<(Arc<Target>, Option<u32>)> = Vec::new();
    if want_direct {
        targets.push((
            Arc::new(Target {
                name: "direct".into(),
                addr: mock.addr(),
                path: path.clone(),
                bearer: Some(server::BENCH_KEY.into()),
                api_key: None,
            }),
            None,
        ));
    }
    if let Some(s) = &xai {
        targets.push((
            Arc::new(Target {
                name: "xai".into(),
                addr: s.addr(),
                path,
                bearer: Some(server::BENCH_KEY.into()),
                api_key: None,
            }),
            s.pid(),
        ));
    }
    let xai_at = xai.as_ref().map(|s| (s.addr(), s.pid()));
    let arms = |def: &PhaseDef| -> Vec<Arm> {
        if !def.anthropic {
            let w = Workload {
                stream: def.stream,
                expect_usage: def.stream,
                anthropic: false,
                body: request_body(def.stream),
            };
            return targets
                .iter()
                .map(|(t, pid)| Arm { target: t.clone(), pid: *pid, w: w.clone(), upstream_messages: false })
                .collect();
        }
        let Some((addr, pid)) = xai_at else { return Vec::new() };
        [("passthrough", CLAUDE_MODEL, true), ("translated", MODEL, false)]
            .into_iter()
            .map(|(name, model, upstream_messages)| Arm {
                target: Arc::new(Target {
                    name: name.into(),
                    addr,
                    path: "/v1/messages".into(),
                    bearer: None,
                    api_key: Some(server::BENCH_KEY.into()),
                }),
                pid,
                w: Workload { stream: true, expect_usage: true, anthropic: true, body: messages_body(model) },
                upstream_messages,
            })
            .collect()
    };

    let mut failures: Vec<String> = Vec::new();
    let mut phase_json = Vec::new();
    let mut rows: Vec<(String, (&str, &str), Vec<Row>)> = Vec::new();
    for def in &phases {
        let arms = arms(def);
        if arms.is_empty() {
            log(&format!("{}: skipped (it needs the xai target)", def.name));
            continue;
        }
        // One measurement per target and round. Odd rounds run the targets in reverse order, so
        // that a drift of the (shared) machine favours neither side.
        let mut rounds: Vec<Vec<(String, Measured)>> = Vec::new();
        for round in 0..set.repeat {
            let mut order: Vec<&Arm> = arms.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut results = Vec::new();
            for arm in order {
                let (target, pid, w) = (&arm.target, &arm.pid, &arm.w);
                let probe = Probe { server_pid: *pid, tck };
                let tag = if set.repeat > 1 { format!(" (round {}/{})", round + 1, set.repeat) } else { String::new() };
                log(&format!("{} -> {}{tag}", def.name, target.name));
                let before = mock.stats();
                let run = match def.kind {
                    Kind::Latency => {
                        driver::run_paced(target.clone(), w.clone(), set.warmup_requests, set.requests, set.rate, probe)
                    }
                    Kind::Throughput => driver::run_closed(
                        target.clone(),
                        w.clone(),
                        set.concurrency,
                        set.client_threads,
                        set.warmup,
                        set.duration,
                        probe,
                    ),
                };
                // Let the upstream finish what the gateway may still be sending.
                std::thread::sleep(set.settle);
                let upstream = mock.stats().since(&before);
                let server_mem_kb = pid.and_then(procstat::memory_kb);
                let m = Measured { run, upstream, server_mem_kb };
                let what = format!("{} / {}{tag}", def.name, target.name);
                if m.run.errors > 0 {
                    failures.push(format!(
                        "{what}: {} of {} requests failed, e.g. {}",
                        m.run.errors,
                        m.run.sent,
                        m.run.error_samples.first().map_or("?", String::as_str)
                    ));
                }
                if m.run.ok == 0 {
                    failures.push(format!("{what}: no successful request"));
                }
                let (seen, other, kind) = if arm.upstream_messages {
                    (m.upstream.messages, m.upstream.chat, "messages")
                } else {
                    (m.upstream.chat, m.upstream.messages, "chat")
                };
                if m.run.errors == 0 && (seen != m.run.sent || other != 0) {
                    failures.push(format!(
                        "{what}: the upstream saw {seen} {kind} requests (and {other} others) for {} client requests",
                        m.run.sent
                    ));
                }
                log(&format!(
                    "  ok {} errors {} rps {:.0} p50 {} µs p99 {} µs{}",
                    m.run.ok,
                    m.run.errors,
                    m.run.rps(),
                    fmt_opt(q(&m.run.latency, 0.5)),
                    fmt_opt(q(&m.run.latency, 0.99)),
                    metric(&m, Metric::ServerCpu).map(|c| format!(" server CPU {c:.1} µs/req")).unwrap_or_default()
                ));
                results.push((target.name.clone(), m));
            }
            rounds.push(results);
        }
        if let Some(s) = xai.as_mut()
            && !s.is_running()
        {
            failures.push(format!("xai-server exited during {}; log tail:\n{}", def.name, s.log_tail(20)));
        }

        let sides = sides(def);
        let sum = |k: Metric| summarize(&rounds, k, sides);
        let mut r = Vec::new();
        let mut summary = serde_json::Map::new();
        let mut add = |label: String, key: &str, k: Metric, delta: bool, ratio: bool| {
            let s = sum(k);
            summary.insert(key.to_string(), s.json(sides));
            r.push(Row { metric: label, s, delta, ratio });
        };
        match def.kind {
            Kind::Latency => {
                let what = if def.stream { "to last byte" } else { "latency" };
                add(format!("{what} p50 µs"), "latency_p50_us", Metric::P50, true, true);
                add(format!("{what} p99 µs"), "latency_p99_us", Metric::P99, true, true);
                if def.stream {
                    add("first byte p50 µs".into(), "ttfb_p50_us", Metric::TtfbP50, true, true);
                }
                add("xai-server CPU µs/req".into(), "server_cpu_us_per_req", Metric::ServerCpu, false, false);
            }
            Kind::Throughput => {
                add("req/s".into(), "rps", Metric::Rps, false, true);
                add("p99 µs".into(), "latency_p99_us", Metric::P99, true, true);
                // Both arms of the Anthropic phase run through xai: its CPU is the figure to compare.
                let cpu_ratio = def.anthropic;
                add("xai-server CPU µs/req".into(), "server_cpu_us_per_req", Metric::ServerCpu, cpu_ratio, cpu_ratio);
                add("mock CPU µs/req".into(), "mock_cpu_us_per_req", Metric::MockCpu, false, false);
                add("driver CPU µs/req".into(), "driver_cpu_us_per_req", Metric::DriverCpu, false, false);
                add("machine CPU busy %".into(), "machine_busy_pct", Metric::MachineBusy, false, false);
                add("xai-server RSS MiB after".into(), "server_rss_mib", Metric::ServerRss, false, false);
            }
        }
        let mut pj = json!({
            "phase": def.name,
            "title": def.title,
            "stream": def.stream,
            "concurrency": if def.kind == Kind::Latency { 1 } else { set.concurrency },
            "schedule": if def.kind == Kind::Latency {
                json!({"open_loop_rate": set.rate, "requests": set.requests, "warmup_requests": set.warmup_requests})
            } else {
                json!({"closed_loop_s": set.duration.as_secs_f64(), "warmup_s": set.warmup.as_secs_f64()})
            },
            "summary": summary,
            "rounds": rounds
                .iter()
                .map(|rr| rr.iter().map(|(n, m)| (n.clone(), measured_json(m, def))).collect::<serde_json::Map<_, _>>())
                .collect::<Vec<_>>(),
        });
        match def.kind {
            Kind::Latency => {
                pj["added_latency_us"] = json!({"p50": sum(Metric::P50).delta, "p99": sum(Metric::P99).delta});
            }
            Kind::Throughput if def.anthropic => {
                pj["throughput_ratio"] = json!(sum(Metric::Rps).ratio);
                let cpu = sum(Metric::ServerCpu);
                pj["server_cpu_us_per_req"] = json!({sides.0: cpu.direct, sides.1: cpu.xai});
                pj["server_cpu_ratio"] = json!(cpu.ratio);
            }
            Kind::Throughput => {
                pj["throughput_ratio"] = json!(sum(Metric::Rps).ratio);
                pj["server_cpu_us_per_req"] = json!(sum(Metric::ServerCpu).xai);
            }
        }
        let title = if def.kind == Kind::Throughput {
            def.title.replace("throughput", &format!("throughput, c={}", set.concurrency))
        } else {
            def.title.to_string()
        };
        rows.push((title, sides, r));
        phase_json.push(pj);
    }

    // Metering: the usage records of the run should be there (a warning only: the admin API
    // is the tests' business, but a run that metered nothing did not measure the whole path).
    let mut usage_seen = Value::Null;
    if let Some(s) = &xai {
        let deadline = Instant::now() + Duration::from_secs(if args.quick { 3 } else { 5 });
        let mut seen = false;
        let mut last = String::new();
        while Instant::now() < deadline {
            match server::http_get_auth(s.addr(), "/admin/v1/usage?limit=1", Some(server::ADMIN_TOKEN)) {
                Ok((200, body)) => {
                    seen = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["records"].as_array().map(|a| !a.is_empty()))
                        .unwrap_or(false);
                    last = "200 without records".into();
                    if seen {
                        break;
                    }
                }
                Ok((st, body)) => last = format!("{st}: {}", &body[..body.len().min(120)]),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !seen {
            log(&format!("warning: no usage record visible at /admin/v1/usage ({last})"));
        }
        usage_seen = json!(seen);
    }

    let stop = xai.take().map(|s| s.stop(Duration::from_secs(5)));
    if let Some(st) = &stop {
        log(&format!("xai-server {st}"));
    }
    drop(mock);
    if remove_dir && want_xai {
        let _ = std::fs::remove_dir_all(&work_dir);
    }

    // Report.
    let mut md = String::new();
    md.push_str(&format!(
        "## loadbench: direct (mock) vs xai (xai-server in front of it){}\n",
        if args.quick { " — quick" } else { "" }
    ));
    let mut header = None;
    for (title, (base, subject), r) in &rows {
        if header != Some((base, subject)) {
            header = Some((base, subject));
            md.push_str(&format!(
                "\n| phase | metric | {base} | {subject} | {subject} − {base} | {subject} / {base} |\n"
            ));
            md.push_str("|---|---|---:|---:|---:|---:|\n");
        }
        for (i, row) in r.iter().enumerate() {
            let delta = if row.delta { fmt_delta(row.s.delta) } else { String::new() };
            let ratio = if row.ratio {
                row.s.ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into())
            } else {
                String::new()
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                if i == 0 { title.as_str() } else { "" },
                row.metric,
                fmt_opt(row.s.direct),
                fmt_opt(row.s.xai),
                delta,
                ratio
            ));
        }
    }
    md.push_str(&format!(
        "\nlatency phases: open loop at {}/s on 1 connection, {} requests (+{} warm-up), latency from the intended send time; \
         throughput phases: closed loop, {} connections, {:.1} s (+{:.1} s warm-up), {} driver thread(s). \
         {} CPUs; the driver, the mock and xai-server share them.{}\n",
        set.rate,
        set.requests,
        set.warmup_requests,
        set.concurrency,
        set.duration.as_secs_f64(),
        set.warmup.as_secs_f64(),
        set.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if set.repeat > 1 {
            format!(
                " Each phase ran {} times per target, alternating the order: medians; the differences and ratios \
                 (xai vs direct, translated vs passthrough) are medians of same-round pairs.",
                set.repeat
            )
        } else {
            String::new()
        },
    ));
    if failures.is_empty() {
        md.push_str("\nall requests succeeded and were verified.\n");
    } else {
        md.push_str("\n**FAILED**:\n");
        for f in &failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    println!("{md}");

    let report = json!({
        "tool": "loadbench",
        "quick": args.quick,
        "ok": failures.is_empty(),
        "failures": failures,
        "settings": {
            "duration_s": set.duration.as_secs_f64(),
            "warmup_s": set.warmup.as_secs_f64(),
            "requests": set.requests,
            "warmup_requests": set.warmup_requests,
            "rate": set.rate,
            "concurrency": set.concurrency,
            "client_threads": set.client_threads,
            "repeat": set.repeat,
            "mock_workers": args.mock_workers,
            "chunks": args.chunks,
            "model": MODEL,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "server": server_info,
        "server_stop": stop,
        "usage_records_seen": usage_seen,
        "phases": phase_json,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
        log(&format!("wrote {}", out.display()));
    }
    Ok(failures.is_empty())
}
