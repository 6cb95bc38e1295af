"""The soak: 2,000 texts at max_concurrency=8 through about 20% mixed injected faults.

Runs ``run_soak`` from benchmarks/soak.py (the same code the 20,000-text benchmark runs) with
the backoff delays recorded instead of slept. Every vector must be exactly the fault-free
server's, in order, and the request count must stay within what the retry settings allow.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiml_bge_integrations._retry import MAX_VALIDATION_RETRIES
from aiml_bge_integrations.server import FAULT_KINDS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
TEXTS = 2000


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiml_bge_soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_fault_mix_covers_every_kind_at_about_20_percent(soak: ModuleType) -> None:
    assert set(soak.FAULT_RATES) == set(FAULT_KINDS) == set(soak.CAUSE_OF_FAULT)
    assert sum(soak.FAULT_RATES.values()) == pytest.approx(0.20)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_soak_2000_texts_through_20_percent_faults(mode: str, soak: ModuleType) -> None:
    settings: dict[str, Any] = {"max_concurrency": 8, "batch_size": 32, "max_retries": 8}
    report = soak.run_soak(TEXTS, mode=mode, real_sleep=False, **settings)

    # Every text got exactly the fault-free server's vector, in order.
    assert report["vectors_returned"] == TEXTS
    assert report["vectors_exact"] == TEXTS
    assert report["max_abs_diff_vs_float64"] < 1e-6  # and that is the stand-in within float32

    # The faults really happened, of several kinds.
    faults = report["faults_injected"]
    assert sum(faults.values()) >= 3 and len(faults) >= 2

    # Request count within the bound the settings allow, and every retry accounted for.
    batches = math.ceil(TEXTS / settings["batch_size"])
    bound = batches * (1 + settings["max_retries"] + MAX_VALIDATION_RETRIES)
    requests = report["requests_sent"]
    assert batches <= requests <= bound
    assert requests == report["requests_at_server"] == batches + report["retries"]
    assert report["splits"] == 0

    # Each injected fault caused exactly one retry of its cause (a healthy reply delayed past
    # the 3 s timeout on a very busy machine would add a "timeout" retry, so that one is >=).
    got = dict(report["retries_by_cause"])
    want = dict(report["retries_expected_by_cause"])
    assert got.pop("timeout", 0) >= want.pop("timeout", 0)
    assert got == want
