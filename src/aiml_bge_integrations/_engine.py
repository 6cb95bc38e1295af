"""The request loop, written once for both clients; it does no I/O.

``Engine.batch`` is a generator of steps: ``Wait`` (the client-side pace, or a backoff),
``Send`` (one HTTP request; the driver answers with a ``Reply`` or a ``Failure``) and, last,
``Done`` with the batch's vectors. The sync client drives it with ``send()`` and a blocking
wait, the async client with ``await send()`` and ``await sleep()``; every decision (what a
reply means, whether and when to retry, when to split a batch, what to count) is taken here
or in the pure modules it calls, so the two clients cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import _retry
from ._batching import (
    RequestPlan,
    apply_long_text_policy,
    check_texts,
    collect_texts,
    iter_checked_chunks,
    pack_batches,
    token_counts,
)
from ._constants import (
    DEFAULT_VECTOR_DIMENSION,
    REPLY_BYTES_PER_INPUT,
    REPLY_MARGIN,
    reply_bytes_per_number,
)
from ._discovery import ServerLimits, planning_note
from ._models import model_mismatch_message, policy_window, profile_for, same_model
from ._outcome import Context, Outcome, interpret, transport_outcome
from ._settings import int_at_least
from ._usage import RateLimiter, UsageCounter
from ._warnings import warn_user
from ._wire import ParsedEmbeddings, build_request_body
from .errors import APIConnectionError, APITimeoutError, ModelMismatchWarning

__all__ = ["Call", "Done", "Engine", "Failure", "Reply", "Send", "Step", "Wait"]

logger = logging.getLogger("aiml_bge_integrations")


@dataclass(frozen=True)
class Wait:
    """Wait ``seconds`` (a call stopped meanwhile may wake the wait early), then go on."""

    seconds: float


@dataclass(frozen=True)
class Send:
    """Send ``body``; answer with the ``Reply`` or the ``Failure``."""

    body: bytes
    timeout: float
    """Seconds the request may take, from sending to the reply's last byte."""
    limit: int
    """The most bytes a 200 reply may have (an error reply is cut at ``error_body_limit``)."""
    after: int | None = None
    """Take a slot only once the gate has seen more successes than this (see ``Tries.after``)."""
    attempt: AbstractContextManager[Any] | None = None
    """The attempt's span, when telemetry is on (entered by the driver around the send)."""


@dataclass(frozen=True)
class Done:
    """The batch's vectors, in order."""

    vectors: list[list[float]]


Step = Wait | Send | Done


@dataclass(frozen=True)
class Reply:
    """A reply that came whole (an error reply: up to its bound)."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    absorbed: int | None = None
    """The gate's verdict on a refusal (see ``Outcome.absorbed``)."""


@dataclass(frozen=True)
class Failure:
    """A request that got no usable reply: ``kind`` as ``transport_outcome`` takes it."""

    error: Exception
    kind: str


@dataclass
class Call:
    """State shared by the batches of one call."""

    deadline: _retry.Deadline
    deadline_seconds: float | None
    cancelled: threading.Event = field(default_factory=threading.Event)
    tally: CallTally | None = None
    """The call's telemetry, when it is on."""

    def attempt(
        self, texts: int, wait: float | None, cause: str | None
    ) -> AbstractContextManager[Any] | None:
        """The span of the next attempt (None without telemetry)."""
        return None if self.tally is None else self.tally.attempt(texts, wait, cause)


class CallTally(Protocol):
    """What the loop tells a call's telemetry (``_tally.Tally``)."""

    usage: UsageCounter

    def attempt(
        self, texts: int, wait: float | None, cause: str | None
    ) -> AbstractContextManager[Any]: ...

    def retry(self, cause: str) -> None: ...

    def reply(self, model: str | None, vectors: list[list[float]]) -> None: ...


class Engine:
    """The decisions of one client's requests, from its checked settings."""

    def __init__(
        self,
        ctx: Context,
        *,
        batch_size: int,
        long_text: str,
        encoding_format: str | None,
        query_instruction: str | None,
        timeout: float,
        document_instruction: str | None = None,
        input_types: tuple[str | None, str | None] = (None, None),
        allow_blank: bool = False,
        max_response_bytes: int | None,
        policy: _retry.RetryPolicy,
        rate_limiter: RateLimiter | None,
        usage: UsageCounter,
    ) -> None:
        self.ctx = ctx
        self._batch_size = batch_size
        self.long_text = long_text
        self.encoding_format = encoding_format
        self.query_instruction = query_instruction
        self.document_instruction = document_instruction
        self.input_types = input_types
        """The ``input_type`` field sent with queries, then with documents (None: not sent)."""
        self.allow_blank = allow_blank
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.policy = policy
        self.rate_limiter = rate_limiter
        self.usage = usage
        self.learned_batch_limit: int | None = None
        """The most inputs per request a server has said it takes."""
        self._model_checked = False
        self._model_lock = threading.Lock()
        self.served_model: str | None = None
        """The model the last reply named (None before any reply that names one)."""
        self.server_limits = ServerLimits()
        """What the server published about itself (``learn_server_limits``; empty until then)."""

    # -- texts and batches ----------------------------------------------------------------------
    # The long-text policy warns at the caller's call (its stacklevel counts on these methods
    # being called by the clients' public methods directly).

    def _as_documents(self, texts: list[str], offset: int = 0) -> list[str]:
        # The prefix is part of what the model reads, so the long-text policy counts it.
        if self.document_instruction:
            texts = [self.document_instruction + t for t in texts]
        return apply_long_text_policy(texts, self.ctx.model, self.long_text, offset)

    def documents(self, texts: object) -> list[str]:
        """``texts`` checked (all before anything is sent), with ``document_instruction`` in
        front, put to the long-text policy."""
        return self._as_documents(collect_texts(texts, allow_blank=self.allow_blank))

    def query(self, text: object) -> str:
        """A query checked, with ``query_instruction`` in front, put to the long-text policy."""
        query = (self.query_instruction or "") + check_texts([text], allow_blank=self.allow_blank)[
            0
        ]
        return apply_long_text_policy([query], self.ctx.model, self.long_text)[0]

    def chunks(self, texts: object, chunk_size: object) -> list[str]:
        """``documents(texts)`` once ``chunk_size`` is checked."""
        int_at_least(1)("chunk_size", chunk_size)
        return self._as_documents(collect_texts(texts, allow_blank=self.allow_blank))

    def batch_size(self) -> int:
        """``batch_size``, or the smaller limit a server has stated or published."""
        limits = (self.learned_batch_limit, self.server_limits.max_batch_size)
        return min([self._batch_size, *(n for n in limits if n)])

    def token_budget(self) -> int | None:
        """Tokens per request when the server published one (TEI's ``max_batch_tokens``)."""
        return self.server_limits.max_batch_tokens

    def input_window(self) -> int | None:
        """Tokens one input may take: the model's profile's window, else the server's."""
        profile = profile_for(self.ctx.model)
        if profile is not None and profile.max_tokens is not None:
            return profile.max_tokens
        return self.server_limits.max_input_tokens

    def learn_server_limits(self, limits: ServerLimits) -> None:
        """Plan the batches not yet cut within what the server published (see ``_discovery``)."""
        self.server_limits = limits
        logger.debug("%s: %s", self.ctx.base_url, limits.describe())
        note = planning_note(limits, self._batch_size, self.ctx.model, self.input_window())
        if note:
            logger.debug("%s: %s", self.ctx.base_url, note)

    def _packed(self, texts: list[str], offset: int) -> Iterator[tuple[int, list[str]]]:
        # Within the published token budget: every text counted once (exactly where the
        # package ships the model's tokenizer), one batch ahead of what is sent, as at most
        # its window, since the server cuts or refuses what is over it.
        budget = self.token_budget()
        assert budget is not None
        window = self.input_window()
        cap = min(budget, window) if window else budget
        counts: list[int] = []  # of texts[start : start + len(counts)]
        start = 0
        while start < len(texts):
            size = self.batch_size()
            if len(counts) < size:
                more = texts[start + len(counts) : start + size]
                counts.extend(min(n, cap) for n in token_counts(more, self.ctx.model, cap)[0])
            stop = pack_batches(counts[:size], size, budget)[0][1]
            yield offset + start, texts[start : start + stop]
            del counts[:stop]
            start += stop

    def batches(self, texts: list[str]) -> Iterator[tuple[int, list[str]]]:
        """``(offset, texts)`` of each request of one call over ``texts``."""
        return self.chunk_batches(texts, max(1, len(texts)))

    def chunk_batches(self, texts: list[str], chunk_size: int) -> Iterator[tuple[int, list[str]]]:
        """As ``batches``, over each run of ``chunk_size`` texts: no request straddles two."""
        # The size is read for every batch, so batches not yet cut follow a limit the server
        # stated meanwhile.
        for start in range(0, len(texts), chunk_size):
            end = min(start + chunk_size, len(texts))
            if self.token_budget() is not None:
                yield from self._packed(texts[start:end], start)
                continue
            first = start
            while first < end:
                stop = min(first + self.batch_size(), end)
                yield first, texts[first:stop]
                first = stop

    def stream_batches(
        self, texts: object, size: int | None = None
    ) -> Iterator[tuple[int, list[str]]]:
        """Batches (of ``size`` texts, else the batch size) read lazily from ``texts``, each
        checked just before it is sent."""
        for offset, chunk in iter_checked_chunks(
            texts, size or self.batch_size(), allow_blank=self.allow_blank
        ):
            documents = self._as_documents(chunk, offset)
            if size is None and self.token_budget() is not None:
                yield from self._packed(documents, offset)
            else:
                yield offset, documents

    # -- the loop ---------------------------------------------------------------------------

    def batch(
        self, texts: list[str], offset: int, call: Call, *, query: bool = False
    ) -> Generator[Step, Reply | Failure | None, None]:
        """The steps that embed ``texts`` (at ``offset`` in the call's input), ending in ``Done``.

        ``query``: the texts are queries (their side's ``input_type`` is sent), else documents.
        """
        vectors: list[list[float]] = []
        input_type = self.input_types[0 if query else 1]
        plan = RequestPlan(texts, offset, lambda: self.learned_batch_limit)
        for part_offset, part in plan:
            got = yield from self._attempts(part, part_offset, call, input_type)
            if got is None:
                plan.refused()
            else:
                vectors.extend(got)
        yield Done(vectors)

    def _attempts(
        self, texts: list[str], offset: int, call: Call, input_type: str | None = None
    ) -> Generator[Step, Reply | Failure | None, list[list[float]] | None]:
        """One request's vectors, retried as the policy says; ``None`` if the server refused its size."""
        body = build_request_body(self.ctx.model, texts, self.encoding_format, input_type)
        limit = self.reply_limit(len(texts))
        tries = _retry.Tries()
        waited: float | None = None
        cause: str | None = None
        while True:
            if self.rate_limiter is not None:
                pace = self.rate_limiter.reserve(self._tokens_for_limiter(texts))
                if pace > 0:
                    yield Wait(pace)
            self.check_call(call)
            timeout = self.request_timeout(call)
            attempt = call.attempt(len(texts), waited, cause)
            answer = yield Send(body, timeout, limit, tries.after, attempt)
            tries.after = None
            self._count(call, requests=1)
            outcome = self._outcome(answer, timeout, len(texts), offset)
            if outcome.parsed is not None:
                return self._accept(outcome.parsed, call)
            if outcome.split:
                self._count(call, splits=1)
                if outcome.batch_limit is not None:
                    self._learn_batch_limit(outcome.batch_limit)
                return None
            delay = _retry.next_delay(
                outcome, tries, self.policy, call.deadline, call.deadline_seconds
            )
            assert outcome.error is not None
            if call.cancelled.is_set():
                raise outcome.error
            self.usage.count_retry(outcome.cause)
            if call.tally is not None:
                call.tally.retry(outcome.cause)
            waited, cause = delay, outcome.cause
            logger.debug("retrying after %s in %.2fs", outcome.cause, delay)
            if delay > 0:  # none for a refusal the limit explains: that waits for a slot
                yield Wait(delay)
            if call.cancelled.is_set():
                raise outcome.error

    def _outcome(
        self, answer: Reply | Failure | None, timeout: float, count: int, offset: int
    ) -> Outcome:
        if isinstance(answer, Failure):
            return transport_outcome(self.ctx, answer.error, answer.kind, timeout)
        assert isinstance(answer, Reply), "a Send step is answered with a Reply or a Failure"
        outcome = interpret(self.ctx, answer.status, answer.headers, answer.content, count, offset)
        # A refusal the limit explains is retried without backoff, unless the server asked
        # for a wait (Retry-After), which is honoured.
        if answer.absorbed is not None and outcome.retry and outcome.retry_after is None:
            outcome.absorbed = answer.absorbed
        return outcome

    # -- what the loop asks --------------------------------------------------------------------

    def new_call(
        self,
        deadline: float | None,
        cancelled: threading.Event | None = None,
        tally: CallTally | None = None,
    ) -> Call:
        """A call with ``deadline`` seconds (None: none), stopped by ``cancelled`` if given."""
        self.ctx.key.get()  # an unpickled copy whose key was not found here says so, sending nothing
        return Call(_retry.Deadline(deadline), deadline, cancelled or threading.Event(), tally)

    def check_call(self, call: Call) -> None:
        """Raise instead of sending when the call has been given up or its deadline has passed."""
        if call.cancelled.is_set():
            raise stopped_error()
        if call.deadline.expired():
            raise APITimeoutError(f"deadline of {call.deadline_seconds}s for this call ran out")

    def request_timeout(self, call: Call) -> float:
        """Seconds the next request may take: ``timeout``, or what is left of the deadline."""
        left = call.deadline.remaining()
        return self.timeout if left is None else max(0.001, min(self.timeout, left))

    def reply_limit(self, count: int) -> int:
        """The most bytes a 200 reply to ``count`` inputs may have.

        ``max_response_bytes`` when set; else what ``count`` vectors of the model's dimension
        (``DEFAULT_VECTOR_DIMENSION`` where it is not known) take in the encoding asked for,
        with a margin.
        """
        if self.max_response_bytes is not None:
            return self.max_response_bytes
        dim = self.ctx.expected_dim or DEFAULT_VECTOR_DIMENSION
        per_vector = dim * reply_bytes_per_number(self.encoding_format) + REPLY_BYTES_PER_INPUT
        return count * per_vector + REPLY_MARGIN

    def _tokens_for_limiter(self, texts: list[str]) -> int:
        if self.rate_limiter is None or not self.rate_limiter.counts_tokens:
            return 0
        if policy_window(self.ctx.model) is not None:
            from .tokens import count_tokens_batch

            return sum(count_tokens_batch(texts))
        return sum(len(t) // 4 + 1 for t in texts)

    def _learn_batch_limit(self, limit: int) -> None:
        if self.learned_batch_limit is None or limit < self.learned_batch_limit:
            logger.info(
                "server accepts at most %d inputs per request; batches shrink to fit", limit
            )
            self.learned_batch_limit = limit

    def _count(self, call: Call, **deltas: int | float) -> None:
        self.usage.count(**deltas)
        if call.tally is not None:
            call.tally.usage.count(**deltas)

    def _accept(self, parsed: ParsedEmbeddings, call: Call) -> list[list[float]]:
        if parsed.model:
            self.served_model = parsed.model
            if not self._model_checked:
                self._check_reply_model(parsed.model)
        if call.tally is not None:
            call.tally.reply(parsed.model, parsed.vectors)
        u = parsed.usage
        self._count(
            call,
            texts=len(parsed.vectors),
            prompt_tokens=u.prompt_tokens,
            total_tokens=u.total_tokens,
            credits=u.credits,
            usd=u.usd,
        )
        return parsed.vectors

    def _check_reply_model(self, served: str) -> None:
        with self._model_lock:
            if self._model_checked:
                return
            self._model_checked = True
        if not same_model(served, self.ctx.model):
            message = model_mismatch_message(served, self.ctx.model, self.ctx.base_url)
            warn_user(message, ModelMismatchWarning)

    def after_fork(self) -> None:
        """In a forked child: fresh locks (another thread of the parent may have held one)."""
        self._model_lock = threading.Lock()


def stopped_error() -> APIConnectionError:
    """The error of a call given up while one of its requests waited or was under way."""
    return APIConnectionError(
        "not sent: this call was stopped (another of its requests failed, the caller "
        "stopped waiting, or the client was closed)"
    )
