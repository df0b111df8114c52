"""The guarded outbound client (:mod:`hermes_proto.outbound_http`) against real sockets: listeners on 127.0.0.1 and
::1 that count every connection, so "refused" means no connection was ever opened, not just no request read.
Names the system cannot resolve come from a stand-in resolver (the one thing the client is given for tests)."""

from __future__ import annotations

import ssl
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest
import trustme
from fakes.sink import Sink, internal_urls
from prometheus_client import REGISTRY

from hermes_proto.outbound import OutboundPolicy, OutboundRefused, system_resolver
from hermes_proto.outbound_http import guarded_client

from hermes_notifier.adapters import CallbackPolicy, CallbackSender, SendFailed


def resolver_with(answers: dict[str, list[list[str]]], asked: list[str]):
    """Answers the listed names with their next answer (the last one repeats); others through the system."""

    async def resolve(host: str, port: int) -> list:
        asked.append(host)
        if host not in answers:
            return await system_resolver(host, port)
        queue = answers[host]
        return [ip_address(a) for a in (queue.pop(0) if len(queue) > 1 else queue[0])]

    return resolve


def forbidden_urls(port: int) -> list[str]:
    return [
        *internal_urls(port),
        f"http://loopback.test:{port}/hook",  # a name resolving to loopback
        f"http://mixed.test:{port}/hook",  # one public address and one loopback
    ]


STAND_IN = {"loopback.test": [["127.0.0.1"]], "mixed.test": [["8.8.8.8", "127.0.0.1"]]}


async def test_every_spelling_of_an_internal_address_is_refused_before_connecting():
    asked: list[str] = []
    async with (
        Sink() as sink,
        guarded_client(OutboundPolicy(), timeout=5, resolver=resolver_with(STAND_IN, asked)) as client,
    ):
        for url in forbidden_urls(sink.port):
            with pytest.raises(OutboundRefused) as refused:
                await client.post(url, json={"x": 1})
            assert refused.value.reason in ("loopback", "unspecified", "link_local", "private"), url
        # httpx itself refuses a dotted quad with leading zeros (octal to the C library), before any policy.
        with pytest.raises(httpx.InvalidURL):
            await client.post(f"http://0177.0.0.1:{sink.port}/hook", json={})
        assert sink.connections == [] and sink.requests == []
    assert asked == ["localhost", "loopback.test", "mixed.test"]  # literals never reach the resolver


async def test_the_allow_list_lets_exactly_the_listed_receiver_through():
    async with Sink() as listed, Sink() as other:
        policy = OutboundPolicy.parse(f"127.0.0.1:{listed.port}")
        async with guarded_client(policy, timeout=5) as client:
            assert (await client.post(f"http://127.0.0.1:{listed.port}/hook", json={})).status_code == 200
            assert (await client.post(f"http://localhost:{listed.port}/hook", json={})).status_code == 200
            for url in (
                f"http://127.0.0.1:{other.port}/",
                f"http://[::1]:{listed.port}/",
                f"http://[::1]:{other.port}/",
            ):
                with pytest.raises(OutboundRefused):
                    await client.post(url, json={})
        assert len(listed.requests) == 2 and listed.connections == ["127.0.0.1", "127.0.0.1"]
        assert other.connections == []


async def test_a_redirect_to_a_forbidden_address_is_not_followed():
    async with Sink() as target:
        async with Sink(status=302, location=f"http://127.0.0.1:{target.port}/steal") as listed:
            async with guarded_client(OutboundPolicy.parse(f"127.0.0.1:{listed.port}"), timeout=5) as client:
                response = await client.post(f"http://127.0.0.1:{listed.port}/hook", json={})
                assert response.status_code == 302 and response.next_request is not None  # a redirect, not followed
                # Even a caller who asks to follow it: the next hop is checked like any connection.
                with pytest.raises(OutboundRefused):
                    await client.post(f"http://127.0.0.1:{listed.port}/hook", json={}, follow_redirects=True)
        assert len(listed.requests) == 2 and target.connections == []


async def test_the_connection_goes_to_the_checked_address_so_rebinding_cannot_swap_it():
    """The system cannot resolve ``pinned.test``: a request reaching the sink went to the address the policy
    checked. The next connection asks again and gets an address that is not allowed: refused, nothing sent."""
    asked: list[str] = []
    async with Sink() as sink:
        answers = {"pinned.test": [["127.0.0.1"], ["127.0.0.2"]]}
        policy = OutboundPolicy.parse(f"127.0.0.1:{sink.port}")
        async with guarded_client(policy, timeout=5, resolver=resolver_with(answers, asked)) as client:
            assert (await client.post(f"http://pinned.test:{sink.port}/hook", json={})).status_code == 200
            with pytest.raises(OutboundRefused) as refused:
                await client.post(f"http://pinned.test:{sink.port}/hook", json={})
        assert refused.value.address == "127.0.0.2" and refused.value.reason == "loopback"
        assert asked == ["pinned.test", "pinned.test"]  # once per connection (the sink closes each)
        assert sink.connections == ["127.0.0.1"]
        assert f"host: pinned.test:{sink.port}".encode() in sink.requests[0].lower()


async def test_tls_still_verifies_the_name_while_connecting_to_the_checked_address(tmp_path: Path, monkeypatch):
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pinned.test").configure_cert(server)
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    resolve = resolver_with({"pinned.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]}, [])
    async with Sink(tls=server) as sink:
        async with guarded_client(
            OutboundPolicy.parse(f"127.0.0.1:{sink.port}"), timeout=5, resolver=resolve
        ) as client:
            assert (await client.post(f"https://pinned.test:{sink.port}/hook", json={})).status_code == 200
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|match"):
                await client.post(f"https://other.test:{sink.port}/hook", json={})  # the certificate is not its
    assert names == ["pinned.test", "other.test"] and len(sink.requests) == 1


async def test_the_notifier_refuses_without_retrying_and_says_why():
    async with Sink() as sink:
        policy = CallbackPolicy(attempts=4, backoff_s=0.0, timeout_s=5)
        sender = CallbackSender(policy, OutboundPolicy(), resolver=resolver_with(STAND_IN, []))
        try:
            for url in forbidden_urls(sink.port):
                with pytest.raises(SendFailed) as failed:
                    await sender.post(url, b"{}", "key-1")
                assert failed.value.reason == "refused_address", url
                assert "address" in failed.value.detail and "/hook" not in failed.value.detail
        finally:
            await sender.close()
        assert sink.connections == []
    retried = {"channel": "webhook", "reason": "refused_address"}
    assert REGISTRY.get_sample_value("hermes_notifier_send_retries_total", retried) is None  # never retried
