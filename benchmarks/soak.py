"""Soak: many texts through about 20% mixed injected faults; every vector must come back exact.

Runs the core client (sync or async, ``max_concurrency=8``) against the local server with
seeded fault injection: 429s (no header, Retry-After seconds, Retry-After HTTP date), 500,
502, 503, 504, dropped connections, replies slower than the timeout, malformed JSON, shuffled
data, missing items, duplicate indices and wrong dimensions. Then it checks that each vector
is exactly what the fault-free server gives for its text, in order, and that the number of
requests stays within the retry bound the settings allow::

    .venv/bin/python benchmarks/soak.py --texts 20000
    .venv/bin/python benchmarks/soak.py --texts 2000 --mode async --no-sleep

It prints requests sent, retries by cause, faults injected, the time taken and how many
vectors were checked, and exits non-zero if a vector differs or the bound is broken.
tests/core/test_soak.py runs the same function at 2,000 texts with the backoff sleeps patched.

The server runs in this process (a thread), so the time includes its work; with real backoff
(the default) it also includes every retry delay the client chose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._retry import MAX_VALIDATION_RETRIES
from aiml_bge_integrations.server import FaultConfig, HashingEmbedder, LocalServer

__all__ = ["CAUSE_OF_FAULT", "FAULT_RATES", "make_texts", "run_soak"]

FAULT_RATES: dict[str, float] = {
    "429": 0.035,
    "429-retry-after": 0.015,
    "429-retry-after-date": 0.015,
    "500": 0.015,
    "502": 0.015,
    "503": 0.02,
    "504": 0.015,
    "drop": 0.03,
    "slow": 0.008,
    "shuffle": 0.02,
    "malformed-json": 0.006,
    "missing-item": 0.002,
    "duplicate-index": 0.002,
    "wrong-dimension": 0.002,
}
"""Probability of each fault per request: 20% in all. Replies that fail validation are kept
rarer (1.2%) because a batch may meet only two of them (``MAX_VALIDATION_RETRIES``): at this
rate a batch runs out about once in 300,000."""

CAUSE_OF_FAULT: dict[str, str | None] = {
    "429": "429",
    "429-retry-after": "429",
    "429-retry-after-date": "429",
    "500": "500",
    "502": "502",
    "503": "503",
    "504": "504",
    "drop": "connection",
    "slow": "timeout",
    "shuffle": None,  # not a failure: the client puts the vectors back by index
    "malformed-json": "validation",
    "missing-item": "validation",
    "duplicate-index": "validation",
    "wrong-dimension": "validation",
}
"""The retry cause (``Usage.retries_by_cause``) each injected fault must produce."""

_TOPICS = [
    "jazz improvisation",
    "river deltas",
    "compiler passes",
    "sourdough bread",
    "satellite orbits",
    "tennis serves",
    "glacier retreat",
    "sonnet forms",
    "tidal power",
    "bee colonies",
]


def make_texts(n: int) -> list[str]:
    """``n`` distinct short passages, the same on every run."""
    return [
        f"Passage {i} on {_TOPICS[i % len(_TOPICS)]}, with notes {i % 97} and {i % 89}."
        for i in range(n)
    ]


def fault_free_vectors(texts: list[str]) -> list[list[float]]:
    """What the fault-free local server sends for ``texts`` (its stand-in vectors as JSON floats)."""
    f32 = HashingEmbedder().embed(texts).astype("<f4")
    vectors: list[list[float]] = orjson.loads(orjson.dumps(f32, option=orjson.OPT_SERIALIZE_NUMPY))
    return vectors


@contextmanager
def _recorded_sleeps(real: bool) -> Iterator[tuple[list[float], Callable[[Any], Any]]]:
    """Record every delay a client asks for (through its ``retry_policy``); sleep for real only if ``real``.

    Yields the delays and the function that makes a client record into them.
    """
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if real:
            time.sleep(seconds)

    async def asleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(seconds if real else 0)

    def recording(client: Any) -> Any:
        client.retry_policy.sleep, client.retry_policy.asleep = sleep, asleep
        return client

    yield delays, recording


def run_soak(
    n_texts: int,
    *,
    mode: str = "sync",
    max_concurrency: int = 8,
    batch_size: int = 32,
    max_retries: int = 8,
    timeout: float = 3.0,
    slow_seconds: float = 10.0,
    seed: int = 7,
    fault_rates: dict[str, float] | None = None,
    real_sleep: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Embed ``n_texts`` through the faults; return what happened (see the keys below).

    ``timeout`` must stay below ``slow_seconds`` so that each "slow" fault is a timeout,
    and well above a healthy reply's time so that nothing else is.
    """
    rates = dict(FAULT_RATES if fault_rates is None else fault_rates)
    texts = make_texts(n_texts)
    expected = fault_free_vectors(texts)
    faults = FaultConfig(rates=rates, seed=seed, slow_seconds=slow_seconds, retry_after_seconds=1.0)
    batches = -(-n_texts // batch_size)
    settings: dict[str, Any] = {
        "max_concurrency": max_concurrency,
        "batch_size": batch_size,
        "max_retries": max_retries,
        "timeout": timeout,
    }
    with LocalServer(faults=faults) as server, _recorded_sleeps(real_sleep) as (delays, recording):
        settings.update(api_key=server.api_key, base_url=server.base_url)
        if progress:
            progress(f"{n_texts} texts, {batches} batches, {mode}, server at {server.base_url}")
        started = time.perf_counter()
        if mode == "sync":
            with recording(EmbeddingsClient(**settings)) as client:
                vectors = client.embed_documents(texts)
                usage = client.usage
        else:

            async def embed() -> tuple[list[list[float]], Any]:
                async with recording(AsyncEmbeddingsClient(**settings)) as aclient:
                    return await aclient.embed_documents(texts), aclient.usage

            vectors, usage = asyncio.run(embed())
        seconds = time.perf_counter() - started
        stats = server.stats.snapshot()

    exact = sum(1 for got, want in zip(vectors, expected, strict=False) if got == want)
    want = np.asarray(HashingEmbedder().embed(texts))
    max_abs_diff = float(np.max(np.abs(np.asarray(vectors, dtype=np.float64) - want)))
    expected_causes: Counter[str] = Counter()
    for kind, count in stats["faults"].items():
        cause = CAUSE_OF_FAULT[kind]
        if cause is not None:
            expected_causes[cause] += count
    return {
        "mode": mode,
        "texts": n_texts,
        "batches": batches,
        "settings": {k: v for k, v in settings.items() if k not in ("api_key", "base_url")},
        "fault_rates": rates,
        "seconds": round(seconds, 3),
        "vectors_returned": len(vectors),
        "vectors_checked": len(expected),
        "vectors_exact": exact,
        "max_abs_diff_vs_float64": max_abs_diff,
        "requests_sent": usage.requests,
        "requests_at_server": stats["requests"],
        "request_bound": batches * (1 + max_retries + MAX_VALIDATION_RETRIES),
        "retries": usage.retries,
        "retries_by_cause": dict(sorted(usage.retries_by_cause.items())),
        "retries_expected_by_cause": dict(sorted(expected_causes.items())),
        "faults_injected": dict(sorted(stats["faults"].items())),
        "splits": usage.splits,
        "backoff_requested_seconds": round(sum(delays), 3),
        "backoff_slept": real_sleep,
        "prompt_tokens": usage.prompt_tokens,
        "credits": usage.credits,
    }


def check(report: dict[str, Any]) -> list[str]:
    """What is wrong with a soak report (empty when everything held)."""
    problems = []
    if report["vectors_exact"] != report["texts"] or report["vectors_returned"] != report["texts"]:
        problems.append(
            f"{report['texts'] - report['vectors_exact']} of {report['texts']} vectors differ from the fault-free ones"
        )
    if not report["batches"] <= report["requests_sent"] <= report["request_bound"]:
        problems.append(
            f"{report['requests_sent']} requests, outside {report['batches']}..{report['request_bound']}"
        )
    if report["requests_sent"] != report["requests_at_server"]:
        problems.append("the client and the server count different numbers of requests")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: run the soak, print the report, exit 1 if it failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-retries", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-sleep", action="store_true", help="record the backoff delays instead of sleeping them"
    )
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    failed = False
    for mode in ("sync", "async") if args.mode == "both" else (args.mode,):
        report = run_soak(
            args.texts,
            mode=mode,
            max_concurrency=args.max_concurrency,
            batch_size=args.batch_size,
            max_retries=args.max_retries,
            seed=args.seed,
            real_sleep=not args.no_sleep,
            progress=lambda line: print(f"soak: {line}", file=sys.stderr),
        )
        problems = check(report)
        failed = failed or bool(problems)
        if args.json:
            print(json.dumps({**report, "problems": problems}, indent=2))
            continue
        print(
            f"\n== soak, {mode} client, {report['texts']} texts, max_concurrency={args.max_concurrency}"
        )
        print(f"time                  {report['seconds']:.2f} s")
        print(
            f"requests sent         {report['requests_sent']} for {report['batches']} batches "
            f"(bound {report['request_bound']})"
        )
        print(
            f"faults injected       {sum(report['faults_injected'].values())}: {report['faults_injected']}"
        )
        print(f"retries by cause      {report['retries']}: {report['retries_by_cause']}")
        print(
            f"backoff               {report['backoff_requested_seconds']:.1f} s requested"
            f" ({'slept' if report['backoff_slept'] else 'not slept'})"
        )
        print(
            f"vectors checked       {report['vectors_checked']}: {report['vectors_exact']} exact, in order"
            f" (max |diff| vs float64 stand-in {report['max_abs_diff_vs_float64']:.1e})"
        )
        print("result                " + ("; ".join(problems) if problems else "OK"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
