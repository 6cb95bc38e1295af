"""Build ``notebooks/persistent_rag.ipynb`` from the cells below and execute it.

Run from the repository root with the AIMLAPI_* variables unset, so the notebook starts the
local server and the committed outputs come from it::

    env -u AIMLAPI_API_KEY -u AIMLAPI_BASE_URL .venv/bin/python notebooks/build_persistent_rag.py

The notebook runs in a temporary directory (its stores are written there and deleted at the
end). The cells are kept here as plain strings so that a change to the notebook is a readable
diff; execution timestamps are dropped for the same reason.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

__all__ = ["CELLS", "build", "main"]

NOTEBOOK = Path(__file__).with_name("persistent_rag.ipynb")

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# Persistent RAG: BGE vectors in Chroma, FAISS and LlamaIndex storage

Vectors belong in a store on disk, not in memory: embed a corpus once, persist it, and query it
from any later process. This notebook does that with both frameworks:

| framework | store | persist | reload |
|---|---|---|---|
| LangChain | Chroma (`langchain-chroma`) | `persist_directory=` | `Chroma(persist_directory=...)` |
| LangChain | FAISS (`faiss-cpu`) | `save_local` | `FAISS.load_local` |
| LlamaIndex | `ChromaVectorStore` | a `chromadb.PersistentClient` | `VectorStoreIndex.from_vector_store` |
| LlamaIndex | default storage | `storage_context.persist` | `load_index_from_storage` |

Two rules hold throughout: every store is given our embeddings explicitly (Chroma would
otherwise fall back to its default embedding function, which downloads a model), and
documents are embedded as they are while queries get the BGE retrieval instruction.""",
    ),
    (
        "markdown",
        """## 1. Install

Uncomment to install into the running kernel.""",
    ),
    (
        "code",
        """# %pip install -U "aiml-bge-integrations[langchain,llama-index]" langchain-chroma langchain-community faiss-cpu llama-index-vector-stores-chroma""",
    ),
    (
        "markdown",
        """## 2. Configure

The adapters read the key from `AIMLAPI_API_KEY` (and the server from `AIMLAPI_BASE_URL`, for
example a self-hosted TEI or vLLM: see [Self-hosting BGE](../docs/self-hosting.md)). Without a key this
notebook starts the bundled **local server** on 127.0.0.1, which answers with deterministic
stand-in vectors (lexical, not the real BGE model), so everything below runs offline. The key is
never printed.""",
    ),
    (
        "code",
        """import os
import shutil
import warnings
from pathlib import Path

# langchain-community (FAISS's home) announces its own sunset on import; nothing to act on here.
warnings.filterwarnings("ignore", message="`langchain-community` is being sunset", category=DeprecationWarning)

settings = {}
local_server = None
if os.environ.get("AIMLAPI_API_KEY"):
    print("Using AIMLAPI_API_KEY, server:", os.environ.get("AIMLAPI_BASE_URL", "https://api.aimlapi.com/v1"))
else:
    from aiml_bge_integrations.server import LocalServer

    local_server = LocalServer().start()
    settings = {"api_key": local_server.api_key, "base_url": local_server.base_url}
    print("AIMLAPI_API_KEY is not set: started the local server at", local_server.base_url)
    print("(deterministic stand-in vectors, not the real BGE model)")

DATA = Path("persistent_rag_data")  # every store of this notebook lives under here
shutil.rmtree(DATA, ignore_errors=True)""",
    ),
    (
        "markdown",
        """## 3. The corpus

Three dozen short passages on varied topics, and ten questions, each with the id of the passage
that answers it.""",
    ),
    (
        "code",
        """from aiml_bge_integrations.demo_corpus import PASSAGES, QUERIES

ids = [pid for pid, _ in PASSAGES]
texts = [text for _, text in PASSAGES]
print(f"{len(PASSAGES)} passages, {len(QUERIES)} queries")
for query, expected in QUERIES[:3]:
    print(f"  {query!r} -> {expected}")""",
    ),
    (
        "markdown",
        """## 4. LangChain: build and persist Chroma and FAISS

One `AimlBgeEmbeddings` serves both stores. Chroma writes to its directory as it goes; FAISS is
written by `save_local`. Chroma's anonymous telemetry is switched off.""",
    ),
    (
        "code",
        """from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from langchain_community.vectorstores import FAISS

from aiml_bge_integrations.langchain import AimlBgeEmbeddings

no_telemetry = ChromaSettings(anonymized_telemetry=False)
lc_embeddings = AimlBgeEmbeddings(**settings)
metadatas = [{"id": pid} for pid in ids]

Chroma.from_texts(
    texts,
    lc_embeddings,
    metadatas=metadatas,
    ids=ids,
    collection_name="demo",
    persist_directory=str(DATA / "langchain-chroma"),
    client_settings=no_telemetry,
)
FAISS.from_texts(texts, lc_embeddings, metadatas=metadatas, ids=ids).save_local(str(DATA / "langchain-faiss"))

for path in sorted(DATA.iterdir()):
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    print(f"{path.name}: {files}")
print(f"texts embedded: {lc_embeddings.usage.texts} (each passage once per store)")""",
    ),
    (
        "markdown",
        """## 5. LangChain: reload and query

New store objects that know only the directory, exactly what another process (or tomorrow's
job) would build. The embeddings object is only needed for the queries now: no passage is
embedded again.""",
    ),
    (
        "code",
        """before = lc_embeddings.usage.texts
chroma = Chroma(
    collection_name="demo",
    embedding_function=lc_embeddings,
    persist_directory=str(DATA / "langchain-chroma"),
    client_settings=no_telemetry,
    create_collection_if_not_exists=False,
)
faiss = FAISS.load_local(str(DATA / "langchain-faiss"), lc_embeddings, allow_dangerous_deserialization=True)


def top_ids(store, query, k=3):
    return [doc.metadata["id"] for doc in store.similarity_search(query, k=k)]


results = {"LangChain Chroma": {}, "LangChain FAISS": {}}
for query, expected in QUERIES:
    results["LangChain Chroma"][query] = top_ids(chroma, query)
    results["LangChain FAISS"][query] = top_ids(faiss, query)
    mark = "ok" if results["LangChain Chroma"][query][0] == expected else "MISS"
    print(f"[{mark}] {query:<50} -> {results['LangChain Chroma'][query][0]}")
print(f"passages embedded again: {lc_embeddings.usage.texts - before - 2 * len(QUERIES)}")""",
    ),
    (
        "markdown",
        """## 6. LlamaIndex: build and persist a Chroma index and the default storage

`TextNode`s keep the passage ids. With Chroma, the collection is created with
`embedding_function=None`: the vectors come from `AimlBgeEmbedding`, never from Chroma.""",
    ),
    (
        "code",
        """import chromadb
from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.schema import TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from aiml_bge_integrations.llama_index import AimlBgeEmbedding

li_embed = AimlBgeEmbedding(**settings)
nodes = [TextNode(id_=pid, text=text) for pid, text in PASSAGES]

chroma_client = chromadb.PersistentClient(path=str(DATA / "llamaindex-chroma"), settings=no_telemetry)
collection = chroma_client.get_or_create_collection("demo", embedding_function=None)
VectorStoreIndex(
    nodes,
    storage_context=StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection)),
    embed_model=li_embed,
)

VectorStoreIndex(nodes, embed_model=li_embed).storage_context.persist(persist_dir=str(DATA / "llamaindex-storage"))
print(sorted(p.name for p in (DATA / "llamaindex-storage").iterdir()))
print(f"texts embedded: {li_embed.usage.texts}")""",
    ),
    (
        "markdown",
        """## 7. LlamaIndex: reload and retrieve""",
    ),
    (
        "code",
        """reloaded_client = chromadb.PersistentClient(path=str(DATA / "llamaindex-chroma"), settings=no_telemetry)
li_chroma = VectorStoreIndex.from_vector_store(
    ChromaVectorStore(chroma_collection=reloaded_client.get_collection("demo", embedding_function=None)),
    embed_model=li_embed,
)
li_storage = load_index_from_storage(
    StorageContext.from_defaults(persist_dir=str(DATA / "llamaindex-storage")), embed_model=li_embed
)

results["LlamaIndex Chroma"] = {}
results["LlamaIndex storage"] = {}
for name, index in (("LlamaIndex Chroma", li_chroma), ("LlamaIndex storage", li_storage)):
    retriever = index.as_retriever(similarity_top_k=3)
    for query, _ in QUERIES:
        results[name][query] = [hit.node.node_id for hit in retriever.retrieve(query)]

hits = await li_storage.as_retriever(similarity_top_k=1).aretrieve(QUERIES[0][0])
print(f"async retrieval works too: {QUERIES[0][0]!r} -> {hits[0].node.node_id}")""",
    ),
    (
        "markdown",
        """## 8. Every store, every query

The expected passage should come first everywhere.""",
    ),
    (
        "code",
        """expected = dict(QUERIES)
for name, by_query in results.items():
    first = sum(ranked[0] == expected[query] for query, ranked in by_query.items())
    print(f"{name:<20} expected passage first for {first}/{len(QUERIES)} queries")""",
    ),
    (
        "markdown",
        """## 9. Documents without the instruction, queries with it

What Chroma stored for a passage is exactly `embed_documents` of the passage, not the vector the
same text gets as a query. And the query vector the store searched with is the instruction
one: the distance Chroma reports for the top hit matches it, not the bare text's.""",
    ),
    (
        "code",
        """import numpy as np

pid, text = PASSAGES[1]
stored = np.array(chroma.get(ids=[pid], include=["embeddings"])["embeddings"][0])
as_document = np.array(lc_embeddings.embed_documents([text])[0])
as_query = np.array(lc_embeddings.embed_query(text))
print(f"stored == embed_documents(passage): {np.allclose(stored, as_document, atol=1e-6)}")
print(f"stored == embed_query(passage):     {np.allclose(stored, as_query, atol=1e-6)}")

query, answer = QUERIES[0]
doc, distance = chroma.similarity_search_with_score(query, k=1)[0]
answer_vector = np.array(chroma.get(ids=[answer], include=["embeddings"])["embeddings"][0])
with_instruction = float(np.sum((np.array(lc_embeddings.embed_query(query)) - answer_vector) ** 2))
bare = float(np.sum((np.array(lc_embeddings.embed_documents([query])[0]) - answer_vector) ** 2))
print(f"query instruction: {lc_embeddings.query_instruction!r}")
print(f"Chroma's distance to {doc.metadata['id']}: {distance:.4f}")
print(f"  computed with the instruction: {with_instruction:.4f}")
print(f"  computed without it:           {bare:.4f}")""",
    ),
    (
        "markdown",
        """## 10. Usage and clean up""",
    ),
    (
        "code",
        """for name, adapter in (("LangChain", lc_embeddings), ("LlamaIndex", li_embed)):
    u = adapter.usage
    print(f"{name:<10} requests={u.requests} retries={u.retries} texts={u.texts} prompt_tokens={u.prompt_tokens}")

lc_embeddings.close()
li_embed.close()
shutil.rmtree(DATA, ignore_errors=True)
if local_server is not None:
    local_server.stop()
    print("local server stopped")""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook, not yet executed."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for index, (kind, source) in enumerate(CELLS):
        cell = (
            nbformat.v4.new_markdown_cell(source)
            if kind == "markdown"
            else nbformat.v4.new_code_cell(source)
        )
        cell["id"] = f"cell-{index:02d}"
        nb.cells.append(cell)
    return nb


def main() -> int:
    """Build, execute against the local server in a temporary directory, write the notebook."""
    for name in ("AIMLAPI_API_KEY", "AIMLAPI_BASE_URL", "AIMLAPI_EMBEDDING_MODEL"):
        if os.environ.get(name):
            print(f"unset {name} first: the committed outputs come from the local server")
            return 2
    nb = build()
    with tempfile.TemporaryDirectory(prefix="persistent-rag-") as workdir:
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": workdir}}
        ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
