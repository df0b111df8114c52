"""The one HTTP client for requests to user-given URLs: httpx whose every new connection goes to an address that
:class:`~hermes_proto.outbound.OutboundPolicy` checked in the same step, so DNS rebinding cannot swap it.

How: httpcore, under httpx, opens connections through a *network backend*; :class:`GuardedBackend` resolves the
host, checks every address and connects to one of those very addresses. TLS still verifies the URL's name (httpcore
passes it as SNI and for the certificate check) and the ``Host`` header is the URL's. Redirects are not followed,
proxies from the environment are ignored. Needs httpx (declared by the services that use this module).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import httpcore
import httpx

from hermes_proto.outbound import OutboundPolicy, OutboundRefused, Resolver

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own defaults

__all__ = ["GuardedBackend", "OutboundRefused", "guarded_client"]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to checked addresses, in the resolver's order (the next on a
    connect error). :class:`OutboundRefused` when any address is forbidden; ``httpcore.ConnectError`` when the name
    does not resolve; ``httpcore.ConnectTimeout`` when resolving takes longer than the connect timeout."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._policy.addresses(host, port, self._resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from None
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # addresses is never empty
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound requests never use a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    # httpx's own transport (request/response mapping, httpcore errors as httpx errors) over a pool that
    # connects through GuardedBackend. httpx has no argument for the backend, so the pool it built is replaced.
    def __init__(self, backend: GuardedBackend, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),  # certificates as httpx finds them
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def guarded_client(
    policy: OutboundPolicy,
    *,
    timeout: float | httpx.Timeout,
    headers: Mapping[str, str] | None = None,
    limits: httpx.Limits | None = None,
    resolver: Resolver | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose connections go only where ``policy`` allows (see the module doc); redirects
    off, no proxies from the environment. ``timeout``: seconds (or an ``httpx.Timeout``) for connect, read, write
    and pool; ``resolver``: for tests (default: the event loop's ``getaddrinfo``). A forbidden address raises
    :class:`OutboundRefused` from the request, before any byte is sent."""
    transport = _GuardedTransport(GuardedBackend(policy, resolver), limits or DEFAULT_LIMITS)
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, timeout=timeout, headers=headers
    )
