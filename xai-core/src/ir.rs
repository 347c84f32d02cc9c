//! The canonical intermediate representation of a model call, for translating between wire protocols
//! (DESIGN §6, PROTOCOLS.md). A cross-protocol request goes
//! client bytes → [`ChatRequest`] → upstream bytes, and the answer upstream bytes → [`ChatResponse`] (or a
//! sequence of [`StreamEvent`]s) → client bytes. Same protocol in and out never comes here: it is a passthrough.
//!
//! ## Invariants every decoder guarantees and every encoder may rely on
//! - Content blocks of a stream are **sequential**: `BlockStart(i)`, then `Delta(i)`s, then `BlockStop(i)`, before
//!   `BlockStart(i + 1)`. Indices count from 0 in stream order over all kinds of blocks. A decoder whose wire can
//!   interleave blocks (OpenAI Chat parallel tool calls) buffers so that this holds.
//! - A tool call's arguments arrive as [`Delta::ToolArgs`] fragments whose concatenation is a JSON text (`"{}"`
//!   when the call has no arguments). A decoder whose wire delivers whole arguments emits one fragment.
//! - `Start` comes first, exactly once. The last event is exactly one of `Finish` (clean end) or `Error` (the
//!   stream failed; also when the wire ended without its terminal event).
//! - Usage is normalised ([`Usage`]): prompt includes cached reads and cache writes, completion includes
//!   reasoning. `Usage` events carry running totals (replace, never add).
//! - Tool-call ids are never empty: a decoder whose wire has none (Gemini) makes stable ones with
//!   [`synth_call_id`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::protocol::Protocol;
use crate::usage::Usage;

/// A model call, whatever protocol it came in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// Model asked (the gateway overwrites it with the upstream model before encoding).
    pub model: String,
    /// System prompt blocks, in order (OpenAI system/developer messages, Anthropic `system`, Responses
    /// `instructions`, Gemini `systemInstruction`): merged, never dropped.
    pub system: Vec<SystemBlock>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<Tool>,
    /// How tools may be used.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tool calls may come in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// Output cap (Anthropic requires one: encoders for it pick a default when `None`).
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic, Gemini).
    pub top_k: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Stream the answer.
    pub stream: bool,
    /// Reasoning / thinking asked.
    pub reasoning: Option<ReasoningConfig>,
    /// Structured output asked.
    pub response_format: Option<ResponseFormat>,
    /// End-user id for abuse tracking (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
}

/// One system prompt block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SystemBlock {
    /// Its text.
    pub text: String,
    /// Marked for prompt caching (Anthropic `cache_control`).
    pub cache: bool,
}

/// Who speaks. Tool results are [`Part::ToolResult`]s in a `User` message (Anthropic style): encoders for
/// protocols with a `tool` role split them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The caller (and tool results).
    User,
    /// The model.
    Assistant,
}

/// One turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Content, in order.
    pub parts: Vec<Part>,
}

/// A piece of content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Marked for prompt caching (Anthropic `cache_control`).
        cache: bool,
    },
    /// An image (input).
    Image(ImageSource),
    /// A document / file (input): passed where the target accepts it, else described in text.
    File {
        /// MIME type.
        media_type: String,
        /// Base64 data or a URL.
        source: FileSource,
    },
    /// The model called a tool.
    ToolCall(ToolCall),
    /// The result of a tool call, sent back by the caller.
    ToolResult(ToolResult),
    /// Model reasoning (thinking).
    Reasoning(Reasoning),
}

/// Where an image is.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    /// An http(s) URL.
    Url(String),
    /// Inline bytes, base64.
    Base64 {
        /// MIME type (`image/png`, …).
        media_type: String,
        /// Base64 data without the `data:` prefix.
        data: String,
    },
}

impl ImageSource {
    /// Parses an OpenAI-style URL, which may be a `data:<mime>;base64,<data>` URL.
    pub fn from_url(url: &str) -> ImageSource {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((mime, data)) = rest.split_once(";base64,")
        {
            return ImageSource::Base64 { media_type: mime.to_string(), data: data.to_string() };
        }
        ImageSource::Url(url.to_string())
    }

    /// As an OpenAI-style URL (`data:` URL for inline bytes).
    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Url(u) => u.clone(),
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// Where a file is.
#[derive(Clone, Debug, PartialEq)]
pub enum FileSource {
    /// Inline bytes, base64.
    Base64(String),
    /// A URL or provider file URI.
    Url(String),
}

/// A tool call made by the model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolCall {
    /// Call id (never empty; see [`synth_call_id`]).
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as a JSON text (`"{}"` when none). For a custom (freeform) tool, the raw input string.
    pub arguments: String,
    /// Function tool or freeform custom tool (Responses `custom_tool_call`).
    pub kind: ToolKind,
    /// An opaque signature tied to this call (Gemini `thoughtSignature` on a `functionCall` part).
    pub signature: Option<Signature>,
}

/// A tool result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolResult {
    /// The call it answers.
    pub call_id: String,
    /// The tool's name when the wire carries it (Gemini needs it; encoders look it up in earlier calls
    /// otherwise).
    pub name: Option<String>,
    /// The result content: text and images.
    pub content: Vec<Part>,
    /// The tool failed.
    pub is_error: bool,
    /// It answers a custom (freeform) tool call.
    pub kind: ToolKind,
}

impl ToolResult {
    /// The result's text parts joined (for wires that only take a string).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for p in &self.content {
            if let Part::Text { text, .. } = p {
                s.push_str(text);
            }
        }
        s
    }
}

/// Function tools take JSON arguments; custom tools (Responses) take free text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolKind {
    /// JSON-schema function.
    #[default]
    Function,
    /// Freeform custom tool (Codex `apply_patch`).
    Custom,
}

/// Model reasoning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reasoning {
    /// Visible reasoning text or summary (may be empty).
    pub text: String,
    /// Opaque proof the provider needs to accept this reasoning back (Anthropic `signature`, Responses
    /// `encrypted_content`, Gemini `thoughtSignature`).
    pub signature: Option<Signature>,
    /// Anthropic `redacted_thinking` data (opaque).
    pub redacted: Option<String>,
    /// Responses reasoning item id (`rs_…`), kept to round-trip to a Responses upstream.
    pub id: Option<String>,
}

/// An opaque token only the protocol that issued it can verify.
///
/// Encoders write a signature natively when `origin` is their protocol. On the client side of a translation
/// (encoding a response for a client of another protocol) they write [`Signature::envelope`] in their own
/// opaque field, so that the client sends it back unchanged on the next turn and the request decoder recovers
/// the origin with [`Signature::from_field`]. Towards an upstream of another origin a signature is dropped
/// (with its reasoning when the target would reject unsigned reasoning, PROTOCOLS.md trap 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The protocol that issued it.
    pub origin: Protocol,
    /// The token.
    pub value: String,
}

const ENVELOPE: &str = "xai1";

impl Signature {
    /// A signature issued by `origin`.
    pub fn new(origin: Protocol, value: impl Into<String>) -> Self {
        Self { origin, value: value.into() }
    }

    /// The text to put in another protocol's opaque field: `xai1` followed by the standard base64 of
    /// `<origin>.<value>`. The whole is itself valid base64 (`xai1` is one full quantum), which clients that check
    /// the field's alphabet (google-genai reads `thoughtSignature` as base64 bytes) require.
    pub fn envelope(&self) -> String {
        let inner = format!("{}.{}", self.origin.as_str(), self.value);
        format!("{ENVELOPE}{}", STANDARD.encode(inner))
    }

    /// What to write in `target`'s opaque field: the value itself when `target` issued it, else the envelope.
    pub fn for_client(&self, target: Protocol) -> String {
        if self.origin == target { self.value.clone() } else { self.envelope() }
    }

    /// Reads an opaque field of protocol `field_protocol` as sent back by a client: an envelope names its
    /// origin; anything else was issued by `field_protocol` itself.
    pub fn from_field(field_protocol: Protocol, text: &str) -> Signature {
        if let Some(rest) = text.strip_prefix(ENVELOPE)
            && let Ok(inner) = STANDARD.decode(rest)
            && let Ok(inner) = String::from_utf8(inner)
            && let Some((origin, value)) = inner.split_once('.')
            && let Ok(p) = origin.parse::<Protocol>()
        {
            return Signature::new(p, value);
        }
        Signature::new(field_protocol, text)
    }

    /// The native value when this signature was issued by `target`.
    pub fn native_for(&self, target: Protocol) -> Option<&str> {
        (self.origin == target).then_some(self.value.as_str())
    }
}

/// A tool offered to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// JSON schema of the arguments (function tools); `{"type":"object","properties":{}}` when none given.
    pub parameters: serde_json::Value,
    /// OpenAI `strict`.
    pub strict: Option<bool>,
    /// Function or custom (freeform; `format` kept in `custom_format`).
    pub kind: ToolKind,
    /// Responses custom tool `format` (grammar), kept verbatim.
    pub custom_format: Option<serde_json::Value>,
}

/// How the model may use tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// Model decides.
    Auto,
    /// No tools.
    None,
    /// Must call some tool.
    Required,
    /// Must call this tool.
    Tool(String),
}

/// Reasoning asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasoningConfig {
    /// OpenAI effort (`minimal`, `low`, `medium`, `high`).
    pub effort: Option<String>,
    /// Token budget (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u64>,
    /// Whether reasoning text/summaries should be returned (Responses `summary`, Gemini `includeThoughts`).
    pub include_thoughts: bool,
    /// Reasoning explicitly turned off.
    pub disabled: bool,
}

impl ReasoningConfig {
    /// A budget for wires that need one, from the effort when no budget was given.
    pub fn budget_or_default(&self) -> u64 {
        self.budget_tokens.unwrap_or(match self.effort.as_deref() {
            Some("minimal") => 1024,
            Some("low") => 2048,
            Some("high") => 16384,
            _ => 8192,
        })
    }

    /// An effort for wires that need one, from the budget when no effort was given.
    pub fn effort_or_default(&self) -> &str {
        if let Some(e) = &self.effort {
            return e;
        }
        match self.budget_tokens {
            Some(b) if b <= 2048 => "low",
            Some(b) if b > 12000 => "high",
            _ => "medium",
        }
    }
}

/// Structured output.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The schema.
        schema: serde_json::Value,
        /// OpenAI `strict`.
        strict: Option<bool>,
    },
}

/// Why the model stopped (PROTOCOLS.md "Stop reasons").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    /// Natural end of turn.
    #[default]
    EndTurn,
    /// Output cap reached (or context window exceeded).
    MaxTokens,
    /// A stop sequence matched (which one, when known).
    StopSequence(Option<String>),
    /// The model called tools and waits for results.
    ToolUse,
    /// Refused or filtered.
    ContentFilter,
    /// A long turn paused (Anthropic `pause_turn`).
    PauseTurn,
}

/// A complete (non-streaming) answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    /// Upstream id (encoders make a protocol-shaped one when absent or foreign).
    pub id: String,
    /// Model that answered.
    pub model: String,
    /// Content: `Text`, `Reasoning` and `ToolCall` parts, in order.
    pub parts: Vec<Part>,
    /// Why it stopped. Encoders report `ToolUse` whenever `parts` holds a tool call (trap 5).
    pub stop: StopReason,
    /// Normalised usage.
    pub usage: Usage,
}

/// One event of a translated stream (see the module invariants).
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The answer began.
    Start {
        /// Upstream id, when known.
        id: Option<String>,
        /// Model, when known.
        model: Option<String>,
        /// Usage known at start (Anthropic reports input counts here), running.
        usage: Option<Usage>,
    },
    /// A content block opens.
    BlockStart {
        /// Block index (0, 1, … in stream order).
        index: u32,
        /// What kind of block.
        block: BlockKind,
    },
    /// More of the open block.
    Delta {
        /// Block index.
        index: u32,
        /// The fragment.
        delta: Delta,
    },
    /// The block is complete.
    BlockStop {
        /// Block index.
        index: u32,
    },
    /// Running usage totals (replace earlier ones).
    Usage(Usage),
    /// Clean end.
    Finish {
        /// Why it stopped.
        stop: StopReason,
        /// Final usage when known (else the last `Usage`).
        usage: Option<Usage>,
    },
    /// The stream failed (upstream error event, or the wire ended without its terminal event).
    Error {
        /// Message safe to show to the client.
        message: String,
        /// Machine code (`overloaded`, `rate_limit_exceeded`, `stream_truncated`, …).
        code: String,
    },
}

/// The kind of a content block.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockKind {
    /// Text.
    Text,
    /// Reasoning; its signature, when the wire gives it up front (Gemini, Responses), else by `Delta::Signature`.
    Reasoning {
        /// Responses reasoning item id, when known.
        id: Option<String>,
    },
    /// Anthropic `redacted_thinking`.
    RedactedReasoning {
        /// Opaque data.
        data: String,
    },
    /// A tool call.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Function or custom.
        kind: ToolKind,
        /// Gemini `thoughtSignature` carried by the call.
        signature: Option<Signature>,
    },
}

/// A fragment of a block.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// Text of a `Text` block.
    Text(String),
    /// Text of a `Reasoning` block.
    Reasoning(String),
    /// The signature of a `Reasoning` block (sent before its `BlockStop`).
    Signature(Signature),
    /// Arguments fragment of a `ToolCall` block.
    ToolArgs(String),
}

/// Decodes an upstream stream into [`StreamEvent`]s, incrementally (bytes may split anywhere).
pub trait StreamDecoder: Send + 'static {
    /// Feeds upstream bytes; appends the events they complete.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>);
    /// The upstream ended. `error` is a transport failure (connection lost); otherwise a wire that ended
    /// without its terminal event is an error too. Appends the final `Finish` or `Error` if not sent yet.
    fn finish(&mut self, error: Option<&str>, out: &mut Vec<StreamEvent>);
}

/// Encodes [`StreamEvent`]s as a client's stream, incrementally.
pub trait StreamEncoder: Send + 'static {
    /// Appends the bytes for `event` (possibly none, e.g. buffered until enough is known).
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>);
}

/// A stable tool-call id for wires that carry none (Gemini): the same (response, index) gives the same id.
pub fn synth_call_id(seed: &str, index: usize) -> String {
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(index.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("call_{h:016x}")
}

/// A [`crate::traits::StreamTap`] that decodes an upstream stream into IR events and encodes them for the client.
pub struct TranslateTap {
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    events: Vec<StreamEvent>,
    out: Vec<u8>,
    usage: Usage,
    reported: bool,
    /// Content deltas seen: the output estimate while usage is unknown.
    deltas: u64,
    failed: bool,
    finished: bool,
}

impl std::fmt::Debug for TranslateTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslateTap").field("usage", &self.usage).field("failed", &self.failed).finish()
    }
}

impl TranslateTap {
    /// Joins a decoder of the upstream protocol and an encoder of the client protocol.
    pub fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        Self {
            decoder,
            encoder,
            events: Vec::new(),
            out: Vec::new(),
            usage: Usage::default(),
            reported: false,
            deltas: 0,
            failed: false,
            finished: false,
        }
    }

    fn drain(&mut self) -> Bytes {
        for ev in self.events.drain(..) {
            match &ev {
                StreamEvent::Start { usage: Some(u), .. } | StreamEvent::Usage(u) => {
                    self.usage = *u;
                    self.reported = true;
                }
                StreamEvent::Finish { usage, .. } => {
                    if let Some(u) = usage {
                        self.usage = *u;
                        self.reported = true;
                    }
                    self.finished = true;
                }
                StreamEvent::Error { .. } => {
                    self.failed = true;
                    self.finished = true;
                }
                StreamEvent::Delta { .. } => self.deltas += 1,
                _ => {}
            }
            self.encoder.encode(&ev, &mut self.out);
        }
        Bytes::from(std::mem::take(&mut self.out))
    }
}

impl crate::traits::StreamTap for TranslateTap {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.decoder.feed(&chunk, &mut self.events);
        self.drain()
    }

    fn finish(&mut self, upstream_error: Option<&str>) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.decoder.finish(upstream_error, &mut self.events);
        let out = self.drain();
        if !self.finished {
            // A decoder that broke its contract: never end a client stream cleanly without a terminal event.
            self.events.push(StreamEvent::Error {
                message: "upstream stream ended without its terminal event".into(),
                code: "stream_truncated".into(),
            });
            let mut all = out.to_vec();
            all.extend_from_slice(&self.drain());
            return all.into();
        }
        out
    }

    fn usage(&self) -> (Usage, bool) {
        if self.reported { (self.usage, true) } else { (Usage { completion_tokens: self.deltas, ..self.usage }, false) }
    }

    fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_through_foreign_fields() {
        let s = Signature::new(Protocol::Gemini, "c2ln.bmF0dXJl");
        let written = s.for_client(Protocol::Anthropic);
        assert!(written.starts_with("xai1"));
        assert!(STANDARD.decode(&written).is_ok(), "an envelope is valid base64 as a whole: {written}");
        assert_eq!(Signature::from_field(Protocol::Anthropic, &written), s);
        assert_eq!(s.for_client(Protocol::Gemini), "c2ln.bmF0dXJl");
        let native = Signature::from_field(Protocol::Anthropic, "EqQBCkYIARgC");
        assert_eq!(native.origin, Protocol::Anthropic);
        assert_eq!(native.native_for(Protocol::Anthropic), Some("EqQBCkYIARgC"));
        assert_eq!(native.native_for(Protocol::Gemini), None);
        // An envelope naming an unknown protocol is taken as the field's own opaque text.
        let unknown = format!("xai1{}", STANDARD.encode("grpc.x"));
        assert_eq!(Signature::from_field(Protocol::Gemini, &unknown).origin, Protocol::Gemini);
    }

    #[test]
    fn image_urls() {
        let i = ImageSource::from_url("data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(i, ImageSource::Base64 { media_type: "image/png".into(), data: "iVBORw0KGgo=".into() });
        assert_eq!(i.to_url(), "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(ImageSource::from_url("https://x/y.png"), ImageSource::Url("https://x/y.png".into()));
    }

    #[test]
    fn synthesised_ids_are_stable_and_distinct() {
        assert_eq!(synth_call_id("resp-1", 0), synth_call_id("resp-1", 0));
        assert_ne!(synth_call_id("resp-1", 0), synth_call_id("resp-1", 1));
        assert_ne!(synth_call_id("resp-1", 0), synth_call_id("resp-2", 0));
        assert!(synth_call_id("x", 3).starts_with("call_"));
    }

    #[test]
    fn reasoning_defaults() {
        let r = ReasoningConfig { effort: Some("high".into()), ..Default::default() };
        assert_eq!(r.budget_or_default(), 16384);
        let b = ReasoningConfig { budget_tokens: Some(1024), ..Default::default() };
        assert_eq!(b.effort_or_default(), "low");
    }
}
