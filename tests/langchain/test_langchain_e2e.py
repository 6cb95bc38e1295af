"""End to end with LangChain's own components over the demo corpus: a vector store, a
retriever and an embeddings cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_classic.storage import LocalFileStore
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from aiml_bge_integrations.langchain import AimlBgeEmbeddings

Factory = Callable[..., AimlBgeEmbeddings]
Corpus = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def _store(emb: AimlBgeEmbeddings, passages: list[tuple[str, str]]) -> InMemoryVectorStore:
    return InMemoryVectorStore.from_texts(
        [text for _, text in passages], emb, metadatas=[{"id": pid} for pid, _ in passages]
    )


def test_vector_store_returns_the_passage_that_answers_each_query(
    make_embeddings: Factory, corpus: Corpus, local_server: Any
) -> None:
    passages, queries = corpus
    text_of = dict(passages)
    emb = make_embeddings(batch_size=16)
    store = _store(emb, passages)
    assert local_server.stats.requests == -(-len(passages) // 16)  # batches of 16
    for query, expected in queries:
        (best,) = store.similarity_search(query, k=1)
        assert best == Document(
            id=best.id, page_content=text_of[expected], metadata={"id": expected}
        )


def test_retriever_answers_every_demo_query(make_embeddings: Factory, corpus: Corpus) -> None:
    passages, queries = corpus
    retriever = _store(make_embeddings(), passages).as_retriever(search_kwargs={"k": 3})
    answers = {query: [d.metadata["id"] for d in retriever.invoke(query)] for query, _ in queries}
    assert {query: ids[0] for query, ids in answers.items()} == dict(queries)
    assert all(len(ids) == 3 == len(set(ids)) for ids in answers.values())


async def test_async_vector_store_and_retriever(make_embeddings: Factory, corpus: Corpus) -> None:
    passages, queries = corpus
    emb = make_embeddings()
    store = await InMemoryVectorStore.afrom_texts(
        [text for _, text in passages], emb, metadatas=[{"id": pid} for pid, _ in passages]
    )
    retriever = store.as_retriever(search_kwargs={"k": 2})
    for query, expected in queries:
        docs = await retriever.ainvoke(query)
        assert docs[0].metadata["id"] == expected, query
    # All of it went through the async client: the sync one, built now, has sent nothing.
    assert emb.async_client.usage.requests > 0 and emb.client.usage.requests == 0


def test_cache_backed_embeddings_second_run_sends_nothing(
    local_server: Any, corpus: Corpus, tmp_path: Path
) -> None:
    passages, queries = corpus
    texts = [text for _, text in passages]
    query = queries[0][0]

    def run() -> tuple[list[list[float]], list[float], AimlBgeEmbeddings]:
        emb = AimlBgeEmbeddings(
            api_key=local_server.api_key, base_url=local_server.base_url, batch_size=10
        )
        cached = CacheBackedEmbeddings.from_bytes_store(
            emb,
            LocalFileStore(tmp_path / "cache"),
            namespace=emb.model,
            query_embedding_cache=True,
            key_encoder="sha256",
        )
        vectors = cached.embed_documents(texts)
        query_vector = cached.embed_query(query)
        emb.close()
        return vectors, query_vector, emb

    first_vectors, first_query, first = run()
    assert first.usage.texts == len(texts) + 1
    assert local_server.stats.requests == first.usage.requests == -(-len(texts) // 10) + 1

    local_server.reset_stats()
    second_vectors, second_query, second = run()
    assert local_server.stats.requests == 0
    assert second.usage.requests == 0
    assert second_vectors == first_vectors
    assert second_query == first_query
    assert len([p for p in (tmp_path / "cache").rglob("*") if p.is_file()]) == len(texts) + 1
