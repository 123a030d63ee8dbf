"""The streaming client against a local server with known chunk shapes and timing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from infbench.measure.client import ChatRequest, RequestSettings, RunContext, StreamClient
from infbench.measure.runners import run_closed_loop, run_single
from sse_server import ScriptedServer, chunk

CTX = RunContext(engine="e", model="m", scenario="single", concurrency=1)
SETTINGS = RequestSettings(model_name="m", max_tokens=16)
REQUEST = ChatRequest(request_id="single-0000", prompt_id="p0", messages=[{"role": "user", "content": "hi"}])


def _one(server: ScriptedServer, settings: RequestSettings = SETTINGS):
    async def go():
        async with StreamClient(server.url) as client:
            return await client.chat(REQUEST, settings, CTX)

    return asyncio.run(go())


def test_role_only_and_empty_chunks_are_not_tokens_and_usage_is_read():
    script = [
        (0.0, chunk(role="assistant")),  # role-only: no token
        (0.05, chunk(content="")),  # empty: no token
        (0.10, chunk(content="Paris")),  # first content: TTFT
        (0.05, chunk(content=" is big.")),  # a multi-token chunk
        (0.0, chunk(finish="stop")),
        (0.0, chunk(usage={"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15})),
        (0.0, "data: [DONE]"),
    ]
    with ScriptedServer(script) as server:
        record = _one(server)
    assert record.ok, record.error
    assert record.output_text == "Paris is big."
    assert record.ttft_s >= 0.14  # after the role-only (0 s) and empty (0.05 s) chunks, not at the first byte
    assert record.chunk_times_s[0] == record.ttft_s
    assert len(record.chunk_times_s) == 2
    assert record.prompt_tokens == 11 and record.completion_tokens == 4
    assert record.tokens_counted_by == "usage"
    assert record.finish_reason == "stop"
    assert record.latency_s >= record.ttft_s + 0.05


def test_request_body_carries_explicit_sampling_and_usage_option():
    script = [(0, chunk(content="x")), (0, chunk(finish="length")), (0, "data: [DONE]")]
    settings = RequestSettings(
        model_name="m", max_tokens=7, temperature=0.0, top_p=1.0, seed=3, extra_body={"ignore_eos": True}
    )
    with ScriptedServer(script) as server:
        _one(server, settings)
        body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 7 and body["temperature"] == 0.0 and body["seed"] == 3
    assert body["ignore_eos"] is True


def test_missing_usage_falls_back_to_chunk_count_and_says_so():
    script = [(0, chunk(content="a")), (0, chunk(content="b")), (0, chunk(finish="stop")), (0, "data: [DONE]")]
    with ScriptedServer(script) as server:
        record = _one(server)
    assert record.completion_tokens == 2 and record.tokens_counted_by == "chunks"


def test_stream_that_dies_midway_is_an_error_not_a_short_answer():
    script = [(0, chunk(content="Par")), (0.01, None)]
    with ScriptedServer(script) as server:
        record = _one(server)
    assert not record.ok
    assert "closed before" in record.error


def test_http_error_status_is_recorded():
    with ScriptedServer([], status=400) as server:
        record = _one(server)
    assert record.status == 400 and not record.ok and "HTTP 400" in record.error


def test_connection_refused_is_recorded_not_raised():
    from infbench.procutil import free_port

    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"

    async def go():
        async with StreamClient(url) as client:
            return await client.chat(REQUEST, SETTINGS, CTX)

    record = asyncio.run(go())
    assert not record.ok and "ConnectError" in record.error


def test_closed_loop_keeps_concurrency_and_sends_every_request():
    script = [
        (0.1, chunk(content="x")),
        (0, chunk(finish="stop")),
        (0, chunk(usage={"prompt_tokens": 1, "completion_tokens": 1})),
        (0, "data: [DONE]"),
    ]
    requests = [ChatRequest(f"throughput-{i:04d}", f"p{i % 3}", [{"role": "user", "content": "q"}]) for i in range(8)]
    ctx = RunContext(engine="e", model="m", scenario="throughput", concurrency=4)
    with ScriptedServer(script) as server:
        records = asyncio.run(run_closed_loop(server.url, requests, SETTINGS, ctx))
    assert [r.request_id for r in records] == [r.request_id for r in requests]
    assert all(r.ok for r in records)
    starts = sorted(r.send_time for r in records)
    # 8 requests of ~0.1 s at concurrency 4: two waves, the second starting ~0.1 s after the first.
    assert starts[3] - starts[0] < 0.05
    assert starts[4] - starts[0] >= 0.09


def test_single_runs_one_at_a_time():
    script = [(0.05, chunk(content="x")), (0, chunk(finish="stop")), (0, "data: [DONE]")]
    requests = [ChatRequest(f"single-{i:04d}", f"p{i}", [{"role": "user", "content": "q"}]) for i in range(3)]
    with ScriptedServer(script) as server:
        records = asyncio.run(run_single(server.url, requests, SETTINGS, CTX))
    for before, after in zip(records, records[1:], strict=False):
        assert after.send_time >= before.send_time + before.latency_s - 1e-3


def _chat(server: ScriptedServer, request: ChatRequest, settings: RequestSettings, ctx: RunContext = CTX):
    async def go():
        async with StreamClient(server.url) as client:
            return await client.chat(request, settings, ctx)

    return asyncio.run(go())


def test_a_cold_request_carries_the_engines_cold_fields_and_a_salt_of_its_own():
    """vLLM's spelling (cache_salt, unique per request) and llama.cpp's (cache_prompt false); a warm
    request and a request without a cache state (tools, tests) carry neither."""
    script = [(0, chunk(content="x")), (0, "data: [DONE]")]
    settings = RequestSettings(
        model_name="m", max_tokens=2, cold_fields={"cache_prompt": False}, cold_salt_field="cache_salt"
    )
    cold, warm = replace(CTX, cache="cold"), replace(CTX, cache="warm")
    requests = [ChatRequest(f"single-{i:04d}", "p0", REQUEST.messages) for i in range(4)]
    with ScriptedServer(script) as server:
        records = [_chat(server, r, settings, c) for r, c in zip(requests, [cold, cold, warm, CTX], strict=True)]
        bodies = server.requests
    assert [r.cache for r in records] == ["cold", "cold", "warm", None]
    assert bodies[0]["cache_prompt"] is False and bodies[1]["cache_prompt"] is False
    assert bodies[0]["cache_salt"] != bodies[1]["cache_salt"]  # no two cold requests share cached blocks
    assert all("cache_prompt" not in b and "cache_salt" not in b for b in bodies[2:])


def test_cached_prompt_tokens_come_from_usage_or_llamacpps_timings():
    """As vLLM (--enable-prompt-tokens-details) and llama.cpp send them; none said: None (cannot say),
    unless the engine leaves the field out at 0 (SGLang with --enable-cache-report)."""
    usage = {"prompt_tokens": 384, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 256}}
    llamacpp = {"prompt_tokens": 384, "completion_tokens": 1}
    timings = {"cache_n": 383, "prompt_n": 1}
    cases = [
        ([(0, chunk(content="x")), (0, chunk(usage=usage)), (0, "data: [DONE]")], SETTINGS, 256),
        (
            [
                (0, chunk(content="x")),
                (
                    0,
                    'data: {"choices": [], "usage": '
                    + json.dumps(llamacpp)
                    + ', "timings": '
                    + json.dumps(timings)
                    + "}",
                ),
                (0, "data: [DONE]"),
            ],
            SETTINGS,
            383,
        ),
        ([(0, chunk(content="x")), (0, chunk(usage=llamacpp)), (0, "data: [DONE]")], SETTINGS, None),
        (
            [(0, chunk(content="x")), (0, chunk(usage=llamacpp)), (0, "data: [DONE]")],
            RequestSettings(model_name="m", max_tokens=2, cached_tokens_absent_is_zero=True),
            0,
        ),
    ]
    for script, settings, expected in cases:
        with ScriptedServer(script) as server:
            record = _chat(server, REQUEST, settings)
        assert record.ok and record.cached_prompt_tokens == expected, (expected, record)
