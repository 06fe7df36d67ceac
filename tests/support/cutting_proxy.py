"""A TCP proxy in front of the real Redis that can lose one reply, to test dropped connections.

A connection dropped while a command is in flight is the case a store must handle: the server
may have applied the command, and the client cannot know. Killing an idle client (``CLIENT
KILL``) does not test it: redis-py 8 checks a pooled connection before sending on it and
silently replaces one the server closed, so nothing was in flight. No kept library injects
this one fault into an asyncio socket, hence these few lines.
"""

from __future__ import annotations

import asyncio
import contextlib


class CuttingProxy:
    """Forwards bytes both ways; ``cut_next_reply()`` makes the next request's reply vanish.

    When armed, the next chunk a client sends is forwarded to Redis (so the command runs), and
    then both sockets of that connection are closed before the reply comes back.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._armed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.cuts = 0

    async def start(self) -> str:
        """Listen on a free loopback port; returns ``host:port`` to dial."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def cut_next_reply(self) -> None:
        """Lose the reply to the next request any client sends."""
        self._armed = True

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        replies = asyncio.create_task(self._pipe(up_reader, writer))
        self._tasks.add(replies)
        try:
            while chunk := await reader.read(65536):
                cut = self._armed
                if cut:  # stop relaying replies first, so this one cannot slip through
                    self._armed = False
                    replies.cancel()
                    await asyncio.gather(replies, return_exceptions=True)
                up_writer.write(chunk)
                await up_writer.drain()
                if cut:
                    self.cuts += 1
                    await asyncio.sleep(0.05)  # let Redis run the command, not answer it
                    break
        finally:
            replies.cancel()
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
            self._tasks.discard(replies)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay Redis's replies to the client until either side closes."""
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
