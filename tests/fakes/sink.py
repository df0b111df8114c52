"""A listener that must usually receive nothing: a real HTTP/1.1 socket server on 127.0.0.1 and ::1 that records
every connection it accepts (before reading a byte) and every request, so a test can tell "refused before
connecting" from "refused after sending"."""

from __future__ import annotations

import asyncio
import ssl


class Sink:
    """A real HTTP/1.1 listener on 127.0.0.1 and ::1 (one port) that records every connection and request and
    answers each request with ``status`` (and ``location``), closing the connection."""

    def __init__(self, status: int = 200, location: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.status, self.location, self.tls = status, location, tls
        self.connections: list[str] = []
        self.requests: list[bytes] = []
        self.port = 0
        self._servers: list[asyncio.Server] = []

    async def start(self) -> Sink:
        v4 = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = v4.sockets[0].getsockname()[1]
        self._servers = [v4, await asyncio.start_server(self._serve, "::1", self.port, ssl=self.tls)]
        return self

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer.get_extra_info("sockname")[0])
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests.append(head)
            extra = f"Location: {self.location}\r\n" if self.location else ""
            writer.write(f"HTTP/1.1 {self.status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def internal_urls(port: int) -> list[str]:
    """Callback URLs of internal addresses, each spelled another way: ``port`` on loopback (dotted, name,
    ``[::1]``, ``0.0.0.0``, decimal, hex, short, IPv4-mapped), the cloud metadata address (dotted, decimal,
    IPv4-mapped) and private ones (10/8, 192.168/16 on Redis's port)."""
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://localhost:{port}/hook",
        f"http://[::1]:{port}/hook",
        f"http://0.0.0.0:{port}/hook",
        f"http://2130706433:{port}/hook",
        f"http://0x7f.1:{port}/hook",
        f"http://127.1:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://[::ffff:7f00:1]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://10.0.0.1/",
        "http://192.168.0.1:6379/",
    ]
