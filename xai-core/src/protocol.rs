//! Wire protocols and client endpoints.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A wire protocol, on the client side or the upstream side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Protocol {
    /// OpenAI Chat Completions (also DeepSeek-style compatible providers).
    #[serde(rename = "openai")]
    OpenAiChat,
    /// OpenAI Responses (what Codex speaks).
    #[serde(rename = "openai-responses")]
    OpenAiResponses,
    /// Anthropic Messages (what Claude Code speaks).
    Anthropic,
    /// Google Gemini native.
    Gemini,
}

impl Protocol {
    /// The config spelling (`openai`, `openai-responses`, `anthropic`, `gemini`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAiChat => "openai",
            Protocol::OpenAiResponses => "openai-responses",
            Protocol::Anthropic => "anthropic",
            Protocol::Gemini => "gemini",
        }
    }

    /// All protocols, for registries and tests.
    pub const ALL: [Protocol; 4] =
        [Protocol::OpenAiChat, Protocol::OpenAiResponses, Protocol::Anthropic, Protocol::Gemini];
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown protocol {s:?} (expected openai, openai-responses, anthropic or gemini)"))
    }
}

/// What a client request asks for, as told by method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndpointKind {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/messages/count_tokens`
    CountTokens,
    /// Gemini `:generateContent`
    GenerateContent,
    /// Gemini `:streamGenerateContent`
    StreamGenerateContent,
    /// Gemini `:countTokens`
    GeminiCountTokens,
    /// `GET /v1/models`, `GET /v1beta/models`
    Models,
    /// `POST /v1/embeddings`
    Embeddings,
}

impl EndpointKind {
    /// The name used in `resources` allowlists and in usage records.
    pub fn resource(self) -> &'static str {
        match self {
            EndpointKind::ChatCompletions => "chat",
            EndpointKind::Responses => "responses",
            EndpointKind::Messages => "messages",
            EndpointKind::CountTokens => "count_tokens",
            EndpointKind::GenerateContent | EndpointKind::StreamGenerateContent => "generate",
            EndpointKind::GeminiCountTokens => "count_tokens",
            EndpointKind::Models => "models",
            EndpointKind::Embeddings => "embeddings",
        }
    }
}

/// The classified endpoint of a request: inserted by the classify layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What is asked.
    pub kind: EndpointKind,
    /// The protocol the client speaks (decides credentials and error shapes).
    pub protocol: Protocol,
    /// For Gemini, the model named in the path.
    pub path_model: Option<Box<str>>,
    /// Gemini `alt=sse`: the stream is SSE rather than one JSON array.
    pub sse: bool,
}

impl Endpoint {
    /// Tells the endpoint from method, path and headers; `None` for paths the gateway does not serve.
    pub fn classify(method: &http::Method, path: &str, headers: &http::HeaderMap) -> Option<Endpoint> {
        let plain = |kind, protocol| Some(Endpoint { kind, protocol, path_model: None, sse: false });
        match (method, path) {
            (&http::Method::POST, "/v1/chat/completions") => plain(EndpointKind::ChatCompletions, Protocol::OpenAiChat),
            (&http::Method::POST, "/v1/responses") => plain(EndpointKind::Responses, Protocol::OpenAiResponses),
            (&http::Method::POST, "/v1/messages") => plain(EndpointKind::Messages, Protocol::Anthropic),
            (&http::Method::POST, "/v1/messages/count_tokens") => plain(EndpointKind::CountTokens, Protocol::Anthropic),
            (&http::Method::POST, "/v1/embeddings") => plain(EndpointKind::Embeddings, Protocol::OpenAiChat),
            (&http::Method::GET, "/v1/models") => {
                let anthropic = headers.contains_key("anthropic-version") || headers.contains_key("x-api-key");
                plain(EndpointKind::Models, if anthropic { Protocol::Anthropic } else { Protocol::OpenAiChat })
            }
            (&http::Method::GET, "/v1beta/models") => plain(EndpointKind::Models, Protocol::Gemini),
            (&http::Method::POST, p) => {
                let rest = p.strip_prefix("/v1beta/models/").or_else(|| p.strip_prefix("/v1/models/"))?;
                let (model, action) = rest.rsplit_once(':')?;
                let kind = match action {
                    "generateContent" => EndpointKind::GenerateContent,
                    "streamGenerateContent" => EndpointKind::StreamGenerateContent,
                    "countTokens" => EndpointKind::GeminiCountTokens,
                    _ => return None,
                };
                if model.is_empty() || model.contains('/') {
                    return None;
                }
                Some(Endpoint { kind, protocol: Protocol::Gemini, path_model: Some(model.into()), sse: false })
            }
            _ => None,
        }
    }

    /// Like [`Endpoint::classify`], also reading the query (`alt=sse`).
    pub fn from_uri(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> Option<Endpoint> {
        let mut e = Self::classify(method, uri.path(), headers)?;
        e.sse = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
        Some(e)
    }

    /// The protocol to answer an unknown path in: guessed from the path prefix and headers.
    pub fn guess_protocol(path: &str, headers: &http::HeaderMap) -> Protocol {
        if path.starts_with("/v1beta/") || headers.contains_key("x-goog-api-key") {
            Protocol::Gemini
        } else if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
            Protocol::Anthropic
        } else if path.starts_with("/v1/responses") {
            Protocol::OpenAiResponses
        } else {
            Protocol::OpenAiChat
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    #[test]
    fn classifies_paths() {
        let h = HeaderMap::new();
        let c = |m: &Method, p: &str| Endpoint::classify(m, p, &h).map(|e| (e.kind, e.protocol, e.path_model));
        assert_eq!(c(&Method::POST, "/v1/chat/completions").unwrap().0, EndpointKind::ChatCompletions);
        assert_eq!(c(&Method::GET, "/v1/chat/completions"), None);
        let g = c(&Method::POST, "/v1beta/models/gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!(
            (g.0, g.1, g.2.as_deref()),
            (EndpointKind::StreamGenerateContent, Protocol::Gemini, Some("gemini-2.5-flash"))
        );
        assert!(c(&Method::POST, "/v1/models/gemini-pro:countTokens").is_some());
        assert_eq!(c(&Method::POST, "/v1/models/x:nope"), None);
        let mut ah = HeaderMap::new();
        ah.insert("anthropic-version", "2023-06-01".parse().unwrap());
        assert_eq!(Endpoint::classify(&Method::GET, "/v1/models", &ah).unwrap().protocol, Protocol::Anthropic);
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>().unwrap(), p);
        }
        assert!("grpc".parse::<Protocol>().is_err());
    }
}
