"""The clients and both adapters report each call to OpenTelemetry (SDK in memory).

Each test points a client's ``telemetry`` at the in-memory providers and talks to a small
scripted server on 127.0.0.1 (tests/support/scripted_server.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from otel_helpers import Otel
from scripted_server import ScriptedServer

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._telemetry import make_telemetry
from aiml_bge_integrations.errors import AuthenticationError

MODEL = "BAAI/bge-base-en-v1.5"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def _observe(client: Any, otel: Otel, trace_requests: bool = True) -> Any:
    client.telemetry = make_telemetry(
        trace_requests=trace_requests,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    client.retry_policy.sleep = lambda seconds: None
    client.retry_policy.asleep = _no_wait
    return client


async def _no_wait(seconds: float) -> None:
    return None


def _calls(otel: Otel) -> list[Any]:
    return [s for s in otel.spans() if s.kind is SpanKind.CLIENT]


def _attempts(otel: Otel) -> list[Any]:
    return sorted(
        (s for s in otel.spans() if s.name == "embeddings attempt"),
        key=lambda s: s.attributes["aiml_bge.attempt"],
    )


def test_the_client_setting_turns_on_per_request_spans() -> None:
    with EmbeddingsClient(api_key="k", base_url="http://127.0.0.1:9/v1") as off:
        assert off.telemetry.trace_requests is False
    with EmbeddingsClient(api_key="k", base_url="http://127.0.0.1:9/v1", trace_requests=True) as on:
        assert on.telemetry.enabled and on.telemetry.trace_requests is True


def test_a_sync_call_with_a_retry_is_one_client_span_with_attempt_children(
    server: ScriptedServer, otel: Otel
) -> None:
    server.script.append((503, {"message": "busy"}, {}))
    client = _observe(EmbeddingsClient(api_key="k", base_url=server.base_url), otel)
    with client:
        vectors = client.embed_documents(["one two", "three"])
    assert len(vectors) == 2 and len(server.posts()) == 2

    (span,) = _calls(otel)
    a = dict(span.attributes)
    assert span.name == f"embeddings {MODEL}"
    assert a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.provider.name"] == "openai_compatible"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.response.model"] == MODEL
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
    assert a["gen_ai.usage.input_tokens"] == 3  # the server counts words
    assert a["gen_ai.embeddings.dimension.count"] == server.dim
    assert a["aiml_bge.inputs"] == 2 and a["aiml_bge.side"] == "document"
    assert a["aiml_bge.requests"] == 2 and a["aiml_bge.retries"] == 1
    assert a["aiml_bge.retry_causes"] == ("503",)
    assert a["aiml_bge.concurrency_limit"] >= 1
    assert "error.type" not in a and span.status.status_code is not StatusCode.ERROR

    first, second = _attempts(otel)
    assert first.parent.span_id == span.context.span_id == second.parent.span_id
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["aiml_bge.retry_cause"] == "503"
    assert "aiml_bge.wait" in second.attributes

    metrics = otel.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.count == 1 and duration.attributes["server.port"] == server.port
    (tokens,) = metrics["gen_ai.client.token.usage"]
    assert tokens.sum == 3 and tokens.attributes["gen_ai.token.type"] == "input"


def test_without_trace_requests_only_the_call_span_is_made(
    server: ScriptedServer, otel: Otel
) -> None:
    client = _observe(EmbeddingsClient(api_key="k", base_url=server.base_url), otel, False)
    with client:
        client.embed_query("a question")
    (span,) = otel.spans()
    assert span.attributes["aiml_bge.side"] == "query" and span.attributes["aiml_bge.inputs"] == 1


def test_a_failing_call_ends_its_span_with_error_type_and_records_no_tokens(
    server: ScriptedServer, otel: Otel
) -> None:
    server.script.append((401, {"message": "bad key"}, {}))
    client = _observe(EmbeddingsClient(api_key="k", base_url=server.base_url), otel)
    with client, pytest.raises(AuthenticationError):
        client.embed_documents(["x"])
    (span,) = _calls(otel)
    assert span.attributes["error.type"] == "AuthenticationError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["aiml_bge.requests"] == 1
    (attempt,) = _attempts(otel)
    assert attempt.attributes["http.response.status_code"] == 401
    metrics = otel.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "AuthenticationError"
    assert "gen_ai.client.token.usage" not in metrics


def test_an_async_call_over_two_batches_is_one_span(server: ScriptedServer, otel: Otel) -> None:
    async def run() -> list[list[float]]:
        client = _observe(
            AsyncEmbeddingsClient(api_key="k", base_url=server.base_url, batch_size=2), otel
        )
        async with client:
            return await client.embed_documents(["a", "b", "c"])

    assert len(asyncio.run(run())) == 3
    (span,) = _calls(otel)
    assert span.attributes["aiml_bge.requests"] == 2
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    attempts = _attempts(otel)
    assert [s.attributes["aiml_bge.attempt"] for s in attempts] == [1, 2]
    assert all(s.parent.span_id == span.context.span_id for s in attempts)


def test_a_stream_is_one_span_ended_when_it_is_exhausted(
    server: ScriptedServer, otel: Otel
) -> None:
    client = _observe(EmbeddingsClient(api_key="k", base_url=server.base_url, batch_size=1), otel)
    with client:
        assert len(list(client.iter_embeddings(iter(["a", "b", "c"])))) == 3
    (span,) = _calls(otel)
    assert span.attributes["aiml_bge.requests"] == 3 and "aiml_bge.inputs" not in span.attributes


def test_langchain_embed_documents_reports_its_call(server: ScriptedServer, otel: Otel) -> None:
    langchain = pytest.importorskip("aiml_bge_integrations.langchain")
    emb = langchain.AimlBgeEmbeddings(api_key="k", base_url=server.base_url)
    _observe(emb.client, otel)
    assert len(emb.embed_documents(["a", "b"])) == 2
    (span,) = _calls(otel)
    assert span.attributes["aiml_bge.inputs"] == 2
    assert span.attributes["gen_ai.embeddings.dimension.count"] == server.dim


def test_llama_index_text_embedding_batch_reports_its_call(
    server: ScriptedServer, otel: Otel
) -> None:
    llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
    emb = llama_index.AimlBgeEmbedding(api_key="k", base_url=server.base_url)
    _observe(emb.client, otel)
    assert len(emb.get_text_embedding_batch(["a", "b", "c"])) == 3
    spans = _calls(otel)
    assert sum(s.attributes.get("aiml_bge.inputs", 0) for s in spans) == 3
    assert all(s.attributes["gen_ai.response.model"] == MODEL for s in spans)


def test_llama_index_fires_token_counts_in_the_span_of_its_end_event(
    server: ScriptedServer,
) -> None:
    llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent

    seen: list[Any] = []

    class Collect(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            seen.append(event)

    root = get_dispatcher()
    handler = Collect()
    root.add_event_handler(handler)
    try:
        emb = llama_index.AimlBgeEmbedding(api_key="k", base_url=server.base_url)
        emb.get_text_embedding_batch(["one two", "three"])
        asyncio.run(emb.aget_query_embedding("four five six"))
    finally:
        root.event_handlers.remove(handler)
    usage = [e for e in seen if isinstance(e, llama_index.EmbeddingUsageEvent)]
    ends = [e for e in seen if isinstance(e, EmbeddingEndEvent)]
    assert [(u.texts, u.requests) for u in usage] == [(2, 1), (1, 1)]
    assert usage[0].prompt_tokens == 3 and usage[0].model_name == MODEL
    # The query carries BGE's instruction: the server counts its words too.
    assert usage[1].prompt_tokens == len(emb.query_instruction.split()) + 3
    # Each is fired just before LlamaIndex's end event of the same call, in its span or in
    # the span of the adapter's hook inside it.
    for event in usage:
        following = seen[seen.index(event) + 1]
        assert isinstance(following, EmbeddingEndEvent)
        assert event.span_id == following.span_id or event.span_id.startswith("AimlBgeEmbedding._")
    assert len(ends) == 2
