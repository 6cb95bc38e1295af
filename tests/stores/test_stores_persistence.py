"""Real vector stores, persisted and reloaded in a fresh process, queried through the adapters.

LangChain: a Chroma collection (``langchain_chroma``, persistent directory) and a FAISS index
(``save_local``/``load_local``). LlamaIndex: ``ChromaVectorStore`` and the default storage
context (``persist``/``load_index_from_storage``). For each store: the expected passage of
every demo query comes back first; the stored vectors are the documents' own vectors (no
instruction); the query vectors carry the BGE instruction (the store's own scores prove it);
and nothing reached for the network or downloaded a model.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stores_build import BUILDERS
from stores_support import SCORES, finish_child, start_child

from aiml_bge_integrations.demo_corpus import PASSAGES, QUERIES

# One xdist worker runs every test here: the module-scoped runs build every store once.
pytestmark = pytest.mark.xdist_group("stores-persistence")

STORES = [
    ("langchain", "chroma"),
    ("langchain", "faiss"),
    ("llama_index", "chroma"),
    ("llama_index", "storage"),
]
FRAMEWORKS = ["langchain", "llama_index"]


@pytest.fixture(scope="module")
def runs(store_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build every store here, then reload and query each framework's in a fresh process.

    The two query processes run side by side (they only read their own directories).
    """
    out: dict[str, Any] = {}
    for framework, build in BUILDERS.items():
        root = tmp_path_factory.mktemp(f"stores-{framework}")
        store_server.reset_stats()
        report = build(root, store_server.base_url, store_server.api_key)
        out[framework] = {
            "root": root,
            "build": report,
            "build_stats": store_server.stats.snapshot(),
        }
    gc.collect()  # drop this process's Chroma clients before others open the same files
    store_server.reset_stats()
    children = {fw: start_child(fw, out[fw]["root"], store_server) for fw in BUILDERS}
    for framework, proc in children.items():
        out[framework]["query"] = finish_child(proc, store_server)
    query_requests = sum(out[fw]["query"]["query_requests"] for fw in BUILDERS)
    out["query_stats"] = store_server.stats.snapshot()
    out["query_requests"] = query_requests
    return out


def store_report(runs: dict[str, Any], framework: str, store: str) -> dict[str, Any]:
    report: dict[str, Any] = runs[framework]["query"][store]
    return report


@pytest.mark.parametrize(("framework", "store"), STORES)
def test_expected_passage_comes_first_after_reload(
    runs: dict[str, Any], framework: str, store: str
) -> None:
    hits = store_report(runs, framework, store)["hits"]
    top = {query: ranked[0][0] for query, ranked in hits.items()}
    assert top == dict(QUERIES)
    assert all(len(ranked) == 3 for ranked in hits.values())


@pytest.mark.parametrize(("framework", "store"), STORES)
def test_stored_vectors_are_the_documents_own_without_instruction(
    runs: dict[str, Any], framework: str, store: str, reference: dict[str, Any]
) -> None:
    stored = store_report(runs, framework, store)["stored"]
    assert sorted(stored) == sorted(pid for pid, _ in PASSAGES)
    for pid, vector in stored.items():
        np.testing.assert_allclose(vector, reference["documents"][pid], rtol=0, atol=1e-6)
    # A passage embedded as a query (instruction in front) is a different vector: documents
    # were not given the instruction.
    for pid, as_query in reference["documents_as_queries"].items():
        gap = np.max(np.abs(np.asarray(stored[pid]) - np.asarray(as_query)))
        assert gap > 1e-2


@pytest.mark.parametrize(("framework", "store"), STORES)
def test_queries_carry_the_instruction_end_to_end(
    runs: dict[str, Any], framework: str, store: str, reference: dict[str, Any]
) -> None:
    """The store's own score for each top hit is the one an instruction-prefixed query gets."""
    score = SCORES[(framework, store)]
    report = store_report(runs, framework, store)
    stored = report["stored"]
    for query, ranked in report["hits"].items():
        for doc_id, reported in ranked:
            with_instruction = score(reference["queries"][query], stored[doc_id])
            without = score(reference["bare_queries"][query], stored[doc_id])
            assert reported == pytest.approx(with_instruction, abs=1e-4), (query, doc_id)
            assert abs(reported - without) > 1e-3, (query, doc_id)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_passage_is_embedded_once_per_store(runs: dict[str, Any], framework: str) -> None:
    run = runs[framework]
    stores = 2  # Chroma and FAISS, or Chroma and the default storage
    assert run["build"]["texts_embedded"] == stores * len(PASSAGES)
    assert run["build_stats"]["items"] == stores * len(PASSAGES)
    assert set(run["build_stats"]["by_status"]) == {"200"}


def test_reloading_embeds_only_the_queries(runs: dict[str, Any]) -> None:
    # Per framework: each query once per store, plus LlamaIndex's async pass over one store.
    queries = len(QUERIES)
    expected = {"langchain": 2 * queries, "llama_index": 3 * queries}
    assert {fw: runs[fw]["query"]["query_requests"] for fw in FRAMEWORKS} == expected
    stats = runs["query_stats"]
    assert stats["items"] == stats["requests"] == sum(expected.values())  # one text each
    assert stats["by_status"] == {"200": sum(expected.values())}


def test_async_retrieval_after_reload_matches_sync(runs: dict[str, Any]) -> None:
    storage = store_report(runs, "llama_index", "storage")
    assert storage["async_hits"] == storage["hits"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nothing_reached_for_the_network_or_downloaded_a_model(
    runs: dict[str, Any], framework: str
) -> None:
    # The build ran under pytest-socket (loopback only); the reload ran in a child that
    # refuses and records every connection or name lookup outside loopback.
    run = runs[framework]
    assert run["query"]["network_attempts"] == []
    home: Path = run["root"] / "home"
    cached = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert not [p for p in cached if "chroma" in p or p.endswith((".onnx", ".tar.gz"))], cached


def test_persisted_files_are_where_they_were_asked_to_be(runs: dict[str, Any]) -> None:
    lc, li = runs["langchain"]["root"], runs["llama_index"]["root"]
    assert (lc / "lc-chroma" / "chroma.sqlite3").is_file()
    assert {p.suffix for p in (lc / "lc-faiss").iterdir()} == {".faiss", ".pkl"}
    assert (li / "li-chroma" / "chroma.sqlite3").is_file()
    assert (li / "li-storage" / "default__vector_store.json").is_file()
    assert (li / "li-storage" / "docstore.json").is_file()
