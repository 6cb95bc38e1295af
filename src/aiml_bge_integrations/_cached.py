"""The embedding cache as a client uses it: the keys of its texts, what to send, what to store.

With ``cache`` set, a call looks its texts up first (after the prompt and the long-text
policy: the texts as they would be sent), sends each text the cache does not hold once, and
stores what came back. A key is made of everything that changes a vector: the text, the
model, the side and its prompt and input type, the long-text policy and limit, the encoding
and the server's root (see ``_cache.cache_key``). The model is the one asked for, unless a
reply to this client has named another one: then the model the server says it serves.

Both clients share all of this; each only drives it (``lookup`` or ``alookup``, then its own
request pipeline for ``Lookup.todo``, then ``put_many`` or ``aput_many``).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._models import policy_window
from ._settings import same_model
from ._tally import Tally
from ._usage import UsageCounter
from .errors import ItemRejectedError

if TYPE_CHECKING:
    from ._cache import CachedBatch, EmbeddingCache
    from ._engine import Engine

__all__ = ["CacheRoute", "Lookup", "Windows"]

Batches = Iterator[tuple[int, list[str]]]


@dataclass
class Lookup:
    """One run of texts looked up: what the cache held, and the texts still to send."""

    plan: CachedBatch
    todo: list[str]
    """The texts to send, each distinct one once, in the caller's order."""
    side: str
    model: str
    """The model the keys were made with."""
    route: CacheRoute
    tally: Tally | None
    """The telemetry of the call the texts belong to."""

    @property
    def answered(self) -> int:
        """How many of the texts need no request."""
        return len(self.plan.keys) - len(self.todo)

    def items(self, sent: list[list[float]]) -> list[tuple[str, list[float]]]:
        """What to store for ``sent`` (the vectors of ``todo``): under the model the replies
        named, if that is not the one looked up."""
        now = self.route.key_model()
        if now == self.model:
            return self.plan.new_items(sent)
        return list(zip(self.route.keys(self.todo, self.side, now), sent, strict=True))

    def complete(self, sent: list[list[float]]) -> list[list[float]]:
        """Every text's vector, in the caller's order."""
        return self.plan.complete(sent)

    @contextlib.contextmanager
    def renumbered(self, offset: int, base: int = 0) -> Iterator[None]:
        """An input the server refused, named by its index in the caller's texts (at
        ``offset``), not among those sent (at ``base``)."""
        try:
            yield
        except ItemRejectedError as err:
            renumber(err, self.plan.to_send, offset, base)
            raise


class CacheRoute:
    """One client's way through its cache file (opened at the first call)."""

    def __init__(
        self,
        path: str,
        *,
        model: str,
        base_url: str,
        long_text: str,
        encoding_format: str | None,
        prompts: tuple[str | None, str | None],
        input_types: tuple[str | None, str | None],
        served_model: Callable[[], str | None],
        usage: UsageCounter,
    ) -> None:
        self.path = path
        self._model, self._base_url = model, base_url
        self._long_text, self._encoding = long_text, encoding_format
        self._prompts, self._input_types = prompts, input_types
        self._served_model, self._usage = served_model, usage
        self._limit = policy_window(model)
        self._file: EmbeddingCache | None = None
        self._lock = threading.Lock()

    def store(self) -> EmbeddingCache:
        """The cache file, opened at the first call (a file that is no cache is refused then)."""
        from ._cache import EmbeddingCache

        with self._lock:
            if self._file is None:
                self._file = EmbeddingCache(self.path)
            return self._file

    def key_model(self) -> str:
        """The model the keys are made with: the one served, once a reply has named another."""
        served = self._served_model()
        return self._model if served is None or same_model(served, self._model) else served

    def keys(self, texts: list[str], side: str, model: str) -> list[str]:
        """The cache key of each text on ``side`` (``"query"`` or ``"document"``)."""
        from ._cache import cache_key

        # The side's prompt and input type change its vectors (a query's prompt is also in
        # its text by now; a document's is put in front as its batch is sent).
        which = 0 if side == "query" else 1
        return [
            cache_key(
                text=text,
                model_served=model,
                side=side,
                prompt=self._prompts[which],
                input_type=self._input_types[which],
                long_text=self._long_text,
                token_limit=self._limit,
                dimension=None,
                server_root=self._base_url,
                encoding=self._encoding,
            )
            for text in texts
        ]

    def held(self, keys: Iterable[str]) -> int:
        """How many of the distinct ``keys`` the file holds, read-only (no entry marked used)."""
        from ._cache import count_held

        return count_held(self.path, keys)

    def lookup(self, texts: list[str], side: str, tally: Tally | None) -> Lookup:
        """``texts`` looked up in the cache file, on this thread."""
        from ._cache import lookup_batch

        model = self.key_model()
        plan = lookup_batch(self.store(), self.keys(texts, side, model))
        return self._counted(plan, texts, side, model, tally)

    async def alookup(self, texts: list[str], side: str, tally: Tally | None) -> Lookup:
        """``texts`` looked up in the cache file, off the event loop."""
        from ._cache import alookup_batch

        model = self.key_model()
        plan = await alookup_batch(self.store(), self.keys(texts, side, model))
        return self._counted(plan, texts, side, model, tally)

    def _counted(
        self, plan: CachedBatch, texts: list[str], side: str, model: str, tally: Tally | None
    ) -> Lookup:
        found = Lookup(plan, [texts[i] for i in plan.to_send], side, model, self, tally)
        self._usage.count(cache_hits=plan.hits, cache_misses=plan.misses, texts=found.answered)
        if tally is not None:
            tally.usage.count(texts=found.answered)
            tally.cache_hits = (tally.cache_hits or 0) + plan.hits
            tally.cache_misses = (tally.cache_misses or 0) + plan.misses
        return found


def renumber(err: ItemRejectedError, positions: tuple[int, ...], offset: int, base: int) -> None:
    """``err.index`` was ``base`` + a position in ``positions``: make it ``offset`` + the text's."""
    sent = err.index - base
    if 0 <= sent < len(positions):
        index = offset + positions[sent]
        err.message = err.message.replace(f"index {err.index}", f"index {index}", 1)
        err.args = (err.message,)
        err.index = index


@dataclass
class _Window:
    """One window of a cached stream: its lookup, and its misses' batches in flight."""

    found: Lookup
    batches: int
    offset: int
    """Where the window starts in the caller's texts."""
    base: int
    """Where its misses start among all the texts the stream sends (the batches' offsets)."""
    sent: list[list[float]] = field(default_factory=list)
    got: int = 0


@dataclass
class Finished:
    """A window of a cached stream with every vector in: what to yield, what to store."""

    vectors: list[list[float]]
    items: list[tuple[str, list[float]]]


class Windows:
    """A stream through the cache, without a pause between windows.

    The stream is read in windows that keep every request slot busy (``batch_size`` x
    ``2 * max_concurrency`` texts); each is looked up as it is read, and its misses go into
    the one request pipeline of the stream, so the next windows' requests are in flight while
    one is finished. A window with nothing to send puts an empty batch in the pipeline (no
    request), so that results and windows stay in step.
    """

    def __init__(
        self,
        route: CacheRoute,
        engine: Engine,
        texts: Iterable[str],
        tally: Tally | None,
        size: int,
    ) -> None:
        self._route, self._engine, self._texts, self._tally = route, engine, texts, tally
        self._size = size
        """Texts per window."""
        self._pending: deque[_Window] = deque()

    def store(self) -> EmbeddingCache:
        """Where a finished window's new vectors go."""
        return self._route.store()

    def batches(self) -> Batches:
        """The batches to send, the misses of each window as it is read and looked up."""
        base = 0
        for offset, chunk in self._engine.stream_batches(self._texts, self._size):
            found = self._route.lookup(chunk, "document", self._tally)
            cuts = [(base + o, b) for o, b in self._engine.batches(found.todo)] or [(base, [])]
            self._pending.append(_Window(found, len(cuts), offset, base))
            base += len(found.todo)
            yield from cuts

    def add(self, vectors: list[list[float]]) -> Finished | None:
        """One batch's vectors, in order; the first window's result once all of its are in."""
        window = self._pending[0]
        window.sent.extend(vectors)
        window.got += 1
        if window.got < window.batches:
            return None
        self._pending.popleft()
        return Finished(window.found.complete(window.sent), window.found.items(window.sent))

    @contextlib.contextmanager
    def renumbered(self) -> Iterator[None]:
        """A refused input named by its index in the caller's stream."""
        try:
            yield
        except ItemRejectedError as err:
            for w in self._pending:
                if w.base <= err.index < w.base + len(w.found.todo):
                    renumber(err, w.found.plan.to_send, w.offset, w.base)
                    break
            raise
