#!/usr/bin/env bash
# Validates the deployment artefacts without Docker or a Kubernetes cluster:
#   deploy/Dockerfile          hadolint; its HEALTHCHECK against local HTTP servers
#   docker-compose.yml         docker-compose config -q; AEX_* settings and the routing table
#   helm/aex                   helm lint and helm template for every helm/aex/ci/*-values.yaml;
#                              kubernetes-validate --strict of every manifest (prometheus-operator
#                              CRDs have no schema there and are skipped, their rules go through
#                              promtool); settings keys; pod hardening; bad values refused
#   deploy/check.sh            shellcheck
# Tools: a venv at ${AEX_CHECK_VENV:-/tmp/aex-deploy-venv} (pip, deploy/check/requirements.txt)
# and Debian's docker-compose and prometheus (promtool), installed with apt-get when missing.
# Safe to run again; exits non-zero when any check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${AEX_CHECK_VENV:-/tmp/aex-deploy-venv}
CHART=helm/aex
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
K8S_VERSIONS=(1.29.0 1.37.0)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

install_tools() {
  local missing=() sudo=()
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v promtool >/dev/null || missing+=(prometheus)
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    echo "installing with apt-get: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [[ ! -x $VENV/bin/python ]]; then
    echo "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r deploy/check/requirements.txt
}

PY=$VENV/bin/python
passed=0
failed=0

# check NAME COMMAND...: runs COMMAND with errexit in a subshell; shows its output only on failure.
check() {
  local name=$1 rc
  shift
  set +e
  (set -e; "$@") >"$WORK/out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1))
    echo "ok    $name"
    grep '^skipped' "$WORK/out" | sed 's/^/      /' || true
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    sed 's/^/      /' "$WORK/out"
  fi
}

# expect_refused PATTERN VALUES_YAML: rendering with these values over ci/default-values.yaml
# must fail with an error matching PATTERN.
expect_refused() {
  local values=$WORK/bad-values.yaml
  printf '%s\n' "$2" >"$values"
  if "$PY" deploy/check/helmpy.py template aex "$CHART" \
    -f "$CHART/ci/default-values.yaml" -f "$values" >/dev/null 2>"$WORK/err"; then
    echo "rendered although it should not have: $2"
    return 1
  fi
  grep -q -- "$1" "$WORK/err" || { cat "$WORK/err"; echo "expected an error matching: $1"; return 1; }
}

render() {
  "$PY" deploy/check/helmpy.py template aex "$CHART" -f "$1" --namespace aex >"$2"
}

compose_settings() {
  docker-compose -f docker-compose.yml config >"$WORK/compose.yaml"
  "$PY" deploy/check/config_keys.py compose "$WORK/compose.yaml"
}

validate_manifests() {
  local rendered=$1 dir=$2 api kind name file files=()
  while read -r api kind name file; do
    if [[ $api == monitoring.coreos.com/* ]]; then
      echo "skipped $kind/$name: a prometheus-operator CRD, no schema in kubernetes-validate"
    else
      files+=("$file")
    fi
  done < <("$PY" deploy/check/helmpy.py split "$rendered" "$dir")
  local args=()
  for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
  "$VENV/bin/kubernetes-validate" --strict --quiet "${args[@]}" "${files[@]}" | tee "$WORK/kv"
  # kubernetes-validate only warns when it has no schema for a kind: treat that as a failure.
  if grep -q '^WARN' "$WORK/kv"; then return 1; fi
  echo "${#files[@]} manifests valid for Kubernetes ${K8S_VERSIONS[*]}"
}

prometheus_rules() {
  local rendered=$1 dir=$2
  mkdir -p "$dir"
  "$PY" - "$rendered" "$dir/rules.yaml" <<'PYEOF'
import sys, yaml
rules = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
assert len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"
with open(sys.argv[2], "w") as out:
    yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, out, sort_keys=False)
PYEOF
  promtool check rules "$dir/rules.yaml"
}

alert_tests() {
  cp deploy/check/alerts-test.yaml "$1/"
  promtool test rules "$1/alerts-test.yaml"
}

install_tools

echo "== tools"
check "shellcheck deploy/check.sh" "$VENV/bin/shellcheck" deploy/check.sh
check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" deploy/Dockerfile
check "Dockerfile HEALTHCHECK: 200 healthy, 503 and closed port unhealthy" \
  "$PY" deploy/check/healthcheck.py deploy/Dockerfile

echo "== docker-compose.yml"
check "docker-compose config -q" docker-compose -f docker-compose.yml config -q
check "compose: AEX_* settings, signing key length, routing table and its provider keys" \
  compose_settings

for values in "$CHART"/ci/*-values.yaml; do
  set_name=$(basename "$values" .yaml)
  rendered=$WORK/$set_name.yaml
  echo "== helm $set_name"
  check "helm lint ($set_name)" \
    "$PY" deploy/check/helmpy.py lint "$CHART" -f "$values" --namespace aex --kube-version v1.29.0
  check "helm template ($set_name)" render "$values" "$rendered"
  check "kubernetes-validate --strict ($set_name)" validate_manifests "$rendered" "$WORK/$set_name"
  check "aex.toml, models.toml and AEX_* env names ($set_name)" \
    "$PY" deploy/check/config_keys.py manifests "$rendered"
  check "pod hardening, probes, grace period, migration hook ($set_name)" \
    "$PY" deploy/check/pod_policy.py "$rendered"
  if grep -q '^kind: PrometheusRule' "$rendered"; then
    check "promtool check rules ($set_name)" prometheus_rules "$rendered" "$WORK/$set_name-rules"
    if [[ $set_name == ha-values ]]; then
      check "promtool test rules deploy/check/alerts-test.yaml ($set_name)" alert_tests "$WORK/$set_name-rules"
    fi
  fi
done

echo "== helm: bad values are refused"
check "misspelt top-level key" expect_refused "additional properties 'replicas' not allowed" 'replicas: 3'
check "misspelt settings key" expect_refused "additional properties 'maxConection' not allowed" \
  $'config:\n  db:\n    maxConection: 10'
check "signing key shorter than 32 characters" expect_refused "minLength\|length must be >= 32\|at least 32" \
  $'auth:\n  keys:\n    k1: short'
check "no database URL" expect_refused "databaseUrl is required" 'databaseUrl: ""'
check "active kid names no key" expect_refused 'auth.activeKid "k9" names no key' \
  $'auth:\n  activeKid: k9'

echo "deploy: $passed passed, $failed failed"
((failed == 0))
