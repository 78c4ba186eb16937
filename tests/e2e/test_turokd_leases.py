"""Several real ``twistd turokd`` dividing metrics-queue partitions through leases (issue 13, item 1).

Three turokd on four partitions store a steady stream of ``sum`` metrics; one is killed with
SIGKILL mid-stream: its partitions move to the others once its leases expire, a fourth turokd
joins and the leases rebalance, and every slot ends up stored exactly once. A turokd paused with
SIGSTOP past its lease writes nothing after SIGCONT: it drops what it held, and the partitions'
new owner stores it. Leases are short here (``lease_duration_seconds``) so the moves take seconds.
"""
from __future__ import annotations

import contextlib
import re
import signal
import threading
import time

import pytest

from tests.conftest import free_port, running_twistd, wait_for, with_schema_files
from tests.support.sum_stream import (
    AGGREGATION,
    SCHEMAS,
    DrainWatch,
    SumStream,
    audit_store,
    dead_letter_depth,
    queue_depth,
    turokd_ready,
)
from turok_core.runtime.aws import make_client
from turok_core.runtime.provision import provision
from turok_core.storage.leases import LeaseTable

pytestmark = pytest.mark.processes
PARTITIONS = 4


def partitioned_config(turok_config, tmp_path):
    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(
        queue_partitions=PARTITIONS, lease_duration_seconds=6, lease_heartbeat_seconds=1,
        lease_write_margin_seconds=2, block_slots=6, window_grace_seconds=2, visibility_timeout_seconds=10,
        receive_wait_seconds=1, turokd_pollers=1, aws_threads=4, self_metrics_interval_seconds=0)
    provision(config)  # the partition queues, each with its dead-letter queue
    return config


def owners(config, now=None) -> dict[int, int]:
    """Partition → pid of the turokd holding its live lease (worker ids are host-pid-random)."""
    view = LeaseTable(make_client("dynamodb", config), config.lease_table_name).read()
    now = time.time() if now is None else now
    return {p: int(lease.owner.rsplit("-", 2)[1]) for p, lease in view.leases.items() if not lease.free_at(now)}


def start_turokd(stack: contextlib.ExitStack, config, tmp_path, name: str):
    directory = tmp_path / name
    directory.mkdir()
    # each turokd answers cache queries on a port of its own
    return stack.enter_context(running_twistd("turokd", config.replace(cache_port=free_port()), directory,
                                              turokd_ready, f"turokd {name} start"))


def test_three_turokd_on_four_partitions_survive_a_kill_and_a_join_storing_every_slot_once(turok_config, tmp_path):
    config = partitioned_config(turok_config, tmp_path)
    store = audit_store(config)
    stream = SumStream(config, metrics=24, first_slot=int(time.time()) - 900, seed=13, per_body=6, prefix="leases")
    sender = threading.Thread(target=stream.send_steadily, args=(50, 0.3), daemon=True)
    with contextlib.ExitStack() as stack:
        processes = {name: start_turokd(stack, config, tmp_path, name)[1] for name in ("a", "b", "c")}
        pids = {name: process.pid for name, process in processes.items()}
        held = wait_for(lambda: (lambda o: o if len(o) == PARTITIONS and len(set(o.values())) == 3 else None)(
            owners(config)), 30, "the three turokd sharing the four partitions")
        sender.start()
        wait_for(lambda: stream.audit(store).stored >= 200, 60, "part of the stream stored", interval=0.3)
        victim = next(name for name in ("a", "b", "c") if list(held.values()).count(pids[name]) == 1)
        moved = [p for p, pid in owners(config).items() if pid == pids[victim]]
        processes[victim].send_signal(signal.SIGKILL)
        processes[victim].wait(10)
        killed_at = stream.audit(store)
        survivors = {pids[name] for name in ("a", "b", "c") if name != victim}
        after_kill = wait_for(lambda: (lambda o: o if len(o) == PARTITIONS and set(o.values()) <= survivors
                                       else None)(owners(config)), 30, "the killed turokd's partitions moving")
        assert moved and all(after_kill[p] in survivors for p in moved)
        joiner = start_turokd(stack, config, tmp_path, "d")[1]
        rebalanced = wait_for(lambda: (lambda o: o if len(o) == PARTITIONS and joiner.pid in o.values()
                                       and set(o.values()) <= survivors | {joiner.pid} else None)(owners(config)),
                              30, "the leases rebalancing onto the joining turokd")
        assert max(list(rebalanced.values()).count(pid) for pid in set(rebalanced.values())) <= 2
        watch = DrainWatch(stream, store, config)
        sender.join(60)
        assert not sender.is_alive()
        watch.wait(120)
    audit = stream.audit(store, rollups=True)
    print(f"\nleases: sent {audit.sent}, stored {audit.stored}, duplicated {audit.duplicated}, lost {audit.lost}, "
          f"wrong {audit.wrong}, rollups wrong {audit.rollups_wrong}; {killed_at.stored} stored when killed; "
          f"owners {held} → {after_kill} → {rebalanced}")
    assert killed_at.stored < killed_at.sent < audit.sent, "the kill must land in the middle of the stream"
    assert audit.exact and audit.rollups_wrong == 0, audit.examples
    assert not watch.violations, f"SQS bodies deleted before their data was stored: {watch.violations[:5]}"
    assert dead_letter_depth(config) == 0


def test_a_turokd_paused_past_its_lease_writes_nothing_after_it_resumes(turok_config, tmp_path):
    config = partitioned_config(turok_config, tmp_path)
    store = audit_store(config)
    # slots ahead of now: their blocks stay open for minutes, so nothing is written before the pause
    stream = SumStream(config, metrics=16, first_slot=int(time.time()) + 600, seed=17, per_body=4, prefix="pause")
    with contextlib.ExitStack() as stack:
        paused_log, paused = start_turokd(stack, config, tmp_path, "paused")
        wait_for(lambda: set(owners(config).values()) == {paused.pid} and len(owners(config)) == PARTITIONS, 30,
                 "the first turokd holding every partition")
        for _ in range(6):
            stream.send_slot()
        bodies = stream.bodies_sent
        sqs = make_client("sqs", config)

        def visible() -> int:  # waiting to be received
            total = 0
            for p in range(PARTITIONS):
                url = sqs.get_queue_url(QueueName=f"{config.queue_name}-{p}")["QueueUrl"]
                attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
                total += int(attrs["ApproximateNumberOfMessages"])
            return total
        wait_for(lambda: visible() == 0 and queue_depth(config) == bodies, 30, "the first turokd holding every body")
        paused.send_signal(signal.SIGSTOP)
        try:
            successor_log, successor = start_turokd(stack, config, tmp_path, "successor")
            wait_for(lambda: set(owners(config).values()) == {successor.pid} and len(owners(config)) == PARTITIONS,
                     30, "the paused turokd's leases expiring and moving")
        finally:
            paused.send_signal(signal.SIGCONT)
        # resumed: it cannot prove it holds its partitions, so it drops them and their messages
        wait_for(lambda: paused_log.read_text().count("dropped") >= PARTITIONS, 20, "the resumed turokd dropping")
        assert set(owners(config).values()) == {successor.pid}
        wait_for(lambda: "took the lease" in successor_log.read_text(), 5, "the successor's leases")
        paused.terminate()  # a graceful stop of the resumed turokd: it holds nothing to write
        paused.wait(15)
        # the paused one made what it held visible again: the successor receives all of it, and
        # writes it at its stop
        def all_received() -> bool:  # nothing visible, three times a second apart
            for _ in range(3):
                time.sleep(1)
                if visible():
                    return False
            return True
        wait_for(all_received, 60, "the successor receiving every body")
        successor.terminate()
        successor.wait(30)
    audit = stream.audit(store, rollups=True)
    assert audit.exact and audit.rollups_wrong == 0, audit.examples
    assert queue_depth(config) == 0 and dead_letter_depth(config) == 0
    text = paused_log.read_text()
    final = re.findall(r"'blocks_written': (\d+)", text)[-1]
    assert final == "0", "the paused turokd wrote blocks after it lost its leases"
    assert "wrote 0 open block(s) at shutdown" in text
