"""The embedding job at scale: ``aiml-bge embed`` over 100,000 generated passages.

Starts the local server in its own process (no latency, no limits: the client side is what
is measured), writes N seeded passages of 30-80 words to a text file, and runs
``aiml-bge embed corpus.txt -o vectors.jsonl`` as a child process, for each size given
(default 10,000 and 100,000, to show that peak memory does not grow with the corpus). For
each run it prints the wall time, the rate, the child's peak resident memory (``ru_maxrss``
from ``wait4``), the output size and the server's counters, and checks the output: one row
per passage, ids 1..N in order, and a sample of vectors equal to the server's vectors for
their texts. Then it times ``--dry-run`` (exact token counts) over the largest corpus.

With ``--rerun N`` it measures the embedding cache instead: a first run over N passages
fills a cache (``--cache``), 5% of the passages are changed, and the changed corpus is run
again with the cache and without it (requests and seconds of each).

Not part of the test suite. Usage::

    python benchmarks/bench_cli.py [--sizes 10000,100000] [--format jsonl|npy|parquet]
                                   [--batch-size 128] [--max-concurrency 4] [--rerun N]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import API_KEY, ServerProcess, iter_passages, machine_description

__all__ = ["RunResult", "main", "run_cli"]

_SCRIPT = Path(sys.executable).with_name("aiml-bge")


@dataclass
class RunResult:
    """One child run of ``aiml-bge``."""

    code: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    """User + system CPU of the child."""
    stdout: str
    stderr: str


def _drain(stream: IO[str], into: list[str]) -> None:
    into.append(stream.read())


def run_cli(args: list[str], env: dict[str, str]) -> RunResult:
    """Run ``aiml-bge ARGS`` as a child; wall time and the child's own peak RSS (wait4)."""
    command = (
        [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "aiml_bge_integrations.cli"]
    )
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*command, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out)),
        threading.Thread(target=_drain, args=(proc.stderr, err)),
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return RunResult(
        proc.returncode,
        seconds,
        usage.ru_maxrss * scale / 2**20,
        usage.ru_utime + usage.ru_stime,
        "".join(out),
        "".join(err),
    )


def write_corpus(path: Path, n: int) -> None:
    """Write ``n`` seeded passages, one per line."""
    with path.open("w", encoding="utf-8") as f:
        for text in iter_passages(n):
            f.write(text + "\n")


def check_output(path: Path, fmt: str, corpus: Path, n: int) -> str:
    """Rows, ids and a random sample of vectors against the server's own vectors."""
    import numpy as np
    import orjson

    from aiml_bge_integrations.server import HashingEmbedder

    texts = corpus.read_text(encoding="utf-8").splitlines()
    rng = random.Random(7)
    sample = sorted(rng.sample(range(n), min(50, n)))
    if fmt == "jsonl":
        ids: list[Any] = []
        picked: dict[int, list[float]] = {}
        wanted = set(sample)
        with path.open("rb") as f:
            for i, line in enumerate(f):
                row = orjson.loads(line)
                ids.append(row["id"])
                if i in wanted:
                    picked[i] = row["embedding"]
        got = np.asarray([picked[i] for i in sample], dtype=np.float32)
    elif fmt == "npy":
        matrix = np.load(path, mmap_mode="r")
        ids = [
            orjson.loads(x)
            for x in path.with_name(path.stem + ".ids.jsonl").read_bytes().splitlines()
        ]
        got = np.asarray(matrix[sample], dtype=np.float32)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        ids = table.column("id").to_pylist()
        got = np.asarray([table.column("embedding")[i].as_py() for i in sample], dtype=np.float32)
    if ids != list(range(1, n + 1)):
        return "FAILED: ids are not 1..N in order"
    want = HashingEmbedder().embed([texts[i] for i in sample]).astype(np.float32)
    exact = int((got == want).all(axis=1).sum())
    return f"{n:,} rows, ids 1..N in order, {exact}/{len(sample)} sampled vectors exact"


def rerun_with_cache(
    server: ServerProcess, env: dict[str, str], tmp: Path, n: int, common: list[str]
) -> int:
    """A re-run over a corpus with 5% of its passages changed: with the cache, and without."""
    corpus, cache = tmp / "rerun.txt", tmp / "cache.sqlite"
    write_corpus(corpus, n)
    runs: dict[str, tuple[RunResult, int]] = {}

    def embed(label: str, *extra: str) -> bool:
        server.reset_stats()
        out = tmp / f"rerun-{label}.jsonl"
        run = run_cli(["embed", str(corpus), "-o", str(out), *common, *extra], env)
        if run.code != 0:
            print(f"{label}: aiml-bge exited {run.code}\n{run.stderr[-2000:]}")
            return False
        runs[label] = (run, int(server.stats()["requests"]))
        return True

    if not embed("first run, filling the cache", "--cache", str(cache)):
        return 1
    lines = corpus.read_text(encoding="utf-8").splitlines()
    for i in range(0, n, 20):  # every 20th passage: 5%
        lines[i] = lines[i] + " (revised)"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if not embed("5% changed, with the cache", "--cache", str(cache)):
        return 1
    if not embed("5% changed, without the cache"):
        return 1
    print(f"re-run over {n:,} passages with 5% changed (--cache PATH):")
    for label, (run, requests) in runs.items():
        print(
            f"  {label:<32} {requests:>6,} requests {run.seconds:7.1f} s  CPU {run.cpu_seconds:.1f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--format", choices=("jsonl", "npy", "parquet"), default="jsonl")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument(
        "--rerun", type=int, default=0, help="measure the cache: a re-run over N passages"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="server latency, seconds")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    machine = machine_description()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, "
        f"{machine['os']}, Python {machine['python']}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(
        f"aiml-bge embed -> .{args.format}, batch size {args.batch_size}, "
        f"max concurrency {args.max_concurrency}; local server in its own process, "
        f"latency {args.latency:g} s\n"
    )
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp,
        ServerProcess(latency=args.latency, max_concurrent_requests=None) as server,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIMLAPI_")}
        env.update(AIMLAPI_API_KEY=API_KEY, AIMLAPI_BASE_URL=server.base_url)
        corpus = Path(tmp) / "corpus.txt"
        if args.rerun:
            common = ["--batch-size", str(args.batch_size)]
            common += ["--max-concurrency", str(args.max_concurrency)]
            return rerun_with_cache(server, env, Path(tmp), args.rerun, common)
        for n in sizes:
            write_corpus(corpus, n)
            out = Path(tmp) / f"vectors-{n}.{args.format}"
            server.reset_stats()
            server_cpu = server.cpu_seconds()
            run = run_cli(
                [
                    "embed", str(corpus), "-o", str(out),
                    "--batch-size", str(args.batch_size),
                    "--max-concurrency", str(args.max_concurrency),
                ],
                env,
            )  # fmt: skip
            if run.code != 0:
                print(f"n={n}: aiml-bge exited {run.code}\n{run.stderr[-2000:]}")
                return 1
            stats = server.stats()
            cpu_now = server.cpu_seconds()
            server_cpu = (
                cpu_now - server_cpu if cpu_now is not None and server_cpu is not None else None
            )
            size_mb = (
                sum(p.stat().st_size for p in Path(tmp).glob(f"vectors-{n}*") if p.is_file())
                / 2**20
            )
            check = check_output(out, args.format, corpus, n)
            rows.append((n, run, stats, size_mb, check))
            print(
                f"n={n:>7,}: {run.seconds:6.1f} s, {n / run.seconds:7,.0f} passages/s, "
                f"peak RSS {run.peak_rss_mb:6.1f} MB, output {size_mb:7.1f} MB, "
                f"{stats['requests']:,} requests, {stats['tokens']:,} tokens; {check}"
            )
            print(
                f"           CPU: aiml-bge {run.cpu_seconds:.1f} s, server "
                f"{'?' if server_cpu is None else f'{server_cpu:.1f}'} s; "
                f"load average now {os.getloadavg()[0]:.1f} on {machine['cores']} cores"
            )
            for p in Path(tmp).glob(f"vectors-{n}*"):
                p.unlink()

        dry = run_cli(["embed", str(corpus), "--dry-run"], env)
        print(
            f"\n--dry-run over {sizes[-1]:,} passages: {dry.seconds:.1f} s, "
            f"peak RSS {dry.peak_rss_mb:.1f} MB, CPU {dry.cpu_seconds:.1f} s"
        )
        print("\n".join("  " + line for line in dry.stdout.splitlines()))

    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        print(
            f"\npeak memory at {large[0]:,} passages is {large[1].peak_rss_mb / small[1].peak_rss_mb:.2f}x "
            f"that at {small[0]:,} ({large[0] / small[0]:.0f}x the passages): bounded"
            if large[1].peak_rss_mb < 1.5 * small[1].peak_rss_mb
            else f"\nWARNING: peak memory grew from {small[1].peak_rss_mb:.0f} MB to "
            f"{large[1].peak_rss_mb:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
