"""Shared fixtures: a real nats-server with JetStream per test (free port, temp store dir)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hermes_cli.natsserver import free_port, nats_server_args, wait_for_port


@dataclass
class NatsServer:
    """A running nats-server subprocess; ``restart()`` keeps the same port and store dir; ``config``: a configuration
    file (e.g. the bus authorization of ``hermes_proto.credentials.server_config``)."""

    port: int
    store_dir: Path
    proc: subprocess.Popen | None = None
    config: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            nats_server_args(self.port, self.store_dir, config=self.config),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(port=free_port(), store_dir=tmp_path / "jetstream")
    server.start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def bus_env(nats_server: NatsServer, tmp_path: Path) -> dict[str, str]:
    """Environment for a service process pointed at the test NATS server and a temp Hermes home."""
    env = dict(os.environ)
    env.update({"NATS_URL": nats_server.url, "HERMES_HOME": str(tmp_path / "home"), "LOG_LEVEL": "INFO"})
    return env


@pytest.fixture
async def js_client(nats_server: NatsServer) -> AsyncIterator[tuple]:
    """A connected (nc, js) pair with the Hermes streams declared and the data keys' bucket as this process's
    keyring (sealed events are opened once :func:`hermes_proto.keyring.ready` loaded their keys)."""
    from hermes_proto import keyring
    from hermes_proto.bus import connect, ensure_streams
    from hermes_proto.settings import BusSettings

    settings = BusSettings(nats_url=nats_server.url)
    nc = await connect(settings, "test")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js)
    yield nc, js
    keyring.activate(None)
    await nc.close()


async def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05):
    """Poll an (async or sync) predicate until it returns a truthy value; returns it or raises TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def thread_events(js, thread_id: str) -> list:
    """Every event of one thread so far, in log order (an ordered consumer over the thread's subjects)."""
    from hermes_proto import subjects

    return await stored_events(js, subjects.thread_events(thread_id))


async def stored_events(js, subject: str) -> list:
    """Every event stored so far on ``subject`` (wildcards allowed), decoded, in log order."""
    return [await open_event(m.data) for m in await stored_messages(js, subject)]


async def open_command(data: bytes):
    """Decode one stored command, loading its data key first when it is sealed (:mod:`hermes_proto.keyring`)."""
    from hermes_proto import keyring
    from hermes_proto.codec import decode_command

    await keyring.ready((data,))
    return decode_command(data)


async def open_event(data: bytes):
    """Decode one stored event, loading its data key first when it is sealed (:mod:`hermes_proto.keyring`)."""
    from hermes_proto import keyring
    from hermes_proto.codec import decode_event

    await keyring.ready((data,))
    return decode_event(data)


async def stored_dead_letters(js) -> list:
    """Every :class:`~hermes_proto.deadletter.DeadLetter` record in ``HERMES_DLQ`` so far (replay markers left
    out), oldest first."""
    import msgspec

    from hermes_proto.deadletter import DeadLetter

    return [msgspec.json.decode(m.data, type=DeadLetter) for m in await stored_messages(js, "hermes.dlq.*")]


async def stored_messages(js, subject: str) -> list:
    """Every message stored so far on ``subject`` (wildcards allowed), undecoded, in stream order, as
    :class:`hermes_proto.bus.RawMessage` ``(sequence, subject, data, headers)``, as a projection reads them."""
    from hermes_proto.bus import RawMessage

    sub = await js.subscribe(subject, ordered_consumer=True)
    messages = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            messages.append(RawMessage(msg.metadata.sequence.stream, msg.subject, msg.data, msg.headers))
            if msg.metadata.num_pending == 0:
                break
    except TimeoutError:
        pass  # nothing (more) on the subject
    finally:
        await sub.unsubscribe()
    return messages
