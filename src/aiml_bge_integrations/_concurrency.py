"""Concurrency policy, pure: how many requests to keep in flight, from what the replies say.

The client owns the slots and the clock; every decision is made here, from two signals:

- Refusals (429, 503). A request refused while the server held ``k`` others says it holds
  at most ``k`` at once: the limit drops to ``k`` at once (not by halves). A second refusal
  of the requests sent at a limit that had held for two rounds says the capacity fell (another
  tenant arrived), by how much no reply says yet: the limit halves (as TCP's), and so does it
  at a second refusal of a request sent after a cut, before a round of replies at the new
  level (of a limit that had held for a round). One refusal alone can be a request sent as the
  server was full, the client counting replies it has not read yet. Following a drop then
  costs a few refusals, not one per request the server admitted before it. The level that was
  refused is probed again only after ``probe_interval`` successes, an interval that doubles
  after each probe the server refuses, so refusals stay a small share of requests.
- Queueing. A server that queues what it cannot serve (TEI, infinity) never refuses: the round
  trip grows while throughput does not. As in TCP Vegas, the base round trip is the shortest
  seen, and ``in_flight * (1 - base / rtt)`` estimates the requests waiting in the server's
  queue (``rtt`` a round's mean); when two rounds in a row find it above ``beta`` (or above
  the requests being served), the limit drops to those being served plus ``alpha``.

Without either signal the limit doubles every other round (slow start, as Vegas's: the round
after a change only settles): half the step at once, the rest one request per reply of a
request sent since the last step (a round's replies come together, and a refusal may be read
late while the client parses them), so a hard limit is overshot by a request rather than by
half the level. Slow start ends at a refusal, or at the second round that finds a queue of
one (one slow round can be a stall of the client's own); then the limit grows by one a round
(by one probe, above a refused level; after a probe goes through, by one a round, and by
slow start again once two above the refused level held for a round). A
round is as many replies as the limit; growth needs the round to have used the limit (all but
one request of it, or four fifths, on average), so a client that sends one request at a time
never talks itself into a high limit.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass

__all__ = [
    "INITIAL_LIMIT",
    "MAX_PROBE_INTERVAL",
    "PROBE_INTERVAL",
    "ConcurrencyPolicy",
    "Flight",
    "Flights",
    "Limiter",
    "Ticket",
]

logger = logging.getLogger("aiml_bge_integrations")

INITIAL_LIMIT = 4
"""Requests in flight before the server has said anything (capped by ``max_limit``)."""
PROBE_INTERVAL = 64
"""Successes after a refusal before one request is tried above the refused level."""
MAX_PROBE_INTERVAL = 256
"""The longest probe interval: each probe the server refuses doubles it, up to this."""


@dataclass(frozen=True)
class Flight:
    """What the client saw of the other requests while one request was in flight."""

    others: int
    """Other requests in flight when this one was sent."""
    overlapped: int
    """Other requests in flight at any moment of this one's flight (``others`` and later ones)."""
    refused: int = 0
    """Of ``others``, those refused before this one's reply came: the server never held them."""
    remaining: int = 0
    """Other requests still in flight when this one's reply came."""
    cuts: int = 0
    """The policy's ``cuts`` when this request was sent."""
    changes: int = 0
    """The policy's ``changes`` when this request was sent."""


def _thresholds(limit: int) -> tuple[float, float]:
    # Queue sizes to grow below and to shrink above (as Netflix's Vegas limiter): a few
    # requests of queue are allowed, more at higher limits, never zero.
    scale = math.log10(max(limit, 2))
    return 3.0 * scale, 6.0 * scale


class ConcurrencyPolicy:
    """The limit on requests in flight, adjusted after every reply; not thread-safe (callers lock).

    ``adaptive=False`` keeps the limit at ``max_limit`` whatever happens.
    """

    def __init__(
        self,
        max_limit: int,
        *,
        adaptive: bool = True,
        initial: int = INITIAL_LIMIT,
        probe_interval: int = PROBE_INTERVAL,
        max_probe_interval: int = MAX_PROBE_INTERVAL,
    ) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be at least 1")
        self.max_limit = max_limit
        """The limit never goes above this."""
        self.adaptive = adaptive
        """False: the limit stays at ``max_limit``."""
        self.limit = min(max(1, initial), max_limit) if adaptive else max_limit
        """Requests allowed in flight now."""
        self.peak = self.limit
        """The highest limit so far."""
        self.reason = "start"
        """Why the limit last changed (for logs)."""
        self._base_interval = probe_interval
        self._max_interval = max_probe_interval
        self._probe_interval = probe_interval
        self._since_probe = 0
        self.cuts = 0
        """Cuts made on refusals so far (a request records it when sent; see ``Flight.cuts``)."""
        self.changes = 0
        """Changes of the limit so far (a request records it when sent; see ``Flight.changes``)."""
        self._since_cut = 0
        self._since_growth = 0
        self._since_change = 0
        self._slow_start = True
        self._slow_rounds = 0
        self._ramp_to = 0
        self._ceiling: int | None = None
        self._before_drop = 0  # the limit that had held when the capacity last fell
        self._held_epoch: int | None = None  # ``changes`` of a held level refused once
        self._resume_above = 0  # after a probe went through: slow start again from this limit
        self._held_limit = 0
        self._probing = False
        self._base_rtt = math.inf
        self._queued_rounds = 0
        self._new_round()

    def _new_round(self, settle: bool = False) -> None:
        self._settle = settle
        if settle:
            self._queued_rounds = 0
        self._round_size = self.limit
        self._round_rtts: list[float] = []
        self._round_used = 0

    def _set(self, limit: int, reason: str) -> bool:
        limit = max(1, min(limit, self.max_limit))
        self._ramp_to = 0
        changed = limit != self.limit
        if limit > self.limit:
            self._since_growth = 0
        if changed:
            self.limit, self.reason = limit, reason
            self.peak = max(self.peak, limit)
            self.changes += 1
            self._since_change = 0
        # The round after a change still carries the old level's queue; the one after it tells.
        self._new_round(settle=changed)
        return changed

    def on_success(self, rtt: float, flight: Flight) -> bool:
        """A reply that was not a refusal came ``rtt`` seconds after sending; True if the limit changed."""
        if not self.adaptive:
            return False
        self._base_rtt = min(self._base_rtt, rtt)
        self._since_probe += 1
        self._since_cut += 1
        self._since_growth += 1
        self._since_change += 1
        self._round_rtts.append(rtt)
        # In flight with it: those sent before it, and after it up to the limit (a burst's
        # first requests went out alone only by a hair).
        self._round_used += min(flight.overlapped, self.limit - 1) + 1
        ramped = self.limit < self._ramp_to and flight.changes == self.changes
        if ramped:
            # Slow start's doubling is clocked by replies, one request more per reply of a
            # request sent since the last step: a round's replies come together, and those
            # sent before a step say nothing of the level it reached, so a hard limit is
            # overshot by a request, not by the rest of the doubling.
            self.limit += 1
            self.peak = max(self.peak, self.limit)
            self.changes += 1
            self._since_growth = self._since_change = 0
        if self._probing and self._ceiling is not None and flight.others >= self._ceiling:
            # A request above the refused level went through: the server may take more now
            # (another tenant left), or that request found a place the client had not yet
            # seen free (it counts replies it has not read): grow by one a round, and once the
            # limit holds two above the old level, slow start (see ``_end_round``).
            self._resume_above = self._ceiling + 2
            self._ceiling, self._probing = None, False
            self._probe_interval = self._base_interval
        if len(self._round_rtts) < self._round_size:
            return ramped
        return self._end_round() or ramped

    def _end_round(self) -> bool:
        if self._settle:
            self._new_round()
            return False
        # The mean, as Little's law has it (in flight = throughput x mean round trip): with N
        # workers, some requests find one free and some wait a whole turn, and the median
        # would see only the first.
        rtt, base = statistics.fmean(self._round_rtts), self._base_rtt
        used = self._round_used / len(self._round_rtts)  # requests in flight, on average
        queue = used * (1.0 - base / rtt) if rtt > 0 else 0.0
        served = used - queue
        alpha, beta = _thresholds(self.limit)
        # Above beta, or more waiting than being served (the round trip doubled): too many,
        # once two rounds in a row say so (one can be a stall of the client's own).
        self._queued_rounds = self._queued_rounds + 1 if queue > min(beta, served) else 0
        if self._queued_rounds >= 2:
            self._slow_start = False
            return self._set(
                min(self.limit - 1, math.floor(served + alpha)),
                f"queueing: round trip {rtt * 1000:.0f} ms, {base * 1000:.0f} ms at best",
            )
        if used < max(0.8 * self.limit, self.limit - 1):  # the limit did not hold the client back
            self._new_round()
            return False
        if self._slow_start and self._ceiling is not None and self.limit >= self._ceiling:
            self._slow_start = False  # back at a level refused before: probe above it
        if self._slow_start:
            if queue < 1.0:
                # Half the step at once (the replies of a round come together: the other
                # half waits for the next ones), the rest one request per reply.
                target = min(2 * self.limit, self.max_limit, self._ceiling or self.max_limit)
                changed = self._set(min(self.limit + self.limit // 2, target), "slow start")
                self._ramp_to = target
                return changed
            self._slow_rounds += 1
            if self._slow_rounds < 2:  # one slow round can be a stall of the client's own
                self._new_round()
                return False
            self._slow_start = False
        if queue <= alpha:
            if self._resume_above and self.limit >= self._resume_above:
                # Two above the refused level for a round: the server does take more now, how
                # much more no reply says. Slow start again, up to the limit that had held
                # before the capacity fell (as TCP's ssthresh), to be probed above as a refused
                # level. (Not the highest refused level: a burst of refusals read late counts
                # more requests in flight than the server held.)
                self._resume_above = 0
                self._slow_start, self._slow_rounds = True, 0
                if self._before_drop > self.limit:
                    self._ceiling = self._before_drop
            if self._ceiling is None or self.limit < self._ceiling:
                return self._set(self.limit + 1, "no queue, no refusal")
            if self.limit >= self._ceiling and self._since_probe >= self._probe_interval:
                self._probing, self._since_probe = True, 0
                return self._set(self.limit + 1, "probing above the refused level")
        self._new_round()
        return False

    def on_refusal(self, flight: Flight) -> bool:
        """A 429 or 503 came back; True if it is explained by concurrency (retry without backoff).

        A request refused while nothing else was in flight is not about concurrency (a rate
        limit, an outage): the usual backoff applies.
        """
        if not self.adaptive:
            return False
        # What the server held when it refused this one, counted two ways, each of which can
        # fall short: the requests in flight when it was sent, less those refused since (a
        # request sent later may reach the server first, notably on new connections); the
        # requests still in flight when its reply came (some may have finished meanwhile).
        k = max(1, flight.others - flight.refused, flight.remaining)
        level, reason = k, f"refused with {k} other request(s) in flight"
        after_cut = self.cuts and flight.cuts == self.cuts and self._since_cut < self.limit
        if self._held_epoch == flight.changes:
            # The second refusal of requests sent at a level that had held: the capacity fell,
            # by how much no reply says yet (the requests the server admitted before still
            # finish). Halve, as TCP does on a loss, rather than step down one refusal at a
            # time; once.
            level, reason = (
                min(k, self._held_limit // 2),
                f"refused twice at a level that had held ({k} in flight): halved",
            )
            self._before_drop, self._held_epoch = self._held_limit, None
        elif flight.changes == self.changes and self._since_change >= 2 * self.limit:
            # Refused at a level that had held for two rounds. One refusal can be a request
            # sent as the server was full, the client counting replies not yet read: a step to
            # ``k``. A second one of the requests sent at that level says the capacity fell.
            self._held_epoch, self._held_limit = flight.changes, self.limit
        elif after_cut and self._since_growth >= self.limit:
            # Sent after the last cut and refused before a round of replies at the new level,
            # the limit having held for a round before: the capacity fell well below it.
            # Halve (as TCP does, once a round) rather than step down one refusal at a time
            # while the requests the server admitted before the drop finish. Refusals of
            # requests sent before the cut bring the limit down to their own ``k`` only (they
            # were sent at the old level), and so do those of a limit that just grew past the
            # capacity (its overshoot is a few requests).
            level, reason = (
                min(k, self.limit // 2),
                f"refused again within a round ({k} in flight): halved",
            )
        if self._probing:
            self._probing = False
            if self._ceiling is not None and flight.others >= self._ceiling:
                self._probe_interval = min(2 * self._probe_interval, self._max_interval)
        self._ceiling = k if self._ceiling is None else min(self._ceiling, k)
        self._resume_above = 0
        self._slow_start = False
        self._since_probe = 0
        if level < self.limit:
            self.cuts += 1
            self._since_cut = 0
            self._set(level, reason)
        return flight.overlapped > 0


# -- the bookkeeping a client keeps around the policy (no I/O: a lock and a clock) ---------------


@dataclass
class Ticket:
    """One request's place in a gate, from sending until its reply's headers arrive."""

    sent_at: float
    others: int
    """Requests in flight through the gate when this one was sent."""
    sent: int
    """This request's number among the gate's sends."""
    cuts: int
    """The limiter's cuts when this one was sent (see ``Flight.cuts``)."""
    changes: int
    """The limiter's changes of the limit when this one was sent (see ``Flight.changes``)."""
    others_refused: int = 0
    """Of ``others``, those refused since: the server was not holding them."""


class Limiter:
    """A client's concurrency policy behind a lock, shared by all its gates; logs changes."""

    def __init__(self, max_concurrency: int, adaptive: bool) -> None:
        self._policy = ConcurrencyPolicy(max_concurrency, adaptive=adaptive)
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return self._policy.limit

    @property
    def peak(self) -> int:
        """The highest limit so far."""
        return self._policy.peak

    @property
    def cuts(self) -> int:
        """The policy's cuts on refusals so far."""
        return self._policy.cuts

    @property
    def changes(self) -> int:
        """The policy's changes of the limit so far."""
        return self._policy.changes

    def record(self, status: int | None, rtt: float, flight: Flight) -> bool:
        """Feed one reply (``None``: none came) to the policy; True for a refusal it explains."""
        if status is None:
            return False
        with self._lock:
            before = self._policy.limit
            if status in (429, 503):
                absorbed = self._policy.on_refusal(flight)
            else:
                absorbed = False
                self._policy.on_success(rtt, flight)
            after, reason = self._policy.limit, self._policy.reason
        if after != before:
            logger.debug("concurrency limit %d -> %d: %s", before, after, reason)
        return absorbed


class Flights:
    """The requests in flight through one gate, against the shared limit (the gate locks)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.sent = 0
        self.successes = 0
        self.open: list[Ticket] = []
        self._released = 0  # the success that last let a refused request go again

    @property
    def in_flight(self) -> int:
        """Requests sent through this gate whose reply's headers have not come yet."""
        return len(self.open)

    def take(self, after: int | None) -> Ticket | None:
        """A ticket to send now, or None: the limit is reached (or, for a refused request
        going again after ``after`` successes, no success has made room yet)."""
        if self.in_flight >= self.limiter.limit:
            return None
        if after is not None and self.in_flight > 0:
            # One refused request goes again per success: the server just made room for one.
            if self.successes <= max(after, self._released):
                return None
            self._released = self.successes
        self.sent += 1
        ticket = Ticket(
            time.monotonic(), self.in_flight, self.sent, self.limiter.cuts, self.limiter.changes
        )
        self.open.append(ticket)
        return ticket

    def give_back(self, ticket: Ticket, status: int | None) -> int | None:
        """Close ``ticket`` with its reply's status (None: no reply); for a refusal the limit
        explains, the success count the retry must wait past."""
        self.open.remove(ticket)
        flight = Flight(
            ticket.others,
            ticket.others + self.sent - ticket.sent,
            ticket.others_refused,
            self.in_flight,
            ticket.cuts,
            ticket.changes,
        )
        absorbed = self.limiter.record(status, time.monotonic() - ticket.sent_at, flight)
        if status in (429, 503):
            for later in self.open:
                if later.sent > ticket.sent:
                    later.others_refused += 1
        elif status is not None:
            self.successes += 1
        return self.successes if absorbed else None
