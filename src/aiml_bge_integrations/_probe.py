"""Asking a server once what it publishes about its limits: the I/O of ``_discovery``.

``LimitsProbe`` belongs to one client. Before the client plans its first batch, ``run``
(sync) or ``arun`` (async) sends the GETs ``_discovery.discovery_urls`` names, with the
client's own connection pool and headers (its key included: the same server), never
following a redirect, reading at most ``MAX_REPLY_BYTES`` of each reply (as decoded:
inflated a piece at a time: ``_transport.get_small``) and all of them
within about ``DISCOVERY_TIMEOUT`` seconds in all, and within half of what is left of the
call's deadline if it has one. What the replies publish goes to the client's engine
(``Engine.learn_server_limits``). It is asked once per client: concurrent calls wait for the
one attempt, later calls skip it, and whatever goes wrong (no reply, a refusal, a hang,
garbage) leaves the plan as it was: discovery never fails a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping

import httpx

from ._discovery import (
    DISCOVERY_TIMEOUT,
    MAX_REPLY_BYTES,
    Reply,
    ServerLimits,
    adiscover,
    discover,
    discovery_urls,
)
from ._engine import Engine
from ._transport import aget_small, get_small

__all__ = ["LimitsProbe"]

logger = logging.getLogger("aiml_bge_integrations")


class LimitsProbe:
    """One client's discovery: asked at most once, before its first batch is planned."""

    def __init__(self, enabled: bool, engine: Engine, headers: Mapping[str, str]) -> None:
        """``headers``: the client's own (without the key, which comes from ``engine``)."""
        self._engine, self._base_url, self._model = engine, engine.ctx.base_url, engine.ctx.model
        self._base_headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self.done = not (enabled and discovery_urls(self._base_url))
        """True once asked (or when nothing is to be asked: turned off, or a hosted API)."""
        self._start_process()

    def _start_process(self) -> None:
        # A forked child gets fresh locks: another thread of the parent may have held one.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    def _headers(self) -> dict[str, str]:
        return {**self._base_headers, "Authorization": f"Bearer {self._engine.ctx.key.get()}"}

    def _this_process(self) -> None:
        if os.getpid() != self._pid:
            self._start_process()

    def run(self, http: httpx.Client, left: float | None = None) -> None:
        """Ask the server with ``http`` unless this client has asked already.

        ``left``: the seconds left of the call's deadline (None: it has none). A call waiting
        for another call's attempt goes on without it once its own time for it is up.
        """
        if self.done:
            return
        self._this_process()
        wait = _budget(left)
        if not self._lock.acquire(timeout=wait):
            return
        try:
            if self.done:
                return
            try:
                deadline = time.monotonic() + wait
                headers = self._headers()
                limits = discover(
                    self._base_url, lambda url: _get(http, url, headers, deadline), self._model
                )
                self._engine.learn_server_limits(limits)
            except Exception as err:  # discovery never fails a call
                logger.debug("%s: discovery failed (%s)", self._base_url, type(err).__name__)
            finally:
                self.done = True
        finally:
            self._lock.release()

    async def arun(self, http: httpx.AsyncClient, left: float | None = None) -> None:
        """Ask the server with ``http`` unless this client has asked already (one attempt
        however many calls wait for it; a caller cancelled meanwhile leaves it running, and
        one whose time for it is up goes on without it)."""
        if self.done:
            return
        self._this_process()
        loop = asyncio.get_running_loop()
        wait = _budget(left)
        with self._lock:
            if self.done:
                return
            task = self._tasks.get(loop)
            if task is None:
                task = loop.create_task(self._aprobe(http, wait))
                self._tasks[loop] = task
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait)

    async def _aprobe(self, http: httpx.AsyncClient, wait: float) -> None:
        import anyio  # httpx's own dependency: its cancel scopes go around httpcore's shields

        try:
            headers = self._headers()
            limits = ServerLimits()
            with anyio.move_on_after(wait):
                deadline = time.monotonic() + wait
                limits = await adiscover(
                    self._base_url, lambda url: _aget(http, url, headers, deadline), self._model
                )
            self._engine.learn_server_limits(limits)
        except Exception as err:  # discovery never fails a call
            logger.debug("%s: discovery failed (%s)", self._base_url, type(err).__name__)
        finally:
            self.done = True


def _budget(left: float | None) -> float:
    """Seconds for discovery: ``DISCOVERY_TIMEOUT``, or half of what is left of a deadline."""
    return DISCOVERY_TIMEOUT if left is None else max(0.0, min(DISCOVERY_TIMEOUT, left / 2))


def _request(
    http: httpx.Client | httpx.AsyncClient, url: str, headers: Mapping[str, str], deadline: float
) -> httpx.Request | None:
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    return http.build_request("GET", url, headers=headers, timeout=left)


def _get(http: httpx.Client, url: str, headers: Mapping[str, str], deadline: float) -> Reply:
    """One GET within the deadline and ``MAX_REPLY_BYTES`` (``_transport.get_small``)."""
    try:
        request = _request(http, url, headers, deadline)
        return None if request is None else get_small(http, request, MAX_REPLY_BYTES, deadline)
    except Exception as err:
        logger.debug("%s: no reply (%s)", url, type(err).__name__)
        return None


async def _aget(
    http: httpx.AsyncClient, url: str, headers: Mapping[str, str], deadline: float
) -> Reply:
    """``_get`` for the async client (the caller's cancel scope bounds it in time)."""
    try:
        request = _request(http, url, headers, deadline)
        return None if request is None else await aget_small(http, request, MAX_REPLY_BYTES)
    except Exception as err:
        logger.debug("%s: no reply (%s)", url, type(err).__name__)
        return None
