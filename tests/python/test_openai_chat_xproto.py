"""The official OpenAI SDK's Chat Completions against every upstream protocol (test_openai_sdk.py covers the rest).

Every test runs once per upstream wire protocol (`upstream`): the openai case is passthrough on the cross-protocol
provider, the other three go through the gateway's translation.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from xai_harness import (
    TOOL_ARGS,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    TOOL_SCHEMA,
    XPROTO_KEYS,
    Gateway,
    Mock,
    assert_xproto_record,
    single_upstream_request,
    upstream_requests_on,
)

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": TOOL_SCHEMA},
    }
]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_chat_create(gateway: Gateway, mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    prompt = "hello from chat"
    completion = client.chat.completions.create(
        model=xmodel, messages=[{"role": "system", "content": "SYSTEM-MARKER-42"}, user(prompt)]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == f"mock reply: {prompt}"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 5), completion.usage
    body = json.dumps(single_upstream_request(mock, upstream)["body"])
    assert prompt in body and "SYSTEM-MARKER-42" in body, body
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


@pytest.mark.parametrize("include_usage", [True, False], ids=["with-usage", "without-usage"])
def test_chat_stream(
    gateway: Gateway, mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str, include_usage: bool
) -> None:
    prompt = "stream chat"
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(model=xmodel, messages=[user(prompt)], stream=True, **options))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"mock reply: {prompt}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0].choices == [], usage_chunks
        assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (10, 5)
    else:
        assert usage_chunks == [], "usage the client did not ask for"
    assert single_upstream_request(mock, upstream)["finished"] is True
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_chat_tool_call_round_trip(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    messages: list[Any] = [user(f"what is the weather? use_tool:{TOOL_NAME}")]
    completion = client.chat.completions.create(model=xmodel, messages=messages, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [(TOOL_NAME, TOOL_ARGS)]

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model=xmodel, messages=messages, tools=TOOLS)
    text = answer.choices[0].message.content or ""
    assert text.startswith("tool said: ") and "sunny" in text, answer
    _, second = upstream_requests_on(mock, upstream, count=2)
    assert "sunny" in json.dumps(second["body"])


def test_chat_parallel_tool_calls_streamed(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    tools = [*TOOLS, {"type": "function", "function": {**TOOLS[0]["function"], "name": "get_time"}}]
    with client.chat.completions.stream(
        model=xmodel, messages=[user(f"use_tools:{TOOL_NAME},get_time")], tools=tools
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (TOOL_NAME, TOOL_ARGS),
        ("get_time", {"arg": "get_time-value"}),
    ]
    assert len({c.id for c in calls}) == 2
    single_upstream_request(mock, upstream)


def test_chat_upstream_rate_limit_is_rate_limit_error(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    mock.script([{"status": 429, "headers": {"retry-after": "30"}}] * 6, key=XPROTO_KEYS[upstream])
    with fresh_gateway.client() as c, pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=xmodel, messages=[user("too fast")])
