"""Fault injection for the local server: seeded, scripted, counted.

A ``FaultConfig`` says which faults the server injects into replies that would otherwise be
healthy (requests that passed auth, validation and limits):

- ``script``: one entry per such request, in arrival order; ``None`` means "healthy". When the
  script is used up, ``rates`` take over.
- ``rates``: ``{kind: probability}``, drawn with ``random.Random(seed)``, one draw per request,
  so the same sequence of requests meets the same sequence of faults on every run.

The kinds (``FAULT_KINDS``)::

    "429"                    429 in the dialect's error shape, no Retry-After header
    "429-retry-after"        429 with ``Retry-After: <retry_after_seconds>``
    "429-retry-after-date"   429 with ``Retry-After: <HTTP date>`` that far ahead
    "500" "502" "503" "504"  server errors in the dialect's error shape
    "drop"                   the connection breaks mid-body (Content-Length promises more)
    "slow"                   a healthy reply, but only after ``slow_seconds``
    "malformed-json"         200 whose body is cut in half: not valid JSON
    "shuffle"                200 with ``data`` shuffled (indices still right: clients must cope)
    "missing-item"           200 with one item fewer than inputs
    "duplicate-index"        200 where two items claim the same index
    "wrong-dimension"        200 where one vector is one float short

The body mutations are pure functions here; the app does the I/O.
"""

from __future__ import annotations

import base64
import math
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "FaultConfig",
    "FaultInjector",
    "mutate_items",
    "retry_after_header",
    "truncate_body",
]

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429-retry-after",
    "429-retry-after-date",
    "500",
    "502",
    "503",
    "504",
    "drop",
    "slow",
    "malformed-json",
    "shuffle",
    "missing-item",
    "duplicate-index",
    "wrong-dimension",
)
"""Every fault kind the server can inject."""

ITEM_FAULTS = frozenset({"shuffle", "missing-item", "duplicate-index", "wrong-dimension"})
"""Faults that change the items of an otherwise healthy 200 body."""


@dataclass
class FaultConfig:
    """Which faults to inject, how often, and with what parameters.

    Example: ``FaultConfig(script=["503", None, "drop"], rates={"429": 0.1}, seed=1)``.
    """

    rates: dict[str, float] = field(default_factory=dict)
    """Probability per kind for each request not covered by ``script`` (sum at most 1)."""
    script: list[str | None] = field(default_factory=list)
    """Fault (or ``None`` for healthy) of the 1st, 2nd, ... eligible request."""
    seed: int = 0
    """Seed of the ``random.Random`` behind ``rates`` and the body mutations."""
    slow_seconds: float = 5.0
    """How long a "slow" reply waits: longer than the client's timeout, to trigger it."""
    retry_after_seconds: float = 1.0
    """The delay that "429-retry-after" and "429-retry-after-date" announce."""
    drop_fraction: float = 0.5
    """Share of the body sent before a "drop" breaks the connection."""

    def __post_init__(self) -> None:
        unknown = [k for k in [*self.rates, *self.script] if k is not None and k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        for kind, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind!r} must be within 0..1, got {rate}")
        total = sum(self.rates.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:g}, more than 1")
        if self.slow_seconds < 0 or self.retry_after_seconds < 0:
            raise ValueError("slow_seconds and retry_after_seconds must not be negative")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError("drop_fraction must be within [0, 1)")


class FaultInjector:
    """Picks the fault (or none) for each eligible request of one ``FaultConfig``; thread-safe."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        """The configuration this injector follows."""
        self._rng = random.Random(config.seed)
        self._count = 0
        self._lock = threading.Lock()

    def next_fault(self) -> str | None:
        """The fault for the next eligible request: script first, then one seeded draw."""
        with self._lock:
            n = self._count
            self._count += 1
            if n < len(self.config.script):
                return self.config.script[n]
            if not self.config.rates:
                return None
            draw = self._rng.random()
            edge = 0.0
            for kind, rate in self.config.rates.items():
                edge += rate
                if draw < edge:
                    return kind
            return None

    def random(self) -> random.Random:
        """A generator for a body mutation, itself seeded from this injector's stream."""
        with self._lock:
            return random.Random(self._rng.getrandbits(64))


def retry_after_header(kind: str, seconds: float, now: float) -> str | None:
    """The Retry-After value a 429 fault carries: delay-seconds, an HTTP date, or none."""
    if kind == "429-retry-after":
        return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
    if kind == "429-retry-after-date":
        # An HTTP date has whole seconds; round up so the client never retries early.
        return formatdate(math.ceil(now + seconds), usegmt=True)
    return None


def mutate_items(
    kind: str, items: Sequence[Mapping[str, Any]], rng: random.Random
) -> list[dict[str, Any]]:
    """The ``data`` items of a 200 body, broken the way ``kind`` says (a new list; input untouched).

    Each item is ``{"object", "index", "embedding"}`` with the embedding a list of floats, a
    numpy vector, or a base64 string of little-endian float32.
    """
    out = [dict(item) for item in items]
    if kind == "shuffle":
        if len(out) > 1:
            order = list(range(len(out)))
            while order == sorted(order):
                rng.shuffle(order)
            out = [out[i] for i in order]
    elif kind == "missing-item":
        if out:
            del out[rng.randrange(len(out))]
    elif kind == "duplicate-index":
        if len(out) > 1:
            a, b = rng.sample(range(len(out)), 2)
            out[b]["index"] = out[a]["index"]
        elif out:
            out.append(dict(out[0]))
    elif kind == "wrong-dimension":
        if out:
            victim = out[rng.randrange(len(out))]
            vec = victim["embedding"]
            if isinstance(vec, str):
                victim["embedding"] = base64.b64encode(base64.b64decode(vec)[:-4]).decode("ascii")
            else:
                victim["embedding"] = vec[:-1]
    else:
        raise ValueError(f"{kind!r} is not an item fault")
    return out


def truncate_body(body: bytes) -> bytes:
    """A JSON body cut in half: what a "malformed-json" fault sends (never valid JSON)."""
    return body[: max(1, len(body) // 2)]
