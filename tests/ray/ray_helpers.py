"""Helpers of the Ray tests: a corpus with ids and an extra column, and reference vectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aiml_bge_integrations import EmbeddingsClient

ROWS = 2000
"""Rows of the test corpus."""
_WORDS = [
    "river",
    "stone",
    "lamp",
    "orbit",
    "cedar",
    "violin",
    "harbor",
    "quartz",
    "meadow",
    "signal",
    "ember",
    "tundra",
]


def corpus(rows: int = ROWS) -> pa.Table:
    """``id`` (int64, unique), ``text`` (distinct passages) and ``lang`` (kept through)."""
    texts = [
        f"passage {i}: the {_WORDS[i % 12]} near the {_WORDS[(i * 7) % 12]} {i * 31 % 97}"
        for i in range(rows)
    ]
    return pa.table(
        {
            "id": pa.array(range(rows), type=pa.int64()),
            "text": texts,
            "lang": ["en" if i % 3 else "fr" for i in range(rows)],
        }
    )


def write_corpus(directory: Path, rows: int = ROWS, files: int = 4) -> Path:
    """The corpus as ``files`` Parquet files in ``directory`` (a read at the start of a job)."""
    directory.mkdir(parents=True, exist_ok=True)
    table = corpus(rows)
    step = -(-rows // files)
    for n, start in enumerate(range(0, rows, step)):
        pq.write_table(table.slice(start, step), directory / f"part-{n}.parquet")
    return directory


def reference_vectors(server: Any, texts: Sequence[str]) -> np.ndarray:
    """The single-process client's vectors for ``texts``, as float32 (what Parquet stores)."""
    with EmbeddingsClient(api_key=server.api_key, base_url=server.base_url) as client:
        return np.asarray(client.embed_documents(list(texts)), dtype=np.float32)


def vectors_of(table: pa.Table, column: str = "embedding") -> np.ndarray:
    """The ``fixed_size_list<float32>`` column as a matrix."""
    col = table.column(column).combine_chunks()
    dim = col.type.list_size
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False)).reshape(-1, dim)
