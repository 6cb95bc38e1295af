"""The local server's embedding backend: a deterministic stand-in, not a model.

``HashingEmbedder`` turns text into unit vectors without weights, a GPU or a download. It is
**not** BAAI/bge-base-en-v1.5 and its vectors mean nothing outside this package's tests,
demos and benchmarks; what it does promise is what those need:

- the same text gives the same vector in every process and on every run (features are hashed
  with BLAKE2b, never with Python's salted ``hash()``);
- vectors are L2-normalised and ``dim`` long (768, like bge-base), so clients, vector stores
  and similarity code behave as they would with the real model;
- texts that share words are measurably closer (cosine) than texts that share none, so
  retrieval demos return sensible neighbours;
- it is fast: per-word features are cached, and a text is one ``numpy.bincount``.

Features of a text: its lowercased words (``[a-z0-9]+``, a trailing plural "s" stripped) at
weight 1.0, plus the character trigrams of each word (padded ``<word>``) at weight 0.25. Each
feature is hashed to an index in ``[0, dim)`` and a sign. A text with no features (empty,
whitespace, punctuation only) gets one fixed unit vector.
"""

from __future__ import annotations

import hashlib
import re
import threading

import numpy as np
import numpy.typing as npt

from ..tokens import count_tokens_batch

__all__ = ["HashingEmbedder", "TokenCounter", "VectorCache"]

_WORD_RE = re.compile(r"[a-z0-9]+")
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.25
_HASH_KEY = b"aiml-bge-hashing-v1"
_CACHE_LIMIT = 500_000
_TEXT_CACHE_MAX_CHARS = 4096
"""Longer texts are never cached whole (they are rare, and costly to keep)."""

_Features = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


def _hash64(feature: str) -> int:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, key=_HASH_KEY).digest()
    return int.from_bytes(digest, "little")


def _stem(word: str) -> str:
    # Light on purpose: "cats" ~ "cat", but "glass" and "is" stay whole.
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


class HashingEmbedder:
    """Deterministic unit vectors from hashed lexical features: a documented stand-in for BGE.

    Not a language model: similarity is lexical (shared words and word pieces), not semantic.
    Thread-safe; the per-word feature cache is shared by all callers of one instance.

    Example::

        emb = HashingEmbedder()
        vectors = emb.embed(["Laura is a DJ.", "DJs play music"])   # float64, shape (2, 768)
        one = emb.embed_one("Laura is a DJ.")                       # list of 768 floats
    """

    def __init__(self, dim: int = 768) -> None:
        if dim < 8:
            raise ValueError(f"dim must be at least 8, got {dim}")
        self.dim = dim
        """Length of every vector."""
        self._cache: dict[str, _Features] = {}
        self._lock = threading.Lock()
        self._empty = self._fixed_vector()

    def _fixed_vector(self) -> npt.NDArray[np.float64]:
        h = _hash64("\x00empty-text")
        vec = np.zeros(self.dim, dtype=np.float64)
        vec[h % self.dim] = 1.0 if (h >> 32) & 1 else -1.0
        return vec

    def _word_features(self, word: str) -> _Features:
        # Keyed by the raw lowercased word; the stem is what gets hashed.
        stem = _stem(word)
        names = [f"w:{stem}"]
        weights = [_WORD_WEIGHT]
        padded = f"<{stem}>"
        for i in range(len(padded) - 2):
            names.append(f"t:{padded[i : i + 3]}")
            weights.append(_TRIGRAM_WEIGHT)
        hashes = [_hash64(n) for n in names]
        idx = np.fromiter((h % self.dim for h in hashes), dtype=np.int64, count=len(hashes))
        signs = np.fromiter(
            (1.0 if (h >> 32) & 1 else -1.0 for h in hashes), dtype=np.float64, count=len(hashes)
        )
        features = (idx, signs * np.asarray(weights, dtype=np.float64))
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = features
        return features

    def embed(self, texts: list[str]) -> npt.NDArray[np.float64]:
        """Unit vectors for ``texts``, one row each: a float64 array of shape ``(len(texts), dim)``."""
        n = len(texts)
        dim = self.dim
        cache = self._cache
        idx_parts: list[npt.NDArray[np.int64]] = []
        val_parts: list[npt.NDArray[np.float64]] = []
        counts = np.zeros(n, dtype=np.int64)
        for row, text in enumerate(texts):
            words = _WORD_RE.findall(text.lower())
            if not words:
                continue
            total = 0
            for word in words:
                features = cache.get(word) or self._word_features(word)
                idx_parts.append(features[0])
                val_parts.append(features[1])
                total += len(features[0])
            counts[row] = total
        if idx_parts:
            # One bincount for the whole batch: feature i of row r lands in cell r * dim + i.
            flat_idx = np.concatenate(idx_parts) + np.repeat(
                np.arange(n, dtype=np.int64) * dim, counts
            )
            flat = np.bincount(flat_idx, weights=np.concatenate(val_parts), minlength=n * dim)
            out: npt.NDArray[np.float64] = flat.astype(np.float64, copy=False).reshape(n, dim)
        else:
            out = np.zeros((n, dim), dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        # Texts without features, and (astronomically rare) ones whose features all cancel out.
        empty = norms == 0.0
        norms[empty] = 1.0
        out /= norms[:, None]
        out[empty] = self._empty
        return out

    def embed_one(self, text: str) -> list[float]:
        """The unit vector of one text, as a list of ``dim`` floats."""
        vec: list[float] = self.embed([text])[0].tolist()
        return vec


class VectorCache:
    """Wire-ready float32 rows of recently embedded texts: a repeated text costs one lookup.

    The local server stands in for a remote model whose compute happens elsewhere; on a small
    machine shared with the client under test, re-embedding every text would take CPU from
    that client. Texts up to 4,096 characters are kept, at most ``max_rows`` of them (the
    oldest go first; 32,768 rows of 768 dimensions are 96 MiB). Rows equal
    ``embedder.embed(texts).astype("<f4")`` exactly. Thread-safe.
    """

    def __init__(self, embedder: HashingEmbedder, max_rows: int = 32_768) -> None:
        self.embedder = embedder
        """Where rows that are not cached come from."""
        self.max_rows = max_rows
        """How many rows are kept at most (0 keeps none)."""
        self._rows: dict[str, npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()

    def lookup(self, texts: list[str]) -> npt.NDArray[np.float32] | None:
        """``embed(texts)`` when every row is kept (a lookup, cheap enough inline), else None."""
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype="<f4")
        rows = self._rows
        try:
            return np.stack([rows[text] for text in texts])
        except KeyError:
            return None

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Little-endian float32 unit vectors for ``texts``, shape ``(len(texts), dim)``."""
        kept = self.lookup(texts)
        if kept is not None:
            return kept
        rows = self._rows
        found = [rows.get(text) for text in texts]
        missing = [i for i, row in enumerate(found) if row is None]
        fresh = self.embedder.embed([texts[i] for i in missing]).astype("<f4")
        for i, row in zip(missing, fresh, strict=True):
            found[i] = row
        self._remember([texts[i] for i in missing], fresh)
        return np.stack(found)  # type: ignore[arg-type]

    def _remember(self, texts: list[str], fresh: npt.NDArray[np.float32]) -> None:
        if self.max_rows <= 0:
            return
        with self._lock:
            rows = self._rows
            for text, row in zip(texts, fresh, strict=True):
                if len(text) > _TEXT_CACHE_MAX_CHARS or text in rows:
                    continue
                if len(rows) >= self.max_rows:
                    del rows[next(iter(rows))]  # dicts keep insertion order: the oldest
                rows[text] = row.copy()  # a row of its own, not a view of the whole batch


class TokenCounter:
    """Exact BGE token counts, as ``tokens.count_tokens_batch`` gives them, but cached.

    BGE's tokenizer (BERT normaliser, whitespace-and-punctuation pre-tokenizer, WordPiece)
    never joins anything across an ASCII space, so a text's count is ``2`` (``[CLS]``,
    ``[SEP]``) plus the counts of its space-separated chunks. Each chunk is counted once with
    ``count_tokens_batch`` and remembered, which makes counting natural text several times
    faster than tokenizing every request from scratch. Thread-safe.
    """

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}
        self._texts: dict[str, int] = {}

    def lookup(self, texts: list[str]) -> list[int] | None:
        """``count(texts)`` when every text's count is kept (a lookup, cheap enough inline), else None."""
        known = self._texts
        try:
            return [known[text] for text in texts]
        except KeyError:
            return None

    def count(self, texts: list[str]) -> list[int]:
        """The BGE token count of each text, ``[CLS]`` and ``[SEP]`` included."""
        kept = self.lookup(texts)
        if kept is not None:
            return kept
        known = self._texts
        counts = self._count(texts)
        if len(known) + len(texts) > _CACHE_LIMIT:
            known.clear()
        for text, n in zip(texts, counts, strict=True):
            if len(text) <= _TEXT_CACHE_MAX_CHARS:
                known[text] = n
        return counts

    def _count(self, texts: list[str]) -> list[int]:
        cache = self._cache
        chunked = [text.split(" ") for text in texts]
        missing = {chunk for chunks in chunked for chunk in chunks if chunk not in cache}
        if missing:
            new = list(missing)
            if len(cache) + len(new) > _CACHE_LIMIT:
                cache.clear()
            for chunk, n in zip(new, count_tokens_batch(new), strict=True):
                cache[chunk] = n - 2
        return [2 + sum(cache[chunk] for chunk in chunks) for chunks in chunked]
