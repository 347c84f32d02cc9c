//! Streams: an Anthropic upstream SSE stream → [`StreamEvent`]s, and [`StreamEvent`]s → an Anthropic client stream.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

use serde::Deserialize;
use xai_core::ir::{BlockKind, Delta, Signature, StopReason, StreamDecoder, StreamEncoder, StreamEvent, ToolKind};
use xai_core::{Protocol, Usage};

use super::{
    WireUsage, client_message_id, code_for_error_type, denormalise, error_type_for_code, stop_from_wire, stop_to_wire,
};
use crate::translate::SseSplitter;

// ---------------------------------------------------------------------------------------------------------------
// Upstream side.

/// One upstream event; every event type shares this shape (absent fields stay `None`).
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(default, borrow)]
    content_block: Option<WireBlock<'a>>,
    #[serde(default)]
    message: Option<WireStart>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: Option<WireError<'a>>,
}

/// `content_block_delta.delta` and `message_delta.delta` in one.
#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
}

#[derive(Deserialize)]
struct WireBlock<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct WireStart {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(rename = "type", default, borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Reasoning,
    Redacted,
    Tool,
}

/// The block being streamed: its upstream index, canonical index and kind.
#[derive(Debug)]
struct Open {
    wire: u64,
    index: u32,
    kind: Kind,
    has_args: bool,
}

#[derive(Debug, Default)]
struct DecodeState {
    started: bool,
    done: bool,
    /// Next canonical block index: upstream blocks without a canonical form are skipped, so indices are
    /// renumbered to stay sequential.
    next: u32,
    open: Option<Open>,
    usage: WireUsage,
    have_usage: bool,
    stop: Option<StopReason>,
}

/// Decodes an Anthropic upstream stream (`message_start` … `message_stop`).
#[derive(Debug, Default)]
pub struct AnthropicStreamDecoder {
    sse: SseSplitter,
    st: DecodeState,
}

impl AnthropicStreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }
}

impl DecodeState {
    fn start(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id: None, model: None, usage: None });
        }
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(o) = self.open.take() {
            if o.kind == Kind::Tool && !o.has_args {
                out.push(StreamEvent::Delta { index: o.index, delta: Delta::ToolArgs("{}".into()) });
            }
            out.push(StreamEvent::BlockStop { index: o.index });
        }
    }

    /// A `content_block_delta` of the open block; deltas of skipped blocks (server tools) and of unknown types
    /// (citations) are dropped.
    fn delta(&mut self, wire: u64, ty: &str, value: Cow<'_, str>, out: &mut Vec<StreamEvent>) {
        let Some(open) = self.open.as_mut().filter(|o| o.wire == wire) else { return };
        if value.is_empty() {
            return;
        }
        let delta = match (open.kind, ty) {
            (Kind::Text, "text_delta") => Delta::Text(value.into_owned()),
            (Kind::Reasoning, "thinking_delta") => Delta::Reasoning(value.into_owned()),
            (Kind::Reasoning, "signature_delta") => Delta::Signature(Signature::new(Protocol::Anthropic, value)),
            (Kind::Tool, "input_json_delta") => {
                open.has_args = true;
                Delta::ToolArgs(value.into_owned())
            }
            _ => return,
        };
        out.push(StreamEvent::Delta { index: open.index, delta });
    }

    fn fail(&mut self, message: String, code: String, out: &mut Vec<StreamEvent>) {
        self.start(out);
        self.done = true;
        self.open = None;
        out.push(StreamEvent::Error { message, code });
    }

    fn event(&mut self, name: Option<&[u8]>, data: &[u8], out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        if let Some((wire, ty, value)) = fast_delta(data) {
            self.delta(wire, ty, value, out);
            return;
        }
        let ev: WireEvent<'_> = match serde_json::from_slice(data) {
            Ok(ev) => ev,
            Err(_) => {
                // An error event whose body is not the usual JSON still ends the stream.
                if name == Some(b"error") {
                    let message = String::from_utf8_lossy(data).trim().to_string();
                    self.fail(message, "api_error".into(), out);
                }
                return;
            }
        };
        // `event: error` is an error whatever its JSON says.
        let ty = if name == Some(b"error") { "error" } else { &*ev.ty };
        match ty {
            "message_start" => {
                if self.started {
                    return;
                }
                self.started = true;
                let m = ev.message.unwrap_or(WireStart { id: None, model: None, usage: None });
                let usage = m.usage.map(|u| {
                    self.usage.merge(&u);
                    self.have_usage = true;
                    self.usage.normalise()
                });
                out.push(StreamEvent::Start { id: m.id, model: m.model, usage });
            }
            "content_block_start" => {
                self.start(out);
                self.close(out);
                let (Some(wire), Some(b)) = (ev.index, ev.content_block) else { return };
                let index = self.next;
                let (kind, block) = match &*b.ty {
                    "text" => (Kind::Text, BlockKind::Text),
                    "thinking" => (Kind::Reasoning, BlockKind::Reasoning { id: None }),
                    "redacted_thinking" => {
                        (Kind::Redacted, BlockKind::RedactedReasoning { data: b.data.unwrap_or_default() })
                    }
                    "tool_use" => (
                        Kind::Tool,
                        BlockKind::ToolCall {
                            id: b.id.unwrap_or_else(|| format!("toolu_{index}")),
                            name: b.name.unwrap_or_default(),
                            kind: ToolKind::Function,
                            signature: None,
                        },
                    ),
                    // server_tool_use, web_search_tool_result, mcp_tool_use, …: not canonical content.
                    _ => return,
                };
                self.next += 1;
                out.push(StreamEvent::BlockStart { index, block });
                // Start blocks normally come empty; keep whatever they carry.
                let first = match kind {
                    Kind::Text => b.text.filter(|t| !t.is_empty()).map(|t| Delta::Text(t.into_owned())),
                    Kind::Reasoning => b.thinking.filter(|t| !t.is_empty()).map(|t| Delta::Reasoning(t.into_owned())),
                    _ => None,
                };
                if let Some(delta) = first {
                    out.push(StreamEvent::Delta { index, delta });
                }
                if kind == Kind::Reasoning
                    && let Some(sig) = b.signature.filter(|s| !s.is_empty())
                {
                    out.push(StreamEvent::Delta {
                        index,
                        delta: Delta::Signature(Signature::new(Protocol::Anthropic, sig)),
                    });
                }
                self.open = Some(Open { wire, index, kind, has_args: false });
            }
            "content_block_delta" => {
                let (Some(wire), Some(d)) = (ev.index, ev.delta) else { return };
                let Some(ty) = d.ty else { return };
                let value = match &*ty {
                    "text_delta" => d.text,
                    "thinking_delta" => d.thinking,
                    "signature_delta" => d.signature,
                    "input_json_delta" => d.partial_json,
                    _ => None,
                };
                if let Some(value) = value {
                    self.delta(wire, &ty, value, out);
                }
            }
            "content_block_stop" if self.open.as_ref().is_some_and(|o| Some(o.wire) == ev.index) => self.close(out),
            "message_delta" => {
                self.start(out);
                if let Some(d) = ev.delta
                    && d.stop_reason.is_some()
                {
                    self.stop = Some(stop_from_wire(d.stop_reason.as_deref(), d.stop_sequence));
                }
                if let Some(u) = ev.usage {
                    self.usage.merge(&u);
                    self.have_usage = true;
                    out.push(StreamEvent::Usage(self.usage.normalise()));
                }
            }
            "message_stop" => {
                self.start(out);
                self.close(out);
                self.done = true;
                let usage = self.have_usage.then(|| self.usage.normalise());
                out.push(StreamEvent::Finish { stop: self.stop.take().unwrap_or_default(), usage });
            }
            "error" => {
                let (ty, message) = match ev.error {
                    Some(e) => (e.ty.map(Cow::into_owned), e.message.map(Cow::into_owned)),
                    None => (None, None),
                };
                let code = code_for_error_type(ty.as_deref().unwrap_or("api_error"));
                self.fail(message.unwrap_or_else(|| "upstream stream error".into()), code, out);
            }
            // ping and anything newer.
            _ => {}
        }
    }
}

/// The hot path: a delta written exactly as Anthropic writes it
/// (`{"type":"content_block_delta","index":N,"delta":{"type":T,F:"…"}}`), read without a full parse. Anything
/// else (other key orders, extra fields) returns `None` and goes through serde.
fn fast_delta(data: &[u8]) -> Option<(u64, &str, Cow<'_, str>)> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let wire = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(br#","delta":{"type":""#)?;
    let q = memchr::memchr(b'"', rest)?;
    let (ty, field): (&str, &[u8]) = match &rest[..q] {
        b"text_delta" => ("text_delta", b"text"),
        b"thinking_delta" => ("thinking_delta", b"thinking"),
        b"signature_delta" => ("signature_delta", b"signature"),
        b"input_json_delta" => ("input_json_delta", b"partial_json"),
        _ => return None,
    };
    let quoted = rest[q + 1..].strip_prefix(b",\"")?.strip_prefix(field)?.strip_prefix(b"\":")?;
    let body = quoted.strip_prefix(b"\"")?;
    // The closing quote is the first one not escaped.
    let (mut at, mut escaped) = (0, false);
    let end = loop {
        let j = at + memchr::memchr2(b'"', b'\\', body.get(at..)?)?;
        if body[j] == b'"' {
            break j;
        }
        escaped = true;
        at = j + 2;
    };
    let tail = body[end + 1..].strip_prefix(b"}}")?;
    if !tail.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let value = if escaped {
        Cow::Owned(serde_json::from_slice::<String>(&quoted[..end + 2]).ok()?)
    } else {
        Cow::Borrowed(std::str::from_utf8(&body[..end]).ok()?)
    };
    Some((wire, ty, value))
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        if self.st.done {
            return;
        }
        let st = &mut self.st;
        let ok = self.sse.feed(chunk, |name, data| st.event(name, data, out));
        if !ok && !st.done {
            st.fail("upstream stream event exceeds the size limit".into(), "stream_too_large".into(), out);
        }
    }

    fn finish(&mut self, error: Option<&str>, out: &mut Vec<StreamEvent>) {
        if self.st.done {
            return;
        }
        let st = &mut self.st;
        self.sse.rest(|name, data| st.event(name, data, out));
        if !st.done {
            let message = match error {
                Some(e) => format!("upstream stream failed: {e}"),
                None => "upstream stream ended without message_stop".into(),
            };
            st.fail(message, "stream_truncated".into(), out);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Client side.

/// Writes an Anthropic stream for a client, as the official SDKs and Claude Code parse it.
#[derive(Debug)]
pub struct AnthropicStreamEncoder {
    model: Arc<str>,
    started: bool,
    finished: bool,
    next: u32,
    open: Option<(u32, Kind, bool)>,
    saw_tool: bool,
    usage: Usage,
}

impl AnthropicStreamEncoder {
    /// An encoder echoing `model` (the model the client asked for).
    pub fn new(model: Arc<str>) -> Self {
        Self { model, started: false, finished: false, next: 0, open: None, saw_tool: false, usage: Usage::default() }
    }
}

fn begin(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
}

/// Decimal digits of `n`, without the formatting machinery.
fn push_u32(out: &mut Vec<u8>, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\n\n");
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn usage_fields(out: &mut Vec<u8>, u: &Usage) {
    let [input, write, read, output] = denormalise(u);
    let _ = write!(
        out,
        "\"input_tokens\":{input},\"cache_creation_input_tokens\":{write},\"cache_read_input_tokens\":{read},\"output_tokens\":{output}"
    );
}

fn block_delta(out: &mut Vec<u8>, index: u32, ty: &str, field: &str, value: &str) {
    // Written piece by piece rather than with `write!`: this runs once per streamed delta.
    begin(out, "content_block_delta");
    out.extend_from_slice(b"{\"type\":\"content_block_delta\",\"index\":");
    push_u32(out, index);
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    json_str(out, value);
    out.extend_from_slice(b"}}");
    end(out);
}

impl AnthropicStreamEncoder {
    fn message_start(&mut self, id: Option<&str>, usage: Option<&Usage>, out: &mut Vec<u8>) {
        self.started = true;
        if let Some(u) = usage {
            self.usage = *u;
        }
        begin(out, "message_start");
        out.extend_from_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":");
        json_str(out, &client_message_id(id));
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        json_str(out, &self.model);
        out.extend_from_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{");
        // Output is reported as the usage at start says (0 when unknown); message_delta gives the final count.
        usage_fields(out, &self.usage);
        out.extend_from_slice(b"}}}");
        end(out);
    }

    fn block_stop(&mut self, out: &mut Vec<u8>) {
        if let Some((index, kind, has_args)) = self.open.take() {
            if kind == Kind::Tool && !has_args {
                // Trap 2: a tool_use block always gets its arguments as a delta.
                block_delta(out, index, "input_json_delta", "partial_json", "{}");
            }
            begin(out, "content_block_stop");
            let _ = write!(out, "{{\"type\":\"content_block_stop\",\"index\":{index}}}");
            end(out);
        }
    }
}

impl StreamEncoder for AnthropicStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if !self.started && !matches!(event, StreamEvent::Start { .. } | StreamEvent::Error { .. }) {
            self.message_start(None, None, out);
        }
        match event {
            StreamEvent::Start { id, usage, .. } => {
                if !self.started {
                    self.message_start(id.as_deref(), usage.as_ref(), out);
                }
            }
            StreamEvent::BlockStart { block, .. } => {
                self.block_stop(out);
                let index = self.next;
                self.next += 1;
                begin(out, "content_block_start");
                let _ = write!(out, "{{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":");
                let kind = match block {
                    BlockKind::Text => {
                        out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}");
                        Kind::Text
                    }
                    BlockKind::Reasoning { .. } => {
                        out.extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}");
                        Kind::Reasoning
                    }
                    BlockKind::RedactedReasoning { data } => {
                        out.extend_from_slice(b"{\"type\":\"redacted_thinking\",\"data\":");
                        json_str(out, data);
                        out.push(b'}');
                        Kind::Redacted
                    }
                    BlockKind::ToolCall { id, name, .. } => {
                        self.saw_tool = true;
                        out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                        json_str(out, id);
                        out.extend_from_slice(b",\"name\":");
                        json_str(out, name);
                        out.extend_from_slice(b",\"input\":{}}");
                        Kind::Tool
                    }
                };
                out.push(b'}');
                end(out);
                self.open = Some((index, kind, false));
            }
            StreamEvent::Delta { delta, .. } => {
                let Some((index, kind, has_args)) = self.open.as_mut() else { return };
                let index = *index;
                match (delta, *kind) {
                    (Delta::Text(t), Kind::Text) if !t.is_empty() => block_delta(out, index, "text_delta", "text", t),
                    (Delta::Reasoning(t), Kind::Reasoning) if !t.is_empty() => {
                        block_delta(out, index, "thinking_delta", "thinking", t)
                    }
                    (Delta::Signature(s), Kind::Reasoning) => {
                        block_delta(out, index, "signature_delta", "signature", &s.for_client(Protocol::Anthropic))
                    }
                    (Delta::ToolArgs(a), Kind::Tool) if !a.is_empty() => {
                        *has_args = true;
                        block_delta(out, index, "input_json_delta", "partial_json", a);
                    }
                    _ => {}
                }
            }
            StreamEvent::BlockStop { .. } => self.block_stop(out),
            StreamEvent::Usage(u) => self.usage = *u,
            StreamEvent::Finish { stop, usage } => {
                self.block_stop(out);
                if let Some(u) = usage {
                    self.usage = *u;
                }
                let (reason, sequence) = stop_to_wire(stop, self.saw_tool);
                begin(out, "message_delta");
                let _ = write!(
                    out,
                    "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{reason}\",\"stop_sequence\":"
                );
                match sequence {
                    Some(s) => json_str(out, s),
                    None => out.extend_from_slice(b"null"),
                }
                // Input counts too: the SDK takes them from here when message_start did not know them.
                out.extend_from_slice(b"},\"usage\":{");
                usage_fields(out, &self.usage);
                out.extend_from_slice(b"}}");
                end(out);
                begin(out, "message_stop");
                out.extend_from_slice(b"{\"type\":\"message_stop\"}");
                end(out);
                self.finished = true;
            }
            StreamEvent::Error { message, code } => {
                begin(out, "error");
                out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
                out.extend_from_slice(error_type_for_code(code).as_bytes());
                out.extend_from_slice(b"\",\"message\":");
                json_str(out, message);
                out.extend_from_slice(b"}}");
                end(out);
                self.finished = true;
            }
        }
    }
}
