"""What the embedding cache costs: writes and reads of 768-d vectors, per 1,000 vectors.

Writes ``--vectors`` vectors in batches of ``--batch`` into a fresh file (one transaction a
batch), then reads them back in the same batches (all hits), then asks for as many absent keys
(all misses). Prints wall and process CPU per 1,000 vectors and the file's size per vector.

Run: ``python benchmarks/bench_cache.py [--vectors 20000] [--batch 128]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, markdown_table

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from aiml_bge_integrations._cache import EmbeddingCache, cache_key

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args(argv)

    rng = random.Random(0)
    vector = [rng.uniform(-0.1, 0.1) for _ in range(args.dim)]

    def key(i: int) -> str:
        return cache_key(
            text=f"passage {i}", model_served="BAAI/bge-base-en-v1.5", side="document",
            prompt=None, input_type=None, long_text="truncate", token_limit=512,
            dimension=None, server_root="http://127.0.0.1:8000/v1",
        )  # fmt: skip

    keys = [key(i) for i in range(args.vectors)]
    absent = [key(-i - 1) for i in range(args.vectors)]
    batches = [
        range(s, min(s + args.batch, args.vectors)) for s in range(0, args.vectors, args.batch)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite"
        with EmbeddingCache(path) as cache:
            for label, work in (
                ("write", lambda b: cache.put_many([(keys[i], vector) for i in b])),
                ("read, all hits", lambda b: cache.get_many([keys[i] for i in b])),
                ("read, all misses", lambda b: cache.get_many([absent[i] for i in b])),
            ):
                wall, cpu = time.perf_counter(), cpu_seconds()
                for b in batches:
                    work(b)
                wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
                per = 1000 / args.vectors
                rows.append([label, f"{wall * per * 1000:.1f}", f"{cpu * per * 1000:.1f}"])
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    print(
        f"Embedding cache, {args.vectors:,} vectors of {args.dim} floats, batches of {args.batch}; "
        f"{size / args.vectors:,.0f} bytes per vector on disk (WAL included)"
    )
    print(
        markdown_table(["operation", "wall ms per 1,000 vectors", "CPU ms per 1,000 vectors"], rows)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
