//! Gemini native (`:generateContent`, `:streamGenerateContent`, `:countTokens`): same-protocol passthrough.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use xai_core::ir;
use xai_core::{
    BodySpans, Endpoint, EndpointKind, GatewayError, ModelInfo, Outcome, Protocol, ProtocolAdapter, RequestMeta,
    StreamTap, Usage,
};

use crate::common::{self, json_str};
use crate::sse;
use crate::tap::{EventTap, Observer, TapState};
use crate::translate::gemini as translate;

/// The Gemini adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gemini;

#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
struct GUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
}

fn normalise(u: GUsage) -> Usage {
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    Usage {
        prompt_tokens: u.prompt_token_count.unwrap_or(0),
        completion_tokens: u.candidates_token_count.unwrap_or(0) + thoughts,
        reasoning_tokens: thoughts,
        cached_tokens: u.cached_content_token_count.unwrap_or(0),
        ..Usage::default()
    }
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn error_json(code: u16, message: &str) -> String {
    format!(
        "{{\"error\":{{\"code\":{code},\"message\":{},\"status\":{}}}}}",
        json_str(message),
        json_str(status_name(code))
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk {
    #[serde(default)]
    usage_metadata: Option<GUsage>,
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    finish_reason: Option<String>,
}

impl ProtocolAdapter for Gemini {
    fn protocol(&self) -> Protocol {
        Protocol::Gemini
    }

    fn inspect(&self, endpoint: &Endpoint, body: &Bytes) -> Result<RequestMeta, GatewayError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Peek {
            #[serde(default)]
            generation_config: Option<Gen>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Gen {
            #[serde(default)]
            max_output_tokens: Option<u64>,
        }
        let peek: Peek = serde_json::from_slice(body)
            .map_err(|e| GatewayError::BadRequest(format!("Invalid JSON payload received: {e}")))?;
        let model =
            endpoint.path_model.as_deref().ok_or_else(|| GatewayError::BadRequest("model missing in path".into()))?;
        let stream = endpoint.kind == EndpointKind::StreamGenerateContent;
        // Without `alt=sse` the client reads one streamed JSON array: the attempt layer re-encodes the upstream's
        // SSE stream into it (see `needs_translation`).
        Ok(RequestMeta {
            model: Arc::from(model.strip_prefix("models/").unwrap_or(model)),
            stream,
            include_usage: true,
            max_tokens: peek.generation_config.and_then(|g| g.max_output_tokens),
            body_len: body.len(),
            spans: BodySpans::default(),
        })
    }

    fn error_body(&self, err: &GatewayError) -> Bytes {
        error_json(err.status().as_u16(), &err.to_string()).into()
    }

    fn stream_error(&self, message: &str, _code: &str) -> Bytes {
        format!("data: {}\n\n", error_json(500, message)).into()
    }

    fn models_body(&self, models: &[ModelInfo]) -> Bytes {
        let data: Vec<serde_json::Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({"name": format!("models/{}", m.id), "displayName": &*m.id,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"models": data})).unwrap_or_default().into()
    }

    fn upstream_path(&self, endpoint: &Endpoint, model: &str, stream: bool) -> String {
        let action = match endpoint.kind {
            EndpointKind::GeminiCountTokens => "countTokens",
            _ if stream => "streamGenerateContent?alt=sse",
            _ => "generateContent",
        };
        format!("/v1beta/models/{model}:{action}")
    }

    fn authorize(&self, key: &str, headers: &mut HeaderMap) {
        if let Ok(mut v) = HeaderValue::from_str(key) {
            v.set_sensitive(true);
            headers.insert("x-goog-api-key", v);
        }
    }

    fn passthrough_request(
        &self,
        body: &Bytes,
        _meta: &RequestMeta,
        _upstream_model: &str,
    ) -> Result<Bytes, GatewayError> {
        Ok(body.clone()) // the model is in the path
    }

    fn response_usage(&self, body: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<Chunk>(body).ok()?.usage_metadata.map(normalise)
    }

    fn stream_tap(&self, _meta: &RequestMeta) -> Box<dyn StreamTap> {
        Box::new(EventTap::new(GObserver))
    }

    fn classify_failure(&self, status: StatusCode, headers: &HeaderMap, body: &[u8], d: Duration) -> Outcome {
        common::classify(status, headers, body, d, &[])
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
        Some(Box::new(translate::GeminiStreamDecoder::new()))
    }

    fn stream_encoder(&self, endpoint: &Endpoint, meta: &RequestMeta) -> Option<Box<dyn ir::StreamEncoder>> {
        Some(Box::new(translate::GeminiStreamEncoder::new(endpoint.sse, meta.model.clone())))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        translate::error_message(body)
    }
}

#[derive(Debug)]
struct GObserver;

impl Observer for GObserver {
    fn observe(&mut self, event: &[u8], st: &mut TapState) {
        let Some(d) = sse::data(event) else { return };
        let Ok(c) = serde_json::from_slice::<Chunk>(&d) else { return };
        if c.error.is_some() {
            st.failed = true;
        }
        st.chunks += 1;
        if let Some(u) = c.usage_metadata {
            st.usage = Some(normalise(u)); // running totals: the last one wins
        }
        if c.candidates.iter().flatten().any(|c| c.finish_reason.is_some()) {
            st.terminal = true;
        }
    }

    fn truncated(&self, message: &str) -> Bytes {
        format!("data: {}\n\n", error_json(500, message)).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_usage_is_last_running_total() {
        for name in [
            "stream-text.sse",
            "stream-function-call.sse",
            "stream-parallel-function-calls-thought-signature.sse",
            "stream-text-thought-signature.sse",
            "stream-thoughts-then-function-call.sse",
        ] {
            let src = std::fs::read(crate::fixtures_dir().join("gemini").join(name)).unwrap();
            let meta = RequestMeta {
                model: "m".into(),
                stream: true,
                include_usage: true,
                max_tokens: None,
                body_len: 0,
                spans: BodySpans::default(),
            };
            let mut t = Gemini.stream_tap(&meta);
            for c in src.chunks(19) {
                t.feed(Bytes::copy_from_slice(c));
            }
            assert!(t.finish(None).is_empty(), "{name}");
            let (u, reported) = t.usage();
            assert!(reported && u.prompt_tokens > 0 && u.completion_tokens >= u.reasoning_tokens, "{name}: {u:?}");
        }
    }
}
