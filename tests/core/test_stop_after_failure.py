"""A call that has raised sends nothing more, and its sleeping workers wake at once (issue 13.1).

Real sleeps here (no ``sleeps`` fixture). The server answers one text 429 with a long
Retry-After and refuses another at once with 400: the call must raise the 400 without waiting
out the backoff, no worker may wake later to send (and bill) a retry, and ``close()`` must not
wait for the backoff either. A 30-second Retry-After against 10-second joins turns a worker
still asleep into a visible hang, not a timing measurement.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest
from core_helpers import async_client, sync_client

from aiml_bge_integrations.errors import ItemRejectedError
from aiml_bge_integrations.server import FaultConfig

RETRY_AFTER = 30.0
TEXTS = ["short text", "x" * 50]  # text 0: 429 + Retry-After; text 1: 400 (too many chars)


def _configure(serve: Any, **extra: Any) -> Any:
    return serve(
        max_chars_per_item=20,
        faults=FaultConfig(script=["429-retry-after"], retry_after_seconds=RETRY_AFTER),
        **extra,
    )


def _in_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10.0)
    return thread, errors


def _requests_after_a_while(server: Any) -> int:
    time.sleep(1.0)  # room for a straggler to show up
    return int(server.stats.requests)


def test_sync_call_raises_without_waiting_for_another_batchs_backoff(serve: Any) -> None:
    server = _configure(serve)
    client = sync_client(server, batch_size=1, max_concurrency=2)
    thread, errors = _in_thread(lambda: client.embed_documents(TEXTS))
    assert not thread.is_alive(), "the 400 waited behind text 0's 30 s Retry-After"
    assert len(errors) == 1 and isinstance(errors[0], ItemRejectedError)
    assert errors[0].index == 1
    closer, _ = _in_thread(client.close)
    assert not closer.is_alive(), "close() waited for a worker asleep in a backoff"
    assert not [t for t in threading.enumerate() if t.name.startswith("aiml-bge_")]
    assert _requests_after_a_while(server) == 2  # the 429 and the 400; no retry after


def test_sync_ctrl_c_in_the_caller_stops_the_call(serve: Any) -> None:
    server = serve(faults=FaultConfig(script=["429-retry-after"], retry_after_seconds=RETRY_AFTER))
    client = sync_client(server, batch_size=1, max_concurrency=2)

    def press_ctrl_c() -> None:
        # Once both texts' requests have reached the server and one is asleep in its 30 s
        # backoff, Ctrl-C reaches the caller (this test, in the main thread), which is then
        # waiting for its batches.
        for _ in range(1000):
            if server.stats.faults.get("429-retry-after") and server.stats.requests >= 2:
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: it wakes a blocked wait

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        client.embed_documents(["one", "two"])
    presser.join(timeout=10.0)
    closer, _ = _in_thread(client.close)
    assert not closer.is_alive(), "close() waited for a worker asleep in a backoff"
    assert _requests_after_a_while(server) == 2


def test_close_stops_a_call_running_in_another_thread(serve: Any) -> None:
    server = serve(faults=FaultConfig(script=["429-retry-after"], retry_after_seconds=RETRY_AFTER))
    client = sync_client(server, batch_size=1, max_concurrency=2)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.embed_documents(["a", "b"])
        except BaseException as err:
            outcome.append(err)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    # Until both texts' requests have reached the server and one sleeps in its backoff.
    for _ in range(1000):
        if server.stats.faults.get("429-retry-after") and server.stats.requests >= 2:
            break
        time.sleep(0.01)
    closer, _ = _in_thread(client.close)
    assert not closer.is_alive()
    caller.join(timeout=10.0)
    assert not caller.is_alive()
    assert len(outcome) == 1  # the call failed (it was stopped); it did not hang or succeed
    assert _requests_after_a_while(server) == 2


async def test_async_call_raises_without_waiting_for_another_batchs_backoff(serve: Any) -> None:
    server = _configure(serve)
    client = async_client(server, batch_size=1, max_concurrency=2)
    with pytest.raises(ItemRejectedError) as info:
        await asyncio.wait_for(client.embed_documents(TEXTS), timeout=10.0)
    assert info.value.index == 1
    await asyncio.wait_for(client.aclose(), timeout=10.0)
    await asyncio.sleep(1.0)
    assert server.stats.requests == 2


async def test_async_cancelled_task_sends_nothing_more(serve: Any) -> None:
    server = serve(faults=FaultConfig(script=["429-retry-after"], retry_after_seconds=RETRY_AFTER))
    client = async_client(server, batch_size=1)
    task = asyncio.ensure_future(client.embed_documents(["one", "two"]))
    for _ in range(200):  # until both were sent, the 429 answered and its retry waiting
        if server.stats.faults.get("429-retry-after") and server.stats.requests >= 2:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.0)
    assert server.stats.requests == 2
    await client.aclose()
