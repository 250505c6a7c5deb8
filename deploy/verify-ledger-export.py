#!/usr/bin/env python3
"""Re-verifies an AEX ledger export (`aex ledger export`) without AEX: recomputes every event's
SHA-256 from the canonical encoding v1, checks each chain's links and sequence, and checks that
no chain ends below the head the export's checkpoint recorded (and, with AEX_CHECKPOINT_KEY set to
the server key, the checkpoint's HMAC signature).

    python3 deploy/verify-ledger-export.py ledger.jsonl

Exit status 0 when everything verifies; 1 naming the first bad event otherwise."""

import hashlib
import hmac
import json
import os
import sys

GENESIS = "0" * 64


def encode(e: dict) -> bytes:
    """Canonical encoding v1 (src/ledger/encoding.rs): length-prefixed fields."""
    fields = [e["chain_id"], str(e["seq"]), e["prev_hash"], e["event_type"], e["tenant_id"] or "",
              e["agent_id"] or "", e["execution_id"] or "", e["ts"], e["payload"]]
    out = b"aex-ledger-v1\n"
    for f in fields:
        b = f.encode("utf-8")
        out += str(len(b)).encode() + b":" + b + b"\n"
    return out


def event_hash(e: dict) -> str:
    return hashlib.sha256(encode(e)).hexdigest()


def verify(lines) -> tuple:
    """Returns (ok, message)."""
    header = json.loads(next(lines))
    if header.get("format") != "aex-ledger-export-v1":
        return False, "not an AEX ledger export"
    cp = header.get("checkpoint")
    heads = json.loads(cp["heads"]) if cp else {}
    if cp and os.environ.get("AEX_CHECKPOINT_KEY"):
        mac = hmac.new(os.environ["AEX_CHECKPOINT_KEY"].encode(), b"aex-checkpoint-v1\n" + cp["heads"].encode(), hashlib.sha256)
        if not hmac.compare_digest(mac.hexdigest(), cp["signature"]):
            return False, f"checkpoint {cp['id']} has an invalid signature"
    chain, last_seq, last_hash, last_id, events, seen = None, 0, GENESIS, 0, 0, set()

    def tail_ok():
        head = heads.get(chain)
        if chain is not None and head and last_seq < head["seq"]:
            return f"chain {chain} ends at seq {last_seq} (event {last_id}) but the checkpoint recorded seq {head['seq']}"
        return None

    for raw in lines:
        e = json.loads(raw)
        if e["chain_id"] != chain:
            problem = tail_ok()
            if problem:
                return False, problem
            chain, last_seq, last_hash = e["chain_id"], 0, GENESIS
            seen.add(chain)
        events += 1
        where = f"event {e['id']} ({e['chain_id']} seq {e['seq']})"
        if e["seq"] != last_seq + 1:
            return False, f"{where}: sequence gap after seq {last_seq}"
        if e["prev_hash"] != last_hash:
            return False, f"{where}: prev_hash does not link to the previous event"
        if event_hash(e) != e["event_hash"]:
            return False, f"{where}: hash mismatch (edited)"
        head = heads.get(chain)
        if head and head["seq"] == e["seq"] and head["hash"] != e["event_hash"]:
            return False, f"{where}: differs from the checkpoint"
        last_seq, last_hash, last_id = e["seq"], e["event_hash"], e["id"]
    problem = tail_ok()
    if problem:
        return False, problem
    missing = sorted(set(heads) - seen)
    if missing:
        return False, f"chain {missing[0]} is missing (the checkpoint recorded it)"
    return True, f"ledger export OK: {events} events in {len(seen)} chains verified"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        ok, message = verify(iter(f))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
