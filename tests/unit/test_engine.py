"""The request loop, driven by hand: no socket, no thread, no event loop.

Both clients drive ``Engine.batch`` the same way (send or await send, wait or await sleep),
so what these tests pin holds for both by construction.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aiml_bge_integrations._engine import Call, Done, Engine, Failure, Reply, Send, Wait
from aiml_bge_integrations._outcome import Context
from aiml_bge_integrations._retry import RetryPolicy
from aiml_bge_integrations._secrets import SecretKey
from aiml_bge_integrations._usage import UsageCounter
from aiml_bge_integrations.errors import APITimeoutError, InternalServerError


def _engine(**settings: Any) -> Engine:
    ctx = Context("test/model", "https://api.example.test/v1", SecretKey("sk-engine-unit"))
    return Engine(
        ctx,
        batch_size=settings.pop("batch_size", 8),
        long_text="none",
        encoding_format=None,
        query_instruction=None,
        timeout=5.0,
        max_response_bytes=None,
        policy=RetryPolicy(max_retries=settings.pop("max_retries", 3), rng=lambda: 0.0),
        rate_limiter=None,
        usage=UsageCounter(),
    )


def _ok(count: int) -> Reply:
    data = [{"index": i, "embedding": [0.5, float(i)]} for i in range(count)]
    return Reply(200, {}, orjson.dumps({"data": data}))


def _drive(steps: Any, answers: list[Any]) -> list[Any]:
    """Every step, answering each Send with the next of ``answers``."""
    seen, answer = [], None
    for _ in range(50):
        step = steps.send(answer)
        seen.append(step)
        if isinstance(step, Done):
            return seen
        answer = answers.pop(0) if isinstance(step, Send) else None
    raise AssertionError("the loop did not end")


def test_a_503_is_sent_again_after_a_backoff_then_done() -> None:
    engine = _engine()
    steps = engine.batch(["a", "b"], 0, engine.new_call(None))
    seen = _drive(steps, [Reply(503, {}, b"busy"), _ok(2)])
    assert [type(s) for s in seen] == [Send, Wait, Send, Done]
    assert seen[1].seconds == 0.5  # the first backoff, without jitter here
    assert seen[-1].vectors == [[0.5, 0.0], [0.5, 1.0]]
    assert engine.usage.snapshot(1, 1).retries_by_cause == {"503": 1}


def test_a_call_stopped_during_the_backoff_raises_the_error_without_sending() -> None:
    # The old async client went on to send after its sleep; the sync one did not.
    engine = _engine()
    call = engine.new_call(None)
    steps = engine.batch(["a"], 0, call)
    assert isinstance(next(steps), Send)
    assert isinstance(steps.send(Reply(500, {}, b"down")), Wait)
    call.cancelled.set()
    with pytest.raises(InternalServerError):
        steps.send(None)


def test_a_reply_too_large_is_not_asked_for_again() -> None:
    from aiml_bge_integrations._outcome import ReplyTooLarge
    from aiml_bge_integrations.errors import ResponseTooLargeError

    engine = _engine()
    steps = engine.batch(["a"], 0, engine.new_call(None))
    send = next(steps)
    assert isinstance(send, Send) and send.limit == 8192 * 26 + 256 + 64 * 1024
    with pytest.raises(ResponseTooLargeError):
        steps.send(Failure(ReplyTooLarge(send.limit), "too_large"))


def test_each_send_gets_what_is_left_of_the_deadline() -> None:
    engine = _engine()
    call: Call = engine.new_call(0.5)
    steps = engine.batch(["a"], 0, call)
    send = next(steps)
    assert isinstance(send, Send) and 0 < send.timeout <= 0.5
    with pytest.raises(APITimeoutError, match="deadline"):
        # A timeout whose backoff the deadline cannot cover ends the call.
        steps.send(Failure(TimeoutError("slow"), "timeout"))
