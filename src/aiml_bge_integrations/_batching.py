"""Input checks, long-text policy and batch planning, pure.

Bad input is refused here, before any request is sent, with an error that names every
offending item. Nothing is dropped, reordered or invented: batch ``k`` of a plan covers a
contiguous slice of the caller's texts, and vectors are put back by position.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

from ._models import policy_window, profile_for
from ._settings import LONG_TEXT_POLICIES
from ._warnings import warn_user
from .errors import InputTypeError, InvalidInputError, TextTooLongError

__all__ = [
    "LongTextWarning",
    "RequestPlan",
    "apply_long_text_policy",
    "blank_texts_allowed",
    "check_texts",
    "effective_long_text",
    "estimate_tokens",
    "iter_checked_chunks",
    "pack_batches",
    "policy_window",
    "token_counts",
]

_MAX_NAMED = 20
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def check_texts(
    items: Sequence[object], offset: int = 0, *, allow_blank: bool = False
) -> list[str]:
    """Check already-collected items; ``offset`` is the caller's index of ``items[0]``.

    Raises ``InputTypeError`` for the first item that is not ``str``, then (unless
    ``allow_blank``: the server is known to embed them, ``blank_texts_allowed``)
    ``InvalidInputError`` naming every empty or whitespace-only item, then every item that
    cannot be encoded as UTF-8 (a lone surrogate).
    """
    for i, item in enumerate(items):
        if type(item) is not str and not isinstance(item, str):
            raise InputTypeError(
                f"text at index {offset + i} is {type(item).__name__}, not str", offset + i
            )
    texts: list[str] = items  # type: ignore[assignment]
    blank = [] if allow_blank else [offset + i for i, t in enumerate(texts) if not t or t.isspace()]
    if blank:
        raise InvalidInputError(
            f"{len(blank)} text(s) are empty or whitespace only, at index {_name_indices(blank)}; "
            "there is nothing in them to embed, and the model's servers are not known to take "
            "them (the AI/ML API refuses them): remove them or replace them with real text",
            blank,
        )
    # UTF-8 encodes every code point but the surrogates: look for one instead of encoding
    # (which would copy a huge text once more).
    bad_utf8 = [offset + i for i, t in enumerate(texts) if not t.isascii() and _SURROGATE.search(t)]
    if bad_utf8:
        raise InvalidInputError(
            f"text(s) at index {_name_indices(bad_utf8)} cannot be encoded as UTF-8 "
            "(lone surrogate characters)",
            bad_utf8,
        )
    return list(texts)


def blank_texts_allowed(model: str) -> bool:
    """Whether blank texts may be sent for ``model``: its profile says its servers embed them."""
    profile = profile_for(model)
    return profile is not None and profile.accepts_blank


def collect_texts(texts: object, *, allow_blank: bool = False) -> list[str]:
    """Read ``texts`` once (a list, tuple, generator, any iterable) and check every item."""
    items = texts if isinstance(texts, list) else list(_ensure_iterable(texts))
    return check_texts(items, allow_blank=allow_blank)


def iter_checked_chunks(
    texts: object, chunk_size: int, *, allow_blank: bool = False
) -> Iterator[tuple[int, list[str]]]:
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
        yield offset, check_texts(chunk, offset, allow_blank=allow_blank)
        offset += len(chunk)


def effective_long_text(model: str, policy: str) -> str:
    """The long-text policy the core applies for ``model``: ``policy``, or ``"none"`` without a window.

    The corpus job and its dry run ask this too, so that they predict what the core does.
    """
    return policy if policy_window(model) is not None else "none"


def apply_long_text_policy(texts: list[str], model: str, policy: str, offset: int = 0) -> list[str]:
    """Apply the model's token window (``policy_window``); other models pass through untouched.

    ``"truncate"`` cuts each over-long text at the last whole word that fits and warns with a
    count; ``"error"`` raises ``TextTooLongError`` naming every index and its token count (for
    a text of more than a few thousand characters, the tokens read before the verdict: "at
    least"); ``"none"`` sends texts as they are. The work per text is bounded by the window,
    not by the text's length (``tokens.scan_tokens``).
    """
    if policy not in LONG_TEXT_POLICIES:
        raise ValueError(f"long_text must be one of {LONG_TEXT_POLICIES}, not {policy!r}")
    limit = policy_window(model)
    if limit is None or policy == "none":
        return texts
    from .tokens import truncate_texts

    # Short ASCII texts are not tokenized: truncate_texts skips whatever surely fits.
    result = truncate_texts(texts, limit, cut=policy == "truncate")
    if not result.over_limit:
        return texts
    if policy == "error":
        counts = {offset + i: n for i, n in result.over_limit.items()}
        named = ", ".join(
            f"{offset + i} ({'at least ' if i in result.partial else ''}{n} tokens)"
            for i, n in list(result.over_limit.items())[:_MAX_NAMED]
        )
        raise TextTooLongError(
            f"{len(counts)} text(s) exceed the {limit}-token window of {model}: index {named}; "
            "split them, or set long_text='truncate'",
            counts,
        )
    warn_user(
        f"{len(result.over_limit)} text(s) over {limit} tokens were truncated to fit {model} "
        f"(index {_name_indices([offset + i for i in result.over_limit])})",
        LongTextWarning,
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


# -- batches by count and tokens ------------------------------------------------------------

_BYTES_PER_TOKEN_ESTIMATE = 3
"""The estimate's divisor: tokens are counted as UTF-8 bytes / 3, plus 2 special tokens."""


def estimate_tokens(text: str) -> int:
    """A token count for a model whose tokenizer is not shipped: UTF-8 bytes / 3, plus 2.

    Meant to err high for the usual text: English runs at about 4 to 5 bytes per token in
    both WordPiece and byte-level BPE vocabularies, and a CJK character is 3 bytes and
    usually one token. Text in a language the vocabulary was not built for, of rare
    characters, or of single letters between spaces can take more tokens than this says; a server that then refuses a batch as too large gets
    it again in halves (``RequestPlan.refused``).
    """
    if text.isascii():
        size = len(text)
    else:  # counted a slice at a time, so that a huge text is not copied whole
        step = 1 << 16
        size = sum(
            len(text[i : i + step].encode("utf-8", "surrogatepass"))
            for i in range(0, len(text), step)
        )
    return size // _BYTES_PER_TOKEN_ESTIMATE + 2


def token_counts(texts: Sequence[str], model: str, cap: int) -> tuple[list[int], bool]:
    """Tokens per text as ``model`` counts them, and whether the counts are exact.

    Exact where the package ships the model's tokenizer (``_models.profile_for``), else
    ``estimate_tokens``. Counts are exact up to ``cap``; a text over it gets a count above
    it, found by reading only as much of it as that takes (``tokens.count_tokens_upto``), so
    one huge text costs no more than ``cap`` tokens' worth of work.
    """
    profile = profile_for(model)
    if profile is None or profile.tokenizer is None:
        # A text of more than 3 * (cap + 1) characters has at least that many bytes: over.
        big = _BYTES_PER_TOKEN_ESTIMATE * (cap + 1)
        return [cap + 1 if len(t) > big else min(estimate_tokens(t), cap + 1) for t in texts], False
    from .tokens import count_tokens_upto

    return count_tokens_upto(texts, max(cap, 3)), True


def pack_batches(
    token_counts: Sequence[int], max_count: int, token_budget: int | None = None
) -> list[tuple[int, int]]:
    """``(start, stop)`` slices covering every text in order, each within both limits.

    A batch holds at most ``max_count`` texts and, when ``token_budget`` is given, at most
    that many tokens in all; a text over the budget on its own gets a batch of its own (the
    server or the long-text policy decides its fate, never this function). Texts are
    neither dropped nor reordered: the slices are contiguous, in order, and their union is
    ``range(len(token_counts))``.
    """
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    if token_budget is not None and token_budget < 1:
        raise ValueError("token_budget must be at least 1")
    batches: list[tuple[int, int]] = []
    start = 0
    tokens = 0
    for i, n in enumerate(token_counts):
        full = i - start >= max_count or (
            token_budget is not None and i > start and tokens + n > token_budget
        )
        if full:
            batches.append((start, i))
            start, tokens = i, 0
        tokens += n
    if start < len(token_counts):
        batches.append((start, len(token_counts)))
    return batches
