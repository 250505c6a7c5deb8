"""Schemathesis against the admin API of a fresh instance: a bounded number of generated cases per
operation, valid and invalid, and not one may answer 5xx."""

import subprocess
import sys
from pathlib import Path

from aex_harness import ROOT, AexInstance

SCHEMATHESIS = Path(sys.executable).parent / "st"
MAX_EXAMPLES = "25"


def test_generated_admin_requests_never_get_a_server_error():
    # An instance of its own: the fuzzer changes tenants, agents, tokens and the routing table.
    instance = AexInstance()
    try:
        aex = instance.start()
        run = subprocess.run(
            [
                str(SCHEMATHESIS), "run", str(ROOT / "openapi" / "openapi.json"),
                "--url", aex.base,
                "--header", f"Authorization: Bearer {aex.operator_token}",
                "--include-path-regex", "^/admin",
                "--checks", "not_a_server_error",
                "--max-examples", MAX_EXAMPLES,
                "--phases", "examples,coverage,fuzzing",
                "--workers", "1",
                "--request-timeout", "30",
                "--suppress-health-check", "all",
                "--seed", "20261128",
            ],
            capture_output=True, text=True, timeout=900,
        )
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
        aex.cli("ledger", "verify")
        aex.cli("audit")
    finally:
        instance.stop()
