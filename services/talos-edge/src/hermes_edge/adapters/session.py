"""The HTTP client the adapters share: one ``aiohttp.ClientSession`` per edge process.

aiohttp rather than httpx because the edge is a streaming HTTP client above all, and aiohttp parses responses in
C (llhttp) and keeps per-request work small: measured on the 2-core bench machine, a streamed chat call against
the loopback OpenAI-compatible fake cost the client ~0.5 ms of CPU with aiohttp and 2.0-2.6 ms with httpx
(services/talos-edge/README.md, "Performance").
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from urllib.parse import urlsplit

import aiohttp
import certifi

READ_BUFSIZE = 2**20
"""Bytes aiohttp buffers per response; a single stream line may be up to twice this (2 MiB)."""


def new_session(max_connections: int = 10) -> aiohttp.ClientSession:
    """A session for the adapters; create it inside the running event loop and ``await session.close()`` it.

    Up to ``max_connections`` keep-alive connections in total; no cookie jar (model APIs set nothing worth
    sending back, and a jar costs work on every response); no default timeout (each call sets its own); TLS
    verified against certifi's CA bundle, or the system's when ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` is set (what
    httpx did). The environment's proxy is not looked up per request (aiohttp's ``trust_env`` does that in a
    thread each time): an adapter resolves it once, see :func:`env_proxy`."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, ssl=tls_context()),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=READ_BUFSIZE,
    )


def tls_context() -> ssl.SSLContext:
    """Certificate verification on: certifi's CA bundle, or the system store when ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` names one."""
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``, any case),
    or None when there is none or ``NO_PROXY`` exempts the host."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")
