//! OpenAI Responses (`POST /v1/responses`, what Codex speaks): same-protocol passthrough, errors, usage.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use xai_core::{Endpoint, GatewayError, ModelInfo, Outcome, Protocol, ProtocolAdapter, RequestMeta, StreamTap, Usage};

use crate::common::{self, json_str};
use crate::openai_chat::OpenAiChat;
use crate::sse;
use crate::tap::{EventTap, Observer, TapState};
use crate::translate::responses as translate;
use xai_core::ir::{ChatRequest, ChatResponse, StreamDecoder, StreamEncoder};

/// The Responses adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAiResponses;

/// Responses usage on the wire (shared with the translation, which reads the same object).
type RUsage = crate::translate::responses::WireUsage;

impl ProtocolAdapter for OpenAiResponses {
    fn protocol(&self) -> Protocol {
        Protocol::OpenAiResponses
    }

    fn inspect(&self, endpoint: &Endpoint, body: &Bytes) -> Result<RequestMeta, GatewayError> {
        let mut m = OpenAiChat.inspect(endpoint, body)?;
        #[derive(Deserialize)]
        struct P {
            #[serde(default)]
            max_output_tokens: Option<u64>,
        }
        m.max_tokens = serde_json::from_slice::<P>(body).ok().and_then(|p| p.max_output_tokens);
        m.include_usage = true;
        Ok(m)
    }

    fn error_body(&self, err: &GatewayError) -> Bytes {
        OpenAiChat.error_body(err)
    }

    fn stream_error(&self, message: &str, code: &str) -> Bytes {
        failed_event(message, code)
    }

    fn models_body(&self, models: &[ModelInfo]) -> Bytes {
        OpenAiChat.models_body(models)
    }

    fn upstream_path(&self, _: &Endpoint, _: &str, _: bool) -> String {
        "/responses".into()
    }

    fn authorize(&self, key: &str, headers: &mut HeaderMap) {
        OpenAiChat.authorize(key, headers)
    }

    fn passthrough_request(
        &self,
        body: &Bytes,
        meta: &RequestMeta,
        upstream_model: &str,
    ) -> Result<Bytes, GatewayError> {
        crate::anthropic::replace_model(body, meta, upstream_model)
    }

    fn response_usage(&self, body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct R {
            usage: Option<RUsage>,
        }
        serde_json::from_slice::<R>(body).ok()?.usage.map(RUsage::normalise)
    }

    fn stream_tap(&self, _meta: &RequestMeta) -> Box<dyn StreamTap> {
        Box::new(EventTap::new(RObserver))
    }

    fn classify_failure(&self, status: StatusCode, headers: &HeaderMap, body: &[u8], d: Duration) -> Outcome {
        common::classify(status, headers, body, d, &["insufficient_quota"])
    }

    fn decode_request(&self, endpoint: &Endpoint, body: &Bytes) -> Result<ChatRequest, GatewayError> {
        translate::decode_request(endpoint, body)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Bytes, GatewayError> {
        translate::encode_request(req)
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, GatewayError> {
        translate::decode_response(body)
    }

    fn encode_response(&self, resp: &ChatResponse, endpoint: &Endpoint, meta: &RequestMeta) -> Bytes {
        translate::encode_response(resp, endpoint, meta)
    }

    fn stream_decoder(&self) -> Option<Box<dyn StreamDecoder>> {
        Some(Box::new(translate::ResponsesStreamDecoder::new()))
    }

    fn stream_encoder(&self, _endpoint: &Endpoint, meta: &RequestMeta) -> Option<Box<dyn StreamEncoder>> {
        Some(Box::new(translate::ResponsesStreamEncoder::new(&meta.model)))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        translate::error_message(body)
    }
}

/// A `response.failed` event (Codex reads its code; it ignores bare `error` events).
fn failed_event(message: &str, code: &str) -> Bytes {
    format!(
        "event: response.failed\ndata: {{\"type\":\"response.failed\",\"sequence_number\":0,\"response\":{{\"object\":\"response\",\"status\":\"failed\",\"output\":[],\"error\":{{\"code\":{},\"message\":{}}}}}}}\n\n",
        json_str(code),
        json_str(message)
    )
    .into()
}

#[derive(Debug)]
struct RObserver;

impl Observer for RObserver {
    fn observe(&mut self, event: &[u8], st: &mut TapState) {
        let name = sse::event_name(event).unwrap_or_default();
        match name {
            b"response.output_text.delta"
            | b"response.function_call_arguments.delta"
            | b"response.reasoning_summary_text.delta" => st.chunks += 1,
            b"response.completed" | b"response.incomplete" | b"response.failed" => {
                st.terminal = true;
                st.failed |= name == b"response.failed";
                #[derive(Deserialize)]
                struct Ev {
                    response: Option<Resp>,
                }
                #[derive(Deserialize)]
                struct Resp {
                    usage: Option<RUsage>,
                }
                if let Some(u) = sse::data(event)
                    .and_then(|d| serde_json::from_slice::<Ev>(&d).ok())
                    .and_then(|e| e.response)
                    .and_then(|r| r.usage)
                {
                    st.usage = Some(u.normalise());
                }
            }
            b"error" => st.failed = true,
            _ => {}
        }
    }

    fn truncated(&self, message: &str) -> Bytes {
        failed_event(message, "upstream_stream_truncated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xai_core::BodySpans;

    #[test]
    fn fixtures_usage() {
        for (name, ok) in [
            ("stream-text.sse", true),
            ("stream-parallel-function-calls.sse", true),
            ("stream-reasoning-summary-then-function-call.sse", true),
            ("stream-reasoning-then-text.sse", true),
            ("stream-web-search-annotations.sse", true),
            ("stream-error-rate-limit.sse", false),
        ] {
            let src = std::fs::read(crate::fixtures_dir().join("openai-responses").join(name)).unwrap();
            let meta = RequestMeta {
                model: "m".into(),
                stream: true,
                include_usage: true,
                max_tokens: None,
                body_len: 0,
                spans: BodySpans::default(),
            };
            let mut t = OpenAiResponses.stream_tap(&meta);
            let mut out = Vec::new();
            for c in src.chunks(17) {
                out.extend_from_slice(&t.feed(Bytes::copy_from_slice(c)));
            }
            assert!(t.finish(None).is_empty(), "{name}: it ended with a terminal event");
            assert_eq!(out, src);
            assert_eq!(t.failed(), !ok, "{name}");
            if ok {
                let (u, reported) = t.usage();
                assert!(reported && u.prompt_tokens > 0 && u.completion_tokens > 0, "{name}: {u:?}");
            }
        }
    }
}
