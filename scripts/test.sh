#!/usr/bin/env bash
# The test command of xai: `./scripts/test.sh` on a fresh machine.
#
# Builds the workspace, runs every Rust test, then the black-box suites (official SDKs against a real xai-server and
# the mock upstream), the coding tools (Claude Code and Codex CLI, tests/cli/run.sh), the example smoke test and the
# benchmark smoke test when they exist.
#
# A failing build or setup step stops the run at once; a failing test step is reported and the remaining test steps
# still run, so that one run shows every failure. The exit code is non-zero when any step failed.
#
# Environment:
#   CARGO_TARGET_DIR   cargo's target dir (default /var/tmp/xai-target)
#   CI=true            Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be reachable; otherwise only a warning
#   PYTHON             interpreter used to create the venv (default python3)
#   XAI_VENV           the venv (default .venv at the repository root)
#   PYTEST_ARGS        extra arguments for pytest (e.g. "-k streaming -x")
#   XAI_SKIP_CLI=1     skip the coding-tool step (Claude Code and Codex CLI against xai-server, tests/cli/run.sh)
#   XAI_CLI_TIMEOUT    seconds each coding tool may take (default 90; the whole coding-tool run is capped at 225 s)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xai-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
PYTHON="${PYTHON:-python3}"
VENV="${XAI_VENV:-$ROOT/.venv}"
CI="${CI:-false}"
export XAI_SERVER_BIN="${XAI_SERVER_BIN:-$CARGO_TARGET_DIR/debug/xai-server}"
export XAI_MOCK_BIN="${XAI_MOCK_BIN:-$CARGO_TARGET_DIR/debug/mock-upstream}"

RESULTS=()
FAILED=()
SCRIPT_START=$SECONDS

summary() {
    printf '\n==================== summary ====================\n'
    local line
    for line in "${RESULTS[@]}"; do printf '  %s\n' "$line"; done
}

# run_step fatal|continue NAME FUNCTION: runs FUNCTION in a subshell with errexit, records its outcome.
# A function exits 0 (ok), 77 (skipped) or anything else (failed).
run_step() {
    local mode=$1 name=$2 fn=$3 start=$SECONDS rc
    printf '\n==================== %s ====================\n' "$name"
    set +e
    (
        set -e
        "$fn"
    )
    rc=$?
    set -e
    case $rc in
        0) RESULTS+=("ok       $name ($((SECONDS - start))s)") ;;
        77) RESULTS+=("skipped  $name") ;;
        *)
            RESULTS+=("FAILED   $name (exit code $rc, $((SECONDS - start))s)")
            FAILED+=("$name")
            echo "ERROR: step \"$name\" failed with exit code $rc" >&2
            if [[ $mode == fatal ]]; then
                summary
                echo "test.sh: FAILED in \"$name\"; later steps did not run ($((SECONDS - SCRIPT_START))s)" >&2
                exit "$rc"
            fi
            ;;
    esac
}

# True when something accepts TCP connections on host:port (bash's /dev/tcp, bounded).
port_open() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

step_services() {
    local missing=() m
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432 -t 3 || missing+=("Postgres on 127.0.0.1:5432")
    else
        port_open 127.0.0.1 5432 || missing+=("Postgres on 127.0.0.1:5432")
    fi
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == "PONG" ]] ||
            missing+=("Redis on 127.0.0.1:6379")
    else
        port_open 127.0.0.1 6379 || missing+=("Redis on 127.0.0.1:6379")
    fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "Postgres and Redis are reachable"
    elif [[ "$CI" == "true" ]]; then
        for m in "${missing[@]}"; do echo "ERROR: $m is not reachable (required when CI=true)" >&2; done
        return 1
    else
        for m in "${missing[@]}"; do
            echo "WARNING: $m is not reachable: the storage tests that need it will be skipped" >&2
        done
    fi
}

step_build() {
    echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
    cargo build --workspace --bins
}

step_cargo_test() {
    cargo test --workspace --no-fail-fast
}

step_venv() {
    local requirements="$ROOT/tests/python/requirements.txt" stamp="$VENV/.xai-requirements.sha256" want
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "creating $VENV with $("$PYTHON" --version 2>&1)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the requirements changed since the last successful install.
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" >"$stamp"
    fi
    "$VENV/bin/python" -c 'import openai, pytest, sys
print(f"python {sys.version.split()[0]}, openai {openai.__version__}, pytest {pytest.__version__}")'
}

step_pytest() {
    local bin code=0
    for bin in "$XAI_SERVER_BIN" "$XAI_MOCK_BIN"; do
        [[ -x "$bin" ]] || { echo "ERROR: $bin was not built" >&2; return 1; }
    done
    # shellcheck disable=SC2086 # PYTEST_ARGS is split on purpose
    "$VENV/bin/python" -m pytest "$ROOT/tests/python" ${PYTEST_ARGS:-} || code=$?
    case $code in
        0) ;;
        5) echo "ERROR: pytest collected no tests (exit code 5): that counts as a failure here" >&2; return 5 ;;
        *) return "$code" ;;
    esac
}

step_cli() {
    local dir="$ROOT/tests/cli" stamp want
    if [[ "${XAI_SKIP_CLI:-0}" == 1 ]]; then
        echo "skipped: XAI_SKIP_CLI=1"
        return 77
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        if [[ "$CI" == "true" ]]; then
            echo "ERROR: node and npm are required when CI=true (tests/cli runs Claude Code and Codex)" >&2
            return 1
        fi
        echo "skipped: node/npm not found"
        return 77
    fi
    # Reinstall only when the lockfile (or node) changed since the last successful install, like the venv step.
    stamp="$dir/node_modules/.xai-package-lock.sha256"
    want="$( (cat "$dir/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "npm ci --prefix tests/cli (node $(node --version))"
        timeout 900 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
        echo "$want" >"$stamp"
    fi
    # Bounded: each tool gets XAI_CLI_TIMEOUT seconds (run.sh fails it with its logs), the whole run 225 s (a
    # passing run takes ~15 s).
    XAI_CLI_TIMEOUT="${XAI_CLI_TIMEOUT:-90}" timeout -k 10 225 bash "$dir/run.sh"
}

step_example() {
    local metadata
    metadata="$(cargo metadata --no-deps --format-version 1)"
    if ! printf '%s' "$metadata" | "$VENV/bin/python" -c '
import json, sys
meta = json.load(sys.stdin)
bins = {(p["name"], t["name"]) for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
sys.exit(0 if ("xai-examples", "embed-axum") in bins else 1)
'; then
        echo "skipped: package xai-examples has no embed-axum binary yet"
        return 77
    fi
    cargo run -q -p xai-examples --bin embed-axum -- --self-test
}

step_bench() {
    if [[ ! -f "$ROOT/scripts/bench-smoke.sh" ]]; then
        echo "skipped: scripts/bench-smoke.sh does not exist yet"
        return 77
    fi
    bash "$ROOT/scripts/bench-smoke.sh"
}

run_step fatal "services: Postgres and Redis" step_services
run_step fatal "cargo build --workspace --bins" step_build
run_step continue "cargo test --workspace" step_cargo_test
run_step fatal "python venv (tests/python/requirements.txt)" step_venv
run_step continue "pytest tests/python: official SDKs against xai-server" step_pytest
run_step continue "coding tools: Claude Code and Codex CLI against xai-server (tests/cli)" step_cli
run_step continue "example smoke: embed-axum --self-test" step_example
run_step continue "benchmark smoke: scripts/bench-smoke.sh" step_bench

summary
if [[ ${#FAILED[@]} -gt 0 ]]; then
    failed_list="$(printf '"%s", ' "${FAILED[@]}")"
    echo "test.sh: FAILED: ${#FAILED[@]} step(s) failed: ${failed_list%, } ($((SECONDS - SCRIPT_START))s)" >&2
    exit 1
fi
echo "test.sh: OK: every step passed or was skipped ($((SECONDS - SCRIPT_START))s)"
