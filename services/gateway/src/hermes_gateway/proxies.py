"""Who the client is when a reverse proxy sits in front: ``HERMES_TRUSTED_PROXIES``.

The client address (the failed-login limit's key, the logs) is the TCP peer's, unless the peer is a trusted proxy:
then ``X-Forwarded-For`` is read from the right, skipping trusted addresses (the proxies' own hops), and the first
address not trusted is the client. A header from any other peer is ignored, whatever it says, so a client cannot
pick its own address (with no proxy configured, loopback is not trusted either). uvicorn's own proxy-header
handling is off (:mod:`hermes_gateway.__main__`): this is the one place that reads the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(raw: str) -> tuple[Network, ...]:
    """``HERMES_TRUSTED_PROXIES``: comma-separated addresses or CIDR networks (``10.0.0.0/8``, ``::1``); blank
    entries skipped. Raises ``ValueError`` naming the first entry that is neither."""
    networks: list[Network] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


class TrustedProxies:
    """The configured proxies; :meth:`client` names a connection's client."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def trusted(self, host: str) -> bool:
        """Whether ``host`` (an address as text) is one of the proxies; anything that is not an address is not."""
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client(self, connection: HTTPConnection) -> str:
        """The client address of ``connection``: the peer's, or behind trusted proxies the right-most untrusted
        address of ``X-Forwarded-For`` (every header line, in order); all trusted: the left-most. ``unknown``
        without a peer."""
        peer = connection.client.host if connection.client else "unknown"
        if not self.trusted(peer):
            return peer
        hops = [h.strip() for line in connection.headers.getlist("x-forwarded-for") for h in line.split(",")]
        hops = [h for h in hops if h]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer
