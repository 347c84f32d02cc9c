//! Chat Completions streams: [`ChatStreamDecoder`] (upstream SSE → IR events) and [`ChatStreamEncoder`]
//! (IR events → the client's SSE, as the official SDKs parse it).

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use xai_core::Usage;
use xai_core::ir::{
    BlockKind, Delta, Signature, StopReason, StreamDecoder, StreamEncoder, StreamEvent, ToolKind, synth_call_id,
};
use xai_core::{Protocol, RequestMeta};

use super::{UsageOut, completion_id, finish_reason, now_secs, stop_from_finish, usage_from};
use crate::openai_chat::error_json;
use crate::translate::SseSplitter;

const P: Protocol = Protocol::OpenAiChat;

// ---------------------------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// OpenRouter and vLLM spell it `reasoning`; kept raw because some send an object.
    #[serde(default, borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning_details: Option<&'a RawValue>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FnDelta<'a>>,
    #[serde(default, borrow)]
    custom: Option<CustomDelta<'a>>,
    #[serde(default, borrow)]
    extra_content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FnDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    /// A string fragment, or (some compatibles) a whole JSON object.
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CustomDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<Cow<'a, str>>,
}

/// A tool call buffered until its turn (its OpenAI index is not the open block's).
#[derive(Debug)]
struct PendingCall {
    index: u64,
    id: String,
    name: String,
    args: String,
    kind: ToolKind,
    signature: Option<Signature>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Reasoning,
    /// A reasoning block whose signature went out: more reasoning opens a new block.
    ReasoningSigned,
    /// A tool call streamed live: its OpenAI index and whether any argument fragment went out.
    Tool {
        index: u64,
        args_sent: bool,
    },
}

/// Decodes an OpenAI Chat (or compatible) upstream stream into IR events. Only choice 0 is translated.
///
/// Parallel tool calls may interleave on the wire (several `tool_calls` per delta, indices 0, 1, 2 in any
/// order), while IR blocks are sequential: the first call is streamed live, every other one is buffered and
/// emitted whole, in index order, when the choice finishes. Text or reasoning arriving once a call is open
/// is buffered the same way.
#[derive(Debug)]
pub struct ChatStreamDecoder {
    sse: SseSplitter,
    started: bool,
    ended: bool,
    id: String,
    next_block: u32,
    open: Open,
    pending: Vec<PendingCall>,
    /// Id of the call streamed live.
    live_id: String,
    /// (wire index, call index) for wire indices reused by a new call.
    aliases: Vec<(u64, u64)>,
    late_reasoning: String,
    late_text: String,
    saw_tool: bool,
    refused: bool,
    stop: Option<StopReason>,
    usage: Option<Usage>,
}

impl Default for ChatStreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatStreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self {
            sse: SseSplitter::default(),
            started: false,
            ended: false,
            id: String::new(),
            next_block: 0,
            open: Open::None,
            pending: Vec::new(),
            live_id: String::new(),
            aliases: Vec::new(),
            late_reasoning: String::new(),
            late_text: String::new(),
            saw_tool: false,
            refused: false,
            stop: None,
            usage: None,
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(id) = id {
            self.id = id.to_string();
        }
        out.push(StreamEvent::Start { id: id.map(str::to_string), model: model.map(str::to_string), usage: None });
    }

    fn fail(&mut self, message: String, code: String, out: &mut Vec<StreamEvent>) {
        self.start(None, None, out);
        self.ended = true;
        out.push(StreamEvent::Error { message, code });
    }

    fn close_open(&mut self, out: &mut Vec<StreamEvent>) {
        let index = self.next_block.wrapping_sub(1);
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => return,
            Open::Tool { args_sent: false, .. } => {
                out.push(StreamEvent::Delta { index, delta: Delta::ToolArgs("{}".into()) });
            }
            _ => {}
        }
        out.push(StreamEvent::BlockStop { index });
    }

    fn open_block(&mut self, block: BlockKind, out: &mut Vec<StreamEvent>) -> u32 {
        self.close_open(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(StreamEvent::BlockStart { index, block });
        index
    }

    /// Whether content must wait: a tool call is open or buffered.
    fn in_tool_phase(&self) -> bool {
        matches!(self.open, Open::Tool { .. }) || !self.pending.is_empty()
    }

    fn text(&mut self, reasoning: bool, s: &str, out: &mut Vec<StreamEvent>) {
        if s.is_empty() {
            return;
        }
        if self.in_tool_phase() {
            if reasoning { &mut self.late_reasoning } else { &mut self.late_text }.push_str(s);
            return;
        }
        let (want, kind) = if reasoning {
            (Open::Reasoning, BlockKind::Reasoning { id: None })
        } else {
            (Open::Text, BlockKind::Text)
        };
        if self.open != want {
            self.open_block(kind, out);
            self.open = want;
        }
        let index = self.next_block - 1;
        let delta = if reasoning { Delta::Reasoning(s.to_string()) } else { Delta::Text(s.to_string()) };
        out.push(StreamEvent::Delta { index, delta });
    }

    fn signature(&mut self, sig: &str, out: &mut Vec<StreamEvent>) {
        if self.in_tool_phase() || sig.is_empty() {
            return; // a signature after tool calls has no reasoning left to attach to
        }
        if self.open != Open::Reasoning {
            self.open_block(BlockKind::Reasoning { id: None }, out);
            self.open = Open::Reasoning;
        }
        let index = self.next_block - 1;
        out.push(StreamEvent::Delta { index, delta: Delta::Signature(Signature::new(P, sig)) });
        self.open = Open::ReasoningSigned;
    }

    /// The call a wire index means now. Some compatibles put every parallel call on index 0, each with its own
    /// id (trap 3: never fold them together): a new id on a taken index starts a new call, ordered after the rest.
    fn call_index(&mut self, wire: u64, id: Option<&str>) -> u64 {
        let current = self.aliases.iter().rev().find(|(w, _)| *w == wire).map_or(wire, |(_, v)| *v);
        let Some(id) = id.filter(|id| !id.is_empty()) else { return current };
        let known = match self.open {
            Open::Tool { index, .. } if index == current => Some(self.live_id.as_str()),
            _ => self.pending.iter().find(|p| p.index == current).map(|p| p.id.as_str()),
        };
        match known {
            Some(k) if k != id => {
                let v = (1 << 32) + self.aliases.len() as u64;
                self.aliases.push((wire, v));
                v
            }
            _ => current,
        }
    }

    fn tool(&mut self, pos: usize, t: ToolDelta<'_>, out: &mut Vec<StreamEvent>) {
        let index = self.call_index(t.index.unwrap_or(pos as u64), t.id.as_deref());
        let custom = t.kind.as_deref() == Some("custom") || t.custom.is_some();
        let (name, args): (Option<Cow<'_, str>>, Option<Cow<'_, str>>) = match (t.function, t.custom) {
            (Some(f), _) => (f.name, f.arguments.map(raw_text)),
            (None, Some(c)) => (c.name, c.input),
            (None, None) => (None, None),
        };
        let args = args.unwrap_or_default();
        if let Open::Tool { index: live, args_sent } = &mut self.open
            && *live == index
        {
            if !args.is_empty() {
                *args_sent = true;
                let block = self.next_block - 1;
                out.push(StreamEvent::Delta { index: block, delta: Delta::ToolArgs(args.into_owned()) });
            }
            return;
        }
        if let Some(p) = self.pending.iter_mut().find(|p| p.index == index) {
            if p.id.is_empty()
                && let Some(id) = &t.id
            {
                p.id = id.to_string();
            }
            if p.name.is_empty()
                && let Some(n) = &name
            {
                p.name = n.to_string();
            }
            p.args.push_str(&args);
            return;
        }
        self.saw_tool = true;
        let kind = if custom { ToolKind::Custom } else { ToolKind::Function };
        let signature = t.extra_content.and_then(thought_signature).map(|s| Signature::new(P, s));
        let id = match t.id.as_deref() {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => synth_call_id(&self.id, index as usize),
        };
        let name = name.map(Cow::into_owned).unwrap_or_default();
        let can_stream = !name.is_empty() && self.pending.is_empty() && !matches!(self.open, Open::Tool { .. });
        if can_stream {
            self.live_id.clone_from(&id);
            let block = self.open_block(BlockKind::ToolCall { id, name, kind, signature }, out);
            let args_sent = !args.is_empty();
            if args_sent {
                out.push(StreamEvent::Delta { index: block, delta: Delta::ToolArgs(args.into_owned()) });
            }
            self.open = Open::Tool { index, args_sent };
        } else {
            self.pending.push(PendingCall { index, id, name, args: args.into_owned(), kind, signature });
        }
    }

    /// Closes the open block and emits everything buffered, in order: the choice is complete.
    fn flush(&mut self, out: &mut Vec<StreamEvent>) {
        self.close_open(out);
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|p| p.index);
        for p in pending {
            let block = self
                .open_block(BlockKind::ToolCall { id: p.id, name: p.name, kind: p.kind, signature: p.signature }, out);
            let args = if p.args.trim().is_empty() && p.kind == ToolKind::Function { "{}".into() } else { p.args };
            out.push(StreamEvent::Delta { index: block, delta: Delta::ToolArgs(args) });
            out.push(StreamEvent::BlockStop { index: block });
        }
        let reasoning = std::mem::take(&mut self.late_reasoning);
        self.text(true, &reasoning, out);
        let text = std::mem::take(&mut self.late_text);
        self.text(false, &text, out);
        self.close_open(out);
    }

    fn on_data(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if self.ended {
            return;
        }
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.start(None, None, out);
            self.flush(out);
            let stop = self.final_stop(None);
            self.ended = true;
            out.push(StreamEvent::Finish { stop, usage: self.usage });
            return;
        }
        // A chunk that is not a chunk (keep-alive noise, a future shape) is skipped, never fatal.
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else { return };
        if let Some(err) = chunk.error.filter(|e| e.get() != "null") {
            let (message, code) = error_parts(err);
            self.fail(message, code, out);
            return;
        }
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        let choices = chunk.choices.unwrap_or_default();
        let usage_only = choices.is_empty();
        for choice in choices.into_iter().filter(|c| c.index.unwrap_or(0) == 0) {
            if let Some(d) = choice.delta {
                self.delta(d, out);
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.flush(out);
                if reason == "insufficient_system_resource" {
                    let msg = "the upstream interrupted the answer for lack of resources";
                    self.fail(msg.into(), "overloaded".into(), out);
                    return;
                }
                self.stop = Some(self.final_stop(Some(&reason)));
            }
        }
        if let Some(raw) = chunk.usage
            && let Ok(v) = serde_json::from_str::<Value>(raw.get())
            && let Some(u) = usage_from(&v)
            && (u.total() > 0 || usage_only)
        {
            self.usage = Some(u);
            out.push(StreamEvent::Usage(u));
        }
    }

    fn final_stop(&self, reason: Option<&str>) -> StopReason {
        let stop = match (reason, &self.stop) {
            (Some(r), _) => stop_from_finish(r),
            (None, Some(s)) => s.clone(),
            (None, None) => StopReason::EndTurn,
        };
        match stop {
            _ if self.saw_tool => StopReason::ToolUse,
            StopReason::EndTurn if self.refused => StopReason::ContentFilter,
            s => s,
        }
    }

    fn delta(&mut self, d: ChunkDelta<'_>, out: &mut Vec<StreamEvent>) {
        let details = d.reasoning_details.and_then(|r| serde_json::from_str::<Vec<Value>>(r.get()).ok());
        match details.filter(|d| !d.is_empty()) {
            // OpenRouter sends `reasoning` and `reasoning_details` together: the details win (they hold signatures).
            Some(details) => {
                for det in &details {
                    if let Some(t) = det.get("text").or_else(|| det.get("summary")).and_then(Value::as_str) {
                        self.text(true, t, out);
                    }
                    if let Some(s) = det.get("signature").and_then(Value::as_str) {
                        self.signature(s, out);
                    }
                }
            }
            None => {
                if let Some(r) = &d.reasoning_content {
                    self.text(true, r, out);
                } else if let Some(r) = d.reasoning.filter(|r| r.get().starts_with('"')).map(raw_text) {
                    self.text(true, &r, out);
                }
            }
        }
        if let Some(c) = &d.content {
            self.text(false, c, out);
        }
        if let Some(r) = &d.refusal
            && !r.is_empty()
        {
            self.refused = true;
            self.text(false, r, out);
        }
        for (pos, t) in d.tool_calls.unwrap_or_default().into_iter().enumerate() {
            self.tool(pos, t, out);
        }
    }
}

/// A raw JSON value as text: a string's contents, `null` as empty, anything else verbatim.
fn raw_text(raw: &RawValue) -> Cow<'_, str> {
    let s = raw.get();
    if s.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(s).unwrap_or_default()
    } else if s == "null" {
        Cow::Borrowed("")
    } else {
        Cow::Borrowed(s)
    }
}

fn thought_signature(raw: &RawValue) -> Option<String> {
    let v: Value = serde_json::from_str(raw.get()).ok()?;
    v.get("google")?.get("thought_signature")?.as_str().map(str::to_string)
}

/// Message and code of an in-stream `error` value (an object, or a bare string).
fn error_parts(raw: &RawValue) -> (String, String) {
    let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let message = match &v {
        Value::String(s) => s.clone(),
        _ => v.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string(),
    };
    let code = match v.get("code") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => v.get("type").and_then(Value::as_str).unwrap_or("upstream_error").to_string(),
    };
    (message, code)
}

impl StreamDecoder for ChatStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        if self.ended {
            return;
        }
        let mut sse = std::mem::take(&mut self.sse);
        let ok = sse.feed(chunk, |_, data| self.on_data(data, out));
        self.sse = sse;
        if !ok && !self.ended {
            self.fail("upstream stream event too large".into(), "stream_too_large".into(), out);
        }
    }

    fn finish(&mut self, error: Option<&str>, out: &mut Vec<StreamEvent>) {
        if self.ended {
            return;
        }
        let mut sse = std::mem::take(&mut self.sse);
        sse.rest(|_, data| self.on_data(data, out));
        if !self.ended {
            let msg = error.unwrap_or("upstream stream ended before [DONE]");
            self.fail(msg.into(), "stream_truncated".into(), out);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cur {
    None,
    Text,
    Reasoning,
    Tool { index: u32, custom: bool },
}

/// Encodes IR events as a Chat Completions stream for the client: a role chunk, content / reasoning_content /
/// tool_calls deltas, a closing chunk with `finish_reason`, the `choices: []` usage chunk when the client asked
/// for it, then `data: [DONE]`. An error is one `data: {"error":…}` and nothing after it.
#[derive(Debug)]
pub struct ChatStreamEncoder {
    include_usage: bool,
    model: Arc<str>,
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…` shared by every chunk.
    head: String,
    ended: bool,
    cur: Cur,
    next_tool: u32,
    saw_tool: bool,
    reasoning_blocks: usize,
    reasoning_id: Option<String>,
    usage: Option<Usage>,
}

const CHOICE_OPEN: &[u8] = b",\"choices\":[{\"index\":0,\"delta\":";
const CHOICE_CLOSE: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}]}\n\n";

impl ChatStreamEncoder {
    /// An encoder for a client that asked `meta` (model echoed, usage chunk only when asked).
    pub fn new(meta: &RequestMeta) -> Self {
        Self {
            include_usage: meta.include_usage,
            model: meta.model.clone(),
            head: String::new(),
            ended: false,
            cur: Cur::None,
            next_tool: 0,
            saw_tool: false,
            reasoning_blocks: 0,
            reasoning_id: None,
            usage: None,
        }
    }

    fn start(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if !self.head.is_empty() {
            return;
        }
        let id = completion_id(id);
        let mut head = Vec::with_capacity(128);
        head.extend_from_slice(b"{\"id\":");
        write_str(&mut head, &id);
        head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.extend_from_slice(now_secs().to_string().as_bytes());
        head.extend_from_slice(b",\"model\":");
        write_str(&mut head, &self.model);
        self.head = String::from_utf8(head).unwrap_or_default();
        self.chunk(out, |o| o.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}"));
    }

    /// One chunk whose delta `write` produces.
    fn chunk(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(CHOICE_OPEN);
        write(out);
        out.extend_from_slice(CHOICE_CLOSE);
    }

    fn string_delta(&self, key: &[u8], s: &str, out: &mut Vec<u8>) {
        self.chunk(out, |o| {
            o.extend_from_slice(b"{\"");
            o.extend_from_slice(key);
            o.extend_from_slice(b"\":");
            write_str(o, s);
            o.push(b'}');
        });
    }

    fn detail(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let index = self.reasoning_blocks.saturating_sub(1);
        self.chunk(out, |o| {
            o.extend_from_slice(b"{\"reasoning_details\":[{");
            write(o);
            o.extend_from_slice(b",\"index\":");
            let _ = write!(o, "{index}");
            o.extend_from_slice(b"}]}");
        });
    }

    fn finish(&mut self, stop: &StopReason, usage: Option<Usage>, out: &mut Vec<u8>) {
        let reason = finish_reason(stop, self.saw_tool);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(CHOICE_OPEN);
        out.extend_from_slice(b"{},\"logprobs\":null,\"finish_reason\":\"");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\"}]}\n\n");
        if self.include_usage {
            let u = usage.or(self.usage).unwrap_or_default();
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(self.head.as_bytes());
            out.extend_from_slice(b",\"choices\":[],\"usage\":");
            let _ = serde_json::to_writer(&mut *out, &UsageOut::from(&u));
            out.extend_from_slice(b"}\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// OpenAI's error `type` for a machine code.
fn error_type(code: &str) -> &'static str {
    match code {
        "rate_limit_exceeded" | "rate_limit_error" | "insufficient_quota" => "rate_limit_exceeded",
        "invalid_request_error" | "context_length_exceeded" | "invalid_request" => "invalid_request_error",
        _ => "server_error",
    }
}

impl StreamEncoder for ChatStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match event {
            StreamEvent::Start { id, usage, .. } => {
                if usage.is_some() {
                    self.usage = *usage;
                }
                self.start(id.as_deref(), out);
            }
            StreamEvent::Error { message, code } => {
                self.ended = true;
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(error_json(message, error_type(code), code).as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            StreamEvent::Finish { stop, usage } => {
                self.start(None, out);
                self.ended = true;
                self.finish(stop, *usage, out);
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::BlockStart { block, .. } => {
                self.start(None, out);
                match block {
                    BlockKind::Text => self.cur = Cur::Text,
                    BlockKind::Reasoning { id } => {
                        self.cur = Cur::Reasoning;
                        self.reasoning_blocks += 1;
                        self.reasoning_id.clone_from(id);
                    }
                    BlockKind::RedactedReasoning { data } => {
                        self.cur = Cur::None;
                        self.reasoning_blocks += 1;
                        self.detail(out, |o| {
                            o.extend_from_slice(b"\"type\":\"reasoning.encrypted\",\"data\":");
                            write_str(o, data);
                        });
                    }
                    BlockKind::ToolCall { id, name, kind, signature } => {
                        let index = self.next_tool;
                        self.next_tool += 1;
                        self.saw_tool = true;
                        let custom = *kind == ToolKind::Custom;
                        self.cur = Cur::Tool { index, custom };
                        let synth;
                        let id = if id.is_empty() {
                            synth = synth_call_id(&self.head, index as usize);
                            &synth
                        } else {
                            id
                        };
                        self.chunk(out, |o| {
                            o.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                            let _ = write!(o, "{index}");
                            o.extend_from_slice(b",\"id\":");
                            write_str(o, id);
                            if custom {
                                o.extend_from_slice(b",\"type\":\"custom\",\"custom\":{\"name\":");
                                write_str(o, name);
                                o.extend_from_slice(b",\"input\":\"\"}");
                            } else {
                                o.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                                write_str(o, name);
                                o.extend_from_slice(b",\"arguments\":\"\"}");
                            }
                            if let Some(sig) = signature {
                                o.extend_from_slice(b",\"extra_content\":{\"google\":{\"thought_signature\":");
                                write_str(o, &sig.for_client(P));
                                o.extend_from_slice(b"}}");
                            }
                            o.extend_from_slice(b"}]}");
                        });
                    }
                }
            }
            StreamEvent::Delta { delta, .. } => {
                self.start(None, out);
                match (delta, self.cur) {
                    (Delta::Text(t), _) if !t.is_empty() => self.string_delta(b"content", t, out),
                    (Delta::Reasoning(t), _) if !t.is_empty() => self.string_delta(b"reasoning_content", t, out),
                    (Delta::ToolArgs(a), Cur::Tool { index, custom }) if !a.is_empty() => {
                        self.chunk(out, |o| {
                            o.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                            let _ = write!(o, "{index}");
                            o.extend_from_slice(if custom {
                                b",\"custom\":{\"input\":"
                            } else {
                                b",\"function\":{\"arguments\":"
                            });
                            write_str(o, a);
                            o.extend_from_slice(b"}}]}");
                        });
                    }
                    (Delta::Signature(sig), _) => {
                        let id = self.reasoning_id.take();
                        self.detail(out, |o| {
                            o.extend_from_slice(b"\"type\":\"reasoning.text\",\"text\":\"\",\"signature\":");
                            write_str(o, &sig.for_client(P));
                            if let Some(id) = &id {
                                o.extend_from_slice(b",\"id\":");
                                write_str(o, id);
                            }
                        });
                    }
                    _ => {}
                }
            }
            StreamEvent::BlockStop { .. } => self.cur = Cur::None,
        }
    }
}
