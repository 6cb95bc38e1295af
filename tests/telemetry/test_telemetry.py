"""The call span, the attempt spans and the two GenAI metrics, read from the SDK in memory.

Each test drives the interface the way the engine does: one ``start_call`` per logical call,
one ``attempt`` per HTTP request, one ``finish`` with the outcome.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
import threading

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from otel_helpers import Otel

from aiml_bge_integrations import _telemetry
from aiml_bge_integrations._telemetry import (
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    CallFigures,
    make_telemetry,
)
from aiml_bge_integrations.errors import RateLimitError

BASE_URL = "https://api.aimlapi.com/v1"
MODEL = "BAAI/bge-base-en-v1.5"


def telemetry_for(otel: Otel, *, trace_requests: bool = True) -> _telemetry.Telemetry:
    return make_telemetry(
        trace_requests=trace_requests,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )


def call_with_a_429_then_a_200(telemetry: _telemetry.Telemetry) -> None:
    with telemetry.start_call(
        model=MODEL, base_url=BASE_URL, encoding_format="float", inputs=3, side="document"
    ) as call:
        with call.attempt(number=1, texts=3) as attempt:
            attempt.set_status(429)
        with call.attempt(number=2, texts=3, wait=1.5, retry_cause="429") as attempt:
            attempt.set_status(200)
        call.finish(
            response_model=MODEL,
            input_tokens=21,
            dimension=768,
            figures=CallFigures(
                requests=2,
                retries=1,
                retry_causes=("429",),
                credits=2.0,
                concurrency_limit=4,
                cache_hits=1,
                cache_misses=3,
            ),
        )


def test_a_call_with_a_retry_is_one_client_span_with_the_conventions_attributes(otel: Otel) -> None:
    call_with_a_429_then_a_200(telemetry_for(otel))

    spans = otel.spans()
    (call,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert call.name == f"embeddings {MODEL}"
    assert call.status.status_code is StatusCode.UNSET
    assert dict(call.attributes or {}) == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "aimlapi",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
        "server.address": "api.aimlapi.com",
        "server.port": 443,
        "gen_ai.request.encoding_formats": ("float",),
        "gen_ai.usage.input_tokens": 21,
        "gen_ai.embeddings.dimension.count": 768,
        "aiml_bge.inputs": 3,
        "aiml_bge.side": "document",
        "aiml_bge.requests": 2,
        "aiml_bge.retries": 1,
        "aiml_bge.retry_causes": ("429",),
        "aiml_bge.splits": 0,
        "aiml_bge.credits": 2.0,
        "aiml_bge.concurrency_limit": 4,
        "aiml_bge.cache.hits": 1,
        "aiml_bge.cache.misses": 3,
    }
    assert call.instrumentation_scope is not None
    assert call.instrumentation_scope.name == "aiml_bge_integrations"
    assert call.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.41.0"


def test_each_attempt_is_a_child_span_with_its_status_wait_and_cause(otel: Otel) -> None:
    call_with_a_429_then_a_200(telemetry_for(otel))

    spans = otel.spans()
    (call,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    attempts = sorted(
        (s for s in spans if s.name == "embeddings attempt"),
        key=lambda s: str((s.attributes or {})["aiml_bge.attempt"]),
    )
    assert len(spans) == 3 and len(attempts) == 2
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
        assert attempt.context.trace_id == call.context.trace_id
    first, second = (dict(a.attributes or {}) for a in attempts)
    assert first == {
        "aiml_bge.attempt": 1,
        "aiml_bge.texts": 3,
        "http.response.status_code": 429,
        "error.type": "429",
    }
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert second == {
        "aiml_bge.attempt": 2,
        "aiml_bge.texts": 3,
        "aiml_bge.wait": 1.5,
        "aiml_bge.retry_cause": "429",
        "http.response.status_code": 200,
    }
    assert attempts[1].status.status_code is StatusCode.UNSET


def test_without_per_request_spans_only_the_call_span_is_made(otel: Otel) -> None:
    call_with_a_429_then_a_200(telemetry_for(otel, trace_requests=False))

    assert [s.name for s in otel.spans()] == [f"embeddings {MODEL}"]


def test_the_metrics_carry_the_conventions_attributes_and_bucket_advice(otel: Otel) -> None:
    call_with_a_429_then_a_200(telemetry_for(otel))

    metrics = otel.metrics()
    assert otel.units() == {
        "gen_ai.client.operation.duration": "s",
        "gen_ai.client.token.usage": "{token}",
    }
    common = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "aimlapi",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
        "server.address": "api.aimlapi.com",
        "server.port": 443,
    }
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert dict(duration.attributes) == common
    assert duration.count == 1 and duration.sum >= 0
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    (tokens,) = metrics["gen_ai.client.token.usage"]
    assert dict(tokens.attributes) == {**common, "gen_ai.token.type": "input"}
    assert tokens.count == 1 and tokens.sum == 21
    assert tuple(tokens.explicit_bounds) == TOKEN_BUCKETS


def test_a_failing_call_sets_error_type_and_records_no_tokens(otel: Otel) -> None:
    telemetry = telemetry_for(otel)
    error = RateLimitError("Too Many Requests", status_code=429)
    with telemetry.start_call(
        model=MODEL, base_url="http://127.0.0.1:8000/v1", encoding_format=None, inputs=1
    ) as call:
        for number in (1, 2):
            with call.attempt(number=number, texts=1) as attempt:
                attempt.set_status(429)
        call.finish(figures=CallFigures(requests=2, retries=1, retry_causes=("429",)), error=error)

    (span,) = [s for s in otel.spans() if s.kind is SpanKind.CLIENT]
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "RateLimitError"
    assert attrs["gen_ai.provider.name"] == "openai_compatible"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == 8000
    assert "gen_ai.request.encoding_formats" not in attrs
    assert "gen_ai.response.model" not in attrs and "gen_ai.usage.input_tokens" not in attrs
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None and "Too Many Requests" in span.status.description
    metrics = otel.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "RateLimitError"
    assert "gen_ai.client.token.usage" not in metrics


def test_an_exception_leaving_the_block_ends_the_span_with_its_type(otel: Otel) -> None:
    telemetry = telemetry_for(otel)
    call = telemetry.start_call(model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=1)
    with pytest.raises(KeyboardInterrupt), call, call.attempt(number=1):
        raise KeyboardInterrupt

    spans = {s.name: s for s in otel.spans()}
    assert dict(spans["embeddings attempt"].attributes or {})["error.type"] == "KeyboardInterrupt"
    assert dict(spans[f"embeddings {MODEL}"].attributes or {})["error.type"] == "KeyboardInterrupt"


def test_finish_is_idempotent(otel: Otel) -> None:
    telemetry = telemetry_for(otel)
    with telemetry.start_call(
        model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=1
    ) as call:
        call.finish(input_tokens=5)
        call.finish(input_tokens=7, error=ValueError("late"))
    (span,) = otel.spans()
    assert dict(span.attributes or {})["gen_ai.usage.input_tokens"] == 5
    assert otel.metrics()["gen_ai.client.operation.duration"][0].count == 1


def test_the_call_span_is_current_inside_the_block_and_child_of_the_callers_span(
    otel: Otel,
) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    telemetry = telemetry_for(otel, trace_requests=False)
    with tracer.start_as_current_span("request handler") as outer:
        with telemetry.start_call(
            model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=1
        ) as call:
            # What an httpx instrumentation would open while the request is sent.
            with tracer.start_as_current_span("POST"):
                pass
            call.finish()
        with tracer.start_as_current_span("after"):
            pass

    spans = {s.name: s for s in otel.spans()}
    embeddings = spans[f"embeddings {MODEL}"]
    assert (
        embeddings.parent is not None
        and embeddings.parent.span_id == outer.get_span_context().span_id
    )
    post = spans["POST"]
    assert post.parent is not None and post.parent.span_id == embeddings.context.span_id
    after = spans["after"]
    assert after.parent is not None and after.parent.span_id == outer.get_span_context().span_id


async def test_concurrent_async_calls_keep_their_own_attempts(otel: Otel) -> None:
    telemetry = telemetry_for(otel)

    async def one_call(model: str) -> None:
        with telemetry.start_call(
            model=model, base_url=BASE_URL, encoding_format=None, inputs=1
        ) as call:
            for number in (1, 2):
                with call.attempt(number=number) as attempt:
                    await asyncio.sleep(0)
                    attempt.set_status(503 if number == 1 else 200)
            call.finish(response_model=model, input_tokens=4)

    await asyncio.wait_for(asyncio.gather(*(one_call(f"model-{i}") for i in range(3))), 10)

    spans = otel.spans()
    calls = {s.context.span_id: s for s in spans if s.kind is SpanKind.CLIENT}
    attempts = [s for s in spans if s.name == "embeddings attempt"]
    assert len(calls) == 3 and len(attempts) == 6
    per_call: dict[int, int] = {}
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id in calls
        per_call[attempt.parent.span_id] = per_call.get(attempt.parent.span_id, 0) + 1
    assert sorted(per_call.values()) == [2, 2, 2]
    tokens = otel.metrics()["gen_ai.client.token.usage"]
    assert sorted(p.attributes["gen_ai.request.model"] for p in tokens) == [
        "model-0",
        "model-1",
        "model-2",
    ]
    assert [p.sum for p in tokens] == [4, 4, 4]


def test_attempts_sent_from_worker_threads_are_children_of_their_call(otel: Otel) -> None:
    telemetry = telemetry_for(otel)
    with telemetry.start_call(
        model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=4
    ) as call:

        def send(number: int) -> None:
            with call.attempt(number=number, texts=1) as attempt:
                attempt.set_status(200)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(1, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        call.finish()

    spans = otel.spans()
    (parent,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    attempts = [s for s in spans if s.name == "embeddings attempt"]
    assert len(attempts) == 4
    assert all(
        a.parent is not None and a.parent.span_id == parent.context.span_id for a in attempts
    )


@pytest.mark.parametrize(
    ("base_url", "address", "provider"),
    [
        ("https://api.aimlapi.com/v1", ("api.aimlapi.com", 443), "aimlapi"),
        ("https://api.openai.com/v1", ("api.openai.com", 443), "openai"),
        ("http://localhost/v1", ("localhost", 80), "openai_compatible"),
        ("http://[::1]:9000/v1", ("::1", 9000), "openai_compatible"),
        ("https://notaimlapi.com/v1", ("notaimlapi.com", 443), "openai_compatible"),
        ("http://host:notaport/v1", (None, None), "openai_compatible"),
    ],
)
def test_server_address_and_provider_from_the_base_url(
    base_url: str, address: tuple[str | None, int | None], provider: str
) -> None:
    assert _telemetry.server_address(base_url) == address
    assert _telemetry.provider_name(base_url) == provider


NO_OTEL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
    from aiml_bge_integrations import _telemetry
    telemetry = _telemetry.make_telemetry(trace_requests=True)
    with telemetry.start_call(model="m", base_url="http://x/v1", encoding_format=None, inputs=1) as call:
        with call.attempt(number=1) as attempt:
            attempt.set_status(200)
        call.finish(input_tokens=3)
    assert telemetry is _telemetry.make_telemetry(), "not the shared no-op"
    assert not telemetry.enabled
    loaded = sorted(m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v is not None)
    assert not loaded, loaded
    print("ok")
    """
)


def test_without_the_api_installed_nothing_is_imported_and_the_shared_no_op_is_used() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_OTEL_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_find_spec_saying_no_gives_the_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    telemetry = make_telemetry(trace_requests=True)
    assert telemetry is make_telemetry()
    assert not telemetry.enabled
    call = telemetry.start_call(model="m", base_url="http://x/v1", encoding_format=None, inputs=1)
    assert call.attempt(number=1) is call.attempt(number=2)


GLOBAL_PROVIDER_SCRIPT = textwrap.dedent(
    """
    from aiml_bge_integrations._telemetry import make_telemetry
    telemetry = make_telemetry()  # before the application configures OpenTelemetry
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with telemetry.start_call(model="m", base_url="http://x/v1", encoding_format=None, inputs=1) as call:
        call.finish()
    print([s.name for s in exporter.get_finished_spans()])
    """
)


def test_a_global_provider_set_after_the_client_was_made_is_used() -> None:
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['embeddings m']"


async def test_a_cancelled_async_call_ends_its_span_with_cancelled_error(otel: Otel) -> None:
    telemetry = telemetry_for(otel)
    started = asyncio.Event()

    async def one_call() -> None:
        call = telemetry.start_call(model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=1)
        with call, call.attempt(number=1):
            started.set()
            await asyncio.sleep(30)

    task = asyncio.ensure_future(one_call())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)

    spans = {s.name: s for s in otel.spans()}
    assert len(spans) == 2
    assert dict(spans[f"embeddings {MODEL}"].attributes or {})["error.type"] == "CancelledError"
    assert dict(spans["embeddings attempt"].attributes or {})["error.type"] == "CancelledError"
    (duration,) = otel.metrics()["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "CancelledError"


def test_several_clients_on_one_provider_share_the_metric_streams(otel: Otel) -> None:
    for _ in range(3):  # each client makes its own telemetry
        with telemetry_for(otel).start_call(
            model=MODEL, base_url=BASE_URL, encoding_format=None, inputs=1
        ) as call:
            call.finish(response_model=MODEL, input_tokens=2)
    metrics = otel.metrics()
    assert [p.count for p in metrics["gen_ai.client.operation.duration"]] == [3]
    assert [p.sum for p in metrics["gen_ai.client.token.usage"]] == [6]
