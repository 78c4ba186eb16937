"""S3 index races: two indexers and the keeper's index hygiene at once (issue 5, item 6).

Every announced metric must end up in the index, and a name the keeper prunes must stay pruned
unless its data came back. The first tests pin down the hygiene race deterministically (a point
arrives in a table other than today's between the keeper's check of a name and its removal); the
last one runs two real ``twistd turok-indexer`` processes and a real ``turok-keeper --apply``
against each other on a one-shard index, where every write is a compare-and-swap race.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

import keeper.apply as apply_module
from keeper.apply import Applier, list_tables
from keeper.plan import plan_for
from tests.conftest import ROOT, VENV_BIN, running_twistd, wait_for, with_schema_files
from tests.support.faultproxy import FaultProxy
from tests.support.index_shards import read_shard
from tests.support.sum_stream import queue_depth
from turok_core.dev.stack import write_config
from turok_core.index.s3_store import IndexStore
from turok_core.index.shards import shard_of
from turok_core.model.schemas import load_schemas
from turok_core.model.timefmt import day_start
from turok_core.runtime.aws import make_client
from turok_core.storage.tables import BlockStore
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.queues import MessageQueue

DAY = 86400
STEP = 10
SCHEMAS = f"[all]\npattern = .*\nretentions = {STEP}s:2d\n"
AGGREGATION = "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = sum\n"


def index_names(config) -> set[str]:
    index = IndexStore(make_client("s3", config), config)
    return set().union(*(read_shard(index, shard)[0] for shard in range(index.shard_count())))


def keeper_setup(config, tmp_path, dead, now):
    """An expired day table holding ``dead`` (and their names in the index); yesterday's table exists."""
    config = with_schema_files(config, tmp_path, SCHEMAS, AGGREGATION)
    store = BlockStore(make_client("dynamodb", config), config)
    expired = day_start(now) - 5 * DAY
    store.write_slots([(name, STEP, expired + 60 * i, 1.0) for i, name in enumerate(dead)])
    store.ensure_table(store.table_for(now - DAY, STEP))
    IndexStore(make_client("s3", config), config).add_names(dead)
    return config, store


@pytest.mark.parametrize("where", ["yesterday", "new-table"])
def test_a_name_that_returns_outside_todays_tables_during_pruning_stays_indexed(where, turok_config, tmp_path,
                                                                                monkeypatch):
    """turokd stores a late point (yesterday's table) or a future one (tomorrow's table, made after
    the keeper listed the tables) for a pruned name and announces it; the indexer adds the name
    (already there), then the keeper's removal takes it out. The keeper must look for the name
    again wherever data may have come back, not only in today's tables, or the name stays out of
    the index while its data is stored (turokd announces a name once a day)."""
    now = int(time.time())
    config, store = keeper_setup(turok_config, tmp_path, ["race.back", "race.gone"], now)
    when = now - DAY if where == "yesterday" else day_start(now) + DAY + 600
    client, s3 = make_client("dynamodb", config), make_client("s3", config)

    class Concurrently(IndexStore):
        def remove_names(self, names):
            # between the keeper's check of the names and their removal: turokd and the indexer
            store.write_slots([("race.back", STEP, when - when % STEP, 5.0)])
            IndexStore(s3, config).add_names(["race.back"])
            return super().remove_names(names)

    monkeypatch.setattr(apply_module, "IndexStore", Concurrently)
    # with --days-ahead 0 the plan neither lists nor creates tomorrow's table
    plan = plan_for(load_schemas(config), list_tables(client), config.table_prefix, config.table_joiner,
                    now, days_ahead=0)
    applier = Applier(client, config, s3_client=s3)
    outcomes = applier.apply(plan)
    assert [o.status for o in outcomes if o.action.kind == "delete"] == ["done"]
    report = applier.hygiene
    assert report.error == "" and sorted(report.removed) == ["race.back", "race.gone"]
    assert report.readded == ["race.back"]
    assert index_names(config) == {"race.back"}


def final_counters(log) -> dict:
    """The counters a stopped service logged last."""
    line = [line for line in log.read_text().splitlines() if "counters: {" in line][-1]
    return ast.literal_eval(line[line.index("counters: {") + len("counters: "):])


def indexer_ready(log):
    return "poller(s) on queue" in log.read_text()


def run_keeper(config_file, cwd):
    """``turok-keeper --apply --json`` on the checkout's code, as cron would start it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUROK_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([str(VENV_BIN / "turok-keeper"), "--config", str(config_file), "--apply", "--json",
                           "--days-ahead", "0"], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_indexers_and_the_keeper_pruning_at_once(moto_endpoint, turok_config, tmp_path):
    """Two real indexers add a stream of announced names to a one-shard index (every write a
    compare-and-swap race) while real keeper runs prune the names of expired tables, and names
    whose data comes back meanwhile (late, future and current points) are announced again."""
    rounds, per_round = 3, 24
    with FaultProxy(moto_endpoint) as proxy:  # S3 compare-and-swap as atomic as S3's (see faultproxy)
        config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(
            aws_endpoint_url=proxy.url, index_shards=1, indexer_pollers=2, receive_wait_seconds=1,
            visibility_timeout_seconds=10, self_metrics_interval_seconds=0)
        config_file = tmp_path / "turok.ini"
        write_config(config, config_file)
        store = BlockStore(make_client("dynamodb", config), config)
        queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
        now = int(time.time())
        today = day_start(now)
        store.ensure_table(store.table_for(now - DAY, STEP))
        announced: set[str] = set()
        dead: set[str] = set()
        returned: set[str] = set()
        kept: set[str] = set()
        reports = []

        def announce(names):
            queue.send(encode_announcements(names, 2000))  # small bodies: many concurrent index writes
            announced.update(names)

        def stream(round_number, stop):
            """Names announced for the first time, steadily, until the keeper run ends."""
            count = 0
            while not stop.is_set() and count < 400:
                announce([f"live.r{round_number}.n{count + i}" for i in range(5)])
                count += 5
                time.sleep(0.02)

        def comeback(names, expired_table, stop):
            """Pruning candidates whose data comes back while the keeper prunes: stored, then announced.

            They start once the keeper has deleted the expired table, that is while its index
            hygiene checks and removes the names that table held."""
            client = make_client("dynamodb", config)
            deadline = time.monotonic() + 60
            while expired_table in list_tables(client) and not stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            places = [now - DAY, now, today + DAY + 600]  # a late point, a current one, a future one
            for number, name in enumerate(names):
                when = places[number % 3]
                store.write_slots([(name, STEP, when - when % STEP, 1.0)])
                announce([name])
                returned.add(name)
                if stop.wait(0.03):
                    break

        dirs = [tmp_path / "indexer-a", tmp_path / "indexer-b"]
        for d in dirs:
            d.mkdir()
        with running_twistd("turok-indexer", config, dirs[0], indexer_ready, "indexer a"), \
                running_twistd("turok-indexer", config, dirs[1], indexer_ready, "indexer b"):
            for round_number in range(rounds):
                # an expired day table: names only there (pruned), names also in yesterday's table (kept)
                expired = today - (5 + round_number) * DAY
                candidates = [f"old.r{round_number}.n{i}" for i in range(per_round)]
                staying = [f"kept.r{round_number}.n{i}" for i in range(per_round // 3)]
                store.write_slots([(n, STEP, expired + 60 * i, 1.0) for i, n in enumerate(candidates + staying)])
                store.write_slots([(n, STEP, now - DAY - (now - DAY) % STEP, 1.0) for n in staying])
                IndexStore(make_client("s3", config), config).add_names(candidates + staying)
                kept.update(staying)
                stop = threading.Event()
                workers = [threading.Thread(target=stream, args=(round_number, stop)),
                           threading.Thread(target=comeback,
                                            args=(candidates[::2], store.table_for(expired, STEP), stop))]
                for worker in workers:
                    worker.start()
                try:
                    reports.append(run_keeper(config_file, tmp_path))
                finally:
                    stop.set()
                    for worker in workers:
                        worker.join(30)
                dead.update(set(candidates) - returned)
            wait_for(lambda: announced <= index_names(config) and not queue_depth(config, config.index_queue_name),
                     60, "every announced name indexed and the index queue empty", interval=0.5)
        index = index_names(config)
    counters = [final_counters(d / "turok-indexer.log") for d in dirs]  # logged when they stopped
    hygiene = [report["index_hygiene"] for report in reports]
    removed = {name for h in hygiene for name in h["removed"]}
    readded = {name for h in hygiene for name in h["readded"]}
    print(f"\nindex races: {len(announced)} names announced, {len(kept)} kept, {len(dead)} pruned, "
          f"{len(returned)} came back during pruning ({len(readded)} added back by the keeper); "
          f"index holds {len(index)}; indexers: {counters}")
    assert all(h["error"] == "" and h["complete"] for h in hygiene), hygiene
    assert all(d["status"] == "done" for r in reports for d in r["delete"]), reports
    assert announced <= index, sorted(announced - index)[:10]  # every announced name is in the index
    assert kept <= index  # names with data left were never pruned
    assert not index & dead, sorted(index & dead)[:10]  # pruned names stay pruned
    assert dead <= removed and readded <= returned
    assert index == announced | kept
    # the indexers really raced each other (and the keeper) for the one shard, and both worked
    assert sum(c["conflicts_retried"] for c in counters) > 0 and all(c["shard_writes"] for c in counters)
    # a round may lose every compare-and-swap on the one shard under this much contention: it
    # fails, its announcements stay in SQS and are added on redelivery; no other failure is allowed
    errors = [line for d in dirs for line in (d / "turok-indexer.log").read_text().splitlines() if "#error]" in line]
    assert sum(c["errors"] for c in counters) == len(errors)
    assert all("IndexConflictError" in line and "kept changing" in line for line in errors), errors


def test_a_removal_that_fails_part_way_still_adds_back_what_came_back(turok_config, tmp_path):
    """The removal rewrites one shard, then loses every compare-and-swap on the next and gives up:
    a name of the first shard that came back meanwhile must still be added back."""
    now = int(time.time())
    config = turok_config.replace(index_shards=2, write_max_attempts=2, index_prefix="partial/")
    pool = [f"race.n{i}" for i in range(20)]
    back = next(n for n in pool if shard_of(n, 2) == 0)  # the shard removed first
    stuck = next(n for n in pool if shard_of(n, 2) == 1)  # the shard whose removal gives up
    config, store = keeper_setup(config, tmp_path, [back, stuck], now)
    s3 = make_client("s3", config)
    stuck_key = IndexStore(s3, config).layout.shard_key(1, 2)

    class Contended:
        """S3 where another writer always wins the race for shard 1; ``back`` returns meanwhile."""
        returned = False

        def __getattr__(self, attribute):
            return getattr(s3, attribute)

        def put_object(self, **kwargs):
            if not Contended.returned:  # between the keeper's check of the names and their removal
                Contended.returned = True
                store.write_slots([(back, STEP, now - DAY - (now - DAY) % STEP, 5.0)])  # a late point
            if kwargs["Key"] == stuck_key:
                raise ClientError({"Error": {"Code": "PreconditionFailed"},
                                   "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject")
            return s3.put_object(**kwargs)

    client = make_client("dynamodb", config)
    plan = plan_for(load_schemas(config), list_tables(client), config.table_prefix, config.table_joiner,
                    now, days_ahead=0)
    applier = Applier(client, config, s3_client=Contended(), sleep=lambda s: None)
    applier.apply(plan)
    report = applier.hygiene
    assert "IndexConflictError" in report.error and report.readded == [back]
    assert index_names(config) == {back, stuck}  # nothing lost; the stuck name waits for the next run


def test_two_indexers_adding_tagged_series_at_once_lose_none(moto_endpoint, turok_config, tmp_path):
    """Two real indexers add announced tagged series to one-shard name and tag indexes (every write
    a compare-and-swap race): every series ends up in both, and in the tag index's posting lists."""
    from turok_core.index.tag_cache import TagCache

    with FaultProxy(moto_endpoint) as proxy:  # S3 compare-and-swap as atomic as S3's (see faultproxy)
        config = turok_config.replace(
            aws_endpoint_url=proxy.url, index_shards=1, tag_index_shards=1, indexer_pollers=2,
            receive_wait_seconds=1, visibility_timeout_seconds=10, self_metrics_interval_seconds=0)
        queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
        series = [f"tagged.race;batch=b{i // 5};host=h{i}" for i in range(200)]
        dirs = [tmp_path / "indexer-a", tmp_path / "indexer-b"]
        for d in dirs:
            d.mkdir()
        with running_twistd("turok-indexer", config, dirs[0], indexer_ready, "indexer a"), \
                running_twistd("turok-indexer", config, dirs[1], indexer_ready, "indexer b"):
            for start in range(0, len(series), 5):  # small bodies: many concurrent index writes
                queue.send(encode_announcements(series[start:start + 5], 2000))
            tags = TagCache(make_client("s3", config), config.replace(index_refresh_seconds=0))
            wait_for(lambda: len(tags.tag_index) == len(series) and not queue_depth(config, config.index_queue_name),
                     60, "every tagged series in the tag index", interval=0.5)
        counters = [final_counters(d / "turok-indexer.log") for d in dirs]
        assert set(series) <= index_names(config)
        index = tags.tag_index
        assert index.series() == sorted(series)
        assert index.find_series(["name=tagged.race"]) == sorted(series)
        assert [v["count"] for v in index.list_values("batch")] == [5] * 40
        assert sum(c["tagged_added"] for c in counters) == len(series)
        assert sum(c["conflicts_retried"] for c in counters) > 0 and all(c["shard_writes"] for c in counters)
