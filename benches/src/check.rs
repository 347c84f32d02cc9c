//! Functional checks of chat completion replies: the load driver verifies every response, so
//! a gateway that answers fast but wrong (an error body with 200, a truncated stream, a lost
//! usage chunk) fails the benchmark instead of winning it.

use std::borrow::Cow;

use serde::Deserialize;

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: Message<'a>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct UsageChunk {
    usage: Usage,
}

fn preview(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.replace('\n', "\\n")
}

/// A non-streaming `chat.completion`: JSON with a first choice whose message has content, and
/// a `usage` with non-zero token counts.
pub fn check_completion(body: &[u8]) -> Result<(), String> {
    let c: Completion<'_> =
        serde_json::from_slice(body).map_err(|e| format!("body is not a chat.completion ({e}): {}", preview(body)))?;
    let first = c.choices.first().ok_or_else(|| format!("no choices: {}", preview(body)))?;
    if first.message.content.as_deref().is_none_or(str::is_empty) {
        return Err(format!("empty message content: {}", preview(body)));
    }
    match c.usage {
        Some(u) if u.prompt_tokens > 0 && u.completion_tokens > 0 => Ok(()),
        _ => Err(format!("missing or zero usage: {}", preview(body))),
    }
}

/// A streamed chat completion: `data:` events of JSON objects, at least one with content,
/// a usage chunk when `expect_usage`, and `data: [DONE]` as the last event.
pub fn check_stream(body: &[u8], expect_usage: bool) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|_| format!("stream is not UTF-8: {}", preview(body)))?;
    let mut events = 0usize;
    let mut content = 0usize;
    let mut usage = false;
    let mut done = false;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if done {
            return Err(format!("data after [DONE]: {}", preview(data.as_bytes())));
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        if !(data.starts_with('{') && data.ends_with('}')) {
            return Err(format!("event is not a JSON object: {}", preview(data.as_bytes())));
        }
        events += 1;
        if data.contains("\"content\"") {
            content += 1;
        }
        if data.contains("\"usage\":{") || data.contains("\"usage\": {") {
            let u: UsageChunk = serde_json::from_str(data)
                .map_err(|e| format!("bad usage chunk ({e}): {}", preview(data.as_bytes())))?;
            if u.usage.completion_tokens == 0 {
                return Err(format!("zero usage: {}", preview(data.as_bytes())));
            }
            usage = true;
        }
    }
    if !done {
        let tail = &body[body.len().saturating_sub(120)..];
        return Err(format!("stream did not end with data: [DONE] ({events} events; tail: {})", preview(tail)));
    }
    if content == 0 {
        return Err(format!("stream had no content ({events} events)"));
    }
    if expect_usage && !usage {
        return Err(format!("stream had no usage chunk ({events} events)"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct AnEvent<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    usage: Option<AnUsage>,
    #[serde(default, borrow)]
    delta: Option<AnDelta<'a>>,
}

#[derive(Deserialize)]
struct AnUsage {
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Deserialize)]
struct AnDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// A streamed Anthropic message: `event:`/`data:` pairs of JSON objects whose `type` matches the event name,
/// `message_start` first, at least one non-empty `text_delta`, a `message_delta` with non-zero
/// `usage.output_tokens`, and `message_stop` last.
pub fn check_anthropic_stream(body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|_| format!("stream is not UTF-8: {}", preview(body)))?;
    let (mut events, mut content, mut usage, mut stopped) = (0usize, 0usize, false, false);
    let mut name: Option<&str> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if let Some(n) = line.strip_prefix("event:") {
            name = Some(n.trim());
            continue;
        }
        let Some(data) = line.strip_prefix("data:") else { continue };
        let data = data.trim();
        if stopped {
            return Err(format!("data after message_stop: {}", preview(data.as_bytes())));
        }
        let ev: AnEvent<'_> =
            serde_json::from_str(data).map_err(|e| format!("event is not JSON ({e}): {}", preview(data.as_bytes())))?;
        if name.take() != Some(&*ev.ty) {
            return Err(format!("event name does not match its type: {}", preview(data.as_bytes())));
        }
        if events == 0 && ev.ty != "message_start" {
            return Err(format!("stream does not open with message_start: {}", preview(data.as_bytes())));
        }
        events += 1;
        match &*ev.ty {
            "content_block_delta" if ev.delta.and_then(|d| d.text).is_some_and(|t| !t.is_empty()) => content += 1,
            "message_delta" => usage = ev.usage.is_some_and(|u| u.output_tokens > 0),
            "message_stop" => stopped = true,
            "error" => return Err(format!("error event: {}", preview(data.as_bytes()))),
            _ => {}
        }
    }
    if !stopped {
        let tail = &body[body.len().saturating_sub(120)..];
        return Err(format!("stream did not end with message_stop ({events} events; tail: {})", preview(tail)));
    }
    if content == 0 {
        return Err(format!("stream had no text ({events} events)"));
    }
    if !usage {
        return Err(format!("stream had no message_delta with output usage ({events} events)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion() {
        let ok = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\""}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        assert!(check_completion(ok).is_ok());
        let no_usage = br#"{"choices":[{"message":{"content":"hi"}}]}"#;
        assert!(check_completion(no_usage).is_err());
        let err = br#"{"error":{"message":"nope"}}"#;
        assert!(check_completion(err).is_err());
    }

    #[test]
    fn stream() {
        let ok = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\" hi\"}}]}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n\
                  data: [DONE]\n\n";
        assert!(check_stream(ok.as_bytes(), true).is_ok());
        let crlf = ok.replace('\n', "\r\n");
        assert!(check_stream(crlf.as_bytes(), true).is_ok());
        let no_done = ok.replace("data: [DONE]\n\n", "");
        assert!(check_stream(no_done.as_bytes(), true).is_err());
        let no_usage =
            ok.replace("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n", "");
        assert!(check_stream(no_usage.as_bytes(), true).is_err());
        assert!(check_stream(no_usage.as_bytes(), false).is_ok());
    }

    #[test]
    fn anthropic_stream() {
        let ok = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n\
                  event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\" hi\"}}\n\n\
                  event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n\
                  event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(check_anthropic_stream(ok.as_bytes()).is_ok());
        assert!(check_anthropic_stream(ok.replace('\n', "\r\n").as_bytes()).is_ok());
        let no_stop = ok.replace("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", "");
        assert!(check_anthropic_stream(no_stop.as_bytes()).is_err());
        assert!(check_anthropic_stream(ok.replace("\"output_tokens\":3", "\"output_tokens\":0").as_bytes()).is_err());
        assert!(check_anthropic_stream(ok.replace("\" hi\"", "\"\"").as_bytes()).is_err());
        assert!(check_anthropic_stream(ok.replace("event: message_delta", "event: ping").as_bytes()).is_err());
    }
}
