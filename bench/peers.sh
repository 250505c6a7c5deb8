#!/usr/bin/env bash
# AEX beside its peers (issue 17, item 5): the LiteLLM proxy (PyPI) and the Portkey gateway (npm)
# are installed and run against the same `aex dev mock-upstream` as AEX, driven by the same load
# client with the same requests, and printed beside AEX (governed) and the mock direct (the
# baseline) in one table; then AEX's added latency at half its own peak rate, open loop. Not part
# of CI. bench/README.md explains how to read it.
#
#   bash bench/peers.sh
#
# Environment (all optional):
#   DURATION       seconds measured per point (default 6; about 18 points)
#   WARMUP         seconds of warm-up before each point (default 1)
#   AGENTS         agents AEX's requests spread over (default 64)
#   AGENT_RPM      requests per minute of each bench agent (as `aex agent create` always gives one:
#                  its windows are then read and charged on every call); none when unset
#   STREAM_CHUNKS, STREAM_CHUNK_DELAY_MS   the streamed answer of stream-c16 (default 20, 2)
#   PEERS          which peers, space-separated (default "portkey litellm"; "" for none)
#   PEERS_DIR      where the peers are installed, kept between runs (default /tmp/aex-peers)
#   LITELLM_SPEC   pip requirement (default "litellm[proxy]"); LITELLM_WORKERS (default 2)
#   PORTKEY_SPEC   npm package (default "@portkey-ai/gateway")
#   OPEN_CAP       requests in flight at most in the open-loop point (default 256)
#   DATABASE_URL   a Postgres server where the bench may create and drop a scratch database
#                  (default postgres://postgres@127.0.0.1:5432/postgres)
#   RESULTS        file for the raw results, JSON lines (default /tmp/aex-peers-<time>.jsonl);
#                  `target/release/aex-loadgen peers-report FILE` prints its table again
#   NO_BUILD=1     use target/release/aex and target/release/aex-loadgen as they are
set -euo pipefail
export RUST_LOG=warn

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
AGENTS=${AGENTS:-64}
STREAM_CHUNKS=${STREAM_CHUNKS:-20}
STREAM_CHUNK_DELAY_MS=${STREAM_CHUNK_DELAY_MS:-2}
PEERS=${PEERS-portkey litellm}
PEERS_DIR=${PEERS_DIR:-/tmp/aex-peers}
LITELLM_SPEC=${LITELLM_SPEC:-litellm[proxy]}
LITELLM_WORKERS=${LITELLM_WORKERS:-2}
PORTKEY_SPEC=${PORTKEY_SPEC:-@portkey-ai/gateway}
OPEN_CAP=${OPEN_CAP:-256}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=${RESULTS:-/tmp/aex-peers-$(date +%Y%m%d-%H%M%S).jsonl}

# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
require_tools psql curl jq python3
prepare_binaries

work=$(mktemp -d -t aex-peers.XXXXXX)
db=aex_peers_$$
server=${DATABASE_URL%/*}
pids=()
aex_pid=
peer_pid=


# A peer that cannot be installed or started is recorded as such (its row says why) and skipped.
peer_failed() {
  echo "peers: $1: $2 — its row is left out" >&2
  printf '{"record":"peer-%s","status":"%s"}\n' "$1" "$(json_text <<<"$2")" >>"$RESULTS"
}

# A free loopback port (the peers take a port number, not port 0).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A process and all its descendants (a gateway of several workers), one pid a line.
pid_tree() {
  echo "$1"
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do pid_tree "$child"; done
}

# `--watch-pid P` for each of a process tree.
watch_args() {
  local p
  for p in $(pid_tree "$1"); do printf -- '--watch-pid %s ' "$p"; done
}

# Stops the running peer and every process it started; KILL after ten seconds.
stop_peer() {
  [[ -n $peer_pid ]] || return 0
  local tree
  tree=$(pid_tree "$peer_pid")
  # shellcheck disable=SC2086 # one word per pid
  kill -TERM $tree 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$peer_pid" 2>/dev/null || break; sleep 0.2; done
  # shellcheck disable=SC2086
  kill -KILL $tree 2>/dev/null || true
  wait "$peer_pid" 2>/dev/null || true
  peer_pid=
}

cleanup() {
  local status=$?
  stop_peer
  for pid in $aex_pid "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $aex_pid "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql "$DATABASE_URL" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if (( status != 0 )) && [[ -f $work/aex.log ]]; then
    echo "peers failed; the end of aex's log:" >&2
    tail -n 20 "$work/aex.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whether the peer just started (peer_pid) answers at URL within SECONDS; records it either way:
# peer_started NAME LABEL VERSION URL SECONDS (its output is in $work/NAME.log).
peer_started() {
  if ! wait_http "$4" "$5" "$peer_pid"; then
    peer_failed "$1" "$2 did not start: $(tail -n 3 "$work/$1.log" | json_text)"
    return 1
  fi
  echo "== $2 at $4 (pid $peer_pid)"
  printf '{"record":"peer-%s","status":"ran","version":"%s"}\n' "$1" "$3" >>"$RESULTS"
}

# Polls a URL until it answers (up to $2 seconds), or fails if process $3 is gone meanwhile.
wait_http() {
  local i
  for i in $(seq 1 $(( $2 * 5 ))); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# The four points of the table against one base URL: load_points MODE URL [load args…]
load_points() {
  local mode=$1 url=$2; shift 2
  local c
  for c in 1 16 64; do
    load --scenario "chat-c$c" --mode "$mode" --url "$url" --kind chat --model bench-chat --concurrency "$c" "$@"
  done
  load --scenario stream-c16 --mode "$mode" --url "$url" --kind stream --model bench-chat --concurrency 16 "$@"
}

: >"$RESULTS"
write_meta "${DURATION} s measured after ${WARMUP} s warm-up per point, AEX over ${AGENTS} agents, stream ${STREAM_CHUNKS} chunks ${STREAM_CHUNK_DELAY_MS} ms apart, LiteLLM ${LITELLM_WORKERS} workers"

# ---- the peers' installs first, so that no install runs while something is measured
mkdir -p "$PEERS_DIR"
install_litellm() {
  local venv=$PEERS_DIR/litellm-venv
  if [[ ! -x $venv/bin/litellm ]]; then
    echo "== installing $LITELLM_SPEC into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "$LITELLM_SPEC" >"$PEERS_DIR/litellm-install.log" 2>&1
  fi
}
install_portkey() {
  local dir=$PEERS_DIR/portkey
  # The gateway's own dependency range lets npm pick a newer @hono/node-server, whose streams
  # do not flow through it (Portkey issue #1389): pin 1.13.5 everywhere in the tree.
  if [[ ! -f $dir/node_modules/@portkey-ai/gateway/build/start-server.js ]] ||
    [[ $(jq -r .version "$dir/node_modules/@portkey-ai/gateway/node_modules/@hono/node-server/package.json" \
      2>/dev/null || echo 1.13.5) != 1.13.5 ]]; then
    echo "== installing $PORTKEY_SPEC into $dir"
    # A lockfile or tree from before would keep the nested copy: start clean.
    rm -rf "$dir/node_modules" "$dir/package-lock.json"
    mkdir -p "$dir"
    jq -n --arg spec "$PORTKEY_SPEC" '{name: "aex-bench-portkey", private: true,
      dependencies: {($spec | sub("(?<=.)@.*$"; "")): ($spec | if test("(?<=.)@") then sub("^.+?(?<=.)@"; "") else "*" end),
        "@hono/node-server": "1.13.5"},
      overrides: {"@hono/node-server": "1.13.5"}}' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund >"$PEERS_DIR/portkey-install.log" 2>&1)
  fi
}
for peer in $PEERS; do
  case $peer in
    litellm) install_litellm || peer_failed litellm "pip install $LITELLM_SPEC failed (see $PEERS_DIR/litellm-install.log)" ;;
    portkey) install_portkey || peer_failed portkey "npm install $PORTKEY_SPEC failed (see $PEERS_DIR/portkey-install.log)" ;;
    *) peer_failed "$peer" "unknown peer (known: portkey litellm)" ;;
  esac
done

# ---- the mock and AEX
echo "== scratch database $db, mock upstream, aex"
psql "$DATABASE_URL" -qXc "CREATE DATABASE $db" >/dev/null
"$AEX" dev mock-upstream --listen 127.0.0.1:0 --chunks "$STREAM_CHUNKS" --chunk-delay-ms "$STREAM_CHUNK_DELAY_MS" \
  >"$work/mock.out" 2>"$work/mock.log" &
pids+=($!)
mock_pid=$!
mock=$(first_line "$work/mock.out")
chat_route mock "$mock" bench-chat >"$work/models.toml"
export AEX_HOME=$work/home AEX_CONFIG=$work/home/aex.toml
operator_token=$("$AEX" init --database-url "$server/$db" --json | sed -n 's/.*"operator_token":"\([^"]*\)".*/\1/p')
[[ -n $operator_token ]] || { echo "peers: aex init printed no operator token" >&2; exit 1; }
start_aex
export BENCH_ADMIN_TOKEN=$operator_token
"$LOADGEN" agents --url "http://$aex_addr" --prefix many --count "$AGENTS" --budget-usd 1000000 ${AGENT_RPM:+--rpm "$AGENT_RPM"} --out "$work/many.tokens"
echo "mock $mock, aex $aex_addr (pid $aex_pid)"

echo "== the mock direct (the baseline)"
load_points direct "http://$mock/v1" --watch-pid "$mock_pid"

echo "== AEX, governed"
watch_backends "$db" "$work/many.tokens"
load_points governed "http://$aex_addr/v1" --tokens "$work/many.tokens" --watch-pid "$aex_pid" "${db_watch[@]}"

# Half of AEX's own peak (the best of its chat points), open loop: latency at a load it carries,
# not queueing at saturation. The mock at the same rate is the baseline.
peak=$(jq -rs '[.[] | select(.record == "load" and .mode == "governed" and .kind == "chat") | .throughput_rps] | max // 0' "$RESULTS")
rate=$(jq -rn --argjson p "$peak" '$p / 2 | floor')
printf '{"record":"peak","governed_rps":%.0f,"rate_rps":%s}\n' "$peak" "$rate" >>"$RESULTS"
if (( rate > 0 )); then
  printf "== open loop at %s req/s (half of AEX's peak %.0f req/s)\n" "$rate" "$peak"
  load --scenario open-half --mode direct --url "http://$mock/v1" --kind chat --model bench-chat \
    --rate "$rate" --concurrency "$OPEN_CAP" --watch-pid "$mock_pid"
  scrape "$work/open-half.before.prom"
  # shellcheck disable=SC2046
  load --scenario open-half --mode governed --url "http://$aex_addr/v1" --tokens "$work/many.tokens" --kind chat \
    --model bench-chat --rate "$rate" --concurrency "$OPEN_CAP" --watch-pid "$aex_pid" "${db_watch[@]}"
  scrape "$work/open-half.after.prom"
  python3 "$here/bench/money_path.py" "$work/open-half.before.prom" "$work/open-half.after.prom"
fi
stop_aex

# ---- the peers, one at a time, alone with the mock
run_portkey() {
  local dir=$PEERS_DIR/portkey port version
  version=$(jq -r .version "$dir/node_modules/@portkey-ai/gateway/package.json")
  port=$(free_port)
  (cd "$dir" && NODE_ENV=production exec node node_modules/@portkey-ai/gateway/build/start-server.js \
    --port="$port" --headless >"$work/portkey.log" 2>&1) &
  peer_pid=$!
  peer_started portkey "Portkey gateway $version" "$version" "http://127.0.0.1:$port/" 30 || return 0
  # shellcheck disable=SC2046
  load_points portkey "http://127.0.0.1:$port/v1" --header "x-portkey-provider: openai" \
    --header "x-portkey-custom-host: http://$mock/v1" $(watch_args "$peer_pid")
}

run_litellm() {
  local venv=$PEERS_DIR/litellm-venv port version
  version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')
  port=$(free_port)
  cat >"$work/litellm.yaml" <<YAML
model_list:
  - model_name: bench-chat
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://$mock/v1
      api_key: bench
YAML
  echo "bench-master-key" >"$work/litellm.tokens"
  # No database: its Prisma mode fetches engines at run time, which an offline machine cannot.
  # So no virtual keys, budgets or spend log: the master key is the one check it makes. Its
  # workers take a minute to import on a busy machine; uvicorn's default 5 s health check would
  # kill and respawn them for ever.
  env -u DATABASE_URL LITELLM_MASTER_KEY=bench-master-key LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_TELEMETRY=False \
    "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$port" \
    --num_workers "$LITELLM_WORKERS" --timeout_worker_healthcheck 300 >"$work/litellm.log" 2>&1 &
  peer_pid=$!
  peer_started litellm "LiteLLM proxy $version, $LITELLM_WORKERS workers," "$version" \
    "http://127.0.0.1:$port/health/liveliness" 300 || return 0
  # shellcheck disable=SC2046
  load_points litellm "http://127.0.0.1:$port/v1" --tokens "$work/litellm.tokens" $(watch_args "$peer_pid")
}

for peer in $PEERS; do
  grep -q "\"record\":\"peer-$peer\"" "$RESULTS" && continue # its install failed
  "run_$peer" || peer_failed "$peer" "its run failed; its log ends: $(tail -n 3 "$work/$peer.log" | json_text)"
  stop_peer
done

echo
"$LOADGEN" peers-report "$RESULTS"
echo "raw results: $RESULTS"
