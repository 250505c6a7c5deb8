# Sourced by tests/run.sh: makes sure a Postgres server answers and exports
# TEST_DATABASE_URL (a superuser URL on its `postgres` database).
#   1. TEST_DATABASE_URL already set: use it.
#   2. The machine's server on 127.0.0.1:5432 (started with pg_ctlcluster if it is down).
#   3. Otherwise a private cluster under /tmp, created with initdb (as `postgres` when root).

pg_bin_dir() {
  local d
  for d in $(command -v pg_ctl 2>/dev/null | xargs -r dirname) $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && { echo "$d"; return 0; }
  done
  return 1
}

answers() { pg_isready -q -h "$1" -p "$2" 2>/dev/null; }

if [[ -z ${TEST_DATABASE_URL:-} ]]; then
  if ! answers 127.0.0.1 5432 && command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
    done
    for _ in $(seq 1 50); do answers 127.0.0.1 5432 && break; sleep 0.2; done
  fi
  if answers 127.0.0.1 5432 && psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
  else
    bin=$(pg_bin_dir) || { echo "no Postgres server answers and no initdb/pg_ctl found: install PostgreSQL" >&2; exit 1; }
    dir=/tmp/aex-test-pg
    port=55432
    as=()
    if [[ $(id -u) -eq 0 ]]; then as=(runuser -u postgres --); fi
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      mkdir -p "$dir" && { [[ ${#as[@]} -eq 0 ]] || chown postgres "$dir"; }
      "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
    fi
    if ! answers 127.0.0.1 "$port"; then
      "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
    fi
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres
  fi
fi
echo "tests use Postgres at ${TEST_DATABASE_URL}"
