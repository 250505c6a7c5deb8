#!/usr/bin/env bash
# The test command (README): Rust unit and integration tests against a real Postgres, the
# official OpenAI SDK end-to-end tests, and the deployment checks. Installs what it needs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source tests/ensure-postgres.sh

cargo build --bins
cargo test --all-targets

# The official `openai` Python SDK against the built binary; a client generated from
# openapi/openapi.json (openapi-python-client) driving the admin API; the document checked by
# openapi-spec-validator; schemathesis fuzzing the admin API for 5xx.
venv=${AEX_TEST_VENV:-/tmp/aex-test-venv}
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$venv/bin/pytest" -q tests/python

# The official `openai` npm SDK (v6) against the built binary.
(cd tests/node && npm ci --silent --no-audit --no-fund && node --test)

bash deploy/check.sh
