"""LocalServer lifecycle, serve_main and ``python -m aiml_bge_integrations.server``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import LocalServer, ServerConfig, serve_main

MODEL = DEFAULT_MODEL


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}


Factory = Callable[..., LocalServer]


def test_start_stop_binds_loopback_and_frees_the_port() -> None:
    server = LocalServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.start()
    port = server.port
    assert server.base_url == f"http://127.0.0.1:{port}/v1"
    assert server.running
    assert server.start() is server  # idempotent
    with server.client() as client:
        assert client.post("/embeddings", json=embed_body("x")).status_code == 200
    server.stop()
    assert not server.running
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=False) as client:
        client.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_a_random_key_by_default_and_none_means_open_mode() -> None:
    a, b = LocalServer(), LocalServer()
    assert a.api_key and b.api_key and a.api_key != b.api_key
    assert a.api_key.startswith("local-") and len(a.api_key) > 20
    assert LocalServer(api_key=None).api_key is None
    assert LocalServer(api_key="mine").api_key == "mine"


def test_config_is_live(server_factory: Factory) -> None:
    server = server_factory()
    with server.client() as client:
        assert "meta" in client.post("/embeddings", json=embed_body("x")).json()
        server.config.dialect = "openai"
        assert list(client.post("/embeddings", json=embed_body("x")).json()) == [
            "object",
            "data",
            "model",
            "usage",
        ]
        server.config.max_items_per_request = 1
        assert client.post("/embeddings", json=embed_body(["a", "b"])).status_code == 413


@pytest.mark.parametrize(
    "kwargs",
    [{"dialect": "klingon"}, {"latency": -1}, {"max_items_per_request": 0}, {"api_key": "  "}],
)
def test_bad_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_serve_main_refuses_a_public_host_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIMLAPI_API_KEY", raising=False)
    assert serve_main(["--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without an API key" in err
    assert "$AIMLAPI_API_KEY" in err
    monkeypatch.setenv("OTHER_KEY_VAR", "")
    assert serve_main(["--host", "192.168.1.5", "--api-key-env", "OTHER_KEY_VAR"]) == 2
    assert "$OTHER_KEY_VAR" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--fault-rate", "418=0.5"],
        ["--fault-rate", "429=lots"],
        ["--dialect", "klingon"],
        ["--api-key", "x"],
    ],
)
def test_serve_main_rejects_bad_arguments(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(argv) == 2
    assert capsys.readouterr().err


def test_serve_main_reports_an_impossible_fault_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--port", "0", "--fault-rate", "429=0.8", "--fault-rate", "503=0.8"]) == 2
    assert "add up to" in capsys.readouterr().err


def test_python_dash_m_serves_with_the_key_from_the_environment() -> None:
    env = {**os.environ, "MY_TEST_KEY": "subprocess-key-42", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "aiml_bge_integrations.server",
            "--port", "0", "--api-key-env", "MY_TEST_KEY",
            "--max-items-per-request", "5", "--fault-script", "503,ok",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "STAND-IN with hashing vectors, NOT the real model" in line
        assert "$MY_TEST_KEY" in line and "'aiml' dialect" in line
        base_url = line.split(" at ", 1)[1].split(";", 1)[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with httpx.Client(base_url=base_url, timeout=10, verify=False) as client:
            assert client.post("/embeddings", json=embed_body("x")).status_code == 401
            auth = {"Authorization": "Bearer subprocess-key-42"}
            assert client.post("/embeddings", json=embed_body("x"), headers=auth).status_code == 503
            ok = client.post("/embeddings", json=embed_body("x"), headers=auth)
            assert ok.status_code == 200 and ok.json()["model"] == MODEL
            assert (
                client.get(base_url.removesuffix("/v1") + "/_info").json()["max_client_batch_size"]
                == 5
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode is not None
