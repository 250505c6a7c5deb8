#!/usr/bin/env bash
# A/B of aex builds on this machine (not part of CI): each build gets a database of its own and
# its 64 agents, then the builds take turns, ROUNDS times, through the same points — closed loop
# at each concurrency of POINTS, open loop at a fixed rate for "rNNN" — so that a machine whose
# speed drifts meets every build alike. Prints one line per build, round and point: req/s, p50
# and p99 latency, and CPU per request of aex and of its Postgres backends; under it, the money
# path's batches and waits over that point (bench/money_path.py).
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
WARMUP=1
names=()
declare -A binary
for v in $VARIANTS; do names+=("${v%%=*}"); binary[${v%%=*}]=${v#*=}; done
aex_pid=
cleanup() {
  [[ -n $aex_pid ]] && stop_aex
  kill -TERM "$mock_pid" 2>/dev/null || true
  for n in "${names[@]}"; do psql "$DATABASE_URL" -qXc "DROP DATABASE IF EXISTS aex_ab_${n}_$$ WITH (FORCE)" >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT

"$AEX" dev mock-upstream --listen 127.0.0.1:0 >"$work/mock.out" 2>/dev/null &
mock_pid=$!
chat_route mock "$(first_line "$work/mock.out")" bench-chat >"$work/models.toml"

# Makes variant $1 the aex that start_aex runs, with a home of its own.
variant() {
  AEX=${binary[$1]}
  export AEX_HOME=$work/home-$1 AEX_CONFIG=$work/home-$1/aex.toml
}

for n in "${names[@]}"; do
  variant "$n"
  psql "$DATABASE_URL" -qXc "CREATE DATABASE aex_ab_${n}_$$" >/dev/null
  token=$("$AEX" init --database-url "$server/aex_ab_${n}_$$" --json | sed -n 's/.*"operator_token":"\([^"]*\)".*/\1/p')
  start_aex
  BENCH_ADMIN_TOKEN=$token "$LOADGEN" agents --url "http://$aex_addr" --prefix many --count 64 \
    --budget-usd 1000000 --out "$work/$n.tokens"
  stop_aex
done

for round in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    variant "$n"
    start_aex
    watch_backends "aex_ab_${n}_$$" "$work/$n.tokens"
    for point in $POINTS; do
      shape=(--concurrency "$point")
      [[ $point == r* ]] && shape=(--concurrency 256 --rate "${point#r}")
      scrape "$work/$n-round$round-$point.before.prom"
      load --scenario "$n" --mode "round$round-$point" --url "http://$aex_addr/v1" --tokens "$work/$n.tokens" \
        --kind chat --model bench-chat "${shape[@]}" --watch-pid "$aex_pid" "${db_watch[@]}"
      scrape "$work/$n-round$round-$point.after.prom"
    done
    stop_aex
  done
done

python3 - "$RESULTS" "$work" "$here/bench" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3])
import money_path
rows = [json.loads(line) for line in open(sys.argv[1])]
rows.sort(key=lambda r: (r["mode"].split("-", 1)[1], r["scenario"], r["mode"]))
for r in rows:
    ok = r["ok"] or 1
    lat, aex, pg = r["latency_us"], r["process"], r.get("db_process") or {}
    print(f'{r["scenario"]:>12} {r["mode"]:>14} {r["throughput_rps"]:7.0f} req/s  p50 {lat["p50"] / 1000:6.2f}'
          f'  p99 {lat["p99"] / 1000:7.2f} ms  aex {aex["cpu_seconds"] / ok * 1e6:5.0f}'
          f'  pg {pg.get("cpu_seconds", 0) / ok * 1e6:5.0f} µs/req  machine {aex["machine_busy"]:.0%}')
    snapshots = f'{sys.argv[2]}/{r["scenario"]}-{r["mode"]}'
    money_path.main(snapshots + ".before.prom", snapshots + ".after.prom")
PY
echo "raw results: $RESULTS"
