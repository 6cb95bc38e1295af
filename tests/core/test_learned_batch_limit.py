"""A batch limit the server states is applied by re-planning, not recursion (issue 13.2).

The local server's ``max_items_per_request`` refuses a larger request with 413 naming the
limit. Once the client knows it, the batches not yet sent are cut at the limit; ``splits``
counts only the requests the server actually refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import MODES, assert_close_to_embedder, run_embed, texts_of

from aiml_bge_integrations._batching import RequestPlan


@pytest.mark.parametrize("mode", MODES)
def test_a_limit_of_one_works_for_any_batch_size(mode: str, serve: Any) -> None:
    server = serve(max_items_per_request=1)
    texts = texts_of(700)
    outcome = run_embed(mode, server, texts, batch_size=600, max_concurrency=2)
    assert outcome.error is None, repr(outcome.error)
    assert outcome.vectors is not None and len(outcome.vectors) == len(texts)
    assert_close_to_embedder(outcome.vectors, texts)
    refused = server.stats.by_status.get("413", 0)
    assert refused >= 1
    assert outcome.usage.splits == refused
    # Every text once, plus the refused requests: nothing billed twice.
    assert server.stats.requests == len(texts) + refused


@pytest.mark.parametrize("mode", MODES)
def test_splits_count_the_requests_the_server_refused(mode: str, serve: Any) -> None:
    server = serve(max_items_per_request=3)
    texts = texts_of(600)
    outcome = run_embed(mode, server, texts, batch_size=128, max_concurrency=2)
    assert outcome.error is None, repr(outcome.error)
    assert outcome.vectors is not None
    assert_close_to_embedder(outcome.vectors, texts)
    refused = server.stats.by_status.get("413", 0)
    # The requests in flight when the limit was learned are refused; every later batch is
    # planned at the limit and accepted.
    assert 1 <= refused <= 2 * 2
    assert outcome.usage.splits == refused


def test_plan_cuts_at_a_limit_learned_meanwhile() -> None:
    limit: list[int | None] = [None]
    plan = RequestPlan([f"t{i}" for i in range(10)], 100, lambda: limit[0])
    assert next(plan) == (100, [f"t{i}" for i in range(10)])
    limit[0] = 4
    plan.refused()
    parts = list(plan)
    assert parts == [
        (100, ["t0", "t1", "t2", "t3"]),
        (104, ["t4", "t5", "t6", "t7"]),
        (108, ["t8", "t9"]),
    ]


def test_plan_halves_a_refused_request_when_no_limit_is_stated() -> None:
    plan = RequestPlan(list("abcde"), 0, lambda: None)
    assert next(plan) == (0, list("abcde"))
    plan.refused()
    assert next(plan) == (0, ["a", "b"])
    plan.refused()
    assert next(plan) == (0, ["a"])
    assert list(plan) == [(1, ["b"]), (2, ["c", "d", "e"])]


def test_plan_of_thousands_at_a_limit_of_one_needs_no_recursion() -> None:
    plan = RequestPlan([str(i) for i in range(5000)], 0, lambda: 1)
    parts = list(plan)
    assert [offset for offset, _ in parts] == list(range(5000))
    assert all(len(texts) == 1 for _, texts in parts)


def test_plan_refuses_to_cut_a_single_text() -> None:
    plan = RequestPlan(["only"], 7, lambda: None)
    next(plan)
    with pytest.raises(ValueError, match="index 7"):
        plan.refused()
