"""Every fault the local server can inject, survived or turned into a typed error.

Retry delays are recorded by the ``sleeps`` fixture (the clients' ``retry_policy.sleep`` and
``asleep``), so nothing here waits for a backoff. Request counts are read from the server's own counters.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import MODES, Sleeps, run_embed, server_vectors, texts_of

from aiml_bge_integrations import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    ItemRejectedError,
    RateLimitError,
    ResponseValidationError,
)
from aiml_bge_integrations._retry import (
    INITIAL_DELAY,
    MAX_VALIDATION_RETRIES,
    RATE_LIMIT_INITIAL_DELAY,
)
from aiml_bge_integrations.server import FaultConfig

TEXTS = texts_of(6)


def faulty(serve: Any, script: list[str | None], **faults: Any) -> Any:
    return serve(faults=FaultConfig(script=script, **faults))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("429", "429"),
        ("500", "500"),
        ("502", "502"),
        ("503", "503"),
        ("504", "504"),
        ("drop", "connection"),
        ("malformed-json", "validation"),
        ("missing-item", "validation"),
        ("duplicate-index", "validation"),
        ("wrong-dimension", "validation"),
    ],
)
def test_one_fault_is_retried_and_the_vectors_are_exact(
    mode: str, kind: str, cause: str, serve: Any, sleeps: Sleeps
) -> None:
    server = faulty(serve, [kind])
    out = run_embed(mode, server, TEXTS)
    assert out.error is None, out.error
    assert out.vectors == server_vectors(TEXTS)
    assert server.stats.faults == {kind: 1}
    assert server.stats.requests == 2
    assert out.usage.requests == 2
    assert out.usage.retries_by_cause == {cause: 1}
    assert len(sleeps.delays) == 1
    if kind == "429":  # no Retry-After: the rate-limit schedule, jittered into its upper 3/4
        assert 0.75 * RATE_LIMIT_INITIAL_DELAY <= sleeps.delays[0] <= RATE_LIMIT_INITIAL_DELAY
    else:
        assert 0.75 * INITIAL_DELAY <= sleeps.delays[0] <= INITIAL_DELAY


@pytest.mark.parametrize("mode", MODES)
def test_429_retry_after_seconds_is_the_delay_requested(
    mode: str, serve: Any, sleeps: Sleeps
) -> None:
    server = faulty(serve, ["429-retry-after", "429-retry-after"], retry_after_seconds=7)
    out = run_embed(mode, server, TEXTS)
    assert out.vectors == server_vectors(TEXTS)
    assert sleeps.delays == [7.0, 7.0]
    assert out.usage.retries_by_cause == {"429": 2}


@pytest.mark.parametrize("mode", MODES)
def test_429_retry_after_http_date_is_the_delay_requested(
    mode: str, serve: Any, sleeps: Sleeps
) -> None:
    server = faulty(serve, ["429-retry-after-date"], retry_after_seconds=20)
    out = run_embed(mode, server, TEXTS)
    assert out.vectors == server_vectors(TEXTS)
    # An HTTP date has whole seconds (the server rounds up): 20 s ahead, less the time since.
    assert len(sleeps.delays) == 1
    assert 18.0 <= sleeps.delays[0] <= 21.0


@pytest.mark.parametrize("mode", MODES)
def test_slow_reply_beyond_the_timeout_is_retried(mode: str, serve: Any, sleeps: Sleeps) -> None:
    server = faulty(serve, ["slow"], slow_seconds=5.0)
    out = run_embed(mode, server, TEXTS, timeout=0.3)
    assert out.vectors == server_vectors(TEXTS)
    assert out.usage.retries_by_cause == {"timeout": 1}
    assert server.stats.requests == 2


@pytest.mark.parametrize("mode", MODES)
def test_shuffled_reply_gives_the_right_order_without_a_retry(
    mode: str, serve: Any, sleeps: Sleeps
) -> None:
    server = faulty(serve, ["shuffle", "shuffle", "shuffle"])
    texts = texts_of(30)
    out = run_embed(mode, server, texts, batch_size=10, max_concurrency=1)
    assert out.vectors == server_vectors(texts)
    assert server.stats.faults == {"shuffle": 3}
    assert server.stats.requests == 3
    assert out.usage.retries == 0 and sleeps.delays == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kind", ["missing-item", "duplicate-index", "wrong-dimension", "malformed-json"]
)
def test_persistent_bad_replies_end_in_response_validation_error(
    mode: str, kind: str, serve: Any, sleeps: Sleeps
) -> None:
    server = serve(faults=FaultConfig(rates={kind: 1.0}))
    out = run_embed(mode, server, TEXTS, max_retries=6)
    assert isinstance(out.error, ResponseValidationError)
    assert out.error.request_id  # the server's x-inference-id, to quote to support
    assert server.stats.requests == 1 + MAX_VALIDATION_RETRIES
    assert out.usage.retries_by_cause == {"validation": MAX_VALIDATION_RETRIES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("503", InternalServerError),
        ("429", RateLimitError),
        ("drop", APIConnectionError),
    ],
)
def test_retries_exhausted_raise_the_typed_error(
    mode: str, kind: str, error: type[Exception], serve: Any, sleeps: Sleeps
) -> None:
    server = serve(faults=FaultConfig(rates={kind: 1.0}))
    out = run_embed(mode, server, TEXTS, max_retries=3)
    assert type(out.error) is error
    assert "gave up after 3 retries" in str(out.error)
    assert server.stats.requests == 4
    assert len(sleeps.delays) == 3


@pytest.mark.parametrize("mode", MODES)
def test_timeouts_exhausted_raise_api_timeout_error(mode: str, serve: Any, sleeps: Sleeps) -> None:
    server = serve(faults=FaultConfig(rates={"slow": 1.0}, slow_seconds=5.0))
    out = run_embed(mode, server, TEXTS, timeout=0.2, max_retries=1)
    assert isinstance(out.error, APITimeoutError)
    assert server.stats.requests == 2


@pytest.mark.parametrize("mode", MODES)
def test_no_retry_of_401(mode: str, local_server: Any, sleeps: Sleeps) -> None:
    out = run_embed(mode, local_server, TEXTS, api_key="wrong-key")
    assert isinstance(out.error, AuthenticationError)
    assert out.error.status_code == 401
    assert out.error.request_id
    assert local_server.stats.requests == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("mode", MODES)
def test_no_retry_of_400(mode: str, serve: Any, sleeps: Sleeps) -> None:
    server = serve(max_tokens_per_item=8)
    texts = ["short one", "this text is certainly longer than eight tokens in total", "ok"]
    out = run_embed(mode, server, texts, long_text="none")
    assert isinstance(out.error, ItemRejectedError)
    assert out.error.status_code == 400 and out.error.index == 1
    assert server.stats.requests == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("mode", MODES)
def test_deadline_per_call(mode: str, serve: Any, sleeps: Sleeps) -> None:
    # Each reply is slower than the deadline; the timeout of the first request is cut to it.
    server = serve(faults=FaultConfig(rates={"slow": 1.0}, slow_seconds=5.0))
    out = run_embed(mode, server, TEXTS, timeout=30.0, deadline=0.4, max_retries=6)
    assert isinstance(out.error, APITimeoutError)
    assert "deadline of 0.4s" in str(out.error)
    assert server.stats.requests == 1


@pytest.mark.parametrize("mode", MODES)
def test_too_large_batch_is_split_and_the_limit_remembered(
    mode: str, serve: Any, sleeps: Sleeps
) -> None:
    import asyncio

    from core_helpers import async_client, sync_client

    server = serve(max_items_per_request=5)
    first, second = texts_of(23, "first"), texts_of(12, "second")
    if mode == "sync":
        with sync_client(server, batch_size=16, max_concurrency=2) as client:
            got_first = client.embed_documents(first)
            learned = client.effective_batch_size
            server.reset_stats()
            got_second = client.embed_documents(second)
            splits = client.usage.splits
    else:

        async def run() -> tuple[Any, ...]:
            async with async_client(server, batch_size=16, max_concurrency=2) as client:
                a = await client.embed_documents(first)
                size = client.effective_batch_size
                server.reset_stats()
                b = await client.embed_documents(second)
                return a, size, b, client.usage.splits

        got_first, learned, got_second, splits = asyncio.run(run())
    assert got_first == server_vectors(first)
    assert got_second == server_vectors(second)
    assert learned == 5
    assert splits >= 1
    # The second call went out at the learned size: no 413, three requests for 12 texts.
    assert server.stats.by_status == {"200": 3}


@pytest.mark.parametrize("mode", MODES)
def test_one_refused_item_is_named_by_the_callers_index(
    mode: str, serve: Any, sleeps: Sleeps
) -> None:
    server = serve(max_chars_per_item=80)
    texts = texts_of(40)
    texts[37] = "a fine but far too long passage " * 5
    out = run_embed(mode, server, texts, batch_size=8)
    assert isinstance(out.error, ItemRejectedError)
    assert out.error.index == 37
    assert "index 37" in str(out.error)
    assert sleeps.delays == []
