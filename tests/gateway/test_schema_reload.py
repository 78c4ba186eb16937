"""The gateway notices an edit of the schema files while it runs (``model/schema_watch.py``):
points accepted after the next check are windowed at the new files' resolution; a broken edit is
logged and the previous files stay in force."""
from __future__ import annotations

import os

from twisted.logger import formatEvent, globalLogPublisher

from gateway.service import GatewayService
from tests.gateway.test_gateway_service import T0, RefusingQueue, feed
from tests.support.fakes import ImmediatePool, ImmediateReactor
from turok_core.model.config import TurokConfig
from turok_core.wire.codec import decode_body


def write(path, text, bump):
    path.write_text(text)
    os.utime(path, ns=(bump * 10**9, bump * 10**9))


def resolutions(queue, metric):
    return {m.resolution for body in queue.sent for m in decode_body(body) if m.metric == metric}


def test_points_after_an_edit_follow_the_new_files_and_a_broken_edit_is_refused(tmp_path):
    schemas, aggregation = tmp_path / "schemas.conf", tmp_path / "aggregation.conf"
    write(schemas, "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n", 1)
    write(aggregation, "[all]\npattern = .*\naggregationMethod = sum\nxFilesFactor = 0\n", 1)
    reactor = ImmediateReactor()
    reactor.advance(T0)
    queue = RefusingQueue()
    config = TurokConfig(window_grace_seconds=2, self_metrics_interval_seconds=0, spool_dir=str(tmp_path / "spool"),
                         schemas_file=str(schemas), aggregation_file=str(aggregation))
    gateway = GatewayService(config, reactor=reactor, queue=queue, pool=ImmediatePool())
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    gateway.startService()
    try:
        feed(gateway, reactor, b"edit.a 1 %d\n" % (T0 - 5))
        write(schemas, "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n[broken\n", 2)
        for _ in range(65):  # a minute of flushes: the edit is seen, refused and logged once
            reactor.advance(1.0)
        assert any("edited but refused" in formatEvent(e) for e in events)
        feed(gateway, reactor, b"edit.b 2 %d\n" % (reactor.seconds() - 5))

        write(schemas, "[all]\npattern = .*\nretentions = 1min:1d,1h:30d\n", 3)
        for _ in range(65):
            reactor.advance(1.0)
        assert any("edited: in force from now on" in formatEvent(e) for e in events)
        feed(gateway, reactor, b"edit.a 3 %d\nedit.c 4 %d\n" % ((reactor.seconds() - 5,) * 2))
        for _ in range(70):
            reactor.advance(1.0)
    finally:
        globalLogPublisher.removeObserver(events.append)
        gateway.stopService()
    assert resolutions(queue, "edit.b") == {10}  # the broken edit changed nothing
    assert resolutions(queue, "edit.c") == {60}
    assert resolutions(queue, "edit.a") == {10, 60}  # cached before the edit, looked up again after it
