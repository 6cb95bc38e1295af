"""The adapter inside LlamaIndex: a vector index, ingestion pipelines, caches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.storage.kvstore import SimpleKVStore

from aiml_bge_integrations import EmbeddingsClient
from aiml_bge_integrations.demo_corpus import PASSAGE_TEXT, PASSAGES, QUERIES
from aiml_bge_integrations.llama_index import AimlBgeEmbedding


def corpus_documents(*, metadata: bool = True) -> list[Document]:
    # The passage id rides along as metadata but is not embedded: retrieval sees the text only.
    return [
        Document(
            text=text,
            id_=pid,
            metadata={"pid": pid} if metadata else {},
            excluded_embed_metadata_keys=["pid"],
            excluded_llm_metadata_keys=["pid"],
        )
        for pid, text in PASSAGES
    ]


def test_vector_index_retrieves_the_expected_passage(
    li_settings: Any, embed: AimlBgeEmbedding, local_server: Any
) -> None:
    li_settings.embed_model = embed
    li_settings.llm = MockLLM()  # nothing here may reach for OpenAI
    index = VectorStoreIndex.from_documents(corpus_documents())
    assert Settings.embed_model is embed
    # The corpus went out in requests of the core's batch size, not one text each.
    assert local_server.stats.items == len(PASSAGES)
    assert local_server.stats.requests == -(-len(PASSAGES) // embed.batch_size)

    retriever = index.as_retriever(similarity_top_k=3)
    for query, expected in QUERIES:
        hits = retriever.retrieve(query)
        assert hits[0].node.get_content() == PASSAGE_TEXT[expected], query
        assert hits[0].node.metadata["pid"] == expected
    # One request per query, each with the instruction (the index never embeds a query as text).
    assert local_server.stats.requests == -(-len(PASSAGES) // embed.batch_size) + len(QUERIES)


async def test_async_vector_index_retrieves_the_expected_passage(
    li_settings: Any, embed: AimlBgeEmbedding
) -> None:
    li_settings.llm = MockLLM()
    index = VectorStoreIndex.from_documents(corpus_documents(), embed_model=embed, use_async=True)
    retriever = index.as_retriever(similarity_top_k=1)
    for query, expected in QUERIES:
        hits = await retriever.aretrieve(query)
        assert hits[0].node.get_content() == PASSAGE_TEXT[expected], query
    assert embed.async_client.usage.texts == len(PASSAGES) + len(QUERIES)
    assert embed.client.usage.requests == 0


def _pipeline(embed: AimlBgeEmbedding, **kwargs: Any) -> IngestionPipeline:
    return IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=20, chunk_overlap=0), embed], **kwargs
    )


def _assert_embeddings_are_the_cores(nodes: list[BaseNode], server: Any) -> None:
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    with EmbeddingsClient(base_url=server.base_url, api_key=server.api_key) as core:
        expected = core.embed_documents(texts)
    assert [node.embedding for node in nodes] == expected


def test_ingestion_pipeline_run_gives_the_cores_vectors(
    embed: AimlBgeEmbedding, local_server: Any
) -> None:
    nodes = _pipeline(embed).run(documents=corpus_documents(metadata=False))
    # Small chunks: the splitter cut some passages in two, so nodes outnumber documents.
    assert len(nodes) > len(PASSAGES)
    assert all(node.embedding is not None for node in nodes)
    assert local_server.stats.items == len(nodes)
    _assert_embeddings_are_the_cores(list(nodes), local_server)


async def test_ingestion_pipeline_arun_gives_the_cores_vectors(
    embed: AimlBgeEmbedding, local_server: Any
) -> None:
    nodes = await _pipeline(embed).arun(documents=corpus_documents(metadata=False))
    assert len(nodes) > len(PASSAGES)
    assert embed.async_client.usage.texts == len(nodes)
    assert embed.client.usage.requests == 0
    _assert_embeddings_are_the_cores(list(nodes), local_server)


@pytest.mark.parametrize("run", ["sync", "async"])
async def test_pipeline_cache_sends_nothing_on_a_second_run(
    local_server: Any, make_embed: Callable[..., AimlBgeEmbedding], run: str
) -> None:
    cache = IngestionCache()

    async def ingest(embed: AimlBgeEmbedding) -> list[BaseNode]:
        pipeline = _pipeline(embed, cache=cache)
        if run == "sync":
            return list(pipeline.run(documents=corpus_documents(metadata=False)))
        return list(await pipeline.arun(documents=corpus_documents(metadata=False)))

    first = await ingest(make_embed(local_server))
    sent = local_server.stats.requests
    assert sent > 0
    # A new adapter with the same settings (and so the same cache key): nothing is sent.
    second = await ingest(make_embed(local_server))
    assert local_server.stats.requests == sent
    assert [n.embedding for n in second] == [n.embedding for n in first]
    # Different settings are a different transformation: the cache does not answer for them.
    await ingest(make_embed(local_server, model_name="BAAI/bge-base-en-v1.5", batch_size=8))
    assert local_server.stats.requests > sent


async def test_embeddings_cache_sends_only_what_it_has_not_seen(
    local_server: Any, make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    embed = make_embed(local_server, embeddings_cache=SimpleKVStore(), batch_size=4)
    texts = [text for _, text in PASSAGES[:10]]
    first = embed.get_text_embedding_batch(texts)
    assert local_server.stats.items == 10
    assert embed.get_text_embedding_batch(texts) == first
    assert await embed.aget_text_embedding_batch(texts) == first
    assert local_server.stats.items == 10
    # Only the two new texts go out.
    more = [*texts, PASSAGES[10][1], PASSAGES[11][1]]
    assert embed.get_text_embedding_batch(more)[:10] == first
    assert local_server.stats.items == 12
    # Queries are cached too, with the instruction applied on the first, sent, call.
    query = embed.get_query_embedding("a question")
    assert embed.get_query_embedding("a question") == query
    assert local_server.stats.items == 13


def test_settings_llm_none_keeps_openai_out(li_settings: Any, embed: AimlBgeEmbedding) -> None:
    li_settings.llm = None  # LlamaIndex turns this into its MockLLM
    li_settings.embed_model = embed
    assert isinstance(Settings.llm, MockLLM)
    index = VectorStoreIndex.from_documents(corpus_documents()[:5])
    engine = index.as_query_engine(similarity_top_k=1)
    answer = engine.query("Why does the planet Mars look red?")
    assert answer.source_nodes[0].node.get_content() == PASSAGE_TEXT["astro-mars"]
