"""What a client asks to learn a server's limits: once, only of self-hosted servers, bounded.

Before its first batch a client asks ``GET {root}/info`` and ``GET {base_url}/models``
(``discover_limits``). These tests count what is asked (a scripted server and a transport
that records URLs), and give the GETs hostile replies (a hang, a trickle, garbage, a
redirect, a huge body) that must neither fail the call nor hold it up beyond the short
timeout.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hostile import HostileServer, head, trickle
from scripted_server import ScriptedServer

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._discovery import DISCOVERY_TIMEOUT

KEY = "sk-discovery-test-key"
MODEL = "test/unknown-dimension"
TEI_INFO = {
    "model_id": MODEL,
    "max_client_batch_size": 3,
    "max_input_length": 512,
    "max_batch_tokens": 16384,
    "auto_truncate": True,
}
MODES = ["sync", "async"]


def _embed_many(mode: str, base_url: str, calls: int, **settings: Any) -> list[list[list[float]]]:
    """``calls`` concurrent ``embed_documents`` of 10 texts on one client."""
    settings = {"api_key": KEY, "model": MODEL, "base_url": base_url, **settings}
    texts = [f"text {i}" for i in range(10)]
    if mode == "sync":
        results: list[list[list[float]]] = []
        with EmbeddingsClient(**settings) as client:
            workers = [
                threading.Thread(target=lambda: results.append(client.embed_documents(texts)))
                for _ in range(calls)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(30)
            assert len(list(client.iter_embeddings(iter(texts)))) == 10
        return results

    async def run() -> list[list[list[float]]]:
        async with AsyncEmbeddingsClient(**settings) as client:
            got = await asyncio.gather(*(client.embed_documents(texts) for _ in range(calls)))
            assert len([v async for v in client.iter_embeddings(texts)]) == 10
            return list(got)

    return asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_the_server_is_asked_once_per_client_however_many_calls(mode: str) -> None:
    with ScriptedServer() as server:
        server.pages["/info"] = (200, TEI_INFO)
        results = _embed_many(mode, server.base_url, calls=8)
        gets = [r for r in server.requests if r["method"] == "GET"]
        posts = server.posts()
    assert len(results) == 8 and all(len(r) == 10 for r in results)
    assert [r["path"] for r in gets] == ["/info", "/v1/models"]
    # The published max_client_batch_size (3) cut every batch (the setting is 128).
    assert {len(p["body"]["input"]) for p in posts} == {3, 1}
    # The same server: the same key, as the embeddings requests carry it.
    assert all(r["headers"].get("Authorization") == f"Bearer {KEY}" for r in gets)


@pytest.mark.parametrize("mode", MODES)
def test_discover_limits_false_asks_nothing(mode: str) -> None:
    with ScriptedServer() as server:
        server.pages["/info"] = (200, TEI_INFO)
        _embed_many(mode, server.base_url, calls=2, discover_limits=False)
        assert [r for r in server.requests if r["method"] == "GET"] == []
        assert {len(p["body"]["input"]) for p in server.posts()} == {10}


@pytest.mark.parametrize("mode", MODES)
def test_each_copy_of_a_client_asks_for_itself_once(mode: str) -> None:
    with ScriptedServer() as server:
        _embed_many(mode, server.base_url, calls=1)
        _embed_many(mode, server.base_url, calls=1)
        paths = [r["path"] for r in server.requests if r["method"] == "GET"]
    assert paths == ["/info", "/v1/models"] * 2


# -- nothing is asked of the hosted APIs ---------------------------------------------------------


def _recorder(urls: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        urls.append(f"{request.method} {request.url}")
        if request.method != "POST":
            return httpx.Response(404)
        inputs = orjson.loads(request.content)["input"]
        data = [{"index": i, "embedding": [0.5, 0.25]} for i in range(len(inputs))]
        return httpx.Response(200, json={"data": data, "model": MODEL})

    return handle


@pytest.mark.parametrize(
    "base_url",
    ["https://api.aimlapi.com/v1", "https://api.openai.com/v1", "https://aimlapi.com/v1"],
)
@pytest.mark.parametrize("mode", MODES)
def test_the_hosted_apis_are_asked_nothing_but_embeddings(mode: str, base_url: str) -> None:
    urls: list[str] = []
    settings: dict[str, Any] = {"api_key": KEY, "model": MODEL, "base_url": base_url}
    if mode == "sync":
        http = httpx.Client(transport=httpx.MockTransport(_recorder(urls)))
        with EmbeddingsClient(http_client=http, **settings) as client:
            client.embed_documents(["a", "b"])
    else:

        async def run() -> None:
            http = httpx.AsyncClient(transport=httpx.MockTransport(_recorder(urls)))
            async with AsyncEmbeddingsClient(http_client=http, **settings) as client:
                await client.embed_documents(["a", "b"])

        asyncio.run(run())
    assert urls == [f"POST {base_url}/embeddings"]


# -- a server that answers the GETs badly -----------------------------------------------------


def _vectors(conn: socket.socket, server: HostileServer) -> None:
    body = orjson.dumps({"object": "list", "data": [{"index": 0, "embedding": [0.5, 0.25]}]})
    conn.sendall(head(200, content_type="application/json", content_length=len(body)) + body)


def _hang(conn: socket.socket, server: HostileServer) -> None:
    server.sleep(10.0)  # no reply at all, until the client gives up or the server stops


def _trickle(conn: socket.socket, server: HostileServer) -> None:
    body = json.dumps(TEI_INFO).encode()
    conn.sendall(head(200, content_type="application/json", content_length=len(body)))
    trickle(conn, server, body, every=0.1)


def _garbage(conn: socket.socket, server: HostileServer) -> None:
    body = b"\x00\xff{not json at all"
    conn.sendall(head(200, content_type="application/json", content_length=len(body)) + body)


def _not_json_shape(conn: socket.socket, server: HostileServer) -> None:
    body = b'{"model_id": 5, "max_client_batch_size": "lots", "data": "none"}'
    conn.sendall(head(200, content_type="application/json", content_length=len(body)) + body)


def _huge(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(head(200, content_type="application/json", content_length=2**30))
    for _ in range(64):
        conn.sendall(b" " * 65536)


def _gzip_bomb(conn: socket.socket, server: HostileServer) -> None:
    body = gzip.compress(b" " * (16 << 20))  # 16 MiB as sent in about 16 KiB
    conn.sendall(
        head(
            200, content_type="application/json", content_encoding="gzip", content_length=len(body)
        )
        + body
    )


def _redirect(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(head(302, location=server.base_url + "/redirected", content_length=0))


GETS = {
    "hang": _hang,
    "trickle": _trickle,
    "garbage": _garbage,
    "wrong shape": _not_json_shape,
    "huge": _huge,
    "gzip bomb": _gzip_bomb,
    "redirect": _redirect,
    "404": None,
}


def _timed_embed(mode: str, server: HostileServer, **more: Any) -> tuple[list[list[float]], float]:
    settings: dict[str, Any] = {"api_key": KEY, "model": MODEL, "base_url": server.base_url}
    settings.update(more)
    started = time.monotonic()
    if mode == "sync":
        with EmbeddingsClient(**settings) as client:
            vectors = client.embed_documents(["hello"])
    else:

        async def run() -> list[list[float]]:
            async with AsyncEmbeddingsClient(**settings) as client:
                return await client.embed_documents(["hello"])

        vectors = asyncio.run(run())
    return vectors, time.monotonic() - started


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(GETS))
def test_a_bad_answer_to_the_gets_neither_fails_nor_holds_up_the_call(mode: str, kind: str) -> None:
    with HostileServer(_vectors, on_get=GETS[kind]) as server:
        vectors, elapsed = _timed_embed(mode, server)
        gets = list(server.gets)
    assert vectors == [[0.5, 0.25]]
    assert server.requests == 1
    # About the short timeout at worst (a reply that never comes, or comes a byte at a time).
    assert elapsed < DISCOVERY_TIMEOUT + 1.5, elapsed
    # A redirect is not followed; a server that did not answer in time is asked no more.
    assert "/v1/redirected" not in gets
    assert gets == (["/info"] if kind in ("hang", "trickle") else ["/info", "/v1/models"])


@pytest.mark.parametrize("mode", MODES)
def test_discovery_takes_at_most_half_of_what_is_left_of_a_calls_deadline(mode: str) -> None:
    with HostileServer(_vectors, on_get=_hang) as server:
        vectors, elapsed = _timed_embed(mode, server, deadline=1.0)
    assert vectors == [[0.5, 0.25]]  # the hang cost half the deadline, not the call
    assert 0.4 < elapsed < 1.0, elapsed


# -- a forked child ----------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_parent_asks_does_not_wait_for_the_parents_attempt() -> None:
    # The parent's discovery hangs (its lock held by a thread the child will not have); the
    # child asks for itself and embeds within the short timeout instead of waiting forever.
    with HostileServer(_vectors, on_get=_hang) as server:
        client = EmbeddingsClient(api_key=KEY, model=MODEL, base_url=server.base_url)
        parent = threading.Thread(target=lambda: client.embed_documents(["hello"]), daemon=True)
        parent.start()
        time.sleep(0.3)  # the parent's thread is waiting for its /info
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(read_end)
                os.write(write_end, orjson.dumps(client.embed_documents(["hello"])))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], DISCOVERY_TIMEOUT + 5.0)
            got = os.read(read_end, 1 << 16) if ready else b""
        finally:
            os.close(read_end)
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        parent.join(DISCOVERY_TIMEOUT + 5.0)
        client.close()
    assert got and orjson.loads(got) == [[0.5, 0.25]]
