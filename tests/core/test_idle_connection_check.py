"""The clients' own pools check idle connections by polling the socket directly (real sockets)."""

from __future__ import annotations

from typing import Any

import httpcore


async def test_is_readable_polls_the_socket_looked_up_once() -> None:
    # httpcore asks this of every idle connection whenever it places or takes back a request.
    import asyncio
    import socket

    from aiml_bge_integrations._transport import _AsyncBackend

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]

    class Counting(httpcore.AnyIOBackend):
        async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
            stream = await super().connect_tcp(*args, **kwargs)
            real = stream.get_extra_info
            lookups.clear()

            def counted(info: str) -> Any:
                lookups.append(info)
                return real(info)

            stream.get_extra_info = counted  # type: ignore[method-assign]
            return stream

    lookups: list[str] = []
    stream = await _AsyncBackend(Counting()).connect_tcp("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    peer, _ = await loop.sock_accept(listener)
    try:
        assert stream.get_extra_info("is_readable") is False
        assert stream.get_extra_info("is_readable") is False
        await loop.sock_sendall(peer, b"x")
        for _ in range(200):  # loopback delivery is immediate, but do not race it
            if stream.get_extra_info("is_readable"):
                break
            await asyncio.sleep(0.005)
        assert stream.get_extra_info("is_readable") is True
        assert lookups == ["socket"]  # one lookup, then direct polls
        assert stream.get_extra_info("server_addr")[1] == port  # other keys pass through
        await stream.aclose()
        assert stream.get_extra_info("is_readable") is True  # closed: dropped, as httpcore does
    finally:
        peer.close()
        listener.close()
