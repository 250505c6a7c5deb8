#!/usr/bin/env bash
# The AEX benchmark (issue 9), in one invocation on this machine: every scenario against the mock
# upstream directly (the baseline) and through AEX with full governance, the Postgres ceiling for
# the statements one governed request executes, the ledger verification rate and memory. Prints
# one table (bench/README.md explains how to read it).
#
#   bash bench/run.sh
#
# Environment (all optional):
#   DURATION       seconds measured per scenario and mode, and per pgbench run (default 10)
#   WARMUP         seconds of warm-up before each measurement (default 1)
#   AGENTS         agents the "many agents" scenarios spread over (default 64)
#   AGENT_RPM      requests per minute of each bench agent (as `aex agent create` always gives one:
#                  its windows are then read and charged on every call); none when unset
#   STREAM_CHUNKS, STREAM_CHUNK_DELAY_MS   the streamed answer of stream-c16 (default 20, 2)
#   LONG_STREAMS   concurrent streams of the loaded-memory scenario (default 1000)
#   DATABASE_URL   a Postgres server where the bench may create and drop scratch databases
#                  (default postgres://postgres@127.0.0.1:5432/postgres)
#   RESULTS        file for the raw results, JSON lines (default /tmp/aex-bench-<time>.jsonl);
#                  `target/release/aex-loadgen report FILE` prints its table again
#   NO_BUILD=1     use target/release/aex and target/release/aex-loadgen as they are
#   SCENARIOS      only these scenarios, space-separated (default: all of chat-c1 chat-c16
#                  chat-c64 hot-c64 embeddings-c16 stream-c16 streams-1000 capped-c64)
#   BASELINE_AEX   another aex binary (the build a change started from): chat-c1 and chat-c64
#                  are run through it too, in a database of its own, as mode "baseline", so
#                  the report gives the ratio of the same run
set -euo pipefail
export RUST_LOG=warn

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
AGENTS=${AGENTS:-64}
STREAM_CHUNKS=${STREAM_CHUNKS:-20}
STREAM_CHUNK_DELAY_MS=${STREAM_CHUNK_DELAY_MS:-2}
LONG_STREAMS=${LONG_STREAMS:-1000}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=${RESULTS:-/tmp/aex-bench-$(date +%Y%m%d-%H%M%S).jsonl}

# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
require_tools psql pgbench curl
prepare_binaries
# 1,000 streams hold about 4,000 sockets across the client, aex and the mock.
(( $(ulimit -n) >= 8192 )) || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d -t aex-bench.XXXXXX)
db=aex_bench_$$
ceiling_db=${db}_pg
baseline_db=${db}_base
server=${DATABASE_URL%/*}
pids=()
aex_pid=

cleanup() {
  local status=$?
  for pid in $aex_pid "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $aex_pid "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for d in "$ceiling_db" "$baseline_db" "$db"; do
    psql "$DATABASE_URL" -qXc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
  if [[ -f $work/aex.log ]]; then
    cp "$work/aex.log" "${RESULTS%.jsonl}.aex.log"
    if (( status != 0 )); then
      echo "bench failed; the end of aex's log (all of it: ${RESULTS%.jsonl}.aex.log):" >&2
      tail -n 20 "$work/aex.log" >&2
    fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$RESULTS"
write_meta "${DURATION} s measured after ${WARMUP} s warm-up per run, ${AGENTS} agents, stream ${STREAM_CHUNKS} chunks ${STREAM_CHUNK_DELAY_MS} ms apart, ${LONG_STREAMS} long streams"

echo "== scratch database $db, mock upstreams, aex"
psql "$DATABASE_URL" -qXc "CREATE DATABASE $db" >/dev/null
"$AEX" dev mock-upstream --listen 127.0.0.1:0 --chunks "$STREAM_CHUNKS" --chunk-delay-ms "$STREAM_CHUNK_DELAY_MS" \
  >"$work/mock.out" 2>"$work/mock.log" &
pids+=($!)
mock_pid=$!
# Long streams for the loaded-memory figure: 100 chunks 100 ms apart keep every stream open
# for ten seconds, longer than admitting all of them takes.
"$AEX" dev mock-upstream --listen 127.0.0.1:0 --chunks 100 --chunk-delay-ms 100 \
  >"$work/mock-long.out" 2>"$work/mock-long.log" &
pids+=($!)
mock=$(first_line "$work/mock.out")
mock_long=$(first_line "$work/mock-long.out")

# The routing table: chat at gpt-4o-mini's prices and tokenizer on each mock, embeddings on the
# first.
{ chat_route mock "$mock" bench-chat; chat_route mock_long "$mock_long" bench-long; } >"$work/models.toml"
cat >>"$work/models.toml" <<EOF
[models."bench-embed"]
provider = "mock"
upstream_model = "text-embedding-3-small"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
EOF

export AEX_HOME=$work/home AEX_CONFIG=$work/home/aex.toml
operator_token=$("$AEX" init --database-url "$server/$db" --json | sed -n 's/.*"operator_token":"\([^"]*\)".*/\1/p')
[[ -n $operator_token ]] || { echo "bench: aex init printed no operator token" >&2; exit 1; }
start_aex
sleep 2
printf '{"record":"idle",%s}\n' "$(rss_fields "$aex_pid")" >>"$RESULTS"
db_watch=()
echo "mock $mock, long-stream mock $mock_long, aex $aex_addr (pid $aex_pid)"

# Budgets large enough never to refuse, no rpm/tpm; one more agent with a budget for about a
# hundred requests, to be hammered past it.
export BENCH_ADMIN_TOKEN=$operator_token
"$LOADGEN" agents --url "http://$aex_addr" --prefix many --count "$AGENTS" --budget-usd 1000000 ${AGENT_RPM:+--rpm "$AGENT_RPM"} --out "$work/many.tokens"
"$LOADGEN" agents --url "http://$aex_addr" --prefix hot --budget-usd 1000000 ${AGENT_RPM:+--rpm "$AGENT_RPM"} --out "$work/hot.tokens"
"$LOADGEN" agents --url "http://$aex_addr" --prefix capped --budget-usd 0.0015 --out "$work/capped.tokens"

# The Postgres ceiling: pgbench runs the SQL of one governed request (bench/governed-request.sql)
# in a database of its own whose agents mirror the run's (many-0.., hot-0, each chain started by
# one event as agent creation leaves it), right after the governed run it is compared with, so
# that both meet the machine in the same state. aex is stopped meanwhile: 64 clients next to its
# idle pool would pass a shared server's max_connections.
psql "$DATABASE_URL" -qXc "CREATE DATABASE $ceiling_db" >/dev/null
AEX_DATABASE_URL=$server/$ceiling_db AEX_MIGRATION_DATABASE_URL=$server/$ceiling_db "$AEX" migrate >/dev/null
psql "$server/$ceiling_db" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO replicas (id, hostname, version) VALUES (gen_random_uuid(), 'pgbench', 'bench');
INSERT INTO agents (id, tenant_id, name, budget_micro_usd)
  SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', name, 1000000000000000
  FROM (SELECT 'many-' || i AS name FROM generate_series(0, $AGENTS - 1) AS i UNION ALL SELECT 'hot-0') AS n;
INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, ts, payload)
  SELECT 'agent:' || id, 1, repeat('0', 64), encode(sha256(convert_to(id::text, 'UTF8')), 'hex'),
         'agent.created', tenant_id, id, now(), '{}'
  FROM agents;
SQL
replica=$(psql "$server/$ceiling_db" -AtXc "SELECT id FROM replicas LIMIT 1")
# agent, tenant and chain advisory-lock key (src/ledger/append.rs: the first 8 bytes of SHA-256
# of the chain id, big-endian, signed) of the named agents, in index order.
agents_of() {
  psql "$server/$ceiling_db" -AtXF ' ' -c "SELECT id, tenant_id, \
    ('x' || left(encode(sha256(convert_to('agent:' || id, 'UTF8')), 'hex'), 16))::bit(64)::bigint \
    FROM agents WHERE name LIKE '$1-%' ORDER BY substring(name FROM '[0-9]+\$')::int"
}
# One pgbench script: client k runs the request of agent k mod N (as the load client spreads
# requests over agents), the branch chosen by pgbench itself, so no statement is added.
ceiling_script() {
  local i=0 agent tenant key
  echo "\\set n :client_id % $(agents_of "$1" | wc -l)"
  while read -r agent tenant key; do
    if (( i == 0 )); then echo "\\if :n = 0"; else echo "\\elif :n = $i"; fi
    sed -e '/^--/d' -e "s/@AGENT@/$agent/g; s/@TENANT@/$tenant/g; s/@CHAIN@/('agent:' || '$agent')/g" \
      -e "s/@LOCKKEY@/$key/g; s/@REPLICA@/$replica/g" "$here/bench/governed-request.sql"
    i=$(( i + 1 ))
  done < <(agents_of "$1")
  echo "\\endif"
}
ceiling_script many >"$work/ceiling-many.sql"
ceiling_script hot >"$work/ceiling-hot.sql"
ceiling() {
  local scenario=$1 agents=$2 clients=$3 out try
  # Other users of a shared server may hold connections for a moment: try again, briefly.
  for try in 1 2 3; do
    out=$(pgbench -n -M prepared -c "$clients" -j "$(( clients < $(nproc) ? clients : $(nproc) ))" \
      -T "${DURATION%.*}" -f "$work/ceiling-$agents.sql" "$server/$ceiling_db" 2>&1) && break
    grep -q "too many clients" <<<"$out" && (( try < 3 )) && { sleep 5; continue; }
    echo "  $scenario: pgbench failed: $(grep -m 1 error <<<"$out")" >&2
    return 0
  done
  printf '{"record":"pgbench","scenario":"%s","clients":%s,"tps":%s,"latency_ms":%s,"hash":"admission and settlement events hashed by AEX in the replica (constants here)"}\n' \
    "$scenario" "$clients" \
    "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")" \
    "$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")" >>"$RESULTS"
  echo "  $(printf '%-14s %-8s' "$scenario" pgbench) $(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out") tps"
}

# The same scenario direct (watching the mock) and governed (watching aex and its backends).
pair() {
  local scenario=$1 direct_url=$2 tokens=$3; shift 3
  load --scenario "$scenario" --mode direct --url "http://$direct_url/v1" --watch-pid "$mock_pid" "$@"
  load --scenario "$scenario" --mode governed --url "http://$aex_addr/v1" --tokens "$tokens" --watch-pid "$aex_pid" \
    "${db_watch[@]}" "$@"
}

# A chat scenario, then pgbench at its concurrency while aex is stopped.
pair_and_ceiling() {
  local scenario=$1 agents=$2 clients=$3
  pair "$scenario" "$mock" "$work/$agents.tokens" --kind chat --model bench-chat --concurrency "$clients"
  stop_aex
  ceiling "$scenario" "$agents" "$clients"
  start_aex
  watch_backends "$db" "$work/many.tokens"
}

# What read-your-writes costs a stream's last event (SPEC §3): the final event waits for the
# stream's settlement to commit. aex observes, per stream, the time from the provider's end of
# stream to the final event (aex_stream_final_event_wait_seconds); this prints its mean and the
# buckets holding the median and the 99th percentile, for every stream the running aex served.
stream_final_wait() {
  curl -sf "http://$aex_addr/metrics" | awk '
    /^aex_stream_final_event_wait_seconds_bucket/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; les[n] = le; counts[n] = $2 }
    /^aex_stream_final_event_wait_seconds_sum/ { sum = $2 }
    /^aex_stream_final_event_wait_seconds_count/ { count = $2 }
    END {
      if (count == 0) { print "stream final event: no streams observed"; exit }
      for (i = 1; i <= n; i++) {
        if (p50 == "" && counts[i] >= count * 0.5) p50 = les[i]
        if (p99 == "" && counts[i] >= count * 0.99) p99 = les[i]
      }
      printf "stream final event waits for its settlement: mean %.2f ms, p50 <= %s s, p99 <= %s s (%d streams)\n",
        1000 * sum / count, p50, p99, count }' || echo "stream final event: /metrics unavailable"
}

# Whether a scenario was asked for (SCENARIOS, default all).
want() { [[ -z ${SCENARIOS:-} || " $SCENARIOS " == *" $1 "* ]]; }

echo "== scenarios (${DURATION} s each way; pgbench after each chat scenario)"
watch_backends "$db" "$work/many.tokens"
want chat-c1 && pair_and_ceiling chat-c1 many 1
want chat-c16 && pair_and_ceiling chat-c16 many 16
want chat-c64 && pair_and_ceiling chat-c64 many 64
want hot-c64 && pair_and_ceiling hot-c64 hot 64
want embeddings-c16 &&
  pair embeddings-c16 "$mock" "$work/many.tokens" --kind embeddings --model bench-embed --concurrency 16
if want stream-c16; then
  pair stream-c16 "$mock" "$work/many.tokens" --kind stream --model bench-chat --concurrency 16
  stream_final_wait | tee -a "$work/stream-final-wait.txt"
fi
if want streams-1000; then
  # The long-stream mock's pid is not watched: direct, only the client's view matters here.
  load --scenario streams-1000 --mode direct --url "http://$mock_long/v1" --kind stream --model bench-long \
    --concurrency "$LONG_STREAMS" --requests "$LONG_STREAMS"
  load --scenario streams-1000 --mode governed --url "http://$aex_addr/v1" --tokens "$work/many.tokens" \
    --watch-pid "$aex_pid" --kind stream --model bench-long --concurrency "$LONG_STREAMS" --requests "$LONG_STREAMS"
fi
# Ten times what the capped agent's budget affords, 64 at a time: the budget must hold.
want capped-c64 && load --scenario capped-c64 --mode governed --url "http://$aex_addr/v1" --tokens "$work/capped.tokens" \
  --watch-pid "$aex_pid" --kind chat --model bench-chat --concurrency 64 --requests 1000
sleep 2
printf '{"record":"idle_after",%s}\n' "$(rss_fields "$aex_pid")" >>"$RESULTS"

# After a graceful stop the books are final.
stop_aex

# The baseline build, alone on a database of its own, with agents made the same way.
if [[ -n ${BASELINE_AEX:-} ]]; then
  echo "== baseline build $BASELINE_AEX"
  psql "$DATABASE_URL" -qXc "CREATE DATABASE $baseline_db" >/dev/null
  base_token=$(AEX_HOME=$work/base-home AEX_CONFIG=$work/base-home/aex.toml \
    "$BASELINE_AEX" init --database-url "$server/$baseline_db" --json | sed -n 's/.*"operator_token":"\([^"]*\)".*/\1/p')
  AEX_HOME=$work/base-home AEX_CONFIG=$work/base-home/aex.toml AEX=$BASELINE_AEX start_aex
  BENCH_ADMIN_TOKEN=$base_token "$LOADGEN" agents --url "http://$aex_addr" --prefix many --count "$AGENTS" \
    --budget-usd 1000000 ${AGENT_RPM:+--rpm "$AGENT_RPM"} --out "$work/base-many.tokens"
  watch_backends "$baseline_db" "$work/base-many.tokens"
  for c in 1 64; do
    want "chat-c$c" || continue
    load --scenario "chat-c$c" --mode baseline --url "http://$aex_addr/v1" --tokens "$work/base-many.tokens" \
      --watch-pid "$aex_pid" "${db_watch[@]}" --kind chat --model bench-chat --concurrency "$c"
  done
  stop_aex
fi
read -r budget spent reserved < <(psql "$server/$db" -AtXF ' ' -c \
  "SELECT budget_micro_usd, spent_micro_usd, reserved_micro_usd FROM agents WHERE name = 'capped-0'")
printf '{"record":"overspend","budget_micro_usd":%s,"spent_micro_usd":%s,"reserved_micro_usd":%s,"overspend_micro_usd":%s}\n' \
  "$budget" "$spent" "$reserved" "$(( spent > budget ? spent - budget : 0 ))" >>"$RESULTS"

printf '{"record":"log","warnings":%s,"errors":%s}\n' "$(grep -c '"level":"WARN"' "$work/aex.log" || true)" \
  "$(grep -c '"level":"ERROR"' "$work/aex.log" || true)" >>"$RESULTS"

echo "== ledger verification and audit"
verify=$("$AEX" ledger verify --local --json) || true
audit=$("$AEX" audit --json) || true
printf '{"record":"verify","report":%s}\n{"record":"audit","report":%s}\n' "${verify:-null}" "${audit:-null}" >>"$RESULTS"

echo
"$LOADGEN" report "$RESULTS"
[[ -s $work/stream-final-wait.txt ]] && cat "$work/stream-final-wait.txt"
echo "raw results: $RESULTS"
