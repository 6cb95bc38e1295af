"""The shortcuts kept for their measured worth (docs/internals.md) still take effect.

Each has a plain fallback, so if what it relies on changes (CPython's C API, the way orjson
and the server spell a reply) the package keeps working, only slower. These tests are what
turns such a change red instead of silently losing the gain: they run against replies the
local server really sends.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import httpx
import orjson
import pytest
from core_helpers import server_vectors, texts_of

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._wire import _vectors_hold_only_numbers


def test_the_one_pass_number_check_clears_what_the_local_server_sends(local_server: Any) -> None:
    # If it stopped clearing ordinary replies, every vector would be checked item by item,
    # correct still but about 20% more client CPU in the benchmark.
    texts = texts_of(16)
    reply = httpx.post(
        f"{local_server.base_url}/embeddings",
        json={"model": "BAAI/bge-base-en-v1.5", "input": texts},
        headers={"Authorization": f"Bearer {local_server.api_key}"},
    )
    assert reply.status_code == 200
    doc = orjson.loads(reply.content)
    assert _vectors_hold_only_numbers(reply.content, doc, doc["data"])


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's cycle collector")
async def test_vectors_from_both_clients_are_left_out_of_the_cycle_collector(
    local_server: Any,
) -> None:
    # If PyObject_GC_UnTrack could no longer be had through ctypes, the vectors would stay
    # tracked, correct still but with the collector walking every one of them on every pass.
    texts = texts_of(5)
    settings = {"api_key": local_server.api_key, "base_url": local_server.base_url}
    with EmbeddingsClient(**settings) as client:
        sync_vectors = client.embed_documents(texts)
    async with AsyncEmbeddingsClient(**settings) as aclient:
        async_vectors = await aclient.embed_documents(texts)
    for vectors in (sync_vectors, async_vectors):
        assert vectors == server_vectors(texts)
        assert not any(gc.is_tracked(v) for v in vectors)
