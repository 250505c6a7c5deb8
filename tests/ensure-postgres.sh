# Sourced by tests/run.sh: makes sure a Postgres server answers and exports TEST_DATABASE_URL
# (a superuser URL on its `postgres` database).
#   1. TEST_DATABASE_URL already set: use it.
#   2. Otherwise a private cluster under /tmp, created with initdb (as `postgres` when root) with
#      room for the connections the suite opens (several servers per test, run in parallel); it is
#      stopped and removed when the test command exits.
#   3. If no initdb is found: the machine's server on 127.0.0.1:5432 (started if it is down).

pg_bin_dir() {
  local d
  for d in $(command -v pg_ctl 2>/dev/null | xargs -r dirname) $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && { echo "$d"; return 0; }
  done
  return 1
}

answers() { pg_isready -q -h "$1" -p "$2" 2>/dev/null; }

private_cluster() {
  local bin=$1 as=()
  TEST_PG_DIR=$(mktemp -d /tmp/aex-test-pg.XXXXXX)
  TEST_PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [[ $(id -u) -eq 0 ]]; then
    as=(runuser -u postgres --)
    chown postgres "$TEST_PG_DIR"
  fi
  "${as[@]}" "$bin/initdb" -D "$TEST_PG_DIR/data" -U postgres -A trust >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$TEST_PG_DIR/data" -l "$TEST_PG_DIR/log" -w \
    -o "-p $TEST_PG_PORT -k $TEST_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" \
    start >/dev/null
  TEST_PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$TEST_PG_DIR/data" -m immediate -w stop)
  trap 'stop_private_cluster' EXIT
  export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$TEST_PG_PORT/postgres
}

stop_private_cluster() {
  "${TEST_PG_STOP[@]}" >/dev/null 2>&1 || true
  rm -rf "$TEST_PG_DIR"
}

if [[ -z ${TEST_DATABASE_URL:-} ]]; then
  if bin=$(pg_bin_dir); then
    private_cluster "$bin"
  else
    if ! answers 127.0.0.1 5432 && command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
      for v in $(ls /etc/postgresql); do
        pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
      done
      for _ in $(seq 1 50); do answers 127.0.0.1 5432 && break; sleep 0.2; done
    fi
    answers 127.0.0.1 5432 || { echo "no Postgres server answers and no initdb/pg_ctl found: install PostgreSQL" >&2; exit 1; }
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
  fi
fi
echo "tests use Postgres at ${TEST_DATABASE_URL}"
