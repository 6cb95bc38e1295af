"""Build ``notebooks/langchain_quickstart.ipynb`` from the cells below and execute it in place.

Run from the repository root with the AIMLAPI_* variables unset, so the notebook starts the
local server and the committed outputs come from it::

    env -u AIMLAPI_API_KEY -u AIMLAPI_BASE_URL .venv/bin/python notebooks/build_langchain_quickstart.py

The cells are kept here, as plain strings, so that a change to the notebook is a readable diff.
Execution metadata (timestamps) is dropped for the same reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

__all__ = ["CELLS", "build", "main"]

NOTEBOOK = Path(__file__).with_name("langchain_quickstart.ipynb")

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# LangChain quickstart: BGE embeddings with `AimlBgeEmbeddings`

`AimlBgeEmbeddings` is a LangChain `Embeddings` for `BAAI/bge-base-en-v1.5` served over the
AI/ML API, or over any OpenAI-compatible server that hosts BGE. It batches, runs a bounded
number of requests at once, retries what is worth retrying, checks every reply and counts what
you spent; LangChain sees an ordinary `Embeddings`.

This notebook: install, configure, embed, build a vector store, retrieve, look at a
query-passage similarity heatmap, and inspect usage.""",
    ),
    (
        "markdown",
        """## 1. Install

Uncomment to install into the running kernel (matplotlib is only for the plot at the end).""",
    ),
    ("code", """# %pip install -U "aiml-bge-integrations[langchain]" matplotlib"""),
    (
        "markdown",
        """## 2. Configure

The adapter reads the key from `AIMLAPI_API_KEY` (and, optionally, the server from
`AIMLAPI_BASE_URL`). When no key is set, this notebook starts the bundled **local server**
instead: it speaks the same API on 127.0.0.1 and returns deterministic stand-in vectors
(lexical, not the real BGE model), so everything below runs offline. The key itself is never
printed.""",
    ),
    (
        "code",
        """import os

settings = {}
local_server = None
if os.environ.get("AIMLAPI_API_KEY"):
    print(
        "Using AIMLAPI_API_KEY from the environment, server:",
        os.environ.get("AIMLAPI_BASE_URL", "https://api.aimlapi.com/v1"),
    )
else:
    from aiml_bge_integrations.server import LocalServer

    local_server = LocalServer()
    local_server.start()
    settings = {"api_key": local_server.api_key, "base_url": local_server.base_url}
    print("AIMLAPI_API_KEY is not set: started the local server at", local_server.base_url)
    print("(deterministic stand-in vectors, not the real BGE model)")""",
    ),
    (
        "markdown",
        """## 3. Embed

`embed_documents` embeds passages as they are; `embed_query` puts the BGE retrieval
instruction in front of the query first (`query_instruction`; pass `None` to turn it off).
The object's `repr` shows the settings, never the key.""",
    ),
    (
        "code",
        """from aiml_bge_integrations.langchain import AimlBgeEmbeddings

embeddings = AimlBgeEmbeddings(batch_size=4, **settings)
embeddings""",
    ),
    (
        "code",
        """passages = [
    "BGE is a family of text embedding models from the Beijing Academy of Artificial Intelligence.",
    "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar.",
    "The Python programming language was created by Guido van Rossum.",
    "Espresso is brewed by forcing hot water through finely ground coffee beans.",
    "The Great Barrier Reef off Australia is the largest coral reef system on Earth.",
]
queries = [
    "Which models embed text?",
    "When was the Eiffel Tower completed?",
    "How do plants use sunlight?",
    "Who created the Python programming language?",
    "How is espresso coffee brewed?",
    "Where is the largest coral reef?",
]

passage_vectors = embeddings.embed_documents(passages)
query_vector = embeddings.embed_query(queries[0])
print(f"{len(passage_vectors)} passage vectors of {len(passage_vectors[0])} floats")
print(f"query instruction: {embeddings.query_instruction!r}")
norm = sum(x * x for x in query_vector) ** 0.5
print(f"query vector: {len(query_vector)} floats, L2 norm {norm:.3f}")""",
    ),
    (
        "markdown",
        """The async methods are native (they await the core's async client, no threads), so many
calls can share one event loop:""",
    ),
    (
        "code",
        """import asyncio

async_vectors = await asyncio.gather(*(embeddings.aembed_query(q) for q in queries))
print(len(async_vectors), "query vectors embedded concurrently")""",
    ),
    (
        "markdown",
        """## 4. Build a vector store and retrieve

Any LangChain vector store takes the adapter; here the in-memory one.""",
    ),
    (
        "code",
        """from langchain_core.vectorstores import InMemoryVectorStore

store = InMemoryVectorStore.from_texts(
    passages, embeddings, metadatas=[{"id": i} for i in range(len(passages))]
)
retriever = store.as_retriever(search_kwargs={"k": 1})
for query in queries:
    best = retriever.invoke(query)[0]
    print(f"{query:<46} -> [{best.metadata['id']}] {best.page_content[:60]}")""",
    ),
    (
        "code",
        """for doc, score in store.similarity_search_with_score("ground coffee beans", k=3):
    print(f"{score:.3f}  {doc.page_content}")""",
    ),
    (
        "markdown",
        """## 5. A picture: query-passage similarity

BGE vectors are unit length, so the dot product is the cosine similarity. Each query should
light up its own passage (the diagonal).""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt
import numpy as np

Q = np.array([embeddings.embed_query(q) for q in queries])
P = np.array(passage_vectors)
similarity = Q @ P.T

fig, ax = plt.subplots(figsize=(7, 4.5))
im = ax.imshow(similarity, cmap="viridis")
ax.set_xticks(
    range(len(passages)), [f"passage {i}" for i in range(len(passages))], rotation=30, ha="right"
)
ax.set_yticks(range(len(queries)), queries)
for i in range(similarity.shape[0]):
    for j in range(similarity.shape[1]):
        value = similarity[i, j]
        color = "k" if value > 0.6 * similarity.max() else "w"
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
ax.set_title("cosine similarity, queries x passages")
fig.colorbar(im, ax=ax)
fig.tight_layout()
plt.show()
print("best passage per query:", similarity.argmax(axis=1).tolist())""",
    ),
    (
        "markdown",
        """## 6. Inspect usage

`usage` adds up the sync and async clients: requests (retries included), retries by cause,
texts, tokens billed and, against the AI/ML API, credits and dollars.""",
    ),
    (
        "code",
        """usage = embeddings.usage
print(f"requests={usage.requests} retries={usage.retries} texts={usage.texts}")
print(f"prompt_tokens={usage.prompt_tokens} credits={usage.credits}")""",
    ),
    (
        "markdown",
        """## 7. Clean up""",
    ),
    (
        "code",
        """embeddings.close()
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
    """Build, execute with the local server, strip timestamps, write the notebook."""
    for name in ("AIMLAPI_API_KEY", "AIMLAPI_BASE_URL", "AIMLAPI_EMBEDDING_MODEL"):
        if os.environ.get(name):
            print(f"unset {name} first: the committed outputs come from the local server")
            return 2
    nb = build()
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": "."}}
    ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
