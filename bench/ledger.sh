#!/usr/bin/env bash
# The ledger at scale (SPEC §10), in one command:
#   1. seeds a scratch database with EVENTS (1,000,000) valid hash-chained events over CHAINS
#      (1,000) chains, with the real encoding (`aex dev seed-ledger`);
#   2. times `aex ledger verify` over them and prints events/s;
#   3. measures append throughput through the real append path with APPENDERS (8) concurrent
#      appenders on one chain (one busy tenant with one agent) and on APPENDERS chains (a busy
#      tenant with many agents), and prints both with their ratio;
#   4. drops the database (also on failure or Ctrl-C).
# Env: TEST_DATABASE_URL (a server URL, default the local one); BENCH_BIN (the aex binary, default
# a release build of this checkout; not AEX_*, which are settings); EVENTS, CHAINS, APPENDERS,
# APPEND_EVENTS (20,000 per run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ADMIN_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
EVENTS=${EVENTS:-1000000}
CHAINS=${CHAINS:-1000}
APPENDERS=${APPENDERS:-8}
APPEND_EVENTS=${APPEND_EVENTS:-20000}
if [[ -z ${BENCH_BIN:-} ]]; then
  cargo build --release --quiet --bin aex
  BENCH_BIN=target/release/aex
fi

DB=aex_bench_$(date +%s)_$$
WORK=$(mktemp -d)
cleanup() {
  psql "$ADMIN_URL" -qXc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql "$ADMIN_URL" -qXc "CREATE DATABASE $DB" >/dev/null

# Only what these commands need; no config file, no embedded cluster.
export AEX_HOME=$WORK AEX_CONFIG=$WORK/none.toml AEX_DATABASE_URL=${ADMIN_URL%/*}/$DB
export AEX_AUTH__KEYS__K1=bench-signing-key-0123456789abcdef0123456789 RUST_LOG=warn,sqlx=error
aex() { "$BENCH_BIN" --json "$@"; }
field() { jq -r ".$1"; }

aex migrate >/dev/null
echo "seeding $EVENTS events over $CHAINS chains ..."
seed=$(aex dev seed-ledger --events "$EVENTS" --chains "$CHAINS")
echo "  seeded in $(field elapsed_ms <<<"$seed") ms ($(field events_per_second <<<"$seed") events/s)"
# As autovacuum would have by now: the first read of fresh rows otherwise also sets hint bits.
psql "$AEX_DATABASE_URL" -qXc "VACUUM ANALYZE event_log" >/dev/null

started=$(date +%s%N)
verify=$(aex ledger verify --local)
wall_ms=$(( ($(date +%s%N) - started) / 1000000 ))
[[ $(field ok <<<"$verify") == true ]] || { echo "verification failed: $verify"; exit 1; }
echo "aex ledger verify --local: $(field events <<<"$verify") events in $(field chains <<<"$verify") chains," \
  "$(field elapsed_ms <<<"$verify") ms walking ($wall_ms ms for the whole command):" \
  "$(field events_per_second <<<"$verify") events/s"

one=$(aex dev bench-append --appenders "$APPENDERS" --chains 1 --events "$APPEND_EVENTS")
many=$(aex dev bench-append --appenders "$APPENDERS" --chains "$APPENDERS" --events "$APPEND_EVENTS")
one_rate=$(field events_per_second <<<"$one")
many_rate=$(field events_per_second <<<"$many")
echo "append, $APPENDERS appenders on 1 chain (one busy tenant, one agent): $one_rate events/s"
echo "append, $APPENDERS appenders on $APPENDERS chains (a busy tenant, many agents): $many_rate events/s"
echo "ratio many/one: $(awk -v m="$many_rate" -v o="$one_rate" 'BEGIN { printf "%.2f", m / o }')"
