"""Alert delivery latency and what a receiver that is down does to governed calls (issue 19).

Three replicas on one database (tests/python/aex_harness.py: the built binary, `AEX_BIN` to use
another, e.g. a release build), agents that cross their budget thresholds on every call, and a
receiver that verifies every delivery with the `standardwebhooks` package. Four phases with the
same workload (after a warm-up run that is not measured) — AGENTS agents × 2 calls of 10 micro-USD against a 20 micro-USD budget, CONCURRENCY
at a time, round-robin over the replicas; each agent raises 3 alerts (50% on its first call, 80%
and 100% on its second):

  none      no webhook at all (the baseline)
  up        a receiver that answers 204: delivery latency = arrival - the alert's created_at (the
            insert, inside the fact's transaction, so it includes the rest of that transaction
            and its commit)
  refused   the receiver's port refuses connections
  hanging   the receiver accepts and never answers (each attempt waits out
            alerts.delivery_timeout_seconds)

Run (with the venv of tests/run.sh):
    /tmp/aex-test-venv/bin/python bench/alerts.py [AGENTS] [CONCURRENCY]
"""

import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

import openai  # noqa: E402

from aex_harness import AexInstance, free_port  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402

AGENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 4

FLAT_MODEL = """
[models."flat"]
provider = "mock"
upstream_model = "mock-flat"
input_usd_per_million = "0"
output_usd_per_million = "1"
max_output_tokens = 100
capabilities = ["chat"]
"""


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(x):
    return f"{x * 1000:.1f}"


class Hanging:
    """Accepts connections and never answers."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()


def run_phase(instance, bases, phase):
    tokens = [instance.create_agent(f"{phase}-{i}", "0.00002") for i in range(AGENTS)]
    clients = [[openai.OpenAI(base_url=b + "/v1", api_key=t, max_retries=0) for b in bases] for t in tokens]

    def call(job):
        agent, n = job
        client = clients[agent][(agent + n) % len(bases)]
        started = time.perf_counter()
        client.chat.completions.create(model="flat", max_tokens=10, messages=[{"role": "user", "content": "tick"}])
        return time.perf_counter() - started

    # Each agent's two calls are in order (the second crosses 80 and 100%).
    latencies = []
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for n in range(2):
            latencies += list(pool.map(call, [(a, n) for a in range(AGENTS)]))
    return latencies


def main():
    port = free_port()
    instance = AexInstance(
        extra_env={
            "AEX_TOOLS__ALLOWED_HTTP_HOSTS": f'["127.0.0.1:{port}"]',
            "AEX_ALERTS__DELIVERY_TIMEOUT_SECONDS": "5",
        },
        extra_models=FLAT_MODEL,
    )
    try:
        instance.start()
        bases = [instance.base, instance.spawn_replica(), instance.spawn_replica()]
        print(f"{AGENTS} agents x 2 calls per phase, {CONCURRENCY} at a time, 3 replicas, binary {instance_bin()}")
        print(f"{'phase':<9} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   alerts delivered")

        run_phase(instance, bases, "warmup")  # first calls on each replica: not measured
        calls = run_phase(instance, bases, "none")
        report("none", calls, "no webhook")

        receiver = Receiver(port)
        hook = instance.admin("POST", "/admin/webhooks", {"url": receiver.url})
        receiver.secret = hook["secret"]
        receiver.start()
        calls = run_phase(instance, bases, "up")
        got = receiver.wait_for(3 * AGENTS, timeout=120)
        delays = [arrived - datetime.fromisoformat(body["data"]["created_at"].replace("Z", "+00:00")).timestamp()
                  for _, body, arrived in got]
        report("up", calls, f"{len(got)}, latency p50 {ms(statistics.median(delays))} ms, "
                            f"p99 {ms(pct(delays, 99))} ms, max {ms(max(delays))} ms; rejected {receiver.rejected}")
        receiver.stop()

        calls = run_phase(instance, bases, "refused")
        report("refused", calls, "0 (port closed)")

        hanging = Hanging(port)
        calls = run_phase(instance, bases, "hanging")
        report("hanging", calls, "0 (receiver never answers)")
        hanging.stop()
    finally:
        instance.stop()


def report(phase, calls, note):
    print(f"{phase:<9} {len(calls):>6} {ms(statistics.median(calls)):>8} {ms(pct(calls, 99)):>8} "
          f"{ms(max(calls)):>8}   {note}", flush=True)


def instance_bin():
    import aex_harness
    return aex_harness.AEX


if __name__ == "__main__":
    main()
