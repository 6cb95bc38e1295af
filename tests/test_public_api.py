"""The public surface: what ``__all__`` promises is what is importable and documented."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import aiml_bge_integrations

MODULES = [
    "aiml_bge_integrations",
    "aiml_bge_integrations.errors",
    "aiml_bge_integrations.client",
    "aiml_bge_integrations.tokens",
    "aiml_bge_integrations._wire",
    "aiml_bge_integrations._retry",
    "aiml_bge_integrations._batching",
    "aiml_bge_integrations._settings",
    "aiml_bge_integrations._models",
    "aiml_bge_integrations._discovery",
    "aiml_bge_integrations._adapter",
    "aiml_bge_integrations.langchain",
    "aiml_bge_integrations.llama_index",
    "aiml_bge_integrations.server",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported, f"{name} exports nothing"
    for public in exported:
        obj = getattr(module, public)
        if callable(obj) and not public.isupper():
            assert obj.__doc__, f"{name}.{public} has no docstring"


def test_package_exports_clients_errors_and_version() -> None:
    for public in (
        "EmbeddingsClient",
        "AsyncEmbeddingsClient",
        "Usage",
        "AimlBgeError",
        "__version__",
    ):
        assert public in aiml_bge_integrations.__all__
    public_names = {n for n in dir(aiml_bge_integrations) if not n.startswith("_")}
    # Submodules become package attributes once imported (by this or other tests).
    modules = {
        "client",
        "errors",
        "tokens",
        "langchain",
        "llama_index",
        "server",
        "cli",
        "demo",
        "demo_corpus",
        "ray",
    }
    assert public_names - modules - {"annotations"} <= set(aiml_bge_integrations.__all__)


def test_every_error_derives_from_the_root() -> None:
    from aiml_bge_integrations import errors

    for public in errors.__all__:
        obj = getattr(errors, public)
        if isinstance(obj, type):
            if issubclass(obj, Warning):  # warned, never raised
                continue
            assert issubclass(obj, errors.AimlBgeError), public


def test_import_loads_no_framework_or_server_stack() -> None:
    code = (
        "import sys, aiml_bge_integrations;"
        "heavy=[m for m in ('langchain_core','llama_index','starlette','uvicorn','numpy','tokenizers')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the package loaded: {out.stdout.strip()}"


def test_package_ships_typing_marker_and_vocabulary() -> None:
    from importlib import resources

    root = resources.files("aiml_bge_integrations")
    assert root.joinpath("py.typed").is_file()
    vocab = root.joinpath("bge_vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 30522 and vocab[101] == "[CLS]" and vocab[102] == "[SEP]"


def test_adapters_carry_every_core_setting() -> None:
    import inspect

    from aiml_bge_integrations._adapter import CORE_SETTINGS
    from aiml_bge_integrations.client import EmbeddingsClient

    core = set(inspect.signature(EmbeddingsClient.__init__).parameters)
    core -= {"self", "rate_limiter", "http_client"}
    assert set(CORE_SETTINGS) == core
