"""The rest of OpenAI's surface through AEX with the official `openai` SDK, unchanged: legacy
completions (plain and streamed), images, transcriptions of an uploaded file, speech and
moderations, each governed and booked to the micro-dollar as the mock provider bills it."""

import openai


def client(aex, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=aex.base + "/v1", api_key=token, max_retries=0)


def charged(raw) -> int:
    return int(raw.headers["x-aex-cost-micro-usd"])


def test_every_new_route_through_the_official_sdk_is_governed_and_booked(aex, tmp_path):
    c = client(aex, aex.create_agent("sdk-surface", "5.00"))
    spent = 0

    # Legacy completions: two prompts, best_of 2, max_tokens 4 -> 2 x 2 x 4 tokens billed.
    raw = c.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt=["Say this", "and that"], best_of=2, max_tokens=4
    )
    done = raw.parse()
    assert done.model == "gpt-3.5-turbo-instruct" and len(done.choices) == 2
    assert done.usage.completion_tokens == 16
    expected = -(-done.usage.prompt_tokens * 1_500_000 // 1_000_000) + 16 * 2
    assert charged(raw) == expected
    spent += expected

    # Streamed, with the usage chunk.
    chunks = list(
        c.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Stream this",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices).startswith("Hello")
    usage = chunks[-1].usage
    streamed = -(-usage.prompt_tokens * 1_500_000 // 1_000_000) + usage.completion_tokens * 2
    assert chunks[-1].model_extra["aex"]["cost_micro_usd"] == streamed
    spent += streamed

    # Images: two hd 1024x1024 at 0.08 USD.
    raw = c.images.with_raw_response.generate(
        model="dall-e-3", prompt="a lighthouse", n=2, size="1024x1024", quality="hd"
    )
    assert len(raw.parse().data) == 2
    assert charged(raw) == 160_000
    spent += 160_000

    # A transcription of an uploaded file: 32,000 bytes the mock hears as 2 s at 0.006 USD/min.
    audio = tmp_path / "memo.mp3"
    audio.write_bytes(b"\x07" * 32_000)
    with audio.open("rb") as f:
        raw = c.audio.transcriptions.with_raw_response.create(model="whisper-1", file=f)
    assert raw.parse().text.startswith("The quick brown fox")
    assert charged(raw) == 200
    spent += 200

    # Speech: 11 characters at 15 USD a million; the audio bytes come through.
    raw = c.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="hello world")
    assert raw.headers["content-type"] == "audio/mpeg"
    assert raw.content[:2] == b"\xff\xfb"
    assert charged(raw) == 165
    spent += 165

    # Moderations: free, and in the ledger.
    raw = c.moderations.with_raw_response.create(
        model="omni-moderation-latest", input=["is this fine?", "and this?"]
    )
    assert len(raw.parse().results) == 2
    assert charged(raw) == 0

    agent = aex.agent("sdk-surface")
    assert agent["spent_micro_usd"] == spent
    assert agent["reserved_micro_usd"] == 0
    aex.cli("ledger", "verify")
    aex.cli("audit")


def test_a_price_missing_for_a_size_is_a_bad_request_not_a_free_call(aex):
    c = client(aex, aex.create_agent("sdk-painter", "5.00"))
    try:
        c.images.generate(model="dall-e-3", prompt="x", size="1792x1024")
        raise AssertionError("an unpriced size was served")
    except openai.BadRequestError as e:
        assert "models.dall-e-3.image_usd_per_image" in str(e)
    assert aex.agent("sdk-painter")["spent_micro_usd"] == 0
