"""The shortcuts kept for their measured worth (docs/internals.md) still take effect.

Each has a plain fallback, so if what it relies on changes (CPython's C API, the way orjson
and the server spell a reply) the package keeps working, only slower. These tests are what
turns such a change red instead of silently losing the gain: they run against replies the
local server really sends.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from core_helpers import texts_of

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
