"""BGE token counting and truncation, offline.

bge-*-en-v1.5 use the bert-base-uncased WordPiece vocabulary (shipped in this package as
``bge_vocab.txt``) with a 512-token window that includes ``[CLS]`` and ``[SEP]``. The AI/ML API
counts ``usage.prompt_tokens`` the same way, so "Laura is a DJ." is 7 tokens.

The tokenizer comes from the ``tokenizers`` library (Rust, fast in batches) and is loaded on
first use; importing this module is cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ._settings import BGE_MAX_TOKENS

__all__ = [
    "BGE_MAX_TOKENS",
    "TruncationResult",
    "count_tokens",
    "count_tokens_batch",
    "get_tokenizer",
    "truncate_texts",
]

_lock = threading.Lock()
_tokenizer: Any = None


def surely_fits(text: str, max_tokens: int = BGE_MAX_TOKENS) -> bool:
    """Whether ``text`` is certainly within ``max_tokens`` (``[CLS]``/``[SEP]`` included) untokenized.

    True only for ASCII text whose characters other than spaces number at most
    ``max_tokens - 2``; False means "tokenize to know", not "too long". One WordPiece token
    always covers at least one character of the normalised text, and never a space; for ASCII
    a character of the normalised text is one of the input. Other scripts can expand (Hangul
    syllables decompose into two or three jamo), so they are always tokenized.
    """
    return text.isascii() and len(text) - text.count(" ") <= max_tokens - 2


def get_tokenizer() -> Any:
    """The shared BGE ``tokenizers.Tokenizer`` (lowercasing WordPiece, no truncation)."""
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
    """BGE tokens in ``text``, ``[CLS]`` and ``[SEP]`` included (what the API bills)."""
    return len(get_tokenizer().encode(text).ids)


def count_tokens_batch(texts: Sequence[str]) -> list[int]:
    """``count_tokens`` for many texts at once (parallel in Rust)."""
    if not texts:
        return []
    return [len(e.ids) for e in get_tokenizer().encode_batch(list(texts))]


@dataclass(frozen=True)
class TruncationResult:
    """What ``truncate_texts`` did."""

    texts: list[str]
    """The texts, the over-long ones cut; same length and order as the input."""
    over_limit: dict[int, int]
    """Index -> original token count, for every text that was over the limit."""


def truncate_texts(
    texts: Sequence[str], max_tokens: int = BGE_MAX_TOKENS, *, cut: bool = True
) -> TruncationResult:
    """Find the texts over ``max_tokens`` and, with ``cut``, cut each at the last whole word that fits.

    The cut keeps the original characters up to the end of the last token that fits and that
    ends a word, so the kept text tokenizes to the same tokens. Short ASCII texts are not tokenized.
    """
    out = list(texts)
    long_idx = [i for i, t in enumerate(out) if not surely_fits(t, max_tokens)]
    over: dict[int, int] = {}
    if not long_idx:
        return TruncationResult(out, over)
    encs = get_tokenizer().encode_batch([out[i] for i in long_idx])
    budget = max_tokens - 2
    for i, enc in zip(long_idx, encs, strict=True):
        n = len(enc.ids)
        if n <= max_tokens:
            continue
        over[i] = n
        if not cut:
            continue
        tokens: list[str] = enc.tokens
        offsets: list[tuple[int, int]] = enc.offsets
        # Content tokens are 1..n-2; keep k of them where token k+1 starts a new word.
        k = budget
        while k > 1 and tokens[k + 1].startswith("##"):
            k -= 1
        out[i] = out[i][: offsets[k][1]]
    return TruncationResult(out, over)
