"""Which addresses an outbound request to a user-given URL (a callback, later ``web_fetch`` and MCP over HTTP) may
reach: only global unicast ones, unless ``HERMES_OUTBOUND_ALLOW`` lists the receiver.

Pure address rules (:func:`ip_literal`, :func:`address_problem`), the allow-list (:class:`OutboundPolicy`) and
resolution on the event loop's resolver (:meth:`OutboundPolicy.addresses`). The HTTP client that connects only to
the addresses checked here is :mod:`hermes_proto.outbound_http`; this module needs nothing but the stdlib, so the
gateway can check a URL at submission.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

import structlog
from prometheus_client import Counter

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""``(host, port) -> addresses``; raises OSError (e.g. :class:`socket.gaierror`) when the name does not resolve."""

log = structlog.get_logger("hermes.outbound")

OUTBOUND_REFUSED = Counter(
    "hermes_outbound_refused_total",
    "Outbound requests refused before connecting; reason: loopback, private, link_local, multicast, reserved, "
    "unspecified, site_local, not_global",
    ["reason"],
)

_ADDRESS_CLASSES = (  # checked in this order; the first that matches names the refusal
    ("unspecified", "is_unspecified"),
    ("loopback", "is_loopback"),
    ("link_local", "is_link_local"),
    ("multicast", "is_multicast"),
    ("private", "is_private"),
    ("reserved", "is_reserved"),
    ("site_local", "is_site_local"),
)
_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NOT_GLOBAL = (IPv6Network("64:ff9b:1::/48"),)  # RFC 8215 local-use NAT64, global to some Python versions
_HEX, _OCTAL, _DECIMAL = frozenset("0123456789abcdef"), frozenset("01234567"), frozenset("0123456789")


class OutboundRefused(Exception):
    """A request to a forbidden address. ``reason``: one of :data:`OUTBOUND_REFUSED`'s reasons; ``host``: the URL's
    host; ``address``: the offending address (as text). The message names the host, never the whole URL, and for
    a name not the address it resolved to (whoever reads the message learns nothing of internal DNS but the kind)."""

    def __init__(self, host: str, address: IPAddress, reason: str, embedded: IPAddress | None = None) -> None:
        kind = reason.replace("_", "-")
        if ip_literal(host) is None:
            text = f"host {host} resolves to a {kind} address"
        else:
            shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
            text = f"host {shown} is a {kind} address" + (f" (it embeds {embedded})" if embedded is not None else "")
        super().__init__(f"{text}, not a public one")
        self.host, self.address, self.reason = host, str(address), reason


def ipv4_literal(host: str) -> IPv4Address | None:
    """``host`` read as the C library's ``inet_aton`` reads it (1-4 dot-separated parts, each decimal, ``0x`` hex
    or ``0`` octal, the last filling the remaining bytes: ``2852039166``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``),
    one trailing dot allowed; None if it is not such a number."""
    parts = (host[:-1] if host.endswith(".") else host).split(".")
    if not 1 <= len(parts) <= 4:
        return None
    try:
        *head, last = [_ipv4_part(part) for part in parts]
    except ValueError:
        return None
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        return None
    return IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last)


def _ipv4_part(part: str) -> int:
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base, allowed = lowered[2:], 16, _HEX
    elif len(lowered) > 1 and lowered.startswith("0"):
        digits, base, allowed = lowered[1:], 8, _OCTAL
    else:
        digits, base, allowed = lowered, 10, _DECIMAL
    if not digits or not set(digits) <= allowed:  # int() alone would take "1_0", " 1" and non-ASCII digits
        raise ValueError(part)
    return int(digits, base)


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells (a URL's host, brackets optional, an IPv6 zone as ``%25`` or ``%``), or None when
    it is a name. IPv4 in every :func:`ipv4_literal` form."""
    text = host.strip("[]").replace("%25", "%")
    if ":" in text:
        try:
            return IPv6Address(text)
        except ValueError:
            return None
    return ipv4_literal(text)


def translated_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a connection to ``ip`` really reaches, if ``ip`` is IPv4-mapped (``::ffff:a.b.c.d``),
    IPv4-translated (``::ffff:0:a.b.c.d``) or NAT64 (``64:ff9b::a.b.c.d``); else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if int(ip) >> 32 == 0xFFFF0000 or ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """Every IPv4 address ``ip`` carries: :func:`translated_ipv4`, IPv4-compatible (``::a.b.c.d``), 6to4
    (``2002:AABB:CCDD::``) and Teredo (server and client)."""
    compatible = IPv4Address(int(ip)) if 1 < int(ip) < 2**32 else None
    found = [translated_ipv4(ip), compatible, ip.sixtofour, *(ip.teredo or ())]
    return [v4 for v4 in found if v4 is not None]


def address_problem(ip: IPAddress) -> tuple[str, IPAddress | None] | None:
    """None if ``ip`` is a global unicast address and embeds no other kind; else ``(reason, embedded)``: the
    reason (loopback, private, link_local, multicast, reserved, unspecified, site_local, not_global) and the IPv4
    address it embeds when that one is the problem (else None). A translated address (:func:`translated_ipv4`)
    is judged as the IPv4 address it reaches."""
    if isinstance(ip, IPv6Address):
        ip = ip if ip.scope_id is None else IPv6Address(str(ip).split("%", 1)[0])
        translated = translated_ipv4(ip)
        if translated is not None:
            problem = address_problem(translated)
            return None if problem is None else (problem[0], translated)
        for inner in embedded_ipv4(ip):
            problem = address_problem(inner)
            if problem is not None:
                return problem[0], inner
    if any(ip in network for network in _NOT_GLOBAL):
        return "not_global", None
    for reason, flag in _ADDRESS_CLASSES:
        if getattr(ip, flag, False):
            return reason, None
    return None if ip.is_global else ("not_global", None)


@dataclass(frozen=True)
class OutboundPolicy:
    """The allow-list: receivers trusted although their addresses are not public. ``names``: ``(host, port)`` of
    names (port None: any); ``networks``: ``(network, port)`` for addresses and CIDRs (port None: any)."""

    names: tuple[tuple[str, int | None], ...] = ()
    networks: tuple[tuple[IPv4Network | IPv6Network, int | None], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> OutboundPolicy:
        """From ``HERMES_OUTBOUND_ALLOW``: comma-separated ``host``, ``host:port``, ``address``, ``address:port``
        (``[v6]:port``) or CIDR entries (``10.0.0.0/8``); blank: nothing allowed. Raises ValueError on a bad
        entry (it names the entry)."""
        names: list[tuple[str, int | None]] = []
        networks: list[tuple[IPv4Network | IPv6Network, int | None]] = []
        for entry in (e.strip() for e in (text or "").split(",")):
            if not entry:
                continue
            bare = ip_literal(entry)
            try:
                if "/" in entry or bare is not None:
                    networks.append((ip_network(bare or entry.strip("[]"), strict=False), None))
                    continue
                parts = urlsplit(f"//{entry}")
                host, port = parts.hostname, parts.port
            except ValueError as exc:
                raise ValueError(f"outbound allow-list entry {entry!r}: {exc}") from None
            if not host or parts.path or parts.username is not None:
                raise ValueError(f"outbound allow-list entry {entry!r} is not host, host:port or a CIDR")
            literal = ip_literal(host)
            if literal is not None:
                networks.append((ip_network(literal), port))
            else:
                names.append((_normal(host), port))
        return cls(tuple(names), tuple(networks))

    def permits(self, host: str, port: int, ip: IPAddress) -> bool:
        """Whether ``ip`` (reached as ``host:port``) is listed: by name, or by address or network (an IPv4-mapped
        or translated address also as its IPv4 address)."""
        name = _normal(host)
        if any(n == name and p in (None, port) for n, p in self.names):
            return True
        seen = [ip, *([translated_ipv4(ip)] if isinstance(ip, IPv6Address) else [])]
        return any(
            a is not None and a.version == net.version and a in net and p in (None, port)
            for a in seen
            for net, p in self.networks
        )

    def check(self, host: str, port: int, ip: IPAddress) -> None:
        """Raises :class:`OutboundRefused` unless ``ip`` is public or listed (counted and logged)."""
        problem = None if self.permits(host, port, ip) else address_problem(ip)
        if problem is not None:
            reason, embedded = problem
            OUTBOUND_REFUSED.labels(reason).inc()
            log.warning("outbound_refused", host=host, port=port, address=str(ip), reason=reason)
            raise OutboundRefused(host, ip, reason, embedded)

    async def addresses(self, host: str, port: int, resolver: Resolver | None = None) -> list[IPAddress]:
        """Every address of ``host`` (an address literal as it is, with no DNS; a name through ``resolver``,
        default the event loop's ``getaddrinfo``), each checked. Raises :class:`OutboundRefused` if ANY is
        forbidden, OSError when the name does not resolve."""
        literal = ip_literal(host)
        found = [literal] if literal is not None else list(await (resolver or system_resolver)(host, port))
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        for ip in found:
            self.check(host, port, ip)
        return found

    async def check_url(self, url: str, resolver: Resolver | None = None) -> list[IPAddress]:
        """:meth:`addresses` of an http(s) URL's host and port (80/443 by default). Raises ValueError on a URL
        without a host or with a bad port, :class:`OutboundRefused`, OSError."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError("the URL has no host")
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        return await self.addresses(parts.hostname, port, resolver)


def _normal(host: str) -> str:
    return host.strip("[]").lower().removesuffix(".")


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """``host``'s TCP addresses from the event loop's ``getaddrinfo`` (a worker thread, the loop is not blocked),
    in the resolver's order without repeats. Raises :class:`socket.gaierror`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = [ip_address(info[4][0]) for info in infos]
    return list(dict.fromkeys(found))
