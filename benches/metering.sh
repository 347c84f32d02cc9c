#!/usr/bin/env bash
# The request path with metering off vs on, end to end (issue 6 item 7): xai-server behind the fast mock upstream,
# measured by `loadbench --targets xai --phases latency,throughput` in two arms per round, alternating the order:
#
#   off  in-memory state (DATABASE_URL=memory), no prices, no credits: nothing is priced, no budget applies and no
#        usage row is written (the in-memory meter still enforces the rpm/tpm limits of the bench config).
#   on   the embedded SQLite default with usage persisted (DurableMeter), prices for the benchmark models and the
#        benchmark account funded, so every request is priced, its cost reserved against the balance, settled and
#        written (the bench config of benches/src/server.rs as it is).
#
# Two more arms split the difference: `priced` (in-memory state, priced and funded: pricing and the budget hold
# and settlement, no usage rows) and `stored` (the SQLite default writing usage rows, nothing priced).
#
#   benches/metering.sh [ROUNDS] [SECONDS]        (defaults: 3 rounds, 5 s throughput phases; NO_BUILD=1 skips
#                                                  the cargo build)
#
# Ratios on/off are medians of same-round pairs (target: throughput ≥ 0.9×).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/xai-target}"
# NO_BUILD=1: use the binaries already built (e.g. while the tree does not compile).
[[ "${NO_BUILD:-}" == 1 ]] || cargo build -q --release -p xai-server -p xai-benches --bins
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d /var/tmp/xai-metering-bench.XXXXXX)"

arm_flags() { # the loadbench flags of an arm
    case $1 in
        off) echo "--server-env DATABASE_URL=memory --server-unpriced" ;;
        priced) echo "--server-env DATABASE_URL=memory" ;;
        stored) echo "--server-unpriced" ;;
        on) echo "" ;; # the embedded SQLite default, priced, funded
    esac
}

for round in $(seq 1 "$ROUNDS"); do
    arms=(off priced stored on)
    # Alternate the order so no arm always runs first (warm caches, thermal drift).
    ((round % 2 == 0)) && arms=(on stored priced off)
    for arm in "${arms[@]}"; do
        echo "round $round: $arm" >&2
        # shellcheck disable=SC2046 # the flags are split on purpose
        "$BIN/loadbench" --xai-bin "$BIN/xai-server" --targets xai --phases latency,throughput \
            --duration "$SECS" --requests 2000 --server-log warn $(arm_flags "$arm") \
            --work-dir "$OUT/$arm-$round" --keep-dir \
            --out "$OUT/$arm-$round.json" >"$OUT/$arm-$round.log" 2>&1
    done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, sqlite3, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def phase(doc, name):
    return next(p for p in doc["phases"] if p["phase"] == name)
def metrics(arm, r):
    doc = json.load(open(f"{out}/{arm}-{r}.json"))
    t = phase(doc, "throughput")["rounds"][0]["xai"]
    l = phase(doc, "latency")["rounds"][0]["xai"]
    m = {"rps": t["rps"], "cpu": t["cpu"]["server_us_per_req"] or 0, "p50": l["latency_us"]["p50"],
         "p99": l["latency_us"]["p99"], "rows": 0, "cost": 0}
    db = f"{out}/{arm}-{r}/data/xai.db"
    if os.path.exists(db):  # what the `on` arm wrote: one usage row per request, each priced
        c = sqlite3.connect(db)
        m["rows"], m["cost"] = c.execute("SELECT COUNT(*), COALESCE(SUM(cost), 0) FROM usage").fetchone()
        c.close()
    return m
data = {arm: [metrics(arm, r) for r in range(1, rounds + 1)] for arm in ("off", "priced", "stored", "on")}
print(f"{'arm':<6} {'req/s c=32':>11} {'÷ off':>7} {'CPU µs/req':>11} {'p50 µs c=1':>11} {'+p50 µs':>8} {'p99 µs':>8} {'usage rows':>11} {'cost µ':>12}")
for arm, rows in data.items():
    med = lambda k: statistics.median(x[k] for x in rows)
    ratio = statistics.median(x["rps"] / o["rps"] for x, o in zip(rows, data["off"]))
    added = statistics.median(x["p50"] - o["p50"] for x, o in zip(rows, data["off"]))
    print(f"{arm:<6} {med('rps'):>11.0f} {ratio:>7.2f} {med('cpu'):>11.1f} {med('p50'):>11.0f} {added:>+8.0f} {med('p99'):>8.0f} {med('rows'):>11.0f} {med('cost'):>12.0f}")
PY
echo "raw reports: $OUT" >&2
