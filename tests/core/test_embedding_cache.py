"""The ``cache`` setting on the clients: hits cost no request, every key part counts.

Against a small scripted server on 127.0.0.1 that records every request
(tests/support/scripted_server.py); the cache is a file in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_server import ScriptedServer, vector_of

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations.errors import ItemRejectedError, ModelMismatchWarning

MODEL = "custom-embedder-a"
"""A model with no known dimension or prompt: what the scripted server sends is accepted."""


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def _client(server: ScriptedServer, cache: Path, **settings: Any) -> EmbeddingsClient:
    settings.setdefault("model", MODEL)
    settings.setdefault("base_url", server.base_url)
    return EmbeddingsClient(api_key="k", cache=str(cache), **settings)


def test_a_second_call_is_answered_from_the_cache_without_a_request(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.sqlite"
    texts = ["alpha", "beta", "alpha"]
    with _client(server, cache) as first:
        assert first.embed_documents(texts) == [vector_of(t) for t in texts]
        assert server.sent_texts() == ["alpha", "beta"]  # a repeated text is sent once
        u = first.usage
        assert (u.cache_hits, u.cache_misses, u.requests, u.texts) == (0, 3, 1, 3)
    with _client(server, cache) as second:
        assert second.embed_documents(texts) == [vector_of(t) for t in texts]
        assert second.embed_documents(["beta", "gamma"]) == [vector_of("beta"), vector_of("gamma")]
        u = second.usage
        assert (u.cache_hits, u.cache_misses, u.requests) == (4, 1, 1)
    assert server.sent_texts() == ["alpha", "beta", "gamma"]


def test_an_all_hit_call_sends_nothing_and_keeps_the_order(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cache = tmp_path / "c.sqlite"
    texts = [f"passage {i}" for i in range(10)]
    with _client(server, cache, batch_size=3) as client:
        client.embed_documents(texts)
        sent = len(server.posts())
        assert sent == 4
        again = list(reversed(texts))
        assert client.embed_documents(again) == [vector_of(t) for t in again]
        assert list(client.iter_embeddings(iter(again))) == [vector_of(t) for t in again]
        chunks = list(client.iter_chunks(again, 4))
        assert [len(c) for c in chunks] == [4, 4, 2]
        assert len(server.posts()) == sent


def _changed(name: str, server: ScriptedServer, other: ScriptedServer) -> dict[str, Any]:
    return {
        "model": {"model": "custom-embedder-b"},
        "long_text": {"long_text": "none"},
        "encoding_format": {"encoding_format": "float"},
        "server_root": {"base_url": other.base_url},
        "document_instruction": {"document_instruction": "passage: "},
        "document_input_type": {"document_input_type": "passage"},
    }[name]


@pytest.mark.parametrize(
    "part",
    [
        "model",
        "long_text",
        "encoding_format",
        "server_root",
        "document_instruction",
        "document_input_type",
    ],
)
def test_each_key_part_changed_alone_is_a_miss(
    part: str, server: ScriptedServer, tmp_path: Path
) -> None:
    cache = tmp_path / "c.sqlite"
    with ScriptedServer() as other:
        with _client(server, cache) as base:
            base.embed_documents(["same text"])
        with _client(server, cache, **_changed(part, server, other)) as changed:
            changed.embed_documents(["same text"])
            assert changed.usage.cache_misses == 1
        assert len(server.posts()) + len(other.posts()) == 2
        with _client(server, cache) as unchanged:  # the original still hits
            unchanged.embed_documents(["same text"])
            assert unchanged.usage.cache_hits == 1


def test_the_side_and_its_prompt_are_key_parts(server: ScriptedServer, tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with _client(server, cache, query_instruction=None) as client:
        client.embed_documents(["what is x"])
        client.embed_query("what is x")  # the same text sent, on the query side: a miss
        assert client.usage.cache_misses == 2
        client.embed_query("what is x")
        assert client.usage.cache_hits == 1
    with _client(server, cache, query_instruction="Q: ") as prompted:
        prompted.embed_query("what is x")
        assert prompted.usage.cache_misses == 1
    assert server.sent_texts() == ["what is x", "what is x", "Q: what is x"]


def test_vectors_are_stored_under_the_model_the_server_says_it_serves(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cache = tmp_path / "c.sqlite"
    server.model = "vendor/served-model"
    with _client(server, cache) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelMismatchWarning)
        client.embed_documents(["t"])
        # From now on this client keys by the served model: no second request for "t".
        client.embed_documents(["t"])
        assert len(server.posts()) == 1
    with _client(server, cache, model="vendor/served-model") as named:
        named.embed_documents(["t"])
        assert named.usage.cache_hits == 1
    with _client(server, cache) as fresh, warnings.catch_warnings():
        # A new client asking for the old name knows nothing yet: it asks the server.
        warnings.simplefilter("ignore", ModelMismatchWarning)
        fresh.embed_documents(["t"])
        assert fresh.usage.cache_misses == 1


def test_the_async_client_hits_the_same_cache(server: ScriptedServer, tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with _client(server, cache) as sync:
        sync.embed_documents(["a", "b"])

    async def run() -> tuple[list[list[float]], Any]:
        client = AsyncEmbeddingsClient(
            api_key="k", model=MODEL, base_url=server.base_url, cache=str(cache)
        )
        async with client:
            got = await client.embed_documents(["b", "c", "a"])
            streamed = [v async for v in client.iter_embeddings(iter(["c", "a"]))]
            assert streamed == [vector_of("c"), vector_of("a")]
            return got, client.usage

    got, usage = asyncio.run(run())
    assert got == [vector_of(t) for t in ["b", "c", "a"]]
    assert (usage.cache_hits, usage.cache_misses) == (4, 1)
    assert server.sent_texts() == ["a", "b", "c"]


def test_a_refused_input_is_named_by_its_index_in_the_callers_texts(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cache = tmp_path / "c.sqlite"
    with _client(server, cache) as client:
        client.embed_documents(["held 0", "held 1"])
        # Sent: only "bad" (index 0 of the request); in the caller's texts it is index 2.
        server.script.append((400, {"message": "input at index 0 is invalid"}, {}))
        with pytest.raises(ItemRejectedError) as info:
            client.embed_documents(["held 0", "held 1", "bad"])
    assert info.value.index == 2
    assert "index 2" in str(info.value)


_WRITER = textwrap.dedent(
    """
    import sys
    from aiml_bge_integrations import EmbeddingsClient

    base_url, cache, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    texts = [f"text {i}" for i in range(start, start + 300)]
    with EmbeddingsClient(api_key="k", model="custom-embedder-a", base_url=base_url,
                          cache=cache, batch_size=16) as client:
        client.embed_documents(texts)
    """
)


def test_two_processes_write_the_same_cache_at_once(server: ScriptedServer, tmp_path: Path) -> None:
    cache = tmp_path / "shared.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, server.base_url, str(cache), str(start)], env=env
        )
        for start in (0, 150)  # half of each one's texts are the other's
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    texts = [f"text {i}" for i in range(450)]
    before = len(server.posts())
    with _client(server, cache) as reader:
        assert reader.embed_documents(texts) == [vector_of(t) for t in texts]
        assert reader.usage.cache_hits == 450
    assert len(server.posts()) == before


def test_a_stream_through_the_cache_sends_only_its_misses_across_windows(
    server: ScriptedServer, tmp_path: Path
) -> None:
    cache = tmp_path / "c.sqlite"
    texts = [f"t{i}" for i in range(23)]
    # Windows of batch_size x 2 x max_concurrency = 4 texts: some all hits, some mixed.
    with _client(server, cache, batch_size=2, max_concurrency=1) as client:
        client.embed_documents(texts[:6] + texts[13:15])
        before = len(server.sent_texts())
        assert list(client.iter_embeddings(iter(texts))) == [vector_of(t) for t in texts]
        assert server.sent_texts()[before:] == texts[6:13] + texts[15:]
        server.script.append((400, {"message": "input at index 0 is invalid"}, {}))
        with pytest.raises(ItemRejectedError) as info:
            list(client.iter_embeddings(iter([*texts, "new text"])))
    assert info.value.index == 23 and "index 23" in str(info.value)
