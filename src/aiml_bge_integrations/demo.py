"""The demo (``aiml-bge demo``, ``make demo``): the main job in miniature.

It embeds the package's small corpus (``demo_corpus``), answers each query by cosine
similarity and prints the top passages, the usage (requests, tokens, credits) and the time.
Then the same queries go through LangChain (``InMemoryVectorStore`` retriever over
``AimlBgeEmbeddings``) and LlamaIndex (``VectorStoreIndex`` retriever over
``AimlBgeEmbedding``), each part skipped with a note when its extra is not installed.

With ``AIMLAPI_API_KEY`` set it calls the real API (``AIMLAPI_BASE_URL`` or the default).
Without it, it starts the local server on 127.0.0.1 and says so: that server is a stand-in
whose vectors come from hashed words, so the rankings show the plumbing, not BGE's quality.
Without a key nothing is sent anywhere but loopback.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from ._settings import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .client import EmbeddingsClient, Usage
from .demo_corpus import PASSAGE_TEXT, PASSAGES, QUERIES
from .errors import ConfigurationError

__all__ = ["Endpoint", "cosine_rank", "run_demo"]

_SNIPPET = 72


@dataclass(frozen=True)
class Endpoint:
    """Where the demo sends its requests."""

    base_url: str
    api_key: str
    local: bool
    """True when this is the local stand-in server the demo started itself."""


@contextmanager
def _endpoint(out: TextIO) -> Iterator[Endpoint]:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        base_url = os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL
        print(f"Using the API at {base_url} (key from {API_KEY_ENV}).", file=out)
        yield Endpoint(base_url, key, local=False)
        return
    try:
        from .server import LocalServer
    except ImportError as err:
        raise ConfigurationError(
            f"{API_KEY_ENV} is not set and the local server is not installed ({err}): set "
            f"{API_KEY_ENV}, or pip install 'aiml-bge-integrations[server]'"
        ) from None
    with LocalServer() as server:
        assert server.api_key is not None
        print(
            f"{API_KEY_ENV} is not set, so the demo started the LOCAL STAND-IN server at "
            f"{server.base_url}.\nIts vectors come from hashed words, NOT from the BGE model: "
            "rankings show the plumbing, not BGE's quality. Nothing leaves this machine.\n"
            f"Set {API_KEY_ENV} to run the same demo against the real API.",
            file=out,
        )
        yield Endpoint(server.base_url, server.api_key, local=True)


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def cosine_rank(
    query: Sequence[float], vectors: Sequence[Sequence[float]]
) -> list[tuple[int, float]]:
    """``(index, cosine)`` of every vector, best first (ties keep corpus order)."""
    qn = math.sqrt(_dot(query, query)) or 1.0
    scores = []
    for i, v in enumerate(vectors):
        vn = math.sqrt(_dot(v, v)) or 1.0
        scores.append((i, _dot(query, v) / (qn * vn)))
    return sorted(scores, key=lambda s: -s[1])


def _snippet(text: str) -> str:
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3].rstrip() + "..."


def _usage_line(usage: Usage | None) -> str:
    if usage is None:
        return ""
    return (
        f"{usage.requests} requests, {usage.prompt_tokens:,} tokens, {usage.credits:,.0f} credits"
    )


def _mark(found: str, expected: str) -> str:
    return "ok" if found == expected else f"MISS (expected {expected})"


def _core_part(endpoint: Endpoint, top_k: int, out: TextIO) -> int:
    print("\n== Core: EmbeddingsClient, cosine similarity ==", file=out)
    started = time.perf_counter()
    with EmbeddingsClient(api_key=endpoint.api_key, base_url=endpoint.base_url) as client:
        print(f"model {client.model}", file=out)
        vectors = client.embed_documents([text for _, text in PASSAGES])
        print(
            f"embedded {len(vectors)} passages ({len(vectors[0])}-d vectors) "
            f"in {time.perf_counter() - started:.2f} s",
            file=out,
        )
        hits = 0
        for query, expected in QUERIES:
            ranked = cosine_rank(client.embed_query(query), vectors)
            print(f"\nQ: {query}", file=out)
            for rank, (i, score) in enumerate(ranked[:top_k], 1):
                pid, text = PASSAGES[i]
                print(f"  {rank}. {pid:<18} {score:.3f}  {_snippet(text)}", file=out)
            top = PASSAGES[ranked[0][0]][0]
            hits += top == expected
            print(f"  top passage: {top} {_mark(top, expected)}", file=out)
        elapsed = time.perf_counter() - started
        print(
            f"\ncore: {hits}/{len(QUERIES)} queries answered with the expected passage first; "
            f"usage {_usage_line(client.usage)}; time {elapsed:.2f} s",
            file=out,
        )
    return hits


def _framework_report(
    name: str,
    retrieve: Callable[[str], list[str]],
    usage: Callable[[], Usage | None],
    started: float,
    out: TextIO,
) -> int:
    hits = 0
    for query, expected in QUERIES:
        ids = retrieve(query)
        top = ids[0] if ids else "(nothing)"
        hits += top == expected
        print(f"Q: {query}\n  top: {', '.join(ids)}  {_mark(top, expected)}", file=out)
    elapsed = time.perf_counter() - started
    line = _usage_line(usage())
    print(
        f"{name}: {hits}/{len(QUERIES)} queries answered with the expected passage first; "
        f"{'usage ' + line + '; ' if line else ''}time {elapsed:.2f} s",
        file=out,
    )
    return hits


def _langchain_part(endpoint: Endpoint, top_k: int, out: TextIO) -> None:
    print("\n== LangChain: InMemoryVectorStore retriever over AimlBgeEmbeddings ==", file=out)
    try:
        from langchain_core.documents import Document
        from langchain_core.vectorstores import InMemoryVectorStore

        from .langchain import AimlBgeEmbeddings
    except ImportError as err:
        print(
            f"skipped: LangChain is not installed ({err}); "
            "pip install 'aiml-bge-integrations[langchain]'",
            file=out,
        )
        return
    started = time.perf_counter()
    embeddings = AimlBgeEmbeddings(api_key=endpoint.api_key, base_url=endpoint.base_url)
    try:
        store = InMemoryVectorStore(embedding=embeddings)
        store.add_documents(
            [Document(page_content=text, metadata={"pid": pid}) for pid, text in PASSAGES],
            ids=[pid for pid, _ in PASSAGES],
        )
        retriever = store.as_retriever(search_kwargs={"k": top_k})

        def retrieve(query: str) -> list[str]:
            return [str(doc.metadata["pid"]) for doc in retriever.invoke(query)]

        _framework_report(
            "langchain", retrieve, lambda: getattr(embeddings, "usage", None), started, out
        )
    finally:
        close = getattr(embeddings, "close", None)
        if close is not None:
            close()


def _llama_index_part(endpoint: Endpoint, top_k: int, out: TextIO) -> None:
    print("\n== LlamaIndex: VectorStoreIndex retriever over AimlBgeEmbedding ==", file=out)
    try:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        from .llama_index import AimlBgeEmbedding
    except ImportError as err:
        print(
            f"skipped: LlamaIndex is not installed ({err}); "
            "pip install 'aiml-bge-integrations[llama-index]'",
            file=out,
        )
        return
    started = time.perf_counter()
    embed_model = AimlBgeEmbedding(api_key=endpoint.api_key, base_url=endpoint.base_url)
    try:
        nodes = [TextNode(id_=pid, text=text) for pid, text in PASSAGES]
        index = VectorStoreIndex(nodes, embed_model=embed_model)
        retriever = index.as_retriever(similarity_top_k=top_k)

        def retrieve(query: str) -> list[str]:
            return [str(hit.node.node_id) for hit in retriever.retrieve(query)]

        _framework_report(
            "llama-index", retrieve, lambda: getattr(embed_model, "usage", None), started, out
        )
    finally:
        close = getattr(embed_model, "close", None)
        if close is not None:
            close()


def run_demo(top_k: int = 3, out: TextIO | None = None) -> int:
    """Run the demo, printing to ``out`` (default stdout); returns the exit code (0)."""
    out = out or sys.stdout
    started = time.perf_counter()
    print(
        f"aiml-bge demo: embed {len(PASSAGES)} short passages and answer {len(QUERIES)} "
        "questions by cosine similarity.",
        file=out,
    )
    with _endpoint(out) as endpoint:
        _core_part(endpoint, top_k, out)
        _langchain_part(endpoint, top_k, out)
        _llama_index_part(endpoint, top_k, out)
    if endpoint.local:
        print(
            "\n(Local stand-in server: similar words, not similar meaning. Expected passages "
            f"are listed in aiml_bge_integrations.demo_corpus; {len(PASSAGE_TEXT)} passages.)",
            file=out,
        )
    print(f"\ndemo finished in {time.perf_counter() - started:.2f} s", file=out)
    return 0
