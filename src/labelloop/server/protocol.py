"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection, whatever socket it came from.

asyncio turns Nagle off only for sockets created with proto=IPPROTO_TCP. With `--workers 2` or more, uvicorn binds
the listening socket itself with proto 0, so the connections its workers accept keep Nagle on: a response written
as headers then body waits for the client's delayed ACK, about 40 ms on Linux, on every request."""

from __future__ import annotations

import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
