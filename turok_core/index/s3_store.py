"""The metric-name index on S3: a manifest and hash shards, updated by compare-and-swap.

Layout under ``config.index_prefix`` in ``config.index_bucket``::

    manifest.json                 {"version": 1, "shards": 64}
    shards-64/00017.gz            gzip of sorted names, one per line (turok_core.index.shards)

The shard count lives in the manifest, written once with ``If-None-Match: *``; every writer and
reader uses the manifest's count, so changing ``index_shards`` later never splits the index.
Writers merge into a shard and PUT it with ``If-Match: <ETag>`` (``If-None-Match: *`` when
creating); a lost race (412/409, or the object vanished) re-reads and retries with jittered
backoff (``turok_core.index.store``). Readers (``turok_core.index.s3_cache.IndexCache``)
revalidate each shard with ``If-None-Match: <ETag>``.

Blocking boto3 calls; services run these in their AWS thread pool.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional

from botocore.exceptions import ClientError

from turok_core.index.shards import decode_shard, encode_shard
from turok_core.index.store import IndexConflictError, ShardedIndexStore
from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code, http_status

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_CONFLICT_STATUSES = (409, 412)


class IndexFormatError(ValueError):
    """The manifest on S3 is not one Turok wrote."""


def is_missing(error: ClientError) -> bool:
    """Whether S3 answered that the object does not exist."""
    return http_status(error) == 404 or error_code(error) in ("NoSuchKey", "404")


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


class IndexStore(ShardedIndexStore):
    """Adds and removes metric names in the S3 index; safe with any number of concurrent writers."""

    def __init__(self, client: AwsClient, config: TurokConfig, max_attempts: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(max_attempts or config.write_max_attempts, sleep)
        self._s3 = client
        self._bucket = config.index_bucket
        self._layout = IndexLayout(config.index_prefix)
        self._configured_shards = config.index_shards
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
                if not is_missing(exc):
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
            if is_missing(exc):
                return set(), None
            raise
        return set(decode_shard(response["Body"].read())), response["ETag"]

    def _put_shard(self, shard: int, names: set[str], version: Optional[str]) -> bool:
        """PUT the shard with ``If-Match: <ETag>`` (``If-None-Match: *`` when creating it)."""
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        try:
            self._s3.put_object(Bucket=self._bucket, Key=self._shard_label(shard), Body=encode_shard(names),
                                ContentType="application/gzip", **condition)
        except ClientError as exc:
            # If-Match on a vanished object answers 404: a race as well
            if not (_is_conflict(exc) or (version and is_missing(exc))):
                raise
            return False
        return True

    def _shard_label(self, shard: int) -> str:
        """The shard's object key."""
        return self._layout.shard_key(shard, self.shard_count())
