"""Harness for the black-box Python suites: a real `mock-upstream` and a real `xai-server` process.

Plain classes and functions; the pytest fixtures built on them live in conftest.py.

The contract these fixtures rely on is docs/test-contract.md:
- both binaries print one `... listening on 127.0.0.1:PORT` line on stdout once bound;
- the mock is scripted through `POST /_mock/script`, inspected through `GET /_mock/requests`, reset with
  `POST /_mock/reset`;
- the server is started with `--config F --listen 127.0.0.1:0 --data-dir DIR` and exposes usage records at
  `GET /admin/v1/usage`.

Binaries: `XAI_MOCK_BIN` / `XAI_SERVER_BIN`, else `$CARGO_TARGET_DIR/debug/…`, else `<repo>/target/debug/…`.
Only the standard library and `httpx` are used for control calls; the official SDKs (`openai`, `anthropic`,
`google-genai`) are the clients under test.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"listening on (\S+:\d+)\s*$")
STARTUP_TIMEOUT_S = float(os.environ.get("XAI_TEST_STARTUP_TIMEOUT", "30"))
USAGE_TIMEOUT_S = 10.0

ADMIN_TOKEN = "admin-secret"
ACME_KEY = "sk-acme"
RESEARCH_KEY = "sk-research"
UPSTREAM_KEYS = ("sk-up-1", "sk-up-2", "sk-up-3")  # provider mock-a, level 1
BACKUP_KEY = "sk-b-1"  # provider mock-b, level 2: the switch-over target of level 1 (served by the same mock)

# Cross-protocol routes: one provider per upstream wire protocol, all on the one mock, each with a key of its own (the
# mock's per-key queues and request log tell them apart) and a model glob of its own (`xproto-<tag>-*`).
# `xproto_model(protocol)` makes a model name that routes to that protocol's provider.
UPSTREAM_PROTOCOLS = ("openai", "openai-responses", "anthropic", "gemini")
XPROTO_PROVIDERS = {p: f"mock-{p}" for p in UPSTREAM_PROTOCOLS}
XPROTO_KEYS = {p: f"sk-up-{p}" for p in UPSTREAM_PROTOCOLS}
# Model-name tags: no tag is a prefix of another, so each glob matches one provider only.
XPROTO_TAGS = {"openai": "chat", "openai-responses": "responses", "anthropic": "anthropic", "gemini": "gemini"}

# Environment the server must not inherit from a developer's shell: it would point it at another store.
_SCRUBBED_ENV = ("XAI_CONFIG", "XAI_LISTEN", "DATABASE_URL", "REDIS_URL")


# --------------------------------------------------------------------------------------------------------------------
# Locating and running the binaries
# --------------------------------------------------------------------------------------------------------------------


def find_binary(env_var: str, name: str) -> Path:
    """The binary named by `env_var`, else the one cargo built into the target dir."""
    explicit = os.environ.get(env_var)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            pytest.fail(f"{env_var}={explicit} does not exist", pytrace=False)
        return path
    candidates = []
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    if target_dir:
        candidates.append(Path(target_dir) / "debug" / name)
    candidates.append(REPO_ROOT / "target" / "debug" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"cannot find the `{name}` binary (looked at {', '.join(map(str, candidates))}); "
        f"run `cargo build --workspace --bins` or set {env_var}",
        pytrace=False,
    )
    raise AssertionError("unreachable")


_PROCESS_COUNTER = itertools.count(1)
_RUNNING: set[Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    """No orphan servers when the interpreter exits without the fixtures' teardown (Ctrl-C, a crash, a script)."""
    for process in list(_RUNNING):
        if process.proc.poll() is None:
            process.proc.kill()


class Process:
    """A child process whose stdout is read line by line and whose stderr goes to a file."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.label = f"{name}#{next(_PROCESS_COUNTER)}"  # tells apart several servers of one session
        self.stderr_path = workdir / f"{self.label.replace('#', '-')}.stderr.log"
        stderr_file = open(self.stderr_path, "wb")  # noqa: SIM115 - the child keeps its own descriptor
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            cwd=workdir,
            env=env,
            text=True,
            bufsize=1,
        )
        stderr_file.close()
        _RUNNING.add(self)
        self.exit_code: int | None = None
        self._reader = threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_listen_line(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """`http://ADDR` from the `... listening on ADDR` line; fails with the process's stderr after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError(
                    f"{self.name} printed no `listening on` line within {timeout:.0f}s\n"
                    f"argv: {self.argv}\nstdout: {''.join(self.stdout_lines)!r}\nstderr:\n{self.stderr_text()}"
                )
            try:
                line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise RuntimeError(
                    f"{self.name} exited with code {code} before listening\n"
                    f"argv: {self.argv}\nstdout: {''.join(self.stdout_lines)!r}\nstderr:\n{self.stderr_text()}"
                )
            match = LISTEN_RE.search(line)
            if match:
                return f"http://{match.group(1)}"

    def stderr_size(self) -> int:
        try:
            return self.stderr_path.stat().st_size
        except FileNotFoundError:
            return 0

    def stderr_text(self, start: int = 0, limit: int = 200_000) -> str:
        # The child writes to the file descriptor itself: nothing to flush on our side.
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return ""
        text = data.decode("utf-8", "replace")
        if len(text) > limit:
            text = f"[… {len(text) - limit} characters cut …]\n" + text[-limit:]
        return text

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        _RUNNING.discard(self)
        self._reader.join(timeout=2)
        return self.exit_code


# --------------------------------------------------------------------------------------------------------------------
# The mock upstream
# --------------------------------------------------------------------------------------------------------------------


class Mock:
    """Control client of the mock upstream (docs/test-contract.md, "Control API")."""

    def __init__(self, process: Process, url: str) -> None:
        self.process = process
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10.0)

    def reset(self) -> None:
        self.http.post("/_mock/reset").raise_for_status()

    def script(self, behaviors: list[dict[str, Any]], key: str | None = None) -> None:
        payload: dict[str, Any] = {"behaviors": behaviors}
        if key is not None:
            payload["key"] = key
        self.http.post("/_mock/script", json=payload).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        response = self.http.get("/_mock/requests")
        response.raise_for_status()
        return response.json()["requests"]

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["path"].endswith("/chat/completions")]

    def protocol_requests(self, protocol: str) -> list[dict[str, Any]]:
        """The generation requests (not control or model-list calls) that arrived on `protocol`'s endpoints."""
        return [r for r in self.requests() if r["method"] == "POST" and upstream_protocol_of(r["path"]) == protocol]

    def close(self) -> None:
        self.http.close()


def upstream_protocol_of(path: str) -> str | None:
    """Which wire protocol a path on the mock belongs to (query string ignored)."""
    path = path.split("?", 1)[0]
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/responses"):
        return "openai-responses"
    if path.endswith(("/v1/messages", "/v1/messages/count_tokens")):
        return "anthropic"
    if re.search(r"/v1(beta)?/models/[^/]+:(generateContent|streamGenerateContent|countTokens)$", path):
        return "gemini"
    return None


def xproto_model(protocol: str) -> str:
    """A model name unique to the caller that the gateway routes to the `protocol` provider on the mock."""
    return f"xproto-{XPROTO_TAGS[protocol]}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------------------------------------------------


def render_config(mock_url: str, admin_token: str = ADMIN_TOKEN) -> str:
    """The config of docs/test-contract.md pointed at the mock, plus the level-2 provider its `switch_over` names.

    Both providers are served by the one mock process: its queues and request log tell them apart by upstream key.
    Plus one level-1 provider per wire protocol on the same mock (`xproto-<tag>-*` models), for the
    cross-protocol suites: `base_url` includes `/v1` for the OpenAI protocols and is the mock's root for Anthropic and
    Gemini (the gateway appends `/v1/messages`, `/v1beta/models/…`).
    """
    keys = ", ".join(f'"{k}"' for k in UPSTREAM_KEYS)
    bases = {p: f"{mock_url}/v1" if p.startswith("openai") else mock_url for p in UPSTREAM_PROTOCOLS}
    xproto = "".join(
        f"""
[[providers]]
name = "{XPROTO_PROVIDERS[p]}"
protocol = "{p}"
base_url = "{bases[p]}"
keys = ["{XPROTO_KEYS[p]}"]
level = 1
models = ["xproto-{XPROTO_TAGS[p]}-*"]
"""
        for p in UPSTREAM_PROTOCOLS
    )
    return f"""\
admin_token = "{admin_token}"

[server]
max_body_bytes = 65536
shutdown_grace_ms = 5000

[routing]
attempt_timeout_ms = 2000
request_timeout_ms = 10000
max_attempts = 6
backoff_base_ms = 1000
backoff_max_ms = 60000
default_retry_after_ms = 5000

[[providers]]
name = "mock-a"
protocol = "openai"
base_url = "{mock_url}/v1"
keys = [{keys}]
level = 1
models = ["gpt-*"]

[[providers]]
name = "mock-b"
protocol = "openai"
base_url = "{mock_url}/v1"
keys = ["{BACKUP_KEY}"]
level = 2
models = ["gpt-*"]
{xproto}
[switch_over]
1 = 2

[[accounts]]
name = "acme"
keys = ["{ACME_KEY}"]
allow_models = ["*"]
level = 1
model_mapper = {{ "gpt-3.5*" = "gpt-4o-mini" }}

[[accounts]]
name = "acme/research"
keys = ["{RESEARCH_KEY}"]
allow_models = ["gpt-4o*"]
rpm = 60
"""


@dataclass
class Gateway:
    """A running `xai-server` process."""

    process: Process
    url: str
    config_path: Path
    data_dir: Path
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = httpx.Client(base_url=self.url, timeout=10.0, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    @property
    def base_url(self) -> str:
        """What an OpenAI SDK user puts as `base_url`."""
        return f"{self.url}/v1"

    def client(self, api_key: str = ACME_KEY, **kwargs: Any) -> openai.OpenAI:
        """An SDK client; no SDK-side retries so every test sees the gateway's own answer."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30.0)
        return openai.OpenAI(api_key=api_key, base_url=self.base_url, **kwargs)

    def anthropic(self, api_key: str = ACME_KEY, **kwargs: Any) -> anthropic.Anthropic:
        """An Anthropic SDK client (its `base_url` is the host: the SDK adds `/v1/messages`); no SDK-side retries."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30.0)
        return anthropic.Anthropic(api_key=api_key, base_url=self.url, **kwargs)

    def genai(self, api_key: str = ACME_KEY, api_version: str | None = None) -> genai.Client:
        """A google-genai client; `api_version` None keeps the SDK's default (`v1` in google-genai 3.x)."""
        options = genai_types.HttpOptions(base_url=self.url, timeout=30_000)  # milliseconds
        if api_version is not None:
            options.api_version = api_version
        return genai.Client(api_key=api_key, http_options=options)

    def usage(self, limit: int = 200) -> list[dict[str, Any]]:
        response = self.admin.get("/admin/v1/usage", params={"limit": limit})
        assert response.status_code == 200, f"GET /admin/v1/usage: {response.status_code} {response.text}"
        return response.json()["records"]

    def wait_usage(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = USAGE_TIMEOUT_S
    ) -> dict[str, Any]:
        """The newest usage record matching `predicate`; records are written asynchronously, so poll (bounded)."""
        deadline = time.monotonic() + timeout
        records: list[dict[str, Any]] = []
        while True:
            records = self.usage()
            matching = [r for r in records if predicate(r)]
            if matching:
                return matching[-1]
            if time.monotonic() >= deadline:
                tail = json.dumps(records[-5:], indent=1)
                raise AssertionError(f"no usage record for {what} within {timeout:.0f}s; newest records:\n{tail}")
            time.sleep(0.1)

    def wait_usage_for_model(self, model: str, timeout: float = USAGE_TIMEOUT_S) -> dict[str, Any]:
        return self.wait_usage(lambda r: r.get("requested_model") == model, f"model {model!r}", timeout)

    def stop(self) -> int:
        self.admin.close()
        return self.process.stop()


def start_gateway(mock_url: str, workdir: Path) -> Gateway:
    """Start an `xai-server` with the contract config against `mock_url`, in its own data dir."""
    binary = find_binary("XAI_SERVER_BIN", "xai-server")
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    config_path = workdir / "xai.toml"
    config_path.write_text(render_config(mock_url))
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.setdefault("XAI_LOG", "info")
    env.setdefault("RUST_BACKTRACE", "1")
    process = Process(
        "xai-server",
        [
            str(binary),
            "--config",
            str(config_path),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
        ],
        workdir,
        env,
    )
    url = process.wait_for_listen_line()
    gateway = Gateway(process=process, url=url, config_path=config_path, data_dir=data_dir)
    # Bounded wait for readiness: the listening line is printed once bound, the store may still be opening.
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/healthz", timeout=2.0)
            if response.status_code == 200:
                return gateway
            last = f"{response.status_code} {response.text!r}"
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"xai-server at {url} never answered /healthz with 200 (last: {last})\n{process.stderr_text()}")


# --------------------------------------------------------------------------------------------------------------------
# Cross-protocol assertions
# --------------------------------------------------------------------------------------------------------------------

# A tool every cross-protocol suite offers: the mock calls it when the prompt holds `use_tool:get_weather`, with
# arguments {"arg": "get_weather-value"}, and answers a tool result with `tool said: <result>`.
TOOL_NAME = "get_weather"
TOOL_DESCRIPTION = "The weather at a place"
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"arg": {"type": "string", "description": "the place"}},
    "required": ["arg"],
}
TOOL_ARGS = {"arg": f"{TOOL_NAME}-value"}


def single_upstream_request(mock: Mock, protocol: str) -> dict[str, Any]:
    """The one generation request of this test, which must have arrived on `protocol`'s endpoint."""
    requests = mock.requests()
    generation = [r for r in requests if r["method"] == "POST" and upstream_protocol_of(r["path"]) is not None]
    seen = [(r["method"], r["path"]) for r in requests]
    assert len(generation) == 1, f"expected one upstream request on the {protocol} endpoint, the mock saw {seen}"
    assert upstream_protocol_of(generation[0]["path"]) == protocol, f"expected the {protocol} endpoint: {seen}"
    return generation[0]


def upstream_requests_on(mock: Mock, protocol: str, count: int | None = None) -> list[dict[str, Any]]:
    """Every generation request of this test; all must have arrived on `protocol`'s endpoint."""
    requests = [r for r in mock.requests() if r["method"] == "POST" and upstream_protocol_of(r["path"]) is not None]
    seen = [r["path"] for r in requests]
    assert all(upstream_protocol_of(r["path"]) == protocol for r in requests), f"not all on {protocol}: {seen}"
    if count is not None:
        assert len(requests) == count, f"expected {count} upstream request(s) on {protocol}, saw {seen}"
    return requests


def assert_xproto_record(
    gateway: Gateway,
    *,
    model: str,
    upstream: str,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
) -> dict[str, Any]:
    """The usage record of a successful cross-protocol request: the mock's counts, metered on the right provider."""
    record = gateway.wait_usage_for_model(model)
    dump = json.dumps(record, indent=1)
    assert record["status"] == "ok", dump
    assert record["http_status"] == 200, dump
    assert record["provider"] == XPROTO_PROVIDERS[upstream], dump
    assert record["requested_model"] == model, dump
    assert record["upstream_model"] == model, dump
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt_tokens, completion_tokens), dump
    assert record["estimated"] is False, dump
    text = json.dumps(record)
    for key in (*XPROTO_KEYS.values(), ACME_KEY):
        assert key not in text, f"key material {key!r} in a usage record: {text}"
    return record
