"""The official `anthropic` Python SDK, unchanged, against a running AEX: `/v1/messages` natively
to an Anthropic provider (the mock speaks Messages) and translated to an OpenAI-compatible one;
create, stream, a tool-use round trip, count_tokens, and AEX's refusals raised as the SDK's own
exception classes. The books are checked after each call, and `aex ledger verify` and `aex audit`
pass at the end."""

import anthropic
import pytest


def client(aex, token: str, **kw) -> anthropic.Anthropic:
    # As Claude Code and the SDKs do: the base URL without /v1, the token as x-api-key.
    return anthropic.Anthropic(base_url=aex.base, api_key=token, max_retries=0, **kw)


def claude_cost(usage) -> int:
    """claude-sonnet-4-5 at 3 / 15 USD per million: exact micro-USD per token. Cache reads and
    writes are billed as input (no cached prices in this routing table)."""
    cached = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    return (usage.input_tokens + cached) * 3 + usage.output_tokens * 15


def mini_cost(prompt: int, completion: int) -> int:
    return -(-prompt * 150_000 // 1_000_000) - (-completion * 600_000 // 1_000_000)


def books(aex, name: str) -> tuple:
    agent = aex.admin_get(f"/admin/agents/{name}")
    return agent["spent_micro_usd"], agent["reserved_micro_usd"]


def test_create_is_governed_and_booked_to_the_micro_dollar(aex):
    c = client(aex, aex.create_agent("claude-sdk", "5.00"))
    raw = c.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello from the anthropic SDK"}],
    )
    message = raw.parse()
    assert message.type == "message"
    assert message.model == "claude-sonnet-4-5"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Hello")
    expected = claude_cost(message.usage)
    assert int(raw.headers["x-aex-cost-micro-usd"]) == expected
    assert books(aex, "claude-sdk") == (expected, 0)


def test_a_stream_ends_after_its_settlement_with_the_cost_on_message_stop(aex):
    c = client(aex, aex.create_agent("claude-streamer", "5.00"))
    with c.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=40,
        messages=[{"role": "user", "content": "stream please"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-sonnet-4-5"
    assert final.usage.output_tokens == 20
    text = "".join(b.text for b in final.content if b.type == "text")
    assert text.startswith(" w")
    # Read-your-writes: the books already hold the call when the last event arrives.
    expected = claude_cost(final.usage)
    assert books(aex, "claude-streamer") == (expected, 0)

    # The raw events: `message_stop` says what was charged.
    events = list(c.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=40,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
    ))
    assert [e.type for e in events][-2:] == ["message_delta", "message_stop"]
    charged = events[-1].model_extra["aex"]
    spent, reserved = books(aex, "claude-streamer")
    assert (spent, reserved) == (2 * expected, 0)
    assert charged["cost_micro_usd"] == expected
    assert charged["budget_remaining_micro_usd"] == 5_000_000 - spent


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o-mini"])
def test_a_tool_use_round_trip(aex, model):
    name = f"tooler-{model}"
    c = client(aex, aex.create_agent(name, "5.00"))
    tools = [{
        "name": "get_weather",
        "description": "The weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = c.messages.create(model=model, max_tokens=100, tools=tools, messages=[question])
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    second = c.messages.create(
        model=model,
        max_tokens=100,
        tools=tools,
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    if model == "claude-sonnet-4-5":
        expected = claude_cost(first.usage) + claude_cost(second.usage)
    else:
        expected = sum(mini_cost(m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0), m.usage.output_tokens)
                       for m in (first, second))
    assert books(aex, name) == (expected, 0)


def test_a_translated_stream_speaks_anthropic_events(aex):
    c = client(aex, aex.create_agent("translated-streamer", "5.00"))
    with c.messages.stream(
        model="gpt-4o-mini",
        max_tokens=30,
        messages=[{"role": "user", "content": "stream through a chat model"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "gpt-4o-mini"
    assert final.stop_reason == "end_turn"
    assert final.content[0].text.startswith(" w")
    expected = mini_cost(final.usage.input_tokens, final.usage.output_tokens)
    assert books(aex, "translated-streamer") == (expected, 0)


def test_count_tokens_bounds_the_input_and_charges_nothing(aex):
    c = client(aex, aex.create_agent("claude-counter", "5.00"))
    counted = c.messages.count_tokens(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "How many tokens is this?"}],
    )
    assert counted.input_tokens > 0
    assert books(aex, "claude-counter") == (0, 0)


def test_refusals_are_the_sdks_exception_classes_and_change_nothing(aex):
    token = aex.create_agent("claude-poor", "0.001")
    c = client(aex, token)
    hello = [{"role": "user", "content": "hi"}]
    # 402: the hold of 20,000 output tokens at $15/M (0.30 USD) does not fit 0.001 USD.
    with pytest.raises(anthropic.APIStatusError) as budget:
        c.messages.create(model="claude-sonnet-4-5", max_tokens=20000, messages=hello)
    assert budget.value.status_code == 402
    assert budget.value.body["error"]["type"] == "billing_error"
    # 401: a token AEX did not issue, as x-api-key or as a Bearer token.
    with pytest.raises(anthropic.AuthenticationError):
        client(aex, "not-a-token").messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=hello)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=aex.base, auth_token="not-a-token", max_retries=0).messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=hello)
    # The agent token as a Bearer token (ANTHROPIC_AUTH_TOKEN) is accepted like x-api-key.
    ok = anthropic.Anthropic(base_url=aex.base, auth_token=token, max_retries=0).messages.count_tokens(
        model="claude-sonnet-4-5", messages=hello)
    assert ok.input_tokens > 0
    # 400: a request the hold cannot bound (thinking above the cap).
    with pytest.raises(anthropic.BadRequestError) as bad:
        c.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=hello,
                          thinking={"type": "enabled", "budget_tokens": 1024})
    assert "budget_tokens" in bad.value.message
    # 404: an alias that does not exist.
    with pytest.raises(anthropic.NotFoundError):
        c.messages.create(model="claude-nope", max_tokens=5, messages=hello)
    assert books(aex, "claude-poor") == (0, 0)


def test_the_ledger_verifies_and_the_books_audit_after_these_calls(aex):
    aex.cli("ledger", "verify")
    aex.cli("audit")
