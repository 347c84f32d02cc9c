//! `xai-server`: the reference server of the xai AI gateway.
//!
//! With no arguments it starts the embedded default (127.0.0.1:8080, state under `./xai-data/`). See the README
//! for the configuration reference.
#![forbid(unsafe_code)]

mod admin;
mod admin_anomaly;
mod anomaly_task;
mod config;
mod durable;
mod feed;
mod metrics;
mod pool_sync;
mod server;
mod upstream;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use xai_core::control::SpendingMeter;
use xai_core::memory::InMemoryKeyPool;
use xai_core::{Gateway, PolicyStore};

use crate::config::Config;

// The request path allocates many small, short-lived buffers; mimalloc serves them with far less CPU than the
// system allocator (measured with the load benchmark: see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The xai AI gateway server.
#[derive(Debug, Parser)]
#[command(name = "xai-server", version, about = "xai: one governed entry point for all AI traffic")]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "XAI_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "XAI_LISTEN")]
    listen: Option<String>,
    /// Directory for state (the admin token digest; the database once durable storage lands).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://…` | `postgres://…`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates a configuration file and explains every error with its line.
    Check {
        /// The file to check.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Check { config }) = &cli.command {
        return check(config);
    }
    // One worker per CPU this process may run on (affinity-aware), unless XAI_WORKERS says otherwise.
    let workers = std::env::var("XAI_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xai-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xai-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let cat = c.catalog();
            println!(
                "{}: ok ({} providers, {} accounts, {} virtual keys, {} priced models)",
                path.display(),
                cat.providers.len(),
                cat.accounts.len(),
                cat.keys.len(),
                cat.prices.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(access_log: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        std::env::var("XAI_LOG").ok().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    if !access_log {
        filter.push_str(",xai::access=off");
    }
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("XAI_LOG_FORMAT").is_ok_and(|f| f == "json") {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

/// The root admin token's digest: from the config, else from the data dir, else a new token printed once.
fn admin_digest(cfg: &Config, data_dir: &Path, notes: &mut Vec<String>) -> Result<[u8; 32], String> {
    if let Some(t) = cfg.admin_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        notes.push("admin token: from the configuration".into());
        return Ok(Sha256::digest(t.as_bytes()).into());
    }
    let file = data_dir.join("admin-token.sha256");
    if let Ok(hex_digest) = std::fs::read_to_string(&file) {
        let v = hex::decode(hex_digest.trim()).map_err(|_| format!("{} is corrupt", file.display()))?;
        notes.push(format!("admin token: the one printed at first start (digest in {})", file.display()));
        return v.try_into().map_err(|_| format!("{} is corrupt", file.display()));
    }
    let token = format!("xai-admin-{}", hex::encode(rand::random::<[u8; 24]>()));
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    write_private(&file, hex::encode(digest).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    notes.push(format!("admin token (shown once; only its digest is kept in {}):\n\n    {token}\n", file.display()));
    Ok(digest)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?.write_all(data)
}

async fn run(cli: Cli) -> Result<(), String> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p).map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(|e| format!("{}: {e}", p.display())).collect();
            lines.join("\n")
        })?,
        None => Config::default(),
    };
    init_logging(cfg.server.access_log);
    if let Some(tz) = &cfg.billing.time_zone {
        xai_core::day::set_time_zone(tz)?;
    }
    let data_dir = cli.data_dir.clone().or_else(|| cfg.data_dir.clone()).unwrap_or_else(|| PathBuf::from("xai-data"));
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    let mut notes = Vec::new();
    notes.push(format!("days start at midnight {}", xai_core::day::calendar().name()));
    notes.push(match &cli.config {
        Some(p) => format!("config: {}", p.display()),
        None => "config: none, embedded default (pass --config FILE to add providers and accounts)".into(),
    });
    let token_digest = admin_digest(&cfg, &data_dir, &mut notes)?;

    let db_url = durable::database_url(cli.database_url.as_deref(), cfg.database_url.as_deref(), &data_dir);
    let redis_url = cli.redis_url.clone().or_else(|| cfg.redis_url.clone());
    notes.push(format!(
        "state: {} (data dir {}); limits: {}",
        durable::redact_url(&db_url),
        data_dir.display(),
        match &redis_url {
            Some(u) => format!("cluster-wide in {}", durable::redact_url(u)),
            None => "per instance (no --redis-url)".into(),
        }
    ));

    let catalog = cfg.catalog();
    let summary = format!(
        "providers: {}; accounts: {}; virtual keys: {}; priced models: {}",
        if catalog.providers.is_empty() {
            "none".to_string()
        } else {
            catalog
                .providers
                .iter()
                .map(|p| format!("{} ({}, level {}, {} keys)", p.name, p.protocol, p.level, p.keys.len()))
                .collect::<Vec<_>>()
                .join(", ")
        },
        catalog.accounts.len(),
        catalog.keys.len(),
        catalog.prices.len()
    );
    notes.push(summary);

    // `--database-url memory` keeps everything in memory (tests, benchmarks, throwaway instances).
    let state = if db_url == "memory" { None } else { Some(durable::open(&db_url, &data_dir, catalog.clone()).await?) };
    let control = match &state {
        Some(s) => s.control.clone(),
        None => Arc::new(xai_core::control::ControlPlane::new(catalog).map_err(|e| e.to_string())?),
    };
    durable::set_file_prices(cfg.catalog().prices);
    if let Some(s) = &state {
        durable::apply_saved_prices(&s.sql, &control).await;
    }
    notes.push(format!(
        "restored: {} accounts, {} credits in balances",
        control.accounts(xai_core::control::Scope::Root).len(),
        durable::total_credits(&control)
    ));
    let store = control.store();
    let pool = Arc::new(InMemoryKeyPool::new(&store.route_table(), cfg.pool()));
    // `XAI_REDIS_PREFIX` overrides the config (benchmarks and tests sharing one Redis).
    let prefix = std::env::var("XAI_REDIS_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| cfg.redis_prefix.clone())
        .unwrap_or_else(|| "xai:".into());
    if prefix.contains('{') || prefix.contains('}') {
        return Err("redis_prefix must not contain '{' or '}' (they delimit the hash tag)".into());
    }
    let limits = durable::limits(redis_url.as_deref(), &prefix)?;
    let instance = hex::encode(rand::random::<[u8; 8]>());
    let feed = match &state {
        Some(s) => {
            let f = feed::Feed::new(redis_url.as_deref(), &prefix, &s.sql)?;
            let cache = redis_url
                .as_deref()
                .map(|url| xai_store::catalog_cache::CatalogCache::connect(url, &prefix, s.sql.master()))
                .transpose()
                .map_err(|e| e.to_string())?;
            if cache.is_some() {
                notes.push("catalog read path: memory → Redis → database".into());
            }
            f.spawn_listener(instance.clone(), s.sql.clone(), control.clone(), cache);
            f
        }
        None => feed::Feed::None,
    };
    notes.push(feed.describe().to_string());
    control.set_live_usage(limits.local);
    let spending: Arc<dyn xai_core::Meter> = Arc::new(SpendingMeter::new(limits.meter, control.clone()));
    let (meter, usage, saver): (Arc<dyn xai_core::Meter>, _, _) = match &state {
        Some(s) => {
            let usage = Arc::new(durable::usage_meter(&s.sql, spending, &data_dir).await?);
            let saver = durable::spawn_saver(s.sql.clone(), control.clone(), Duration::from_secs(1));
            (usage.clone(), Some(usage), Some(saver))
        }
        None => (spending, None, None),
    };
    admin_anomaly::configure(cfg.anomalies.clone());
    let anomaly_scans = state.as_ref().map(|s| {
        anomaly_task::spawn(s.sql.clone(), control.clone(), feed.clone(), instance.clone(), cfg.anomalies.clone())
    });
    let metrics = Arc::new(metrics::Metrics::new(pool.clone(), limits.redis.clone(), usage));
    let upstream = Arc::new(
        upstream::HyperUpstream::new(Duration::from_millis(cfg.routing.connect_timeout_ms))
            .map_err(|e| e.to_string())?,
    );
    let shared_pool = Arc::new(pool_sync::SharedPool::new(
        pool.clone(),
        &feed,
        &prefix,
        &instance,
        state.as_ref().map(|s| s.sql.clone()),
    ));
    let still_disabled = shared_pool.restore().await;
    if still_disabled > 0 {
        notes.push(format!("{still_disabled} upstream key(s) stay disabled (rejected upstream before)"));
    }
    let gateway = Gateway {
        store: store.clone(),
        pool: shared_pool.clone(),
        meter: meter.clone(),
        adapters: xai_bridges::adapters(),
        upstream,
        config: cfg.gateway(),
    };
    let listen = cli.listen.clone().or_else(|| cfg.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "xai-server {}", env!("CARGO_PKG_VERSION"));
    for n in &notes {
        let _ = writeln!(err, "  {n}");
    }
    drop(err);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "xai-server listening on {addr}");
    let _ = out.flush();
    drop(out);
    tracing::info!(%addr, "listening");

    let app = server::App {
        gateway: gateway.service::<hyper::body::Incoming>(),
        admin: admin::Admin {
            token_digest,
            control: control.clone(),
            sql: state.as_ref().map(|s| s.sql.clone()),
            feed,
            instance,
            meter: meter.clone(),
            pool,
            keys: shared_pool,
            unpriced: match cfg.billing.unpriced {
                config::UnpricedCfg::Free => "free",
                config::UnpricedCfg::Refuse => "refuse",
            },
        },
        store: store as Arc<dyn PolicyStore>,
        sql: state.as_ref().map(|s| s.sql.clone()),
        meter,
        metrics,
    };
    server::serve(listener, app, Duration::from_millis(cfg.server.shutdown_grace_ms), server::signal()).await;
    // The drain has ended and usage is flushed: save the last balances and counters.
    if let Some(scans) = anomaly_scans {
        scans.abort();
    }
    if let (Some(s), Some(saver)) = (&state, saver) {
        saver.abort();
        // Bounded: a database that refuses connections must not keep the process past an orchestrator's patience.
        match tokio::time::timeout(Duration::from_secs(5), durable::save(&s.sql, &control, control.take_changes()))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final state save failed"),
            Err(_) => {
                tracing::error!("final state save did not finish within 5 s; changes since the last save are lost")
            }
        }
        s.sql.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}
