"""What the package ships (the AI/ML dialect only) and the seam tests use to plug in others."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from aiml_bge_integrations import DEFAULT_MODEL
from aiml_bge_integrations.server import (
    AimlDialect,
    LocalServer,
    ServerConfig,
    dialect_names,
    register_dialect,
    serve_main,
)
from aiml_bge_integrations.server.dialects import Context, Reply


class TeapotDialect(AimlDialect):
    """A made-up server that answers an unknown model with 418 and a plain-text body."""

    name: ClassVar[str] = "teapot-test-only"

    def unknown_model(self, model: str, ctx: Context) -> Reply:
        return Reply(418, f"no {model} here".encode(), media_type="text/plain; charset=utf-8")


def test_a_fresh_interpreter_knows_only_the_aiml_dialect() -> None:
    # In a fresh process nothing from tests/ is registered: this is what the wheel ships.
    code = (
        "import aiml_bge_integrations.server as s, aiml_bge_integrations.server.dialects as d; "
        "print(s.dialect_names()); "
        "print(sorted(n for n in dir(d) if n.endswith('Dialect')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == ["('aiml',)", "['AimlDialect', 'Dialect']"]


def test_serve_in_a_fresh_interpreter_refuses_a_test_only_dialect() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aiml_bge_integrations.server", "--port", "0", "--dialect", "tei"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'tei'" in proc.stderr


def test_a_dialect_object_plugs_in_without_registration() -> None:
    teapot = TeapotDialect()
    assert teapot.name not in dialect_names()
    with LocalServer(dialect=teapot) as server, server.client() as client:
        ok = client.post("/embeddings", json={"model": DEFAULT_MODEL, "input": "x"})
        refused = client.post("/embeddings", json={"model": "nope", "input": "x"})
        info = client.get(server.root_url + "/_info").json()
    assert ok.status_code == 200 and "meta" in ok.json()  # everything else is inherited
    assert (refused.status_code, refused.text) == (418, "no nope here")
    assert info["dialect"] == "teapot-test-only"
    assert "teapot-test-only" in repr(server)


def test_a_registered_dialect_is_selectable_by_name() -> None:
    class Registered(TeapotDialect):
        name: ClassVar[str] = "registered-test-only"

    dialect = Registered()
    register_dialect(dialect)
    register_dialect(dialect)  # the same object again is a no-op
    assert "registered-test-only" in dialect_names()
    assert dialect_names()[0] == "aiml"
    with LocalServer(dialect="registered-test-only") as server, server.client() as client:
        refused = client.post("/embeddings", json={"model": "nope", "input": "x"})
    assert refused.status_code == 418
    # A second, different dialect under a taken name is refused: names stay unambiguous.
    with pytest.raises(ValueError, match="already registered"):
        register_dialect(Registered())
    with pytest.raises(ValueError, match="already registered"):
        register_dialect(AimlDialect())


def test_register_dialect_refuses_what_is_not_a_named_dialect() -> None:
    class Nameless(AimlDialect):
        name: ClassVar[str] = ""

    with pytest.raises(TypeError, match="Dialect"):
        register_dialect("tei")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        register_dialect(Nameless())


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown dialect 'klingon'; choose one of aiml"):
        ServerConfig(dialect="klingon")


def test_serve_offers_the_registered_dialects(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "--dialect {aiml," in shown  # the shipped one first, then what tests registered
    assert "--max-client-batch-size" not in shown  # a TEI setting: it left with TEI
