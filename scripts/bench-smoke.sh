#!/usr/bin/env bash
# Benchmark smoke test (run by scripts/test.sh): builds xai-server and the load benchmark, then
# runs `loadbench --quick`: a few seconds of every phase against the mock alone and through a
# real xai-server, and an Anthropic client streaming through xai passthrough vs translated to an
# OpenAI upstream. It fails when any request fails, any reply does not verify (2xx, a parsed
# chat.completion with usage, a stream ending in data: [DONE] with its usage chunk, an Anthropic
# stream from message_start to message_stop with its usage), or the
# upstream saw a different number of requests than the clients sent. Figures are printed but
# never judged: this machine is shared and noisy.
#
# Environment:
#   CARGO_TARGET_DIR  cargo's target dir (default /var/tmp/xai-target)
#   BENCH_PROFILE     release (default) or debug: which build of xai-server to exercise
#   BENCH_OUT         where the JSON report goes (default $CARGO_TARGET_DIR/bench-smoke.json)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xai-target}"
PROFILE="${BENCH_PROFILE:-release}"
case "$PROFILE" in
    release) build_flags=(--release) ;;
    debug) build_flags=() ;;
    *) echo "bench-smoke: BENCH_PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
BIN_DIR="$CARGO_TARGET_DIR/$PROFILE"
OUT="${BENCH_OUT:-$CARGO_TARGET_DIR/bench-smoke.json}"

echo "bench-smoke: cargo build ${build_flags[*]} -p xai-server -p xai-benches"
cargo build "${build_flags[@]}" -p xai-server -p xai-benches --bin xai-server --bin loadbench

start=$SECONDS
# timeout: loadbench bounds itself (a few seconds); this only guards against a hung process.
timeout --kill-after=10 120 "$BIN_DIR/loadbench" --quick --xai-bin "$BIN_DIR/xai-server" --out "$OUT"
echo "bench-smoke: OK in $((SECONDS - start))s (report: $OUT)"
