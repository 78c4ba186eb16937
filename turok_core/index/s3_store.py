"""The metric-name index on S3: a manifest and hash shards, updated by compare-and-swap.

Layout under ``config.index_prefix`` in ``config.index_bucket``::

    manifest.json                 {"version": 1, "shards": 64}
    shards-64/00017.gz            gzip of sorted names, one per line (turok_core.index.shards)

The shard count lives in the manifest, written once with ``If-None-Match: *``; every writer and
reader uses the manifest's count, so changing ``index_shards`` later never splits the index.
Writers merge into a shard and PUT it with ``If-Match: <ETag>`` (``If-None-Match: *`` when
creating); a lost race (412/409, or the object vanished) re-reads and retries with jittered
backoff. Readers (``IndexCache``) revalidate each shard with ``If-None-Match: <ETag>``.

Blocking boto3 calls; services run these in their AWS thread pool.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterable, Optional

from botocore.exceptions import ClientError

from turok_core.index.names import Match, NameList
from turok_core.index.shards import decode_shard, encode_shard, shard_of, valid_name
from turok_core.model.config import TurokConfig
from turok_core.runtime.retry import Backoff, error_code, http_status

log = logging.getLogger("turok.index")

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_CONFLICT_STATUSES = (409, 412)
# a lost race is retried soon: the other writer is done; the wide jitter splits contenders apart
CONFLICT_BACKOFF = Backoff(base=0.02, cap=2.0, jitter=(0.5, 1.5))


class IndexConflictError(RuntimeError):
    """A shard kept changing under us for every attempt; the caller should retry later."""


class IndexFormatError(ValueError):
    """The manifest on S3 is not one Turok wrote."""


@dataclass
class AddStats:
    """What one ``add_names`` call did."""
    names: int = 0  # distinct valid names offered
    added: int = 0  # names that were new to the index
    rejected: int = 0  # names that cannot be indexed (empty, line breaks, empty components)
    shard_writes: int = 0  # successful PUTs
    shards_unchanged: int = 0  # shards that already held every offered name (no PUT)
    conflicts: int = 0  # lost compare-and-swap races, each followed by a retry


def _is_missing(error: ClientError) -> bool:
    return http_status(error) == 404 or error_code(error) in ("NoSuchKey", "404")


def _is_not_modified(error: ClientError) -> bool:
    return http_status(error) == 304 or error_code(error) in ("304", "NotModified")


def _is_conflict(error: ClientError) -> bool:
    return http_status(error) in _CONFLICT_STATUSES or error_code(error) in (
        "PreconditionFailed", "ConditionalRequestConflict")


class IndexLayout:
    """Object keys of one index (prefix) for a given shard count."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}{MANIFEST_NAME}"

    def shard_key(self, shard: int, shards: int) -> str:
        return f"{self.prefix}shards-{shards}/{shard:05d}.gz"


def parse_manifest(body: bytes) -> int:
    """The shard count recorded in a manifest object."""
    try:
        manifest = json.loads(body)
        shards = int(manifest["shards"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"index manifest is not valid: {exc}") from None
    if manifest.get("version") != MANIFEST_VERSION or shards < 1:
        raise IndexFormatError(f"unsupported index manifest {manifest!r}")
    return shards


class IndexStore:
    """Adds metric names to the S3 index; safe with any number of concurrent writers."""

    def __init__(self, client, config: TurokConfig, max_attempts: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._s3 = client
        self._bucket = config.index_bucket
        self._layout = IndexLayout(config.index_prefix)
        self._configured_shards = config.index_shards
        self._max_attempts = max(1, max_attempts or config.write_max_attempts)
        self._sleep = sleep
        self._shards: Optional[int] = None

    @property
    def layout(self) -> IndexLayout:
        return self._layout

    def shard_count(self) -> int:
        """The index's shard count: the manifest's, creating the manifest when there is none."""
        if self._shards is None:
            self._shards = self._load_or_create_manifest()
        return self._shards

    def _load_or_create_manifest(self) -> int:
        key = self._layout.manifest_key
        for _ in range(self._max_attempts):
            try:
                body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
                return parse_manifest(body)
            except ClientError as exc:
                if not _is_missing(exc):
                    raise
            manifest = json.dumps({"version": MANIFEST_VERSION, "shards": self._configured_shards})
            try:
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=manifest.encode("utf-8"),
                                    ContentType="application/json", IfNoneMatch="*")
                return self._configured_shards
            except ClientError as exc:
                if not _is_conflict(exc):
                    raise
                # another writer created it first: read theirs
        raise IndexConflictError("could not read or create the index manifest")

    def read_shard(self, shard: int) -> tuple[set[str], Optional[str]]:
        """The names of one shard and its ETag (``None`` when the shard does not exist yet)."""
        key = self._layout.shard_key(shard, self.shard_count())
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return set(), None
            raise
        return set(decode_shard(response["Body"].read())), response["ETag"]

    def add_names(self, names: Iterable[str]) -> AddStats:
        """Merge ``names`` into the index: one conditional PUT per shard that gains a name.

        Raises ``IndexConflictError`` when a shard lost every compare-and-swap attempt; shards
        written before that keep their names (adding is idempotent, so the caller just retries).
        """
        stats = AddStats()
        shards = self.shard_count()
        groups: dict[int, set[str]] = {}
        for name in set(names):
            if not valid_name(name):
                stats.rejected += 1
                continue
            stats.names += 1
            groups.setdefault(shard_of(name, shards), set()).add(name)
        for shard in sorted(groups):
            self._add_to_shard(shard, groups[shard], stats)
        return stats

    def _add_to_shard(self, shard: int, names: set[str], stats: AddStats) -> None:
        added = self._swap_shard(shard, lambda current: current | names, stats)
        if added:
            stats.shard_writes += 1
            stats.added += added
        else:
            stats.shards_unchanged += 1

    def _swap_shard(self, shard: int, change: Callable[[set[str]], set[str]], stats) -> int:
        """Compare-and-swap one shard to ``change(its names)``, re-reading after a lost race.

        Returns how many names changed (0: nothing to write). Conflicts count in
        ``stats.conflicts``; raises ``IndexConflictError`` when every attempt lost."""
        key = self._layout.shard_key(shard, self.shard_count())
        for attempt in range(self._max_attempts):
            current, etag = self.read_shard(shard)
            updated = change(current)
            if updated == current:
                return 0
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=encode_shard(updated),
                                    ContentType="application/gzip", **condition)
            except ClientError as exc:
                # If-Match on a vanished object answers 404: a race as well
                if not (_is_conflict(exc) or (etag and _is_missing(exc))):
                    raise
                stats.conflicts += 1
                if attempt + 1 < self._max_attempts:
                    self._sleep(CONFLICT_BACKOFF.delay(attempt))
                continue
            return len(updated ^ current)
        raise IndexConflictError(f"shard {key} kept changing for {self._max_attempts} attempts")

    def remove_names(self, names: Iterable[str]) -> "RemoveStats":
        """Drop ``names`` from the index: one conditional PUT per shard that held one of them.

        The same compare-and-swap as ``add_names``, so a name another writer adds meanwhile is
        never lost. Raises ``IndexConflictError`` when a shard lost every attempt.
        """
        stats = RemoveStats()
        shards = self.shard_count()
        groups: dict[int, set[str]] = {}
        for name in set(names):
            stats.names += 1
            groups.setdefault(shard_of(name, shards), set()).add(name)
        for shard in sorted(groups):
            self._remove_from_shard(shard, groups[shard], stats)
        return stats

    def _remove_from_shard(self, shard: int, names: set[str], stats: "RemoveStats") -> None:
        removed = self._swap_shard(shard, lambda current: current - names, stats)
        if removed:
            stats.shard_writes += 1
            stats.removed += removed
        else:
            stats.shards_unchanged += 1


@dataclass
class RemoveStats:
    """What one ``remove_names`` call did."""
    names: int = 0  # distinct names offered
    removed: int = 0  # names that were in the index and are not any more
    shard_writes: int = 0
    shards_unchanged: int = 0  # shards holding none of the offered names (no PUT)
    conflicts: int = 0


class IndexCache:
    """A reader's local copy of the whole index, revalidated by ETag at most every refresh period.

    ``match``/``names`` answer from the current ``NameList``; a refresh due on a call revalidates
    every shard (``If-None-Match``, so unchanged shards cost a 304 and no body) and builds a new
    list only when some shard changed. Threads share one cache: one refreshes, the others keep
    answering from the list they have (a new list replaces the old one whole).
    """

    def __init__(self, client, config: TurokConfig, clock: Callable[[], float] = time.monotonic,
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
        self._list: Optional[NameList] = None
        self._checked_at: Optional[float] = None
        # observability (and what the tests count)
        self.downloads = 0  # GETs that returned a body
        self.not_modified = 0  # GETs answered 304
        self.rebuilds = 0  # NameLists built
        self.refresh_errors = 0  # failed revalidations (the previous list kept answering)

    @property
    def name_list(self) -> NameList:
        """The current name list, refreshed first when the refresh period has passed."""
        self.maybe_refresh()
        return self._list  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Every indexed name, sorted."""
        return self.name_list.names()

    def match(self, pattern: str) -> list[Match]:
        """``NameList.match`` on the current list."""
        return self.name_list.match(pattern)

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

    def refresh(self) -> bool:
        """Revalidate now, whatever the period; True when the list changed."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        shards = self._read_manifest()
        changed = False
        if shards != self._shards:
            self._shards = shards
            self._shard_names, self._etags = {}, {}
            changed = True
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
                    self._shard_names[shard] = names
                    if etag is None:
                        self._etags.pop(shard, None)
                    else:
                        self._etags[shard] = etag
                    changed = True
        if changed or self._list is None:
            # each shard is a sorted run: the list's one sort merges them
            self._list = NameList(chain.from_iterable(self._shard_names.values()))
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
            if _is_missing(exc):
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
            if _is_missing(exc):
                return "missing", (None if shard not in self._shard_names else ([], None))
            raise
        return "downloaded", (decode_shard(response["Body"].read()), response["ETag"])
