"""The concurrency policy, pure: fed synthetic replies and round trips, and run in a simulation.

``simulate`` is a discrete-event model of the client (a gate that follows the policy's limit,
retries without backoff, once another request succeeded, when the policy says a refusal was
about concurrency, with a 1 s backoff otherwise) in front of a model server: a hard limit that refuses at once, or workers
with a queue. Time is simulated, so throughput here is a deterministic figure, not a timing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from aiml_bge_integrations._concurrency import (
    INITIAL_LIMIT,
    MAX_PROBE_INTERVAL,
    PROBE_INTERVAL,
    ConcurrencyPolicy,
    Flight,
)

LATENCY = 0.2
REFUSAL_RTT = 0.002
BACKOFF = 1.0


@dataclass
class Run:
    """What a simulated run came to."""

    seconds: float
    requests: int
    refusals: int
    peak_in_flight: int
    refused_at: list[float] = field(default_factory=list)
    trace: list[tuple[float, int]] = field(default_factory=list)
    """(time, limit) after every change."""

    @property
    def refused_share(self) -> float:
        return self.refusals / self.requests

    def limit_at(self, t: float) -> int:
        limit = self.trace[0][1]
        for when, value in self.trace:
            if when > t:
                break
            limit = value
        return limit


def simulate(
    policy: ConcurrencyPolicy,
    batches: int,
    *,
    capacity: Callable[[float], int] | None = None,
    workers: int | None = None,
    latency: float = LATENCY,
    jitter: float = 0.0,
    seed: int = 0,
    refusal_rtt: float = REFUSAL_RTT,
) -> Run:
    """Send ``batches`` requests through ``policy`` to a hard-limit or a queueing server."""
    rng = random.Random(seed)
    events: list[tuple[float, int, str, int]] = []
    counter = 0

    def at(t: float, kind: str, rid: int) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, rid))

    ready: deque[int] = deque(range(batches))
    # rid -> (sent at, others, its number among sends, others refused since, cuts then,
    # changes then, batch)
    in_flight: dict[int, tuple[float, int, int, int, int, int, int]] = {}
    server_busy = 0
    queue: deque[int] = deque()
    refused: set[int] = set()
    refused_at: list[float] = []
    parked: list[int] = []
    sent = requests = refusals = peak = done = 0
    trace = [(0.0, policy.limit)]
    now = 0.0
    next_rid = 0

    def service() -> float:
        return latency * (1.0 + jitter * rng.random())

    def dispatch() -> None:
        nonlocal sent, requests, refusals, server_busy, peak, next_rid
        while ready and len(in_flight) < policy.limit:
            batch = ready.popleft()
            rid, next_rid = next_rid, next_rid + 1
            sent += 1
            requests += 1
            in_flight[rid] = (now, len(in_flight), sent, 0, policy.cuts, policy.changes, batch)
            peak = max(peak, len(in_flight))
            if workers is not None:
                if server_busy < workers:
                    server_busy += 1
                    at(now + service(), "served", rid)
                else:
                    queue.append(rid)
            elif capacity is not None and server_busy >= capacity(now):
                refusals += 1
                refused_at.append(now)
                refused.add(rid)
                at(now + refusal_rtt, "reply", rid)
            else:
                server_busy += 1
                at(now + service(), "served", rid)

    dispatch()
    while events:
        now, _, kind, rid = heapq.heappop(events)
        if kind == "ready":
            ready.appendleft(rid)
        elif kind == "served":
            server_busy -= 1
            if queue:
                server_busy += 1
                at(now + service(), "served", queue.popleft())
            at(now, "reply", rid)
            continue
        else:
            sent_at, others, seq, others_refused, cuts, changes, batch = in_flight.pop(rid)
            flight = Flight(
                others, others + sent - seq, others_refused, len(in_flight), cuts, changes
            )
            if rid in refused:
                for later, (t, o, s, r, c, g, b) in in_flight.items():
                    if s > seq:  # this one was in flight when ``later`` was sent
                        in_flight[later] = (t, o, s, r + 1, c, g, b)
                if policy.on_refusal(flight):
                    parked.append(batch)
                else:
                    at(now + BACKOFF, "ready", batch)
            else:
                policy.on_success(now - sent_at, flight)
                done += 1
            if parked and (rid not in refused or not in_flight):
                # As the client: a refused request goes again once another one succeeded
                # (or none is left to wait for).
                ready.extendleft(reversed(parked))
                parked.clear()
            if policy.limit != trace[-1][1]:
                trace.append((now, policy.limit))
        dispatch()
    assert done == batches
    return Run(now, requests, refusals, peak, refused_at, trace)


def ideal_seconds(batches: int, level: int, latency: float = LATENCY) -> float:
    """A client tuned by hand: ``level`` in flight all the time, no refusal."""
    rounds = -(-batches // level)
    return rounds * latency


# -- the servers of issue 16 -------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "batches"), [(1, 120), (2, 200), (4, 160), (12, 300)])
def test_hard_limit_is_found_with_few_refusals(limit: int, batches: int) -> None:
    run = simulate(ConcurrencyPolicy(32), batches, capacity=lambda t: limit)
    ratio = ideal_seconds(batches, limit) / run.seconds
    print(
        f"limit {limit}: found {run.trace[-1][1]}, {ratio:.0%} of tuned, {run.refused_share:.1%} refused"
    )
    assert run.trace[-1][1] in (limit, limit + 1)  # at the limit, or probing just above it
    assert run.refused_share < 0.05
    assert ratio >= 0.85


def test_hard_limit_above_the_cap_stays_at_the_cap() -> None:
    run = simulate(ConcurrencyPolicy(8), 200, capacity=lambda t: 50)
    assert run.refusals == 0
    assert run.peak_in_flight == 8
    limits = [limit for _, limit in run.trace]
    assert limits == sorted(limits)
    assert limits[-1] == 8


@pytest.mark.parametrize("workers", [1, 2, 4, 6, 8, 16])
def test_queueing_server_gets_no_more_than_twice_its_workers(workers: int) -> None:
    batches = 40 * workers
    run = simulate(ConcurrencyPolicy(32), batches, workers=workers, jitter=0.05, seed=workers)
    ratio = ideal_seconds(batches, workers) / run.seconds
    print(f"{workers} workers: peak {run.peak_in_flight}, {ratio:.0%} of tuned")
    assert run.refusals == 0
    assert run.peak_in_flight <= max(2 * workers, INITIAL_LIMIT)
    assert ratio >= 0.85
    # Settled: the last limit is at or above the workers (no throughput left behind).
    assert workers <= run.trace[-1][1] <= 2 * workers


def test_queueing_server_with_noisy_round_trips() -> None:
    run = simulate(ConcurrencyPolicy(32), 400, workers=8, jitter=0.1, seed=3)
    assert run.peak_in_flight <= 16
    assert ideal_seconds(400, 8, LATENCY * 1.05) / run.seconds >= 0.85


def test_capacity_that_drops_and_recovers_is_followed() -> None:
    def capacity(t: float) -> int:
        return 4 if 3.0 <= t < 8.0 else 12

    run = simulate(ConcurrencyPolicy(32), 700, capacity=capacity, jitter=0.1, seed=1)
    print(run.trace)
    assert run.limit_at(2.9) in (12, 13)
    assert run.limit_at(7.9) in (4, 5)  # followed down
    assert run.limit_at(run.seconds) >= 11  # and back up
    assert run.refused_share < 0.05


class CountingPolicy(ConcurrencyPolicy):
    """The policy, counting its successes (a server's phases that follow the requests served)."""

    successes = 0

    def on_success(self, rtt: float, flight: Flight) -> bool:
        self.successes += 1
        return super().on_success(rtt, flight)


@pytest.mark.parametrize("seed", range(4))
def test_drop_from_12_to_4_costs_a_few_refusals(seed: int) -> None:
    # The benchmark's drop server: 12, then 4 from 30% of the requests served to 60%, then 12.
    policy = CountingPolicy(16)
    batches = 192

    dropped: list[float] = []

    def capacity(t: float) -> int:
        if 0.3 * batches <= policy.successes < 0.6 * batches:
            dropped.append(t)
            return 4
        return 12

    run = simulate(policy, batches, capacity=capacity, jitter=0.1, seed=seed)
    during = [when for when in run.refused_at if dropped[0] <= when < dropped[0] + 1.0]
    print(f"{run.refusals} refusals ({run.refused_share:.1%}), {len(during)} at the drop")
    # one per request the server admitted before the drop would be 8
    assert len(during) <= 6
    assert run.refused_share < 0.04
    assert run.limit_at(dropped[0] + 1.0) == 4
    assert run.limit_at(run.seconds) > 4  # and back up


@pytest.mark.parametrize(("limit", "overshoot"), [(4, 2), (12, 1)])
@pytest.mark.parametrize("refusal_rtt", [REFUSAL_RTT, 0.1])
def test_slow_start_overshoots_a_hard_limit_by_few_requests(
    limit: int, overshoot: int, refusal_rtt: float
) -> None:
    # A refusal read 0.1 s late is the sync client's under load: its threads are parsing the
    # round's replies. Steps clocked by any reply would take 12 to 16 meanwhile.
    run = simulate(
        ConcurrencyPolicy(16),
        400,
        capacity=lambda t: limit,
        jitter=0.1,
        seed=limit,
        refusal_rtt=refusal_rtt,
    )
    first = run.refused_at[0]
    burst = [when for when in run.refused_at if when < first + 0.3]
    # 4 -> 6 at once costs 2; doubling at once would cost 4 (8 -> 4, 16 -> 12)
    assert len(burst) <= overshoot
    assert run.trace[-1][1] in (limit, limit + 1)


def test_steady_state_does_not_oscillate() -> None:
    run = simulate(ConcurrencyPolicy(32), 1000, capacity=lambda t: 6)
    late = [limit for when, limit in run.trace if when > run.seconds / 2]
    # Past the start, the limit only ever probes one above the level and comes back.
    assert set(late) <= {6, 7}
    assert len(late) <= 8


# -- single decisions ----------------------------------------------------------------------------


def full(limit: int, changes: int = -1) -> Flight:
    """A reply of a request sent at ``limit`` (before any change, or after ``changes`` of them)."""
    return Flight(limit - 1, limit - 1, remaining=limit - 1, changes=changes)


def refused(k: int, cuts: int = 0, changes: int = -1) -> Flight:
    """A refusal sent with ``k`` others in flight, still ``k`` when it came back."""
    return Flight(k, k, remaining=k, cuts=cuts, changes=changes)


def test_starts_at_the_initial_limit_within_the_cap() -> None:
    assert ConcurrencyPolicy(32).limit == INITIAL_LIMIT
    assert ConcurrencyPolicy(3).limit == 3
    assert ConcurrencyPolicy(1).limit == 1


def test_slow_start_doubles_every_other_round_half_at_once_then_one_per_reply() -> None:
    policy = ConcurrencyPolicy(20)
    seen = []
    for _ in range(60):  # every reply is of a request sent since the last change
        policy.on_success(0.1, full(policy.limit, policy.changes))
        seen.append(policy.limit)
    # A round measured: up by half at its last reply, then one per reply to double; the round
    # of the change settles (it carries the old level), the next one measures.
    assert seen[:22] == [4, 4, 4, 6, 7] + [8] * 12 + [12, 13, 14, 15, 16]
    assert seen[-1] == policy.peak == 20
    assert all(b - a <= max(1, a // 2) for a, b in itertools.pairwise(seen))


def test_slow_start_steps_only_on_replies_sent_since_the_last_step() -> None:
    policy = ConcurrencyPolicy(32, initial=8)
    for _ in range(8):  # a round at 8 without a queue: up by half at once
        policy.on_success(0.1, full(8, policy.changes))
    assert policy.limit == 12
    before = policy.changes - 1
    for _ in range(7):  # the rest of the old level's replies, come together: no step
        policy.on_success(0.1, full(8, before))
    assert policy.limit == 12
    step = policy.changes
    policy.on_success(0.1, full(12, step))  # the first reply of a request sent at 12
    assert policy.limit == 13
    for _ in range(5):  # sent at 12, before the step to 13: they say nothing of 13
        policy.on_success(0.1, full(12, step))
    assert policy.limit == 13
    policy.on_success(0.1, full(13, policy.changes))
    assert policy.limit == 14


def test_one_slow_round_does_not_end_slow_start() -> None:
    policy = ConcurrencyPolicy(32)
    for rtt in (0.1, 0.2, 0.2, 0.2):  # a stalled round: a queue of 2 if it were the server's
        policy.on_success(rtt, full(4))
    assert policy.limit == 4
    for _ in range(4):  # a normal one: slow start goes on
        policy.on_success(0.1, full(4))
    assert (policy.limit, policy.reason) == (6, "slow start")


def test_two_slow_rounds_end_slow_start() -> None:
    policy = ConcurrencyPolicy(32)
    for rtt in (0.1, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15):  # a queue of one, twice
        policy.on_success(rtt, full(4))
    assert policy.limit == 5  # below alpha: growth by one, no longer by half


def test_no_growth_without_using_the_limit() -> None:
    policy = ConcurrencyPolicy(32)
    for _ in range(100):
        policy.on_success(0.1, Flight(0, 0))  # one request at a time
    assert policy.limit == INITIAL_LIMIT


def test_refusal_sets_the_limit_to_the_requests_still_in_flight() -> None:
    policy = ConcurrencyPolicy(32, initial=16)
    assert policy.on_refusal(Flight(5, 9, remaining=5)) is True
    assert policy.limit == 5
    assert "refused" in policy.reason
    policy.on_refusal(refused(9))  # a late reply to a request sent at a higher level
    assert policy.limit == 5


def test_refusal_counts_the_requests_in_flight_at_its_reply_not_at_its_sending() -> None:
    # The first burst: four requests race to the server, which holds two. The one refused
    # was sent second, but a request sent after it got there first.
    policy = ConcurrencyPolicy(32)
    policy.on_refusal(Flight(1, 3, remaining=3))  # three others out: two held, one refused
    assert policy.limit == 3
    policy.on_refusal(Flight(3, 3, 1, remaining=2))  # the other one refused: two held
    assert policy.limit == 2


def test_refusal_counts_the_requests_in_flight_at_its_sending_when_others_finished() -> None:
    # The end of a job: a probe refused with 12 in flight, 9 left by the time it came back.
    policy = ConcurrencyPolicy(32, initial=13)
    policy.on_refusal(Flight(12, 12, remaining=9))
    assert policy.limit == 12


def test_a_second_refusal_at_a_level_that_held_halves_the_limit() -> None:
    policy = ConcurrencyPolicy(12, initial=12)
    for _ in range(24):  # the limit holds: a round to settle, a round at its cap
        policy.on_success(0.1, full(12))
    held = policy.changes
    # One refusal: a request sent as the server was full, maybe; a step to what it held.
    policy.on_refusal(refused(11, changes=held))
    assert policy.limit == 11
    policy.on_refusal(refused(10, changes=held))  # another one sent at 12: the capacity fell
    assert policy.limit == 6
    assert "halved" in policy.reason
    policy.on_refusal(refused(9, changes=held))  # and another one: once is enough
    assert policy.limit == 6


def test_refusals_one_at_a_time_at_a_level_that_held_step_down() -> None:
    # A client a request above the server's capacity (its count includes replies not yet
    # read) sees a refusal now and then, each of a request sent at another level.
    policy = ConcurrencyPolicy(12, initial=12)
    for limit in (12, 11, 10):
        for _ in range(2 * limit):
            policy.on_success(0.1, full(limit))
        policy.on_refusal(refused(limit - 1, changes=policy.changes))
        assert policy.limit == limit - 1


def test_a_refusal_at_a_level_that_held_for_less_than_two_rounds_steps_down() -> None:
    policy = ConcurrencyPolicy(12, initial=12)
    for _ in range(23):  # a round to settle, and all but one reply of a round at 12
        policy.on_success(0.1, full(12))
    policy.on_refusal(refused(11, changes=policy.changes))
    assert policy.limit == 11


def test_a_second_refusal_within_a_round_of_a_cut_halves_the_limit() -> None:
    policy = ConcurrencyPolicy(12, initial=12)
    for _ in range(24):  # the limit holds: a round to settle, a round at its cap
        policy.on_success(0.1, full(12))
    policy.on_refusal(refused(11))  # sent before the last change: a cut to 11
    assert policy.limit == 11
    policy.on_refusal(refused(10, cuts=policy.cuts))  # sent after that cut, refused at once
    assert policy.limit == 5
    policy.on_refusal(refused(9, cuts=policy.cuts - 1))  # sent before it: nothing new
    assert policy.limit == 5
    for _ in range(5):  # a round of replies at 5
        policy.on_success(0.1, full(5))
    policy.on_refusal(refused(4, cuts=policy.cuts))  # after a round: the level, not a half
    assert policy.limit == 4


def test_refusals_just_after_growth_step_down_without_halving() -> None:
    policy = ConcurrencyPolicy(32, initial=8)
    for _ in range(8):  # a round at 8 without a queue: up by half
        policy.on_success(0.1, full(8))
    assert policy.limit == 12
    policy.on_refusal(refused(10))  # the server holds 8: the overshoot comes back
    policy.on_refusal(refused(9, cuts=policy.cuts))  # sent after that cut: still the overshoot
    assert policy.limit == 9
    policy.on_refusal(refused(8, cuts=policy.cuts))
    assert policy.limit == 8


def test_refusals_of_one_burst_step_down_without_halving() -> None:
    policy = ConcurrencyPolicy(32, initial=16)
    for k in (15, 14, 13, 12):  # all sent before the first cut, refused one after the other
        policy.on_refusal(refused(k))
    assert policy.limit == 12


def test_refusal_while_alone_is_not_about_concurrency() -> None:
    policy = ConcurrencyPolicy(32)
    assert policy.on_refusal(Flight(0, 0)) is False
    assert policy.limit == 1


def test_refusal_counts_requests_sent_after_it_when_none_were_before() -> None:
    policy = ConcurrencyPolicy(32)
    assert policy.on_refusal(Flight(0, 3, remaining=3)) is True
    assert policy.limit == 3


def test_probes_above_a_refused_level_grow_rarer() -> None:
    policy = ConcurrencyPolicy(32, initial=8)
    policy.on_refusal(refused(3))  # ceiling 3
    assert policy.limit == 3
    gaps = []
    successes = 0
    for _ in range(2000):
        policy.on_success(0.1, full(policy.limit))
        successes += 1
        if policy.limit == 4:  # a probe: the server refuses it
            policy.on_refusal(refused(3))
            gaps.append(successes)
            successes = 0
    assert gaps[0] >= PROBE_INTERVAL
    assert gaps == sorted(gaps)
    assert max(gaps) <= MAX_PROBE_INTERVAL + 3
    assert len(gaps) < 2000 * 0.05


def probe_goes_through(policy: ConcurrencyPolicy) -> None:
    """Successes at the refused level 3 up to a probe at 4, which the server serves."""
    for _ in range(PROBE_INTERVAL + 3):
        if policy.limit == 4:
            break
        policy.on_success(0.1, full(3))
    assert policy.limit == 4
    policy.on_success(0.1, Flight(3, 3, changes=policy.changes))


def test_a_probe_that_goes_through_grows_by_one_then_starts_slow_start_again() -> None:
    # Another tenant left: how much room it left, no reply says; slow start finds it in a
    # few rounds rather than one request a round, once two above the old level held a round.
    policy = ConcurrencyPolicy(32, initial=8)
    policy.on_refusal(refused(3))
    probe_goes_through(policy)
    seen = [policy.limit]
    for _ in range(40):
        policy.on_success(0.1, full(policy.limit, policy.changes))
        seen.append(policy.limit)
    steps = [b - a for a, b in itertools.pairwise(seen) if b != a]
    assert steps[:2] == [1, 1]  # 4 -> 5 -> 6: one a round
    assert max(steps) > 1  # then by half at once
    assert "slow start" in policy.reason


def test_a_probe_that_went_through_by_a_miscount_costs_one_refusal() -> None:
    # The probe found a place the client had not seen free; the server holds 3 as before.
    policy = ConcurrencyPolicy(32, initial=8)
    policy.on_refusal(refused(3))
    probe_goes_through(policy)
    while policy.limit == 4:
        policy.on_success(0.1, full(4, policy.changes))
    assert policy.limit == 5  # one more, not half of it
    policy.on_refusal(refused(3, changes=policy.changes))
    assert policy.limit == 3
    for _ in range(PROBE_INTERVAL - 1):  # and the next probe waits its interval again
        policy.on_success(0.1, full(policy.limit))
    assert policy.limit == 3


def test_slow_start_after_a_probe_stops_at_the_level_held_before_the_drop() -> None:
    policy = ConcurrencyPolicy(32, initial=11)
    policy.on_refusal(refused(10))  # the server holds 10
    for _ in range(20):  # 10 held for two rounds
        policy.on_success(0.1, full(10))
    # A burst of refusals read late: the first counts more in flight than the server held.
    held = policy.changes
    policy.on_refusal(refused(14, changes=held))
    policy.on_refusal(refused(13, changes=held))
    assert policy.limit == 5  # halved: the capacity fell
    policy.on_refusal(refused(3, cuts=policy.cuts))  # to 3 (another tenant came)
    assert policy.limit == 2
    for _ in range(8):  # back up to the refused level, one a round
        policy.on_success(0.1, full(policy.limit))
    assert policy.limit == 3
    probe_goes_through(policy)  # the tenant left
    seen = [policy.limit]
    for _ in range(PROBE_INTERVAL + 20):
        policy.on_success(0.1, full(policy.limit, policy.changes))
        seen.append(policy.limit)
    jumps = [(a, b) for a, b in itertools.pairwise(seen) if b > a + 1]
    # 4 -> 5 -> 6 one a round, then slow start up to 10 (the level that held), not up to 14
    assert jumps
    assert max(b for _, b in jumps) <= 10
    # there it waits for the next probe, as at any refused level: one request more, the probe
    # interval after the last one
    assert seen.index(11) >= PROBE_INTERVAL - 1
    assert set(seen[seen.index(10) : seen.index(11)]) == {10}
    assert max(seen) == 11
    assert policy.reason == "probing above the refused level"


def test_queueing_shrinks_to_what_is_served_plus_a_little() -> None:
    policy = ConcurrencyPolicy(32, initial=16)
    policy.on_success(0.1, full(16))  # the base round trip
    for _ in range(15):  # the rest of the first round
        policy.on_success(0.2, full(16))  # twice as long: half the requests wait
    assert policy.limit == 16  # one round could be a stall of the client's own
    for _ in range(16):
        policy.on_success(0.2, full(16))  # a second round in a row
    assert 8 <= policy.limit <= 12
    assert "queueing" in policy.reason


def test_one_slow_round_between_normal_ones_changes_nothing() -> None:
    policy = ConcurrencyPolicy(16, initial=16)  # at its cap: no growth to shift the rounds
    for _ in range(16):  # settle
        policy.on_success(0.1, full(16))
    for _ in range(10):
        for rtt in (0.3, 0.1):  # a stalled round, then a normal one, again and again
            for _ in range(16):
                policy.on_success(rtt, full(16))
    assert policy.limit == 16


def test_not_adaptive_keeps_the_limit() -> None:
    policy = ConcurrencyPolicy(6, adaptive=False)
    assert policy.limit == 6
    assert policy.on_refusal(refused(5)) is False
    for _ in range(50):
        assert policy.on_success(1.0, full(6)) is False
    assert (policy.limit, policy.peak) == (6, 6)


def test_limit_never_leaves_its_bounds() -> None:
    rng = random.Random(7)
    policy = ConcurrencyPolicy(10)
    for _ in range(5000):
        others = rng.randrange(0, policy.limit)
        flight = Flight(others, others + rng.randrange(0, 3))
        if rng.random() < 0.1:
            policy.on_refusal(flight)
        else:
            policy.on_success(rng.uniform(0.05, 0.5), flight)
        assert 1 <= policy.limit <= 10
    assert policy.peak <= 10


def test_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError):
        ConcurrencyPolicy(0)
