//! The encoder of IR events into a Responses SSE stream for a client (Codex, the official SDKs).

use std::io::Write as _;

use serde::Serialize;
use serde_json::value::RawValue;
use xai_core::Protocol;
use xai_core::Usage;
use xai_core::ir::{BlockKind, Delta, Signature, StopReason, StreamEncoder, StreamEvent, ToolKind};

use super::{
    OutError, OutItem, OutResponse, OutSummary, OutText, OutUsage, REDACTED_CARRIER, SIG_CARRIER, client_encrypted,
    client_error_code, finish_status, item_id, now_secs, response_id,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CurKind {
    Text,
    Reasoning,
    Function,
    Custom,
    /// A block with no Responses counterpart (Anthropic redacted thinking): nothing is written.
    Skip,
}

#[derive(Debug)]
struct Cur {
    index: u32,
    kind: CurKind,
    item_id: String,
    output_index: usize,
    buf: String,
    part_open: bool,
    sig: Option<String>,
    call_id: String,
    name: String,
}

/// Encodes IR events as a Responses stream the way Codex and the official SDKs read it.
#[derive(Debug)]
pub struct ResponsesStreamEncoder {
    model: String,
    id: String,
    created_at: u64,
    seq: u64,
    started: bool,
    done: bool,
    items: Vec<Box<RawValue>>,
    has_tool: bool,
    usage: Usage,
    cur: Option<Cur>,
}

#[derive(Serialize)]
struct EvResponse<'a, O: Serialize + ?Sized> {
    response: OutResponse<'a, O>,
}

#[derive(Serialize)]
struct EvItem<'a, I: Serialize + ?Sized> {
    output_index: usize,
    item: &'a I,
}

#[derive(Serialize)]
struct EvContentPart<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    part: OutText<'a>,
}

#[derive(Serialize)]
struct EvText<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct EvSummaryPart<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: u32,
    part: OutSummary<'a>,
}

#[derive(Serialize)]
struct EvSummaryText<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct EvArgs<'a> {
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Writes one SSE event: `event: <type>`, then `data:` with `type` and `sequence_number` first and `body`'s
/// fields after them (its opening brace becomes a comma; every body has at least one field).
fn write_event<T: Serialize>(out: &mut Vec<u8>, seq: &mut u64, ty: &str, body: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"sequence_number\":");
    let _ = write!(out, "{seq}");
    *seq += 1;
    let at = out.len();
    if serde_json::to_writer(&mut *out, body).is_ok() && out.get(at) == Some(&b'{') {
        out[at] = b',';
    } else {
        out.truncate(at);
        out.push(b'}');
    }
    out.extend_from_slice(b"\n\n");
}

impl ResponsesStreamEncoder {
    /// An encoder answering as `model` (the model the client asked).
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            id: String::new(),
            created_at: now_secs(),
            seq: 0,
            started: false,
            done: false,
            items: Vec::new(),
            has_tool: false,
            usage: Usage::default(),
            cur: None,
        }
    }

    fn start(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(id);
        for ty in ["response.created", "response.in_progress"] {
            let r = OutResponse::new(&self.id, self.created_at, &self.model, "in_progress", &[(); 0]);
            write_event(out, &mut self.seq, ty, &EvResponse { response: r });
        }
    }

    /// A reasoning item that only carries an opaque value for the client to send back: the signature of the tool
    /// call after it (Gemini `thoughtSignature`; `function_call` items have no opaque field a client returns), or
    /// Anthropic redacted thinking. The request decoder recognises them by their id prefix.
    fn signature_carrier(&mut self, prefix: &str, sig: &Signature, out: &mut Vec<u8>) {
        let output_index = self.items.len();
        let id = item_id(prefix, &self.id, output_index);
        let value = client_encrypted(sig);
        let item = OutItem::Reasoning { id: &id, summary: &[], encrypted_content: Some(&value) };
        let Ok(raw) = serde_json::to_string(&item).and_then(RawValue::from_string) else { return };
        write_event(out, &mut self.seq, "response.output_item.added", &EvItem { output_index, item: &*raw });
        write_event(out, &mut self.seq, "response.output_item.done", &EvItem { output_index, item: &*raw });
        self.items.push(raw);
    }

    fn block_start(&mut self, index: u32, block: &BlockKind, out: &mut Vec<u8>) {
        if let Some(c) = &self.cur {
            let i = c.index;
            self.block_stop(i, out);
        }
        match block {
            BlockKind::ToolCall { signature: Some(sig), .. } => self.signature_carrier(SIG_CARRIER, sig, out),
            BlockKind::RedactedReasoning { data } => {
                let sig = Signature::new(Protocol::Anthropic, data.as_str());
                self.signature_carrier(REDACTED_CARRIER, &sig, out);
            }
            _ => {}
        }
        let output_index = self.items.len();
        let (kind, item_id, call_id, name) = match block {
            BlockKind::Text => (CurKind::Text, item_id("msg", &self.id, output_index), "", ""),
            BlockKind::Reasoning { id } => {
                let rid = match id {
                    Some(id) if id.starts_with("rs_") => id.clone(),
                    _ => item_id("rs", &self.id, output_index),
                };
                (CurKind::Reasoning, rid, "", "")
            }
            BlockKind::RedactedReasoning { .. } => (CurKind::Skip, String::new(), "", ""),
            BlockKind::ToolCall { id, name, kind, .. } => {
                self.has_tool = true;
                match kind {
                    ToolKind::Function => {
                        (CurKind::Function, item_id("fc", &self.id, output_index), id.as_str(), name.as_str())
                    }
                    ToolKind::Custom => {
                        (CurKind::Custom, item_id("ctc", &self.id, output_index), id.as_str(), name.as_str())
                    }
                }
            }
        };
        let seq = &mut self.seq;
        let ty = "response.output_item.added";
        match kind {
            CurKind::Text => {
                let item = OutItem::Message { id: &item_id, status: "in_progress", role: "assistant", content: &[] };
                write_event(out, seq, ty, &EvItem { output_index, item: &item });
                let part =
                    EvContentPart { item_id: &item_id, output_index, content_index: 0, part: OutText::output("") };
                write_event(out, seq, "response.content_part.added", &part);
            }
            CurKind::Reasoning => {
                let item = OutItem::Reasoning { id: &item_id, summary: &[], encrypted_content: None };
                write_event(out, seq, ty, &EvItem { output_index, item: &item });
            }
            CurKind::Function => {
                let item = OutItem::FunctionCall { id: &item_id, status: "in_progress", arguments: "", call_id, name };
                write_event(out, seq, ty, &EvItem { output_index, item: &item });
            }
            CurKind::Custom => {
                let item = OutItem::CustomToolCall { id: &item_id, status: "in_progress", input: "", call_id, name };
                write_event(out, seq, ty, &EvItem { output_index, item: &item });
            }
            CurKind::Skip => {}
        }
        self.cur = Some(Cur {
            index,
            kind,
            item_id,
            output_index,
            buf: String::new(),
            part_open: false,
            sig: None,
            call_id: call_id.to_string(),
            name: name.to_string(),
        });
    }

    fn delta(&mut self, index: u32, delta: &Delta, out: &mut Vec<u8>) {
        let Some(c) = self.cur.as_mut().filter(|c| c.index == index) else { return };
        let seq = &mut self.seq;
        let (item_id, output_index) = (c.item_id.as_str(), c.output_index);
        match (c.kind, delta) {
            (CurKind::Text, Delta::Text(t)) => {
                c.buf.push_str(t);
                let ev = EvText { item_id, output_index, content_index: 0, delta: Some(t), text: None, logprobs: [] };
                write_event(out, seq, "response.output_text.delta", &ev);
            }
            (CurKind::Reasoning, Delta::Reasoning(t)) => {
                if !c.part_open {
                    c.part_open = true;
                    let ev = EvSummaryPart { item_id, output_index, summary_index: 0, part: OutSummary::new("") };
                    write_event(out, seq, "response.reasoning_summary_part.added", &ev);
                }
                c.buf.push_str(t);
                let ev = EvSummaryText { item_id, output_index, summary_index: 0, delta: Some(t), text: None };
                write_event(out, seq, "response.reasoning_summary_text.delta", &ev);
            }
            (CurKind::Reasoning, Delta::Signature(s)) => c.sig = Some(client_encrypted(s)),
            (CurKind::Function | CurKind::Custom, Delta::ToolArgs(t)) => {
                c.buf.push_str(t);
                let ty = if c.kind == CurKind::Function {
                    "response.function_call_arguments.delta"
                } else {
                    "response.custom_tool_call_input.delta"
                };
                let ev = EvArgs { item_id, output_index, delta: Some(t), arguments: None, input: None, name: None };
                write_event(out, seq, ty, &ev);
            }
            _ => {}
        }
    }

    fn block_stop(&mut self, index: u32, out: &mut Vec<u8>) {
        if self.cur.as_ref().is_none_or(|c| c.index != index) {
            return;
        }
        let Some(c) = self.cur.take() else { return };
        let seq = &mut self.seq;
        let (item_id, output_index, buf) = (c.item_id.as_str(), c.output_index, c.buf.as_str());
        let done_item = match c.kind {
            CurKind::Text => {
                let ev = EvText { item_id, output_index, content_index: 0, delta: None, text: Some(buf), logprobs: [] };
                write_event(out, seq, "response.output_text.done", &ev);
                let part = EvContentPart { item_id, output_index, content_index: 0, part: OutText::output(buf) };
                write_event(out, seq, "response.content_part.done", &part);
                let content = [OutText::output(buf)];
                serde_json::to_string(&OutItem::Message {
                    id: item_id,
                    status: "completed",
                    role: "assistant",
                    content: &content,
                })
            }
            CurKind::Reasoning => {
                if c.part_open {
                    let ev = EvSummaryText { item_id, output_index, summary_index: 0, delta: None, text: Some(buf) };
                    write_event(out, seq, "response.reasoning_summary_text.done", &ev);
                    let ev = EvSummaryPart { item_id, output_index, summary_index: 0, part: OutSummary::new(buf) };
                    write_event(out, seq, "response.reasoning_summary_part.done", &ev);
                }
                let summary = [OutSummary::new(buf)];
                let summary: &[OutSummary<'_>] = if c.part_open { &summary } else { &[] };
                serde_json::to_string(&OutItem::Reasoning { id: item_id, summary, encrypted_content: c.sig.as_deref() })
            }
            CurKind::Function => {
                let args = if buf.is_empty() { "{}" } else { buf };
                let ev = EvArgs {
                    item_id,
                    output_index,
                    delta: None,
                    arguments: Some(args),
                    input: None,
                    name: Some(&c.name),
                };
                write_event(out, seq, "response.function_call_arguments.done", &ev);
                serde_json::to_string(&OutItem::FunctionCall {
                    id: item_id,
                    status: "completed",
                    arguments: args,
                    call_id: &c.call_id,
                    name: &c.name,
                })
            }
            CurKind::Custom => {
                let ev = EvArgs { item_id, output_index, delta: None, arguments: None, input: Some(buf), name: None };
                write_event(out, seq, "response.custom_tool_call_input.done", &ev);
                serde_json::to_string(&OutItem::CustomToolCall {
                    id: item_id,
                    status: "completed",
                    input: buf,
                    call_id: &c.call_id,
                    name: &c.name,
                })
            }
            CurKind::Skip => return,
        };
        let Ok(raw) = done_item.and_then(RawValue::from_string) else { return };
        write_event(out, seq, "response.output_item.done", &EvItem { output_index, item: &*raw });
        self.items.push(raw);
    }

    fn finish(&mut self, stop: &StopReason, usage: Option<&Usage>, out: &mut Vec<u8>) {
        if let Some(c) = &self.cur {
            let i = c.index;
            self.block_stop(i, out);
        }
        let usage = usage.copied().unwrap_or(self.usage);
        let (status, incomplete) = finish_status(stop, self.has_tool);
        let ty = if status == "completed" { "response.completed" } else { "response.incomplete" };
        let mut r = OutResponse::new(&self.id, self.created_at, &self.model, status, self.items.as_slice());
        r.incomplete_details = incomplete;
        r.usage = Some(OutUsage::from(&usage));
        write_event(out, &mut self.seq, ty, &EvResponse { response: r });
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        let mut r = OutResponse::new(&self.id, self.created_at, &self.model, "failed", self.items.as_slice());
        r.error = Some(OutError { code: client_error_code(code), message });
        write_event(out, &mut self.seq, "response.failed", &EvResponse { response: r });
    }
}

impl StreamEncoder for ResponsesStreamEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, usage, .. } => {
                if let Some(u) = usage {
                    self.usage = *u;
                }
                self.start(id.as_deref(), out);
            }
            StreamEvent::BlockStart { index, block } => {
                self.start(None, out);
                self.block_start(*index, block, out);
            }
            StreamEvent::Delta { index, delta } => self.delta(*index, delta, out),
            StreamEvent::BlockStop { index } => self.block_stop(*index, out),
            StreamEvent::Usage(u) => self.usage = *u,
            StreamEvent::Finish { stop, usage } => {
                self.start(None, out);
                self.finish(stop, usage.as_ref(), out);
                self.done = true;
            }
            StreamEvent::Error { message, code } => {
                self.start(None, out);
                self.fail(message, code, out);
                self.done = true;
            }
        }
    }
}
