#!/usr/bin/env bash
# The cost of a tenant's `spent` (the sum over its agents' lifetime counters, store/tenants.rs
# `tenant_columns!` and the `aex_alert_tenant_budget` trigger) with AGENTS agents under one
# budgeted tenant (default 1000, gateway.max_agents_per_tenant's default) and OTHERS agents of
# other tenants around it, in a scratch database on $DATABASE_URL's server. Not a benchmark: one
# EXPLAIN ANALYZE of each statement, warm, the best of RUNS.
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bench/tenant_sum.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
AGENTS=${AGENTS:-1000} OTHERS=${OTHERS:-20000} RUNS=${RUNS:-20}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
server=${DATABASE_URL%/*}
db=aex_tenant_sum_$$
AEX=${AEX:-$here/target/debug/aex}
trap 'psql "$DATABASE_URL" -qXc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
psql "$DATABASE_URL" -qXc "CREATE DATABASE $db" >/dev/null
AEX_DATABASE_URL=$server/$db AEX_MIGRATION_DATABASE_URL=$server/$db "$AEX" migrate >/dev/null
psql "$server/$db" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO tenants (id, name, budget_micro_usd)
  SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'tenant-' || i, 1000000000
  FROM generate_series(2, 21) AS i;
-- The measured tenant's agents, created one after another among the other tenants' (as they
-- would be over time), so that its rows are spread over the table's pages.
INSERT INTO agents (id, tenant_id, name, budget_micro_usd, lifetime_spent_micro_usd)
  SELECT gen_random_uuid(),
         CASE WHEN i % ((${AGENTS} + ${OTHERS}) / ${AGENTS}) = 0 AND i / ((${AGENTS} + ${OTHERS}) / ${AGENTS}) < ${AGENTS}
              THEN '00000000-0000-0000-0000-000000000002'::uuid
              ELSE ('00000000-0000-0000-0000-' || lpad((3 + i % 19)::text, 12, '0'))::uuid END,
         'agent-' || i, 1000000, i
  FROM generate_series(0, ${AGENTS} + ${OTHERS} - 1) AS i;
VACUUM ANALYZE agents;
SQL
measure() {
  local best=""
  for _ in $(seq "$RUNS"); do
    t=$(psql "$server/$db" -AtX -c "EXPLAIN (ANALYZE, FORMAT JSON) $1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"])')
    best=$(python3 -c "print(min(float('$t'), float('${best:-inf}')))")
  done
  echo "$best"
}
n=$(psql "$server/$db" -AtXc "SELECT count(*) FROM agents WHERE tenant_id = '00000000-0000-0000-0000-000000000002'")
echo "agents of the tenant: $n, of other tenants: $(( $(psql "$server/$db" -AtXc 'SELECT count(*) FROM agents') - n ))"
echo "tenant_columns! spent subquery (admission of a budgeted tenant, admin reads), ms:" \
  "$(measure "SELECT (SELECT LEAST(COALESCE(sum(a.lifetime_spent_micro_usd), 0), 9223372036854775807) \
     FROM agents a WHERE a.tenant_id = tenants.id)::bigint FROM tenants \
     WHERE id = '00000000-0000-0000-0000-000000000002'")"
echo "aex_alert_tenant_budget sum (every spending settlement), ms:" \
  "$(measure "SELECT COALESCE(sum(lifetime_spent_micro_usd), 0) FROM agents \
     WHERE tenant_id = '00000000-0000-0000-0000-000000000002'")"
echo "plan:"
psql "$server/$db" -AtX -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT COALESCE(sum(lifetime_spent_micro_usd), 0) \
  FROM agents WHERE tenant_id = '00000000-0000-0000-0000-000000000002'"
