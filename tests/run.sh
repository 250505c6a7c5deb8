#!/usr/bin/env bash
# The test command (README): Rust unit and integration tests against a real Postgres (including
# `promtool check metrics` on a busy server), the official OpenAI SDK end-to-end tests, the
# dashboard in headless Chromium, and the deployment checks. Installs what it needs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source tests/ensure-postgres.sh

# Debian packages the tests drive: promtool (package prometheus) checks /metrics, chromium runs
# the dashboard, node and npm run the browser test, java runs openapi-generator-cli, bubblewrap
# sandboxes process plugins (the security tests need it: isolation is required by default).
missing=()
[[ -x /usr/bin/bwrap ]] || missing+=(bubblewrap)
command -v promtool >/dev/null || missing+=(prometheus)
command -v java >/dev/null || missing+=(default-jre-headless)
[[ -x ${TEST_CHROMIUM:-/usr/bin/chromium} ]] || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "installing with apt-get: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq || true
  for pkg in "${missing[@]}"; do
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null ||
      echo "apt-get could not install $pkg"
  done
fi
# The metrics test must not skip its promtool check here.
export TEST_REQUIRE_PROMTOOL=1

cargo build --bins
cargo test --all-targets

# The official `openai` Python SDK against the built binary; a client generated from
# openapi/openapi.json (openapi-python-client) driving the admin API; the document checked by
# openapi-spec-validator; schemathesis fuzzing the admin API for 5xx.
venv=${TEST_VENV:-/tmp/aex-test-venv}
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# A second, stricter reading of the document: OpenAPI Generator's validator (the jar ships inside
# the PyPI wheel, so nothing is fetched at run time; it needs java). Exits non-zero on any error,
# which fails this script.
"$venv/bin/openapi-generator-cli" validate -i openapi/openapi.json
"$venv/bin/pytest" -q tests/python

# The official `openai` npm SDK (v6) against the built binary.
(cd tests/node && npm ci --silent --no-audit --no-fund && node --test)

# The dashboard in headless Chromium: Debian's chromium driven by playwright-core (npm), against
# the built binary; screenshots land in tests/output/.
if [[ -x ${TEST_CHROMIUM:-/usr/bin/chromium} ]] && command -v npm >/dev/null; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  node --test tests/browser/dashboard.test.mjs
else
  echo "SKIPPED the browser test (tests/browser): Chromium or npm could not be installed with apt-get"
fi

bash deploy/check.sh
