"""The client end to end against a real infinity server, when one is given.

Set ``AIML_BGE_INFINITY_URL`` to the server's root (routes at the root, no ``/v1``), e.g.
``http://127.0.0.1:7997``; ``AIML_BGE_INFINITY_KEY`` to its ``--api-key`` if it has one.
Skipped otherwise. ``scripts/test_infinity.sh`` (``make test-infinity``) starts infinity,
runs this file and stops it. Only loopback servers are accepted (the suite allows no other).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from aiml_bge_integrations import (
    AsyncEmbeddingsClient,
    EmbeddingsClient,
    ItemRejectedError,
    ModelMismatchWarning,
    NotFoundError,
)

URL = os.environ.get("AIML_BGE_INFINITY_URL", "").rstrip("/")
KEY = os.environ.get("AIML_BGE_INFINITY_KEY") or "no-key-needed"

pytestmark = pytest.mark.skipif(not URL, reason="AIML_BGE_INFINITY_URL is not set")

DIM = 384
"""all-MiniLM-L6-v2's vector length."""
# infinity 0.0.78 refuses a string longer than 8192 * 15 characters.
OVERSIZED = "x" * (8192 * 15 + 1)
TOPICS = "rivers mountains deserts forests glaciers volcanoes islands canyons lakes caves reefs plains swamps dunes fjords meadows tundra savannas valleys cliffs"
TEXTS = [f"Passage {i} is about {topic}." for i, topic in enumerate(TOPICS.split())]


@pytest.fixture(scope="module")
def served_model() -> str:
    """The name infinity serves, from ``GET /models``."""
    assert urlsplit(URL).hostname in ("127.0.0.1", "localhost", "::1"), URL
    reply = httpx.get(f"{URL}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    reply.raise_for_status()
    return str(reply.json()["data"][0]["id"])


@pytest.fixture
def client(served_model: str) -> Iterator[EmbeddingsClient]:
    with EmbeddingsClient(
        base_url=URL, api_key=KEY, model=served_model, batch_size=8, timeout=120
    ) as c:
        yield c


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_vectors_count_length_and_order(client: EmbeddingsClient) -> None:
    vectors = client.embed_documents(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(len(v) == DIM for v in vectors)
    # Order: each batched vector is the one the same text gets alone, and no other's.
    for i in (0, 7, 8, 19):
        alone = client.embed_documents([TEXTS[i]])[0]
        assert _cosine(vectors[i], alone) > 0.9999
        others = [_cosine(alone, v) for j, v in enumerate(vectors) if j != i]
        assert max(others) < 0.99
    assert client.usage.requests >= 3 + 4  # 20 texts in batches of 8, then 4 alone


async def test_async_client_agrees(served_model: str, client: EmbeddingsClient) -> None:
    expected = client.embed_documents(TEXTS)
    async with AsyncEmbeddingsClient(
        base_url=URL, api_key=KEY, model=served_model, batch_size=8, timeout=120
    ) as aclient:
        vectors = await aclient.embed_documents(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(_cosine(a, b) > 0.9999 for a, b in zip(vectors, expected, strict=True))


def test_base64_matches_float(served_model: str, client: EmbeddingsClient) -> None:
    floats = client.embed_documents(TEXTS[:5])
    with EmbeddingsClient(
        base_url=URL, api_key=KEY, model=served_model, encoding_format="base64", timeout=120
    ) as b64:
        packed = b64.embed_documents(TEXTS[:5])
    assert all(len(v) == DIM for v in packed)
    assert all(_cosine(a, b) > 0.9999 for a, b in zip(packed, floats, strict=True))


def test_batch_over_the_server_item_limit(served_model: str) -> None:
    """``scripts/test_infinity.sh`` starts infinity with a limit of 8 items per request."""
    with EmbeddingsClient(
        base_url=URL, api_key=KEY, model=served_model, batch_size=64, timeout=120
    ) as big:
        vectors = big.embed_documents(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(len(v) == DIM for v in vectors)


def test_oversized_item_is_named(client: EmbeddingsClient) -> None:
    texts = list(TEXTS[:12])
    texts[10] = OVERSIZED
    try:
        client.embed_documents(texts)
    except ItemRejectedError as err:
        assert err.index == 10
        assert err.status_code == 422
        # infinity names the item in detail[].loc: the refused batch is not bisected.
        assert client.usage.splits == 0
        assert client.usage.requests <= 2  # the batches [0, 8) and [8, 12)
    else:
        pytest.skip("this server embeds a text of 122,881 characters instead of refusing it")


def test_another_model_name_is_said_once(served_model: str) -> None:
    # A single-model infinity answers any model name with its own vectors.
    asked = "BAAI/bge-small-en-v1.5"
    with EmbeddingsClient(base_url=URL, api_key=KEY, model=asked, timeout=120) as other:
        with pytest.warns(ModelMismatchWarning) as caught:
            vectors = other.embed_documents(TEXTS[:3])
        with warnings.catch_warnings():
            warnings.simplefilter("error", ModelMismatchWarning)
            other.embed_documents(TEXTS[3:5])
    assert [len(v) for v in vectors] == [DIM] * 3
    message = str(caught[0].message)
    assert asked in message and served_model in message


def test_wrong_root_is_not_found(served_model: str) -> None:
    with (
        EmbeddingsClient(base_url=f"{URL}/v1", api_key=KEY, model=served_model) as wrong,
        pytest.raises(NotFoundError) as caught,
    ):
        wrong.embed_documents(TEXTS[:2])
    assert caught.value.status_code == 404
    assert f"{URL}/v1/embeddings" in str(caught.value)


def test_its_published_models_are_read_before_the_first_batch(
    served_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="aiml_bge_integrations"),
        EmbeddingsClient(base_url=URL, api_key=KEY, model=served_model, timeout=120) as c,
    ):
        assert len(c.embed_documents(TEXTS[:2])) == 2
    assert f"server='infinity', models=['{served_model}']" in caplog.text
    assert f"{URL}/models" in caplog.text
