"""Where a governed call's time goes on the money path, between two scrapes of one replica's
/metrics: per queue (admission, settlement), the calls and batches written in between, the mean
calls per batch, the mean time a batch took and the mean time a call waited for its answer (the
batch in flight before it included). At a steady rate the writer is busy nearly all the time and
a call waits about one and a half batches: the two waits together are most of what AEX adds to
a call's latency under load.

    python3 bench/money_path.py BEFORE.prom AFTER.prom
"""

import re
import sys

SAMPLE = re.compile(r'^(aex_money_(?:wait|batch)_seconds)_(sum|count)\{queue="(\w+)"\} (\S+)$')


def read(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = SAMPLE.match(line.strip())
            if m:
                name, part, queue, value = m.groups()
                values[(name, part, queue)] = float(value)
    return values


def main(before_path, after_path):
    before, after = read(before_path), read(after_path)

    def delta(name, part, queue):
        return after.get((name, part, queue), 0.0) - before.get((name, part, queue), 0.0)

    parts = []
    for queue in ("admission", "settlement"):
        calls = delta("aex_money_wait_seconds", "count", queue)
        batches = delta("aex_money_batch_seconds", "count", queue)
        if calls <= 0 or batches <= 0:
            continue
        wait = delta("aex_money_wait_seconds", "sum", queue) / calls * 1000
        batch = delta("aex_money_batch_seconds", "sum", queue) / batches * 1000
        parts.append(f"{queue} {calls / batches:4.1f}/batch, batch {batch:5.2f} ms, wait {wait:5.2f} ms")
    print("  money path: " + ("; ".join(parts) if parts else "no money batches"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
