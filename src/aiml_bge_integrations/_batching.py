"""Input checks, long-text policy and batch planning, pure.

Bad input is refused here, before any request is sent, with an error that names every
offending item. Nothing is dropped, reordered or invented: batch ``k`` of a plan covers a
contiguous slice of the caller's texts, and vectors are put back by position.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

from ._settings import BGE_MAX_TOKENS, LONG_TEXT_POLICIES, is_bge_model
from .errors import InputTypeError, InvalidInputError, TextTooLongError

__all__ = [
    "LongTextWarning",
    "RequestPlan",
    "apply_long_text_policy",
    "check_texts",
    "effective_long_text",
    "iter_checked_chunks",
]

_MAX_NAMED = 20


class LongTextWarning(UserWarning):
    """Texts over the model's token window were truncated (``long_text="truncate"``)."""


def _name_indices(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_NAMED])
    more = len(indices) - _MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def _ensure_iterable(texts: object) -> Iterator[object]:
    # Returns the one iterator the caller's object gives: iter() is called once, since an
    # iterable may open a file or run a query each time it is iterated.
    if isinstance(texts, str | bytes | bytearray):
        raise InputTypeError(
            f"texts must be an iterable of str, not a single {type(texts).__name__}; "
            "wrap it in a list, or use embed_query for one query"
        )
    try:
        return iter(texts)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        raise InputTypeError(
            f"texts must be an iterable of str, not {type(texts).__name__}"
        ) from None


def check_texts(items: Sequence[object], offset: int = 0) -> list[str]:
    """Check already-collected items; ``offset`` is the caller's index of ``items[0]``.

    Raises ``InputTypeError`` for the first item that is not ``str``, then
    ``InvalidInputError`` naming every empty or whitespace-only item, then every item that
    cannot be encoded as UTF-8 (a lone surrogate).
    """
    for i, item in enumerate(items):
        if type(item) is not str and not isinstance(item, str):
            raise InputTypeError(
                f"text at index {offset + i} is {type(item).__name__}, not str", offset + i
            )
    texts: list[str] = items  # type: ignore[assignment]
    blank = [offset + i for i, t in enumerate(texts) if not t or t.isspace()]
    if blank:
        raise InvalidInputError(
            f"{len(blank)} text(s) are empty or whitespace only, at index {_name_indices(blank)}; "
            "there is nothing in them to embed (and the AI/ML API refuses them): remove them or "
            "replace them with real text",
            blank,
        )
    bad_utf8: list[int] = []
    for i, t in enumerate(texts):
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                bad_utf8.append(offset + i)
    if bad_utf8:
        raise InvalidInputError(
            f"text(s) at index {_name_indices(bad_utf8)} cannot be encoded as UTF-8 "
            "(lone surrogate characters)",
            bad_utf8,
        )
    return list(texts)


def collect_texts(texts: object) -> list[str]:
    """Read ``texts`` once (a list, tuple, generator, any iterable) and check every item."""
    items = texts if isinstance(texts, list) else list(_ensure_iterable(texts))
    return check_texts(items)


def iter_checked_chunks(texts: object, chunk_size: int) -> Iterator[tuple[int, list[str]]]:
    """Read ``texts`` lazily, ``chunk_size`` at a time, checking each chunk before it is yielded.

    Yields ``(offset, chunk)``. Used by streaming, where a bad item late in a huge input is
    reported when its chunk is reached (the vectors before it have been yielded already).
    """
    it = _ensure_iterable(texts)
    offset = 0
    while True:
        chunk = list(islice(it, chunk_size))
        if not chunk:
            return
        yield offset, check_texts(chunk, offset)
        offset += len(chunk)


def effective_long_text(model: str, policy: str) -> str:
    """The long-text policy the core applies for ``model``: ``policy`` for BGE, else ``"none"``.

    The 512-token window is BGE's; texts for other models are sent as they are. The corpus
    job and its dry run ask this too, so that they predict what the core does.
    """
    return policy if is_bge_model(model) else "none"


def apply_long_text_policy(texts: list[str], model: str, policy: str, offset: int = 0) -> list[str]:
    """Apply the 512-token policy to BGE models; other models pass through untouched.

    ``"truncate"`` cuts each over-long text at the last whole word that fits and warns with a
    count; ``"error"`` raises ``TextTooLongError`` naming every index and its token count;
    ``"none"`` sends texts as they are.
    """
    if policy not in LONG_TEXT_POLICIES:
        raise ValueError(f"long_text must be one of {LONG_TEXT_POLICIES}, not {policy!r}")
    if effective_long_text(model, policy) == "none":
        return texts
    from .tokens import truncate_texts

    # Short ASCII texts are not tokenized: truncate_texts skips whatever surely fits.
    result = truncate_texts(texts, cut=policy == "truncate")
    if not result.over_limit:
        return texts
    if policy == "error":
        counts = {offset + i: n for i, n in result.over_limit.items()}
        named = ", ".join(f"{i} ({n} tokens)" for i, n in list(counts.items())[:_MAX_NAMED])
        raise TextTooLongError(
            f"{len(counts)} text(s) exceed the {BGE_MAX_TOKENS}-token window of {model}: index {named}; "
            "split them, or set long_text='truncate'",
            counts,
        )
    warnings.warn(
        f"{len(result.over_limit)} text(s) over {BGE_MAX_TOKENS} tokens were truncated to fit {model} "
        f"(index {_name_indices([offset + i for i in result.over_limit])})",
        LongTextWarning,
        stacklevel=4,
    )
    return result.texts


class RequestPlan:
    """The requests one batch becomes, cut to fit what the server accepts; iterative, no recursion.

    Iterate to get ``(offset, texts)`` for each request in order. Before each is handed out it
    is cut at ``limit()``, the number of inputs per request the server has stated (``None``
    while unknown), so a limit learned meanwhile applies to everything not yet sent. After
    ``refused()`` (the server said the last request was too large) its texts are planned again:
    at the stated limit if that is now smaller, else in halves.
    """

    def __init__(self, texts: list[str], offset: int, limit: Callable[[], int | None]) -> None:
        self._todo: deque[tuple[int, list[str]]] = deque([(offset, texts)])
        self._limit = limit
        self._last: tuple[int, list[str]] | None = None

    def __iter__(self) -> RequestPlan:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        while self._todo:
            offset, texts = self._todo.popleft()
            limit = self._limit()
            if limit and len(texts) > limit:
                pieces = [(offset + i, texts[i : i + limit]) for i in range(0, len(texts), limit)]
                self._todo.extendleft(reversed(pieces))
                continue
            self._last = (offset, texts)
            return offset, texts
        raise StopIteration

    def refused(self) -> None:
        """The last request handed out was refused as too large: plan its texts again."""
        if self._last is None:
            raise RuntimeError("refused() before any request was handed out")
        offset, texts = self._last
        self._last = None
        limit = self._limit()
        if limit and len(texts) > limit:
            self._todo.appendleft((offset, texts))  # cut at the limit when handed out again
            return
        if len(texts) < 2:
            raise ValueError(f"a single text (index {offset}) cannot be cut further")
        half = len(texts) // 2
        self._todo.extendleft([(offset + half, texts[half:]), (offset, texts[:half])])
