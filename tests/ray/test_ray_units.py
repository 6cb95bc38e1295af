"""The Ray module without a Ray session: limit shares, refused settings, the public surface."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (extra [ray])")

import inspect

import aiml_bge_integrations.ray as ray_module
from aiml_bge_integrations.errors import ConfigurationError, MissingAPIKeyError
from aiml_bge_integrations.ray import BgeEmbedder, SyncBgeEmbedder, embed_dataset, split_limits


@pytest.mark.parametrize(
    ("actors", "cap", "rpm", "tpm"),
    [
        (4, 8, 600, 100_000),
        (3, 8, 100, None),
        (1, 5, None, 7.5),
        (6, 4, 60, 60),
        (7, 7, None, None),
    ],
)
def test_shares_never_add_up_to_more_than_the_limits(
    actors: int, cap: int, rpm: float | None, tpm: float | None
) -> None:
    share = split_limits(actors, cap, rpm, tpm)
    assert 1 <= share.actors <= actors
    assert share.max_concurrency >= 1
    assert share.actors * share.max_concurrency <= cap
    if rpm is None:
        assert share.requests_per_minute is None
    else:
        assert share.requests_per_minute is not None
        assert share.actors * share.requests_per_minute <= rpm * (1 + 1e-12)
    if tpm is not None:
        assert share.tokens_per_minute is not None
        assert share.actors * share.tokens_per_minute <= tpm * (1 + 1e-12)


def test_more_actors_than_slots_start_one_actor_per_slot() -> None:
    share = split_limits(6, 4)
    assert (share.actors, share.max_concurrency) == (4, 1)


@pytest.mark.parametrize(
    "bad", [{"actors": 0}, {"max_concurrency": 0}, {"requests_per_minute": -1.0}]
)
def test_bad_limits_are_refused(bad: dict[str, float]) -> None:
    args = {"actors": 2, "max_concurrency": 4, **bad}
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        split_limits(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["api_key", "http_client", "rate_limiter"])
def test_settings_that_cannot_travel_are_refused_before_ray_runs(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        embed_dataset(None, **{name: "sk-never-shipped"})  # type: ignore[arg-type]


def test_bad_client_settings_are_refused_on_the_driver() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        embed_dataset(None, timeout=-1)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [BgeEmbedder, SyncBgeEmbedder])
def test_an_actor_without_the_key_says_which_variable_to_set(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_BGE_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="MY_BGE_KEY"):
        cls(api_key_env="MY_BGE_KEY")


def test_public_names_are_documented() -> None:
    assert ray_module.__doc__
    for name in ray_module.__all__:
        obj = getattr(ray_module, name)
        assert inspect.getdoc(obj), name
