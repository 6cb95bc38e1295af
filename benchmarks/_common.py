"""Shared helpers for the benchmarks: seeded passages, the local server in its own process,
CPU and memory readings, vector checks and the Markdown table.

Nothing here imports the package's server or any framework at module level, so a contestant
process that imports this module starts clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "API_KEY",
    "MODEL",
    "ServerProcess",
    "check_vectors",
    "cpu_seconds",
    "current_rss_bytes",
    "iter_passages",
    "machine_description",
    "make_passages",
    "markdown_table",
    "peak_rss_bytes",
]

API_KEY = "bench-local-key"
"""The key the benchmark's local server accepts (it never leaves 127.0.0.1)."""
MODEL = "BAAI/bge-base-en-v1.5"
REPO = Path(__file__).resolve().parent.parent

# -- passages ---------------------------------------------------------------------------------


_TABLE_BITS = 20


def _word_table() -> list[str]:
    """2**20 slots filled with whole words of the BGE vocabulary, Zipf-weighted by rank.

    The vocabulary lists words roughly by frequency, so slot counts proportional to
    ``1 / (rank + 8)`` make common words repeat as they do in prose; picking a word is then
    one ``getrandbits`` (the generator stays cheap at 200,000 passages).
    """
    text = (
        resources.files("aiml_bge_integrations")
        .joinpath("bge_vocab.txt")
        .read_text(encoding="utf-8")
    )
    words = [w for w in text.split("\n") if len(w) >= 2 and w.isascii() and w.isalpha()]
    size = 1 << _TABLE_BITS
    weights = [1.0 / (rank + 8) for rank in range(len(words))]
    scale = size / sum(weights)
    table: list[str] = []
    for word, weight in zip(words, weights, strict=True):
        table.extend([word] * max(1, round(weight * scale)))
    if len(table) < size:
        table.extend(words[: size - len(table)])
    return table[:size]


def iter_passages(
    n: int, seed: int = 1234, min_words: int = 30, max_words: int = 80
) -> Iterator[str]:
    """``n`` English-looking passages of 30-80 words, lazily; the same sequence for the same seed.

    Words are drawn Zipf-like from the BGE vocabulary (common words repeat, as in prose),
    grouped into sentences of 5-16 words with capitals, some commas and full stops. No
    newlines: LlamaIndex's OpenAIEmbedding replaces them, which would change the text.
    """
    table = _word_table()
    rng = random.Random(seed)
    bits = rng.getrandbits
    randint = rng.randint
    for _ in range(n):
        count = randint(min_words, max_words)
        picks = [table[bits(_TABLE_BITS)] for _ in range(count)]
        sentences: list[str] = []
        pos = 0
        while pos < count:
            length = min(randint(5, 16), count - pos)
            chunk = picks[pos : pos + length]
            chunk[0] = chunk[0].capitalize()
            if length > 8 and bits(1):
                chunk[length // 2] += ","
            sentences.append(" ".join(chunk) + ".")
            pos += length
        yield " ".join(sentences)


def make_passages(n: int, seed: int = 1234) -> list[str]:
    """``n`` distinct passages (see ``iter_passages``); raises if the seed ever repeats one."""
    texts = list(iter_passages(n, seed))
    if len(set(texts)) != n:
        raise RuntimeError(f"passage generator repeated a passage within {n} (seed {seed})")
    return texts


# -- readings ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU of this process so far (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """Resident set size now (Linux: /proc; elsewhere the peak is the best available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def check_vectors(vectors: Sequence[Sequence[float]], expected: Any) -> dict[str, Any]:
    """Compare every returned vector with the server's deterministic one for that text.

    ``expected`` is the float32 array (n, dim) of ``HashingEmbedder`` vectors. The server
    sends float32 values (JSON floats printed at float32 precision, or base64 float32), so a
    right vector equals its expected row exactly once rounded to float32, whichever encoding
    carried it. Returns how many are exact, the worst absolute difference, and whether the
    elements are Python floats (LangChain's standard tests require it).
    """
    import numpy as np

    n = len(expected)
    result: dict[str, Any] = {"returned": len(vectors), "expected": n}
    if len(vectors) != n:
        result.update(exact=0, max_abs_err=None, python_floats=False)
        return result
    exact = 0
    worst = 0.0
    step = 2048
    for start in range(0, n, step):
        chunk = vectors[start : start + step]
        try:
            got = np.asarray(chunk, dtype=np.float64)
        except (ValueError, TypeError):
            continue  # ragged or not numbers: every vector of this chunk counts as wrong
        if got.shape != (len(chunk), expected.shape[1]):
            continue
        want = np.asarray(expected[start : start + len(chunk)])
        exact += int((got.astype(np.float32) == want).all(axis=1).sum())
        worst = max(worst, float(np.abs(got - want.astype(np.float64)).max()))
    first = vectors[0] if n else []
    result.update(
        exact=exact,
        max_abs_err=worst,
        python_floats=bool(first) and all(type(x) is float for x in first),
    )
    return result


# -- the server in its own process ------------------------------------------------------------


@dataclass
class ServerProcess:
    """``python -m aiml_bge_integrations.server`` in a child process, on a free loopback port."""

    latency: float
    max_concurrent_requests: int | None
    extra_args: tuple[str, ...] = ()
    module: str = "aiml_bge_integrations.server"
    """What ``python -m`` runs: the project's server unless a diagnostic names another."""

    def __post_init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.root_url = ""

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the server (port 0: it picks a free one and announces its URL) and wait for it."""
        args = [sys.executable, "-m", self.module, "--port", "0"]
        args += ["--latency", str(self.latency)]
        if self.max_concurrent_requests:
            args += ["--max-concurrent-requests", str(self.max_concurrent_requests)]
        args += list(self.extra_args)
        env = {**os.environ, "AIMLAPI_API_KEY": API_KEY}  # the key the server accepts
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the startup line, printed once it is listening
        match = re.search(r"at (http://\S+/v1);", line)
        if match is None:
            self.proc.wait(timeout=10)
            log = self.log()
            self.stop()
            raise RuntimeError(f"the local server did not start: {line!r} {log}")
        # Keep reading whatever else it prints, so a full pipe never blocks it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.base_url = match.group(1)
        self.root_url = self.base_url[: -len("/v1")]
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.log()
                    self.stop()
                    raise RuntimeError(
                        f"the local server did not answer GET /_stats: {log}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        """The last lines the server wrote to stderr."""
        self._log.seek(0)
        return self._log.read()[-3000:]

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server process so far (Linux /proc; None elsewhere)."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def _get(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(
            self.root_url + path,
            method=method,
            headers={"Authorization": f"Bearer {API_KEY}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def stats(self) -> dict[str, Any]:
        """The server's counters (GET /_stats)."""
        data = self._get("/_stats")
        assert isinstance(data, dict)
        return data

    def reset_stats(self) -> None:
        """Zero the server's counters (POST /_stats/reset)."""
        self._get("/_stats/reset", method="POST")

    def stop(self) -> None:
        """Terminate the server process and wait for it."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- reporting --------------------------------------------------------------------------------


def machine_description() -> dict[str, Any]:
    """CPU model, core count, memory, OS and Python, for the README."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb: float | None = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers are already formatted by the caller."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
