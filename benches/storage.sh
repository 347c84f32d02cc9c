#!/usr/bin/env bash
# Storage arms of the request path, measured in one run (issue 4): xai-server with in-memory state, with the
# embedded SQLite default, and with Postgres + Redis, each behind the same fast mock upstream. Rounds alternate
# the arms; ratios against in-memory are medians of same-round pairs.
#
#   benches/storage.sh [ROUNDS] [SECONDS]        (defaults: 3 rounds, 5 s throughput phases)
#
# Needs Postgres on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379; creates its own database
# and Redis key prefix and removes them. Uses `loadbench --targets xai --phases latency,throughput`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xai-target}"
cargo build -q --release -p xai-server -p xai-benches --bins
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d /var/tmp/xai-storage-bench.XXXXXX)"
DB="xai_bench_$(date +%s)_$$"
PREFIX="xai_bench_$$:"
PG_ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
# Every Postgres round shares one database, so one master key (as the instances of a deployment do).
MASTER_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cleanup() {
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "${PREFIX}*" 2>/dev/null |
        xargs -r redis-cli -h 127.0.0.1 -p 6379 DEL >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql -q "$PG_ADMIN" -c "CREATE DATABASE $DB" >/dev/null

arm_env() { # the --server-env flags of an arm
    case $1 in
        memory) echo "--server-env DATABASE_URL=memory" ;;
        sqlite) echo "" ;; # the embedded default: SQLite under the data dir
        pgredis) echo "--server-env DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB \
--server-env REDIS_URL=redis://127.0.0.1:6379 --server-env XAI_REDIS_PREFIX=$PREFIX \
--server-env XAI_MASTER_KEY=$MASTER_KEY" ;;
    esac
}

for round in $(seq 1 "$ROUNDS"); do
    arms=(memory sqlite pgredis)
    # Alternate the order so no arm always runs first (warm caches, thermal drift).
    ((round % 2 == 0)) && arms=(pgredis sqlite memory)
    for arm in "${arms[@]}"; do
        echo "round $round: $arm" >&2
        # shellcheck disable=SC2046 # the flags are split on purpose
        "$BIN/loadbench" --xai-bin "$BIN/xai-server" --targets xai --phases latency,throughput \
            --duration "$SECS" --requests 2000 --server-log warn $(arm_env "$arm") \
            --out "$OUT/$arm-$round.json" >"$OUT/$arm-$round.log" 2>&1
    done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def phase(doc, name):
    return next(p for p in doc["phases"] if p["phase"] == name)
def metrics(arm, r):
    doc = json.load(open(f"{out}/{arm}-{r}.json"))
    t = phase(doc, "throughput")["rounds"][0]["xai"]
    l = phase(doc, "latency")["rounds"][0]["xai"]
    return {"rps": t["rps"], "cpu": t["cpu"]["server_us_per_req"], "p50": l["latency_us"]["p50"], "p99": l["latency_us"]["p99"]}
data = {arm: [metrics(arm, r) for r in range(1, rounds + 1)] for arm in ("memory", "sqlite", "pgredis")}
print(f"{'arm':<10} {'req/s c=32':>11} {'÷ memory':>9} {'CPU µs/req':>11} {'p50 µs c=1':>11} {'p99 µs':>8}")
for arm, rows in data.items():
    med = lambda k: statistics.median(x[k] for x in rows)
    ratio = statistics.median(x["rps"] / m["rps"] for x, m in zip(rows, data["memory"]))
    print(f"{arm:<10} {med('rps'):>11.0f} {ratio:>9.2f} {med('cpu') or 0:>11.1f} {med('p50'):>11.0f} {med('p99'):>8.0f}")
PY
echo "raw reports: $OUT" >&2
