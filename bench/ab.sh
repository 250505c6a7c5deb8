#!/usr/bin/env bash
# A/B of aex builds on this machine (not part of CI): each build gets a database of its own and
# its 64 agents, then the builds take turns, ROUNDS times, through the same points — closed loop
# at each concurrency of POINTS, open loop at a fixed rate for "rNNN" — so that a machine whose
# speed drifts meets every build alike. Prints one line per build, round and point: req/s, p50
# and p99 latency, and CPU per request of aex and of its Postgres backends.
#
#   VARIANTS="old=/tmp/aex-old new=target/release/aex" bash bench/ab.sh
#
# A variant's "binary" may be a script that sets environment variables and execs aex.
# Environment (optional): ROUNDS (3), DURATION seconds per point (6), POINTS ("1 64"; e.g.
# "1 64 r1750"), DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres), RESULTS (JSON lines).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
POINTS=${POINTS:-1 64}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=${RESULTS:-/tmp/aex-ab-$(date +%Y%m%d-%H%M%S).jsonl}
server=${DATABASE_URL%/*}
[[ -n ${VARIANTS:-} ]] || { echo 'ab: set VARIANTS="name=/path/to/aex ..."' >&2; exit 2; }
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
require_tools psql curl python3
prepare_binaries

work=$(mktemp -d -t aex-ab.XXXXXX)
names=()
declare -A binary
for v in $VARIANTS; do names+=("${v%%=*}"); binary[${v%%=*}]=${v#*=}; done
pid=
cleanup() {
  [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  kill -TERM "$mock_pid" 2>/dev/null || true
  for n in "${names[@]}"; do psql "$DATABASE_URL" -qXc "DROP DATABASE IF EXISTS aex_ab_${n}_$$ WITH (FORCE)" >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT

"$AEX" dev mock-upstream --listen 127.0.0.1:0 >"$work/mock.out" 2>/dev/null &
mock_pid=$!
chat_route mock "$(first_line "$work/mock.out")" bench-chat >"$work/models.toml"

# Starts variant $1 with its own home; sets pid and addr.
start() {
  local log=$work/$1.log
  : >"$log"
  AEX_HOME=$work/home-$1 AEX_CONFIG=$work/home-$1/aex.toml BENCH_UPSTREAM_KEY=bench AEX_LISTEN=127.0.0.1:0 \
    AEX_MODELS_FILE=$work/models.toml AEX_LOG_FORMAT=json RUST_LOG=warn,aex::server=info "${binary[$1]}" serve 2>>"$log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q '"aex listening"' "$log" && break; sleep 0.1; done
  addr=$(sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' "$log" | tail -n 1)
  for _ in $(seq 1 100); do curl -sf "http://$addr/ready" >/dev/null && break; sleep 0.1; done
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }

for n in "${names[@]}"; do
  psql "$DATABASE_URL" -qXc "CREATE DATABASE aex_ab_${n}_$$" >/dev/null
  token=$(AEX_HOME=$work/home-$n AEX_CONFIG=$work/home-$n/aex.toml "${binary[$n]}" init \
    --database-url "$server/aex_ab_${n}_$$" --json | sed -n 's/.*"operator_token":"\([^"]*\)".*/\1/p')
  start "$n"
  BENCH_ADMIN_TOKEN=$token "$LOADGEN" agents --url "http://$addr" --prefix many --count 64 \
    --budget-usd 1000000 --out "$work/$n.tokens"
  stop
done

for round in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    start "$n"
    # A short run at c=64 opens the pool, so that every backend aex uses is watched.
    "$LOADGEN" run --out "$work/warm.jsonl" --scenario warm --mode governed --url "http://$addr/v1" \
      --tokens "$work/$n.tokens" --kind chat --model bench-chat --concurrency 64 --duration-secs 2 \
      --warmup-secs 0 2>/dev/null
    mapfile -t backends < <(psql "$DATABASE_URL" -AtXc \
      "SELECT '--watch-db-pid=' || pid FROM pg_stat_activity WHERE datname = 'aex_ab_${n}_$$'")
    for point in $POINTS; do
      shape=(--concurrency "$point")
      [[ $point == r* ]] && shape=(--concurrency 256 --rate "${point#r}")
      "$LOADGEN" run --out "$RESULTS" --scenario "$n" --mode "round$round-$point" --url "http://$addr/v1" \
        --tokens "$work/$n.tokens" --kind chat --model bench-chat "${shape[@]}" --duration-secs "$DURATION" \
        --warmup-secs 1 --watch-pid "$pid" "${backends[@]}" --clk-tck "$CLK_TCK" 2>/dev/null
    done
    stop
  done
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rows.sort(key=lambda r: (r["mode"].split("-", 1)[1], r["scenario"], r["mode"]))
for r in rows:
    ok = r["ok"] or 1
    lat, aex, pg = r["latency_us"], r["process"], r.get("db_process") or {}
    print(f'{r["scenario"]:>12} {r["mode"]:>14} {r["throughput_rps"]:7.0f} req/s  p50 {lat["p50"] / 1000:6.2f}'
          f'  p99 {lat["p99"] / 1000:7.2f} ms  aex {aex["cpu_seconds"] / ok * 1e6:5.0f}'
          f'  pg {pg.get("cpu_seconds", 0) / ok * 1e6:5.0f} µs/req  machine {aex["machine_busy"]:.0%}')
PY
echo "raw results: $RESULTS"
