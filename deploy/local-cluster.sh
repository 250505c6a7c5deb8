#!/usr/bin/env bash
# Several AEX replicas on one Postgres, on this machine: the shape of a Kubernetes deployment
# without Kubernetes.
#
#   deploy/local-cluster.sh up      start the replicas (migrating first), wait until all are ready
#   deploy/local-cluster.sh down    stop them (SIGTERM: each drains, then deregisters)
#   deploy/local-cluster.sh status  which are running
#
# Settings come from the usual aex.toml ($AEX_CONFIG, else $AEX_HOME/aex.toml, as written by
# `aex init`) and AEX_* variables; each replica gets its own AEX_LISTEN. Environment:
#   PORTS       ports to listen on, one replica each (default "9001 9002 9003")
#   BIN     the aex binary (default: aex on PATH, else target/release or target/debug)
#   STATE_DIR   where pids and logs go (default $AEX_HOME/cluster, AEX_HOME default ~/.aex)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORTS=${PORTS:-"9001 9002 9003"}
home=${AEX_HOME:-$HOME/.aex}
STATE_DIR=${STATE_DIR:-$home/cluster}
if [[ -z ${BIN:-} ]]; then
  if command -v aex >/dev/null; then BIN=$(command -v aex)
  elif [[ -x $here/target/release/aex ]]; then BIN=$here/target/release/aex
  else BIN=$here/target/debug/aex; fi
fi

# GET /ready over bash's /dev/tcp (no curl needed): true on 200.
ready() {
  local status
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  printf 'GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 2 status <&3 || status=
  exec 3>&-
  [[ $status == "HTTP/1.1 200"* ]]
}

up() {
  mkdir -p "$STATE_DIR"
  "$BIN" migrate >/dev/null
  for port in $PORTS; do
    if [[ -f $STATE_DIR/$port.pid ]] && kill -0 "$(cat "$STATE_DIR/$port.pid")" 2>/dev/null; then
      echo "replica on :$port already running"; continue
    fi
    AEX_LISTEN=127.0.0.1:$port AEX_AUTO_MIGRATE=false \
      setsid "$BIN" serve >>"$STATE_DIR/$port.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/$port.pid"
  done
  for port in $PORTS; do
    for _ in $(seq 1 300); do ready "$port" && break; sleep 0.1; done
    ready "$port" || { echo "replica on :$port did not become ready; see $STATE_DIR/$port.log" >&2; exit 1; }
    echo "replica ready on http://127.0.0.1:$port (pid $(cat "$STATE_DIR/$port.pid"))"
  done
}

down() {
  for port in $PORTS; do
    pidfile=$STATE_DIR/$port.pid
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "replica on :$port stopped"
    fi
    rm -f "$pidfile"
  done
}

status() {
  for port in $PORTS; do
    if ready "$port"; then echo ":$port ready"; else echo ":$port not ready"; fi
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
