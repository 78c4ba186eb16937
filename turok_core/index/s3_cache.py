"""The finder's local copy of the S3 index, revalidated by ETag (``IndexCache``).

A reader never writes: it reads the manifest (no index yet: no names) and every shard of
``turok_core.index.s3_store``'s layout (of both layouts while the index moves to more shards, an
old shard before its new ones, combined by ``turok_core.index.layout.view_units``), answers globs
from one ``NameList`` of all their names, and at most every ``config.index_refresh_seconds``
revalidates each object with ``If-None-Match: <ETag>``, so unchanged shards cost a 304 and no
body. A refresh that found something changed, or a move, ends by revalidating the manifest and
starts over if a move started or finished meanwhile. Once a first copy exists, a failed refresh
is logged and the copy keeps answering. ``ShardCache`` is that copy for any
structure built from the names (``turok_core.index.tag_cache.TagCache`` builds a ``TagIndex``).

Blocking boto3 calls, made in the calling thread (graphite-web's request thread) and a small pool.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Callable, Generic, Iterable, Optional, Sequence, TypeVar

from botocore.exceptions import ClientError

from turok_core.index.layout import MISSING, Manifest, ShardObject, view_units
from turok_core.index.names import Match, NameList
from turok_core.index.s3_store import IndexLayout, is_missing, is_not_modified
from turok_core.index.shards import decode_shard_object
from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient

log = logging.getLogger("turok.index")
REFRESH_PASSES = 3  # a refresh that saw the manifest change this many times keeps the previous copy


Built = TypeVar("Built")


class ShardCache(ABC, Generic[Built]):
    """A reader's local copy of a whole sharded index, revalidated by ETag at most every refresh
    period, answering from one structure ``_build`` makes of all its names.

    A refresh due on a call revalidates every shard (``If-None-Match``, so unchanged shards cost
    a 304 and no body) and makes a new structure only when some shard changed: ``_update`` from
    the current one and the changed shards' old and new names when it can, else ``_build`` from
    all the names. Threads share one cache: one refreshes, the others keep answering from the
    structure they have (a new one replaces the old one whole).
    """

    def __init__(self, client: AwsClient, config: TurokConfig, clock: Callable[[], float] = time.monotonic,
                 parallelism: int = 8) -> None:
        self._s3 = client
        self._bucket = config.index_bucket
        self._layout = IndexLayout(config.index_prefix)
        self._refresh_seconds = config.index_refresh_seconds
        self._clock = clock
        self._parallelism = max(1, min(parallelism, config.aws_max_pool_connections))
        self._lock = threading.Lock()
        self._manifest: Optional[Manifest] = None
        self._manifest_etag: Optional[str] = None
        self._objects: dict[tuple[int, int], ShardObject] = {}  # (layout, shard): as last found
        self._units: dict[int, Sequence[str]] = {}  # view_units of those: the names answered from
        self._unit_layout: Optional[int] = None  # the layout the units are shards of
        self._list: Optional[Built] = None
        self._checked_at: Optional[float] = None
        # observability (and what the tests count)
        self.downloads = 0  # GETs that returned a body
        self.not_modified = 0  # GETs answered 304
        self.rebuilds = 0  # structures built from all the names
        self.updates = 0  # structures made by ``_update`` from the changed shards only
        self.refresh_errors = 0  # failed revalidations (the previous list kept answering)
        self.manifest_checks = 0  # manifest revalidations confirming a refresh saw no move switch

    @abstractmethod
    def _build(self, names: Iterable[str]) -> Built:
        """What the cache answers from, made of every name of every shard (sorted runs)."""

    def _update(self, current: Built, changes: list[tuple[list[str], list[str]]]) -> Optional[Built]:
        """``current`` with each changed shard's old names replaced by its new ones, ``changes``
        holding (old, new) per changed shard; None (this default): ``_build`` anew instead."""
        return None

    @property
    def current(self) -> Built:
        """The current structure, refreshed first when the refresh period has passed."""
        self.maybe_refresh()
        return self._list  # type: ignore[return-value]

    def maybe_refresh(self) -> bool:
        """Refresh when due; True when the list changed. Once a first list exists this never waits
        on another refreshing thread, and a failed refresh is logged while the old list answers."""
        now = self._clock()
        if self._list is not None and self._checked_at is not None \
                and now - self._checked_at < self._refresh_seconds:
            return False
        blocking = self._list is None
        if not self._lock.acquire(blocking=blocking):
            return False
        try:
            if self._list is not None and self._checked_at is not None \
                    and self._clock() - self._checked_at < self._refresh_seconds:
                return False  # another thread refreshed while we waited
            if blocking:
                return self._refresh_locked()  # nothing to answer from: the caller sees the error
            try:
                return self._refresh_locked()
            except Exception as exc:  # S3 unreachable: serve what we have, retry next period
                self.refresh_errors += 1
                self._checked_at = self._clock()
                log.warning("index refresh from s3://%s/%s failed, answering from the previous copy: %r",
                            self._bucket, self._layout.prefix, exc)
                return False
        finally:
            self._lock.release()

    def _refresh_locked(self) -> bool:
        for _ in range(REFRESH_PASSES):
            manifest, changed = self._read_manifest()
            for layout in manifest.layouts if manifest else ():  # an old shard before its new ones
                changed |= self._revalidate_layout(layout)
            # a refresh that found a change, or a move, makes sure no move started or finished
            # meanwhile (an old layout deleted after a switch looks like shards never written)
            if not (changed or (manifest and manifest.moving_to)) or self._manifest_unchanged():
                break
        else:
            raise RuntimeError(f"the manifest of s3://{self._bucket}/{self._layout.prefix} kept changing")
        self._forget_other_layouts(manifest)
        units = view_units(manifest, self._objects)
        changes: Optional[list[tuple[list[str], list[str]]]] = []  # None: build anew
        unit_layout = manifest.shards if manifest else None
        if unit_layout != self._unit_layout:  # a new layout's units are other ranges: one change of everything
            changes = None if self._unit_layout is None or unit_layout is None else [
                (list(chain.from_iterable(self._units.values())), list(chain.from_iterable(units.values())))]
            changed = True
        else:
            for unit in set(units) | set(self._units):
                old, new = self._units.get(unit, []), units.get(unit, [])
                if old is new or (len(old) == len(new) and list(old) == list(new)):
                    if unit in units:
                        units[unit] = old  # the same names: keep the list the structure was made from
                    continue
                changes.append((list(old), list(new)))  # type: ignore[union-attr]
            changed = bool(changes)
        self._units, self._unit_layout = units, unit_layout
        updated = None
        if changed and changes is not None and self._list is not None:
            try:
                updated = self._update(self._list, changes)
            except Exception:  # the shards' names are recorded already: a failed update must not leave the copy stale
                log.exception("updating the copy of s3://%s/%s failed, building it anew", self._bucket,
                              self._layout.prefix)
        if updated is not None:
            self._list = updated
            self.updates += 1
        elif changed or self._list is None:
            # each shard is a sorted run: the structure's one sort merges them
            self._list = self._build(chain.from_iterable(self._units.values()))
            self.rebuilds += 1
        self._checked_at = self._clock()
        return changed

    def _read_manifest(self) -> tuple[Optional[Manifest], bool]:
        """The manifest (None while no index exists; readers never create it), and whether it changed."""
        kwargs = {"Bucket": self._bucket, "Key": self._layout.manifest_key}
        if self._manifest_etag and self._manifest:
            kwargs["IfNoneMatch"] = self._manifest_etag
        try:
            response = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if is_not_modified(exc):
                self.not_modified += 1
                return self._manifest, False
            if is_missing(exc):
                changed = self._manifest is not None
                self._manifest, self._manifest_etag = None, None
                return None, changed
            raise
        self.downloads += 1
        self._manifest_etag = response["ETag"]
        manifest = Manifest.parse(response["Body"].read())
        changed, self._manifest = manifest != self._manifest, manifest
        return manifest, changed

    def _manifest_unchanged(self) -> bool:
        """Whether the manifest is still the one read first (a conditional GET)."""
        self.manifest_checks += 1
        kwargs = {"Bucket": self._bucket, "Key": self._layout.manifest_key}
        if self._manifest_etag:
            kwargs["IfNoneMatch"] = self._manifest_etag
        try:
            self._s3.get_object(**kwargs)
        except ClientError as exc:
            if is_not_modified(exc):
                return True
            if is_missing(exc):
                return self._manifest is None
            raise
        return False

    def _revalidate_layout(self, layout: int) -> bool:
        """Revalidate every shard of ``layout``; whether one changed."""
        with ThreadPoolExecutor(max_workers=self._parallelism) as pool:
            results = list(pool.map(lambda shard: self._revalidate(layout, shard), range(layout)))
        changed = False
        for shard, (outcome, found) in enumerate(results):
            if outcome == "not-modified":
                self.not_modified += 1
            elif outcome == "downloaded":
                self.downloads += 1
            if found is not None:
                changed = True
                if found.version is None:
                    self._objects.pop((layout, shard), None)
                else:
                    self._objects[(layout, shard)] = found
        return changed

    def _forget_other_layouts(self, manifest: Optional[Manifest]) -> None:
        layouts = manifest.layouts if manifest else ()
        for key in [key for key in self._objects if key[0] not in layouts]:
            del self._objects[key]

    def _revalidate(self, layout: int, shard: int) -> tuple[str, Optional[ShardObject]]:
        """(outcome, the shard as found now, or None when our copy is current).

        Runs in worker threads: it only reads shared state; the caller records the outcome."""
        kwargs = {"Bucket": self._bucket, "Key": self._layout.shard_key(shard, layout)}
        known = self._objects.get((layout, shard))
        if known is not None and known.version:
            kwargs["IfNoneMatch"] = known.version
        try:
            response = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if is_not_modified(exc):
                return "not-modified", None
            if is_missing(exc):
                return "missing", (None if known is None else MISSING)
            raise
        names, sealed_to = decode_shard_object(response["Body"].read())
        return "downloaded", ShardObject(names, sealed_to, response["ETag"])


class IndexCache(ShardCache[NameList]):
    """The finder's copy of the name index: ``match``/``names`` answer from one ``NameList``."""

    def _build(self, names: Iterable[str]) -> NameList:
        return NameList(names)

    @property
    def name_list(self) -> NameList:
        """The current name list, refreshed first when the refresh period has passed."""
        return self.current

    def names(self) -> list[str]:
        """Every indexed name, sorted."""
        return self.name_list.names()

    def match(self, pattern: str) -> list[Match]:
        """``NameList.match`` on the current list."""
        return self.name_list.match(pattern)
