"""LlamaIndex's batch methods, run on the adapter's hooks: chunks, events and callbacks exact.

The adapter defines only the hooks LlamaIndex asks an embedding to define
(``_get_text_embeddings`` and the rest); ``get_text_embedding_batch`` and its async twin are
``BaseEmbedding``'s own. Everything a LlamaIndex user can observe is as LlamaIndex makes it:
the vectors, the chunking, the callback events and their payloads, the instrumentation events
and the span. Each test runs the same texts through the adapter and through
``BaseEmbedding``'s methods called directly, and compares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from pydantic import Field

from aiml_bge_integrations import InputTypeError, InvalidInputError
from aiml_bge_integrations.llama_index import AimlBgeEmbedding

TEXTS = [f"passage {i} about topic {i % 7} and colour {i % 3}" for i in range(41)]


class _Callbacks(BaseCallbackHandler):
    """Every EMBEDDING start and end, with the chunks and vector counts of each end."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.log: list[tuple[str, Any]] = []

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type == CBEventType.EMBEDDING:
            self.log.append(("start", (payload or {}).get(EventPayload.SERIALIZED)))
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type == CBEventType.EMBEDDING:
            payload = payload or {}
            chunks = payload.get(EventPayload.CHUNKS)
            vectors = payload.get(EventPayload.EMBEDDINGS)
            self.log.append(("end", (list(chunks or []), [v[:3] for v in vectors or []])))

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        return None


class _Events(BaseEventHandler):
    log: list[tuple[str, Any]] = Field(default_factory=list)
    stamps: list[bool] = Field(default_factory=list)
    ids: list[str] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "PipelinedEvents"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        name = type(event).__name__
        if name == "EmbeddingStartEvent":
            self.log.append((name, dict(event.model_dict)))  # type: ignore[attr-defined]
        elif name == "EmbeddingEndEvent":
            chunks, vectors = event.chunks, event.embeddings  # type: ignore[attr-defined]
            self.log.append((name, (list(chunks), [v[:3] for v in vectors])))
        # Every event is stamped as LlamaIndex stamps it: an id, a time, the enclosing span.
        stamped = bool(event.id_) and event.timestamp is not None
        in_span = event.span_id is not None and "get_text_embedding_batch" in event.span_id
        self.stamps.append(stamped and in_span)
        self.ids.append(event.id_)


@pytest.fixture
def observed() -> Iterator[tuple[_Events, SimpleSpanHandler]]:
    root = get_dispatcher()
    events = _Events(log=[])
    spans = SimpleSpanHandler()
    root.add_event_handler(events)
    root.add_span_handler(spans)
    try:
        yield events, spans
    finally:
        root.event_handlers.remove(events)
        root.span_handlers.remove(spans)


def _observe(
    embed: AimlBgeEmbedding, events: _Events, run: Callable[[], Any]
) -> tuple[Any, list[Any], list[Any]]:
    callbacks = _Callbacks()
    embed.callback_manager = CallbackManager([callbacks])
    events.log.clear()
    vectors = run()
    return vectors, callbacks.log, list(events.log)


@pytest.mark.parametrize(("embed_batch_size", "batch_size"), [(16, 5), (10, 4), (3, 8), (64, 16)])
def test_sync_batch_matches_llama_indexs_own_method(
    local_server: Any,
    make_embed: Callable[..., AimlBgeEmbedding],
    observed: tuple[_Events, SimpleSpanHandler],
    embed_batch_size: int,
    batch_size: int,
) -> None:
    events, _ = observed
    embed = make_embed(local_server, embed_batch_size=embed_batch_size, batch_size=batch_size)
    ours = _observe(embed, events, lambda: embed.get_text_embedding_batch(TEXTS))
    sent_by_ours = local_server.stats.requests
    theirs = _observe(embed, events, lambda: BaseEmbedding.get_text_embedding_batch(embed, TEXTS))
    assert ours == theirs
    assert events.stamps and all(events.stamps)
    assert len(set(events.ids)) == len(events.ids)  # each event its own id
    # Same requests too: chunks are cut into batches as LlamaIndex's own path cuts them.
    assert local_server.stats.requests == 2 * sent_by_ours
    chunks = -(-len(TEXTS) // embed_batch_size)
    assert [kind for kind, _ in ours[1]] == ["start", "end"] * chunks
    assert [name for name, _ in ours[2]] == ["EmbeddingStartEvent", "EmbeddingEndEvent"] * chunks
    ends = [payload for kind, payload in ours[1] if kind == "end"]
    assert [text for chunk, _ in ends for text in chunk] == TEXTS


@pytest.mark.parametrize(("embed_batch_size", "batch_size"), [(16, 5), (3, 8)])
async def test_async_batch_matches_llama_indexs_own_method(
    local_server: Any,
    make_embed: Callable[..., AimlBgeEmbedding],
    observed: tuple[_Events, SimpleSpanHandler],
    embed_batch_size: int,
    batch_size: int,
) -> None:
    events, _ = observed
    embed = make_embed(local_server, embed_batch_size=embed_batch_size, batch_size=batch_size)
    callbacks = _Callbacks()
    embed.callback_manager = CallbackManager([callbacks])
    events.log.clear()
    ours = (await embed.aget_text_embedding_batch(TEXTS), list(callbacks.log), list(events.log))
    callbacks.log.clear()
    events.log.clear()
    theirs = (
        await BaseEmbedding.aget_text_embedding_batch(embed, TEXTS),
        list(callbacks.log),
        list(events.log),
    )
    assert ours == theirs
    assert events.stamps and all(events.stamps)
    assert len(set(events.ids)) == len(events.ids)  # each event its own id
    chunks = -(-len(TEXTS) // embed_batch_size)
    # LlamaIndex's async order: every chunk starts, then each ends in order.
    assert [kind for kind, _ in ours[1]] == ["start"] * chunks + ["end"] * chunks
    assert ours[0] == embed.client.embed_documents(TEXTS)


def test_the_adapter_defines_the_hooks_and_leaves_the_batch_methods_to_llama_index() -> None:
    own = set(vars(AimlBgeEmbedding))
    hooks = {
        "_get_query_embedding",
        "_aget_query_embedding",
        "_get_text_embedding",
        "_aget_text_embedding",
        "_get_text_embeddings",
        "_aget_text_embeddings",
    }
    assert hooks <= own
    public = {
        name
        for name in vars(BaseEmbedding)
        if name.startswith(("get_", "aget_")) or name in ("__call__", "acall")
    }
    assert not public & own, public & own


async def test_span_is_recorded_for_both_batch_methods(
    embed: AimlBgeEmbedding, observed: tuple[_Events, SimpleSpanHandler]
) -> None:
    _, spans = observed
    embed.get_text_embedding_batch(TEXTS[:3])
    await embed.aget_text_embedding_batch(TEXTS[:3])
    names = [span.id_ for span in spans.completed_spans]
    assert any(".get_text_embedding_batch" in name for name in names)
    assert any(".aget_text_embedding_batch" in name for name in names)


async def test_a_bad_text_in_a_chunk_is_the_cores_typed_error(
    local_server: Any, make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    # LlamaIndex hands the core one chunk at a time: the index is the text's in its chunk.
    embed = make_embed(local_server, embed_batch_size=4, batch_size=2)
    for bad, error in ((None, InputTypeError), ("   ", InvalidInputError)):
        texts = [*TEXTS[:30], bad, *TEXTS[30:]]
        with pytest.raises(error, match="index 2"):
            embed.get_text_embedding_batch(texts)  # type: ignore[arg-type]
        with pytest.raises(error, match="index 2"):
            await embed.aget_text_embedding_batch(texts)  # type: ignore[arg-type]


def test_show_progress_counts_every_text(
    embed: AimlBgeEmbedding, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    vectors = embed.get_text_embedding_batch(TEXTS, show_progress=True)
    assert len(vectors) == len(TEXTS)
    assert f"{len(TEXTS)}/{len(TEXTS)}" in capsys.readouterr().err


def test_error_mid_stream_raises_and_stops_sending(
    make_server: Callable[..., Any], make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    server = make_server(latency=0.02, max_items_per_request=2)
    embed = make_embed(server, embed_batch_size=4, batch_size=2, max_retries=0)
    embed.get_text_embedding_batch(TEXTS[:8])
    server.config.api_key = "another-key"  # every later request is refused with 401
    server.reset_stats()
    with pytest.raises(Exception) as info:
        embed.get_text_embedding_batch(TEXTS)
    assert type(info.value).__name__ == "AuthenticationError"
    # The first refusal stops the stream: far fewer requests than the 21 of the whole batch.
    assert server.stats.requests <= 2 * embed.max_concurrency
