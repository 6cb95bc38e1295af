"""The client's own CPU per 1,000 texts, one request in flight, and what it is spent on.

The throughput benchmark measures the whole process under concurrency, where a single run
varies by 20% on a shared machine. This one isolates the client: the sync client sends one
request at a time to the local server (no latency, no limit), and the calling thread's CPU
time (``time.thread_time``) is taken over each call of ``--n`` texts, ``--rounds`` times, with
the cycle collector run before each. Rows:

- ``default``: the client as users get it;
- ``without-range-check``: the finite/float32 check of every vector switched off (it is what
  a NaN or a 1e39 from a server is caught by);
- ``collector-off``: Python's cycle collector disabled during the call (``gc.disable``), to
  show its share: the collector walks every vector list the caller holds while the call
  allocates.

Each row runs in its own process, alternating, ``--alternations`` times. Run it with another
checkout's sources first on ``PYTHONPATH`` to compare two trees on the same machine.

    python benchmarks/bench_client_cpu.py --n 10000 --rounds 5 --alternations 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import API_KEY, ServerProcess, machine_description, make_passages

ROWS = ("default", "without-range-check", "collector-off")


def _measure(row: str, base_url: str, n: int, rounds: int) -> list[float]:
    from aiml_bge_integrations import EmbeddingsClient

    if row == "without-range-check":
        from aiml_bge_integrations import _wire

        _wire._check_range = lambda vec, idx: None  # type: ignore[assignment]
    texts = make_passages(n)
    client = EmbeddingsClient(
        api_key=API_KEY,
        base_url=base_url,
        allow_insecure_http=True,
        max_concurrency=1,
        adaptive_concurrency=False,
    )
    client.embed_documents(texts[: min(n, 2000)])  # warm: connection, tokenizer, caches
    out = []
    for _ in range(rounds):
        gc.collect()
        if row == "collector-off":
            gc.disable()
        start = time.thread_time()
        vectors = client.embed_documents(texts)
        out.append((time.thread_time() - start) * 1000 * 1000 / n)
        gc.enable()
        del vectors
    client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="texts per call")
    parser.add_argument("--rounds", type=int, default=5, help="calls per process")
    parser.add_argument("--alternations", type=int, default=2, help="processes per row")
    parser.add_argument("--child", nargs=2, metavar=("ROW", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args.n, args.rounds)))
        return
    results: dict[str, list[float]] = {row: [] for row in ROWS}
    with ServerProcess(0.0, None) as server:
        for _ in range(args.alternations):
            for row in ROWS:
                cmd = [sys.executable, __file__, "--n", str(args.n), "--rounds", str(args.rounds)]
                cmd += ["--child", row, server.base_url]
                done = subprocess.run(
                    cmd, capture_output=True, text=True, check=True, timeout=600, env=os.environ
                )
                results[row] += json.loads(done.stdout.strip().splitlines()[-1])
    default = statistics.median(results["default"])
    print(f"machine: {machine_description()}")
    print(f"client thread CPU, ms per 1,000 texts, one request in flight, {args.n:,} texts a call")
    print("| row | median | range | of default |")
    print("|---|---|---|---|")
    for row, values in results.items():
        med = statistics.median(values)
        print(f"| {row} | {med:.1f} | {min(values):.1f}-{max(values):.1f} | {med / default:.0%} |")


if __name__ == "__main__":
    main()
