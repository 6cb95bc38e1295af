"""Write notebooks/llamaindex_quickstart.ipynb from the cells below and execute it in place.

Run from the repository root with the project's environment::

    .venv/bin/python notebooks/build_llamaindex_quickstart.py

Without ``AIMLAPI_API_KEY`` the notebook starts the local stand-in server itself, so the
committed outputs come from that server and show no key. ``--no-execute`` writes the cells only.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

__all__ = ["CELLS", "build", "main"]

NOTEBOOK = Path(__file__).with_name("llamaindex_quickstart.ipynb")

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# BGE embeddings in LlamaIndex: quick start

`AimlBgeEmbedding` is a LlamaIndex `BaseEmbedding` for `BAAI/bge-base-en-v1.5` served by the
AI/ML API (or any OpenAI-compatible server that hosts BGE). This notebook configures it, builds a
vector index over a small corpus, asks the retriever ten questions, looks at what the requests
cost, and plots how each question scores against every passage.

With `AIMLAPI_API_KEY` set it talks to the AI/ML API. Without it, it starts the package's local
stand-in server on 127.0.0.1 and says so: that server speaks the same API, but its vectors come
from hashed words, not from the real model.""",
    ),
    (
        "code",
        """import os
import time

if os.environ.get("AIMLAPI_API_KEY"):
    server = None
    connection = {}  # the key comes from AIMLAPI_API_KEY, the server from AIMLAPI_BASE_URL if set
    print("AIMLAPI_API_KEY is set: using", os.environ.get("AIMLAPI_BASE_URL") or "the AI/ML API")
else:
    from aiml_bge_integrations.server import LocalServer

    server = LocalServer().start()
    connection = {"base_url": server.base_url, "api_key": server.api_key}
    print("AIMLAPI_API_KEY is not set: started the local stand-in server at", server.base_url)
    print("(its vectors come from hashed words, not from the real BGE model)")""",
    ),
    (
        "markdown",
        """## Configure

Same settings as the package's core clients: `model`, `batch_size` (texts per request),
`max_concurrency` (requests in flight), `max_retries`, `timeout`, `query_instruction`... The key
is never part of what the object prints or serialises. `Settings.llm = None` keeps LlamaIndex
from looking for an OpenAI LLM: this notebook only retrieves.""",
    ),
    (
        "code",
        """from llama_index.core import Settings

from aiml_bge_integrations.llama_index import AimlBgeEmbedding

embed = AimlBgeEmbedding(batch_size=16, max_concurrency=4, **connection)
Settings.embed_model = embed
Settings.llm = None

print("model:            ", embed.model_name)
print("query instruction:", repr(embed.query_instruction))
print("embed_batch_size: ", embed.embed_batch_size, "(LlamaIndex's chunks)")
print("batch_size:       ", embed.batch_size, "(texts per request)")
embed.to_payload()  # what LlamaIndex's callbacks and instrumentation see""",
    ),
    (
        "markdown",
        """## Index

Thirty-six short passages on varied topics. LlamaIndex hands the adapter chunks of
`embed_batch_size` texts; the core sends each chunk in requests of at most `batch_size`, up to
`max_concurrency` at once. Passages never get the query instruction.""",
    ),
    (
        "code",
        """from llama_index.core import Document, VectorStoreIndex

from aiml_bge_integrations.demo_corpus import PASSAGES, QUERIES

documents = [
    Document(text=text, id_=pid, metadata={"pid": pid}, excluded_embed_metadata_keys=["pid"])
    for pid, text in PASSAGES
]
start = time.perf_counter()
index = VectorStoreIndex.from_documents(documents)
print(
    f"indexed {len(documents)} passages in {time.perf_counter() - start:.2f} s "
    f"with {embed.usage.requests} requests"
)""",
    ),
    (
        "markdown",
        """## Retrieve

Each question is embedded with the BGE query instruction in front of it and compared with
every passage; the retriever returns the closest.""",
    ),
    (
        "code",
        """retriever = index.as_retriever(similarity_top_k=3)
found = 0
for question, expected in QUERIES:
    best = retriever.retrieve(question)[0]
    pid = best.node.metadata["pid"]
    found += pid == expected
    mark = "ok  " if pid == expected else "MISS"
    print(f"{mark} {best.score:.3f}  {question}")
    print(f"            {pid}: {best.node.get_content()[:72]}...")
print(f"\\n{found} of {len(QUERIES)} questions found their passage first")""",
    ),
    (
        "markdown",
        """## Async

The async methods run on the core's async client: LlamaIndex gathers every chunk at once,
and the client still keeps at most `max_concurrency` requests in flight.""",
    ),
    (
        "code",
        """import asyncio

import numpy as np

questions = [question for question, _ in QUERIES]
query_vectors = np.array(await asyncio.gather(*(embed.aget_query_embedding(q) for q in questions)))
node_ids = list(index.docstore.docs)
passage_ids = [index.docstore.docs[node_id].metadata["pid"] for node_id in node_ids]
passage_vectors = np.array([index.vector_store.get(node_id) for node_id in node_ids])
scores = query_vectors @ passage_vectors.T  # unit vectors: cosine similarity
print("scores:", scores.shape, "queries x passages")""",
    ),
    (
        "markdown",
        """## Usage

Requests, texts, tokens and credits as the server reported them, for the sync and the async
path together. A retry would show up here too (`retries`, `retries_by_cause`).""",
    ),
    (
        "code",
        """usage = embed.usage
print(f"requests      {usage.requests}")
print(f"texts         {usage.texts}")
print(f"prompt tokens {usage.prompt_tokens}")
print(f"credits       {usage.credits:g}")
print(f"retries       {usage.retries}")
if server is not None:
    stats = server.stats.snapshot()
    print(f"the server saw {stats['requests']} requests, at most {stats['peak_in_flight']} at once")""",
    ),
    (
        "markdown",
        """## Plot

Every question against every passage: the expected passage (boxed) should be the brightest
cell of its row.""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(10, 3.6), dpi=80)
image = ax.imshow(scores, aspect="auto", cmap="viridis")
for row, (_, expected) in enumerate(QUERIES):
    col = passage_ids.index(expected)
    ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="white", lw=2))
ax.set_yticks(range(len(questions)), [q[:38] for q in questions], fontsize=8)
ax.set_xticks(range(len(passage_ids)), passage_ids, rotation=90, fontsize=7)
ax.set_title("cosine similarity, questions x passages (boxed: expected passage)")
fig.colorbar(image, ax=ax, fraction=0.02)
fig.tight_layout()
plt.show()""",
    ),
    (
        "code",
        """embed.close()
if server is not None:
    server.stop()
    print("local server stopped")""",
    ),
]


def build(path: Path = NOTEBOOK, *, execute: bool = True) -> nbformat.NotebookNode:
    """Write the notebook to ``path``; execute it there first unless ``execute`` is false."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in CELLS:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source))
    for number, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{number:02d}"
    if execute:
        if os.environ.get("AIMLAPI_API_KEY"):
            raise SystemExit(
                "unset AIMLAPI_API_KEY first: the committed outputs come from the local server"
            )
        NotebookClient(nb, timeout=120, kernel_name="python3", record_timing=False).execute(
            cwd=str(path.parent.resolve())
        )
    nbformat.write(nb, path)
    return nb


def main() -> None:
    """Command line: build (and by default execute) the notebook."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="write the cells only")
    args = parser.parse_args()
    build(execute=not args.no_execute)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
