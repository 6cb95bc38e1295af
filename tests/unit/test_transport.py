"""Larger reads for the clients' own pools: what the wrapper asks of the socket, and where it goes."""

from __future__ import annotations

import ssl
from typing import Any

import httpcore
import httpx

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._transport import READ_BYTES, enlarge_reads

SETTINGS: dict[str, Any] = {"api_key": "k", "base_url": "https://api.example.test/v1"}


class _Recorder(httpcore.NetworkStream):
    def __init__(self) -> None:
        self.reads: list[int] = []
        self.tls = 0

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.reads.append(max_bytes)
        return b"x"

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self.tls += 1
        return self


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.stream = _Recorder()

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return self.stream


def test_reads_ask_for_a_mebibyte_and_tls_keeps_the_wrapper() -> None:
    http = httpx.Client()
    assert enlarge_reads(http)
    assert enlarge_reads(http)  # a second time changes nothing
    pool: Any = http._transport._pool  # type: ignore[attr-defined]
    inner = _Backend()
    pool._network_backend._inner = inner
    stream = pool._network_backend.connect_tcp("127.0.0.1", 1)
    assert stream.read(65536) == b"x"
    assert stream.read(4 * READ_BYTES) == b"x"  # never less than asked
    tls = stream.start_tls(ssl.create_default_context())
    tls.read(10)
    assert inner.stream.reads == [READ_BYTES, 4 * READ_BYTES, READ_BYTES]
    assert inner.stream.tls == 1
    http.close()


def test_clients_enlarge_their_own_pools_and_never_a_callers() -> None:
    from aiml_bge_integrations._transport import _AsyncBackend, _SyncBackend

    with EmbeddingsClient(**SETTINGS) as client:
        backend = client._http._transport._pool._network_backend  # type: ignore[attr-defined]
        assert isinstance(backend, _SyncBackend)
    mine = httpx.Client()
    with EmbeddingsClient(http_client=mine, **SETTINGS):
        assert not isinstance(mine._transport._pool._network_backend, _SyncBackend)  # type: ignore[attr-defined]
    mine.close()
    # A transport without the attributes (a MockTransport here) is left as it is.
    mocked = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert not enlarge_reads(mocked)

    async def state_backend() -> Any:
        client = AsyncEmbeddingsClient(**SETTINGS)
        http = client._state().http
        backend = http._transport._pool._network_backend  # type: ignore[attr-defined]
        await client.aclose()
        return backend

    import asyncio

    assert isinstance(asyncio.run(state_backend()), _AsyncBackend)
