"""OpenTelemetry traces and metrics for embedding calls, after the GenAI semantic conventions.

Follows the embeddings client span and the two client metrics of the OpenTelemetry GenAI
semantic conventions as released in semantic-conventions v1.41.0 (the last release before
the GenAI conventions moved to their own repository; their span attributes are unchanged
there):

- one CLIENT span per logical call, named ``embeddings {gen_ai.request.model}``, covering all
  its retries and splits, with ``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``server.address``, ``server.port``,
  ``gen_ai.usage.input_tokens``, ``gen_ai.embeddings.dimension.count``,
  ``gen_ai.request.encoding_formats`` and, on failure, ``error.type``;
- the histograms ``gen_ai.client.operation.duration`` (s) and ``gen_ai.client.token.usage``
  ({token}, ``gen_ai.token.type="input"``) with the conventions' bucket advice;
- the package's own figures under ``aiml_bge.*`` (requests, retries and their causes,
  splits, credits, the concurrency limit, cache hits and misses);
- where the user turns them on (``trace_requests=True``), one child span per HTTP attempt
  with its status, the wait before it and the cause of its retry.

Only the OpenTelemetry *API* is used (the ``otel`` extra); the user configures the SDK.
Without the API installed nothing is imported and every call gets the same shared no-op
objects. The engine drives it like this::

    telemetry = make_telemetry(trace_requests=settings.trace_requests)   # once per client
    with telemetry.start_call(model=..., base_url=..., encoding_format=..., inputs=n,
                              side="document") as call:
        with call.attempt(number=1, texts=n) as attempt:
            ...                                  # send
            attempt.set_status(429)
        with call.attempt(number=2, texts=n, wait=1.0, retry_cause="429") as attempt:
            ...
            attempt.set_status(200)
        call.finish(response_model=..., input_tokens=..., dimension=768, figures=...)

Nothing here ever sees the texts, the vectors or the API key.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = [
    "DURATION_BUCKETS",
    "SEMCONV_VERSION",
    "TOKEN_BUCKETS",
    "AttemptSpan",
    "CallFigures",
    "CallSpan",
    "Telemetry",
    "error_type",
    "make_telemetry",
    "otel_available",
    "provider_name",
    "server_address",
]

SEMCONV_VERSION = "1.41.0"
"""The OpenTelemetry semantic conventions release whose GenAI embeddings span and metrics are followed."""
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Bucket boundaries the conventions advise for ``gen_ai.client.operation.duration`` (seconds)."""
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""Bucket boundaries the conventions advise for ``gen_ai.client.token.usage``."""

_INSTRUMENTATION_NAME = "aiml_bge_integrations"


@dataclass(frozen=True)
class CallFigures:
    """The package's own figures for one logical call, set on its span under ``aiml_bge.*``."""

    requests: int = 0
    """HTTP requests sent for the call, retries included (``aiml_bge.requests``)."""
    retries: int = 0
    """Requests that repeated a failed one (``aiml_bge.retries``)."""
    retry_causes: tuple[str, ...] = ()
    """The cause of each retry in order: a status ("429"), "connection", "timeout", "validation"."""
    splits: int = 0
    """Requests refused as too large whose texts were split and sent again (``aiml_bge.splits``)."""
    credits: float | None = None
    """AI/ML API credits the call cost, when the server said (``aiml_bge.credits``)."""
    concurrency_limit: int | None = None
    """Requests the client allowed in flight when the call ended (``aiml_bge.concurrency_limit``)."""
    cache_hits: int | None = None
    """Texts answered from the embedding cache, when one is set (``aiml_bge.cache.hits``)."""
    cache_misses: int | None = None
    """Texts the cache did not hold, sent to the server (``aiml_bge.cache.misses``)."""


def server_address(base_url: str) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` for a base URL (the port defaults by scheme)."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return None, None
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme.lower())
    return parts.hostname or None, port


def provider_name(base_url: str) -> str:
    """``gen_ai.provider.name``: ``aimlapi`` for the AI/ML API, ``openai`` for OpenAI's own API.

    Any other OpenAI-compatible server (TEI, infinity, vLLM, the local server) is
    ``openai_compatible``: the conventions allow a custom value where no well-known one fits,
    and naming such a server ``openai`` would tell backends to expect ``openai.*`` attributes.
    """
    host, _ = server_address(base_url)
    host = (host or "").lower()
    if host == "aimlapi.com" or host.endswith(".aimlapi.com"):
        return "aimlapi"
    if host == "api.openai.com":
        return "openai"
    return "openai_compatible"


def error_type(error: BaseException) -> str:
    """``error.type`` for an error: the exception's class name (low cardinality, documented per class)."""
    return type(error).__qualname__


def otel_available() -> bool:
    """True when the OpenTelemetry API can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        # The parent namespace package is missing, or blocked (``sys.modules[...] = None``).
        return False


class AttemptSpan:
    """One HTTP attempt: a no-op unless per-request spans are on."""

    __slots__ = ()

    def set_status(self, status: int | None, *, error: BaseException | None = None) -> None:
        """Record the attempt's HTTP status (``None`` without a reply) and its error, if any."""

    def __enter__(self) -> AttemptSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class CallSpan:
    """One logical embedding call: a no-op unless OpenTelemetry is there.

    Use it as a context manager: inside the ``with`` block its span is the current one, so
    spans opened by other instrumentation (httpx, for one) become its children; an
    exception leaving the block ends the span with ``error.type`` if ``finish`` was not called.
    """

    __slots__ = ()

    def attempt(
        self,
        *,
        number: int,
        texts: int | None = None,
        wait: float | None = None,
        retry_cause: str | None = None,
    ) -> AttemptSpan:
        """A context manager around one HTTP attempt (a child span when per-request spans are on).

        ``number`` counts the call's requests from 1; ``texts`` is how many the request
        carries; ``wait`` is the seconds slept before it; ``retry_cause`` why it repeats one.
        """
        return _NOOP_ATTEMPT

    def finish(
        self,
        *,
        response_model: str | None = None,
        input_tokens: int | None = None,
        dimension: int | None = None,
        figures: CallFigures | None = None,
        error: BaseException | None = None,
    ) -> None:
        """End the call: set the outcome's attributes, end the span, record the metrics. Idempotent."""

    def __enter__(self) -> CallSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Telemetry:
    """Where calls are reported: the shared no-op, or OpenTelemetry (see :func:`make_telemetry`)."""

    __slots__ = ()

    trace_requests: bool = False
    """Whether each HTTP attempt gets its own child span."""

    @property
    def enabled(self) -> bool:
        """True when calls are reported to OpenTelemetry."""
        return False

    def start_call(
        self,
        *,
        model: str,
        base_url: str,
        encoding_format: str | None,
        inputs: int | None,
        side: str | None = None,
    ) -> CallSpan:
        """Open the span of one logical call (``encoding_format`` as sent, ``None`` if not sent)."""
        return _NOOP_CALL


_NOOP_ATTEMPT = AttemptSpan()
_NOOP_CALL = CallSpan()
_NOOP = Telemetry()


def make_telemetry(
    *,
    trace_requests: bool = False,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Telemetry:
    """The telemetry a client reports to: OpenTelemetry's global providers, or the given ones.

    Without the OpenTelemetry API installed this returns the shared no-op and imports nothing.
    Providers configured after this call are still used: the API's global tracer and meter
    hand over to them.
    """
    if tracer_provider is None and meter_provider is None and not otel_available():
        return _NOOP
    try:
        return _OtelTelemetry(
            trace_requests=trace_requests,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
    except ImportError:
        return _NOOP


# --- the OpenTelemetry implementation: it imports the API only when constructed ----------


class _Instruments:
    """Tracer and histograms of one pair of providers."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import context, metrics, trace

        from . import __version__

        self.trace = trace
        self.context = context
        self.kind_client = trace.SpanKind.CLIENT
        self.kind_internal = trace.SpanKind.INTERNAL
        self.status_error = trace.Status(trace.StatusCode.ERROR)
        self.tracer = trace.get_tracer(
            _INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter(
            _INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=SCHEMA_URL
        )
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )


class _OtelTelemetry(Telemetry):
    __slots__ = ("_instruments", "trace_requests")

    def __init__(self, *, trace_requests: bool, tracer_provider: Any, meter_provider: Any) -> None:
        self.trace_requests = trace_requests
        # Made once per client, here: a broken API install raises ImportError now, not mid-call.
        self._instruments = _Instruments(tracer_provider, meter_provider)

    @property
    def enabled(self) -> bool:
        return True

    def start_call(
        self,
        *,
        model: str,
        base_url: str,
        encoding_format: str | None,
        inputs: int | None,
        side: str | None = None,
    ) -> CallSpan:
        return _OtelCall(
            self._instruments,
            trace_requests=self.trace_requests,
            model=model,
            base_url=base_url,
            encoding_format=encoding_format,
            inputs=inputs,
            side=side,
        )


class _OtelAttempt(AttemptSpan):
    __slots__ = ("_ins", "_span", "_token")

    def __init__(self, ins: _Instruments, span: Span) -> None:
        self._ins = ins
        self._span = span
        self._token: object = None

    def set_status(self, status: int | None, *, error: BaseException | None = None) -> None:
        if status is not None:
            self._span.set_attribute("http.response.status_code", status)
        if error is not None:
            self._span.set_attribute("error.type", error_type(error))
            self._span.set_status(self._ins.status_error)
        elif status is not None and status >= 400:
            self._span.set_attribute("error.type", str(status))
            self._span.set_status(self._ins.status_error)

    def __enter__(self) -> AttemptSpan:
        self._token = self._ins.context.attach(self._ins.trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._span.set_attribute("error.type", error_type(exc))
            self._span.set_status(self._ins.status_error)
        if self._token is not None:
            self._ins.context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._span.end()


class _OtelCall(CallSpan):
    __slots__ = (
        "_attrs",
        "_context",
        "_finished",
        "_ins",
        "_span",
        "_start",
        "_token",
        "_trace_requests",
    )

    def __init__(
        self,
        ins: _Instruments,
        *,
        trace_requests: bool,
        model: str,
        base_url: str,
        encoding_format: str | None,
        inputs: int | None,
        side: str | None,
    ) -> None:
        host, port = server_address(base_url)
        # The attributes the conventions want at creation time (for sampling) and on the metrics.
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": provider_name(base_url),
            "gen_ai.request.model": model,
        }
        if host is not None:
            attrs["server.address"] = host
            if port is not None:
                attrs["server.port"] = port
        self._attrs = attrs
        span_attrs = dict(attrs)
        if encoding_format is not None:
            span_attrs["gen_ai.request.encoding_formats"] = (encoding_format,)
        if inputs is not None:  # a stream's count is not known when it starts
            span_attrs["aiml_bge.inputs"] = inputs
        if side is not None:
            span_attrs["aiml_bge.side"] = side
        self._ins = ins
        self._trace_requests = trace_requests
        self._finished = False
        self._token: object = None
        self._start = time.perf_counter()
        self._span = ins.tracer.start_span(
            f"embeddings {model}", kind=ins.kind_client, attributes=span_attrs
        )
        self._context = ins.trace.set_span_in_context(self._span)

    def attempt(
        self,
        *,
        number: int,
        texts: int | None = None,
        wait: float | None = None,
        retry_cause: str | None = None,
    ) -> AttemptSpan:
        if not self._trace_requests or not self._span.is_recording():
            return _NOOP_ATTEMPT
        attrs: dict[str, Any] = {"aiml_bge.attempt": number}
        if texts is not None:
            attrs["aiml_bge.texts"] = texts
        if wait is not None:
            attrs["aiml_bge.wait"] = float(wait)
        if retry_cause is not None:
            attrs["aiml_bge.retry_cause"] = retry_cause
        # The parent is given, not taken from the current context: attempts may be sent from
        # worker threads or tasks that do not share the call's context.
        span = self._ins.tracer.start_span(
            "embeddings attempt",
            context=self._context,
            kind=self._ins.kind_internal,
            attributes=attrs,
        )
        return _OtelAttempt(self._ins, span)

    def finish(
        self,
        *,
        response_model: str | None = None,
        input_tokens: int | None = None,
        dimension: int | None = None,
        figures: CallFigures | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self._finished:
            return
        self._finished = True
        duration = time.perf_counter() - self._start
        span = self._span
        metric_attrs = dict(self._attrs)
        if response_model is not None:
            metric_attrs["gen_ai.response.model"] = response_model
        if span.is_recording():
            outcome: dict[str, Any] = {}
            if response_model is not None:
                outcome["gen_ai.response.model"] = response_model
            if input_tokens is not None:
                outcome["gen_ai.usage.input_tokens"] = input_tokens
            if dimension is not None:
                outcome["gen_ai.embeddings.dimension.count"] = dimension
            if figures is not None:
                outcome.update(_figure_attributes(figures))
            if error is not None:
                outcome["error.type"] = error_type(error)
            span.set_attributes(outcome)
            if error is not None:
                span.set_status(
                    self._ins.trace.Status(self._ins.trace.StatusCode.ERROR, str(error))
                )
        span.end()
        if error is not None:
            metric_attrs["error.type"] = error_type(error)
        self._ins.duration.record(duration, metric_attrs)
        if input_tokens is not None and error is None:
            metric_attrs["gen_ai.token.type"] = "input"
            self._ins.tokens.record(input_tokens, metric_attrs)

    def __enter__(self) -> CallSpan:
        self._token = self._ins.context.attach(self._context)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            self._ins.context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if not self._finished:
            self.finish(error=exc)


def _figure_attributes(figures: CallFigures) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "aiml_bge.requests": figures.requests,
        "aiml_bge.retries": figures.retries,
        "aiml_bge.splits": figures.splits,
    }
    if figures.retry_causes:
        attrs["aiml_bge.retry_causes"] = tuple(figures.retry_causes)
    optional: Sequence[tuple[str, float | int | None]] = (
        ("aiml_bge.credits", figures.credits),
        ("aiml_bge.concurrency_limit", figures.concurrency_limit),
        ("aiml_bge.cache.hits", figures.cache_hits),
        ("aiml_bge.cache.misses", figures.cache_misses),
    )
    for key, value in optional:
        if value is not None:
            attrs[key] = value
    return attrs
