"""A client generated from the committed openapi/openapi.json (openapi-python-client) drives the
admin API: it creates a tenant, an agent and a token, and the official openai SDK spends with
that token. The committed document is also valid OpenAPI (openapi-spec-validator)."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from openapi_spec_validator import validate

from aex_harness import ROOT

SPEC = ROOT / "openapi" / "openapi.json"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def test_the_committed_document_is_valid_openapi():
    validate(json.loads(SPEC.read_text()))


@pytest.fixture(scope="module")
def client_pkg(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated") / "aex_admin_client"
    gen = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(SPEC), "--output-path", str(out), "--meta", "none"],
        capture_output=True, text=True,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    # Every operation is generated: the generator names what it had to skip.
    assert "will not be generated" not in gen.stdout + gen.stderr, gen.stdout
    assert "Cannot parse" not in gen.stdout + gen.stderr, gen.stdout
    sys.path.insert(0, str(out.parent))
    try:
        yield importlib.import_module("aex_admin_client")
    finally:
        sys.path.remove(str(out.parent))


def test_a_generated_client_sets_up_a_tenant_whose_token_the_openai_sdk_spends_with(aex, client_pkg):
    from aex_admin_client import AuthenticatedClient
    from aex_admin_client.api.agents import create_agent, get_agent
    from aex_admin_client.api.ledger import list_ledger_events
    from aex_admin_client.api.tenants import create_tenant, get_tenant
    from aex_admin_client.api.tokens import issue_token, list_tokens
    from aex_admin_client.models import (
        AdminErrorBody,
        CreateAgentRequest,
        CreateTenantRequest,
        IssueTokenRequest,
        Scope,
    )

    op = AuthenticatedClient(base_url=aex.base, token=aex.operator_token, raise_on_unexpected_status=True)
    tenant = create_tenant.sync(client=op, body=CreateTenantRequest(name="generated-team", budget_usd="3.00"))
    assert tenant.name == "generated-team" and tenant.budget_micro_usd == 3_000_000

    created = create_agent.sync(
        client=op,
        body=CreateAgentRequest(name="generated-agent", budget_usd="1.00", rpm=100),
        tenant_id=tenant.id,
    )
    assert created.agent.tenant_id == tenant.id

    issued = issue_token.sync(
        client=op,
        body=IssueTokenRequest(scope=Scope.EXECUTION, agent="generated-agent", ttl_hours=1),
        tenant_id=tenant.id,
    )
    assert issued.token and issued.agent_id == created.agent.id
    listed = list_tokens.sync(client=op, tenant_id=tenant.id, agent="generated-agent")
    assert {t.id for t in listed} == {created.token_id, issued.token_id}

    sdk = openai.OpenAI(base_url=aex.base + "/v1", api_key=issued.token, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from a generated client"}]
    )
    assert raw.parse().choices[0].message.content
    cost = int(raw.headers["x-aex-cost-micro-usd"])

    agent = get_agent.sync(client=op, agent="generated-agent", tenant_id=tenant.id)
    assert agent.spent_micro_usd == cost and agent.reserved_micro_usd == 0
    books = get_tenant.sync(client=op, tenant="generated-team")
    assert books.spent_micro_usd == cost, "the tenant budget was drawn from too"
    commits = list_ledger_events.sync(client=op, tenant_id=tenant.id, event_type="usage.commit")
    assert [e.payload["actual_micro_usd"] for e in commits] == [cost]

    # Errors come back as the documented admin shape.
    again = create_tenant.sync_detailed(client=op, body=CreateTenantRequest(name="generated-team"))
    assert again.status_code == 409
    assert isinstance(again.parsed, AdminErrorBody) and again.parsed.error.code == "conflict"


def test_a_generated_client_reads_and_acknowledges_alerts(aex, client_pkg):
    from aex_admin_client import AuthenticatedClient
    from aex_admin_client.api.agents import create_agent, set_agent_state
    from aex_admin_client.api.alerts import ack_alert, list_alerts
    from aex_admin_client.api.ledger import list_ledger_events
    from aex_admin_client.api.tenants import create_tenant
    from aex_admin_client.models import AgentState, CreateAgentRequest, CreateTenantRequest, SetStateRequest

    op = AuthenticatedClient(base_url=aex.base, token=aex.operator_token, raise_on_unexpected_status=True)
    tenant = create_tenant.sync(client=op, body=CreateTenantRequest(name="alerted-team"))
    created = create_agent.sync(
        client=op, body=CreateAgentRequest(name="quarantined-agent", budget_usd="1.00", rpm=10), tenant_id=tenant.id
    )
    set_agent_state.sync(
        client=op, agent=str(created.agent.id), body=SetStateRequest(state=AgentState.QUARANTINED), tenant_id=tenant.id
    )

    page = list_alerts.sync(client=op, tenant_id=tenant.id, status="open")
    assert page.summary.total == 1 and page.summary.open_ == 1 and page.summary.critical == 1
    alert = page.alerts[0]
    assert alert.kind == "lifecycle" and alert.severity == "critical"
    assert alert.agent_id == created.agent.id and alert.details["to"] == "QUARANTINED"
    assert page.next_before is None

    acked = ack_alert.sync(client=op, id=alert.id, tenant_id=tenant.id)
    assert acked.acked_at is not None
    assert list_alerts.sync(client=op, tenant_id=tenant.id, status="open").summary.open_ == 0
    events = list_ledger_events.sync(client=op, tenant_id=tenant.id, event_type="alert.acknowledged")
    assert [e.payload["alert_id"] for e in events] == [alert.id]
