"""``aiml-bge demo`` end to end, and the ``serve`` delegation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cli_helpers import child_env, run_process

from aiml_bge_integrations.demo_corpus import QUERIES

# Loaded by the demo process at start-up: refuses (and records) any connection or name lookup
# that is not loopback, so "nothing leaves the machine" is checked, not assumed.
_GUARD = """
import ipaddress, os, socket

_LOG = os.environ["NET_GUARD_LOG"]

def _loopback(host):
    host = str(host).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False

def _refuse(what):
    with open(_LOG, "a") as f:
        f.write(what + "\\n")
    raise OSError("non-loopback network access refused by the test guard: " + what)

_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
_getaddrinfo = socket.getaddrinfo

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"connect {address!r}")
    return _connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"connect_ex {address!r}")
    return _connect_ex(self, address)

def sendto(self, data, *args):
    address = args[-1]
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"sendto {address!r}")
    return _sendto(self, data, *args)

def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host if isinstance(host, str) else host.decode()):
        _refuse(f"getaddrinfo {host!r}")
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto
socket.getaddrinfo = getaddrinfo
"""


def sections(out: str) -> dict[str, str]:
    parts = re.split(r"^== (\w+).*==$", out, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_demo_without_a_key_uses_the_local_server_and_finds_every_answer(
    tmp_path: Path,
) -> None:
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(_GUARD, encoding="utf-8")
    log = tmp_path / "refused.log"
    env = child_env(PYTHONPATH=str(guard_dir), NET_GUARD_LOG=str(log))
    proc = run_process(["demo"], env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not log.exists(), log.read_text()  # nothing tried to leave loopback

    out = proc.stdout
    assert "AIMLAPI_API_KEY is not set" in out
    assert "LOCAL STAND-IN" in out and "NOT from the BGE model" in out
    parts = sections(out)
    assert set(parts) == {"Core", "LangChain", "LlamaIndex"}
    for name, body in parts.items():
        assert "skipped" not in body, body
        for query, expected in QUERIES:
            if name == "Core":
                pattern = rf"Q: {re.escape(query)}\n  1\. {re.escape(expected)} .*?top passage: {re.escape(expected)} ok"
            else:
                pattern = rf"Q: {re.escape(query)}\n  top: {re.escape(expected)}[,\s].*ok"
            assert re.search(pattern, body, re.DOTALL), f"{name}: {query}\n{body}"
        assert re.search(rf"{len(QUERIES)}/{len(QUERIES)} queries answered", body), body
    core = parts["Core"]
    assert re.search(r"usage \d+ requests, [\d,]+ tokens, [\d,]+ credits; time [\d.]+ s", core)
    assert "demo finished in" in out


def test_demo_with_a_key_uses_the_configured_api(server_env: Any, run_cli: Any) -> None:
    result = run_cli("demo", "--top-k", "1")
    assert result.code == 0, result.err
    assert f"Using the API at {server_env.base_url}" in result.out
    assert "STAND-IN" not in result.out.split("== Core")[0]
    assert server_env.stats["requests"] > 0
    assert server_env.api_key not in result.out + result.err


def test_demo_with_a_retired_model_ends_with_one_line(
    make_server: Any, run_cli: Any, monkeypatch: Any
) -> None:
    server = make_server(served_models=["x/other"], retired_models=["BAAI/bge-base-en-v1.5"])
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", server.base_url)
    result = run_cli("demo")
    assert result.code == 4
    errors = [line for line in result.err.splitlines() if line.startswith("aiml-bge: error:")]
    # The server's own words, and what to do about them on this server.
    assert len(errors) == 1 and "deprecated" in errors[0] and "model=" in errors[0]


def test_serve_is_delegated_to_the_server(run_cli: Any) -> None:
    try:
        run_cli("serve", "--help")
    except SystemExit as exit_:  # pragma: no cover - serve_main returns the code itself
        assert exit_.code == 0
    result = run_cli("serve", "--port", "not-a-port")
    assert result.code == 2
    assert "aiml-bge serve" in result.err


def test_help_lists_the_commands(run_cli: Any) -> None:
    result = run_cli("--help")
    assert result.code == 0
    for command in ("embed", "demo", "serve"):
        assert command in result.out
    embed_help = run_cli("embed", "--help")
    assert embed_help.code == 0
    for flag in ("--model", "--base-url", "--batch-size", "--max-concurrency", "--long-text"):
        assert flag in embed_help.out
    assert "--api-key" not in embed_help.out
    assert run_cli().code == cli_usage_code()


def cli_usage_code() -> int:
    from aiml_bge_integrations.cli import EXIT_USAGE

    return EXIT_USAGE


def test_demo_runs_the_core_part_when_the_frameworks_are_missing(
    server_env: Any, run_cli: Any, monkeypatch: Any
) -> None:
    import sys

    # A None entry in sys.modules makes the import raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "langchain_core.vectorstores", None)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    result = run_cli("demo")
    assert result.code == 0, result.err
    parts = sections(result.out)
    assert f"{len(QUERIES)}/{len(QUERIES)} queries answered" in parts["Core"]
    assert "skipped: LangChain is not installed" in parts["LangChain"]
    assert "[langchain]" in parts["LangChain"]
    assert "skipped: LlamaIndex is not installed" in parts["LlamaIndex"]
    assert "[llama-index]" in parts["LlamaIndex"]
