"""The pools the clients build verify TLS, and a plain-http base URL never loads the CA bundle.

Observed through httpx's and httpcore's public surfaces: the ``verify`` argument each client
hands to the ``httpx.Client`` or ``httpx.AsyncClient`` it builds for itself, or the
``ssl_context`` it hands to the ``httpcore.ConnectionPool`` under its own transport (the sync
client's pool, see ``_sockets``), read with the standard
library's ``ssl`` API. (Loading the CA bundle costs about 80 ms of CPU; a base URL that never
speaks TLS has no use for it, but its context still verifies, trusting nothing.)
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest

from aiml_bge_integrations import APIConnectionError, AsyncEmbeddingsClient, EmbeddingsClient


@pytest.fixture
def verify_given(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every TLS context a pool built while the test runs was given, in order.

    ``verify`` of an httpx client that builds its own transport, ``ssl_context`` of an
    httpcore pool (an httpx client given a transport uses no ``verify`` of its own).
    """
    seen: list[Any] = []
    for module, name, argument in [
        (httpx, "Client", "verify"),
        (httpx, "AsyncClient", "verify"),
        (httpcore, "ConnectionPool", "ssl_context"),
    ]:
        base = getattr(module, name)

        def init(
            self: Any, *args: Any, _base: Any = base, _argument: str = argument, **kwargs: Any
        ) -> None:
            if "transport" not in kwargs:
                seen.append(kwargs.get(_argument, True))
            _base.__init__(self, *args, **kwargs)

        monkeypatch.setattr(module, name, type(name, (base,), {"__init__": init}))
    return seen


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but never listening: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _verifying(ctx: Any) -> bool:
    return (
        isinstance(ctx, ssl.SSLContext)
        and ctx.verify_mode == ssl.CERT_REQUIRED
        and ctx.check_hostname
    )


def _trusted_authorities(ctx: ssl.SSLContext) -> int:
    return ctx.cert_store_stats()["x509_ca"]


@pytest.mark.parametrize("base_url", [None, "HTTPS://api.example.test/v1"])
def test_the_sync_client_verifies_tls_with_the_ca_bundle(
    verify_given: list[Any], base_url: str | None
) -> None:
    with EmbeddingsClient(api_key="k", base_url=base_url):
        pass
    [ctx] = verify_given
    assert _verifying(ctx)
    assert _trusted_authorities(ctx) > 0


async def test_the_async_client_verifies_tls_with_the_ca_bundle(
    verify_given: list[Any], refused_port: int
) -> None:
    base_url = f"https://127.0.0.1:{refused_port}/v1"
    async with AsyncEmbeddingsClient(api_key="k", base_url=base_url, max_retries=0) as client:
        with pytest.raises(APIConnectionError):
            await client.embed_query("builds this event loop's pool, then is refused")
    [ctx] = verify_given
    assert _verifying(ctx)
    assert _trusted_authorities(ctx) > 0


async def test_a_plain_http_base_url_skips_the_ca_bundle_but_still_verifies(
    verify_given: list[Any], local_server: Any
) -> None:
    settings = {"api_key": local_server.api_key, "base_url": local_server.base_url}
    with EmbeddingsClient(**settings) as client:
        client.embed_query("sync")
    async with AsyncEmbeddingsClient(**settings) as aclient:
        await aclient.embed_query("async")
    assert len(verify_given) == 2
    for ctx in verify_given:
        assert _verifying(ctx)
        assert _trusted_authorities(ctx) == 0
