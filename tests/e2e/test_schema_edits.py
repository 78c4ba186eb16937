"""A schema edited between two days of data, on real processes: graphite-web renders both parts at
their own resolutions, and the keeper's plan keeps the old resolution's tables until their old
retention ends.

Yesterday's points go through a gateway and turokd running the old files (``10s:2d,1min:30d``
for ``e2e.edit.*``); both stop, and the whole stack starts on the same endpoint with the edited
files (``30s:7d,5min:1y``) and takes today's points. Nothing is rewritten in between.
"""
from __future__ import annotations

import json
import socket
import time

from tests.conftest import ROOT, free_port, running_twistd, wait_for, with_schema_files
from tests.e2e.conftest import graphite_get
from turok_core.dev.stack import DevStack
from turok_core.runtime.aws import make_client
from turok_core.storage.tables import BlockStore

OLD = "[edit]\npattern = ^e2e\\.edit\\.\nretentions = 10s:2d,1min:30d\n\n[default]\npattern = .*\nretentions = 60s:1d\n"
NEW = "[edit]\npattern = ^e2e\\.edit\\.\nretentions = 30s:7d,5min:1y\n\n[default]\npattern = .*\nretentions = 60s:1d\n"
DAY = 86400
METRIC = "e2e.edit.cpu"


def send(port: int, lines: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\n".join(lines) + "\n").encode())


def test_render_across_an_edit_and_the_keepers_plan(turok_config, tmp_path, capsys):
    from keeper.cli import main as keeper

    now = int(time.time())
    yesterday = [(t, float(t % 97)) for t in range(now - DAY - 900 - now % 10, now - DAY - 300, 10)]
    today = [(t, float(t % 89)) for t in range(now - 900 - now % 30, now - 120, 30)]
    base = turok_config.replace(window_grace_seconds=1, flush_interval_seconds=0.5, plaintext_port=free_port(),
                                plaintext_udp_port=free_port(), pickle_port=free_port(), statsd_port=free_port(),
                                graphite_port=free_port(), index_refresh_seconds=0.5)
    (tmp_path / "old").mkdir()
    old = with_schema_files(base, tmp_path / "old", OLD, "")
    store = BlockStore(make_client("dynamodb", old), old)
    with running_twistd("turokd", old, tmp_path / "old", lambda log: "took the lease" in log.read_text(),
                        "turokd on the old files"):
        with running_twistd("turok-gateway", old, tmp_path / "old", lambda log: "plaintext on" in log.read_text(),
                            "gateway on the old files"):
            send(old.plaintext_port, [f"{METRIC} {v} {t}" for t, v in yesterday])
            minute = yesterday[0][0] - yesterday[0][0] % 60 + 60
            wait_for(lambda: store.fetch_series([METRIC], 60, minute, minute + 60)[METRIC][0] is not None, 30,
                     "yesterday's 10 s points rolled up into minutes by the old files")
    tables_before = {t for t in store.table_names() if t.startswith(old.table_prefix)}
    assert any(t.endswith("_10sec") for t in tables_before) and any(t.endswith("_1min") for t in tables_before)

    (tmp_path / "new").mkdir()
    new = with_schema_files(base, tmp_path / "new", NEW, "")
    stack = DevStack(new, tmp_path / "stack", extra_env={"PYTHONPATH": str(ROOT)})
    try:
        stack.start(timeout=90)
        send(new.plaintext_port, [f"{METRIC} {v} {t}" for t, v in today])

        def rendered():
            series = graphite_get(stack, "/render", target=METRIC, format="json",
                                  **{"from": now - DAY - 1200, "until": now})
            points = {t: v for v, t in series[0]["datapoints"]} if series else {}
            return points if points.get(today[-1][0]) is not None else None

        points = wait_for(rendered, 40, "today's 30 s points through graphite-web")
    finally:
        stack.stop()
    # one series at the finer step: yesterday's 10 s values as stored, each 30 s value of today in
    # the three 10 s slots it covers
    assert {t: points[t] for t, _v in yesterday} == dict(yesterday)
    assert all(points[t] == points[t + 10] == points[t + 20] == v for t, v in today)

    # the keeper (plan only): the old resolutions' tables stay for their old retention, then go
    def planned(at: int) -> dict:
        assert keeper(["--config", str(stack.config_path), "--json", "--now", str(at)]) == 0
        plan = json.loads(capsys.readouterr().out)
        return {"delete": {d["resolution"] for d in plan["delete"]},
                "unknown": {d["resolution"] for d in plan["unknown_kept"]}}

    assert planned(now) == {"delete": set(), "unknown": set()}
    assert planned(now + 3 * DAY)["delete"] == {"10sec"}
    assert planned(now + 32 * DAY)["delete"] == {"10sec", "1min", "30sec"}
