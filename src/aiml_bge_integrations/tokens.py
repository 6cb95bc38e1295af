"""Token counting and truncation, offline, bounded by the token limit and not by the text.

The package ships one tokenizer: bert-base-uncased's WordPiece vocabulary (``bge_vocab.txt``),
which the BGE English models and the other BERT-uncased families of ``_models.PROFILES``
use. bge-*-en-v1.5 have a 512-token window that includes ``[CLS]`` and ``[SEP]``; the AI/ML
API counts ``usage.prompt_tokens`` the same way, so "Laura is a DJ." is 7 tokens.

Finding whether a text is over a window, and where to cut it, reads only as much of the text
as the window needs (``scan_tokens``): the text is tokenized in windows of a few thousand
characters, and the tokens of a window are certain except those of its last word, which
may go on in the next one. So a 100 MB string over the limit costs one small window, not
150 times its size.

The tokenizer comes from the ``tokenizers`` library (Rust, fast in batches) and is loaded on
first use; importing this module is cheap.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ._models import BERT_UNCASED, BGE_MAX_TOKENS

__all__ = [
    "BGE_MAX_TOKENS",
    "TokenScan",
    "TruncationResult",
    "count_tokens",
    "count_tokens_batch",
    "count_tokens_upto",
    "get_tokenizer",
    "scan_tokens",
    "surely_fits",
    "truncate_texts",
]

_lock = threading.Lock()
_tokenizer: Any = None

_FIRST_WINDOW = 4096
"""Characters in the first window (grown to 8 per token of a larger limit): enough for 512
tokens of ordinary text (4 to 5 characters per token), so one window decides most texts."""
_MAX_WINDOW = 1 << 18
"""The largest window, in characters: the tokenizer holds about 150 bytes per character of
the text it is given, so a window costs at most some 40 MB whatever the text's length."""
_WHOLE_CHARS_PER_TOKEN = 64
"""A text of at most this many characters per token of the window is tokenized whole, for an
exact count (32,768 characters for 512 tokens: some 5 MB for the tokenizer); a longer one is
read in windows, as far as the verdict needs."""
_MAX_WORD_CHARS = 100
"""WordPiece's ``max_input_chars_per_word``: a longer word is one ``[UNK]``, however long."""


def surely_fits(text: str, max_tokens: int = BGE_MAX_TOKENS) -> bool:
    """Whether ``text`` is certainly within ``max_tokens`` (``[CLS]``/``[SEP]`` included) untokenized.

    True only for ASCII text whose characters other than spaces number at most
    ``max_tokens - 2``; False means "tokenize to know", not "too long". One WordPiece token
    always covers at least one character of the normalised text, and never a space; for ASCII
    a character of the normalised text is one of the input. Other scripts can expand (Hangul
    syllables decompose into two or three jamo), so they are always tokenized.
    """
    return text.isascii() and len(text) - text.count(" ") <= max_tokens - 2


def get_tokenizer(name: str = BERT_UNCASED) -> Any:
    """The shared ``tokenizers.Tokenizer`` called ``name`` (lowercasing WordPiece, no truncation).

    Only ``"bert-base-uncased"`` is shipped; any other name raises ``ValueError``.
    """
    if name != BERT_UNCASED:
        raise ValueError(f"no tokenizer {name!r} is shipped; only {BERT_UNCASED!r}")
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                from tokenizers import BertWordPieceTokenizer

                vocab = resources.files(__package__).joinpath("bge_vocab.txt")
                with resources.as_file(vocab) as path:
                    tok = BertWordPieceTokenizer(str(path), lowercase=True)
                tok.no_truncation()
                tok.no_padding()
                _tokenizer = tok
    return _tokenizer


def count_tokens(text: str) -> int:
    """BGE tokens in ``text``, ``[CLS]`` and ``[SEP]`` included (what the API bills).

    Exact, and so it tokenizes the whole text: for a verdict against a window, use
    ``scan_tokens``, which reads only what the window needs.
    """
    return len(get_tokenizer().encode(text).ids)


def count_tokens_batch(texts: Sequence[str]) -> list[int]:
    """``count_tokens`` for many texts at once (parallel in Rust)."""
    if not texts:
        return []
    return [len(e.ids) for e in get_tokenizer().encode_batch(list(texts))]


@dataclass(frozen=True)
class TokenScan:
    """What ``scan_tokens`` found about one text against one window."""

    tokens: int
    """Tokens, ``[CLS]`` and ``[SEP]`` included: exact when ``exact``, else a lower bound
    that is over the window."""
    exact: bool
    """Whether ``tokens`` is the text's whole count (the text was read to its end)."""
    cut: int | None
    """For a text over the window: how many of its characters to keep, ending at the last
    whole word that fits; None for a text within the window."""

    @property
    def over(self) -> bool:
        """Whether the text is over the window (always exact)."""
        return self.cut is not None


_WHITESPACE = re.compile("[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
"""What BERT's normaliser and pre-tokenizer take as whitespace (space, tab, newline, carriage
return and Unicode's Zs): it always ends a word and is never part of a token."""


_ALNUM = re.compile("[0-9A-Za-z]")
_NOT_ALNUM = re.compile("[^0-9A-Za-z]")


def _cut_at_word(tokens: list[str], ends: list[int], budget: int) -> int:
    # ``tokens`` holds at least budget + 1 content tokens. Keep k <= budget of them, where
    # token k starts a new word, and end at the last kept token's end.
    k = budget
    while k > 1 and tokens[k].startswith("##"):
        k -= 1
    return ends[k - 1]


def scan_tokens(text: str, max_tokens: int = BGE_MAX_TOKENS) -> TokenScan:
    """Whether ``text`` fits ``max_tokens``, and where to cut it if not, reading only what is needed.

    The verdict and the cut are the ones tokenizing the whole text gives. The count is exact
    for a text that fits, for one of up to 64 characters per token of the window (tokenized
    whole) and for one read to its end; for a longer text over the window it is the tokens
    read before the verdict (a lower bound above the window). The text is read in
    windows that end at whitespace where there is some, so memory is bounded by the largest
    window (``_MAX_WINDOW``), not by the length of ``text``.
    """
    budget = max_tokens - 2  # content tokens: [CLS] and [SEP] are the other two
    if budget < 1:
        raise ValueError("max_tokens must be at least 3")
    tok = get_tokenizer()
    if len(text) <= _WHOLE_CHARS_PER_TOKEN * max_tokens:
        enc = tok.encode(text)
        n = len(enc.ids)
        if n <= max_tokens:
            return TokenScan(n, True, None)
        return TokenScan(
            n, True, _cut_at_word(enc.tokens[1:], [e for _, e in enc.offsets[1:]], budget)
        )
    kept: list[str] = []  # the first budget + 1 content tokens, and where each ends
    ends: list[int] = []
    counted = 0  # content tokens certain so far
    pos = 0  # where the text not yet counted starts: never inside a word
    window = max(_FIRST_WINDOW, 8 * max_tokens)
    while pos < len(text):
        stop = min(len(text), pos + window)
        if stop < len(text):
            # End the window at its last whitespace: no word goes on past it then.
            last_space = max((m.start() for m in _WHITESPACE.finditer(text, pos, stop)), default=-1)
            if last_space > pos:
                stop = last_space
        enc = tok.encode(text[pos:stop], add_special_tokens=False)
        tokens: list[str] = enc.tokens
        offsets: list[tuple[int, int]] = enc.offsets
        words: list[int | None] = enc.word_ids
        certain = len(tokens)
        next_pos = stop
        if stop < len(text) and not _WHITESPACE.match(text, stop):
            # No whitespace to end the window at: the last word may go on past it.
            while certain and words[certain - 1] == words[-1]:
                certain -= 1
            if certain:
                next_pos = pos + offsets[certain][0]
            elif tokens == ["[UNK]"] and offsets[0][1] - offsets[0][0] > _MAX_WORD_CHARS:
                # One word over WordPiece's limit fills the window: it is one [UNK] however
                # long it goes on. Count it, and go on from where it ends.
                word_end, next_pos = _end_of_word(tok, text, stop, pos + offsets[0][1], window)
                tokens, certain = ["[UNK]"], 1
                offsets = [(offsets[0][0], word_end - pos)]
            else:
                window *= 2  # a word within a window of characters the normaliser drops
                continue
        if len(kept) <= budget:
            take = min(certain, budget + 1 - len(kept))
            kept.extend(tokens[:take])
            ends.extend(pos + end for _, end in offsets[:take])
        counted += certain
        pos = next_pos
        if counted > budget:
            return TokenScan(counted + 2, pos >= len(text), _cut_at_word(kept, ends, budget))
        window = min(2 * window, _MAX_WINDOW)
    return TokenScan(counted + 2, True, None)


def _is_word_char(tok: Any, char: str) -> bool:
    # Whether ``char`` goes on a word rather than ending it (as whitespace, punctuation and
    # CJK characters do): then "a" + char + "a" is a single word ("aa" if it is dropped).
    return len(set(tok.encode("a" + char + "a", add_special_tokens=False).word_ids)) == 1


def _end_of_word(tok: Any, text: str, pos: int, end: int, window: int) -> tuple[int, int]:
    """``(end, next)`` of the word that goes on at ``pos`` and so far ends at ``end``.

    ``end`` is where its last character is (characters the normaliser drops left out),
    ``next`` where what follows it starts.
    """
    while pos < len(text):
        # ASCII letters and digits always go on a word: skip a run of them at regex speed.
        run = _NOT_ALNUM.search(text, pos)
        run_end = run.start() if run else len(text)
        if run_end > pos:
            end = pos = run_end
            continue
        stop = min(len(text), pos + window)
        space = _WHITESPACE.search(text, pos, stop)
        limit = space.start() if space else stop
        if limit == pos:
            return end, pos
        alnum = _ALNUM.search(text, pos, limit)
        limit = alnum.start() if alnum else limit
        enc = tok.encode(text[pos:limit], add_special_tokens=False)
        words: list[int | None] = enc.word_ids
        offsets: list[tuple[int, int]] = enc.offsets
        if not words:  # only characters the normaliser drops
            pos = limit
            continue
        if not _is_word_char(tok, text[pos + offsets[0][0]]):
            return end, pos + offsets[0][0]
        other = next((i for i, w in enumerate(words) if w != words[0]), len(words))
        if other:
            end = pos + offsets[other - 1][1]
        if other < len(words):
            return end, pos + offsets[other][0]
        pos = limit
    return end, len(text)


def count_tokens_upto(texts: Sequence[str], max_tokens: int) -> list[int]:
    """Token counts that are exact up to ``max_tokens``; a text over it gets a count above it.

    Texts of up to 64 characters per token of ``max_tokens`` are counted whole, in one batch
    (exact); a longer one gets the tokens read before its verdict (``scan_tokens``): exact if
    it fits, else a lower bound above ``max_tokens``. Use it where only counts within the
    window matter exactly (what a truncated text bills, whether a text is over, a token
    budget), so that one huge text costs no more than the window's worth of work.
    """
    window = _WHOLE_CHARS_PER_TOKEN * max_tokens
    short = [i for i, t in enumerate(texts) if len(t) <= window]
    counts = [0] * len(texts)
    for i, n in zip(short, count_tokens_batch([texts[i] for i in short]), strict=True):
        counts[i] = n
    for i, text in enumerate(texts):
        if len(text) > window:
            counts[i] = scan_tokens(text, max_tokens).tokens
    return counts


@dataclass(frozen=True)
class TruncationResult:
    """What ``truncate_texts`` did."""

    texts: list[str]
    """The texts, the over-long ones cut; same length and order as the input."""
    over_limit: dict[int, int]
    """Index -> token count, for every text that was over the limit (see ``partial``)."""
    partial: frozenset[int] = field(default_factory=frozenset)
    """The indices in ``over_limit`` whose count is a lower bound: texts too long to be read
    to their end for a verdict (``scan_tokens``)."""


def truncate_texts(
    texts: Sequence[str], max_tokens: int = BGE_MAX_TOKENS, *, cut: bool = True
) -> TruncationResult:
    """Find the texts over ``max_tokens`` and, with ``cut``, cut each at the last whole word that fits.

    The cut keeps the original characters up to the end of the last token that fits and that
    ends a word, so the kept text tokenizes to the same tokens. Short ASCII texts are not
    tokenized; the others are read only as far as the verdict needs (``scan_tokens``).
    """
    out = list(texts)
    over: dict[int, int] = {}
    partial: set[int] = set()
    todo = [i for i, t in enumerate(out) if not surely_fits(t, max_tokens)]
    # Texts of up to _WHOLE_CHARS_PER_TOKEN characters per token are tokenized whole, in one
    # batch (parallel in Rust); longer ones are read as far as the verdict needs.
    window = _WHOLE_CHARS_PER_TOKEN * max_tokens
    short = [i for i in todo if len(out[i]) <= window]
    budget = max_tokens - 2
    for i, enc in zip(short, get_tokenizer().encode_batch([out[i] for i in short]), strict=True):
        n = len(enc.ids)
        if n <= max_tokens:
            continue
        over[i] = n
        if cut:  # tokens 1..n-2 are the content; offsets of the kept ones end the cut
            out[i] = out[i][: _cut_at_word(enc.tokens[1:], [e for _, e in enc.offsets[1:]], budget)]
    for i in todo:
        if len(out[i]) <= window:
            continue
        scan = scan_tokens(out[i], max_tokens)
        if scan.cut is None:
            continue
        over[i] = scan.tokens
        if not scan.exact:
            partial.add(i)
        if cut:
            out[i] = out[i][: scan.cut]
    return TruncationResult(out, dict(sorted(over.items())), frozenset(partial))
