//! The decoder of an upstream Responses SSE stream into IR events.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use xai_core::ir::{BlockKind, Delta, StreamDecoder, StreamEvent, ToolKind};

use super::response::{WireError, WireResponse, item_part};
use super::{SUMMARY_SEPARATOR, WireItem, WireUsage, pack_signature, wire_stop};
use crate::translate::SseSplitter;

/// One upstream event: only the fields translation reads; strings borrowed where unescaped.
#[derive(Deserialize)]
struct Ev<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(default)]
    summary_index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "super::lenient")]
    item: Option<WireItem>,
    #[serde(default, deserialize_with = "super::lenient")]
    response: Option<WireResponse>,
    #[serde(default, deserialize_with = "super::lenient")]
    error: Option<WireError>,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Reasoning,
    Tool { custom: bool },
}

#[derive(Debug)]
struct Open {
    index: u32,
    output_index: Option<u64>,
    kind: Kind,
    /// A non-empty delta went out (else `output_item.done` supplies the content).
    emitted: bool,
    last_summary: Option<u64>,
}

#[derive(Debug, Default)]
struct DecState {
    started: bool,
    done: bool,
    next_index: u32,
    open: Option<Open>,
    has_tool: bool,
    refused: bool,
}

/// Decodes an upstream Responses stream into IR events (see [`xai_core::ir`] for the invariants it keeps).
#[derive(Debug, Default)]
pub struct ResponsesStreamDecoder {
    sse: SseSplitter,
    st: DecState,
}

impl ResponsesStreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamDecoder for ResponsesStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        if self.st.done {
            return;
        }
        let st = &mut self.st;
        let ok = self.sse.feed(chunk, |_, data| st.on_event(data, out));
        if !ok && !self.st.done {
            self.st.fail("upstream stream event exceeds the size limit".into(), "stream_too_large".into(), out);
        }
    }

    fn finish(&mut self, error: Option<&str>, out: &mut Vec<StreamEvent>) {
        if self.st.done {
            return;
        }
        let st = &mut self.st;
        self.sse.rest(|_, data| st.on_event(data, out));
        if !self.st.done {
            let message = match error {
                Some(e) => format!("upstream stream failed before response.completed: {e}"),
                None => "upstream stream ended before response.completed".to_string(),
            };
            self.st.fail(message, "stream_truncated".into(), out);
        }
    }
}

impl DecState {
    fn start(&mut self, resp: Option<&WireResponse>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: resp.and_then(|r| r.id.clone()),
                model: resp.and_then(|r| r.model.clone()),
                usage: None,
            });
        }
    }

    fn fail(&mut self, message: String, code: String, out: &mut Vec<StreamEvent>) {
        self.start(None, out);
        out.push(StreamEvent::Error { message, code });
        self.done = true;
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Ev<'_>>(data) else { return };
        match &*ev.ty {
            "response.created" | "response.in_progress" | "response.queued" => self.start(ev.response.as_ref(), out),
            "response.output_item.added" => {
                self.start(None, out);
                if let Some(item) = &ev.item {
                    self.open_item(item, ev.output_index, out);
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                self.refused |= ev.ty == "response.refusal.delta";
                self.delta(Kind::Text, &ev, out);
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.delta(Kind::Reasoning, &ev, out)
            }
            "response.function_call_arguments.delta" => self.delta(Kind::Tool { custom: false }, &ev, out),
            "response.custom_tool_call_input.delta" => self.delta(Kind::Tool { custom: true }, &ev, out),
            "response.output_item.done" => {
                self.start(None, out);
                if let Some(item) = &ev.item {
                    self.done_item(item, ev.output_index, out);
                }
            }
            "response.completed" | "response.incomplete" => {
                self.start(ev.response.as_ref(), out);
                self.close(out);
                let resp = ev.response.unwrap_or_default();
                if self.next_index == 0 {
                    // No item events: the final output is all there is.
                    for item in resp.output.iter().flatten() {
                        self.done_item(item, None, out);
                    }
                }
                let status = if ev.ty == "response.incomplete" { Some("incomplete") } else { resp.status.as_deref() };
                let reason = resp.incomplete_details.as_ref().and_then(|d| d.reason.as_deref());
                let stop = wire_stop(status, reason, self.has_tool, self.refused);
                out.push(StreamEvent::Finish { stop, usage: resp.usage.map(WireUsage::normalise) });
                self.done = true;
            }
            "response.failed" => {
                let e = ev.response.and_then(|r| r.error).unwrap_or_default();
                self.fail(e.message(), e.code(), out);
            }
            "error" => {
                let e = ev.error.unwrap_or(WireError { code: ev.code, message: ev.message, ty: None });
                self.fail(e.message(), e.code(), out);
            }
            _ => {}
        }
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(o) = self.open.take() {
            out.push(StreamEvent::BlockStop { index: o.index });
        }
    }

    fn begin(&mut self, kind: Kind, block: BlockKind, output_index: Option<u64>, out: &mut Vec<StreamEvent>) {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(StreamEvent::BlockStart { index, block });
        self.open = Some(Open { index, output_index, kind, emitted: false, last_summary: None });
    }

    fn open_item(&mut self, item: &WireItem, output_index: Option<u64>, out: &mut Vec<StreamEvent>) {
        match item.ty.as_str() {
            "message" => self.begin(Kind::Text, BlockKind::Text, output_index, out),
            "reasoning" => self.begin(Kind::Reasoning, BlockKind::Reasoning { id: item.id.clone() }, output_index, out),
            "function_call" | "custom_tool_call" => {
                let custom = item.ty == "custom_tool_call";
                self.has_tool = true;
                let id = item
                    .call_id
                    .clone()
                    .filter(|c| !c.is_empty())
                    .or_else(|| item.id.clone())
                    .unwrap_or_else(|| xai_core::ir::synth_call_id("responses", self.next_index as usize));
                let block = BlockKind::ToolCall {
                    id,
                    name: item.name.clone().unwrap_or_default(),
                    kind: if custom { ToolKind::Custom } else { ToolKind::Function },
                    signature: None,
                };
                self.begin(Kind::Tool { custom }, block, output_index, out);
            }
            _ => {}
        }
    }

    fn matches(&self, kind: Option<Kind>, output_index: Option<u64>) -> bool {
        self.open.as_ref().is_some_and(|o| {
            kind.is_none_or(|k| k == o.kind)
                && (output_index.is_none() || o.output_index.is_none() || o.output_index == output_index)
        })
    }

    fn delta(&mut self, kind: Kind, ev: &Ev<'_>, out: &mut Vec<StreamEvent>) {
        let Some(d) = ev.delta.as_deref().filter(|d| !d.is_empty()) else { return };
        self.start(None, out);
        if !self.matches(Some(kind), ev.output_index) {
            // A delta without its `output_item.added`: open the block it belongs to (a tool call cannot be opened
            // without its name, so its fragments wait for `output_item.done`).
            match kind {
                Kind::Text => self.begin(Kind::Text, BlockKind::Text, ev.output_index, out),
                Kind::Reasoning => self.begin(Kind::Reasoning, BlockKind::Reasoning { id: None }, ev.output_index, out),
                Kind::Tool { .. } => return,
            }
        }
        let Some(o) = self.open.as_mut() else { return };
        let delta = match kind {
            Kind::Text => Delta::Text(d.to_string()),
            Kind::Reasoning => {
                if o.emitted && o.last_summary != ev.summary_index {
                    out.push(StreamEvent::Delta { index: o.index, delta: Delta::Reasoning(SUMMARY_SEPARATOR.into()) });
                }
                o.last_summary = ev.summary_index;
                Delta::Reasoning(d.to_string())
            }
            Kind::Tool { .. } => Delta::ToolArgs(d.to_string()),
        };
        o.emitted = true;
        out.push(StreamEvent::Delta { index: o.index, delta });
    }

    /// `output_item.done`: the complete item is the truth; whatever its deltas did not carry goes out now.
    fn done_item(&mut self, item: &WireItem, output_index: Option<u64>, out: &mut Vec<StreamEvent>) {
        let kind = match item.ty.as_str() {
            "message" => Kind::Text,
            "reasoning" => Kind::Reasoning,
            "function_call" => Kind::Tool { custom: false },
            "custom_tool_call" => Kind::Tool { custom: true },
            _ => return,
        };
        if !self.matches(Some(kind), output_index) {
            self.open_item(item, output_index, out);
        }
        let Some(o) = self.open.take() else { return };
        let index = o.index;
        if !o.emitted
            && let Some((part, refused)) = item_part(item)
        {
            self.refused |= refused;
            match part {
                xai_core::ir::Part::Text { text, .. } => {
                    out.push(StreamEvent::Delta { index, delta: Delta::Text(text) });
                }
                xai_core::ir::Part::Reasoning(r) if !r.text.is_empty() => {
                    out.push(StreamEvent::Delta { index, delta: Delta::Reasoning(r.text) });
                }
                xai_core::ir::Part::ToolCall(c) if !c.arguments.is_empty() => {
                    out.push(StreamEvent::Delta { index, delta: Delta::ToolArgs(c.arguments) });
                }
                _ => {}
            }
        }
        if kind == Kind::Reasoning
            && let Some(sig) = item.encrypted_content.as_deref().filter(|s| !s.is_empty())
        {
            out.push(StreamEvent::Delta { index, delta: Delta::Signature(pack_signature(item.id.as_deref(), sig)) });
        }
        out.push(StreamEvent::BlockStop { index });
    }
}
