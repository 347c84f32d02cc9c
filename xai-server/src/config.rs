//! The TOML configuration of DESIGN §6: parsing with `${VAR}` expansion, validation that names the field and the
//! line, and conversion into the core's [`Catalog`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use xai_core::layers::GatewayConfig;
use xai_core::memory::{Catalog, PoolConfig};
use xai_core::policy::wire::OrderedMap;
use xai_core::policy::{Account, ModelPattern, Policy, Role, Status, VirtualKey};
use xai_core::routing::{Provider, UpstreamKey};
use xai_core::{AccountId, KeyDigest, KeyId, Level, Micros, Price, Protocol, ProviderId, Secret, UpstreamKeyId};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub listen: Option<String>,
    /// Root admin credential.
    pub admin_token: Option<String>,
    /// Where state lives.
    pub data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://…` | `postgres://…`; default SQLite under the data dir).
    pub database_url: Option<String>,
    /// Redis URL (cluster-wide limits and the change feed).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel (one per cluster; several clusters may share a Redis).
    pub redis_prefix: Option<String>,
    /// Server tunables.
    #[serde(default)]
    pub server: ServerSection,
    /// Routing tunables.
    #[serde(default)]
    pub routing: RoutingSection,
    /// Upstream providers.
    #[serde(default)]
    pub providers: Vec<Spanned<ProviderCfg>>,
    /// Level → backup level.
    #[serde(default)]
    pub switch_over: Option<Spanned<BTreeMap<String, u32>>>,
    /// The account tree.
    #[serde(default)]
    pub accounts: Vec<Spanned<AccountCfg>>,
    /// Prices per model.
    #[serde(default)]
    pub pricing: BTreeMap<String, PriceCfg>,
    /// Billing: the day's time zone, unpriced models.
    #[serde(default)]
    pub billing: BillingSection,
    /// Anomaly detection (docs/anomalies.md).
    #[serde(default)]
    pub anomalies: xai_core::anomaly::AnomalyConfig,
}

/// `[billing]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSection {
    /// The IANA time zone whose midnight starts a new day for rpd, tpd, daily_limit, subscriptions and rollups
    /// (default UTC).
    pub time_zone: Option<String>,
    /// A request for a model without a price: `"free"` (served at zero cost, counted and logged) or `"refuse"`.
    pub unpriced: UnpricedCfg,
}

/// `[billing] unpriced`
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnpricedCfg {
    /// Served at zero cost.
    #[default]
    Free,
    /// Refused with 403 `model_not_priced`.
    Refuse,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Largest request body (413 above).
    pub max_body_bytes: u64,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// One log line per request (target `xai::access`, level info).
    pub access_log: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self { max_body_bytes: 32 << 20, shutdown_grace_ms: 30_000, access_log: true }
    }
}

/// `[routing]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// Per attempt, until response headers.
    pub attempt_timeout_ms: u64,
    /// Overall, across attempts.
    pub request_timeout_ms: u64,
    /// Attempt budget per request.
    pub max_attempts: u32,
    /// First cooldown after 5xx/timeout.
    pub backoff_base_ms: u64,
    /// Cap of cooldowns.
    pub backoff_max_ms: u64,
    /// Cooldown after a 429 without retry-after.
    pub default_retry_after_ms: u64,
    /// Output tokens assumed by admission when a request sets no cap.
    pub default_max_tokens: u64,
    /// Upstream connect timeout.
    pub connect_timeout_ms: u64,
}

impl Default for RoutingSection {
    fn default() -> Self {
        Self {
            attempt_timeout_ms: 120_000,
            request_timeout_ms: 600_000,
            max_attempts: 6,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            default_retry_after_ms: 5_000,
            default_max_tokens: 4096,
            connect_timeout_ms: 10_000,
        }
    }
}

/// `[[providers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderCfg {
    /// Unique name.
    pub name: String,
    /// `openai` | `openai-responses` | `anthropic` | `gemini`.
    pub protocol: Protocol,
    /// Base URL (OpenAI's includes `/v1`; Anthropic's and Gemini's are the host).
    pub base_url: Spanned<String>,
    /// Upstream keys.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Level.
    #[serde(default = "one")]
    pub level: u32,
    /// Models served (globs).
    #[serde(default)]
    pub models: Vec<ModelPattern>,
    /// Round-robin weight of each key.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[[accounts]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountCfg {
    /// `root` or `parent/child` path.
    pub name: String,
    /// Virtual keys to import (stored as digests).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Role.
    #[serde(default)]
    pub role: Role,
    /// Status.
    #[serde(default)]
    pub status: Status,
    /// Model globs.
    pub allow_models: Option<Vec<ModelPattern>>,
    /// Ordered rewrites.
    #[serde(default)]
    pub model_mapper: OrderedMap<String>,
    /// Glob → level.
    #[serde(default)]
    pub level_mapper: OrderedMap<u32>,
    /// Default level.
    pub level: Option<u32>,
    /// CIDRs.
    pub allow_ips: Option<Vec<IpNet>>,
    /// Endpoint resources.
    pub resources: Option<Vec<String>>,
    /// Limits.
    pub rpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Credits per day (decimal string).
    pub daily_limit: Option<Micros>,
    /// Initial credits (decimal string).
    pub credits: Option<Micros>,
    /// Disable the account when anomaly detection flags it (docs/anomalies.md).
    #[serde(default)]
    pub freeze_on_anomaly: Option<bool>,
}

/// `[pricing."model"]`, credits per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceCfg {
    /// Input.
    #[serde(default)]
    pub input: f64,
    /// Output.
    #[serde(default)]
    pub output: f64,
    /// Cached input.
    pub cached_input: Option<f64>,
    /// Cache write.
    pub cache_write: Option<f64>,
    /// Reasoning.
    pub reasoning: Option<f64>,
    /// Per image.
    #[serde(default)]
    pub per_image: f64,
    /// Per search call.
    #[serde(default)]
    pub per_search: f64,
}

/// A config error with its line.
#[derive(Debug)]
pub struct ConfigError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Expands `${VAR}` from the environment. Values are escaped for a TOML basic string, the usual place of a
/// reference (`keys = ["${OPENAI_KEY}"]`). An unset variable is an error naming it and its line.
pub fn expand_env(src: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(src.len());
    let mut errors = Vec::new();
    let mut rest = src;
    let mut consumed = 0;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            errors.push(ConfigError { line: Some(line_of(src, consumed + i)), message: "unterminated ${".into() });
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match (valid, valid.then(|| env(name)).flatten()) {
            (true, Some(v)) => {
                for c in v.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
            }
            (true, None) => errors.push(ConfigError {
                line: Some(line_of(src, consumed + i)),
                message: format!("environment variable {name} is not set (referenced as ${{{name}}})"),
            }),
            (false, _) => errors.push(ConfigError {
                line: Some(line_of(src, consumed + i)),
                message: format!("invalid variable reference ${{{name}}}"),
            }),
        }
        let step = i + 2 + end + 1;
        consumed += step;
        rest = &rest[step..];
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

impl Config {
    /// Parses and validates a file's text (after `${VAR}` expansion with `env`).
    pub fn parse(src: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
        let text = expand_env(src, env)?;
        let cfg: Config = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            let mut message = e.message().to_string();
            if let Some(s) = e.span() {
                let snippet = text.get(s.clone()).unwrap_or("").lines().next().unwrap_or("");
                let line_text = text.lines().nth(line.unwrap_or(1) - 1).unwrap_or("").trim();
                if !line_text.is_empty() {
                    message = format!("{message} (at `{}`)", if line_text.len() > 80 { snippet } else { line_text });
                }
            }
            vec![ConfigError { line, message }]
        })?;
        let errs = cfg.validate(&text);
        if errs.is_empty() { Ok(cfg) } else { Err(errs) }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| vec![ConfigError { line: None, message: format!("cannot read {}: {e}", path.display()) }])?;
        Config::parse(&src, &|k| std::env::var(k).ok())
    }

    fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if let Some(tz) = &self.billing.time_zone
            && let Err(e) = xai_core::day::Calendar::new(tz)
        {
            errs.push(ConfigError { line: None, message: format!("billing.time_zone: {e}") });
        }
        let mut err = |span: std::ops::Range<usize>, m: String| {
            errs.push(ConfigError { line: Some(line_of(text, span.start)), message: m })
        };
        let mut names = HashSet::new();
        let mut levels = HashSet::new();
        for p in &self.providers {
            let (span, p) = (p.span(), p.get_ref());
            if !names.insert(p.name.as_str()) {
                err(span.clone(), format!("providers: duplicate provider name {:?}", p.name));
            }
            let url = p.base_url.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<http::Uri>().is_err() {
                err(p.base_url.span(), format!("providers.base_url: {url:?} is not an http(s) URL"));
            }
            if p.keys.is_empty() {
                err(span.clone(), format!("providers.keys: provider {:?} has no keys", p.name));
            }
            if p.keys.iter().any(|k| k.trim().is_empty()) {
                err(span.clone(), format!("providers.keys: provider {:?} has an empty key", p.name));
            }
            if p.models.is_empty() {
                err(span.clone(), format!("providers.models: provider {:?} serves no models", p.name));
            }
            levels.insert(p.level);
        }
        if let Some(sw) = &self.switch_over {
            for (from, to) in sw.get_ref() {
                match from.parse::<u32>() {
                    Ok(f) if levels.contains(&f) && levels.contains(to) => {}
                    Ok(_) => err(sw.span(), format!("switch_over: {from} = {to} names a level with no provider")),
                    Err(_) => err(sw.span(), format!("switch_over: {from:?} is not a level number")),
                }
            }
        }
        let mut paths = HashSet::new();
        let mut keys = HashSet::new();
        for a in &self.accounts {
            let (span, a) = (a.span(), a.get_ref());
            let name = a.name.trim_matches('/');
            if name.is_empty() || name.split('/').any(|s| s.is_empty() || s.trim() != s) {
                err(span.clone(), format!("accounts.name: {:?} is not a valid account path", a.name));
                continue;
            }
            if !paths.insert(name.to_string()) {
                err(span.clone(), format!("accounts.name: duplicate account {name:?}"));
            }
            if let Some((parent, _)) = name.rsplit_once('/')
                && !self.accounts.iter().any(|b| b.get_ref().name.trim_matches('/') == parent)
            {
                err(span.clone(), format!("accounts.name: parent account {parent:?} of {name:?} is not defined"));
            }
            for k in &a.keys {
                if k.trim().is_empty() {
                    err(span.clone(), format!("accounts.keys: a key of {name:?} is empty"));
                }
                if !keys.insert(k.as_str()) {
                    err(span.clone(), format!("accounts.keys: a key of {name:?} is used twice"));
                }
            }
            if a.credits.is_some_and(|c| c.0 < 0) {
                err(span.clone(), format!("accounts.credits: {name:?} has negative credits"));
            }
        }
        for (model, p) in &self.pricing {
            let all = [
                Some(p.input),
                Some(p.output),
                p.cached_input,
                p.cache_write,
                p.reasoning,
                Some(p.per_image),
                Some(p.per_search),
            ];
            if all.into_iter().flatten().any(|v| !v.is_finite() || v < 0.0) {
                errs.push(ConfigError {
                    line: None,
                    message: format!("pricing.{model:?}: prices must be non-negative numbers"),
                });
            }
        }
        errs
    }

    /// Gateway tunables.
    pub fn gateway(&self) -> GatewayConfig {
        let r = &self.routing;
        GatewayConfig {
            max_body_bytes: self.server.max_body_bytes,
            attempt_timeout: Duration::from_millis(r.attempt_timeout_ms),
            request_timeout: Duration::from_millis(r.request_timeout_ms),
            max_attempts: r.max_attempts.max(1),
            default_retry_after: Duration::from_millis(r.default_retry_after_ms),
            default_max_tokens: r.default_max_tokens,
            unpriced: match self.billing.unpriced {
                UnpricedCfg::Free => xai_core::layers::Unpriced::Free,
                UnpricedCfg::Refuse => xai_core::layers::Unpriced::Refuse,
            },
            ..GatewayConfig::default()
        }
    }

    /// Key pool tunables.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            backoff_base: Duration::from_millis(self.routing.backoff_base_ms),
            backoff_max: Duration::from_millis(self.routing.backoff_max_ms),
        }
    }

    /// The catalog the in-memory store is built from. Ids are assigned in file order; keys are digested here and
    /// their text dropped.
    pub fn catalog(&self) -> Catalog {
        let mut providers = Vec::new();
        let mut next_key = 1u32;
        for (i, p) in self.providers.iter().enumerate() {
            let p = p.get_ref();
            let keys = p
                .keys
                .iter()
                .map(|k| {
                    let id = UpstreamKeyId(next_key);
                    next_key += 1;
                    UpstreamKey { id, secret: Secret::new(Arc::from(k.trim())), weight: p.weight.max(1) }
                })
                .collect();
            providers.push(Arc::new(Provider {
                id: ProviderId(i as u32 + 1),
                name: p.name.as_str().into(),
                protocol: p.protocol,
                base_url: p.base_url.get_ref().trim_end_matches('/').into(),
                models: p.models.clone(),
                level: Level(p.level),
                keys,
            }));
        }
        let switch_over: HashMap<Level, Level> = self
            .switch_over
            .iter()
            .flat_map(|s| s.get_ref().iter())
            .filter_map(|(f, t)| Some((Level(f.parse().ok()?), Level(*t))))
            .collect();
        let mut ids: HashMap<String, AccountId> = HashMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            ids.insert(a.get_ref().name.trim_matches('/').to_string(), AccountId(i as u64 + 1));
        }
        let mut accounts = Vec::new();
        let mut keys = Vec::new();
        for a in &self.accounts {
            let a = a.get_ref();
            let path = a.name.trim_matches('/');
            let id = ids[path];
            let parent = path.rsplit_once('/').and_then(|(p, _)| ids.get(p).copied());
            let policy = Policy {
                allow_models: a.allow_models.clone(),
                model_mapper: a.model_mapper.0.iter().map(|(k, v)| (k.clone(), Arc::from(v.as_str()))).collect(),
                level_mapper: a.level_mapper.0.iter().map(|(k, v)| (k.clone(), Level(*v))).collect(),
                level: a.level.map(Level),
                allow_ips: a.allow_ips.clone(),
                resources: a.resources.clone(),
                rpm: a.rpm,
                rpd: a.rpd,
                tpm: a.tpm,
                tpd: a.tpd,
                daily_limit: a.daily_limit,
                model_limits: Vec::new(),
                freeze_on_anomaly: a.freeze_on_anomaly,
            };
            accounts.push(Account {
                id,
                parent,
                name: path.rsplit('/').next().unwrap_or(path).into(),
                path: path.into(),
                status: a.status,
                role: a.role,
                policy,
                balance: a.credits.unwrap_or_default(),
            });
            for k in &a.keys {
                let k = k.trim();
                let n = keys.len() as u64 + 1;
                keys.push(VirtualKey {
                    id: KeyId(n),
                    account: id,
                    prefix: key_prefix(k).into(),
                    digest: KeyDigest::of(k),
                    status: Status::Active,
                    expires_at: None,
                    policy: None,
                });
            }
        }
        let prices = self
            .pricing
            .iter()
            .map(|(m, p)| {
                let c = |v: f64| Micros::from_credits_f64(v).unwrap_or_default();
                let price = Price {
                    input: c(p.input),
                    output: c(p.output),
                    cached_input: p.cached_input.map(c),
                    cache_write: p.cache_write.map(c),
                    reasoning: p.reasoning.map(c),
                    per_image: c(p.per_image),
                    per_search: c(p.per_search),
                };
                (Arc::from(m.as_str()), price)
            })
            .collect();
        Catalog { accounts, keys, providers, switch_over, prices }
    }
}

/// What may be shown of a key: its first characters (never more than a third of it).
pub fn key_prefix(k: &str) -> String {
    let n = (k.chars().count() / 3).clamp(1, 8);
    format!("{}…", k.chars().take(n).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "KEY" => Some("sk-\"quoted\"".into()),
            "ACME" => Some("sk-acme-123456".into()),
            _ => None,
        }
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
admin_token = "admin-secret"

[[providers]]
name = "openai"
protocol = "openai"
base_url = "http://127.0.0.1:9/v1/"
keys = ["${KEY}", "sk-two"]
level = 1
models = ["gpt-*", "o*"]

[[providers]]
name = "backup"
protocol = "openai"
base_url = "http://127.0.0.1:9/v1"
keys = ["sk-three"]
level = 2
models = ["gpt-*"]

[switch_over]
1 = 2

[[accounts]]
name = "acme"
keys = ["${ACME}"]
role = "owner"
allow_models = ["*"]
level = 1
model_mapper = { "gpt-3.5*" = "gpt-4o-mini", "*" = "gpt-4o" }
level_mapper = { "claude-*" = 2 }
rpm = 600
credits = "1000"

[[accounts]]
name = "acme/research"
keys = ["sk-research-1"]
allow_models = ["gpt-4o*"]
allow_ips = ["10.0.0.0/8", "::1/128"]
rpm = 60

[pricing."gpt-4o-mini"]
input = 0.15
output = 0.60
cached_input = 0.075
"#;

    #[test]
    fn parses_the_design_shape() {
        let c = Config::parse(GOOD, &env).unwrap();
        let cat = c.catalog();
        assert_eq!(cat.providers.len(), 2);
        assert_eq!(cat.providers[0].keys[0].secret.expose().as_ref(), "sk-\"quoted\"");
        assert_eq!(&*cat.providers[0].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(cat.switch_over[&Level(1)], Level(2));
        let acme = &cat.accounts[0];
        assert_eq!(
            acme.policy.model_mapper.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["gpt-3.5*", "*"],
            "document order kept"
        );
        assert_eq!(acme.balance, Micros(1_000_000_000));
        assert_eq!(cat.accounts[1].parent, Some(acme.id));
        assert_eq!(cat.keys[0].digest, KeyDigest::of("sk-acme-123456"));
        assert_eq!(cat.prices[&Arc::from("gpt-4o-mini")].cached_input, Some(Micros(75_000)));
        assert!(!format!("{cat:?}").contains("sk-acme-123456"), "no key text survives in the catalog");
    }

    fn first_error(src: &str) -> ConfigError {
        Config::parse(src, &env).unwrap_err().remove(0)
    }

    #[test]
    fn errors_name_field_and_line() {
        let bad_protocol = GOOD.replacen("protocol = \"openai\"", "protocol = \"grpc\"", 1);
        let e = first_error(&bad_protocol);
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("grpc") && e.message.contains("protocol"), "{e}");

        let typo = GOOD.replacen("rpm = 60\n", "rpn = 60\n", 1);
        let e = first_error(&typo);
        assert!(e.message.contains("rpn"), "{e}");
        assert_eq!(e.line, Some(40), "{e}");

        let glob = GOOD.replacen("\"gpt-4o*\"]", "\"gpt-[4o\"]", 1);
        let e = first_error(&glob);
        assert!(e.message.contains("gpt-[4o") && e.line == Some(38), "{e}");

        let cidr = GOOD.replacen("10.0.0.0/8", "10.0.0.0/99", 1);
        let e = first_error(&cidr);
        assert_eq!(e.line, Some(39), "{e}");

        let missing = GOOD.replacen("${KEY}", "${NOPE}", 1);
        let e = first_error(&missing);
        assert!(e.message.contains("NOPE") && e.line == Some(9), "{e}");

        let orphan = GOOD.replacen("name = \"acme/research\"", "name = \"other/research\"", 1);
        let e = first_error(&orphan);
        assert!(e.message.contains("parent account \"other\"") && e.line == Some(35), "{e}");

        let money = GOOD.replacen("credits = \"1000\"", "credits = \"ten\"", 1);
        assert!(first_error(&money).message.contains("ten"));

        let url = GOOD.replacen("http://127.0.0.1:9/v1/", "ftp://x", 1);
        let e = first_error(&url);
        assert!(e.message.contains("base_url") && e.line == Some(8), "{e}");

        let sw = GOOD.replacen("1 = 2", "1 = 7", 1);
        assert!(first_error(&sw).message.contains("switch_over"));
    }

    #[test]
    fn prefixes_show_little() {
        assert_eq!(key_prefix("sk-acme-123456"), "sk-a…");
        assert_eq!(key_prefix("ab"), "a…");
    }
}
