//! OpenAI Chat Completions (`POST /v1/chat/completions`), also DeepSeek-style compatible providers.

mod stream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use xai_core::{
    BodySpans, Endpoint, GatewayError, ModelInfo, Outcome, Protocol, ProtocolAdapter, RequestMeta, StreamTap, Usage,
};

use xai_core::ir::{ChatRequest, ChatResponse, StreamDecoder, StreamEncoder};

use crate::common::{self, json_str, span_in};
use crate::translate::chat;
pub use stream::ChatStreamTap;

/// The OpenAI Chat adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAiChat;

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    messages: Option<IgnoredAny>,
    #[serde(default)]
    input: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// OpenAI's usage object (also inside stream chunks).
#[derive(Deserialize, Default, Debug, Clone, Copy)]
pub(crate) struct OaUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<OaUsage> for Usage {
    fn from(u: OaUsage) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens.unwrap_or(0),
            completion_tokens: u.completion_tokens.unwrap_or(0),
            reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            ..Usage::default()
        }
    }
}

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(msg.into())
}

/// OpenAI's `type` and `code` for a gateway error.
fn type_and_code(e: &GatewayError) -> (&'static str, Cow<'static, str>) {
    match e {
        GatewayError::Unauthorized(_) => ("invalid_request_error", "invalid_api_key".into()),
        GatewayError::Forbidden { code, .. } => ("permission_error", (*code).into()),
        GatewayError::BadRequest(_) => ("invalid_request_error", "invalid_request".into()),
        GatewayError::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large".into()),
        GatewayError::NotFound(_) => ("invalid_request_error", "unknown_url".into()),
        GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found".into()),
        GatewayError::RateLimited { .. } => ("rate_limit_exceeded", "rate_limit_exceeded".into()),
        GatewayError::UpstreamUnavailable { .. } if e.status() == StatusCode::TOO_MANY_REQUESTS => {
            ("rate_limit_exceeded", "rate_limit_exceeded".into())
        }
        GatewayError::Timeout(_) => ("timeout", "timeout".into()),
        _ => ("server_error", e.kind().into()),
    }
}

/// An OpenAI error body.
pub fn error_json(message: &str, ty: &str, code: &str) -> String {
    format!(
        "{{\"error\":{{\"message\":{},\"type\":{},\"param\":null,\"code\":{}}}}}",
        json_str(message),
        json_str(ty),
        json_str(code)
    )
}

impl ProtocolAdapter for OpenAiChat {
    fn protocol(&self) -> Protocol {
        Protocol::OpenAiChat
    }

    fn inspect(&self, endpoint: &Endpoint, body: &Bytes) -> Result<RequestMeta, GatewayError> {
        let peek: Peek<'_> = serde_json::from_slice(body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                bad(format!("request body is not valid JSON: {e}"))
            } else {
                bad(format!("invalid request body: {e}"))
            }
        })?;
        let raw_model = peek.model.ok_or_else(|| bad("you must provide a model parameter"))?;
        let model: Cow<'_, str> = serde_json::from_str(raw_model.get()).map_err(|_| bad("`model` must be a string"))?;
        if model.is_empty() {
            return Err(bad("`model` must not be empty"));
        }
        let chat = endpoint.kind == xai_core::EndpointKind::ChatCompletions;
        if chat && peek.messages.is_none() {
            return Err(bad("you must provide a messages parameter"));
        }
        if !chat && peek.input.is_none() {
            return Err(bad("you must provide an input parameter"));
        }
        let include_usage = match peek.stream_options {
            Some(raw) => serde_json::from_str::<Option<StreamOptions>>(raw.get())
                .map_err(|_| bad("`stream_options` must be an object"))?
                .unwrap_or_default()
                .include_usage
                .unwrap_or(false),
            None => false,
        };
        Ok(RequestMeta {
            model: Arc::from(&*model),
            stream: peek.stream.unwrap_or(false),
            include_usage,
            max_tokens: peek.max_completion_tokens.or(peek.max_tokens),
            body_len: body.len(),
            spans: BodySpans {
                model: span_in(body, raw_model.get()),
                stream_options: peek.stream_options.and_then(|r| span_in(body, r.get())),
            },
        })
    }

    fn error_body(&self, err: &GatewayError) -> Bytes {
        let (ty, code) = type_and_code(err);
        error_json(&err.to_string(), ty, &code).into()
    }

    fn stream_error(&self, message: &str, code: &str) -> Bytes {
        format!("data: {}\n\n", error_json(message, "server_error", code)).into()
    }

    fn models_body(&self, models: &[ModelInfo]) -> Bytes {
        let data: Vec<serde_json::Value> = models
            .iter()
            .map(|m| serde_json::json!({"id": &*m.id, "object": "model", "created": 0, "owned_by": &*m.owned_by}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default().into()
    }

    fn upstream_path(&self, endpoint: &Endpoint, _model: &str, _stream: bool) -> String {
        match endpoint.kind {
            xai_core::EndpointKind::Embeddings => "/embeddings".into(),
            _ => "/chat/completions".into(),
        }
    }

    fn authorize(&self, key: &str, headers: &mut HeaderMap) {
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {key}")) {
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
    }

    fn passthrough_request(
        &self,
        body: &Bytes,
        meta: &RequestMeta,
        upstream_model: &str,
    ) -> Result<Bytes, GatewayError> {
        rewrite(body, meta, upstream_model)
    }

    fn response_usage(&self, body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct R {
            #[serde(default)]
            usage: Option<OaUsage>,
        }
        serde_json::from_slice::<R>(body).ok()?.usage.map(Usage::from)
    }

    fn stream_tap(&self, meta: &RequestMeta) -> Box<dyn StreamTap> {
        Box::new(ChatStreamTap::new(meta.include_usage))
    }

    fn classify_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        default_retry_after: Duration,
    ) -> Outcome {
        common::classify(status, headers, body, default_retry_after, &["insufficient_quota", "billing_hard_limit"])
    }

    fn decode_request(&self, endpoint: &Endpoint, body: &Bytes) -> Result<ChatRequest, GatewayError> {
        chat::decode_request(endpoint, body)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Bytes, GatewayError> {
        chat::encode_request(req)
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, GatewayError> {
        chat::decode_response(body)
    }

    fn encode_response(&self, resp: &ChatResponse, endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
        chat::encode_response(resp, endpoint, meta)
    }

    fn stream_decoder(&self) -> Option<Box<dyn StreamDecoder>> {
        Some(Box::new(chat::ChatStreamDecoder::new()))
    }

    fn stream_encoder(&self, _endpoint: &Endpoint, meta: &RequestMeta) -> Option<Box<dyn StreamEncoder>> {
        Some(Box::new(chat::ChatStreamEncoder::new(meta)))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        chat::error_message(body)
    }
}

/// Rewrites `model` and, for streams, forces `stream_options.include_usage = true`; every other byte is kept.
/// Returns the body itself (no copy) when nothing changes.
pub(crate) fn rewrite(body: &Bytes, meta: &RequestMeta, upstream_model: &str) -> Result<Bytes, GatewayError> {
    let model_changes = &*meta.model != upstream_model;
    let usage_changes = meta.stream && !meta.include_usage;
    if !model_changes && !usage_changes {
        return Ok(body.clone());
    }
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::with_capacity(2);
    if model_changes {
        let span = meta.spans.model.clone().ok_or_else(|| GatewayError::Internal("model span missing".into()))?;
        edits.push((span, json_str(upstream_model).into_bytes()));
    }
    if usage_changes {
        match meta.spans.stream_options.clone() {
            Some(span) if body[span.clone()].first() == Some(&b'{') => {
                let mut obj: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&body[span.clone()])
                        .map_err(|_| bad("`stream_options` must be an object"))?;
                obj.insert("include_usage".into(), serde_json::Value::Bool(true));
                edits.push((span, serde_json::to_vec(&obj).map_err(|e| GatewayError::Internal(e.to_string()))?));
            }
            Some(span) => edits.push((span, b"{\"include_usage\":true}".to_vec())),
            None => {
                let end =
                    body.iter().rposition(|&b| b == b'}').ok_or_else(|| bad("request body must be a JSON object"))?;
                edits.push((end..end, b",\"stream_options\":{\"include_usage\":true}".to_vec()));
            }
        }
    }
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    for (r, with) in edits {
        out.extend_from_slice(&body[at..r.start]);
        out.extend_from_slice(&with);
        at = r.end;
    }
    out.extend_from_slice(&body[at..]);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xai_core::EndpointKind;

    fn ep() -> Endpoint {
        Endpoint { kind: EndpointKind::ChatCompletions, protocol: Protocol::OpenAiChat, path_model: None, sse: false }
    }

    fn inspect(s: &str) -> Result<(RequestMeta, Bytes), GatewayError> {
        let b = Bytes::from(s.to_string());
        OpenAiChat.inspect(&ep(), &b).map(|m| (m, b))
    }

    #[test]
    fn inspects_what_routing_needs() {
        let (m, _) = inspect(
            r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true},"max_tokens":64}"#,
        )
        .unwrap();
        assert_eq!((&*m.model, m.stream, m.include_usage, m.max_tokens), ("gpt-4o", true, true, Some(64)));
        let (m, _) =
            inspect(r#"{"model":"gpt-\u0034o","messages":[],"max_completion_tokens":9,"max_tokens":3,"stream":null}"#)
                .unwrap();
        assert_eq!((&*m.model, m.stream, m.max_tokens), ("gpt-4o", false, Some(9)));
    }

    #[test]
    fn refuses_bad_bodies_clearly() {
        for (body, needle) in [
            ("{", "not valid JSON"),
            ("[]", "invalid request body"),
            (r#"{"messages":[]}"#, "model parameter"),
            (r#"{"model":1,"messages":[]}"#, "must be a string"),
            (r#"{"model":"","messages":[]}"#, "must not be empty"),
            (r#"{"model":"m"}"#, "messages parameter"),
            (r#"{"model":"m","messages":[],"stream_options":3}"#, "stream_options"),
            (r#"{"model":"m","messages":[],"stream":"yes"}"#, "invalid request body"),
        ] {
            let e = inspect(body).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn rewrites_only_model_and_usage_option() {
        let src = r#"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}],"x_unknown":{"a":[1,2]},"stream":true}"#;
        let (m, b) = inspect(src).unwrap();
        let out = rewrite(&b, &m, "gpt-4o-mini").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["x_unknown"]["a"][1], 2);
        assert_eq!(v["messages"][0]["content"], "hi");
        // An existing stream_options keeps its other fields.
        let (m, b) = inspect(r#"{"model":"a","messages":[],"stream":true,"stream_options":{"foo":1} }"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&rewrite(&b, &m, "a").unwrap()).unwrap();
        assert_eq!(
            (v["stream_options"]["foo"].as_i64(), v["stream_options"]["include_usage"].as_bool()),
            (Some(1), Some(true))
        );
        // Nothing to change: the very same buffer.
        let (m, b) = inspect(r#"{"model":"a","messages":[]}"#).unwrap();
        let out = rewrite(&b, &m, "a").unwrap();
        assert_eq!(out.as_ptr(), b.as_ptr());
    }

    #[test]
    fn usage_from_fixture() {
        let body = std::fs::read(crate::fixtures_dir().join("openai-chat/nonstream-text.json")).unwrap();
        let u = OpenAiChat.response_usage(&body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(u.prompt_tokens, v["usage"]["prompt_tokens"].as_u64().unwrap());
        assert_eq!(u.completion_tokens, v["usage"]["completion_tokens"].as_u64().unwrap());
        assert!(u.prompt_tokens > 0);
    }

    #[test]
    fn error_shape() {
        let b = OpenAiChat.error_body(&GatewayError::Unauthorized("invalid API key"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["message"], "invalid API key");
        assert!(v["error"]["param"].is_null());
    }
}
