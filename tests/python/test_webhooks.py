"""Issue 19's acceptance test: three replicas serve one agent that the official openai SDK drives
across 50, 80 and 100% of its budget; a receiver verifies every delivery with the
`standardwebhooks` package. Exactly one delivery per crossing, in order per agent; with the
receiver down for a while and then up again, every alert arrives and none twice by webhook-id."""

import itertools
from datetime import datetime
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from aex_harness import AexInstance, free_port
from webhook_receiver import Receiver

# Costs exactly its output cap: a call with max_tokens 10 holds and commits 10 micro-USD.
FLAT_MODEL = """
[models."flat"]
provider = "mock"
upstream_model = "mock-flat"
input_usd_per_million = "0"
output_usd_per_million = "1"
max_output_tokens = 100
capabilities = ["chat"]
"""

EXPECTED = {("agent_budget", 50), ("agent_budget", 80), ("agent_budget", 100), ("budget_refusal", 0)}


@pytest.fixture(scope="module")
def cluster():
    port = free_port()
    instance = AexInstance(
        extra_env={
            # The receiver is on loopback: listed, as an operator lists an internal receiver.
            "AEX_TOOLS__ALLOWED_HTTP_HOSTS": f'["127.0.0.1:{port}"]',
            "AEX_ALERTS__BACKOFF_INITIAL_MS": "200",
            "AEX_ALERTS__BACKOFF_MAX_SECONDS": "1",
            "AEX_ALERTS__POLL_INTERVAL_MS": "250",
        },
        extra_models=FLAT_MODEL,
    )
    try:
        instance.start()
        bases = [instance.base, instance.spawn_replica(), instance.spawn_replica()]
        receiver = Receiver(port)
        created = instance.admin("POST", "/admin/webhooks", {"url": receiver.url})
        receiver.secret = created["secret"]
        yield instance, bases, receiver, created["webhook"]["id"]
        receiver.stop()
    finally:
        instance.stop()


def drive_past_budget(instance, bases, name):
    """Eleven calls of 10 micro-USD against a 100 micro-USD budget, three at a time, spread over
    the replicas: the crossings race between them. The agent's id."""
    token = instance.create_agent(name, "0.0001")
    clients = itertools.cycle([openai.OpenAI(base_url=b + "/v1", api_key=token, max_retries=0) for b in bases])

    def call(client):
        try:
            client.chat.completions.create(model="flat", max_tokens=10, messages=[{"role": "user", "content": "tick"}])
            return 200
        except openai.APIStatusError as e:
            return e.status_code

    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(call, [next(clients) for _ in range(11)]))
    assert sorted(statuses) == [200] * 10 + [402], statuses
    agent = instance.agent(name)
    assert agent["spent_micro_usd"] == 100
    return agent["id"]


def wait_until(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def all_delivered(instance, webhook):
    """Once every delivery is delivered, nothing more is sent: what arrived is final."""
    deliveries = instance.admin_get(f"/admin/webhooks/{webhook}/deliveries?limit=500")
    return all(d["state"] == "delivered" for d in deliveries)


def raised(instance, agent_id):
    """The agent's alerts in the order they were raised (a refusal may come before the 100%
    crossing: the eleventh call can be refused for the tenth's hold before the tenth settles)."""
    page = instance.admin_get("/admin/alerts?limit=500")["alerts"]
    order = [(a["kind"], a["threshold"]) for a in reversed(page) if a["agent_id"] == agent_id]
    assert set(order) == EXPECTED and len(order) == 4, order
    assert [t for k, t in order if k == "agent_budget"] == [50, 80, 100]
    return order


def of_agent(deliveries, agent_id):
    return [(body["data"]["kind"], body["data"]["threshold"]) for _, body, _ in deliveries
            if body["data"]["agent_id"] == agent_id]


def test_three_replicas_deliver_one_signed_alert_per_crossing_in_order(cluster):
    instance, bases, receiver, webhook = cluster
    receiver.start()
    agent_id = drive_past_budget(instance, bases, "three-replicas")
    got = receiver.wait_for(4)
    wait_until("every delivery delivered", lambda: all_delivered(instance, webhook))
    assert receiver.rejected == 0, "every signature verifies"
    assert of_agent(receiver.got, agent_id) == raised(instance, agent_id), "once each, in order"
    assert len({wid for wid, _, _ in receiver.got}) == len(receiver.got) == 4

    listed = instance.admin_get("/admin/alerts?kind=agent_budget")
    assert listed["summary"]["total"] == 3 and listed["summary"]["critical"] == 1
    latencies = sorted(arrived - created_at(body) for _, body, arrived in got)
    print(f"\ndelivery latency (alert committed -> receiver), ms: {[round(x * 1000, 1) for x in latencies]}")


def created_at(body) -> float:
    return datetime.fromisoformat(body["data"]["created_at"].replace("Z", "+00:00")).timestamp()


def test_a_receiver_down_for_a_while_gets_every_alert_once_when_it_is_back(cluster):
    instance, bases, receiver, webhook = cluster
    before = len(receiver.got)
    receiver.stop()
    agent_id = drive_past_budget(instance, bases, "receiver-down")

    # Down for a while: the head of the agent's line is attempted, refused and retried.
    def retried():
        deliveries = instance.admin_get(f"/admin/webhooks/{webhook}/deliveries")
        return max(d["attempts"] for d in deliveries if d["state"] == "pending") >= 3 and deliveries

    deliveries = wait_until("retries while the receiver is down", retried)
    waiting = [d for d in deliveries if d["state"] == "pending"]
    assert len(waiting) == 4, deliveries
    assert all(a["status_code"] is None and a["error"] for d in waiting for a in d["attempt_log"])
    assert len(receiver.got) == before

    receiver.start()
    receiver.wait_for(before + 4)
    wait_until("every delivery delivered", lambda: all_delivered(instance, webhook))
    assert receiver.rejected == 0
    assert of_agent(receiver.got, agent_id) == raised(instance, agent_id), "every alert, in order"
    ids = [wid for wid, _, _ in receiver.got]
    assert len(ids) == len(set(ids)), "none twice by webhook-id"
    states = {d["state"] for d in instance.admin_get(f"/admin/webhooks/{webhook}/deliveries")}
    assert states == {"delivered"}
