"""The consumer runtime on a real nats-server: a handler that runs long keeps its message (``in_progress`` every third of
the ack wait), and a message whose process was killed mid-handling is delivered again within one ack wait
(``hermes_proto.bus.ACK_WAIT_S``, 5 s), so a job in flight when its service died goes on within ~5 s of the restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import wait_until

from hermes_proto import subjects
from hermes_proto.bus import ACK_WAIT_S, ConsumerRunner, ConsumerSpec, Delivery

SUBJECT = "hermes.cmd.test_redelivery"
DURABLE = "redelivery-test"


def spec(handler, ack_wait_s: float = ACK_WAIT_S) -> ConsumerSpec:  # noqa: ANN001
    return ConsumerSpec(
        stream=subjects.COMMANDS_STREAM,
        durable=DURABLE,
        filter_subjects=[SUBJECT],
        decode=lambda data: data,
        handler=handler,
        ack_wait_s=ack_wait_s,
    )


async def test_a_long_handler_keeps_its_message(js_client) -> None:
    nc, js = js_client
    deliveries: list[int] = []

    async def slow(delivery: Delivery) -> None:
        deliveries.append(delivery.deliveries)
        await asyncio.sleep(4.0)  # over two ack waits of 1.5 s

    runner = ConsumerRunner(nc, js, spec(slow, ack_wait_s=1.5), "test")
    task = asyncio.create_task(runner.run())
    await js.publish(SUBJECT, b"work", headers={"Nats-Msg-Id": "one"})
    await wait_until(lambda: deliveries, timeout_s=10)
    await asyncio.sleep(5.0)
    runner.stop()
    await task
    assert deliveries == [1]  # never delivered again while it ran
    assert (await js.consumer_info(subjects.COMMANDS_STREAM, DURABLE)).num_ack_pending == 0


async def test_a_killed_handlers_message_comes_back_within_one_ack_wait(js_client, nats_server, tmp_path) -> None:
    nc, js = js_client
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import asyncio, pathlib
        from hermes_proto.bus import ConsumerRunner, ConsumerSpec, connect
        from hermes_proto.settings import BusSettings

        async def main():
            nc = await connect(BusSettings(nats_url={nats_server.url!r}), "doomed")
            js = nc.jetstream()
            async def hang(delivery):
                pathlib.Path({str(started)!r}).write_text("x")
                await asyncio.sleep(600)
            spec = ConsumerSpec(stream="HERMES_COMMANDS", durable={DURABLE!r}, filter_subjects=[{SUBJECT!r}],
                                decode=lambda data: data, handler=hang)
            await ConsumerRunner(nc, js, spec, "doomed").run()

        asyncio.run(main())
    """)
    doomed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await js.publish(SUBJECT, b"work", headers={"Nats-Msg-Id": "two"})
        await wait_until(lambda: started.exists(), timeout_s=30)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        killed_at = time.monotonic()
    finally:
        if doomed.poll() is None:
            doomed.kill()

    got: list[tuple[float, int]] = []

    async def finish(delivery: Delivery) -> None:
        got.append((time.monotonic() - killed_at, delivery.deliveries))

    runner = ConsumerRunner(nc, js, spec(finish), "test")  # the restarted service, on the same durable
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: got, timeout_s=ACK_WAIT_S + 10)
    runner.stop()
    await task
    after_s, deliveries = got[0]
    assert deliveries == 2 and after_s <= ACK_WAIT_S + 1.0, got  # not the 30 s it used to be
    assert Path(started).exists()
