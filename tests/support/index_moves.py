"""Helpers of the tests of index moves (tests/index/test_reshard*.py, test_indexer_service.py):
what a reader sees of a store, and movers stopped half way."""
from __future__ import annotations

import random
import time

from turok_core.index.layout import view_units


def visible(store) -> set[str]:
    """The names a reader sees now (the readers' rule, old shards read before their new ones)."""
    manifest = store.manifest(fresh=True)
    objects = {}
    for layout in manifest.layouts:
        for shard in range(layout):
            found = store.read_object(layout, shard)
            if found.version is not None:
                objects[(layout, shard)] = found
    return set().union(*view_units(manifest, objects).values())


class Stop(Exception):
    """A mover killed here."""


def stopping_after(store, puts: int):
    """``store`` whose ``put_object`` raises ``Stop`` after ``puts`` successful object writes (the
    mover's seals and new shards): a mover killed half way."""
    original, done = store.put_object, [0]

    def put_object(*args):
        if done[0] >= puts:
            raise Stop()
        ok = original(*args)
        done[0] += bool(ok)
        return ok

    store.put_object = put_object
    return store


def stopping_at_the_switch(store):
    """``store`` whose mover stops right before it switches the manifest to the new layout."""
    original = store.put_manifest

    def put_manifest(manifest, version):
        if manifest.moving_to is None:
            raise Stop()
        return original(manifest, version)

    store.put_manifest = put_manifest
    return store


def jittered(store, seed: int):
    """``store`` pausing up to 2 ms after each read: threads interleave between reads and writes."""
    original, rnd = store.read_object, random.Random(seed)

    def read_object(shards, shard):
        found = original(shards, shard)
        time.sleep(rnd.random() / 500)
        return found

    store.read_object = read_object
    return store
