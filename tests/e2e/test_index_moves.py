"""Growing the shard count on real processes (docs/tags.md, "Growing the shard count").

Two real ``twistd turok-indexer`` processes with tiny ``index_shard_target_names`` and
``tag_index_shard_target_names`` take announcements of plain and tagged names from the real index
queue, so both indexes move to more shards (twice each) while the two indexers keep writing them.
Meanwhile a real graphite-web on Turok's finder and TagDB is asked ``/metrics/find`` and
``/tags/findSeries`` over and over: no answer may miss a name an earlier answer held, or hold a
name never announced. At the end every announced name is in both indexes (read with fresh copies
and through graphite-web), the manifests name the new shard counts, and no object of an old
layout is left.
"""
from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import running_twistd, wait_for
from tests.e2e.test_index_races import final_counters, indexer_ready
from tests.support.faultproxy import FaultProxy
from tests.support.reference_graphite import call, turok_graphite
from tests.support.sum_stream import queue_depth
from turok_core.index.layout import Manifest
from turok_core.index.s3_cache import IndexCache
from turok_core.index.s3_store import IndexStore
from turok_core.index.tag_cache import TagCache, make_tag_store
from turok_core.runtime.aws import make_client
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
