"""A server that reads each HTTP request and closes the connection without answering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class HangUps:
    """Where the server listens, and how many requests it has hung up on."""

    url: str
    count: int = 0


@asynccontextmanager
async def hanging_up_server() -> AsyncIterator[HangUps]:
    """Serve on a free loopback port, in the running loop, for the duration of the block."""
    hang_ups = HangUps(url="")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        # The whole body too: closing with unread bytes would reset the connection instead.
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        hang_ups.count += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    hang_ups.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield hang_ups
