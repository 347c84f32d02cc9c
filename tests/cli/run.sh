#!/usr/bin/env bash
# The real coding tools against a real xai-server, across protocols, fully offline.
#
#   Claude Code (speaks Anthropic Messages)  -> xai-server -> an `openai` (Chat Completions) provider on the mock
#   Codex CLI   (speaks OpenAI Responses)    -> xai-server -> an `anthropic` (Messages) provider on the mock
#
# Each tool runs once with the prompt "Say hello to xai"; a run passes when the tool exits 0, its final answer holds
# `mock reply:` and the prompt, and the mock's request log shows the request arriving on the other protocol's endpoint.
#
# Prerequisites: `npm ci --prefix tests/cli` (scripts/test.sh does it), the binaries built by cargo.
# Environment:
#   XAI_SERVER_BIN, XAI_MOCK_BIN   the binaries (default $CARGO_TARGET_DIR/debug/…, as scripts/test.sh exports them)
#   XAI_CLI_ROUTES=cross|same      cross (default): the routes above; same: Claude Code -> `anthropic` provider,
#                                  Codex -> `openai-responses` provider (passthrough; a plumbing check)
#   XAI_CLI_UPSTREAM=mock|capture  mock (default): `mock-upstream`; capture: tests/cli/capture_server.py, a tiny
#                                  logging upstream (speaks Messages, Responses and Chat; for debugging only)
#   XAI_CLI_TOOLS="claude codex"   which tools to run
#   XAI_CLI_TIMEOUT=120            seconds each tool may take
#   XAI_CLI_KEEP=1                 keep the work dir (logs, configs, each tool's output) after a passing run
#   XAI_LOG                        the server's log level (default info)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER_BIN="${XAI_SERVER_BIN:-$TARGET/debug/xai-server}"
MOCK_BIN="${XAI_MOCK_BIN:-$TARGET/debug/mock-upstream}"
ROUTES="${XAI_CLI_ROUTES:-cross}"
UPSTREAM="${XAI_CLI_UPSTREAM:-mock}"
TOOLS="${XAI_CLI_TOOLS:-claude codex}"
TOOL_TIMEOUT="${XAI_CLI_TIMEOUT:-120}"
STARTUP_TIMEOUT="${XAI_TEST_STARTUP_TIMEOUT:-30}"
CLAUDE="$HERE/node_modules/.bin/claude"
CODEX="$HERE/node_modules/.bin/codex"

PROMPT="Say hello to xai"
VIRTUAL_KEY="sk-cli-virtual-key"
CLAUDE_MODEL="claude-opus-4-8" # Claude Code 2.1.197's default model, named explicitly
CODEX_MODEL="gpt-5.5-codex"

case $ROUTES in
    cross)
        CLAUDE_PROTOCOL=openai CLAUDE_UPSTREAM_PATH=/v1/chat/completions
        CODEX_PROTOCOL=anthropic CODEX_UPSTREAM_PATH=/v1/messages
        ;;
    same)
        CLAUDE_PROTOCOL=anthropic CLAUDE_UPSTREAM_PATH=/v1/messages
        CODEX_PROTOCOL=openai-responses CODEX_UPSTREAM_PATH=/v1/responses
        ;;
    *) echo "XAI_CLI_ROUTES must be cross or same, not $ROUTES" >&2; exit 2 ;;
esac

for bin in "$CLAUDE" "$CODEX"; do
    [[ -x "$bin" ]] || { echo "ERROR: $bin is missing: run npm ci --prefix tests/cli" >&2; exit 1; }
done
[[ -x "$SERVER_BIN" ]] || { echo "ERROR: $SERVER_BIN is missing: cargo build --workspace --bins" >&2; exit 1; }
if [[ $UPSTREAM == mock ]]; then
    [[ -x "$MOCK_BIN" ]] || { echo "ERROR: $MOCK_BIN is missing: cargo build --workspace --bins" >&2; exit 1; }
fi

# Outside /tmp: Codex refuses to set up its helper binaries under a temporary directory (only a warning).
WORK="$(mktemp -d "${XAI_CLI_WORKDIR:-/var/tmp}/xai-cli.XXXXXX")"
PIDS=()
FAILURES=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        # bounded: SIGKILL after 10 s
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${#FAILURES[@]} -eq 0 && "${XAI_CLI_KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK"
    else
        echo "work dir kept: $WORK"
    fi
}
trap cleanup EXIT
# Stopped from outside (scripts/test.sh bounds the run with `timeout`): keep the work dir and say so.
trap 'FAILURES+=("interrupted"); echo "tests/cli/run.sh: interrupted" >&2; exit 143' TERM INT

# start NAME STDOUT_FILE STDERR_FILE CMD...: background process; sets STARTED_URL to `http://ADDR` once it printed
# `listening on ADDR` (bounded by $STARTUP_TIMEOUT).
STARTED_URL=""
start() {
    local name=$1 out=$2 err=$3 pid addr deadline
    shift 3
    "$@" </dev/null >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    deadline=$((SECONDS + STARTUP_TIMEOUT))
    while ((SECONDS < deadline)); do
        addr="$(sed -n 's/.*listening on \([^ ]*:[0-9]*\).*/\1/p' "$out" | head -n1)"
        if [[ -n $addr ]]; then
            STARTED_URL="http://$addr"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "ERROR: $name exited before listening; stderr:" >&2
            tail -n 50 "$err" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "ERROR: $name printed no listening line within ${STARTUP_TIMEOUT}s; stderr:" >&2
    tail -n 50 "$err" >&2
    return 1
}

# http_get URL: the body of a 200 answer on stdout, else non-zero (python3: curl may be missing).
http_get() {
    python3 -c 'import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    sys.stdout.write(r.read().decode())' "$1" 2>/dev/null
}

# --- the upstream ---------------------------------------------------------------------------------------------------
if [[ $UPSTREAM == mock ]]; then
    start mock-upstream "$WORK/upstream.out" "$WORK/upstream.err" "$MOCK_BIN" --listen 127.0.0.1:0
elif [[ $UPSTREAM == capture ]]; then
    start capture-server "$WORK/upstream.out" "$WORK/upstream.err" python3 "$HERE/capture_server.py" "$WORK/captured"
else
    echo "XAI_CLI_UPSTREAM must be mock or capture, not $UPSTREAM" >&2
    exit 2
fi
UP_URL=$STARTED_URL
echo "upstream ($UPSTREAM): $UP_URL"

# --- the gateway ----------------------------------------------------------------------------------------------------
# base_url: the OpenAI protocols include /v1 (the gateway appends /chat/completions or /responses); Anthropic and
# Gemini take the host (the gateway appends /v1/messages or /v1beta/models/…).
provider_base() {
    case $1 in
        openai | openai-responses) echo "$UP_URL/v1" ;;
        *) echo "$UP_URL" ;;
    esac
}
mkdir -p "$WORK/data"
cat >"$WORK/xai.toml" <<EOF
admin_token = "admin-secret"

[server]
shutdown_grace_ms = 5000

[routing]
attempt_timeout_ms = 30000
request_timeout_ms = 60000
max_attempts = 2

[[providers]]
name = "for-claude-code"
protocol = "$CLAUDE_PROTOCOL"
base_url = "$(provider_base "$CLAUDE_PROTOCOL")"
keys = ["sk-up-claude"]
models = ["$CLAUDE_MODEL"]

[[providers]]
name = "for-codex"
protocol = "$CODEX_PROTOCOL"
base_url = "$(provider_base "$CODEX_PROTOCOL")"
keys = ["sk-up-codex"]
models = ["$CODEX_MODEL"]

[[accounts]]
name = "cli"
keys = ["$VIRTUAL_KEY"]
allow_models = ["*"]
level = 1
EOF
# The server must not inherit a developer's store settings.
start xai-server "$WORK/server.out" "$WORK/server.err" \
    env -u XAI_CONFIG -u XAI_LISTEN -u DATABASE_URL -u REDIS_URL XAI_LOG="${XAI_LOG:-info}" \
    "$SERVER_BIN" --config "$WORK/xai.toml" --listen 127.0.0.1:0 --data-dir "$WORK/data"
GW_URL=$STARTED_URL
echo "xai-server: $GW_URL (routes: $ROUTES; Claude Code -> $CLAUDE_PROTOCOL, Codex -> $CODEX_PROTOCOL)"
deadline=$((SECONDS + STARTUP_TIMEOUT))
until http_get "$GW_URL/healthz" >/dev/null; do
    ((SECONDS < deadline)) || { echo "ERROR: $GW_URL/healthz never answered 200" >&2; exit 1; }
    sleep 0.1
done

# --- checks ---------------------------------------------------------------------------------------------------------
# check_answer TOOL FILE: the tool's final answer holds `mock reply:` and the prompt.
check_answer() {
    local tool=$1 file=$2
    if grep -qF "mock reply:" "$file" && grep -qF "$PROMPT" "$file"; then
        echo "ok: $tool answered: $(grep -F 'mock reply:' "$file" | head -n1 | cut -c1-200)"
    else
        echo "FAIL: $tool's answer lacks \"mock reply:\" and \"$PROMPT\"; it was:" >&2
        cut -c1-2000 "$file" >&2
        return 1
    fi
}

# check_upstream TOOL PATH MODEL: the upstream received a POST on PATH (query ignored) for MODEL.
check_upstream() {
    local tool=$1 path=$2 model=$3
    http_get "$UP_URL/_mock/requests" >"$WORK/requests.json" || { echo "FAIL: GET $UP_URL/_mock/requests" >&2; return 1; }
    if python3 - "$WORK/requests.json" "$path" "$model" <<'EOF'; then
import json, sys
requests = json.load(open(sys.argv[1]))["requests"]
path, model = sys.argv[2], sys.argv[3]
def body_model(r):
    body = r.get("body")
    return body.get("model") if isinstance(body, dict) else None
seen = [(r.get("method"), r.get("path"), body_model(r)) for r in requests]
hits = [r for r in requests if r.get("method") == "POST" and r.get("path", "").split("?")[0] == path
        and body_model(r) == model]
if hits:
    print(f"ok: the upstream received POST {path} for {model} ({len(hits)} request(s))")
    sys.exit(0)
print(f"FAIL: no POST {path} for {model} reached the upstream; it received: {seen}", file=sys.stderr)
sys.exit(1)
EOF
        return 0
    fi
    return 1
}

# --- the tools ------------------------------------------------------------------------------------------------------
run_claude() {
    local home="$WORK/claude-home" cwd="$WORK/claude-cwd" rc=0
    mkdir -p "$home" "$cwd"
    echo "--- Claude Code $(timeout 30 "$CLAUDE" --version 2>/dev/null | head -n1): claude -p \"$PROMPT\" --model $CLAUDE_MODEL"
    (
        cd "$cwd"
        env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="$home" TERM=dumb LANG=C.UTF-8 \
            ANTHROPIC_BASE_URL="$GW_URL" \
            ANTHROPIC_API_KEY="$VIRTUAL_KEY" \
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
            CLAUDE_CODE_MAX_RETRIES=1 \
            API_TIMEOUT_MS=60000 \
            timeout -k 5 "$TOOL_TIMEOUT" "$CLAUDE" -p "$PROMPT" --model "$CLAUDE_MODEL" \
            </dev/null >"$WORK/claude.out" 2>"$WORK/claude.err"
    ) || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "FAIL: claude exited with code $rc; stdout:" >&2
        cut -c1-2000 "$WORK/claude.out" >&2
        echo "stderr:" >&2
        tail -n 30 "$WORK/claude.err" >&2
        return 1
    fi
    check_answer "Claude Code" "$WORK/claude.out" || return 1
    check_upstream "Claude Code" "$CLAUDE_UPSTREAM_PATH" "$CLAUDE_MODEL"
}

run_codex() {
    local home="$WORK/codex-home" cwd="$WORK/codex-cwd" rc=0
    mkdir -p "$home/.codex" "$cwd"
    cat >"$home/.codex/config.toml" <<EOF
model = "$CODEX_MODEL"
model_provider = "xai"

[model_providers.xai]
name = "xai"
base_url = "$GW_URL/v1"
wire_api = "responses"
env_key = "XAI_KEY"
request_max_retries = 1
stream_max_retries = 1
stream_idle_timeout_ms = 60000
EOF
    echo "--- Codex $(timeout 30 "$CODEX" --version 2>/dev/null | head -n1): codex exec \"$PROMPT\" (model $CODEX_MODEL)"
    (
        cd "$cwd"
        env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="$home" TERM=dumb LANG=C.UTF-8 \
            CODEX_HOME="$home/.codex" \
            XAI_KEY="$VIRTUAL_KEY" \
            timeout -k 5 "$TOOL_TIMEOUT" "$CODEX" exec \
            --skip-git-repo-check --ephemeral --disable plugins -c analytics.enabled=false \
            --color never -o "$WORK/codex.last" "$PROMPT" \
            </dev/null >"$WORK/codex.out" 2>"$WORK/codex.err"
    ) || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "FAIL: codex exited with code $rc; stdout:" >&2
        cut -c1-2000 "$WORK/codex.out" >&2
        echo "stderr:" >&2
        tail -n 30 "$WORK/codex.err" >&2
        return 1
    fi
    check_answer "Codex" "$WORK/codex.out" || return 1
    check_upstream "Codex" "$CODEX_UPSTREAM_PATH" "$CODEX_MODEL"
}

for tool in $TOOLS; do
    case $tool in
        claude) run_claude || FAILURES+=("Claude Code -> $CLAUDE_PROTOCOL") ;;
        codex) run_codex || FAILURES+=("Codex -> $CODEX_PROTOCOL") ;;
        *) echo "unknown tool $tool (claude, codex)" >&2; FAILURES+=("$tool") ;;
    esac
done

if [[ ${#FAILURES[@]} -gt 0 ]]; then
    echo "--- xai-server stderr (tail) ---" >&2
    tail -n 40 "$WORK/server.err" >&2
    failed="$(printf '%s; ' "${FAILURES[@]}")"
    echo "tests/cli/run.sh: FAILED: ${failed%; }" >&2
    exit 1
fi
echo "tests/cli/run.sh: OK ($ROUTES routes: Claude Code -> $CLAUDE_PROTOCOL, Codex -> $CODEX_PROTOCOL)"
