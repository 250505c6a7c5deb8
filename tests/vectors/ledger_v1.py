"""Writes the golden vectors in ledger_v1.json with the independent implementation of the
ledger's canonical encoding v1 (deploy/verify-ledger-export.py). Run: python3 tests/vectors/ledger_v1.py"""

import importlib
import json
import sys
from pathlib import Path

# The independent implementation of the encoding lives with the export verifier.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
verifier = importlib.import_module("verify-ledger-export")
GENESIS, event_hash = verifier.GENESIS, verifier.event_hash


def vectors() -> list:
    agent = "0192f0a4-6c1e-7c3a-9b1d-2f4e5a6b7c8d"
    tenant = "00000000-0000-0000-0000-000000000001"
    events = [
        {"chain_id": f"agent:{agent}", "seq": 1, "prev_hash": GENESIS, "event_type": "agent.created",
         "tenant_id": tenant, "agent_id": agent, "execution_id": None, "ts": "2026-11-27T17:05:21.000000Z",
         "payload": '{"budget_micro_usd":5000000,"by":"operator","name":"my-agent"}'},
        {"chain_id": f"agent:{agent}", "seq": 2, "prev_hash": None, "event_type": "reservation.reserved",
         "tenant_id": tenant, "agent_id": agent, "execution_id": "order-42", "ts": "2026-11-27T17:05:22.123456Z",
         "payload": '{"attempt":1,"estimate_micro_usd":600}'},
        {"chain_id": f"agent:{agent}", "seq": 3, "prev_hash": None, "event_type": "usage.commit",
         "tenant_id": tenant, "agent_id": agent, "execution_id": "ünïcode key\nwith newline", "ts": "2026-11-27T17:05:23.000001Z",
         "payload": '{"actual_micro_usd":17,"note":"é✓"}'},
        {"chain_id": "system", "seq": 1, "prev_hash": GENESIS, "event_type": "token.issued",
         "tenant_id": None, "agent_id": None, "execution_id": None, "ts": "2026-01-01T00:00:00.000000Z",
         "payload": "{}"},
    ]
    prev = None
    for e in events:
        if e["prev_hash"] is None:
            e["prev_hash"] = prev
        e["event_hash"] = event_hash(e)
        prev = e["event_hash"]
    return events


if __name__ == "__main__":
    path = Path(__file__).with_name("ledger_v1.json")
    path.write_text(json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
