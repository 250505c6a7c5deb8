# Shell helpers shared by bench/run.sh and bench/peers.sh (sourced, not run). The caller sets
# `here` (the repository) and, before the functions that use them, `work` (a scratch directory),
# RESULTS, DURATION and WARMUP; prepare_binaries sets AEX, LOADGEN and CLK_TCK.

# Exits unless every named tool is on PATH.
require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null ||
      { echo "bench: $tool is required (Debian: postgresql-client for psql and pgbench, curl, jq)" >&2; exit 1; }
  done
}

# Builds the release binaries unless NO_BUILD=1; sets AEX, LOADGEN and CLK_TCK.
prepare_binaries() {
  if [[ ${NO_BUILD:-} != 1 ]]; then
    (cd "$here" && cargo build --release --bin aex --bin aex-loadgen)
  fi
  AEX=$here/target/release/aex
  LOADGEN=$here/target/release/aex-loadgen
  CLK_TCK=$(getconf CLK_TCK)
}

# Waits for the first line of a file (a process printing its address) and prints it.
first_line() {
  for _ in $(seq 1 100); do
    [[ -s $1 ]] && { head -n 1 "$1"; return; }
    sleep 0.1
  done
  echo "bench: nothing appeared in $1" >&2
  return 1
}

# RSS of a process as JSON fields: total, anonymous (heap) and file-backed (mapped binary), MB.
rss_fields() {
  awk '/^(VmRSS|RssAnon|RssFile):/ { sub(":", "", $1); printf "%s\"%s_mb\":%.1f", sep, $1, $2 / 1024; sep = "," }' \
    "/proc/$1/status"
}

# A string made safe to put between JSON quotes (these are process names and numbers).
json_text() { tr -d '"\\' | tr '\n' ' ' | sed 's/ *$//'; }

# Appends the run's first record: the machine, what else was using the CPU right now (top's
# second sample: its first covers the whole uptime), and the settings given as $1.
write_meta() {
  local busy
  busy=$(top -b -n 2 -d 1 -o %CPU -w 200 | awk '/^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 2 \
    { printf "%s %s%%, ", $12, $9 }' | json_text)
  busy=${busy:-nothing above 2% of a CPU}
  printf '{"record":"meta","started":"%s","nproc":%s,"mem_total_mb":%s,"loadavg":"%s","busy":"%s","settings":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$busy" "$1" >>"$RESULTS"
}

# A provider and a chat model on it, at gpt-4o-mini's prices and tokenizer, for AEX's routing
# table: `chat_route PROVIDER ADDR ALIAS`.
chat_route() {
  cat <<TOML
[providers.$1]
kind = "openai"
base_url = "http://$2/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[models."$3"]
provider = "$1"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 16384
capabilities = ["chat", "streaming"]

TOML
}

# Starts aex serve with the routing table $work/models.toml and waits until it is ready; sets
# aex_pid and aex_addr. Port 0: aex logs the address it bound, the one info line let through.
start_aex() {
  local started
  started=$(grep -c '"aex listening"' "$work/aex.log" 2>/dev/null || true)
  BENCH_UPSTREAM_KEY=bench AEX_LISTEN=127.0.0.1:0 AEX_MODELS_FILE=$work/models.toml AEX_LOG_FORMAT=json \
    RUST_LOG=warn,aex::server=info "$AEX" serve 2>>"$work/aex.log" &
  aex_pid=$!
  for _ in $(seq 1 100); do
    (( $(grep -c '"aex listening"' "$work/aex.log" || true) > ${started:-0} )) && break
    sleep 0.1
  done
  aex_addr=$(sed -n 's/.*"addr":"\([^"]*\)".*"aex listening".*/\1/p; s/.*"aex listening".*"addr":"\([^"]*\)".*/\1/p' \
    "$work/aex.log" | tail -n 1)
  [[ -n $aex_addr ]] || { echo "bench: aex did not start" >&2; exit 1; }
  for _ in $(seq 1 100); do curl -sf "http://$aex_addr/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "http://$aex_addr/ready" >/dev/null || { echo "bench: aex is not ready" >&2; exit 1; }
}

# A graceful stop: aex drains and waits for every settlement.
stop_aex() {
  kill -TERM "$aex_pid"
  wait "$aex_pid" || true
  aex_pid=
}

# The running aex's /metrics into file $1 (empty when it cannot be read): bench/money_path.py
# compares two of them.
scrape() {
  curl -sf "http://$aex_addr/metrics" >"$1" || : >"$1"
}

# One run of the load client, appended to RESULTS; bounded even if something hangs.
load() {
  timeout "$(( ${DURATION%.*} + ${WARMUP%.*} + 150 ))" "$LOADGEN" run --out "$RESULTS" --clk-tck "$CLK_TCK" \
    --duration-secs "$DURATION" --warmup-secs "$WARMUP" "$@"
}

# aex's Postgres backends, watched on governed runs (their CPU per request is a target of issue
# 17): a short run at c=64 on database $1 with the tokens in $2 first fills aex's pool, so that
# every connection it uses is listed; sets db_watch to the load client's --watch-db-pid options.
watch_backends() {
  "$LOADGEN" run --out "$work/warm.jsonl" --scenario warm --mode governed --url "http://$aex_addr/v1" \
    --tokens "$2" --kind chat --model bench-chat --concurrency 64 --duration-secs 2 --warmup-secs 0 2>/dev/null
  mapfile -t db_watch < <(psql "$DATABASE_URL" -AtXc \
    "SELECT '--watch-db-pid=' || pid FROM pg_stat_activity WHERE datname = '$1' AND pid <> pg_backend_pid()")
}
