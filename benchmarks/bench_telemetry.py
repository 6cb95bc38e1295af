"""Client CPU that telemetry adds: the telemetry interface driven as the engine drives it.

Each logical call opens its span, runs ``--attempts`` attempts (each sets its status) and
finishes with the outcome and the package's figures, exactly the calls the request engine
makes; nothing else runs, so the figures are the telemetry's own cost. Variants:

- ``off``: the shared no-op (what a client gets without the ``otel`` extra);
- ``api``: the OpenTelemetry API with its no-op providers (the extra installed, no SDK set up);
- ``sdk``: the SDK with a span processor and a metric reader (spans built, ended and handed to
  an exporter that drops them; both histograms recorded);
- ``sdk+attempts``: the same with ``trace_requests=True`` (a child span per attempt).

Rounds of each variant are interleaved and the process CPU (all threads) of each round is
divided by its calls; the medians and ranges are printed, with the cost per 1,000 vectors at
a batch size (a call of ``--batch`` texts per request).

Run: ``python benchmarks/bench_telemetry.py [--calls 5000] [--rounds 7] [--batch 128] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, markdown_table

__all__ = ["main", "run"]

MODEL = "BAAI/bge-base-en-v1.5"
BASE_URL = "https://api.aimlapi.com/v1"


def _telemetries(variants: Sequence[str]) -> dict[str, Any]:
    from aiml_bge_integrations import _telemetry

    out: dict[str, Any] = {}
    for variant in variants:
        if variant == "off":
            out[variant] = _telemetry.Telemetry()  # the no-op every client gets without the extra
            continue
        from opentelemetry import metrics, trace

        if variant == "api":
            out[variant] = _telemetry.make_telemetry(
                tracer_provider=trace.NoOpTracerProvider(),
                meter_provider=metrics.NoOpMeterProvider(),
            )
            continue
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(Drop()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        out[variant] = _telemetry.make_telemetry(
            trace_requests=variant == "sdk+attempts",
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
    return out


def _drive(telemetry: Any, calls: int, attempts: int, batch: int) -> None:
    from aiml_bge_integrations._telemetry import CallFigures

    figures = CallFigures(
        requests=attempts,
        retries=attempts - 1,
        retry_causes=("429",) * (attempts - 1),
        credits=float(batch),
        concurrency_limit=4,
    )
    for _ in range(calls):
        with telemetry.start_call(
            model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=batch, side="document"
        ) as call:
            for number in range(1, attempts + 1):
                with call.attempt(
                    number=number,
                    texts=batch,
                    wait=1.0 if number > 1 else None,
                    retry_cause="429" if number > 1 else None,
                ) as attempt:
                    attempt.set_status(200 if number == attempts else 429)
            call.finish(
                response_model=MODEL, input_tokens=batch * 100, dimension=768, figures=figures
            )


def run(
    *, calls: int, rounds: int, attempts: int, batch: int, variants: Sequence[str]
) -> list[dict[str, Any]]:
    """Microseconds of CPU per call for each variant: median and range over the rounds."""
    telemetries = _telemetries(variants)
    for telemetry in telemetries.values():  # warm up: imports, first instruments, caches
        _drive(telemetry, min(calls, 200), attempts, batch)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            start = cpu_seconds()
            _drive(telemetries[variant], calls, attempts, batch)
            samples[variant].append((cpu_seconds() - start) / calls * 1e6)
    results = []
    for variant in variants:
        us = samples[variant]
        median = statistics.median(us)
        results.append(
            {
                "variant": variant,
                "us_per_call": median,
                "us_per_call_min": min(us),
                "us_per_call_max": max(us),
                "ms_per_1000_calls": median,  # µs per call == ms per 1,000 calls
                "ms_per_1000_vectors": median * 1000 / batch / 1000,
            }
        )
    return results


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--attempts", type=int, default=1, help="HTTP attempts per call")
    parser.add_argument("--batch", type=int, default=128, help="texts per call")
    parser.add_argument(
        "--variants", default="off,api,sdk,sdk+attempts", help="comma-separated, in order"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    results = run(
        calls=args.calls,
        rounds=args.rounds,
        attempts=args.attempts,
        batch=args.batch,
        variants=variants,
    )
    if args.json:
        out(json.dumps(results, indent=2))
        return 0
    out(
        f"Telemetry CPU, {args.calls} calls x {args.rounds} rounds, {args.attempts} attempt(s) "
        f"per call, {args.batch} texts per call"
    )
    out(
        markdown_table(
            ["variant", "µs per call (ms per 1,000 calls)", "range", "ms per 1,000 vectors"],
            [
                [
                    r["variant"],
                    f"{r['us_per_call']:.1f}",
                    f"{r['us_per_call_min']:.1f}-{r['us_per_call_max']:.1f}",
                    f"{r['ms_per_1000_vectors']:.3f}",
                ]
                for r in results
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
