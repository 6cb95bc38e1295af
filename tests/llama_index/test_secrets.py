"""The API key never leaves the adapter: not in serialised forms, events, spans, logs or pickles."""

from __future__ import annotations

import copy
import inspect
import logging
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode
from pydantic import Field

from aiml_bge_integrations.llama_index import AimlBgeEmbedding

KEY = "sk-llama-SECRET-0123456789abcdef"


@pytest.fixture
def keyed_server(make_server: Callable[..., Any]) -> Any:
    return make_server(api_key=KEY)


@pytest.fixture
def embed(keyed_server: Any, make_embed: Callable[..., AimlBgeEmbedding]) -> AimlBgeEmbedding:
    embed = make_embed(keyed_server, batch_size=2, embed_batch_size=3)
    assert embed.api_key is not None and embed.api_key.get_secret_value() == KEY
    return embed


class _Recorder(BaseCallbackHandler):
    """Keeps the printed form of every callback payload."""

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.seen: list[str] = []
        self.serialized: list[Any] = []

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        self.seen.append(repr((event_type, payload, kwargs)))
        if event_type is CBEventType.EMBEDDING and payload:
            self.serialized.append(payload[EventPayload.SERIALIZED])
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        self.seen.append(repr((event_type, payload, kwargs)))

    def start_trace(self, trace_id: str | None = None) -> None:
        self.seen.append(repr(trace_id))

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        self.seen.append(repr((trace_id, trace_map)))


class _EventRecorder(BaseEventHandler):
    seen: list[str] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.seen.append(event.model_dump_json())
        self.seen.append(repr(event))


class _SpanRecorder(SimpleSpanHandler):
    seen: list[str] = Field(default_factory=list)

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self.seen.append(repr(bound_args.arguments))
        if instance is not None:
            self.seen.append(repr(instance))
            if hasattr(instance, "to_json"):
                try:
                    self.seen.append(instance.to_json())
                except TypeError:  # some components hold objects json cannot write
                    self.seen.append(repr(instance.to_dict()))
        return super().new_span(id_, bound_args, instance, parent_span_id, tags, **kwargs)

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> Any:
        self.seen.append(f"dropped: {err!r} {err}")
        return super().prepare_to_drop_span(id_, bound_args, instance, err, **kwargs)


@pytest.fixture
def instrumented() -> Iterator[tuple[_EventRecorder, _SpanRecorder]]:
    root = get_dispatcher()
    events = _EventRecorder()
    # BaseSpanHandler's defaults are shared mutable objects: give this one its own.
    spans = _SpanRecorder(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
    root.add_event_handler(events)
    root.add_span_handler(spans)
    try:
        yield events, spans
    finally:
        root.event_handlers.remove(events)
        root.span_handlers.remove(spans)


def test_serialised_forms_carry_no_key(embed: AimlBgeEmbedding) -> None:
    embed.get_text_embedding("build the clients first")  # they hold the key in their headers
    forms = {
        "to_dict": repr(embed.to_dict()),
        "to_json": embed.to_json(),
        "to_payload": repr(embed.to_payload()),
        "model_dump": repr(embed.model_dump()),
        "model_dump_json": embed.model_dump_json(),
        "dict": repr(embed.dict()),
        "repr": repr(embed),
        "str": str(embed),
        "vars": repr(vars(embed)),
        "client repr": repr(embed.client) + repr(embed.async_client),
        "api_key field": repr(embed.api_key) + str(embed.api_key),
        "schema": repr(AimlBgeEmbedding.model_json_schema()),
        "transformation hash input": repr(embed.to_dict()),
    }
    for name, text in forms.items():
        assert KEY not in text, name
    assert "api_key" not in embed.to_dict()
    assert set(embed.to_payload()) == {
        "class_name",
        "model_name",
        "embed_batch_size",
        "batch_size",
        "max_concurrency",
    }
    # The ingestion cache key does not depend on the key (same settings, same vectors).
    other = AimlBgeEmbedding(**{**embed.to_dict(), "api_key": "other"})
    nodes = [TextNode(text="x")]
    assert get_transformation_hash(nodes, other) == get_transformation_hash(nodes, embed)


def test_pickles_and_copies_carry_no_key(embed: AimlBgeEmbedding) -> None:
    embed.get_text_embedding("build the clients first")
    data = pickle.dumps(embed)
    assert KEY.encode() not in data
    # Copies in memory keep it (they are the same caller's object) and work.
    for clone in (copy.copy(embed), copy.deepcopy(embed)):
        assert clone.api_key is not None and clone.api_key.get_secret_value() == KEY
        assert len(clone.get_text_embedding("works")) == 768


async def test_callback_events_carry_no_key(
    embed: AimlBgeEmbedding, li_settings: Any, keyed_server: Any
) -> None:
    recorder = _Recorder()
    embed.callback_manager = CallbackManager([recorder])
    embed.get_query_embedding("a query")
    embed.get_text_embedding("a text")
    embed.get_text_embedding_batch(["one", "two", "three", "four"])
    await embed.aget_query_embedding("an async query")
    await embed.aget_text_embedding("an async text")
    await embed.aget_text_embedding_batch(["five", "six", "seven", "eight"])
    li_settings.llm = MockLLM()
    li_settings.callback_manager = CallbackManager([recorder])
    li_settings.embed_model = embed
    index = VectorStoreIndex.from_documents([Document(text="nine ten"), Document(text="eleven")])
    index.as_retriever().retrieve("twelve")
    assert keyed_server.stats.ok > 0
    assert len(recorder.serialized) >= 9
    # LlamaIndex 0.14.23 and later serialise an embedding's to_payload() into its events,
    # earlier ones its to_dict(): neither holds the key.
    shown = embed.to_payload() if hasattr(BaseEmbedding, "to_payload") else embed.to_dict()
    assert all(s == shown for s in recorder.serialized)
    assert all("api_key" not in s for s in recorder.serialized)
    for text in recorder.seen:
        assert KEY not in text


async def test_instrumentation_events_and_spans_carry_no_key(
    embed: AimlBgeEmbedding, instrumented: tuple[_EventRecorder, _SpanRecorder]
) -> None:
    events, spans = instrumented
    embed.get_query_embedding("a query")
    embed.get_text_embedding_batch(["one", "two", "three", "four"])
    await embed.aget_query_embedding("an async query")
    await embed.aget_text_embedding_batch(["five", "six", "seven", "eight"])
    await IngestionPipeline(
        transformations=[SentenceSplitter(), embed], cache=IngestionCache()
    ).arun(documents=[Document(text="nine ten eleven")])
    assert any("EmbeddingStartEvent" in seen for seen in events.seen)
    assert any("AimlBgeEmbedding" in seen for seen in spans.seen)
    for text in events.seen + spans.seen:
        assert KEY not in text


def test_errors_and_logs_carry_no_key(
    embed: AimlBgeEmbedding,
    keyed_server: Any,
    caplog: pytest.LogCaptureFixture,
    instrumented: tuple[_EventRecorder, _SpanRecorder],
) -> None:
    caplog.set_level(logging.DEBUG)
    embed.get_text_embedding_batch(["one", "two", "three"])
    with pytest.raises(ValueError) as info:
        embed.get_text_embedding_batch(["fine", ""])
    assert KEY not in repr(info.value)
    wrong = AimlBgeEmbedding(base_url=keyed_server.base_url, api_key=KEY + "-wrong")
    with pytest.raises(Exception) as refused:
        wrong.get_query_embedding("hello")
    wrong.close()  # its connection to the server would be left to the collector
    assert refused.type.__name__ == "AuthenticationError"
    assert KEY not in str(refused.value) and KEY not in repr(refused.value.__dict__)
    assert caplog.records
    assert KEY not in caplog.text
    _, spans = instrumented
    dropped = [seen for seen in spans.seen if seen.startswith("dropped: ")]
    assert any("AuthenticationError" in seen for seen in dropped)
    for seen in spans.seen:
        assert KEY not in seen
