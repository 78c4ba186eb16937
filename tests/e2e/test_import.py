"""``turok-import`` into the running stack: the real indexer takes the names from the index queue and
graphite-web's HTTP ``/render`` answers each archive's range as ``whisper.fetch`` does."""
import subprocess
import sys
import time
import uuid

from tests.conftest import wait_for
from tests.e2e.conftest import graphite_get
from tests.support.whisper_trees import carbon_path, make_file
from turok_core.storage.tables import TABLE_ABSENT_TTL

# the stack's schema files are the shipped ones: 10s:1d,1min:30d,1h:2y; sum for .count, max for .max
ARCHIVES = [(10, 8640), (60, 43200), (3600, 17520)]


def test_imported_history_renders_over_http_as_whisper_fetch(stack, tmp_path):
    import whisper

    now = int(time.time())
    prefix = f"imported.e{uuid.uuid4().hex[:6]}"
    files = {f"{prefix}.requests.count": ("sum", 0.0, "int"), f"{prefix}.latency.max": ("max", 0.1, "double"),
             f"{prefix}.load": ("average", 0.5, "decimal")}
    root = tmp_path / "whisper"
    for seed, (name, (method, xff, kind)) in enumerate(files.items()):
        make_file(carbon_path(root, name), ARCHIVES, method, xff, seed=seed, days=2.5, kind=kind, now=now)
    done = subprocess.run([sys.executable, "-m", "turok_core.importer.cli", "--jobs", "1", str(root)],
                          cwd=str(tmp_path), env=stack.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 file(s) to import" in done.stdout and "imported 3 file(s)" in done.stdout

    wait_for(lambda: len(graphite_get(stack, "/metrics/find", query=f"{prefix}.**")) >= 4, 30,
             "the imported names in graphite-web")
    def compare(start: int, end: int) -> bool:
        series = {s["target"]: s for s in graphite_get(stack, "/render", target=list(files), format="json",
                                                       **{"from": start, "until": end})}
        for name in files:
            (w_start, _w_end, w_step), expected = whisper.fetch(str(carbon_path(root, name)), start, end)
            points = series[name]["datapoints"]
            assert [t for _v, t in points] == list(range(w_start, w_start + w_step * len(expected), w_step))
            assert [v for v, _t in points] == expected, (name, start, end)
            assert sum(v is not None for v in expected) > len(expected) // 3
        return True

    for start, end in [(now - 3 * 3600, now - 600), (now - 20 * 3600, now - 19 * 3600),  # 10 s
                       (now - 40 * 3600, now - 30 * 3600), (now - 60 * 3600, now - 2 * 86400)]:  # 1 min
        # graphite-web believes a day table missing for TABLE_ABSENT_TTL after it last found none
        # (an earlier test may have asked for these days before the import made their tables)
        wait_for(lambda: compare(start, end), TABLE_ABSENT_TTL + 5, f"the render of {start}-{end} as whisper's")
        compare(start, end)  # the assertion itself, if the wait ran out
