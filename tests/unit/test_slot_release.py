"""A request slot is given back when a reply's headers arrive, not after its body is read.

The server has finished with a request once it starts answering, so the next request may go
out while the previous body is still arriving. Replies whose bodies stall until a later
request has been seen are something the local server cannot be made to give, so these run
over ``httpx.MockTransport``. If the slot were held until the body was read, the later request
would never be sent while a body stalls, and the order recorded here would show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient

KEY = "sk-unit-test-slots"
BASE = "https://api.example.test/v1"
STALL = 3.0  # seconds a body waits for the later request before giving up


def _body(request: httpx.Request) -> bytes:
    texts = orjson.loads(request.content)["input"]
    data = [{"index": i, "embedding": [0.25, float(len(t))]} for i, t in enumerate(texts)]
    return orjson.dumps({"object": "list", "data": data})


class _SyncStall(httpx.SyncByteStream):
    def __init__(self, body: bytes, go: threading.Event, log: list[str], name: str) -> None:
        self.body, self.go, self.log, self.name = body, go, log, name

    def __iter__(self) -> Iterator[bytes]:
        self.go.wait(STALL)
        self.log.append(f"body {self.name} done")
        yield self.body


class _AsyncStall(httpx.AsyncByteStream):
    def __init__(self, body: bytes, go: asyncio.Event, log: list[str], name: str) -> None:
        self.body, self.go, self.log, self.name = body, go, log, name

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.go.wait(), STALL)
        self.log.append(f"body {self.name} done")
        yield self.body


def test_sync_client_sends_the_next_request_while_earlier_bodies_stall() -> None:
    log: list[str] = []
    lock = threading.Lock()
    third_seen = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            name = orjson.loads(request.content)["input"][0]
            log.append(f"request {name}")
            if name == "c":
                third_seen.set()
        return httpx.Response(200, stream=_SyncStall(_body(request), third_seen, log, name))

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with EmbeddingsClient(
        api_key=KEY,
        base_url=BASE,
        model="test/tiny",
        batch_size=1,
        max_concurrency=2,
        http_client=http,
    ) as client:
        vectors = client.embed_documents(["a", "bb", "c"])
    assert vectors == [[0.25, 1.0], [0.25, 2.0], [0.25, 1.0]]
    # Both slots were taken by "a" and "bb", whose bodies stalled: "c" went out before either
    # body was read, so each slot was free as soon as its reply's headers had come.
    assert log.index("request c") < log.index("body a done")
    assert log.index("request c") < log.index("body bb done")


async def test_async_client_sends_the_next_request_while_a_body_stalls() -> None:
    log: list[str] = []
    second_seen = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        name = orjson.loads(request.content)["input"][0]
        log.append(f"request {name}")
        if name == "bb":
            second_seen.set()
        return httpx.Response(200, stream=_AsyncStall(_body(request), second_seen, log, name))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = AsyncEmbeddingsClient(
            api_key=KEY,
            base_url=BASE,
            model="test/tiny",
            batch_size=1,
            max_concurrency=1,
            http_client=http,
        )
        vectors = await client.embed_documents(["a", "bb"])
    assert vectors == [[0.25, 1.0], [0.25, 2.0]]
    assert log.index("request bb") < log.index("body a done")
