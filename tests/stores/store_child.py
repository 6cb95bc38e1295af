"""Reload persisted vector stores and query them in a fresh process (run by the tests, not collected).

Usage: ``python store_child.py {langchain,llama_index} DIR``

The key and base URL come from ``AIMLAPI_API_KEY`` and ``AIMLAPI_BASE_URL`` (the tests point
them at a local server on 127.0.0.1). Before anything else is imported, every socket
connection and name lookup outside loopback is refused and recorded, so a store that tried to
download a default embedding model or send telemetry would show up in the report. The last
line of stdout is ``RESULT <json>``.
"""

from __future__ import annotations

import socket
import sys

_ATTEMPTS: list[str] = []
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _allowed(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in _LOOPBACK or host.startswith("127.")
    return True  # Unix sockets (asyncio's self-pipe) are local


def _connect(self: socket.socket, address: object) -> None:
    if not _allowed(address):
        _ATTEMPTS.append(f"connect {address!r}")
        raise OSError(f"store_child: network access outside loopback refused: {address!r}")
    _real_connect(self, address)  # type: ignore[arg-type]


def _connect_ex(self: socket.socket, address: object) -> int:
    if not _allowed(address):
        _ATTEMPTS.append(f"connect_ex {address!r}")
        return 111
    return _real_connect_ex(self, address)  # type: ignore[arg-type]


def _getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if host is not None and not _allowed((host,)):
        _ATTEMPTS.append(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"store_child: name lookup refused: {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _getaddrinfo  # type: ignore[assignment]

import asyncio  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

from aiml_bge_integrations.demo_corpus import QUERIES  # noqa: E402

COLLECTION = "demo"


def _floats(vector: Any) -> list[float]:
    return [float(x) for x in vector]


def _chroma_settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


# ----------------------------------------------------------------------------- LangChain


def langchain_query(root: Path) -> dict[str, Any]:
    from langchain_chroma import Chroma
    from langchain_community.vectorstores import FAISS

    from aiml_bge_integrations.langchain import AimlBgeEmbeddings

    out: dict[str, Any] = {}
    with AimlBgeEmbeddings() as embeddings:
        chroma = Chroma(
            collection_name=COLLECTION,
            embedding_function=embeddings,
            persist_directory=str(root / "lc-chroma"),
            client_settings=_chroma_settings(),
            create_collection_if_not_exists=False,
        )
        stored = chroma.get(include=["embeddings"])
        out["chroma"] = {
            "hits": {
                q: [
                    [doc.metadata["id"], float(score)]
                    for doc, score in chroma.similarity_search_with_score(q, k=3)
                ]
                for q, _ in QUERIES
            },
            "stored": {
                i: _floats(v) for i, v in zip(stored["ids"], stored["embeddings"], strict=True)
            },
        }

        faiss = FAISS.load_local(
            str(root / "lc-faiss"), embeddings, allow_dangerous_deserialization=True
        )
        out["faiss"] = {
            "hits": {
                q: [
                    [doc.metadata["id"], float(score)]
                    for doc, score in faiss.similarity_search_with_score(q, k=3)
                ]
                for q, _ in QUERIES
            },
            "stored": {
                doc_id: _floats(faiss.index.reconstruct(pos))
                for pos, doc_id in faiss.index_to_docstore_id.items()
            },
        }
        out["query_requests"] = embeddings.usage.requests
    return out


# ----------------------------------------------------------------------------- LlamaIndex


def _retrieve(index: Any) -> dict[str, list[list[Any]]]:
    retriever = index.as_retriever(similarity_top_k=3)
    return {
        q: [[hit.node.node_id, float(hit.score)] for hit in retriever.retrieve(q)]
        for q, _ in QUERIES
    }


async def _aretrieve_all(retriever: Any) -> dict[str, Any]:
    # The async path: LlamaIndex's aretrieve -> the adapter's async query embedding.
    results = await asyncio.gather(*(retriever.aretrieve(q) for q, _ in QUERIES))
    return {q: hits for (q, _), hits in zip(QUERIES, results, strict=True)}


def llama_index_query(root: Path) -> dict[str, Any]:
    import chromadb
    from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from aiml_bge_integrations.llama_index import AimlBgeEmbedding

    out: dict[str, Any] = {}
    embed_model = AimlBgeEmbedding()
    try:
        client = chromadb.PersistentClient(
            path=str(root / "li-chroma"), settings=_chroma_settings()
        )
        collection = client.get_collection(COLLECTION, embedding_function=None)
        index = VectorStoreIndex.from_vector_store(
            ChromaVectorStore(chroma_collection=collection), embed_model=embed_model
        )
        stored = collection.get(include=["embeddings"])
        out["chroma"] = {
            "hits": _retrieve(index),
            "stored": {
                i: _floats(v) for i, v in zip(stored["ids"], stored["embeddings"], strict=True)
            },
        }

        context = StorageContext.from_defaults(persist_dir=str(root / "li-storage"))
        loaded = load_index_from_storage(context, embed_model=embed_model)
        retriever = loaded.as_retriever(similarity_top_k=3)
        out["storage"] = {
            "hits": _retrieve(loaded),
            "async_hits": {
                q: [[hit.node.node_id, float(hit.score)] for hit in hits]
                for q, hits in asyncio.run(_aretrieve_all(retriever)).items()
            },
            "stored": {
                node_id: _floats(vector)
                for node_id, vector in loaded.vector_store.data.embedding_dict.items()
            },
        }
        out["query_requests"] = embed_model.usage.requests
    finally:
        embed_model.close()
    return out


QUERIERS = {"langchain": langchain_query, "llama_index": llama_index_query}


def main(argv: list[str]) -> int:
    framework, directory = argv
    result = QUERIERS[framework](Path(directory))
    result["network_attempts"] = _ATTEMPTS
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
