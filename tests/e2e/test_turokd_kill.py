"""turokd killed with SIGKILL in the middle of a steady stream, then restarted (issue 5, item 1).

A real ``twistd turokd`` stores a stream of ``sum`` metrics sent straight to SQS; it is killed -9
part-way, while batches are in flight, and started again. SQS redelivers what the dead process
received but had not acknowledged (a short visibility timeout keeps that quick, and a short lease
lets the new process take the dead one's partition within seconds): every slot must end up
stored exactly once (a double count would show in the sums) and none may be missing.
"""
from __future__ import annotations

import signal
import threading
import time

from tests.conftest import running_twistd, wait_for, with_schema_files
from tests.support.sum_stream import (
    AGGREGATION,
    SCHEMAS,
    DrainWatch,
    SumStream,
    audit_store,
    peak_rss_kib,
    queue_depth,
    turokd_ready,
)


def test_turokd_killed_mid_stream_stores_every_point_exactly_once(turok_config, tmp_path):
    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(
        block_slots=6, window_grace_seconds=2, visibility_timeout_seconds=10, receive_wait_seconds=1,
        lease_duration_seconds=6, lease_heartbeat_seconds=1, lease_write_margin_seconds=2, turokd_pollers=2,
        aws_threads=4, self_metrics_interval_seconds=0)
    store = audit_store(config)
    stream = SumStream(config, metrics=30, first_slot=int(time.time()) - 900, seed=11, per_body=5,
                       prefix="kill")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    # one steady stream for the whole test: 60 slots of 30 metrics over 12 seconds
    sender = threading.Thread(target=stream.send_steadily, args=(60, 0.2), daemon=True)
    peaks = []
    with running_twistd("turokd", config, first, turokd_ready, "turokd start") as (log, process):
        sender.start()
        # the kill lands once turokd has stored part of the stream, with batches in flight
        wait_for(lambda: stream.audit(store).stored >= 300, 30, "turokd storing part of the stream", interval=0.2)
        peaks.append(peak_rss_kib(process.pid))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at, sent_at_kill = stream.audit(store), stream.bodies_sent
    time.sleep(1.0)  # the stream goes on while turokd is down
    with running_twistd("turokd", config, second, turokd_ready, "turokd restart") as (log, process):
        watch = DrainWatch(stream, store, config)
        sender.join(30)
        assert not sender.is_alive()
        watch.wait(120)
        peaks.append(peak_rss_kib(process.pid))
    audit = stream.audit(store, rollups=True)
    print(f"\nturokd SIGKILL: sent {audit.sent}, stored {audit.stored}, duplicated {audit.duplicated}, "
          f"lost {audit.lost}, wrong {audit.wrong}, rollups wrong {audit.rollups_wrong}; when killed "
          f"{killed_at.stored} stored of {killed_at.sent} sent ({sent_at_kill} bodies); peak RSS {peaks} KiB")
    assert killed_at.stored < killed_at.sent < audit.sent, "the kill must land in the middle of the stream"
    assert audit.exact and audit.rollups_wrong == 0, audit.examples
    dead_lettered = queue_depth(config, config.dead_letter_queue_name)
    assert not watch.violations, (f"SQS bodies gone from the queue before their data was stored: "
                                  f"{watch.violations[:5]}; {dead_lettered} on the dead-letter queue")
    assert dead_lettered == 0
