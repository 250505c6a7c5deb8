"""The official `openai` Python SDK, unchanged, against a running AEX."""

import openai
import pytest


def client(aex, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=aex.base + "/v1", api_key=token, max_retries=0)


def test_a_chat_completion_through_the_official_sdk_is_governed_and_booked(aex):
    token = aex.create_agent("sdk-agent", "5.00")
    c = client(aex, token)

    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello from the official SDK"}],
        seed=3,
    )
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content.startswith("Hello")
    usage = completion.usage
    expected = -(-usage.prompt_tokens * 150_000 // 1_000_000) - (-usage.completion_tokens * 600_000 // 1_000_000)
    assert int(raw.headers["x-aex-cost-micro-usd"]) == expected

    agent = aex.agent("sdk-agent")
    assert agent["spent_micro_usd"] == expected
    assert agent["reserved_micro_usd"] == 0

    aex.cli("ledger", "verify")
    aex.cli("audit")


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
