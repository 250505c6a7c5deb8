"""The official `openai` Python SDK, unchanged, against a running AEX."""

import json

import openai
import pytest


def client(aex, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=aex.base + "/v1", api_key=token, max_retries=0)


def cost(prompt: int, completion: int) -> int:
    """gpt-4o-mini at 0.15 / 0.60 USD per million, rounded up to the micro-USD."""
    return -(-prompt * 150_000 // 1_000_000) - (-completion * 600_000 // 1_000_000)


def test_a_chat_completion_through_the_official_sdk_is_governed_and_booked(aex):
    c = client(aex, aex.create_agent("sdk-agent", "5.00"))
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello from the official SDK"}],
        seed=3,
    )
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content.startswith("Hello")
    expected = cost(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert int(raw.headers["x-aex-cost-micro-usd"]) == expected
    agent = aex.agent("sdk-agent")
    assert agent["spent_micro_usd"] == expected
    assert agent["reserved_micro_usd"] == 0
    aex.cli("ledger", "verify")
    aex.cli("audit")


def test_streaming_chunks_arrive_with_the_alias_and_the_final_usage(aex):
    c = client(aex, aex.create_agent("sdk-streamer", "5.00"))
    stream = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(ch.model == "gpt-4o-mini" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith(" w")
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 20
    # Read-your-writes: the stream's last event was sent after its settlement committed, so the
    # books read through the admin API right now (no wait, no poll) already hold this call.
    agent = aex.admin_get("/admin/agents/sdk-streamer")
    streamed_cost = cost(usage.prompt_tokens, usage.completion_tokens)
    assert agent["spent_micro_usd"] == streamed_cost
    assert agent["reserved_micro_usd"] == 0
    # The final chunk (here the usage chunk) says what was charged.
    charged = chunks[-1].model_extra["aex"]
    assert charged["cost_micro_usd"] == agent["spent_micro_usd"]
    assert charged["budget_remaining_micro_usd"] == agent["budget_micro_usd"] - agent["spent_micro_usd"]


def test_embeddings_and_responses_through_the_sdk(aex):
    c = client(aex, aex.create_agent("sdk-multi", "5.00"))
    emb = c.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert len(emb.data) == 2 and emb.model == "text-embedding-3-small"

    resp = c.responses.create(model="gpt-4o-mini", input="Say something", max_output_tokens=16)
    assert resp.model == "gpt-4o-mini"
    assert resp.output_text.startswith("Hello")
    assert resp.usage.output_tokens == 16

    events = list(c.responses.create(model="gpt-4o-mini", input="Stream something", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert events[-1].response.model == "gpt-4o-mini"
    assert aex.agent("sdk-multi")["reserved_micro_usd"] == 0


def test_a_tool_call_round_trip_and_response_format(aex):
    c = client(aex, aex.create_agent("sdk-tools", "5.00"))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = c.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    assert second.choices[0].message.content

    formatted = c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(formatted.choices[0].message.content) == {"answer": "mock"}


def test_sdk_errors_surface_as_the_right_exception_classes(aex):
    poor = client(aex, aex.create_agent("sdk-poor", "0.000010"))
    with pytest.raises(openai.APIStatusError) as exc:
        poor.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 402
    assert exc.value.body["code"] == "insufficient_budget"

    with pytest.raises(openai.AuthenticationError):
        client(aex, "not-a-token").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    rich = client(aex, aex.create_agent("sdk-rich", "5.00"))
    with pytest.raises(openai.NotFoundError) as exc:
        rich.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["code"] == "model_not_found"

    keyed = {"Idempotency-Key": "sdk-conflict"}
    rich.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}], extra_headers=keyed)
    with pytest.raises(openai.ConflictError) as exc:
        rich.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}], extra_headers=keyed)
    assert exc.value.body["code"] == "idempotency_conflict"


def test_a_rate_limited_agent_gets_rate_limit_errors(aex):
    out = aex.cli("agent", "create", "sdk-throttled", "5.00", "1", "--json")
    c = client(aex, json.loads(out.stdout)["token"])
    c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError) as exc:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}])
    assert exc.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60
