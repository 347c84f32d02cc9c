//! Anthropic Messages (`POST /v1/messages`, what Claude Code speaks): same-protocol passthrough, errors, lists.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use xai_core::{
    BodySpans, Endpoint, EndpointKind, GatewayError, ModelInfo, Outcome, Protocol, ProtocolAdapter, RequestMeta,
    StreamTap, Usage, ir,
};

use crate::common::{self, json_str, span_in};
use crate::sse;
use crate::tap::{EventTap, Observer, TapState};
use crate::translate::anthropic as translate;

/// The Anthropic adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Anthropic;

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

/// Anthropic usage; `input_tokens` excludes both cache counts.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct AnUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

fn normalise(u: AnUsage) -> Usage {
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    let read = u.cache_read_input_tokens.unwrap_or(0);
    Usage {
        prompt_tokens: u.input_tokens.unwrap_or(0) + write + read,
        completion_tokens: u.output_tokens.unwrap_or(0),
        cached_tokens: read,
        cache_write_tokens: write,
        ..Usage::default()
    }
}

fn error_type(e: &GatewayError) -> &'static str {
    match e.status().as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_json(ty: &str, message: &str) -> String {
    format!("{{\"type\":\"error\",\"error\":{{\"type\":{},\"message\":{}}}}}", json_str(ty), json_str(message))
}

impl ProtocolAdapter for Anthropic {
    fn protocol(&self) -> Protocol {
        Protocol::Anthropic
    }

    fn inspect(&self, endpoint: &Endpoint, body: &Bytes) -> Result<RequestMeta, GatewayError> {
        let bad = |m: String| GatewayError::BadRequest(m);
        let peek: Peek<'_> = serde_json::from_slice(body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                bad(format!("request body is not valid JSON: {e}"))
            } else {
                bad(format!("invalid request body: {e}"))
            }
        })?;
        let raw = peek.model.ok_or_else(|| bad("model: Field required".into()))?;
        let model: Cow<'_, str> = serde_json::from_str(raw.get()).map_err(|_| bad("model: must be a string".into()))?;
        if model.is_empty() {
            return Err(bad("model: must not be empty".into()));
        }
        if endpoint.kind == EndpointKind::Messages && peek.max_tokens.is_none() {
            return Err(bad("max_tokens: Field required".into()));
        }
        Ok(RequestMeta {
            model: Arc::from(&*model),
            stream: peek.stream.unwrap_or(false),
            include_usage: true,
            max_tokens: peek.max_tokens,
            body_len: body.len(),
            spans: BodySpans { model: span_in(body, raw.get()), stream_options: None },
        })
    }

    fn error_body(&self, err: &GatewayError) -> Bytes {
        error_json(error_type(err), &err.to_string()).into()
    }

    fn stream_error(&self, message: &str, _code: &str) -> Bytes {
        format!("event: error\ndata: {}\n\n", error_json("api_error", message)).into()
    }

    fn models_body(&self, models: &[ModelInfo]) -> Bytes {
        let data: Vec<serde_json::Value> = models
            .iter()
            .map(|m| serde_json::json!({"type": "model", "id": &*m.id, "display_name": &*m.id, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        let first = models.first().map(|m| &*m.id);
        let last = models.last().map(|m| &*m.id);
        serde_json::to_vec(&serde_json::json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
            .unwrap_or_default()
            .into()
    }

    fn upstream_path(&self, endpoint: &Endpoint, _model: &str, _stream: bool) -> String {
        match endpoint.kind {
            EndpointKind::CountTokens => "/v1/messages/count_tokens".into(),
            _ => "/v1/messages".into(),
        }
    }

    fn authorize(&self, key: &str, headers: &mut HeaderMap) {
        if let Ok(mut v) = HeaderValue::from_str(key) {
            v.set_sensitive(true);
            headers.insert("x-api-key", v);
        }
        if !headers.contains_key("anthropic-version") {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
    }

    fn passthrough_request(
        &self,
        body: &Bytes,
        meta: &RequestMeta,
        upstream_model: &str,
    ) -> Result<Bytes, GatewayError> {
        replace_model(body, meta, upstream_model)
    }

    fn response_usage(&self, body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct R {
            usage: Option<AnUsage>,
        }
        serde_json::from_slice::<R>(body).ok()?.usage.map(normalise)
    }

    fn stream_tap(&self, _meta: &RequestMeta) -> Box<dyn StreamTap> {
        Box::new(EventTap::new(AnObserver::default()))
    }

    fn classify_failure(&self, status: StatusCode, headers: &HeaderMap, body: &[u8], d: Duration) -> Outcome {
        common::classify(status, headers, body, d, &["credit balance is too low"])
    }

    fn decode_request(&self, endpoint: &Endpoint, body: &Bytes) -> Result<ir::ChatRequest, GatewayError> {
        translate::decode_request(endpoint, body)
    }

    fn encode_request(&self, req: &ir::ChatRequest) -> Result<Bytes, GatewayError> {
        translate::encode_request(req)
    }

    fn decode_response(&self, body: &[u8]) -> Result<ir::ChatResponse, GatewayError> {
        translate::decode_response(body)
    }

    fn encode_response(&self, resp: &ir::ChatResponse, endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
        translate::encode_response(resp, endpoint, meta)
    }

    fn stream_decoder(&self) -> Option<Box<dyn ir::StreamDecoder>> {
        Some(Box::new(translate::AnthropicStreamDecoder::new()))
    }

    fn stream_encoder(&self, _endpoint: &Endpoint, meta: &RequestMeta) -> Option<Box<dyn ir::StreamEncoder>> {
        Some(Box::new(translate::AnthropicStreamEncoder::new(meta.model.clone())))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        translate::error_message(body)
    }
}

/// Replaces the `model` value of a body whose span decode recorded.
pub(crate) fn replace_model(body: &Bytes, meta: &RequestMeta, upstream_model: &str) -> Result<Bytes, GatewayError> {
    if &*meta.model == upstream_model {
        return Ok(body.clone());
    }
    let span = meta.spans.model.clone().ok_or_else(|| GatewayError::Internal("model span missing".into()))?;
    let mut out = Vec::with_capacity(body.len() + upstream_model.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(json_str(upstream_model).as_bytes());
    out.extend_from_slice(&body[span.end..]);
    Ok(out.into())
}

#[derive(Default, Debug)]
struct AnObserver {
    start: AnUsage,
}

impl Observer for AnObserver {
    fn observe(&mut self, event: &[u8], st: &mut TapState) {
        let name = sse::event_name(event).unwrap_or_default();
        match name {
            b"content_block_delta" => st.chunks += 1,
            b"message_stop" => st.terminal = true,
            b"error" => st.failed = true,
            b"message_start" | b"message_delta" => {
                #[derive(Deserialize)]
                struct Ev {
                    #[serde(default)]
                    message: Option<Msg>,
                    #[serde(default)]
                    usage: Option<AnUsage>,
                }
                #[derive(Deserialize)]
                struct Msg {
                    #[serde(default)]
                    usage: Option<AnUsage>,
                }
                let Some(d) = sse::data(event) else { return };
                let Ok(ev) = serde_json::from_slice::<Ev>(&d) else { return };
                if let Some(u) = ev.message.and_then(|m| m.usage) {
                    self.start = u;
                }
                if let Some(u) = ev.usage {
                    // message_delta: output is cumulative; input counts, when present, are final.
                    let s = &mut self.start;
                    s.output_tokens = u.output_tokens.or(s.output_tokens);
                    s.input_tokens = u.input_tokens.or(s.input_tokens);
                    s.cache_read_input_tokens = u.cache_read_input_tokens.or(s.cache_read_input_tokens);
                    s.cache_creation_input_tokens = u.cache_creation_input_tokens.or(s.cache_creation_input_tokens);
                }
                st.usage = Some(normalise(self.start));
            }
            _ => {}
        }
    }

    fn truncated(&self, message: &str) -> Bytes {
        format!("event: error\ndata: {}\n\n", error_json("api_error", message)).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(name: &str) -> (Usage, bool, bool) {
        let src = std::fs::read(crate::fixtures_dir().join("anthropic").join(name)).unwrap();
        let mut t = Anthropic.stream_tap(&RequestMeta {
            model: "m".into(),
            stream: true,
            include_usage: true,
            max_tokens: None,
            body_len: 0,
            spans: BodySpans::default(),
        });
        let mut out = Vec::new();
        for c in src.chunks(11) {
            out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
        }
        let tail = t.finish(None);
        assert_eq!(out, src, "{name}: passthrough is byte-identical");
        let (u, reported) = t.usage();
        (u, reported, tail.is_empty() && !t.failed())
    }

    #[test]
    fn fixtures_usage_is_normalised() {
        for name in [
            "stream-text.sse",
            "stream-text-then-tool-use.sse",
            "stream-thinking-signature.sse",
            "stream-tool-use-padded.sse",
            "stream-text-padded.sse",
            "stream-web-search-citations.sse",
        ] {
            let (u, reported, clean) = replay(name);
            assert!(reported && clean, "{name}");
            assert!(u.prompt_tokens > 0 && u.completion_tokens > 0, "{name}: {u:?}");
            assert!(u.prompt_tokens >= u.cached_tokens + u.cache_write_tokens);
        }
    }

    #[test]
    fn truncated_stream_gets_error_event() {
        let mut t = EventTap::new(AnObserver::default());
        let _ = t.feed(Bytes::from_static(
            b"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        ));
        let tail = t.finish(None);
        assert!(tail.starts_with(b"event: error\n"));
        assert!(t.failed());
        assert_eq!(t.usage().0.prompt_tokens, 5);
    }

    #[test]
    fn nonstream_usage_includes_cache() {
        let body = br#"{"usage":{"input_tokens":3,"cache_creation_input_tokens":10,"cache_read_input_tokens":20,"output_tokens":7}}"#;
        let u = Anthropic.response_usage(body).unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens, u.cache_write_tokens, u.completion_tokens), (33, 20, 10, 7));
    }
}
