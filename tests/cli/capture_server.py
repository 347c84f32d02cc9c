#!/usr/bin/env python3
"""A tiny upstream that logs every request and answers with a minimal valid stream, to learn what a CLI sends.

Usage: capture_server.py LOG_DIR  (prints `capture-server listening on 127.0.0.1:PORT`, then serves until killed)

Each request is written to LOG_DIR/NNN.json: method, path, headers, the body (decoded as JSON when possible; a
zstd/gzip body is noted, not decoded). Answers:
- POST .../messages/count_tokens   -> {"input_tokens": 10}
- POST .../messages                -> an Anthropic Messages SSE stream (or JSON when stream is false)
- POST .../responses               -> an OpenAI Responses SSE stream
- POST .../chat/completions        -> an OpenAI Chat SSE stream (or JSON)
- GET  .../models                  -> an empty model list
- GET  /_mock/requests             -> the log in the mock upstream's shape ({"requests":[{seq, method, path, headers,
                                      body}]}), so tests/cli/run.sh can use this server in place of the mock
- anything else                    -> 404 {}
The reply text is `mock reply: <last user text>` like the mock upstream's, so the CLI output can be checked the same
way. Only the standard library is used.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOG_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
COUNTER = itertools.count(1)
LOCK = threading.Lock()
LOG: list[dict[str, Any]] = []


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user turn in a Messages, Chat or Responses request."""
    items = body.get("messages") or body.get("input") or []
    if isinstance(items, str):
        return items
    for item in reversed(items):
        if item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        texts = [part.get("text", "") for part in content or [] if isinstance(part, dict) and "text" in part]
        # Claude Code and Codex put context blocks (<system-reminder>, <environment_context>) before the prompt.
        for text in reversed(texts):
            if text.strip() and not text.lstrip().startswith("<"):
                return text
        if texts:
            return texts[-1]
    return ""


def sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def anthropic_stream(model: str, text: str) -> list[bytes]:
    usage = {"input_tokens": 10, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message = {
        "id": "msg_capture",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return [
        sse("message_start", {"type": "message_start", "message": message}),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def responses_stream(model: str, text: str) -> list[bytes]:
    seq = itertools.count(0)
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    base = {"id": "resp_capture", "object": "response", "created_at": 0, "model": model, "output": []}
    item = {
        "id": "msg_capture",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    opened = {**item, "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}

    def ev(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    return [
        ev("response.created", response={**base, "status": "in_progress"}),
        ev("response.in_progress", response={**base, "status": "in_progress"}),
        ev("response.output_item.added", output_index=0, item=opened),
        ev("response.content_part.added", item_id="msg_capture", output_index=0, content_index=0, part=part),
        ev("response.output_text.delta", item_id="msg_capture", output_index=0, content_index=0, delta=text),
        ev("response.output_text.done", item_id="msg_capture", output_index=0, content_index=0, text=text),
        ev(
            "response.content_part.done",
            item_id="msg_capture",
            output_index=0,
            content_index=0,
            part={**part, "text": text},
        ),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.completed", response={**base, "status": "completed", "output": [item], "usage": usage}),
    ]


def chat_stream(model: str, text: str) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            None,
            {
                "id": "chatcmpl-capture",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            },
        )

    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": text}),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the JSON log is the record
        pass

    def _record(self, raw: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding:
            entry["body_note"] = f"{len(raw)} bytes, Content-Encoding {encoding} (not decoded)"
            raw = b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        entry["body"] = body
        with LOCK:
            n = next(COUNTER)
            (LOG_DIR / f"{n:03d}.json").write_text(json.dumps(entry, indent=1))
            LOG.append({"seq": n, **entry})
        return entry

    def _send(self, status: int, content_type: str, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/_mock/requests":
            with LOCK:
                data = json.dumps({"requests": LOG}).encode()
            self._send(200, "application/json", [data])
            return
        self._record(b"")
        if self.path.split("?")[0].endswith("/models"):
            self._send(
                200, "application/json", [json.dumps({"object": "list", "data": [], "has_more": False}).encode()]
            )
        else:
            self._send(404, "application/json", [b"{}"])

    def do_HEAD(self) -> None:
        self._record(b"")
        self._send(200, "text/plain", [])

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = self._record(raw)
        body = entry["body"] if isinstance(entry["body"], dict) else {}
        path = self.path.split("?")[0]
        model = body.get("model", "capture-model")
        text = f"mock reply: {last_user_text(body)}"
        stream = body.get("stream", False)
        if path.endswith("/messages/count_tokens"):
            self._send(200, "application/json", [b'{"input_tokens": 10}'])
        elif path.endswith("/messages"):
            if stream:
                self._send(200, "text/event-stream", anthropic_stream(model, text))
            else:
                reply = {
                    "id": "msg_capture",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                }
                self._send(200, "application/json", [json.dumps(reply).encode()])
        elif path.endswith("/responses"):
            self._send(200, "text/event-stream", responses_stream(model, text))
        elif path.endswith("/chat/completions"):
            if stream:
                self._send(200, "text/event-stream", chat_stream(model, text))
            else:
                reply = {
                    "id": "chatcmpl-capture",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
                self._send(200, "application/json", [json.dumps(reply).encode()])
        else:
            self._send(404, "application/json", [b"{}"])


def main() -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    print(f"capture-server listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
