"""A client used in a forked child, what a client holds (``vars``), and ``is_closed``.

The fork tests run the child's call and report through a pipe; the parent waits a bounded
time and kills a child that has not answered, so a hang shows as a failed assertion.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from core_helpers import async_client, server_vectors, sync_client, texts_of

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._secrets import SecretKey

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TEXTS = texts_of(12)


def _in_child(work: Callable[[], Any], wait: float = 30.0) -> Any:
    """``work()`` run in a forked child; its result (JSON) or None if it did not answer in time."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, orjson.dumps({"result": work()}))
        except BaseException as err:
            os.write(write_end, orjson.dumps({"error": repr(err)}))
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    data = b""
    end = time.monotonic() + wait
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready:
                chunk = os.read(read_end, 1 << 20)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(read_end)
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return orjson.loads(data) if data else None


def test_a_sync_client_works_in_a_forked_child(local_server: Any) -> None:
    # The parent's calls start its thread pool and fill its connection pool; the child has
    # neither thread nor connection of its own (the old client waited on the parent's pool).
    with sync_client(local_server, batch_size=2, max_concurrency=4) as client:
        assert client.embed_documents(TEXTS) == server_vectors(TEXTS)
        got = _in_child(lambda: client.embed_documents(TEXTS))
        assert got == {"result": server_vectors(TEXTS)}
        assert client.embed_documents(TEXTS[:3]) == server_vectors(TEXTS[:3])  # parent unharmed


def test_an_async_client_works_in_a_forked_child_with_a_new_loop(local_server: Any) -> None:
    client = async_client(local_server, batch_size=2, max_concurrency=4)

    def embed() -> list[list[float]]:
        return asyncio.run(client.embed_documents(TEXTS))

    assert embed() == server_vectors(TEXTS)
    assert _in_child(embed) == {"result": server_vectors(TEXTS)}
    assert embed() == server_vectors(TEXTS)


def _refused_in_child(work: Callable[[], Any]) -> None:
    started = time.monotonic()
    got = _in_child(work, wait=10.0)
    assert got is not None, "the child hung"
    assert time.monotonic() - started < 5.0
    assert "error" in got and got["error"].startswith("ConfigurationError"), got
    assert (
        "forked" in got["error"] and "create the http_client in the child" in got["error"].lower()
    )


def test_a_callers_http_client_is_refused_at_once_in_a_forked_child(local_server: Any) -> None:
    # The caller's pool and its open connections are the parent's: a child reading the same
    # sockets would take the parent's replies (the old client used it as given).
    with httpx.Client() as http, sync_client(local_server, http_client=http) as client:
        assert client.embed_documents(TEXTS[:3]) == server_vectors(TEXTS[:3])
        _refused_in_child(lambda: client.embed_documents(TEXTS[:3]))
        _refused_in_child(lambda: copy.copy(client).embed_query("a copy made in the child"))
        assert client.embed_documents(TEXTS[:3]) == server_vectors(TEXTS[:3])  # parent unharmed


def test_a_callers_async_http_client_is_refused_at_once_in_a_forked_child(
    local_server: Any,
) -> None:
    http = httpx.AsyncClient()
    client = async_client(local_server, http_client=http)

    def embed() -> list[list[float]]:
        return asyncio.run(client.embed_documents(TEXTS[:3]))

    _refused_in_child(embed)
    # The parent's own use, on one event loop (a caller's async pool is bound to its loop).
    assert embed() == server_vectors(TEXTS[:3])


# -- what a client holds ------------------------------------------------------------------------

SECRET = "sk-this-key-must-stay-in-its-holder-0123456789"


def _reachable_strings(root: object, limit: int = 200_000) -> list[str]:
    """Every str and bytes reachable from ``root`` (not looking inside a ``SecretKey``)."""
    seen: set[int] = set()
    todo, found = [root], []
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, SecretKey | type) or type(obj) is type(sys):
            continue
        seen.add(id(obj))
        if isinstance(obj, str | bytes):
            found.append(obj if isinstance(obj, str) else obj.decode("latin-1"))
            continue
        todo.extend(gc.get_referents(obj))
    return found


@pytest.mark.parametrize("cls", [EmbeddingsClient, AsyncEmbeddingsClient])
def test_the_key_lives_only_in_its_holder(cls: type[Any], local_server: Any) -> None:
    client = cls(api_key=SECRET, base_url=local_server.base_url)
    assert SECRET not in repr(vars(client))  # the old client kept an Authorization header
    leaks = [s for s in _reachable_strings(vars(client)) if SECRET in s]
    assert leaks == []


def test_is_closed_says_whether_close_was_called(local_server: Any) -> None:
    client = sync_client(local_server)
    assert not client.is_closed
    client.close()
    assert client.is_closed
    # Used again, it opens a pool again (the old client raised httpx's RuntimeError).
    assert client.embed_documents(TEXTS[:2]) == server_vectors(TEXTS[:2])
    assert not client.is_closed
    client.close()

    async def run() -> None:
        aclient = async_client(local_server)
        assert not aclient.is_closed
        await aclient.embed_query("hello")
        await aclient.aclose()
        assert aclient.is_closed

    asyncio.run(run())
