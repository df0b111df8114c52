"""TLS for a bus that other hosts reach (issue 21): a real nats-server with the generated authorization and a ``tls``
block (certificates from a test CA made by ``trustme``); a service connects through ``hermes_proto.bus.connect`` with
``NATS_TLS_*`` settings and its NKey, and a client that does not trust the CA, or (mutual TLS) has no certificate, is
refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import nats
import pytest
import trustme
from conftest import NatsServer

from hermes_proto.access import grants
from hermes_proto.bus import close, connect
from hermes_proto.credentials import generate, server_config, tls_block
from hermes_proto.settings import BusSettings

from hermes_cli.natsserver import free_port


def _start(tmp_path: Path, mutual: bool) -> tuple[NatsServer, dict, trustme.CA]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "server-key.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    table = grants(["talos"])
    seeds = generate(tmp_path / "credentials", list(table))
    tls = tls_block(tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "ca.pem" if mutual else None)
    (tmp_path / "nats.conf").write_text(server_config(table, seeds, tls=tls))
    server = NatsServer(port=free_port(), store_dir=tmp_path / "store", config=tmp_path / "nats.conf")
    server.start()
    return server, seeds, ca


@pytest.mark.parametrize("mutual", [False, True])
async def test_an_edge_connects_over_tls_with_its_key_and_an_untrusted_client_is_refused(tmp_path, mutual) -> None:
    server, seeds, ca = _start(tmp_path, mutual)
    url = f"tls://127.0.0.1:{server.port}"
    try:
        extra = {}
        if mutual:
            client_cert = ca.issue_cert("talos-edge.example")
            client_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "edge.pem"))
            extra = {"nats_tls_cert_file": tmp_path / "edge.pem"}
        settings = BusSettings(
            nats_url=url, nats_nkey_seed_file=seeds["edge-talos"], nats_tls_ca_file=tmp_path / "ca.pem", **extra
        )
        nc = await connect(settings, "edge-over-tls", connect_timeout_s=5)
        assert nc.is_connected and nc.connected_url.scheme == "tls"
        await nc.publish("hermes.heartbeat.talos", b"alive")
        await nc.flush()
        await close(nc)

        untrusting = ssl.create_default_context()  # the system's CAs only: not the test CA
        with pytest.raises((ssl.SSLError, nats.errors.Error, OSError)):
            await nats.connect(url, tls=untrusting, nkeys_seed=str(seeds["edge-talos"]), allow_reconnect=False)
        if mutual:
            trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))  # but no client certificate
            with pytest.raises((ssl.SSLError, nats.errors.Error, OSError)):
                await nats.connect(
                    url, tls=trusting, nkeys_seed=str(seeds["edge-talos"]), allow_reconnect=False, connect_timeout=2
                )
    finally:
        server.stop()
