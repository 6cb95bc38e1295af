"""Building the persisted stores, in the test process (reloading happens in ``store_child.py``).

Every store gets our embeddings explicitly: Chroma would otherwise fall back to its default
embedding function, which downloads an ONNX model. The test process runs under pytest-socket,
so any attempt to leave loopback here fails the test.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from aiml_bge_integrations.demo_corpus import PASSAGES

__all__ = ["BUILDERS", "COLLECTION", "chroma_settings"]

COLLECTION = "demo"
IDS = [pid for pid, _ in PASSAGES]
TEXTS = [text for _, text in PASSAGES]


def chroma_settings() -> Any:
    """Chroma client settings: no telemetry."""
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def build_langchain(root: Path, base_url: str, api_key: str) -> dict[str, Any]:
    """A Chroma collection in ``root/lc-chroma`` and a FAISS index in ``root/lc-faiss``."""
    from langchain_chroma import Chroma

    with warnings.catch_warnings():  # langchain-community announces its sunset on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.vectorstores import FAISS

    from aiml_bge_integrations.langchain import AimlBgeEmbeddings

    with AimlBgeEmbeddings(base_url=base_url, api_key=api_key) as embeddings:
        metadatas = [{"id": pid} for pid in IDS]
        Chroma.from_texts(
            TEXTS,
            embeddings,  # our embeddings, always: Chroma's default would download a model
            metadatas=metadatas,
            ids=IDS,
            collection_name=COLLECTION,
            persist_directory=str(root / "lc-chroma"),
            client_settings=chroma_settings(),
        )
        FAISS.from_texts(TEXTS, embeddings, metadatas=metadatas, ids=IDS).save_local(
            str(root / "lc-faiss")
        )
        usage = embeddings.usage
    return {"texts_embedded": usage.texts, "requests": usage.requests}


def _nodes() -> list[Any]:
    from llama_index.core.schema import TextNode

    return [TextNode(id_=pid, text=text) for pid, text in PASSAGES]


def build_llama_index(root: Path, base_url: str, api_key: str) -> dict[str, Any]:
    """A ``ChromaVectorStore`` index in ``root/li-chroma`` and the default storage in ``root/li-storage``."""
    import chromadb
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from aiml_bge_integrations.llama_index import AimlBgeEmbedding

    embed_model = AimlBgeEmbedding(base_url=base_url, api_key=api_key)
    try:
        client = chromadb.PersistentClient(path=str(root / "li-chroma"), settings=chroma_settings())
        collection = client.get_or_create_collection(COLLECTION, embedding_function=None)
        store = ChromaVectorStore(chroma_collection=collection)
        VectorStoreIndex(
            _nodes(),
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
        )

        index = VectorStoreIndex(_nodes(), embed_model=embed_model)
        index.storage_context.persist(persist_dir=str(root / "li-storage"))
        usage = embed_model.usage
    finally:
        embed_model.close()
    return {"texts_embedded": usage.texts, "requests": usage.requests}


BUILDERS = {"langchain": build_langchain, "llama_index": build_llama_index}
"""Store builders by framework."""
