"""Growing the shard count on real processes (docs/tags.md, "Growing the shard count").

Two real ``twistd turok-indexer`` processes with tiny ``index_shard_target_names`` and
``tag_index_shard_target_names`` take announcements of plain and tagged names from the real index
queue, so both indexes move to more shards (twice each) while the two indexers keep writing them.
Meanwhile a real graphite-web on Turok's finder and TagDB is asked ``/metrics/find`` and
``/tags/findSeries`` over and over: no answer may miss a name an earlier answer held, or hold a
name never announced. At the end every announced name is in both indexes (read with fresh copies
and through graphite-web), the manifests name the new shard counts, and no object of an old
layout is left.

The second test is the real-process twin of the keeper's in-process hygiene-during-a-move test: a
real ``turok-keeper --apply`` prunes while the two indexers write and finish a move.
"""
from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import running_twistd, wait_for, with_schema_files
from tests.e2e.test_index_races import AGGREGATION, DAY, SCHEMAS, STEP, final_counters, indexer_ready, run_keeper
from tests.support.faultproxy import FaultProxy
from tests.support.index_moves import Stop, stopping_after
from tests.support.reference_graphite import call, turok_graphite
from tests.support.sum_stream import queue_depth
from turok_core.dev.stack import write_config
from turok_core.index.layout import Manifest
from turok_core.index.reshard import move_shards
from turok_core.index.s3_cache import IndexCache
from turok_core.index.s3_store import MANIFEST_NAME, IndexStore
from turok_core.index.tag_cache import TagCache, make_tag_store, tagged
from turok_core.model.timefmt import day_start
from turok_core.runtime.aws import make_client
from turok_core.storage.tables import BlockStore
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.queues import MessageQueue

pytestmark = [pytest.mark.processes]

BATCHES, PLAIN, TAGGED = 25, 8, 4  # names per batch: 300 in the name index, 100 in the tag index
# 2 shards each; a move (×4) when the shards a batch wrote hold more than the target on average:
# the name index moves near 30 and 120 names, the tag index near 12 and 48 series, and neither
# comes near a third move (300 names in 32 shards: ~9 a shard; 100 series: ~3)
SHARDS, FINAL_SHARDS = 2, 32
NAME_TARGET, TAG_TARGET = 15, 6


def manifest_now(s3, bucket: str, store: IndexStore) -> Manifest | None:
    """The index's manifest as stored now (None before the first writer), read without creating it."""
    try:
        body = s3.get_object(Bucket=bucket, Key=store.layout.manifest_key)["Body"].read()
    except ClientError:
        return None
    return Manifest.parse(body)


class Reader(threading.Thread):
    """Asks graphite-web for the plain names (``find``, of the name index) and the tagged series
    (``findSeries``, of the tag index) until stopped (bounded in time); notes every answer that
    misses a name an earlier one held or holds one never announced, and counts the questions asked
    while their index was moving (its manifest read just before and just after the question)."""

    def __init__(self, url: str, config, stores: dict[str, IndexStore], announced: set[str], deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.stores, self.announced, self.deadline = url, stores, announced, deadline
        self.s3, self.bucket = make_client("s3", config), config.index_bucket
        self.stop = threading.Event()
        self.seen: dict[str, set[str]] = {"find": set(), "findSeries": set()}
        self.asked = {"find": 0, "findSeries": 0}
        self.during_moves = {"find": 0, "findSeries": 0}
        self.faults: list[str] = []

    def ask(self, kind: str) -> set[str]:
        if kind == "find":
            # the completer format answers whole paths (treejson's ids keep the query's wildcards)
            status, body = call(self.url, "/metrics/find", [("query", "mv.plain.*.*"), ("format", "completer")])
            answer = {node["path"] for node in body["metrics"] if "path" in node} if status == 200 else set()
        else:
            status, body = call(self.url, "/tags/findSeries", [("expr", "name=mv.tagged")])
            answer = set(body) if status == 200 else set()
        if status != 200:
            self.faults.append(f"{kind}: HTTP {status} {body!r}"[:300])
        return answer

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            for kind in self.seen:
                before = manifest_now(self.s3, self.bucket, self.stores[kind])
                answer = self.ask(kind)
                after = manifest_now(self.s3, self.bucket, self.stores[kind])
                self.asked[kind] += 1
                if before and after and (before.moving_to or after.moving_to or before != after):
                    self.during_moves[kind] += 1
                missed, unknown = self.seen[kind] - answer, answer - set(self.announced)  # announced by now
                if missed:
                    self.faults.append(f"{kind} lost {len(missed)} names it had answered: {sorted(missed)[:5]}")
                if unknown:
                    self.faults.append(f"{kind} answered names never announced: {sorted(unknown)[:5]}")
                self.seen[kind] |= answer
            self.stop.wait(0.05)


def test_two_indexers_move_both_indexes_while_graphite_web_answers(moto_endpoint, turok_config, tmp_path):
    with FaultProxy(moto_endpoint) as proxy:  # S3 compare-and-swap as atomic as S3's (see faultproxy)
        config = turok_config.replace(
            aws_endpoint_url=proxy.url, index_shards=SHARDS, tag_index_shards=SHARDS,
            index_shard_target_names=NAME_TARGET, tag_index_shard_target_names=TAG_TARGET, indexer_pollers=2,
            receive_wait_seconds=1, visibility_timeout_seconds=10, self_metrics_interval_seconds=0,
            index_refresh_seconds=0.2)
        s3 = make_client("s3", config)
        stores = {"index": IndexStore(s3, config), "tag index": make_tag_store(s3, config)}
        queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
        plain = [f"mv.plain.b{b}.n{i}" for b in range(BATCHES) for i in range(PLAIN)]
        tagged = [f"mv.tagged;batch=b{b};host=h{i}" for b in range(BATCHES) for i in range(TAGGED)]
        announced: set[str] = set()
        shards_seen: dict[str, list] = {label: [] for label in stores}  # (shards, moving_to) as they changed
        dirs = [tmp_path / "indexer-a", tmp_path / "indexer-b"]
        for d in dirs:
            d.mkdir()
        started = time.monotonic()
        with running_twistd("turok-indexer", config, dirs[0], indexer_ready, "indexer a"), \
                running_twistd("turok-indexer", config, dirs[1], indexer_ready, "indexer b"), \
                turok_graphite(tmp_path / "graphite-web", config) as url:
            reader = Reader(url, config, {"find": stores["index"], "findSeries": stores["tag index"]}, announced,
                            time.monotonic() + 60)
            reader.start()
            try:
                for b in range(BATCHES):
                    batch = plain[b * PLAIN:(b + 1) * PLAIN] + tagged[b * TAGGED:(b + 1) * TAGGED]
                    announced.update(batch)  # before sending: the reader may see them from now on
                    queue.send(encode_announcements(batch, 2000))
                    for label, store in stores.items():
                        manifest = manifest_now(s3, config.index_bucket, store)
                        seen = (manifest.shards, manifest.moving_to) if manifest else None
                        if not shards_seen[label] or shards_seen[label][-1] != seen:
                            shards_seen[label].append(seen)
                    time.sleep(0.3)

                state: dict = {}

                def settled() -> bool:
                    state.update(queue=queue_depth(config, config.index_queue_name),
                                 manifests={label: manifest_now(s3, config.index_bucket, store)
                                            for label, store in stores.items()},
                                 layouts={label: store.layouts() for label, store in stores.items()})
                    return (not state["queue"] and all(m == Manifest(FINAL_SHARDS) for m in state["manifests"].values())
                            and all(layouts == [FINAL_SHARDS] for layouts in state["layouts"].values()))

                try:
                    wait_for(settled, 30, "both indexes moved, the queue empty, the old layouts deleted", interval=0.3)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; last seen: {state}") from None
                fresh = config.replace(index_refresh_seconds=0)
                wait_for(lambda: reader.seen["find"] == set(plain) and reader.seen["findSeries"] == set(tagged)
                         or reader.faults, 15, "graphite-web answering every announced name", interval=0.2)
                names = IndexCache(make_client("s3", config), fresh).names()
                series = TagCache(make_client("s3", config), fresh).tag_index.series()
                find = reader.ask("find")
                find_series = reader.ask("findSeries")
            finally:
                reader.stop.set()
                reader.join(30)
        elapsed = time.monotonic() - started
    counters = [final_counters(d / "turok-indexer.log") for d in dirs]  # logged when they stopped
    moves = [line for d in dirs for line in (d / "turok-indexer.log").read_text().splitlines() if " moved: " in line]
    print(f"\nindex moves: {len(announced)} names in {elapsed:.1f} s; manifests seen {shards_seen}; "
          f"graphite-web asked {reader.asked}, during moves {reader.during_moves}; indexers: {counters}; "
          f"moves: {len(moves)}")
    assert not reader.faults, reader.faults[:10]
    assert all(reader.during_moves.values()), reader.during_moves  # graphite-web was asked while each index moved
    assert set(plain) | set(tagged) <= set(names) and set(names) <= announced
    assert series == sorted(tagged)
    assert find == set(plain) and find_series == set(tagged)
    for label in stores:  # 2 → 8 → 32, each move seen finished by an indexer
        for old, new in ((2, 8), (8, 32)):
            finished = f"turok-indexer: {label} moved: MoveStats(moved_from={old}, moved_to={new},"
            assert any(finished in line for line in moves), (label, old, new)
    # both indexers wrote, and the first move began while names were still being announced
    assert all(c["shard_writes"] for c in counters)
    assert all(shards_seen[label][-1] not in (None, (SHARDS, None)) for label in stores), shards_seen
    assert not [line for d in dirs for line in (d / "turok-indexer.log").read_text().splitlines() if "#error]" in line]


def test_the_keepers_hygiene_beside_two_indexers_finishing_a_move(moto_endpoint, turok_config, tmp_path):
    """Both indexes a quarter through a move from 8 to 32 shards (a mover killed after sealing old
    shard 0) when a real ``turok-keeper --apply`` prunes the names of an expired table. Once its
    index hygiene has begun checking names, new plain and tagged names are announced, so the two
    real indexers write both indexes and take the move on (seal and fill) while the hygiene checks
    and removes; their switch to the new layout is held back (the proxy holds manifest writes)
    until the keeper is done, so the removal lands in the middle of the move whatever the timing.
    The pruned names leave both indexes for good (a reader saw them gone while the manifest still
    said ``moving_to``, and after the move), names with data left stay, every announced name is
    indexed, and the move ends with the old layout deleted."""
    with FaultProxy(moto_endpoint) as proxy:  # S3 compare-and-swap as atomic as S3's; counts DynamoDB calls
        config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(
            aws_endpoint_url=proxy.url, index_shards=8, tag_index_shards=8,
            index_shard_target_names=0, tag_index_shard_target_names=0,  # no move but the one left unfinished
            indexer_pollers=2, receive_wait_seconds=1, visibility_timeout_seconds=10,
            self_metrics_interval_seconds=0, index_refresh_seconds=0)
        config_file = tmp_path / "turok.ini"
        write_config(config, config_file)
        s3 = make_client("s3", config)
        makers = {"index": lambda: IndexStore(s3, config), "tag index": lambda: make_tag_store(s3, config)}
        store = BlockStore(make_client("dynamodb", config), config)
        queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
        now = int(time.time())
        expired = day_start(now) - 5 * DAY
        yesterday = now - DAY - (now - DAY) % STEP
        store.ensure_table(store.table_for(now - DAY, STEP))
        dead = [f"kp.dead.n{i}" for i in range(12)] + [f"kp.dead;host=h{i}" for i in range(12)]
        kept = [f"kp.kept.n{i}" for i in range(6)] + [f"kp.kept;host=h{i}" for i in range(6)]
        store.write_slots([(name, STEP, expired + 60 * i, 1.0) for i, name in enumerate(dead + kept)])
        store.write_slots([(name, STEP, yesterday, 1.0) for name in kept])
        makers["index"]().add_names(dead + kept)
        makers["tag index"]().add_names(tagged(dead + kept))
        announced: set[str] = set()
        seen: dict[str, dict[str, float]] = {label: {} for label in makers}  # when each thing was first seen

        def stream(stop):
            """New names, announced once the keeper's hygiene has begun (its first Query), until
            the keeper is done."""
            queries = proxy.requests.get("Query", 0)
            deadline = time.monotonic() + 60
            while proxy.requests.get("Query", 0) == queries and not stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.005)
            for batch in range(40):
                names = [f"kp.new.b{batch}.n{i}" for i in range(3)] + [f"kp.new;batch=b{batch};host=h{i}"
                                                                       for i in range(2)]
                announced.update(names)
                queue.send(encode_announcements(names, 2000))
                if stop.wait(0.05):
                    break

        def watch(stop):
            """When a reader of each index first saw the pruned names gone while the index still
            moved, saw them gone at all, and saw the switch (names read before the manifest)."""
            readers = {"index": IndexCache(s3, config), "tag index": TagCache(s3, config)}
            stores = {label: make() for label, make in makers.items()}
            while not stop.is_set():
                for label, reader in readers.items():
                    current = reader.names() if label == "index" else reader.tag_index.series()
                    pruned = not set(current) & set(dead)
                    manifest, moment = stores[label].manifest(fresh=True), time.monotonic()
                    for event, happened in (("pruned", pruned), ("pruned while moving", pruned and manifest.moving_to),
                                            ("switched", manifest == Manifest(32))):
                        if happened:
                            seen[label].setdefault(event, moment)
                stop.wait(0.02)

        dirs = [tmp_path / "indexer-a", tmp_path / "indexer-b"]
        for d in dirs:
            d.mkdir()
        with running_twistd("turok-indexer", config, dirs[0], indexer_ready, "indexer a"), \
                running_twistd("turok-indexer", config, dirs[1], indexer_ready, "indexer b"):
            # past each indexer's first round (which finishes a move in progress) before the move starts
            time.sleep(config.receive_wait_seconds + 1.5)
            for make in makers.values():
                with pytest.raises(Stop):  # a mover killed after sealing old shard 0 and making its 4 new shards
                    move_shards(stopping_after(make(), 1 + 4), to=32)
            # nothing announced yet: the move stays unfinished until the indexers get names to write
            assert all(make().manifest(fresh=True) == Manifest(8, 32) for make in makers.values())
            proxy.hold_puts(MANIFEST_NAME)  # the switch waits until the keeper is done
            stop, watched = threading.Event(), threading.Event()
            workers = [threading.Thread(target=stream, args=(stop,)), threading.Thread(target=watch, args=(watched,))]
            for worker in workers:
                worker.start()
            started = time.monotonic()
            try:
                report = run_keeper(config_file, tmp_path)
                keeper_done = time.monotonic()
                stop.set()
                # the move still held: a reader sees the pruned names gone from both indexes
                wait_for(lambda: all("pruned while moving" in events for events in seen.values()), 15,
                         "a reader seeing the pruned names gone while the indexes move")
            finally:
                stop.set()
                watched.set()
                for worker in workers:
                    worker.join(30)
                proxy.release_puts()
            state: dict = {}

            def settled() -> bool:
                state.update(queue=queue_depth(config, config.index_queue_name),
                             manifests={label: make().manifest(fresh=True) for label, make in makers.items()},
                             layouts={label: make().layouts() for label, make in makers.items()})
                return (not state["queue"] and all(m == Manifest(32) for m in state["manifests"].values())
                        and all(layouts == [32] for layouts in state["layouts"].values()))

            try:
                wait_for(settled, 30, "the move finished, the old layout deleted, the queue empty", interval=0.3)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last seen: {state}") from None
        names = set(IndexCache(s3, config).names())
        series = TagCache(s3, config).tag_index.series()
    hygiene = report["index_hygiene"]
    moves = [line for d in dirs for line in (d / "turok-indexer.log").read_text().splitlines() if " moved: " in line]
    timeline = {label: {event: round(at - started, 2) for event, at in events.items()}
                for label, events in seen.items()}
    print(f"\nkeeper beside a move: {len(announced)} names announced during the keeper run, hygiene removed "
          f"{len(hygiene['removed'])}; seconds after the keeper started: {timeline}, keeper done "
          f"{keeper_done - started:.2f}; {proxy.held} manifest writes held; moves: {moves}")
    assert proxy.held, timeline  # the switch did wait
    assert announced and hygiene["error"] == "" and hygiene["complete"], hygiene
    assert all(d["status"] == "done" for d in report["delete"]), report
    assert sorted(hygiene["removed"]) == sorted(dead)
    assert names == set(kept) | announced  # the pruned names left for good, nothing else did
    assert series == sorted(tagged(kept) + tagged(announced))
    for label in makers:
        assert any(f"turok-indexer: {label} moved: MoveStats(moved_from=8, moved_to=32," in line for line in moves)
    assert not [line for d in dirs for line in (d / "turok-indexer.log").read_text().splitlines() if "#error]" in line]
