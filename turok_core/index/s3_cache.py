"""The finder's local copy of the S3 index, revalidated by ETag (``IndexCache``).

A reader never writes: it reads the manifest (no index yet: no names) and every shard of
``turok_core.index.s3_store``'s layout, answers globs from one ``NameList`` of all their names, and
at most every ``config.index_refresh_seconds`` revalidates each object with
``If-None-Match: <ETag>``, so unchanged shards cost a 304 and no body. Once a first copy exists, a
failed refresh is logged and the copy keeps answering. ``ShardCache`` is that copy for any
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
from typing import Callable, Generic, Iterable, Optional, TypeVar

from botocore.exceptions import ClientError

from turok_core.index.names import Match, NameList
from turok_core.index.s3_store import IndexLayout, is_missing, parse_manifest
from turok_core.index.shards import decode_shard
from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code, http_status

log = logging.getLogger("turok.index")


def _is_not_modified(error: ClientError) -> bool:
    return http_status(error) == 304 or error_code(error) in ("304", "NotModified")


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
        self._shards: Optional[int] = None
        self._manifest_etag: Optional[str] = None
        self._shard_names: dict[int, list[str]] = {}
        self._etags: dict[int, str] = {}
        self._list: Optional[Built] = None
        self._checked_at: Optional[float] = None
        # observability (and what the tests count)
        self.downloads = 0  # GETs that returned a body
        self.not_modified = 0  # GETs answered 304
        self.rebuilds = 0  # structures built from all the names
        self.updates = 0  # structures made by ``_update`` from the changed shards only
        self.refresh_errors = 0  # failed revalidations (the previous list kept answering)

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
        shards = self._read_manifest()
        changed = False
        changes: Optional[list[tuple[list[str], list[str]]]] = []  # None: build anew
        if shards != self._shards:
            self._shards = shards
            self._shard_names, self._etags = {}, {}
            changed, changes = True, None
        if shards:
            with ThreadPoolExecutor(max_workers=self._parallelism) as pool:
                results = list(pool.map(self._revalidate, range(shards)))
            for shard, (outcome, result) in enumerate(results):
                if outcome == "not-modified":
                    self.not_modified += 1
                elif outcome == "downloaded":
                    self.downloads += 1
                if result is not None:
                    names, etag = result
                    if changes is not None:
                        changes.append((self._shard_names.get(shard, []), names))
                    self._shard_names[shard] = names
                    if etag is None:
                        self._etags.pop(shard, None)
                    else:
                        self._etags[shard] = etag
                    changed = True
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
            self._list = self._build(chain.from_iterable(self._shard_names.values()))
            self.rebuilds += 1
        self._checked_at = self._clock()
        return changed

    def _read_manifest(self) -> int:
        """The manifest's shard count (0 while no index exists; readers never create it)."""
        kwargs = {"Bucket": self._bucket, "Key": self._layout.manifest_key}
        if self._manifest_etag and self._shards:
            kwargs["IfNoneMatch"] = self._manifest_etag
        try:
            response = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if _is_not_modified(exc):
                self.not_modified += 1
                return self._shards or 0
            if is_missing(exc):
                self._manifest_etag = None
                return 0
            raise
        self.downloads += 1
        self._manifest_etag = response["ETag"]
        return parse_manifest(response["Body"].read())

    def _revalidate(self, shard: int) -> tuple[str, Optional[tuple[list[str], Optional[str]]]]:
        """(outcome, new (names, etag) of a shard or None when our copy is current).

        Runs in worker threads: it only reads shared state; the caller records the outcome."""
        key = self._layout.shard_key(shard, self._shards or 1)
        kwargs = {"Bucket": self._bucket, "Key": key}
        known = self._etags.get(shard)
        if known:
            kwargs["IfNoneMatch"] = known
        try:
            response = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if _is_not_modified(exc):
                return "not-modified", None
            if is_missing(exc):
                return "missing", (None if shard not in self._shard_names else ([], None))
            raise
        return "downloaded", (decode_shard(response["Body"].read()), response["ETag"])


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
