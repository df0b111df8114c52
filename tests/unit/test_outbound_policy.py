"""The address rules of :mod:`hermes_proto.outbound`, pure (no network): every spelling of an address, what is
refused and why, the allow-list, and resolution through a stand-in resolver."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_proto.outbound import (
    OutboundPolicy,
    OutboundRefused,
    address_problem,
    embedded_ipv4,
    ip_literal,
    ipv4_literal,
)
from hermes_proto.settings import OutboundSettings

SPELLINGS = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("127.0.0.01", "127.0.0.1"),
    ("00000127.0.0.1", "87.0.0.1"),  # octal, as the C library reads it
    ("127.0.0.1.", "127.0.0.1"),
    ("2852039166", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("0", "0.0.0.0"),
    ("0.0.0.0", "0.0.0.0"),
    ("[::1]", "::1"),
    ("::ffff:169.254.169.254", "::ffff:169.254.169.254"),
    ("[::ffff:a9fe:a9fe]", "::ffff:169.254.169.254"),
    ("fe80::1%25eth0", "fe80::1%eth0"),
]
NOT_LITERALS = [
    "localhost",
    "crm.test",
    "0x",
    "08.0.0.1",
    "1.2.3.4.5",
    "256.0.0.1",
    "4294967296",
    "0x100000000",
    "1.2.3.4 x",
    "١٢٧.0.0.1",
    "example.com.",
    "",
]


@pytest.mark.parametrize("host,address", SPELLINGS)
def test_every_spelling_of_an_address_is_read(host, address):
    assert ip_literal(host) == ip_address(address)


@pytest.mark.parametrize("host", NOT_LITERALS)
def test_names_and_overflowing_numbers_are_not_addresses(host):
    assert ip_literal(host) is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=20))
def test_whatever_the_c_library_reads_as_ipv4_is_read_the_same(text):
    # getaddrinfo with AI_NUMERICHOST never asks DNS: it is the C library's own reading of a numeric host.
    try:
        infos = socket.getaddrinfo(text, 80, family=socket.AF_INET, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):  # not numeric; or empty labels, refused before the C library
        return
    assert ipv4_literal(text) == IPv4Address(infos[0][4][0])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["dec", "hex", "octal", "short2", "short3"]))
def test_any_ipv4_address_in_any_form_is_itself(value, form):
    octets = IPv4Address(value).packed
    text = {
        "dec": str(value),
        "hex": hex(value),
        "octal": ".".join(f"0{b:o}" for b in octets),
        "short2": f"{octets[0]}.{value & 0xFFFFFF}",
        "short3": f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",
    }[form]
    assert ipv4_literal(text) == IPv4Address(value)


REFUSED = [  # (address, kind); kind None where Python versions name it differently
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"),
    ("fe80::1%eth0", "link_local"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("fd00::1", "private"),
    ("100.64.0.1", None),  # shared address space (carrier-grade NAT)
    ("192.0.2.1", None),  # documentation
    ("203.0.113.80", None),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", None),
    ("255.255.255.255", None),
    ("fec0::1", "site_local"),
    ("64:ff9b:1::1", "not_global"),
    ("2001:db8::1", None),
    # IPv6 carrying a forbidden IPv4 address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link_local"),
    ("::ffff:10.1.2.3", "private"),
    ("::127.0.0.1", "loopback"),
    ("::ffff:0:169.254.169.254", "link_local"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link_local"),
    ("2002:a9fe:a9fe::1", "link_local"),
    ("2002:7f00:1::", "loopback"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo client 127.0.0.1
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address,reason", REFUSED)
def test_non_public_addresses_are_refused_with_their_kind(address, reason):
    problem = address_problem(ip_address(address))
    assert problem is not None and problem[0] == (reason or problem[0])  # None: the kind varies by Python version


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert address_problem(ip_address(address)) is None


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_every_ipv6_embedding_of_a_forbidden_ipv4_is_refused_too(v4):
    if address_problem(v4) is None:
        return
    value = int(v4)
    for v6 in (
        IPv6Address(0xFFFF << 32 | value),  # ::ffff:a.b.c.d
        IPv6Address(0xFFFF << 48 | value),  # ::ffff:0:a.b.c.d
        IPv6Address(int(IPv6Address("64:ff9b::")) | value),  # NAT64
        IPv6Address(0x2002 << 112 | value << 80),  # 6to4
    ):
        assert v4 in embedded_ipv4(v6)
        assert address_problem(v6) is not None, v6
    if value > 1:
        assert address_problem(IPv6Address(value)) is not None  # ::a.b.c.d


def test_the_allow_list_parses_hosts_ports_addresses_and_networks():
    policy = OutboundPolicy.parse(" crm.internal:8443, localhost ,127.0.0.1:9000, [::1]:9001, ::1, 10.0.0.0/8,,")
    loopback, v6_loopback = ip_address("127.0.0.1"), ip_address("::1")
    assert policy.permits("CRM.internal.", 8443, ip_address("10.9.9.9"))
    assert not policy.permits("crm.internal", 8080, ip_address("192.168.1.1"))
    assert policy.permits("localhost", 1, loopback)  # a listed name: any port, whatever it resolves to
    assert policy.permits("2130706433", 9000, loopback)  # an address in any spelling
    assert policy.permits("::ffff:127.0.0.1", 9000, ip_address("::ffff:127.0.0.1"))
    assert not policy.permits("127.0.0.1", 9002, loopback)
    assert policy.permits("::1", 12345, v6_loopback)  # ::1 without a port: any port
    assert policy.permits("10.200.0.1", 80, ip_address("10.200.0.1"))
    assert not policy.permits("11.0.0.1", 80, ip_address("11.0.0.1"))
    assert OutboundPolicy.parse("") == OutboundPolicy.parse(None) == OutboundPolicy()
    for bad in ("crm.internal:http", "10.0.0.0/33", "user@host", "host/path", "127.0.0.1:99999"):
        with pytest.raises(ValueError, match="allow-list entry"):
            OutboundPolicy.parse(bad)


def test_the_setting_is_checked_when_read(monkeypatch):
    monkeypatch.setenv("HERMES_OUTBOUND_ALLOW", "127.0.0.1:9000")
    assert OutboundSettings().outbound_policy().permits("127.0.0.1", 9000, ip_address("127.0.0.1"))
    monkeypatch.setenv("HERMES_OUTBOUND_ALLOW", "10.0.0.0/99")
    with pytest.raises(ValueError, match="hermes_outbound_allow"):
        OutboundSettings()


def stand_in_resolver(answers: dict[str, list[str]], asked: list[str] | None = None):
    async def resolve(host: str, port: int) -> list:
        if asked is not None:
            asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip_address(a) for a in answers[host]]

    return resolve


async def test_literals_need_no_dns_and_any_forbidden_address_of_a_name_refuses_it():
    asked: list[str] = []
    resolver = stand_in_resolver(
        {"public.test": ["8.8.8.8", "2606:4700::1111"], "mixed.test": ["8.8.8.8", "169.254.169.254"]}, asked
    )
    policy = OutboundPolicy()
    assert await policy.addresses("public.test", 443, resolver) == [
        ip_address("8.8.8.8"),
        ip_address("2606:4700::1111"),
    ]
    with pytest.raises(OutboundRefused) as refused:
        await policy.check_url("http://mixed.test/hook", resolver)
    assert (refused.value.reason, refused.value.address, refused.value.host) == (
        "link_local",
        "169.254.169.254",
        "mixed.test",
    )
    assert str(refused.value) == "host mixed.test resolves to a link-local address, not a public one"  # no address
    assert asked == ["public.test", "mixed.test"]
    for url, reason in [
        ("http://2852039166/latest/meta-data", "link_local"),
        ("http://[::ffff:169.254.169.254]/", "link_local"),
        ("https://0x7f.1:6379/", "loopback"),
        ("http://0.0.0.0:4222/", "unspecified"),
        ("http://10.0.0.7/", "private"),
    ]:
        with pytest.raises(OutboundRefused) as refused:
            await policy.check_url(url, resolver)
        assert refused.value.reason == reason, url
        assert refused.value.address in str(refused.value) or "embeds 169.254.169.254" in str(refused.value)
    assert asked == ["public.test", "mixed.test"]  # no literal was looked up
    with pytest.raises(OSError):
        await policy.check_url("http://unknown.test/", resolver)
    allowed = OutboundPolicy.parse("mixed.test")
    assert len(await allowed.check_url("http://mixed.test/", resolver)) == 2
