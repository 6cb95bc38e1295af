"""Helpers for the core tests: the local server's exact vectors, recorded sleeps, client factories.

These tests talk to the local server over real HTTP on 127.0.0.1 (the shared ``local_server``
or a dedicated ``make_server(...)`` from tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient, Usage
from aiml_bge_integrations.server import HashingEmbedder

_EMBEDDER = HashingEmbedder()


def server_vectors(texts: Iterable[str]) -> list[list[float]]:
    """Exactly what a fault-free server sends as JSON floats for ``texts``.

    The server rounds HashingEmbedder's float64 vectors to float32 (as the real API's floats
    are) and writes each as the shortest decimal that reads back as that float32.
    """
    f32 = _EMBEDDER.embed(list(texts)).astype("<f4")
    vectors: list[list[float]] = orjson.loads(orjson.dumps(f32, option=orjson.OPT_SERIALIZE_NUMPY))
    return vectors


def server_vectors_base64(texts: Iterable[str]) -> list[list[float]]:
    """Exactly what a fault-free server sends as base64 float32 for ``texts``, as Python floats."""
    vectors: list[list[float]] = (
        _EMBEDDER.embed(list(texts)).astype("<f4").astype(np.float64).tolist()
    )
    return vectors


def embedder_vectors(texts: Iterable[str]) -> list[list[float]]:
    """HashingEmbedder's own float64 vectors (``embed_one``), for float32-tolerance checks."""
    return [_EMBEDDER.embed_one(t) for t in texts]


def assert_close_to_embedder(got: list[list[float]], texts: list[str]) -> None:
    """Every vector equals HashingEmbedder's within float32 rounding."""
    want = np.asarray(embedder_vectors(texts))
    have = np.asarray(got, dtype=np.float64)
    assert have.shape == want.shape
    np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-7)


def texts_of(n: int, prefix: str = "passage") -> list[str]:
    """``n`` distinct texts with shared words (so vectors differ but are not random)."""
    topics = ["music", "rivers", "compilers", "bread", "orbits", "tennis", "glaciers", "poetry"]
    return [f"{prefix} {i}: notes on {topics[i % len(topics)]} and item{i}" for i in range(n)]


class Sleeps:
    """Records every retry/limiter delay the clients ask for, without sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def sync(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def async_(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


SLEEPS: Sleeps | None = None
"""Set by the ``sleeps`` fixture: the clients made here record their waits in it."""


def _record_waits(client: Any) -> Any:
    if SLEEPS is not None:
        client.retry_policy.sleep = SLEEPS.sync
        client.retry_policy.asleep = SLEEPS.async_
    return client


def sync_client(server: Any, **settings: Any) -> EmbeddingsClient:
    """A sync client pointed at ``server`` (its waits recorded under the ``sleeps`` fixture)."""
    settings.setdefault("api_key", server.api_key)
    settings.setdefault("base_url", server.base_url)
    client: EmbeddingsClient = _record_waits(EmbeddingsClient(**settings))
    return client


def async_client(server: Any, **settings: Any) -> AsyncEmbeddingsClient:
    """An async client pointed at ``server`` (its waits recorded under the ``sleeps`` fixture)."""
    settings.setdefault("api_key", server.api_key)
    settings.setdefault("base_url", server.base_url)
    client: AsyncEmbeddingsClient = _record_waits(AsyncEmbeddingsClient(**settings))
    return client


@dataclass
class Outcome:
    """What one ``embed_documents`` call came to."""

    vectors: list[list[float]] | None
    error: BaseException | None
    usage: Usage


def run_embed(mode: str, server: Any, texts: Any, **settings: Any) -> Outcome:
    """``embed_documents`` with a fresh sync or async client against ``server``."""
    if mode == "sync":
        with sync_client(server, **settings) as client:
            try:
                return Outcome(client.embed_documents(texts), None, client.usage)
            except Exception as err:  # the tests inspect it
                return Outcome(None, err, client.usage)

    async def run() -> Outcome:
        async with async_client(server, **settings) as client:
            try:
                return Outcome(await client.embed_documents(texts), None, client.usage)
            except Exception as err:
                return Outcome(None, err, client.usage)

    return asyncio.run(run())


MODES = ["sync", "async"]
