//! Runs a real `xai-server` process for a test (docs/test-contract.md, "xai-server as a process").
//!
//! The binary is found by [`workspace_binary`] (which finds the `xai` CLI of [`crate::admin`] the same way): through
//! `XAI_SERVER_BIN`, else next to the test executable (`target/<profile>/xai-server`); when it is missing or older than
//! the workspace sources it is built once per test process with `cargo build -p xai-server` into the same target
//! directory. Each server gets its own temporary directory holding
//! the config, the data dir and its stdout/stderr; stderr is printed when the test fails (or with
//! `XAI_TEST_SHOW_LOGS=1`), and the directory is kept then for inspection. The process is killed on drop.
//!
//! Config placeholders `{{NAME}}` are replaced from [`ServerBuilder::var`] (xai itself expands `${VAR}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::client;

/// How long a server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long usage records may take to appear by default.
pub const USAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The admin token of the contract's test config.
pub const DEFAULT_ADMIN_TOKEN: &str = "admin-secret";

/// Environment variables of the developer's shell that would change what the server under test does.
const SCRUBBED_ENV: &[&str] =
    &["XAI_CONFIG", "XAI_LISTEN", "XAI_ADMIN_TOKEN", "DATABASE_URL", "REDIS_URL", "XAI_DATA_DIR", "XAI_LOG_FORMAT"];

/// A temporary directory, removed on drop unless the thread is panicking (then kept, and its path printed).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

/// The newest modification time among the sources (`src/`, `migrations/`, `Cargo.toml`) of these workspace crates.
fn newest_source_mtime(crates: &[&str]) -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                *newest = Some(newest.map_or(m, |n| n.max(m)));
            }
        }
    }
    let root = workspace_root();
    let mut newest = None;
    for krate in crates {
        walk(&root.join(krate).join("src"), &mut newest);
        walk(&root.join(krate).join("migrations"), &mut newest);
        if let Ok(m) = std::fs::metadata(root.join(krate).join("Cargo.toml")).and_then(|m| m.modified()) {
            newest = Some(newest.map_or(m, |n: SystemTime| n.max(m)));
        }
    }
    newest
}

/// Whether `bin` exists and is newer than the sources of `crates`.
fn is_fresh(bin: &Path, crates: &[&str]) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return false };
    newest_source_mtime(crates).is_none_or(|src| src <= built)
}

/// `cargo build -p package --bin bin` into the target directory and profile of `profile_dir`.
fn cargo_build(profile_dir: &Path, package: &str, bin: &str) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = profile_dir.parent().ok_or("no target dir")?;
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let mut cmd = std::process::Command::new(&cargo);
    cmd.args(["build", "-p", package, "--bin", bin, "--manifest-path"])
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.arg("--profile").arg(other);
        }
    }
    eprintln!("xai-tests: building {bin} ({cmd:?})");
    let status = cmd.status().map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo build -p {package}` failed: {status}")) }
}

/// Finds or builds `bin`, without caching.
fn locate_or_build(package: &str, bin: &str, env_var: &str, sources: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("{env_var}={} is not a file", path.display())) };
    }
    let dir = profile_dir().ok_or("cannot locate the test executable")?;
    let path = dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if is_fresh(&path, sources) {
        return Ok(path);
    }
    let built = cargo_build(&dir, package, bin);
    if path.is_file() {
        if let Err(e) = built {
            eprintln!("xai-tests: {e}; testing the existing (possibly stale) {}", path.display());
        }
        Ok(path)
    } else {
        Err(format!("no {bin} binary at {} ({})", path.display(), built.err().unwrap_or_default()))
    }
}

/// Binary `bin` of workspace package `package`: `$env_var` when set, else `target/<profile>/<bin>` next to the test
/// executable, built with `cargo build -p <package> --bin <bin>` into the same target directory when missing or older
/// than the sources of the workspace crates `sources`. Located (and built) once per test process; panics with a hint
/// when there is no binary.
pub fn workspace_binary(package: &str, bin: &str, env_var: &str, sources: &[&str]) -> PathBuf {
    static FOUND: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    // Held while building: concurrent tests wait for the one build instead of starting their own.
    let mut found = FOUND.lock().unwrap_or_else(PoisonError::into_inner);
    let result = found.entry(bin.to_owned()).or_insert_with(|| locate_or_build(package, bin, env_var, sources)).clone();
    drop(found);
    result.unwrap_or_else(|e| panic!("xai-tests: {e}. Build it with `cargo build -p {package}` or set {env_var}."))
}

/// The `xai-server` binary to test (see [`workspace_binary`]; `XAI_SERVER_BIN` overrides it).
pub fn server_binary() -> PathBuf {
    workspace_binary(
        "xai-server",
        "xai-server",
        "XAI_SERVER_BIN",
        &["xai-core", "xai-bridges", "xai-store", "xai-server"],
    )
}

/// Finds the `admin_token = "…"` of a config, for the usage helpers.
fn admin_token_of(config: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("admin_token")?.trim_start().strip_prefix('=')?.trim();
        Some(rest.trim_matches('"').to_owned())
    })
}

/// Options for starting a server.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    config: String,
    vars: Vec<(String, String)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
}

impl ServerBuilder {
    /// Replaces `{{name}}` in the config with `value`.
    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// Sets an environment variable of the server process.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Uses this data directory instead of a fresh one (e.g. to restart on the same store).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The config with every placeholder replaced.
    pub fn rendered_config(&self) -> String {
        let mut config = self.config.clone();
        for (name, value) in &self.vars {
            config = config.replace(&format!("{{{{{name}}}}}"), value);
        }
        config
    }

    /// Starts the server and waits (at most [`START_TIMEOUT`]) for its listening line.
    pub async fn start(self) -> XaiServer {
        let bin = server_binary();
        let dir = TempDir::new("xai-e2e");
        let config = self.rendered_config();
        let config_path = dir.path().join("xai.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let data_dir = self.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let stdout = std::fs::File::create(&stdout_path).expect("create stdout log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");

        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        for name in SCRUBBED_ENV {
            cmd.env_remove(name);
        }
        if std::env::var_os("XAI_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("XAI_LOG", "info");
        }
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = XaiServer {
            child,
            addr: None,
            admin_token: admin_token_of(&config).unwrap_or_else(|| DEFAULT_ADMIN_TOKEN.to_owned()),
            config_path,
            data_dir,
            stdout_path,
            stderr_path,
            exited: None,
            dir,
        };
        server.addr = Some(server.wait_listening().await);
        server
    }
}

/// A running `xai-server` process, killed on drop.
#[derive(Debug)]
pub struct XaiServer {
    child: Child,
    addr: Option<std::net::SocketAddr>,
    admin_token: String,
    config_path: PathBuf,
    data_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    exited: Option<ExitStatus>,
    // Last: removed after the process is gone.
    dir: TempDir,
}

impl Drop for XaiServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // A server that never listened has had its output printed in the start-up panic already.
        let started = self.addr.is_some();
        if (started && std::thread::panicking()) || std::env::var_os("XAI_TEST_SHOW_LOGS").is_some() {
            self.print_logs();
        }
    }
}

impl XaiServer {
    /// Options for a server running `config` (a TOML string with `{{NAME}}` placeholders).
    pub fn builder(config: impl Into<String>) -> ServerBuilder {
        ServerBuilder { config: config.into(), vars: Vec::new(), env: Vec::new(), args: Vec::new(), data_dir: None }
    }

    /// Starts a server running `config` as it is.
    pub async fn start(config: &str) -> Self {
        Self::builder(config).start().await
    }

    async fn wait_listening(&mut self) -> std::net::SocketAddr {
        const PREFIX: &str = "xai-server listening on ";
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
            // Only a complete line: the port may still be half written otherwise.
            let complete = out.split_inclusive('\n').filter(|l| l.ends_with('\n'));
            if let Some(line) = complete.clone().find_map(|l| l.trim().strip_prefix(PREFIX)) {
                return line
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("bad listening line {line:?}: {e}\n{}", self.stderr()));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                panic!("xai-server exited with {status} before listening.\nstdout:\n{out}\nstderr:\n{}", self.stderr());
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "xai-server printed no `{PREFIX}ADDR` line within {START_TIMEOUT:?}.\nstdout:\n{out}\nstderr:\n{}",
                    self.stderr()
                );
            }
            // The line arrives through a file: poll it, bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr.expect("server started")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server process has been reaped already")
    }

    /// The admin token found in the config (or the contract's default).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The temporary directory of this server (config, logs, default data dir).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file as written.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The data directory the server runs on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Prints the server's stdout and stderr to the test's stderr.
    pub fn print_logs(&self) {
        eprintln!("--- xai-server {:?} stdout ---\n{}", self.addr, self.stdout());
        eprintln!("--- xai-server {:?} stderr ---\n{}--- end of xai-server stderr ---", self.addr, self.stderr());
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.pid());
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                status
            }
            Ok(Err(e)) => panic!("waiting for xai-server: {e}"),
            Err(_) => panic!("xai-server did not exit within {timeout:?}"),
        }
    }

    /// `GET /admin/v1/usage?limit=1000` with `admin_token`: the records, oldest first.
    pub async fn admin_usage(&self, admin_token: &str) -> Vec<Value> {
        let resp = client::get(&format!("{}/admin/v1/usage?limit=1000", self.url()), Some(admin_token)).await;
        assert_eq!(resp.status, 200, "GET /admin/v1/usage: {}", resp.text());
        let body = resp.json();
        body.get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| panic!("GET /admin/v1/usage: no `records` array in {body}"))
    }

    /// Polls the usage records (with the config's admin token) until one satisfies `pred` and returns the newest
    /// such record; panics after `timeout` with every record seen.
    pub async fn wait_usage<F>(&self, pred: F, timeout: Duration) -> Value
    where
        F: Fn(&Value) -> bool,
    {
        let records = self.wait_usage_all(|records| records.iter().any(&pred), timeout).await;
        records.into_iter().rev().find(|r| pred(r)).unwrap_or_default()
    }

    /// Polls the usage records until `pred` holds for the whole list (oldest first) and returns it; panics after
    /// `timeout` with every record seen.
    pub async fn wait_usage_all<F>(&self, pred: F, timeout: Duration) -> Vec<Value>
    where
        F: Fn(&[Value]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let records = self.admin_usage(&self.admin_token).await;
            if pred(&records) {
                return records;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "usage records: the expected ones did not appear within {timeout:?}; records:\n{}",
                    serde_json::to_string_pretty(&records).unwrap_or_default()
                );
            }
            // Records are written asynchronously (contract): poll, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `xai-server check --config FILE` on `config` (bounded to 30 s).
pub async fn run_check(config: &str) -> Output {
    let bin = server_binary();
    let dir = TempDir::new("xai-check");
    let path = dir.path().join("xai.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(&bin);
    cmd.arg("check").arg("--config").arg(&path).stdin(Stdio::null()).kill_on_drop(true);
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("`xai-server check` did not finish within 30 s")
        .expect("run xai-server check")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_admin_token() {
        let b = XaiServer::builder("admin_token = \"tok\"\nbase_url = \"{{MOCK}}/v1\"\nother = \"${KEEP}\"\n")
            .var("MOCK", "http://127.0.0.1:1");
        let c = b.rendered_config();
        assert_eq!(c, "admin_token = \"tok\"\nbase_url = \"http://127.0.0.1:1/v1\"\nother = \"${KEEP}\"\n");
        assert_eq!(admin_token_of(&c).as_deref(), Some("tok"));
        assert_eq!(admin_token_of("x = 1"), None);
    }
}
