//! Admin API helpers for the end-to-end suites (docs/admin-api.md): a small client bound to a server and a token,
//! assertions on the admin error shape, a config with providers but no accounts, and UTC date/time formatting.
//!
//! ```no_run
//! # async fn demo() {
//! use serde_json::json;
//! use xai_tests::admin::admin_gateway;
//! let (gw, root) = admin_gateway().await;
//! let acme = root.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await;
//! let key = root.issue_key(acme["id"].as_u64().unwrap(), json!({})).await;
//! # let _ = key;
//! # }
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{self, HttpResponse};
use crate::fixtures::{Gateway, two_mock_config};
use crate::harness::{TempDir, XaiServer, workspace_binary};

/// The root admin token of [`ADMIN_CONFIG`] (and of the contract config).
pub const ADMIN_TOKEN: &str = crate::harness::DEFAULT_ADMIN_TOKEN;

/// Prices of `gpt-4o-mini` in [`ADMIN_CONFIG`]: the mock's default reply (10 prompt + 5 completion tokens) costs
/// exactly 2 credits (10 × 0.1 + 5 × 0.2).
pub const MOCK_REPLY_COST: &str = "2";

/// Two providers (`mock-a` level 1, `mock-b` level 2, both serving `gpt-*`), switch-over 1 → 2, prices for
/// `gpt-4o-mini`, and no accounts: the tests build their trees through the API. Placeholders `{{MOCK_A}}` and
/// `{{MOCK_B}}` as in [`crate::fixtures::Gateway::start_with`].
pub const ADMIN_CONFIG: &str = concat!(
    two_mock_config!(),
    r#"
[pricing."gpt-4o-mini"]
input = 100000.0
output = 200000.0
"#
);

/// Starts a [`Gateway`] running [`ADMIN_CONFIG`]; returns it with a client of its server holding the root token.
pub async fn admin_gateway() -> (Gateway, AdminApi) {
    let gw = Gateway::start_with(ADMIN_CONFIG).await;
    let api = AdminApi::root(&gw.server);
    (gw, api)
}

/// An admin API client: one server, one bearer token (or none).
#[derive(Debug, Clone)]
pub struct AdminApi {
    base: String,
    token: Option<String>,
}

/// Asserts `resp` has `status` and returns its JSON body; `what` names the call in the failure message.
pub fn expect(resp: &HttpResponse, status: u16, what: &str) -> Value {
    assert_eq!(
        resp.status.as_u16(),
        status,
        "{what}: expected {status}, got {} with body {}",
        resp.status,
        resp.text()
    );
    if resp.body.is_empty() { Value::Null } else { resp.json() }
}

/// Asserts an admin error `{"error":{"code","message"}}` with `status` and `code`; returns the message.
pub fn assert_error(resp: &HttpResponse, status: u16, code: &str, what: &str) -> String {
    assert_eq!(
        resp.status.as_u16(),
        status,
        "{what}: expected {status} {code}, got {} with body {}",
        resp.status,
        resp.text()
    );
    let body = resp.json();
    let err = body.get("error").unwrap_or_else(|| panic!("{what}: no `error` object in {body}"));
    assert_eq!(err.get("code").and_then(Value::as_str), Some(code), "{what}: error code in {body}");
    let message = err.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{what}: error.message must be a non-empty string: {body}");
    message
}

/// The integer `id` of an admin object.
pub fn id_of(v: &Value) -> u64 {
    v.get("id").and_then(Value::as_u64).unwrap_or_else(|| panic!("no integer `id` in {v}"))
}

/// A string field.
pub fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_else(|| panic!("no string `{field}` in {v}"))
}

impl AdminApi {
    /// A client of `server` with `token`.
    pub fn new(server: &XaiServer, token: Option<&str>) -> Self {
        Self { base: format!("{}/admin/v1", server.url()), token: token.map(str::to_owned) }
    }

    /// A client with the server's root admin token.
    pub fn root(server: &XaiServer) -> Self {
        Self::new(server, Some(server.admin_token()))
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self { base: self.base.clone(), token: Some(token.to_owned()) }
    }

    /// The same server without a token.
    pub fn anonymous(&self) -> Self {
        Self { base: self.base.clone(), token: None }
    }

    /// Sends `method` to `/admin/v1{path}` with a raw body (JSON content type when non-empty).
    pub async fn send_raw(&self, method: Method, path: &str, body: impl Into<Bytes>) -> HttpResponse {
        let body = body.into();
        let auth = client::bearer_auth(self.token.as_deref());
        let headers = client::request_headers(auth.as_deref(), !body.is_empty());
        client::send(method, &format!("{}{path}", self.base), &headers, body).await
    }

    /// `GET /admin/v1{path}`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.send_raw(Method::GET, path, Bytes::new()).await
    }

    /// `POST /admin/v1{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> HttpResponse {
        self.send_raw(Method::POST, path, serde_json::to_vec(body).unwrap_or_default()).await
    }

    /// `PATCH /admin/v1{path}` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> HttpResponse {
        self.send_raw(Method::PATCH, path, serde_json::to_vec(body).unwrap_or_default()).await
    }

    /// `DELETE /admin/v1{path}`.
    pub async fn delete(&self, path: &str) -> HttpResponse {
        self.send_raw(Method::DELETE, path, Bytes::new()).await
    }

    /// Creates an account (201) with `extra` fields (an object) merged into `{"name", "parent"}`.
    pub async fn create_account(&self, name: &str, parent: Option<u64>, extra: Value) -> Value {
        let mut body = json!({"name": name, "parent": parent});
        if let Value::Object(m) = extra {
            body.as_object_mut().expect("object").extend(m);
        }
        let resp = self.post("/accounts", &body).await;
        expect(&resp, 201, &format!("POST /accounts {body}"))
    }

    /// `GET /accounts/{id}` (200).
    pub async fn account(&self, id: u64) -> Value {
        expect(&self.get(&format!("/accounts/{id}")).await, 200, &format!("GET /accounts/{id}"))
    }

    /// `GET /accounts` (200): the list.
    pub async fn accounts(&self) -> Vec<Value> {
        let body = expect(&self.get("/accounts").await, 200, "GET /accounts");
        body.get("accounts").and_then(Value::as_array).cloned().unwrap_or_else(|| panic!("no `accounts` in {body}"))
    }

    /// The paths of `GET /accounts`, in the order listed.
    pub async fn paths(&self) -> Vec<String> {
        self.accounts().await.iter().map(|a| str_of(a, "path").to_owned()).collect()
    }

    /// `PATCH /accounts/{id}` (200).
    pub async fn patch_account(&self, id: u64, body: Value) -> Value {
        expect(&self.patch(&format!("/accounts/{id}"), &body).await, 200, &format!("PATCH /accounts/{id} {body}"))
    }

    /// `POST /accounts/{id}/keys` (201): the issued key object (with `key`).
    pub async fn issue_key(&self, account: u64, body: Value) -> Value {
        let resp = self.post(&format!("/accounts/{account}/keys"), &body).await;
        expect(&resp, 201, &format!("POST /accounts/{account}/keys {body}"))
    }

    /// Issues a key and returns `(key id, key)`.
    pub async fn new_key(&self, account: u64) -> (u64, String) {
        let k = self.issue_key(account, json!({})).await;
        (id_of(&k), str_of(&k, "key").to_owned())
    }

    /// `POST /accounts/{id}/credits` with `{"amount": amount}` (200).
    pub async fn credits(&self, account: u64, amount: &str) -> Value {
        let resp = self.post(&format!("/accounts/{account}/credits"), &json!({"amount": amount})).await;
        expect(&resp, 200, &format!("POST /accounts/{account}/credits {amount}"))
    }

    /// `GET /accounts/{id}/credits` (200): `{"balance", "ledger"}`.
    pub async fn ledger(&self, account: u64) -> Value {
        expect(
            &self.get(&format!("/accounts/{account}/credits")).await,
            200,
            &format!("GET /accounts/{account}/credits"),
        )
    }

    /// The balance of an account as shown by `GET /accounts/{id}`.
    pub async fn balance(&self, account: u64) -> String {
        str_of(&self.account(account).await, "balance").to_owned()
    }

    /// `GET /accounts/{id}/today` (200).
    pub async fn today(&self, account: u64) -> Value {
        expect(&self.get(&format!("/accounts/{account}/today")).await, 200, &format!("GET /accounts/{account}/today"))
    }

    /// Polls `GET /accounts/{id}/today` until `pred` holds (spending is recorded after the response) and returns it;
    /// panics after 5 s.
    pub async fn today_when(&self, account: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let t = self.today(account).await;
            if pred(&t) {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "/today of {account} never got there; last: {t:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /explain` (200).
    pub async fn explain(&self, body: Value) -> Value {
        expect(&self.post("/explain", &body).await, 200, &format!("POST /explain {body}"))
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `t`.
pub fn rfc3339(t: SystemTime) -> String {
    let s = unix_secs(t);
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", r / 3600, r % 3600 / 60, r % 60)
}

/// `YYYY-MM-DD` (UTC) of today plus `offset_days`.
pub fn utc_date(offset_days: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs(SystemTime::now()).div_euclid(86_400) + offset_days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 time `from_now` in the future.
pub fn rfc3339_in(from_now: Duration) -> String {
    rfc3339(SystemTime::now() + from_now)
}

/// Whether a response status is `s`.
pub fn is(resp: &HttpResponse, s: u16) -> bool {
    resp.status == StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT)
}

/// How long one `xai` invocation may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The `xai` CLI binary: `XAI_CLI_BIN`, else `target/<profile>/xai` next to the test executable, built (once per
/// process) when missing or older than the sources of xai-cli (see [`workspace_binary`]).
pub fn cli_binary() -> PathBuf {
    workspace_binary("xai-cli", "xai", "XAI_CLI_BIN", &["xai-cli", "xai-core"])
}

/// What one `xai` run printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command line (without the token).
    pub args: Vec<String>,
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Asserts exit code `code` and returns `self`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "xai {:?}: expected exit {code}, got {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        self.expect_code(0).stdout
    }

    /// Stdout as JSON (for `--json`); panics with the output when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("xai {:?}: stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.args, self.stdout, self.stderr)
        })
    }
}

/// The `xai` CLI pointed at a server with a token through `XAI_SERVER` / `XAI_TOKEN`.
#[derive(Debug, Clone)]
pub struct Cli {
    server: String,
    token: String,
}

impl Cli {
    /// The CLI of `server` with `token`.
    pub fn new(server: &XaiServer, token: &str) -> Self {
        Self { server: server.url(), token: token.to_owned() }
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self { server: self.server.clone(), token: token.to_owned() }
    }

    /// Runs `xai ARGS` (bounded by [`CLI_TIMEOUT`]) with `stdin` as its standard input; asserts that the token
    /// appears in neither output.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> CliOutput {
        let bin = cli_binary();
        let dir = TempDir::new("xai-cli");
        let stdin_path = dir.path().join("stdin");
        std::fs::write(&stdin_path, stdin).expect("write stdin");
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(args)
            .env("XAI_SERVER", &self.server)
            .env("XAI_TOKEN", &self.token)
            .env("NO_COLOR", "1")
            .env_remove("XAI_CONFIG")
            .stdin(Stdio::from(std::fs::File::open(&stdin_path).expect("open stdin")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("xai {args:?} did not finish within {CLI_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let out = CliOutput {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(!text.contains(&self.token), "xai {args:?}: the token appears on {name}:\n{text}");
        }
        out
    }

    /// Runs `xai ARGS` with an empty standard input.
    pub async fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with_stdin(args, "").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(86_401)), "1970-01-02T00:00:01Z");
        // 2024-02-29T12:34:56Z (a leap day)
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)), "2024-02-29T12:34:56Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
