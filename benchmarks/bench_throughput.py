"""Throughput, client CPU, parsing and streaming memory: this project side by side with its peers.

``make bench`` runs this script. It starts the local server in its own process with a simulated
upstream latency and a concurrent-requests limit answered with 429 (defaults 0.2 s and 4), then
embeds N distinct passages of 30-80 words (default 20,000, seeded) with each contestant in turn,
each in a fresh Python process so that its CPU time is the client's own:

- this project: the core (``EmbeddingsClient``, ``AsyncEmbeddingsClient``), the LangChain
  adapter (``AimlBgeEmbeddings``) and the LlamaIndex adapter (``AimlBgeEmbedding``), sync and
  async, and each of them again with ``encoding_format="base64"`` (opt-in);
- langchain-openai ``OpenAIEmbeddings`` (``chunk_size`` = batch, ``check_embedding_ctx_length=False``),
  llama-index-embeddings-openai ``OpenAIEmbedding`` (``embed_batch_size`` = batch), sync and
  async, and the ``openai`` SDK in a plain loop over batches;

every one with the same batch size, pointed at the same server. For each it reports texts per
second, the ratio to the server's capacity (limit x batch / latency) and to langchain-openai,
requests and 429s (server counters, reset between contestants), client and server CPU, the
encoding the client asked for, and a check of every returned vector against the server's
deterministic vector for its text. Then the parse benchmark (``bench_parse.py``), streaming
memory (``iter_embeddings`` over 200,000 vs 20,000 texts) and the import check. Figures go to
``bench-results/`` (JSON, PNG, Markdown) and the table is printed with each target marked.

Then the adaptive-concurrency rows: servers that allow other than 4 (429 above 12,
429 above 2, 8 workers with a queue, 12 dropping to 4 and back, and today's 4), each against the
default client, a client tuned by hand and langchain-openai; ``--adaptive-only`` runs only those
(12,288 texts, batch 64; docs/concurrency.md).

Usage: ``python benchmarks/bench_throughput.py [--n 20000] [--batch-size 128] [--quick]``,
``python benchmarks/bench_throughput.py --adaptive-only``.
``--only core-async,core-async/without-number-check`` adds an A/B row with one of the package's kept
shortcuts switched off (``WITHOUT``; docs/internals.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    MODEL,
    REPO,
    ServerProcess,
    check_vectors,
    cpu_seconds,
    current_rss_bytes,
    iter_passages,
    machine_description,
    make_passages,
    markdown_table,
    peak_rss_bytes,
)

__all__ = ["CONTESTANTS", "main"]

HEAVY_MODULES = ("langchain", "langchain_core", "llama_index", "starlette", "uvicorn", "numpy")
"""What ``import aiml_bge_integrations`` must not load."""

# -- contestants (run inside the child process) -------------------------------------------------


@dataclass(frozen=True)
class Contestant:
    """One way to embed the texts; ``run`` executes in a fresh process."""

    key: str
    label: str
    ours: bool
    mode: str  # "sync" | "async"
    sdk_based: bool
    run: Callable[[list[str], str, int], list[list[float]]]


def _ours(base_url: str, batch: int, encoding: str | None) -> dict[str, Any]:
    """This project's settings for a contestant: defaults apart from the batch size."""
    return {
        "api_key": API_KEY,
        "base_url": base_url,
        "model": MODEL,
        "batch_size": batch,
        "encoding_format": encoding,
    }


def _core_sync(encoding: str | None) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from aiml_bge_integrations import EmbeddingsClient

        with EmbeddingsClient(**_ours(base_url, batch, encoding)) as c:
            return c.embed_documents(texts)

    return run


def _install_otel_sdk() -> None:
    """The OpenTelemetry SDK as a user sets it up: batched span export (to an exporter that
    drops the spans) and a metric reader; in the contestant's own process."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _core_sync_traced(attempts: bool) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from aiml_bge_integrations import EmbeddingsClient

        _install_otel_sdk()
        with EmbeddingsClient(**_ours(base_url, batch, None), trace_requests=attempts) as c:
            # One call per batch, as a pipeline that embeds as it reads makes its calls.
            return [
                v
                for i in range(0, len(texts), batch)
                for v in c.embed_documents(texts[i : i + batch])
            ]

    return run


def _core_sync_batched(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
    from aiml_bge_integrations import EmbeddingsClient

    with EmbeddingsClient(**_ours(base_url, batch, None)) as c:
        return [
            v for i in range(0, len(texts), batch) for v in c.embed_documents(texts[i : i + batch])
        ]


def _core_async(encoding: str | None) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from aiml_bge_integrations import AsyncEmbeddingsClient

        async def go() -> list[list[float]]:
            async with AsyncEmbeddingsClient(**_ours(base_url, batch, encoding)) as c:
                return await c.embed_documents(texts)

        return asyncio.run(go())

    return run


def _langchain_adapter(
    mode: str, encoding: str | None = None
) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from aiml_bge_integrations.langchain import AimlBgeEmbeddings

        emb = AimlBgeEmbeddings(**_ours(base_url, batch, encoding))
        if mode == "sync":
            return emb.embed_documents(texts)
        return asyncio.run(emb.aembed_documents(texts))

    return run


def _llama_index_adapter(
    mode: str, encoding: str | None = None
) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from aiml_bge_integrations.llama_index import AimlBgeEmbedding

        emb = AimlBgeEmbedding(**_ours(base_url, batch, encoding))
        if mode == "sync":
            return emb.get_text_embedding_batch(texts)
        return asyncio.run(emb.aget_text_embedding_batch(texts))

    return run


def _langchain_openai(mode: str) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from langchain_openai import OpenAIEmbeddings

        emb = OpenAIEmbeddings(
            model=MODEL,
            base_url=base_url,
            api_key=API_KEY,  # type: ignore[arg-type]
            chunk_size=batch,
            check_embedding_ctx_length=False,
        )
        if mode == "sync":
            return emb.embed_documents(texts)
        return asyncio.run(emb.aembed_documents(texts))

    return run


def _llama_index_openai(mode: str) -> Callable[[list[str], str, int], list[list[float]]]:
    def run(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
        from llama_index.embeddings.openai import OpenAIEmbedding

        emb = OpenAIEmbedding(
            model_name=MODEL, api_key=API_KEY, api_base=base_url, embed_batch_size=batch
        )
        if mode == "sync":
            return emb.get_text_embedding_batch(texts)
        return asyncio.run(emb.aget_text_embedding_batch(texts))

    return run


_REFERENCE_LIMIT = [4]
"""Requests in flight for the reference client: the server's limit (set from the spec)."""


def _raw_httpx(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
    """The reference: bare httpx, 4 requests in flight, orjson, no checks or retries."""
    import httpx
    import orjson

    async def go() -> list[list[float]]:
        slots = asyncio.Semaphore(_REFERENCE_LIMIT[0])
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(chunk: list[str]) -> list[list[float]]:
                body = orjson.dumps({"model": MODEL, "input": chunk})
                async with slots:
                    reply = await http.post(base_url + "/embeddings", content=body, headers=headers)
                data = orjson.loads(reply.content)["data"]
                data.sort(key=lambda d: d["index"])
                return [d["embedding"] for d in data]

            parts = await asyncio.gather(
                *(one(texts[i : i + batch]) for i in range(0, len(texts), batch))
            )
        return [v for part in parts for v in part]

    return asyncio.run(go())


def _openai_loop(texts: list[str], base_url: str, batch: int) -> list[list[float]]:
    from openai import OpenAI

    client = OpenAI(api_key=API_KEY, base_url=base_url)
    out: list[list[float]] = []
    for i in range(0, len(texts), batch):
        reply = client.embeddings.create(input=texts[i : i + batch], model=MODEL)
        out.extend(d.embedding for d in reply.data)
    return out


CONTESTANTS: list[Contestant] = [
    Contestant("core-sync", "core EmbeddingsClient", True, "sync", False, _core_sync(None)),
    Contestant(
        "core-sync-calls",
        "core EmbeddingsClient, a call per batch, OpenTelemetry API without SDK",
        True,
        "sync",
        False,
        _core_sync_batched,
    ),
    Contestant(
        "core-sync-traced",
        "core EmbeddingsClient, a call per batch, OpenTelemetry SDK (span per call, metrics)",
        True,
        "sync",
        False,
        _core_sync_traced(False),
    ),
    Contestant(
        "core-sync-traced-attempts",
        "core EmbeddingsClient, a call per batch, OpenTelemetry SDK, trace_requests=True",
        True,
        "sync",
        False,
        _core_sync_traced(True),
    ),
    Contestant("core-async", "core AsyncEmbeddingsClient", True, "async", False, _core_async(None)),
    Contestant(
        "core-async-b64",
        "core AsyncEmbeddingsClient, base64 opt-in",
        True,
        "async",
        False,
        _core_async("base64"),
    ),
    Contestant(
        "lc-adapter-sync",
        "AimlBgeEmbeddings (LangChain)",
        True,
        "sync",
        False,
        _langchain_adapter("sync"),
    ),
    Contestant(
        "lc-adapter-async",
        "AimlBgeEmbeddings (LangChain)",
        True,
        "async",
        False,
        _langchain_adapter("async"),
    ),
    Contestant(
        "li-adapter-sync",
        "AimlBgeEmbedding (LlamaIndex)",
        True,
        "sync",
        False,
        _llama_index_adapter("sync"),
    ),
    Contestant(
        "li-adapter-async",
        "AimlBgeEmbedding (LlamaIndex)",
        True,
        "async",
        False,
        _llama_index_adapter("async"),
    ),
    Contestant(
        "langchain-openai-sync",
        "langchain-openai OpenAIEmbeddings",
        False,
        "sync",
        True,
        _langchain_openai("sync"),
    ),
    Contestant(
        "langchain-openai-async",
        "langchain-openai OpenAIEmbeddings",
        False,
        "async",
        True,
        _langchain_openai("async"),
    ),
    Contestant(
        "llama-index-openai-sync",
        "llama-index OpenAIEmbedding",
        False,
        "sync",
        True,
        _llama_index_openai("sync"),
    ),
    Contestant(
        "llama-index-openai-async",
        "llama-index OpenAIEmbedding",
        False,
        "async",
        True,
        _llama_index_openai("async"),
    ),
    Contestant("openai-sdk-loop", "openai SDK, plain loop", False, "sync", True, _openai_loop),
    # This project again, asking for base64 (opt-in), as the openai-SDK-based peers do.
    Contestant(
        "core-sync-b64",
        "core EmbeddingsClient, base64 opt-in",
        True,
        "sync",
        False,
        _core_sync("base64"),
    ),
    Contestant(
        "lc-adapter-sync-b64",
        "AimlBgeEmbeddings (LangChain), base64 opt-in",
        True,
        "sync",
        False,
        _langchain_adapter("sync", "base64"),
    ),
    Contestant(
        "lc-adapter-async-b64",
        "AimlBgeEmbeddings (LangChain), base64 opt-in",
        True,
        "async",
        False,
        _langchain_adapter("async", "base64"),
    ),
    Contestant(
        "li-adapter-sync-b64",
        "AimlBgeEmbedding (LlamaIndex), base64 opt-in",
        True,
        "sync",
        False,
        _llama_index_adapter("sync", "base64"),
    ),
    Contestant(
        "li-adapter-async-b64",
        "AimlBgeEmbedding (LlamaIndex), base64 opt-in",
        True,
        "async",
        False,
        _llama_index_adapter("async", "base64"),
    ),
    Contestant(
        "reference-httpx",
        "reference: bare httpx + orjson, 4 in flight",
        False,
        "async",
        False,
        _raw_httpx,
    ),
]
BY_KEY = {c.key: c for c in CONTESTANTS}


def _switch_off(module: Any, name: str, plain: Any) -> None:
    if not hasattr(module, name):  # renamed: an A/B row that changed nothing would mislead
        raise RuntimeError(f"{module.__name__}.{name} is gone: update WITHOUT")
    setattr(module, name, plain)


def _plain_number_check() -> None:
    from aiml_bge_integrations import _wire

    _switch_off(_wire, "_vectors_hold_only_numbers", lambda content, doc, data: False)


def _no_range_check() -> None:
    from aiml_bge_integrations import _wire

    _switch_off(_wire, "_check_range", lambda vec, idx: None)


WITHOUT: dict[str, Callable[[], None]] = {
    "number-check": _plain_number_check,
    "range-check": _no_range_check,
}
"""Clever shortcuts (and the vectors' range check, to weigh its cost), each switched off for an
A/B row: ``--only core-async,core-async/without-number-check`` (docs/internals.md)."""


def _split_key(key: str) -> tuple[Contestant, list[str]]:
    """``core-async/without-a+b`` -> the contestant and the names in WITHOUT it runs without."""
    base, _, variant = key.partition("/without-")
    without = list(WITHOUT) if variant == "all" else [w for w in variant.split("+") if w]
    if base not in BY_KEY or any(w not in WITHOUT for w in without):
        raise KeyError(key)
    return BY_KEY[base], without


TRACING_KEYS = ("core-sync-calls", "core-sync-traced", "core-sync-traced-attempts")
"""The tracing-cost rows: a call per batch, one after the other, so not the users' default path
(``docs/benchmarks.md``, Tracing); the targets below leave them out."""
OUR_DEFAULT_KEYS = [
    c.key
    for c in CONTESTANTS
    if c.ours and not c.key.endswith("-b64") and c.key not in TRACING_KEYS
]
OUR_BASE64_KEYS = [c.key for c in CONTESTANTS if c.ours and c.key.endswith("-b64")]


class _EncodingSpy:
    """Records the ``encoding_format`` of the first request body each HTTP stack sends.

    Wraps ``send`` of httpx and httpx2 (the openai SDK's stack) clients; only the first
    request is decoded, so the cost is one small JSON parse per run.
    """

    def __init__(self) -> None:
        self.seen: str | None = None

    def install(self) -> None:
        import importlib

        for module_name in ("httpx", "httpx2"):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for cls in (module.Client, module.AsyncClient):
                self._wrap(cls)

    def _note(self, request: Any) -> None:
        if self.seen is not None or request.method != "POST":
            return
        try:
            body = json.loads(request.content or b"{}")
            self.seen = str(body.get("encoding_format") or "none sent (server default: float)")
        except Exception:
            self.seen = "unreadable"

    def _wrap(self, cls: Any) -> None:
        original = cls.send
        spy = self
        if asyncio.iscoroutinefunction(original):

            async def asend(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                spy._note(request)
                return await original(self, request, *args, **kwargs)

            cls.send = asend
        else:

            def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                spy._note(request)
                return original(self, request, *args, **kwargs)

            cls.send = send


def _child_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    contestant, without = _split_key(spec["key"])
    for name in without:
        WITHOUT[name]()
    _REFERENCE_LIMIT[0] = spec["limit"]
    texts = make_passages(spec["n"], spec["seed"])
    spy = _EncodingSpy()
    spy.install()
    # Import the contestant's stack before the clock starts: import time is not throughput.
    _warm_imports(contestant.key)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    vectors = contestant.run(texts, spec["base_url"], spec["batch"])
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    import numpy as np

    expected = np.load(spec["expected"], mmap_mode="r")
    check = check_vectors(vectors, expected)
    return {
        "key": contestant.key,
        "wall_s": wall,
        "client_cpu_s": cpu,
        "encoding": spy.seen,
        "check": check,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
    }


def _warm_imports(key: str) -> None:
    import importlib

    # The package defers httpcore, anyio and ctypes to its first request (to keep its own
    # import light); the SDK peers load their whole stack on import. Both are loaded here,
    # so that no contestant's clock includes imports.
    lazy = ["httpcore", "anyio", "ctypes"]
    modules = {
        "core": ["aiml_bge_integrations", *lazy],
        "lc-adapter": ["aiml_bge_integrations.langchain", *lazy],
        "li-adapter": ["aiml_bge_integrations.llama_index", *lazy],
        "langchain-openai": ["langchain_openai"],
        "llama-index-openai": ["llama_index.embeddings.openai"],
        "openai-sdk": ["openai"],
        "reference": ["httpx", "orjson"],
    }
    for prefix, names in modules.items():
        if key.startswith(prefix):
            for name in names:
                importlib.import_module(name)


STREAM_SAMPLE_EVERY = 997
"""Every this-many-th streamed vector is checked (by digest, in the parent)."""


def _vector_digest(vector: Any) -> str:
    """SHA-256 of a vector's float32 bytes: equal digests mean equal float32 vectors."""
    import hashlib
    from array import array

    return hashlib.sha256(array("f", vector).tobytes()).hexdigest()


def _child_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """Stream ``n`` lazily generated texts through ``iter_embeddings``; peak RSS over baseline.

    This process imports only the client (no numpy, no server code), so its memory is the
    client's. Sampled vectors leave as 64-character digests, checked by the parent.
    """
    from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient

    n, words = spec["n"], spec["words"]
    settings = {"api_key": API_KEY, "base_url": spec["base_url"], "model": MODEL}
    settings["batch_size"] = spec["batch"]

    def texts(count: int) -> Iterator[str]:
        return iter_passages(count, spec["seed"], words[0], words[1])

    digests: list[tuple[int, str]] = []
    wrong_dim = 0

    def consume(i: int, vector: list[float]) -> None:
        nonlocal wrong_dim
        if len(vector) != 768:
            wrong_dim += 1
        if i % STREAM_SAMPLE_EVERY == 0:
            digests.append((i, _vector_digest(vector)))

    peak = [0]
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], current_rss_bytes())
            stop.wait(0.005)

    count = 0
    warm = 2000  # pools, caches and the tokenizer are loaded before the baseline is read
    if spec["mode"] == "sync":
        with EmbeddingsClient(**settings) as client:
            for _ in client.iter_embeddings(iter_passages(warm, spec["seed"] + 99)):
                pass
            base = current_rss_bytes()
            threading.Thread(target=sample_rss, daemon=True).start()
            t0 = time.perf_counter()
            for vector in client.iter_embeddings(texts(n)):
                consume(count, vector)
                count += 1
    else:

        async def go() -> int:
            nonlocal count
            async with AsyncEmbeddingsClient(**settings) as client:
                async for _ in client.iter_embeddings(iter_passages(warm, spec["seed"] + 99)):
                    pass
                base = current_rss_bytes()
                threading.Thread(target=sample_rss, daemon=True).start()
                async for vector in client.iter_embeddings(texts(n)):
                    consume(count, vector)
                    count += 1
            return base

        t0 = time.perf_counter()
        base = asyncio.run(go())
    wall = time.perf_counter() - t0
    stop.set()
    peak[0] = max(peak[0], current_rss_bytes())
    return {
        "n": n,
        "mode": spec["mode"],
        "count": count,
        "wall_s": wall,
        "baseline_rss_mb": base / 2**20,
        "peak_rss_mb": peak[0] / 2**20,
        "growth_mb": max(peak[0] - base, 0) / 2**20,
        "wrong_dimension": wrong_dim,
        "digests": digests,
        "numpy_loaded": "numpy" in sys.modules,
    }


def _check_stream_digests(result: dict[str, Any], seed: int, words: list[int]) -> None:
    """Compare the child's sampled digests with the server's vectors for those texts."""
    import numpy as np

    from aiml_bge_integrations.server.backend import HashingEmbedder

    wanted = dict(result.pop("digests"))
    embedder = HashingEmbedder()
    wrong = 0
    for i, text in enumerate(iter_passages(result["n"], seed, words[0], words[1])):
        if i in wanted:
            vector = embedder.embed([text])[0].astype(np.float32)
            wrong += _vector_digest(vector.tolist()) != wanted[i]
    result["sampled_checked"] = len(wanted)
    result["wrong"] = wrong + result["wrong_dimension"]
    if result["count"] != result["n"]:
        result["wrong"] += abs(result["n"] - result["count"])


def _child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    children = {"stream": _child_stream, "adaptive": _child_adaptive}
    result = children.get(spec["kind"], _child_throughput)(spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- parent --------------------------------------------------------------------------------------


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    for name in ("AIMLAPI_API_KEY", "AIMLAPI_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (proc.stderr or proc.stdout)[-1500:]
    raise RuntimeError(f"exit {proc.returncode}: {tail}")


def _missing_module(key: str) -> str | None:
    import importlib.util

    needs = {
        "lc-adapter": "aiml_bge_integrations.langchain",
        "li-adapter": "aiml_bge_integrations.llama_index",
        "langchain-openai": "langchain_openai",
        "llama-index-openai": "llama_index.embeddings.openai",
        "openai-sdk": "openai",
    }
    for prefix, module in needs.items():
        if key.startswith(prefix):
            try:
                if importlib.util.find_spec(module) is None:
                    return module
            except ModuleNotFoundError:
                return module
    return None


def run_throughput(
    args: argparse.Namespace, keys: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """Every contestant against one server with latency and a concurrency limit."""
    import numpy as np

    from aiml_bge_integrations.server.backend import HashingEmbedder

    texts = make_passages(args.n, args.seed)
    embedder = HashingEmbedder()
    expected = np.concatenate(
        [embedder.embed(texts[i : i + 1024]).astype(np.float32) for i in range(0, len(texts), 1024)]
    )
    tmp = tempfile.mkdtemp(prefix="aiml-bge-bench-")
    expected_path = os.path.join(tmp, "expected.npy")
    np.save(expected_path, expected)
    del expected
    capacity = args.limit * args.batch_size / args.latency if args.latency > 0 else None
    rows: list[dict[str, Any]] = []
    ceiling: dict[str, Any] = {}
    try:
        with ServerProcess(args.latency, args.limit, module=args.server_module) as server:
            # One untimed pass first, so that no contestant pays for the server's cold caches.
            t0 = time.perf_counter()
            _REFERENCE_LIMIT[0] = args.limit
            _raw_httpx(texts, server.base_url, args.batch_size)
            log(
                f"  (server warmed up with one pass of the texts in {time.perf_counter() - t0:.0f} s)"
            )
            ceiling = measure_server_ceiling(server.base_url, texts, args)
            if capacity:
                ceiling["capacity_ratio"] = ceiling["texts_per_s"] / capacity
            log(
                f"  server ceiling (client that does not parse, {args.limit} in flight): "
                f"{ceiling['texts_per_s']:,.0f} texts/s = "
                f"{_fmt(ceiling.get('capacity_ratio'), '.0%')} of capacity; round trip "
                f"{ceiling['rtt_ms_alone']:.0f} ms alone, {ceiling['rtt_ms_at_limit']:.0f} ms "
                f"with {args.limit} in flight"
            )
            del texts
            for key in keys:
                c = _split_key(key)[0]
                row: dict[str, Any] = {
                    "key": key,
                    "label": " ".join([c.label, *key.partition("/")[1:]]).strip(),
                    "mode": c.mode,
                    "ours": c.ours,
                    "sdk_based": c.sdk_based,
                }
                missing = _missing_module(key)
                if missing:
                    row["skipped"] = f"{missing} is not importable"
                    log(f"  {key:26s} skipped: {row['skipped']}")
                    rows.append(row)
                    continue
                server.reset_stats()
                server_cpu0 = server.cpu_seconds()
                spec = {
                    "kind": "throughput",
                    "key": key,
                    "n": args.n,
                    "seed": args.seed,
                    "batch": args.batch_size,
                    "limit": args.limit,
                    "base_url": server.base_url,
                    "expected": expected_path,
                }
                try:
                    result = _run_child(spec, timeout=args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    row["failed"] = str(err)[-600:]
                    log(f"  {key:26s} FAILED: {row['failed']}")
                    rows.append(row)
                    continue
                stats = server.stats()
                server_cpu1 = server.cpu_seconds()
                row.update(result)
                row["texts_per_s"] = args.n / result["wall_s"]
                row["capacity_ratio"] = row["texts_per_s"] / capacity if capacity else None
                row["client_cpu_s_per_1k"] = result["client_cpu_s"] / args.n * 1000
                row["requests"] = stats["requests"]
                row["429s"] = stats.get("by_status", {}).get("429", 0)
                row["rate_limited"] = stats.get("rate_limited", 0)
                row["peak_in_flight"] = stats.get("peak_in_flight")
                if server_cpu0 is not None and server_cpu1 is not None:
                    row["server_cpu_s"] = server_cpu1 - server_cpu0
                rows.append(row)
                log(
                    f"  {key:26s} {row['texts_per_s']:8.0f} texts/s  "
                    f"{row['requests']:5d} requests  {row['429s']:5d} x 429  "
                    f"cpu {row['client_cpu_s_per_1k'] * 1000:6.0f} ms/1k  "
                    f"exact {result['check']['exact']}/{args.n}  enc {result['encoding']}"
                )
    finally:
        try:
            os.remove(expected_path)
            os.rmdir(tmp)
        except OSError:
            pass
    by_key = {r["key"]: r for r in rows if "texts_per_s" in r}
    reference = by_key.get("reference-httpx")
    for r in rows:
        if "texts_per_s" not in r:
            continue
        base = by_key.get(f"langchain-openai-{r['mode']}")
        r["vs_langchain_openai"] = r["texts_per_s"] / base["texts_per_s"] if base else None
        r["vs_reference"] = r["texts_per_s"] / reference["texts_per_s"] if reference else None
    return {"capacity_texts_per_s": capacity, "server_ceiling": ceiling, "rows": rows}


def measure_server_ceiling(
    base_url: str, texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """What the server delivers to a client that costs nothing: bodies are read, never parsed.

    Requests are pre-built; ``limit`` loops send them back to back. No client can beat this
    figure on this machine, so it separates the server's own limit from the clients'.
    """
    import statistics

    import httpx
    import orjson

    count = min(len(texts), 40 * args.batch_size)
    bodies = [
        orjson.dumps({"model": MODEL, "input": texts[i : i + args.batch_size]})
        for i in range(0, count, args.batch_size)
    ]
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=120) as http:

            async def loop(k: int, step: int, rtts: list[float]) -> None:
                for j in range(k, len(bodies), step):
                    t0 = time.perf_counter()
                    reply = await http.post(
                        base_url + "/embeddings", content=bodies[j], headers=headers
                    )
                    reply.raise_for_status()
                    rtts.append(time.perf_counter() - t0)

            alone: list[float] = []
            await loop(0, max(1, len(bodies) // 8), alone)
            at_limit: list[float] = []
            t0 = time.perf_counter()
            await asyncio.gather(*(loop(k, args.limit, at_limit) for k in range(args.limit)))
            wall = time.perf_counter() - t0
        return {
            "texts_per_s": count / wall,
            "rtt_ms_alone": statistics.median(alone) * 1000,
            "rtt_ms_at_limit": statistics.median(at_limit) * 1000,
        }

    return asyncio.run(go())


def run_stream(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """``iter_embeddings`` over a small and a large lazily generated input, zero latency."""
    out: dict[str, Any] = {"sizes": [args.stream_small, args.stream_large], "runs": []}
    with ServerProcess(0.0, None, module=args.server_module) as server:
        for mode in args.stream_modes:
            for n in (args.stream_small, args.stream_large):
                spec = {
                    "kind": "stream",
                    "mode": mode,
                    "n": n,
                    "seed": args.seed + 1,
                    "words": args.stream_words,
                    "batch": args.batch_size,
                    "base_url": server.base_url,
                }
                try:
                    result = _run_child(spec, timeout=args.timeout * 3)
                    _check_stream_digests(result, spec["seed"], spec["words"])
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    result = {"n": n, "mode": mode, "failed": str(err)[-600:]}
                    log(f"  stream {mode} {n}: FAILED {result['failed']}")
                else:
                    log(
                        f"  stream {mode:5s} {n:7d} texts: {result['wall_s']:6.1f} s, peak RSS "
                        f"{result['peak_rss_mb']:.0f} MB (+{result['growth_mb']:.1f} MB over "
                        f"{result['baseline_rss_mb']:.0f} MB), {result['sampled_checked']} sampled "
                        f"vectors checked, {result['wrong']} wrong"
                    )
                out["runs"].append(result)
    ratios = {}
    for mode in args.stream_modes:
        small = next(
            (r for r in out["runs"] if r["mode"] == mode and r["n"] == args.stream_small), None
        )
        large = next(
            (r for r in out["runs"] if r["mode"] == mode and r["n"] == args.stream_large), None
        )
        if small and large and "failed" not in small and "failed" not in large:
            ratios[mode] = {
                "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
                "growth_ratio": large["growth_mb"] / max(small["growth_mb"], 1.0),
                "growth_mb": [small["growth_mb"], large["growth_mb"]],
            }
    out["ratios"] = ratios
    return out


def run_import_check() -> dict[str, Any]:
    """``import aiml_bge_integrations``: what it loads, and how long it takes in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMLAPI_")}
    probe = (
        "import sys, aiml_bge_integrations; "
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_MODULES!r}))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import aiml_bge_integrations"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stderr
    cumulative_us = None
    for line in importtime.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "aiml_bge_integrations":
            cumulative_us = int(parts[1])

    def best_wall(code: str) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - t0)
        return min(times)

    bare = best_wall("pass")
    with_pkg = best_wall("import aiml_bge_integrations")
    return {
        "heavy_loaded": [m for m in loaded.split(",") if m],
        "importtime_cumulative_ms": cumulative_us / 1000 if cumulative_us is not None else None,
        "subprocess_ms": (with_pkg - bare) * 1000,
    }


def run_parse(args: argparse.Namespace) -> dict[str, Any]:
    """``bench_parse.py`` in a fresh process."""
    script = Path(__file__).with_name("bench_parse.py")
    cmd = [sys.executable, str(script), "--json", "--vectors", str(args.parse_vectors)]
    cmd += ["--rounds", str(args.parse_rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- adaptive concurrency: servers that allow other than 4 ---------------------------------------


@dataclass(frozen=True)
class AdaptiveServer:
    """One kind of server for the adaptive rows: its settings and the level a user would tune to."""

    key: str
    label: str
    level: int
    """``max_concurrency`` of the client tuned by hand (what the server sustains)."""
    config: dict[str, Any]
    """``LocalServer`` settings besides latency."""
    phases: tuple[tuple[float, int], ...] = ()
    """(share of requests served, hard limit from then on): a capacity that changes mid-run."""


ADAPTIVE_SERVERS: list[AdaptiveServer] = [
    AdaptiveServer(
        "limit-4", "429 above 4 in flight (the main benchmark's)", 4, {"max_concurrent_requests": 4}
    ),
    AdaptiveServer("limit-12", "429 above 12 in flight", 12, {"max_concurrent_requests": 12}),
    AdaptiveServer("limit-2", "429 above 2 in flight", 2, {"max_concurrent_requests": 2}),
    AdaptiveServer("workers-8", "8 workers, the rest queued (TEI, infinity)", 8, {"workers": 8}),
    AdaptiveServer(
        "workers-1", "1 worker, the rest queued (one inference at a time)", 1, {"workers": 1}
    ),
    AdaptiveServer(
        "drop-12-4-12",
        "429 above 12, then 4 (another tenant), then 12",
        12,
        {"max_concurrent_requests": 12},
        phases=((0.3, 4), (0.6, 12)),
    ),
]
"""The servers of the adaptive rows; the tuned client of the drop row keeps 12 (refused while 4)."""
ADAPTIVE_BY_KEY = {s.key: s for s in ADAPTIVE_SERVERS}
ADAPTIVE_CLIENTS = ("default", "tuned", "langchain-openai")


def _child_adaptive(spec: dict[str, Any]) -> dict[str, Any]:
    """One client against one adaptive-row server: texts per second and what the client learned."""
    texts = make_passages(spec["n"], spec["seed"])
    client, mode, batch, base_url = spec["client"], spec["mode"], spec["batch"], spec["base_url"]
    _warm_imports("langchain-openai" if client == "langchain-openai" else "core")
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if client == "langchain-openai":
        vectors = _langchain_openai(mode)(texts, base_url, batch)
    else:
        from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient

        settings = _ours(base_url, batch, None)
        if client == "tuned":
            settings.update(max_concurrency=spec["level"], adaptive_concurrency=False)
        if mode == "sync":
            with EmbeddingsClient(**settings) as c:
                vectors = c.embed_documents(texts)
                usage = c.usage
        else:

            async def go() -> tuple[list[list[float]], Any]:
                async with AsyncEmbeddingsClient(**settings) as c:
                    return await c.embed_documents(texts), c.usage

            vectors, usage = asyncio.run(go())
        info = {"limit_end": usage.concurrency, "limit_peak": usage.peak_concurrency}
    wall = time.perf_counter() - t0
    if len(vectors) != len(texts):
        raise RuntimeError(f"{len(vectors)} vectors for {len(texts)} texts")
    return {"wall_s": wall, **info}


def run_adaptive(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Default, tuned and langchain-openai clients against each adaptive-row server."""
    from aiml_bge_integrations.server import LocalServer

    servers = [ADAPTIVE_BY_KEY[k] for k in args.adaptive_servers]
    texts = make_passages(args.adaptive_n, args.seed)
    rows: list[dict[str, Any]] = []
    for server_spec in servers:
        # In this process, in a thread: the parent only waits for each client's process, and
        # a capacity that changes mid-run is a live change of the server's config.
        with LocalServer(api_key=API_KEY, latency=args.latency, **server_spec.config) as server:
            # One untimed pass first, so that no contestant pays for the server's cold caches.
            _REFERENCE_LIMIT[0] = server_spec.level
            _raw_httpx(texts, server.base_url, args.batch_size)
            for client in args.adaptive_clients:
                row: dict[str, Any] = {
                    "server": server_spec.key,
                    "client": client,
                    "mode": args.adaptive_mode,
                }
                if client == "langchain-openai" and _missing_module("langchain-openai"):
                    row["skipped"] = "langchain_openai is not importable"
                    rows.append(row)
                    continue
                server.config.max_concurrent_requests = server_spec.config.get(
                    "max_concurrent_requests"
                )
                server.reset_stats()
                stop = threading.Event()
                requests_total = -(-args.adaptive_n // args.batch_size)
                tenant = threading.Thread(
                    target=_follow_phases,
                    args=(server, server_spec.phases, requests_total, stop),
                    daemon=True,
                )
                tenant.start()
                spec = {
                    "kind": "adaptive",
                    "client": client,
                    "mode": args.adaptive_mode,
                    "level": server_spec.level,
                    "n": args.adaptive_n,
                    "seed": args.seed,
                    "batch": args.batch_size,
                    "base_url": server.base_url,
                }
                try:
                    result = _run_child(spec, timeout=args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    row["failed"] = str(err)[-600:]
                    log(f"  {server_spec.key:13s} {client:17s} FAILED: {row['failed']}")
                    rows.append(row)
                    continue
                finally:
                    stop.set()
                    tenant.join()
                stats = server.stats.snapshot()
                row.update(result)
                row["texts_per_s"] = args.adaptive_n / result["wall_s"]
                row["requests"] = stats["requests"]
                row["429s"] = stats["rate_limited"]
                row["peak_in_flight"] = stats["peak_in_flight"]
                rows.append(row)
                learned = (
                    f"  limit {row['limit_end']} (peak {row['limit_peak']})"
                    if "limit_end" in row
                    else ""
                )
                log(
                    f"  {server_spec.key:13s} {client:17s} {row['texts_per_s']:7.0f} texts/s  "
                    f"{row['requests']:5d} requests  {row['429s']:4d} x 429  peak in flight "
                    f"{row['peak_in_flight']:3d}{learned}"
                )
    tuned = {r["server"]: r for r in rows if r["client"] == "tuned" and "texts_per_s" in r}
    for r in rows:
        base = tuned.get(r["server"])
        if "texts_per_s" in r and base:
            r["vs_tuned"] = r["texts_per_s"] / base["texts_per_s"]
    return {
        "rows": rows,
        "n": args.adaptive_n,
        "batch_size": args.batch_size,
        "mode": args.adaptive_mode,
    }


def _follow_phases(
    server: Any, phases: tuple[tuple[float, int], ...], requests_total: int, stop: threading.Event
) -> None:
    """Change the server's hard limit as the run passes each share of its requests."""
    for share, limit in phases:
        while server.stats.ok < share * requests_total:
            if stop.wait(0.01):
                return
        server.config.max_concurrent_requests = limit


def adaptive_table(result: dict[str, Any]) -> str:
    """The Markdown table of the adaptive rows."""
    rows = []
    for r in result["rows"]:
        spec = ADAPTIVE_BY_KEY[r["server"]]
        if "texts_per_s" not in r:
            rows.append(
                [spec.label, r["client"], "skipped" if "skipped" in r else "FAILED", "", "", "", ""]
            )
            continue
        client = r["client"] + (f" ({spec.level})" if r["client"] == "tuned" else "")
        rows.append(
            [
                spec.label,
                client,
                f"{r['texts_per_s']:,.0f}",
                _fmt(r.get("vs_tuned"), ".0%"),
                f"{r['429s']} of {r['requests']} ({r['429s'] / max(r['requests'], 1):.1%})",
                str(r["peak_in_flight"]),
                f"{r['limit_end']} / {r['limit_peak']}" if "limit_end" in r else "",
            ]
        )
    return markdown_table(
        [
            "server",
            "client",
            "texts/s",
            "vs tuned",
            "429s",
            "peak in flight (server)",
            "client's limit: end / peak",
        ],
        rows,
    )


def adaptive_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's targets for the adaptive rows."""
    targets: list[dict[str, Any]] = []
    defaults = [r for r in result["rows"] if r["client"] == "default" and "texts_per_s" in r]
    if not defaults:
        return [{"target": "adaptive: default client rows", "met": None, "detail": "none ran"}]
    ratios = [(r["server"], r.get("vs_tuned")) for r in defaults]
    targets.append(
        {
            "target": "adaptive: default >= 85% of the tuned client on every server",
            "met": all(v is not None and v >= 0.85 for _, v in ratios),
            "detail": "; ".join(f"{k} {_fmt(v, '.0%')}" for k, v in ratios),
        }
    )
    shares = [(r["server"], r["429s"] / max(r["requests"], 1)) for r in defaults]
    targets.append(
        {
            "target": "adaptive: default's 429s under 5% of its requests",
            "met": all(s < 0.05 for _, s in shares),
            "detail": "; ".join(f"{k} {s:.1%}" for k, s in shares),
        }
    )
    queued = [r for r in defaults if "workers" in ADAPTIVE_BY_KEY[r["server"]].config]
    if queued:
        targets.append(
            {
                "target": "adaptive: queueing server gets at most twice its workers in flight",
                "met": all(
                    r["peak_in_flight"] <= 2 * ADAPTIVE_BY_KEY[r["server"]].config["workers"]
                    for r in queued
                ),
                "detail": "; ".join(
                    f"{r['server']}: peak {r['peak_in_flight']} in flight" for r in queued
                ),
            }
        )
    return targets


# -- report ----------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def throughput_table(result: dict[str, Any], n: int) -> str:
    """The Markdown table of the throughput run."""
    rows = []
    for r in result["rows"]:
        name = f"{r['label']} ({r['mode']})"
        if "skipped" in r or "failed" in r:
            rows.append([name, "skipped" if "skipped" in r else "FAILED", *["" for _ in range(9)]])
            continue
        check = r["check"]
        rows.append(
            [
                f"**{name}**" if r["ours"] else name,
                f"{r['texts_per_s']:,.0f}",
                _fmt(r["capacity_ratio"], ".0%"),
                _fmt(r.get("vs_langchain_openai"), ".2f", "x"),
                _fmt(r.get("vs_reference"), ".0%"),
                f"{r['requests']:,}",
                f"{r['429s']:,}",
                str(r.get("peak_in_flight", "?")),
                f"{r['client_cpu_s_per_1k'] * 1000:,.0f}",
                r["encoding"] or "?",
                f"{check['exact']:,}/{n:,}" + ("" if check["python_floats"] else " (not floats)"),
            ]
        )
    return markdown_table(
        [
            "contestant",
            "texts/s",
            "of capacity",
            "vs langchain-openai",
            "of reference",
            "requests",
            "429s",
            "peak in flight",
            "client CPU ms / 1k",
            "encoding asked",
            "vectors exact",
        ],
        rows,
    )


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: met or not, with the numbers behind it."""
    targets: list[dict[str, Any]] = []
    tp = report.get("throughput")
    ok_rows = {r["key"]: r for r in (tp or {}).get("rows", []) if "texts_per_s" in r}

    def add(name: str, met: bool | None, detail: str) -> None:
        targets.append({"target": name, "met": met, "detail": detail})

    if tp:
        asyncs = [ok_rows.get(k) for k in ("core-async", "lc-adapter-async", "li-adapter-async")]
        if all(asyncs):
            worst = min(r["capacity_ratio"] for r in asyncs if r)
            n429 = sum(r["429s"] for r in asyncs if r)
            ceiling = tp.get("server_ceiling", {}).get("capacity_ratio")
            add(
                "async paths >= 90% of server capacity, zero 429s",
                worst >= 0.9 and n429 == 0,
                "; ".join(
                    f"{r['key']} {r['capacity_ratio']:.1%}, {r['429s']} x 429" for r in asyncs if r
                )
                + (
                    f" (a client doing no work gets {ceiling:.0%} from this server)"
                    if ceiling
                    else ""
                ),
            )
        else:
            add("async paths >= 90% of server capacity, zero 429s", None, "a contestant is missing")
        ours = [ok_rows[k] for k in OUR_DEFAULT_KEYS if k in ok_rows]
        vs = [(r["key"], r.get("vs_langchain_openai")) for r in ours]
        if ours and all(v is not None for _, v in vs):
            worst_vs = min(v for _, v in vs if v is not None)
            add(
                ">= 3.5x langchain-openai (same mode)",
                worst_vs >= 3.5,
                f"lowest {worst_vs:.2f}x; " + ", ".join(f"{k} {v:.2f}x" for k, v in vs),
            )
        for mode in ("sync", "async"):
            peer = ok_rows.get(f"llama-index-openai-{mode}")
            mine = [r for r in ours if r["mode"] == mode]
            if peer and mine:
                slowest = min(mine, key=lambda r: r["texts_per_s"])
                add(
                    f"faster than llama-index OpenAIEmbedding ({mode})",
                    slowest["texts_per_s"] > peer["texts_per_s"],
                    f"slowest of ours {slowest['key']} {slowest['texts_per_s']:,.0f} texts/s vs "
                    f"{peer['texts_per_s']:,.0f} ({slowest['texts_per_s'] / peer['texts_per_s']:.2f}x)",
                )
        peers = [r for r in ok_rows.values() if r["sdk_based"]]
        b64 = [ok_rows[k] for k in OUR_BASE64_KEYS if k in ok_rows]
        for rows, which in ((ours, "float, our default"), (b64, "base64 opt-in, as the peers ask")):
            if not (rows and peers):
                continue
            cheapest = min(peers, key=lambda r: r["client_cpu_s_per_1k"])
            dearest = max(rows, key=lambda r: r["client_cpu_s_per_1k"])
            ratio = dearest["client_cpu_s_per_1k"] / cheapest["client_cpu_s_per_1k"]
            add(
                f"client CPU / 1k vectors <= 0.5x the openai-SDK peers (end to end; {which})",
                ratio <= 0.5,
                f"ours at most {dearest['client_cpu_s_per_1k'] * 1000:.0f} ms ({dearest['key']}), "
                f"cheapest SDK peer {cheapest['client_cpu_s_per_1k'] * 1000:.0f} ms "
                f"({cheapest['key']}): {ratio:.2f}x",
            )
    parse = report.get("parse")
    if parse:
        r = parse["ratios"]
        add(
            "parse CPU <= 0.5x the openai SDK's (isolated, SDK default base64)",
            r["ours_float_vs_sdk_default_base64"] <= 0.5,
            f"ours float {r['ours_float_vs_sdk_default_base64']:.2f}x, "
            f"ours base64 {r['ours_base64_vs_sdk_default_base64']:.2f}x the SDK",
        )
        add(
            "parse CPU <= 1.5x the orjson.loads floor",
            r["ours_float_vs_orjson_floor"] <= 1.5,
            f"float (default) {r['ours_float_vs_orjson_floor']:.2f}x; "
            f"base64 (opt-in) {r['ours_base64_vs_orjson_floor']:.2f}x the float floor",
        )
    stream = report.get("stream")
    if stream:
        ratios = stream.get("ratios", {})
        if ratios:
            # Judged on the process's peak RSS, as the target reads. Growth over the baseline
            # is shown too: it also moves with the allocator (freed 2 MB reply buffers are
            # reused from the heap, not returned), which tracemalloc in tests/unit/test_memory.py
            # separates from what the client itself holds.
            worst = max(v["peak_rss_ratio"] for v in ratios.values())
            add(
                "streaming memory: peak(200k) <= 1.2x peak(20k)",
                worst <= 1.2,
                "; ".join(
                    f"{mode}: peak RSS {v['peak_rss_ratio']:.2f}x; growth over the baseline "
                    f"{v['growth_mb'][0]:.1f} -> {v['growth_mb'][1]:.1f} MB ({v['growth_ratio']:.2f}x)"
                    for mode, v in ratios.items()
                ),
            )
        else:
            add("streaming memory: peak(200k) <= 1.2x peak(20k)", None, "a run failed")
    imp = report.get("import")
    if imp:
        add(
            "import aiml_bge_integrations loads no LangChain, LlamaIndex, server stack or numpy",
            not imp["heavy_loaded"],
            f"loaded: {', '.join(imp['heavy_loaded']) or 'none of ' + ', '.join(HEAVY_MODULES)}; "
            f"import time {_fmt(imp['importtime_cumulative_ms'], '.0f', ' ms')} (-X importtime), "
            f"{imp['subprocess_ms']:.0f} ms over a bare interpreter",
        )
    if report.get("adaptive"):
        targets.extend(adaptive_targets(report["adaptive"]))
    return targets


def render_report(report: dict[str, Any]) -> str:
    """Everything as Markdown: settings, machine, tables, targets."""
    cfg = report["config"]
    m = report["machine"]
    parts = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}. Server and clients share these cores; load average "
        f"(1, 5, 15 min) {report.get('load_average_at_start')} at the start, "
        f"{report.get('load_average_at_end')} at the end.",
        f"Settings: N = {cfg['n']:,} passages of 30-80 words (seed {cfg['seed']}), batch "
        f"{cfg['batch_size']}, server latency {cfg['latency']} s, limit {cfg['limit']} concurrent "
        f"requests (429 above it).",
    ]
    tp = report.get("throughput")
    if tp:
        cap = tp["capacity_texts_per_s"]
        ceiling = tp.get("server_ceiling") or {}
        ceiling_text = (
            f" What this server delivers to a client that does no work at all (bodies read, "
            f"never parsed; {cfg['limit']} in flight): {ceiling['texts_per_s']:,.0f} texts/s = "
            f"{_fmt(ceiling.get('capacity_ratio'), '.0%')} of capacity, round trip "
            f"{ceiling['rtt_ms_alone']:.0f} ms alone and {ceiling['rtt_ms_at_limit']:.0f} ms with "
            f"{cfg['limit']} in flight (the latency is {cfg['latency'] * 1000:.0f} ms)."
            if ceiling
            else ""
        )
        parts.append(
            f"### Throughput\n\nServer capacity: {cfg['limit']} x {cfg['batch_size']} / "
            f"{cfg['latency']} s = {_fmt(cap, ',.0f')} texts/s.{ceiling_text} Bold rows are this "
            "project.\n\n" + throughput_table(tp, cfg["n"])
        )
    parse = report.get("parse")
    if parse:
        from bench_parse import render

        parts.append(
            "### Parsing, isolated (client CPU per 1,000 768-d vectors)\n\n" + render(parse)
        )
    stream = report.get("stream")
    if stream:
        rows = [
            [
                r["mode"],
                f"{r['n']:,}",
                _fmt(r.get("wall_s"), ".1f"),
                _fmt(r.get("baseline_rss_mb"), ".0f"),
                _fmt(r.get("peak_rss_mb"), ".0f"),
                _fmt(r.get("growth_mb"), ".1f"),
                f"{r.get('sampled_checked', 0)} / {r.get('wrong', '?')}",
            ]
            for r in stream["runs"]
        ]
        parts.append(
            "### Streaming memory (`iter_embeddings`, zero latency, lazy input)\n\n"
            + markdown_table(
                [
                    "client",
                    "texts",
                    "seconds",
                    "RSS before (MB)",
                    "peak RSS (MB)",
                    "growth (MB)",
                    "sampled checked / wrong",
                ],
                rows,
            )
        )
    adaptive = report.get("adaptive")
    if adaptive:
        parts.append(
            f"### Adaptive concurrency: servers that allow other than 4\n\n{adaptive['n']:,} texts, "
            f"batch {adaptive['batch_size']}, latency {cfg['latency']} s, {adaptive['mode']} "
            "clients; default = no concurrency setting, tuned = `max_concurrency` set to what the "
            "server sustains with `adaptive_concurrency=False`. Peak in flight counts queued "
            "requests on the queueing server.\n\n" + adaptive_table(adaptive)
        )
    targets = report.get("targets", [])
    if targets:
        mark = {True: "MET", False: "NOT MET", None: "n/a"}
        parts.append(
            "### Targets\n\n"
            + markdown_table(
                ["target", "result", "numbers"],
                [[t["target"], mark[t["met"]], t["detail"]] for t in targets],
            )
        )
    return "\n\n".join(parts) + "\n"


def write_chart(report: dict[str, Any], path: Path) -> None:
    """Bars of texts/s (with the capacity line) and of client CPU per 1,000 vectors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["throughput"]["rows"] if "texts_per_s" in r]
    if not rows:
        return
    names = [f"{r['label']} ({r['mode']})" for r in rows]
    colors = [
        "#1f77b4" if r["ours"] else "#dddddd" if r["key"] == "reference-httpx" else "#999999"
        for r in rows
    ]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.45 * len(rows) + 1.8), sharey=True)
    y = range(len(rows))
    ax1.barh(y, [r["texts_per_s"] for r in rows], color=colors)
    cap = report["throughput"]["capacity_texts_per_s"]
    if cap:
        ax1.axvline(cap, color="#d62728", linestyle="--", label=f"server capacity {cap:,.0f}/s")
        ax1.axvline(0.9 * cap, color="#d62728", linestyle=":", label="90% of capacity")
        ceiling = report["throughput"].get("server_ceiling") or {}
        if ceiling:
            ax1.axvline(
                ceiling["texts_per_s"],
                color="#555555",
                linestyle="-.",
                label=f"client doing no work {ceiling['texts_per_s']:,.0f}/s",
            )
        ax1.legend(loc="lower right", fontsize=8)
    ax1.set_yticks(list(y), names, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("texts per second (higher is better)")
    ax2.barh(y, [r["client_cpu_s_per_1k"] * 1000 for r in rows], color=colors)
    ax2.set_xlabel("client CPU ms per 1,000 vectors (lower is better)")
    cfg = report["config"]
    fig.suptitle(
        f"{cfg['n']:,} texts, batch {cfg['batch_size']}, latency {cfg['latency']} s, "
        f"limit {cfg['limit']} (blue: this project; light grey: bare-httpx reference)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ------------------------------------------------------------------------------


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=None, help="texts per contestant (default 20000)")
    p.add_argument("--batch-size", type=int, default=128, help="texts per request, for everyone")
    p.add_argument("--latency", type=float, default=0.2, help="server latency per request (s)")
    p.add_argument("--limit", type=int, default=4, help="server's concurrent-requests limit")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated contestant keys (default: all): " + ", ".join(BY_KEY),
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: throughput,parse,stream,import,adaptive",
    )
    p.add_argument(
        "--stream-small", type=int, default=None, help="small streaming run (default 20000)"
    )
    p.add_argument(
        "--stream-large", type=int, default=None, help="large streaming run (default 200000)"
    )
    p.add_argument(
        "--stream-modes", default="sync,async", help="iter_embeddings flavours to stream"
    )
    p.add_argument(
        "--stream-words",
        default="5,12",
        help="words per streamed text, min,max (short: the server's CPU, not the client, "
        "bounds this run; memory depends on vectors, not text length)",
    )
    p.add_argument("--parse-vectors", type=int, default=None, help="vectors per parse round")
    p.add_argument("--parse-rounds", type=int, default=None)
    p.add_argument("--timeout", type=float, default=600, help="seconds per contestant process")
    p.add_argument("--out", type=Path, default=REPO / "bench-results", help="output directory")
    p.add_argument("--quick", action="store_true", help="small sizes: a check that it all runs")
    p.add_argument(
        "--server-module",
        default="aiml_bge_integrations.server",
        help="module run with python -m as the server (diagnostics only; it must accept "
        "the same flags)",
    )
    p.add_argument(
        "--adaptive-only",
        action="store_true",
        help="run only the adaptive-concurrency rows, with --batch-size 64 unless given",
    )
    p.add_argument(
        "--adaptive-n", type=int, default=None, help="texts per adaptive row (default 12288)"
    )
    p.add_argument(
        "--adaptive-servers",
        default=",".join(ADAPTIVE_BY_KEY),
        help="comma-separated adaptive-row servers: " + ", ".join(ADAPTIVE_BY_KEY),
    )
    p.add_argument(
        "--adaptive-clients",
        default=",".join(ADAPTIVE_CLIENTS),
        help="comma-separated adaptive-row clients: " + ", ".join(ADAPTIVE_CLIENTS),
    )
    p.add_argument("--adaptive-mode", choices=["sync", "async"], default="sync")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def _known(key: str) -> bool:
    try:
        _split_key(key)
    except KeyError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when every contestant ran (targets do not set the status)."""
    args = _parser().parse_args(argv)
    if args.child:
        return _child_main(args.child)
    quick = args.quick
    args.n = args.n or (2000 if quick else 20000)
    args.stream_small = args.stream_small or (2000 if quick else 20000)
    args.stream_large = args.stream_large or (20000 if quick else 200000)
    args.parse_vectors = args.parse_vectors or (1280 if quick else 5120)
    args.parse_rounds = args.parse_rounds or (2 if quick else 5)
    args.stream_modes = [m for m in args.stream_modes.split(",") if m]
    args.stream_words = [int(w) for w in args.stream_words.split(",")]
    skip = {s for s in args.skip.split(",") if s}
    if args.adaptive_only:
        skip |= {"import", "throughput", "parse", "stream"}
        if "--batch-size" not in (argv if argv is not None else sys.argv):
            args.batch_size = 64
    args.adaptive_n = args.adaptive_n or (2048 if quick else 12288)
    args.adaptive_servers = [k for k in args.adaptive_servers.split(",") if k]
    args.adaptive_clients = [k for k in args.adaptive_clients.split(",") if k]
    for name, known in (
        ("adaptive-servers", list(ADAPTIVE_BY_KEY)),
        ("adaptive-clients", list(ADAPTIVE_CLIENTS)),
    ):
        bad = [k for k in getattr(args, name.replace("-", "_")) if k not in known]
        if bad:
            raise SystemExit(f"unknown {name}: {', '.join(bad)}; known: {', '.join(known)}")
    keys = [k for k in (args.only.split(",") if args.only else list(BY_KEY)) if k]
    unknown = [k for k in keys if not _known(k)]
    if unknown:
        raise SystemExit(
            f"unknown contestant(s): {', '.join(unknown)}; known: {', '.join(BY_KEY)}, "
            f"each optionally /without-NAME[+NAME] or /without-all, NAME in {', '.join(WITHOUT)}"
        )

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
            "n": args.n,
            "batch_size": args.batch_size,
            "latency": args.latency,
            "limit": args.limit,
            "seed": args.seed,
            "quick": quick,
            "server_module": args.server_module,
        },
        "machine": machine_description(),
        "load_average_at_start": _load_average(),
    }
    if "import" not in skip:
        log("import aiml_bge_integrations ...")
        report["import"] = run_import_check()
        imp = report["import"]
        status = "OK" if not imp["heavy_loaded"] else "FAIL"
        log(
            f"  {status}: loaded {imp['heavy_loaded'] or 'none'} of {', '.join(HEAVY_MODULES)}; "
            f"{_fmt(imp['importtime_cumulative_ms'], '.0f', ' ms')} cumulative (-X importtime)"
        )
    if "throughput" not in skip:
        log(
            f"throughput: {args.n:,} texts, batch {args.batch_size}, latency {args.latency} s, "
            f"limit {args.limit} ..."
        )
        report["throughput"] = run_throughput(args, keys, log)
    if "parse" not in skip:
        log("parse benchmark ...")
        report["parse"] = run_parse(args)
    if "adaptive" not in skip:
        log(
            f"adaptive concurrency: {args.adaptive_n:,} texts, batch {args.batch_size}, latency "
            f"{args.latency} s, {args.adaptive_mode} clients ..."
        )
        report["adaptive"] = run_adaptive(args, log)
    if "stream" not in skip:
        log(f"streaming memory: {args.stream_small:,} vs {args.stream_large:,} texts ...")
        report["stream"] = run_stream(args, log)
    report["load_average_at_end"] = _load_average()
    report["targets"] = evaluate_targets(report)
    report["elapsed_s"] = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = render_report(report)
    (args.out / "bench.md").write_text(text, encoding="utf-8")
    if report.get("throughput"):
        write_chart(report, args.out / "bench.png")
    print()
    print(text)
    print(
        f"Written to {args.out}/ (bench.json, bench.md, bench.png) in {report['elapsed_s']:.0f} s."
    )
    failed = [r["key"] for r in (report.get("throughput") or {}).get("rows", []) if "failed" in r]
    failed += [r["server"] for r in (report.get("adaptive") or {}).get("rows", []) if "failed" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
