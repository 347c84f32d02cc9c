//! Which protocol endpoint a request hit, and the mock's own reply there: the default reply, a native 400 for a
//! request the real provider would reject, or a native error body for a scripted error status.

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{Value, json};

use super::reply::Turn;
use super::{anthropic, chat, gemini, responses};

/// The four wire protocols the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini.
    Gemini,
}

impl Protocol {
    /// A native error body for `status`, with `message` or a generic one.
    pub fn error_body(self, status: u16, message: Option<&str>) -> Value {
        match self {
            Protocol::Chat | Protocol::Responses => chat::error_body(status, message),
            Protocol::Anthropic => anthropic::error_body(status, message),
            Protocol::Gemini => gemini::error_body(status, message),
        }
    }
}

/// A request's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET …/models` in this protocol's shape.
    Models(Protocol),
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    AnthropicCountTokens,
    /// `POST /v1beta/models/{model}:{action}` (or `/v1/models/…`).
    Gemini {
        /// The model named in the path.
        model: String,
        /// What was asked.
        action: gemini::Action,
    },
    /// Anything else.
    Unknown,
}

/// The mock's own reply: status, body chunks, whether it is a stream (sent without a content length) and its type.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) streaming: bool,
    pub(crate) content_type: &'static str,
    /// Why the request was refused with 400 (recorded in the request log).
    pub(crate) rejected: Option<String>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            chunks: vec![Bytes::from(value.to_string())],
            streaming: false,
            content_type: "application/json",
            rejected: None,
        }
    }

    fn sse(events: Vec<String>) -> Self {
        Self {
            status: 200,
            chunks: events.into_iter().map(Bytes::from).collect(),
            streaming: true,
            content_type: "text/event-stream",
            rejected: None,
        }
    }
}

impl Endpoint {
    /// Classifies a request by method, path (query excluded) and headers.
    pub fn classify(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Self {
        if method == Method::GET && path.ends_with("/models") {
            let protocol = if path.starts_with("/v1beta/") {
                Protocol::Gemini
            } else if headers.contains_key("anthropic-version") {
                Protocol::Anthropic
            } else {
                Protocol::Chat
            };
            return Endpoint::Models(protocol);
        }
        if method != Method::POST {
            return Endpoint::Unknown;
        }
        if path.ends_with("/chat/completions") {
            Endpoint::Chat
        } else if path.ends_with("/responses") {
            Endpoint::Responses
        } else if path.ends_with("/messages/count_tokens") {
            Endpoint::AnthropicCountTokens
        } else if path.ends_with("/messages") {
            Endpoint::Messages
        } else if let Some((model, action)) = gemini::parse_path(path, query) {
            Endpoint::Gemini { model: model.to_owned(), action }
        } else {
            Endpoint::Unknown
        }
    }

    /// The protocol whose shapes this endpoint answers in (OpenAI's for unknown paths).
    pub fn protocol(&self) -> Protocol {
        match self {
            Endpoint::Models(p) => *p,
            Endpoint::Chat | Endpoint::Unknown => Protocol::Chat,
            Endpoint::Responses => Protocol::Responses,
            Endpoint::Messages | Endpoint::AnthropicCountTokens => Protocol::Anthropic,
            Endpoint::Gemini { .. } => Protocol::Gemini,
        }
    }

    /// Whether a request to this endpoint with `body` asks for a stream.
    pub fn is_stream(&self, body: &Value) -> bool {
        match self {
            Endpoint::Gemini { action, .. } => matches!(action, gemini::Action::Stream { .. }),
            _ => body.get("stream").and_then(Value::as_bool) == Some(true),
        }
    }

    /// A native error reply for a scripted error status without a body.
    pub(crate) fn error_reply(&self, status: u16) -> Reply {
        Reply::json(status, &self.protocol().error_body(status, None))
    }

    /// The mock's own reply to `body`: a 400 when the real provider would reject it, else the default reply.
    pub(crate) fn default_reply(&self, body: &Value, headers: &HeaderMap, seq: u64) -> Reply {
        let checked = match self {
            Endpoint::Chat => chat::validate(body),
            Endpoint::Responses => responses::validate(body),
            Endpoint::Messages => anthropic::validate(body, headers, false),
            Endpoint::AnthropicCountTokens => anthropic::validate(body, headers, true),
            Endpoint::Gemini { model, .. } => gemini::validate(model, body),
            Endpoint::Models(_) | Endpoint::Unknown => Ok(()),
        };
        if let Err(problem) = checked {
            let mut reply = Reply::json(400, &self.protocol().error_body(400, Some(&problem)));
            reply.rejected = Some(problem);
            return reply;
        }
        let stream = self.is_stream(body);
        match self {
            Endpoint::Models(Protocol::Gemini) => Reply::json(200, &gemini::models()),
            Endpoint::Models(Protocol::Anthropic) => Reply::json(200, &anthropic::models()),
            Endpoint::Models(_) => Reply::json(200, &chat::models()),
            Endpoint::Chat => {
                let answer = chat::turn(body).answer();
                if stream {
                    Reply::sse(chat::stream(&answer, body, seq))
                } else {
                    Reply::json(200, &chat::completion(&answer, body, seq))
                }
            }
            Endpoint::Responses => {
                let answer = responses::turn(body).answer();
                if stream {
                    Reply::sse(responses::stream(&answer, body, seq))
                } else {
                    Reply::json(200, &responses::reply(&answer, body, seq))
                }
            }
            Endpoint::Messages => {
                let answer = anthropic::turn(body).answer();
                if stream {
                    Reply::sse(anthropic::stream(&answer, body, seq))
                } else {
                    Reply::json(200, &anthropic::message(&answer, body, seq))
                }
            }
            Endpoint::AnthropicCountTokens => Reply::json(200, &anthropic::count_tokens()),
            Endpoint::Gemini { model, action } => {
                let answer = gemini::turn(body).answer();
                match action {
                    gemini::Action::Generate => Reply::json(200, &gemini::reply(&answer, model, seq)),
                    gemini::Action::CountTokens => Reply::json(200, &gemini::count_tokens()),
                    gemini::Action::Stream { sse: true } => Reply::sse(gemini::stream_sse(&answer, model, seq)),
                    gemini::Action::Stream { sse: false } => Reply {
                        content_type: "application/json",
                        ..Reply::sse(gemini::stream_array(&answer, model, seq))
                    },
                }
            }
            Endpoint::Unknown => {
                let message = "mock upstream: no default reply for this path";
                let err = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "not_found"}});
                Reply::json(404, &err)
            }
        }
    }

    /// The turn the mock reads from `body` at this endpoint (`None` where it answers no conversation).
    pub fn turn(&self, body: &Value) -> Option<Turn> {
        match self {
            Endpoint::Chat => Some(chat::turn(body)),
            Endpoint::Responses => Some(responses::turn(body)),
            Endpoint::Messages => Some(anthropic::turn(body)),
            Endpoint::Gemini { .. } => Some(gemini::turn(body)),
            _ => None,
        }
    }
}
