"""Pytest fixtures for the black-box suites: one mock upstream and one xai-server per session.

See xai_harness.py for the processes and docs/test-contract.md for the agreement they rely on.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from xai_harness import (
    ACME_KEY,
    UPSTREAM_PROTOCOLS,
    Gateway,
    Mock,
    Process,
    find_binary,
    start_gateway,
    xproto_model,
)

# --------------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------------


_PROCESSES: list[Process] = []  # every process started, for the failure report
_SESSION_SERVER: list[Process] = []  # the session gateway's process, for the terminal summary


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    binary = find_binary("XAI_MOCK_BIN", "mock-upstream")
    workdir = tmp_path_factory.mktemp("mock")
    process = Process("mock-upstream", [str(binary), "--listen", "127.0.0.1:0"], workdir)
    _PROCESSES.append(process)
    url = process.wait_for_listen_line()
    upstream = Mock(process, url)
    yield upstream
    upstream.close()
    process.stop(grace=5.0)


@pytest.fixture(scope="session")
def gateway(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(mock.url, tmp_path_factory.mktemp("gateway"))
    _PROCESSES.append(gw.process)
    _SESSION_SERVER.append(gw.process)
    yield gw
    code = gw.stop()
    if code != 0:
        # Contract: SIGTERM drains and exits 0 (test_sigterm_* checks it); a warning here cannot mask test results.
        warnings.warn(f"the session's xai-server exited with code {code} after SIGTERM (contract: 0)", stacklevel=1)


@pytest.fixture
def fresh_gateway(mock: Mock, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of its own, for tests that leave state behind (e.g. every upstream key in cooldown)."""
    gw = start_gateway(mock.url, tmp_path / "gateway")
    _PROCESSES.append(gw.process)
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _reset_mock(request: pytest.FixtureRequest) -> None:
    """Every test starts with empty mock queues and an empty request log."""
    if "mock" in request.fixturenames or "gateway" in request.fixturenames:
        request.getfixturevalue("mock").reset()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    c = gateway.client(ACME_KEY)
    yield c
    c.close()


@pytest.fixture
def model() -> str:
    """A model name unique to the test (still matching `gpt-*` and `gpt-4o*`) to find its usage record."""
    return f"gpt-4o-pytest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=UPSTREAM_PROTOCOLS)
def upstream(request: pytest.FixtureRequest) -> str:
    """The wire protocol of the mock provider a test's model routes to (every test using it runs once per protocol)."""
    return request.param


@pytest.fixture
def xmodel(upstream: str) -> str:
    """A model name unique to the test that the gateway routes to the `upstream` protocol's provider on the mock."""
    return xproto_model(upstream)


@pytest.fixture
def anthropic_client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    c = gateway.anthropic(ACME_KEY)
    yield c
    c.close()


# --------------------------------------------------------------------------------------------------------------------
# Failure reporting: attach the server's stderr written during a failed test to its report
# --------------------------------------------------------------------------------------------------------------------


_OFFSETS = pytest.StashKey[dict]()  # per test: stderr size of every process when it started
_ANY_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    # Processes started during the test are missing here and so reported from their first byte.
    item.stash[_OFFSETS] = {id(p): p.stderr_size() for p in _PROCESSES}
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if not report.failed:
        return report
    item.config.stash[_ANY_FAILED] = True
    offsets = item.stash.get(_OFFSETS, {})
    for process in _PROCESSES:
        text = process.stderr_text(start=offsets.get(id(process), 0), limit=30_000)
        if text.strip():
            report.sections.append((f"{process.label} stderr during {report.when}", text))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """On failure, the tail of the session server's stderr (each failed test's report has its own part already)."""
    if not config.stash.get(_ANY_FAILED, False):
        return
    for process in _SESSION_SERVER:
        terminalreporter.section(f"{process.label} (the session's server) stderr, tail (exit code {process.exit_code})")
        terminalreporter.write_line(process.stderr_text(limit=8_000))
