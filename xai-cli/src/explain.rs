//! `xai explain`: what the gateway would decide for a request, step by step, without sending one.

use std::net::IpAddr;

use clap::{ArgGroup, Args, ValueEnum};
use serde_json::{Map, Value, json};

use crate::args::Secret;
use crate::render::{self, DASH, field, text};
use crate::request::ApiRequest;

/// Exit code of `xai explain` when the request would be refused.
pub const REFUSED: u8 = 3;

/// Explain the decision for a caller, a model and an endpoint.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(group(ArgGroup::new("caller").required(true).args(["key", "key_id", "account"])))]
pub struct ExplainArgs {
    /// The virtual key itself, as a client would send it; `-` reads it from standard input (keeps it out of
    /// shell history)
    #[arg(long, value_name = "KEY")]
    pub key: Option<Secret>,
    /// A virtual key by id
    #[arg(long, value_name = "ID")]
    pub key_id: Option<u64>,
    /// An account by id (its own policy, no key)
    #[arg(long, value_name = "ID")]
    pub account: Option<u64>,
    /// The model the client asks for
    #[arg(long)]
    pub model: String,
    /// The endpoint called
    #[arg(long, value_enum, default_value_t = Endpoint::Chat)]
    pub endpoint: Endpoint,
    /// The client's IP address, checked against allow_ips
    #[arg(long)]
    pub ip: Option<IpAddr>,
}

/// A client endpoint, as the admin API names it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// POST /v1/chat/completions
    Chat,
    /// POST /v1/responses
    Responses,
    /// POST /v1/messages
    Messages,
    /// Gemini generateContent / streamGenerateContent
    Generate,
    /// Anthropic and Gemini token counting
    #[value(name = "count_tokens")]
    CountTokens,
    /// GET /v1/models
    Models,
    /// POST /v1/embeddings
    Embeddings,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::Generate => "generate",
            Self::CountTokens => "count_tokens",
            Self::Models => "models",
            Self::Embeddings => "embeddings",
        }
    }
}

impl ExplainArgs {
    /// Replaces `--key -` with the first line read by `read` (standard input in the binary).
    pub fn resolve_key(mut self, read: impl FnOnce() -> std::io::Result<String>) -> Result<Self, String> {
        if self.key.as_ref().is_some_and(|k| k.expose() == "-") {
            let line = read().map_err(|e| format!("could not read the key from standard input: {e}"))?;
            let key = line.lines().next().unwrap_or_default().trim().to_owned();
            if key.is_empty() {
                return Err("--key -: standard input held no key".into());
            }
            self.key = Some(Secret::new(key));
        }
        Ok(self)
    }

    /// The admin API call for this command.
    pub fn request(&self) -> Result<ApiRequest, String> {
        let mut body = Map::new();
        if let Some(k) = &self.key {
            body.insert("key".into(), json!(k.expose()));
        }
        if let Some(id) = self.key_id {
            body.insert("key_id".into(), json!(id));
        }
        if let Some(id) = self.account {
            body.insert("account".into(), json!(id));
        }
        body.insert("model".into(), json!(self.model));
        body.insert("endpoint".into(), json!(self.endpoint.as_str()));
        if let Some(ip) = self.ip {
            body.insert("ip".into(), json!(ip.to_string()));
        }
        Ok(ApiRequest::post("/explain", Value::Object(body)))
    }

    /// The answer as text.
    pub fn render(&self, answer: &Value) -> String {
        render_decision(answer)
    }
}

/// 0 when the request would be allowed, [`REFUSED`] otherwise.
pub fn exit_code(answer: &Value) -> u8 {
    if answer.get("allowed").and_then(Value::as_bool) == Some(true) { 0 } else { REFUSED }
}

/// Each step with ✓ or ✗, then the verdict.
pub fn render_decision(answer: &Value) -> String {
    let mut out = Vec::new();
    let steps = render::array(answer, "steps");
    if !steps.is_empty() {
        let mut t = render::table(["", "step", "account", "detail"]);
        for s in steps {
            let mark = match s.get("ok").and_then(Value::as_bool) {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "·",
            };
            let detail = match s.get("detail").filter(|d| !d.is_null()) {
                Some(d) => text(d),
                None => {
                    let rest: Map<String, Value> = s
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(k, _)| !matches!(k.as_str(), "step" | "account" | "ok"))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    text(&Value::Object(rest))
                }
            };
            t.add_row(vec![mark.to_owned(), field(s, "step"), field(s, "account"), detail]);
        }
        out.push(render::finish(&t));
    }
    if exit_code(answer) == 0 {
        let mut verdict = format!("✓ allowed: upstream model {}", field(answer, "upstream_model"));
        if let Some(level) = answer.get("level").filter(|l| !l.is_null()) {
            verdict.push_str(&format!(" at level {}", text(level)));
        }
        out.push(verdict);
        let plan = render::array(answer, "plan");
        if !plan.is_empty() {
            let steps: Vec<String> =
                plan.iter().map(|p| if p.is_number() { format!("level {p}") } else { text(p) }).collect();
            out.push(format!("  route plan: {}", steps.join("  →  ")));
        }
    } else {
        let by = answer.get("refused_by").and_then(Value::as_str).unwrap_or(DASH);
        out.push(format!("✗ refused by {by}: {}", field(answer, "reason")));
    }
    out.join("\n\n")
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use http::Method;

    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        args: ExplainArgs,
    }

    fn parse(argv: &[&str]) -> Result<ExplainArgs, String> {
        Probe::try_parse_from(std::iter::once("explain").chain(argv.iter().copied()))
            .map(|p| p.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn one_caller_is_required() {
        assert!(parse(&["--model", "gpt-4o"]).is_err());
        assert!(parse(&["--model", "gpt-4o", "--account", "1", "--key-id", "2"]).is_err());
        assert!(parse(&["--account", "1"]).is_err(), "--model is required");
    }

    #[test]
    fn bodies() {
        let r = parse(&["--account", "2", "--model", "gpt-5"]).unwrap().request().unwrap();
        assert_eq!((r.method, r.path.as_str()), (Method::POST, "/admin/v1/explain"));
        assert_eq!(r.body.unwrap(), json!({"account": 2, "model": "gpt-5", "endpoint": "chat"}));
        let r = parse(&["--key-id", "7", "--model", "claude-3", "--endpoint", "count_tokens", "--ip", "10.1.2.3"])
            .unwrap()
            .request()
            .unwrap();
        assert_eq!(
            r.body.unwrap(),
            json!({"key_id": 7, "model": "claude-3", "endpoint": "count_tokens", "ip": "10.1.2.3"})
        );
        let r = parse(&["--key", "sk-acme", "--model", "gpt-4o"]).unwrap().request().unwrap();
        assert_eq!(r.body.unwrap(), json!({"key": "sk-acme", "model": "gpt-4o", "endpoint": "chat"}));
        assert!(parse(&["--account", "1", "--model", "m", "--ip", "10.1.2"]).is_err());
        assert!(parse(&["--account", "1", "--model", "m", "--endpoint", "images"]).is_err());
    }

    #[test]
    fn key_from_stdin() {
        let a = parse(&["--key", "-", "--model", "gpt-4o"]).unwrap();
        let a = a.resolve_key(|| Ok("sk-from-stdin\n".into())).unwrap();
        assert_eq!(a.request().unwrap().body.unwrap()["key"], "sk-from-stdin");
        let a = parse(&["--key", "-", "--model", "gpt-4o"]).unwrap();
        assert!(a.resolve_key(|| Ok(String::new())).is_err());
        assert!(!format!("{:?}", parse(&["--key", "sk-x", "--model", "m"]).unwrap()).contains("sk-x"));
    }

    #[test]
    fn refused_decision() {
        let d = json!({"allowed": false, "refused_by": "allow_models",
            "reason": "model \"gpt-5\" is not allowed for account acme/research",
            "upstream_model": null, "level": null, "plan": [],
            "steps": [
                {"step": "key", "account": "acme/research", "ok": true, "detail": "active, no expiry"},
                {"step": "status", "account": "acme/research", "ok": true, "detail": "active"},
                {"step": "allow_models", "account": "acme/research", "ok": false,
                 "detail": "\"gpt-5\" matches none of gpt-4o*"}]});
        assert_eq!(exit_code(&d), REFUSED);
        let out = render_decision(&d);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[2].trim_start().starts_with('✓') && lines[2].contains("key"), "{out}");
        assert!(lines[4].trim_start().starts_with('✗') && lines[4].contains("matches none"), "{out}");
        assert!(out.ends_with("✗ refused by allow_models: model \"gpt-5\" is not allowed for account acme/research"));
    }

    #[test]
    fn allowed_decision() {
        let d = json!({"allowed": true, "refused_by": null, "reason": null, "upstream_model": "gpt-4o-mini",
            "level": 1, "plan": [{"level": 1, "provider": "openai"}, {"level": 2, "provider": "anthropic"}],
            "steps": [{"step": "model_mapper", "account": "acme", "ok": true, "before": "gpt-3.5-turbo",
                       "after": "gpt-4o-mini"}]});
        assert_eq!(exit_code(&d), 0);
        let out = render_decision(&d);
        assert!(out.contains("before=gpt-3.5-turbo, after=gpt-4o-mini"), "{out}");
        assert!(out.contains("✓ allowed: upstream model gpt-4o-mini at level 1"));
        assert!(out.contains("route plan: level=1, provider=openai  →  level=2, provider=anthropic"), "{out}");
        let d = json!({"allowed": true, "upstream_model": "gpt-4o", "level": 1, "plan": [1, 2], "steps": []});
        assert!(render_decision(&d).ends_with("route plan: level 1  →  level 2"), "{}", render_decision(&d));
    }
}
