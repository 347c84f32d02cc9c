//! Gemini streams: the decoder of an upstream `:streamGenerateContent?alt=sse` body, and the encoder of a client
//! stream in either of Gemini's two forms (SSE with `alt=sse`, else one JSON array streamed element by element).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use xai_core::Protocol;
use xai_core::Usage;
use xai_core::ir::{
    BlockKind, Delta, Signature, StopReason, StreamDecoder, StreamEncoder, StreamEvent, ToolKind, synth_call_id,
};

use super::request::call_args;
use super::response::{OutCall, OutCandidate, OutChunk, OutContent, OutPart, client_response_id};
use super::{OutError, OutUsage, WireUsage, code_from_status, finish_reason, stop_from_finish};
use crate::translate::SseSplitter;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(default)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default, borrow)]
    model_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    response_id: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(default)]
    prompt_feedback: Option<Feedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, borrow)]
    parts: Option<Vec<WirePart<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default, borrow)]
    function_call: Option<WireCall<'a>>,
    #[serde(default, borrow)]
    thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireCall<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text(u32),
    Reasoning(u32),
}

/// Decodes an upstream Gemini SSE stream. Chunks carry whole parts: consecutive text (or thought) chunks
/// continue one block, a `functionCall` is a whole block (start, one arguments delta, stop: trap 2), usage is a
/// running total, and the stream ends with the body after a chunk that had a `finishReason`.
#[derive(Debug, Default)]
pub struct GeminiStreamDecoder {
    sse: SseSplitter,
    started: bool,
    done: bool,
    open: Option<Open>,
    next: u32,
    calls: usize,
    tool_seen: bool,
    response_id: String,
    finish: Option<String>,
    blocked: bool,
    usage: Option<Usage>,
}

impl GeminiStreamDecoder {
    /// A decoder for one upstream stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(Open::Text(i) | Open::Reasoning(i)) = self.open.take() {
            out.push(StreamEvent::BlockStop { index: i });
        }
    }

    fn start_block(&mut self, block: BlockKind, out: &mut Vec<StreamEvent>) -> u32 {
        self.close(out);
        let index = self.next;
        self.next += 1;
        out.push(StreamEvent::BlockStart { index, block });
        index
    }

    fn fail(&mut self, message: String, code: &str, out: &mut Vec<StreamEvent>) {
        self.ensure_started(None, None, out);
        out.push(StreamEvent::Error { message, code: code.into() });
        self.done = true;
    }

    fn ensure_started(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id: id.map(str::to_string), model: model.map(str::to_string), usage: None });
        }
    }

    fn on_data(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        let chunk: Chunk<'_> = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => return self.fail(format!("unreadable upstream stream chunk: {e}"), "bad_upstream_chunk", out),
        };
        if let Some(e) = chunk.error {
            let code = code_from_status(e.status.as_deref(), e.code);
            return self.fail(e.message.unwrap_or_else(|| "upstream error".into()), &code, out);
        }
        if !self.started
            && let Some(id) = &chunk.response_id
        {
            self.response_id = id.to_string();
        }
        self.ensure_started(chunk.response_id.as_deref(), chunk.model_version.as_deref(), out);
        for cand in chunk.candidates.into_iter().flatten().filter(|c| c.index.unwrap_or(0) == 0) {
            for part in cand.content.and_then(|c| c.parts).into_iter().flatten() {
                self.on_part(part, out);
            }
            if let Some(r) = cand.finish_reason {
                self.finish = Some(r);
            }
        }
        if chunk.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            self.blocked = true;
        }
        if let Some(u) = chunk.usage_metadata {
            let u = u.normalise();
            if self.usage != Some(u) {
                self.usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
    }

    fn on_part(&mut self, part: WirePart<'_>, out: &mut Vec<StreamEvent>) {
        let sig = part.thought_signature.map(|s| Signature::from_field(Protocol::Gemini, &s));
        if let Some(call) = part.function_call {
            let name = call.name.unwrap_or_default().into_owned();
            let id = match call.id {
                Some(id) => id.into_owned(),
                None => synth_call_id(&self.response_id, self.calls),
            };
            self.calls += 1;
            self.tool_seen = true;
            let index =
                self.start_block(BlockKind::ToolCall { id, name, kind: ToolKind::Function, signature: sig }, out);
            let args = call.args.map(|a| a.get().trim()).filter(|a| *a != "null").unwrap_or("{}");
            out.push(StreamEvent::Delta { index, delta: Delta::ToolArgs(args.to_string()) });
            out.push(StreamEvent::BlockStop { index });
            return;
        }
        let text = part.text.unwrap_or_default();
        if part.thought == Some(true) {
            if text.is_empty() && sig.is_none() {
                return;
            }
            let index = match self.open {
                Some(Open::Reasoning(i)) => i,
                _ => {
                    let i = self.start_block(BlockKind::Reasoning { id: None }, out);
                    self.open = Some(Open::Reasoning(i));
                    i
                }
            };
            if !text.is_empty() {
                out.push(StreamEvent::Delta { index, delta: Delta::Reasoning(text.into_owned()) });
            }
            if let Some(sig) = sig {
                // A signature ends its reasoning.
                out.push(StreamEvent::Delta { index, delta: Delta::Signature(sig) });
                self.close(out);
            }
            return;
        }
        if let Some(sig) = sig {
            // A signature riding on a text part: an empty reasoning carrying it, before the text (module docs).
            let index = self.start_block(BlockKind::Reasoning { id: None }, out);
            out.push(StreamEvent::Delta { index, delta: Delta::Signature(sig) });
            out.push(StreamEvent::BlockStop { index });
        }
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.start_block(BlockKind::Text, out);
                self.open = Some(Open::Text(i));
                i
            }
        };
        out.push(StreamEvent::Delta { index, delta: Delta::Text(text.into_owned()) });
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        let mut sse = std::mem::take(&mut self.sse);
        let ok = sse.feed(chunk, |_, d| self.on_data(d, out));
        self.sse = sse;
        if !ok && !self.done {
            self.fail("upstream stream event too large".into(), "stream_too_large", out);
        }
    }

    fn finish(&mut self, error: Option<&str>, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        // A last event without its blank line counts when it is whole; a partial one means the body was cut.
        let mut sse = std::mem::take(&mut self.sse);
        let mut cut = false;
        sse.rest(|_, d| match serde_json::from_slice::<serde::de::IgnoredAny>(d) {
            Ok(_) => self.on_data(d, out),
            Err(_) => cut = true,
        });
        if self.done {
            return;
        }
        let stop = match (&self.finish, self.blocked) {
            // After a finishReason the answer is whole: a lost trailing chunk (usage) does not fail it.
            (Some(r), _) => stop_from_finish(r, self.tool_seen),
            (None, true) => StopReason::ContentFilter,
            _ => {
                let message = match (error, cut) {
                    (Some(e), _) => format!("upstream stream failed before its end: {e}"),
                    (None, true) => "upstream stream ended mid-chunk".to_string(),
                    (None, false) => "upstream stream ended without a finishReason".to_string(),
                };
                return self.fail(message, "stream_truncated", out);
            }
        };
        self.ensure_started(None, None, out);
        self.close(out);
        out.push(StreamEvent::Finish { stop, usage: self.usage });
        self.done = true;
    }
}

/// The block being encoded.
#[derive(Debug)]
enum Current {
    None,
    Text,
    Reasoning { had_text: bool },
    Tool { id: String, name: String, kind: ToolKind, signature: Option<String>, args: String },
    Other,
}

/// Encodes IR events as a Gemini client stream: `data: {chunk}\r\n\r\n` with `alt=sse`, else the elements of
/// one JSON array (`[{…}\n`, `,{…}\n`, …, `]`). Text and reasoning deltas go out as they come; a tool call is
/// buffered until its block stops and sent as one whole `functionCall` part; the last chunk carries
/// `finishReason` and `usageMetadata`.
#[derive(Debug)]
pub struct GeminiStreamEncoder {
    sse: bool,
    opened: bool,
    done: bool,
    model: Arc<str>,
    response_id: Option<String>,
    current: Current,
    tool_seen: bool,
    usage: Option<Usage>,
}

impl GeminiStreamEncoder {
    /// An encoder echoing `model` (the model the client asked); `sse` picks the framing.
    pub fn new(sse: bool, model: Arc<str>) -> Self {
        Self {
            sse,
            opened: false,
            done: false,
            model,
            response_id: None,
            current: Current::None,
            tool_seen: false,
            usage: None,
        }
    }

    fn frame_start(&mut self, out: &mut Vec<u8>) {
        if self.sse {
            out.extend_from_slice(b"data: ");
        } else {
            out.push(if self.opened { b',' } else { b'[' });
        }
        self.opened = true;
    }

    fn frame_end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.sse { b"\r\n\r\n" } else { b"\n" });
    }

    fn chunk(&mut self, part: OutPart<'_>, finish: Option<&'static str>, out: &mut Vec<u8>) {
        if self.response_id.is_none() {
            self.response_id = Some(client_response_id("").into_owned());
        }
        self.frame_start(out);
        let parts = [part];
        let c = OutChunk {
            candidates: [OutCandidate {
                content: OutContent { role: "model", parts: &parts },
                finish_reason: finish,
                index: 0,
            }],
            usage_metadata: finish.and(self.usage.as_ref()).map(OutUsage::from),
            model_version: &self.model,
            response_id: self.response_id.as_deref().unwrap_or(""),
        };
        // Writing into a Vec cannot fail, and these structs always serialise.
        let _ = serde_json::to_writer(&mut *out, &c);
        self.frame_end(out);
    }
}

impl StreamEncoder for GeminiStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, usage, .. } => {
                self.response_id = Some(client_response_id(id.as_deref().unwrap_or("")).into_owned());
                if let Some(u) = usage {
                    self.usage = Some(*u);
                }
            }
            StreamEvent::BlockStart { block, .. } => {
                self.current = match block {
                    BlockKind::Text => Current::Text,
                    BlockKind::Reasoning { .. } => Current::Reasoning { had_text: false },
                    BlockKind::ToolCall { id, name, kind, signature } => {
                        self.tool_seen = true;
                        Current::Tool {
                            id: id.clone(),
                            name: name.clone(),
                            kind: *kind,
                            signature: signature.as_ref().map(|s| s.for_client(Protocol::Gemini)),
                            args: String::new(),
                        }
                    }
                    BlockKind::RedactedReasoning { .. } => Current::Other,
                };
            }
            StreamEvent::Delta { delta, .. } => match (delta, &mut self.current) {
                (Delta::Text(t), _) => self.chunk(OutPart { text: Some(t), ..OutPart::default() }, None, out),
                (Delta::Reasoning(t), cur) => {
                    if let Current::Reasoning { had_text } = cur {
                        *had_text |= !t.is_empty();
                    }
                    self.chunk(OutPart { text: Some(t), thought: Some(true), ..OutPart::default() }, None, out);
                }
                (Delta::Signature(s), cur) => {
                    // After thought text: an empty thought part holding the signature. Alone: an empty text part
                    // with it, which decodes back to an empty signed reasoning (module docs).
                    let thought = matches!(cur, Current::Reasoning { had_text: true }).then_some(true);
                    let sig = Cow::Owned(s.for_client(Protocol::Gemini));
                    self.chunk(
                        OutPart { text: Some(""), thought, thought_signature: Some(sig), ..OutPart::default() },
                        None,
                        out,
                    );
                }
                (Delta::ToolArgs(a), Current::Tool { args, .. }) => args.push_str(a),
                (Delta::ToolArgs(_), _) => {}
            },
            StreamEvent::BlockStop { .. } => {
                if let Current::Tool { id, name, kind, signature, args } =
                    std::mem::replace(&mut self.current, Current::None)
                {
                    let part = OutPart {
                        function_call: Some(OutCall { name: &name, args: call_args(&args, kind), id: &id }),
                        thought_signature: signature.map(Cow::Owned),
                        ..OutPart::default()
                    };
                    self.chunk(part, None, out);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Finish { stop, usage } => {
                if let Some(u) = usage {
                    self.usage = Some(*u);
                }
                let stop = if self.tool_seen { &StopReason::ToolUse } else { stop };
                self.chunk(OutPart { text: Some(""), ..OutPart::default() }, Some(finish_reason(stop)), out);
                if !self.sse {
                    out.push(b']');
                }
                self.done = true;
            }
            StreamEvent::Error { message, code } => {
                self.frame_start(out);
                let _ = serde_json::to_writer(&mut *out, &OutError::new(message, code));
                self.frame_end(out);
                if !self.sse {
                    out.push(b']');
                }
                self.done = true;
            }
        }
    }
}
