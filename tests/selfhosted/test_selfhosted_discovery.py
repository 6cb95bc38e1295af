"""What the package's discovery reads from the local server's imitations of TEI, vLLM and
infinity: the real servers' shapes on one side, the parser on the other, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
from selfhosted_support import SERVER_KEY

from aiml_bge_integrations._discovery import discover
from aiml_bge_integrations._settings import DEFAULT_MODEL


def _get(url: str) -> tuple[int, bytes] | None:
    headers = {"Authorization": f"Bearer {SERVER_KEY}"}
    try:
        reply = httpx.get(url, headers=headers, timeout=5)
    except httpx.HTTPError:  # pragma: no cover - the server is local
        return None
    return reply.status_code, reply.content


def test_tei_publishes_its_limits(serve: Any) -> None:
    server = serve("tei", max_items_per_request=7, max_tokens_per_item=256, max_batch_tokens=900)
    limits = discover(server.base_url, _get, DEFAULT_MODEL)
    assert limits.server == "tei"
    assert limits.models == (DEFAULT_MODEL,)
    assert (limits.max_batch_size, limits.max_input_tokens, limits.max_batch_tokens) == (
        7,
        256,
        900,
    )


def test_vllm_and_infinity_publish_their_model_cards(serve: Any) -> None:
    vllm = discover(serve("vllm").base_url, _get, DEFAULT_MODEL)
    assert (vllm.server, vllm.models, vllm.max_input_tokens) == ("vllm", (DEFAULT_MODEL,), 512)
    assert vllm.max_batch_size is None  # vLLM has no /info: nothing mistaken for TEI's
    infinity = discover(serve("infinity").base_url, _get, DEFAULT_MODEL)
    assert (infinity.server, infinity.engine_batch_size) == ("infinity", 32)


def test_the_ai_ml_dialect_publishes_no_tei_facts(serve: Any) -> None:
    limits = discover(serve("aiml").base_url, _get, DEFAULT_MODEL)
    assert limits.server is None and limits.max_batch_size is None
    assert limits.models == (DEFAULT_MODEL,)
