"""``turok-import`` as a user runs it, on moto: cost first, ``--dry-run``, corrupt files counted, and
an import killed with SIGKILL half way then run again ending with the same tables as one
uninterrupted run, without writing any block twice."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, with_schema_files
from tests.support.whisper_trees import NOW, carbon_path, make_file
from turok_core.dev.stack import write_config
from turok_core.runtime.aws import make_client
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.leases import LeaseTable
from turok_core.storage.table_catalog import list_table_names
from turok_core.storage.table_names import parse_table_name

pytestmark = pytest.mark.processes

SCHEMAS = "[all]\npattern = .*\nretentions = 1min:1d,1h:7d\n"
AGGREGATION = "[all]\npattern = .*\naggregationMethod = average\nxFilesFactor = 0.5\n"
FILES = 150


def command(ini, journal, root, *extra):
    return [sys.executable, "-m", "turok_core.importer.cli", "--config", str(ini), "--journal", str(journal),
            "--now", str(NOW), *extra, str(root)]


def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUROK_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(args, cwd):
    return subprocess.run(args, cwd=str(cwd), env=environment(), capture_output=True, text=True, timeout=180)


def tables(client, config):
    """Every stored block: {(day table without the prefix, metric, start): datapoints bytes}."""
    found = {}
    prefix = config.table_prefix + config.table_joiner
    for table in list_table_names(client):
        if parse_table_name(table, config.table_prefix, config.table_joiner):  # not the lease table
            kwargs = {"TableName": table, "ConsistentRead": True}
            while True:
                page = client.scan(**kwargs)
                for item in page["Items"]:
                    if item["metric"]["S"] == RECORD_METRIC:
                        continue
                    found[(table[len(prefix):], item["metric"]["S"], item["start_time"]["N"])] = \
                        bytes(item["datapoints"]["B"])
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return found


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "whisper"
    model = tmp_path / "model.wsp"
    make_file(model, [(60, 1440), (3600, 168)], "average", 0.5, seed=1, days=2, kind="double")
    for i in range(FILES):
        path = carbon_path(root, f"servers.host{i:03d}.cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, path)
    (root / "servers" / "broken.wsp").write_bytes(model.read_bytes()[:1000])  # truncated
    return root


def test_killed_import_resumes_to_the_tables_of_an_uninterrupted_one(turok_config, tmp_path, tree):
    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION)
    client = make_client("dynamodb", config)
    ini = tmp_path / "turok.ini"
    write_config(config, ini)

    dry = run(command(ini, tmp_path / "dry.journal", tree, "--dry-run"), tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"{FILES + 1} file(s) to import" in dry.stdout and "write units" in dry.stdout and "$" in dry.stdout
    assert tables(client, config) == {}

    # killed half way: SIGKILL to the command and its worker processes
    journal = tmp_path / "killed.journal"
    process = subprocess.Popen(command(ini, journal, tree, "--jobs", "2"), cwd=str(tmp_path), env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the import finished before it could be killed: make it bigger"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        process.stdout.close()
        process.stderr.close()
    journaled = journal.read_bytes().count(b"\n")
    stored_at_kill = len(tables(client, config))
    assert 0 < journaled < FILES

    resumed = run(command(ini, journal, tree, "--jobs", "2"), tmp_path)
    assert resumed.returncode == 1, resumed.stderr  # the truncated file
    assert f"{FILES - journaled} file(s) to import" not in resumed.stdout  # the broken one counts too
    assert f"{journaled} file(s) imported before" in resumed.stdout
    assert re.search(r"skipped .*broken\.wsp: truncated: 1000 bytes", resumed.stderr)
    assert "1 file(s) skipped" in resumed.stderr
    written = int(re.search(r"blocks, (\d+) written", resumed.stdout).group(1))

    # the same tree imported at once into other tables
    other = config.replace(table_prefix=config.table_prefix + "x")
    other_ini = tmp_path / "other.ini"
    write_config(other, other_ini)
    whole = run(command(other_ini, tmp_path / "whole.journal", tree, "--jobs", "2"), tmp_path)
    assert whole.returncode == 1 and "1 file(s) skipped" in whole.stderr
    expected = tables(client, other)
    assert len(expected) == int(re.search(r"points, (\d+) blocks", whole.stdout).group(1)) > FILES
    assert tables(client, config) == expected  # byte for byte
    assert stored_at_kill + written == len(expected)  # no block written twice

    # and once more: everything journaled, nothing read or written
    again = run(command(ini, journal, tree), tmp_path)
    assert again.returncode == 1 and f"{FILES} file(s) imported before" in again.stdout
    assert "imported 0 file(s)" in again.stdout and tables(client, config) == expected
    # every run that finished took its mark out of the lease table; the killed one's expires by itself
    marks = LeaseTable(client, config.lease_table_name).read().imports
    assert len(marks) == 1 and all(before == NOW + 1 for _expires, before in marks.values())
