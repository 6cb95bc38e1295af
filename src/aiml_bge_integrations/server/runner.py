"""Running the local server: ``LocalServer`` in a thread for tests, ``serve_main`` for the CLI.

Both run uvicorn on a socket this module binds itself, so the port is known before the first
request. Both say plainly that the vectors come from the hashing stand-in, not from BGE.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import httpx
import uvicorn

from .._settings import API_KEY_ENV, DEFAULT_MODEL
from .app import DEFAULT_MAX_CONNECTIONS, ServerConfig, create_app
from .dialects import Dialect, dialect_names
from .faults import FAULT_KINDS, FaultConfig
from .stats import ServerStats

__all__ = ["LocalServer", "serve_main", "startup_line"]

logger = logging.getLogger(__name__)

_GENERATE: Any = object()


class _Default(enum.Enum):
    SERVER_KEY = "server key"


_SERVER_KEY: Literal[_Default.SERVER_KEY] = _Default.SERVER_KEY
_DROP_MESSAGE = "ASGI callable returned without completing response."


class _QuietDrops(logging.Filter):
    """Hide uvicorn's error line for the connections the "drop" fault breaks on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DROP_MESSAGE


_quiet_drops = _QuietDrops()


def _install_log_filter() -> None:
    log = logging.getLogger("uvicorn.error")
    if _quiet_drops not in log.filters:
        log.addFilter(_quiet_drops)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listen now: a client that read the start-up line may connect before uvicorn runs;
        # the kernel queues it until uvicorn accepts.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn_limit(config: ServerConfig) -> int:
    # uvicorn answers 503 once its connection count *reaches* ``limit_concurrency``, the
    # connection asking included: one more serves exactly ``max_connections`` connections.
    return config.max_connections + 1


def _dialect_name(dialect: str | Dialect) -> str:
    return dialect if isinstance(dialect, str) else dialect.name


def startup_line(config: ServerConfig, url: str, key_source: str | None = None) -> str:
    """The line the server announces itself with: a stand-in, where, which dialect, which auth."""
    if config.api_key is None:
        auth = "OPEN mode (any non-empty bearer key is accepted)"
    else:
        auth = f"key from ${key_source}" if key_source else "bearer key required"
    models = ", ".join(config.served_models)
    return (
        f"aiml-bge local server: STAND-IN with hashing vectors, NOT the real model "
        f"(serving {models} as {_dialect_name(config.dialect)!r} dialect) at {url}; auth: {auth}"
    )


class LocalServer:
    """The local AIML-compatible server in a background thread, on 127.0.0.1 and a free port.

    Example::

        with LocalServer(latency=0.05, faults=FaultConfig(script=["503"])) as server:
            # server.base_url and server.api_key go to any client; or use server.client():
            with server.client() as http:
                http.post("/embeddings", json={"model": "BAAI/bge-base-en-v1.5", "input": "hi"})
            server.stats["requests"]

    ``port`` (0: any free one) and ``shutdown_timeout`` (seconds ``stop`` lets requests in
    flight finish) aside, keyword arguments are ``ServerConfig`` fields. ``api_key`` defaults
    to a fresh random ``local-...`` key so that auth is really exercised; pass ``api_key=None``
    for open mode.
    ``config`` may be changed while the server runs (latency, limits, faults, dialect).
    """

    def __init__(self, *, port: int = 0, shutdown_timeout: float = 1.0, **config: Any) -> None:
        api_key = config.pop("api_key", _GENERATE)
        if api_key is _GENERATE:
            api_key = f"local-{secrets.token_urlsafe(24)}"
        self.config = ServerConfig(api_key=api_key, **config)
        """The live configuration (mutable)."""
        self.app = create_app(self.config)
        """The Starlette app."""
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- facts

    @property
    def api_key(self) -> str | None:
        """The key the server accepts (``None`` in open mode)."""
        return self.config.api_key

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._sock is None:
            raise RuntimeError("the server is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what clients take as their base URL."""
        return f"{self.root_url}/v1"

    @property
    def stats(self) -> ServerStats:
        """The server's counters (see ``stats.ServerStats``)."""
        stats: ServerStats = self.app.state.aiml.stats
        return stats

    def reset_stats(self) -> None:
        """Zero the counters."""
        self.stats.reset()

    def _auth_headers(self, key: str | Literal[_Default.SERVER_KEY] | None) -> dict[str, str]:
        if key is _SERVER_KEY:
            key = self.api_key or "open-mode"
        return {} if key is None else {"Authorization": f"Bearer {key}"}

    def client(
        self, *, key: str | Literal[_Default.SERVER_KEY] | None = _SERVER_KEY, timeout: float = 10.0
    ) -> httpx.Client:
        """An ``httpx.Client`` on ``base_url`` sending the server's key (or ``key``; none if ``None``)."""
        # Plain HTTP on loopback: verify=False only skips loading CA certificates (slow, unused).
        return httpx.Client(
            base_url=self.base_url, headers=self._auth_headers(key), timeout=timeout, verify=False
        )

    def async_client(
        self, *, key: str | Literal[_Default.SERVER_KEY] | None = _SERVER_KEY, timeout: float = 10.0
    ) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` twin of ``client``."""
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._auth_headers(key), timeout=timeout, verify=False
        )

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    # ---- lifecycle

    def start(self) -> LocalServer:
        """Bind, start serving in a daemon thread, and return once requests are answered."""
        if self.running:
            return self
        _install_log_filter()
        self._sock = _bind("127.0.0.1", self._port)
        uv_config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, round(self._shutdown_timeout)),
            limit_concurrency=_uvicorn_limit(self.config),
        )
        server = uvicorn.Server(uv_config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [self._sock]},
            name="aiml-bge-local-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("the local server failed to start (see the log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the local server did not start within 10 s")
            time.sleep(0.005)
        logger.info(startup_line(self.config, self.base_url))
        return self

    def stop(self) -> None:
        """Stop serving, wait for the thread, and free the port."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=self._shutdown_timeout + 5.0)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout=5.0)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._sock is not None else "not started"
        return f"LocalServer({where}, dialect={_dialect_name(self.config.dialect)!r})"


# --------------------------------------------------------------------------- command line


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fault_rate(text: str) -> tuple[str, float]:
    kind, sep, rate = text.partition("=")
    if not sep or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"expected KIND=P with KIND one of {', '.join(FAULT_KINDS)}; got {text!r}"
        )
    try:
        return kind, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{rate!r} is not a probability") from None


def _fault_script(text: str) -> list[str | None]:
    script: list[str | None] = []
    for part in text.split(","):
        part = part.strip()
        if part in ("", "-", "ok", "none"):
            script.append(None)
        elif part in FAULT_KINDS:
            script.append(part)
        else:
            raise argparse.ArgumentTypeError(f"unknown fault kind {part!r}")
    return script


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aiml-bge serve",
        allow_abbrev=False,  # "--api-key x" must not pass as "--api-key-env x": keys never go in flags
        description=(
            "Run the local AIML-compatible embeddings server. Its vectors come from a hashing "
            "STAND-IN, not from the real BGE model: use it for tests, demos and benchmarks."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--dialect",
        choices=dialect_names(),
        default="aiml",
        help="how replies are worded (default aiml, the AI/ML API's own)",
    )
    p.add_argument(
        "--api-key-env",
        default=API_KEY_ENV,
        metavar="NAME",
        help=f"environment variable holding the accepted key (default {API_KEY_ENV}); unset means open mode",
    )
    p.add_argument(
        "--served-model",
        action="append",
        metavar="M",
        help=f"model to serve (repeatable; default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--retired-model",
        action="append",
        metavar="M",
        help="model answering 404 'deprecated' (repeatable)",
    )
    p.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every accepted request"
    )
    p.add_argument(
        "--max-concurrent-requests",
        type=int,
        metavar="N",
        help="requests handled at once; one more gets 429 (default: no limit)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="requests served at once, the others wait in a queue (default: no queue)",
    )
    p.add_argument("--requests-per-minute", type=int, metavar="N")
    p.add_argument(
        "--free-tier-requests-per-hour",
        type=int,
        metavar="N",
        help="answer as the AI/ML API free tier: after N requests in an hour, 429 "
        '"You\'ve reached your free limit for the hour"',
    )
    p.add_argument(
        "--retry-after-on-limit", type=float, metavar="S", help="send Retry-After: S on limit 429s"
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        metavar="N",
        help="largest request body; larger gets 413 (default 2000000; TEI dialect the same)",
    )
    p.add_argument(
        "--max-items-per-request",
        type=int,
        metavar="N",
        help="most inputs per request; more gets 413 (default 2048)",
    )
    p.add_argument(
        "--max-chars-per-item",
        type=int,
        metavar="N",
        help="most characters per input; longer gets 400 (default 100000)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"open connections served; past it requests get 503 (default {DEFAULT_MAX_CONNECTIONS})",
    )
    p.add_argument("--max-tokens-per-item", type=int, metavar="N")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        metavar="N",
        help="most tokens in one request, all inputs together; more gets 413 (default: no limit)",
    )
    p.add_argument(
        "--fault-rate",
        type=_fault_rate,
        action="append",
        metavar="KIND=P",
        help="inject KIND with probability P (repeatable)",
    )
    p.add_argument(
        "--fault-script",
        type=_fault_script,
        metavar="K1,K2,...",
        help="faults for the first requests in order ('ok' = healthy)",
    )
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--slow-seconds", type=float, default=5.0, help="delay of the 'slow' fault")
    p.add_argument(
        "--retry-after-seconds",
        type=float,
        default=1.0,
        help="delay the 429-retry-after faults announce",
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    return p


def _config_from_args(args: argparse.Namespace, api_key: str | None) -> ServerConfig:
    faults = None
    if args.fault_rate or args.fault_script:
        faults = FaultConfig(
            rates=dict(args.fault_rate or []),
            script=args.fault_script or [],
            seed=args.fault_seed,
            slow_seconds=args.slow_seconds,
            retry_after_seconds=args.retry_after_seconds,
        )
    extra: dict[str, Any] = {}
    if args.served_model:
        extra["served_models"] = args.served_model
    if args.retired_model:
        extra["retired_models"] = args.retired_model
    return ServerConfig(
        api_key=api_key,
        dialect=args.dialect,
        latency=args.latency,
        max_concurrent_requests=args.max_concurrent_requests,
        workers=args.workers,
        requests_per_minute=args.requests_per_minute,
        free_tier_requests_per_hour=args.free_tier_requests_per_hour,
        retry_after_on_limit=args.retry_after_on_limit,
        max_body_bytes=args.max_body_bytes,
        max_items_per_request=args.max_items_per_request,
        max_chars_per_item=args.max_chars_per_item,
        max_tokens_per_item=args.max_tokens_per_item,
        max_batch_tokens=args.max_batch_tokens,
        max_connections=args.max_connections,
        faults=faults,
        **extra,
    )


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``aiml-bge serve ...``: run the server in the foreground until interrupted.

    The accepted key is read from the environment (``--api-key-env``, default
    ``AIMLAPI_API_KEY``), never from a flag. Without a key the server runs in open mode, and
    only on a loopback address: any other host without a key exits with status 2.
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    api_key = os.environ.get(args.api_key_env, "").strip() or None
    if api_key is None and not _is_loopback(args.host):
        print(
            f"aiml-bge serve: refusing to listen on {args.host} without an API key: anyone who can reach it "
            f"could use it. Set ${args.api_key_env} (or choose another variable with --api-key-env), "
            "or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    try:
        config = _config_from_args(args, api_key)
    except ValueError as err:
        print(f"aiml-bge serve: {err}", file=sys.stderr)
        return 2
    try:
        sock = _bind(args.host, args.port)
    except OSError as err:
        print(f"aiml-bge serve: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        startup_line(config, f"http://{shown}:{port}/v1", args.api_key_env if api_key else None),
        flush=True,
    )
    _install_log_filter()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level=args.log_level,
            access_log=args.log_level in ("info", "debug"),
            lifespan="off",
            timeout_graceful_shutdown=2,
            limit_concurrency=_uvicorn_limit(config),
        )
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
