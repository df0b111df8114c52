"""``hermes_proto.partitions``: the partition function, the server's mappings and each replica's filters."""

from __future__ import annotations

import pytest

from hermes_proto.partitions import Partition, partition_of, server_config, server_mappings
from hermes_proto.subjects import command_subject, command_type_of


def test_partition_of_is_fnv1a_modulo_n() -> None:
    # FNV-1a 32 of "a" is 0xe40c292c (the algorithm's published test vector); of "" the offset basis
    assert partition_of("a", 2**31) == 0xE40C292C % 2**31 and partition_of("", 7) == 0x811C9DC5 % 7
    assert {partition_of(f"thread-{i}", 3) for i in range(100)} == {0, 1, 2}
    assert partition_of("anything", 1) == 0
    with pytest.raises(ValueError):
        partition_of("x", 0)


def test_one_partition_is_the_single_writer() -> None:
    single = Partition()
    assert single.single and single.owns("any") and single.command_filters() == ["hermes.cmd.>"]
    assert single.suffix("orchestrator-commands") == "orchestrator-commands"
    assert server_mappings(1) == {} and server_config(1) == ""


def test_replicas_split_the_commands_without_overlap() -> None:
    zero, one = Partition(0, 2), Partition(1, 2)
    assert zero.command_filters() == ["hermes.cmd.*.*.0", "hermes.cmd.*"]
    assert one.command_filters() == ["hermes.cmd.*.*.1"] and one.suffix("r") == "r-p1"
    ids = [f"t{i}" for i in range(50)]
    assert all(zero.owns(t) != one.owns(t) for t in ids)
    assert server_mappings(2) == {"hermes.cmd.*.*": "hermes.cmd.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(2,2)}}"}
    assert '"hermes.cmd.*.*": "hermes.cmd.{{wildcard(1)}}' in server_config(2)
    with pytest.raises(ValueError):
        Partition(2, 2)


def test_a_command_names_its_thread_when_it_can() -> None:
    from hermes_proto.commands import RateThread
    from hermes_proto.ids import utcnow

    rate = RateThread(command_id="c", issued_at=utcnow(), thread_id="abc", rating=5)
    assert (
        command_subject(rate) == "hermes.cmd.rate_thread.abc"
        and command_subject(RateThread) == "hermes.cmd.rate_thread"
    )
    odd = RateThread(command_id="c", issued_at=utcnow(), thread_id="a b.c", rating=5)
    assert command_subject(odd) == "hermes.cmd.rate_thread"  # not a subject token: no partition
    assert command_type_of("hermes.cmd.rate_thread.abc.1") == "rate_thread" and command_type_of("x.y") == ""
