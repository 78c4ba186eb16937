"""The metric-name index on S3: a manifest and hash shards, updated by compare-and-swap.

Layout under ``config.index_prefix`` in ``config.index_bucket``::

    manifest.json                 {"version": 1, "shards": 64}   (+ "moving_to": 256 during a move)
    shards-64/00017.gz            gzip of sorted names, one per line (turok_core.index.shards)

The manifest (``turok_core.index.layout``) is created with ``If-None-Match: *`` and changed only
with ``If-Match: <ETag>``: every writer and reader uses the manifest's count, so changing
``index_shards`` later never splits the index; ``turok_core.index.reshard`` moves it. Writers
merge into a shard and PUT it with ``If-Match: <ETag>`` (``If-None-Match: *`` when creating); a
lost race (412/409, or the object vanished) re-reads and retries with jittered backoff
(``turok_core.index.store``). Readers (``turok_core.index.s3_cache.IndexCache``) revalidate each
object with ``If-None-Match: <ETag>``.

Blocking boto3 calls; services run these in their AWS thread pool.
"""
from __future__ import annotations

import time
from typing import Callable, Collection, Optional

from botocore.exceptions import ClientError

from turok_core.index.layout import MISSING, Manifest, ShardObject
from turok_core.index.shards import decode_shard_object, encode_shard
from turok_core.index.store import ShardedIndexStore
from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code, http_status

MANIFEST_NAME = "manifest.json"
_CONFLICT_STATUSES = (409, 412)


def is_missing(error: ClientError) -> bool:
    """Whether S3 answered that the object does not exist."""
    return http_status(error) == 404 or error_code(error) in ("NoSuchKey", "404")


def is_not_modified(error: ClientError) -> bool:
    """Whether S3 answered a conditional GET that the object is still the version named."""
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

    def layout_prefix(self, shards: int) -> str:
        return f"{self.prefix}shards-{shards}/"

    def shard_key(self, shard: int, shards: int) -> str:
        return f"{self.layout_prefix(shards)}{shard:05d}.gz"


class IndexStore(ShardedIndexStore):
    """Adds and removes metric names in the S3 index; safe with any number of concurrent writers."""

    def __init__(self, client: AwsClient, config: TurokConfig, max_attempts: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(config.index_shards, max_attempts or config.write_max_attempts, sleep)
        self._s3 = client
        self._bucket = config.index_bucket
        self._layout = IndexLayout(config.index_prefix)

    @property
    def layout(self) -> IndexLayout:
        return self._layout

    def _read_manifest(self, known: Optional[str]) -> Optional[tuple[Optional[Manifest], Optional[str]]]:
        kwargs = {"Bucket": self._bucket, "Key": self._layout.manifest_key}
        if known:
            kwargs["IfNoneMatch"] = known
        try:
            response = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if is_not_modified(exc):
                return None
            if is_missing(exc):
                return None, None
            raise
        return Manifest.parse(response["Body"].read()), response["ETag"]

    def put_manifest(self, manifest: Manifest, version: Optional[str]) -> bool:
        """PUT the manifest with ``If-Match: <ETag>`` (``If-None-Match: *`` when creating it)."""
        return self._put(self._layout.manifest_key, manifest.encode(), "application/json", version) is not None

    def read_object(self, shards: int, shard: int) -> ShardObject:
        """Shard ``shard`` of layout ``shards`` and its ETag (``MISSING`` when it does not exist)."""
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=self._layout.shard_key(shard, shards))
        except ClientError as exc:
            if is_missing(exc):
                return MISSING
            raise
        names, sealed_to = decode_shard_object(response["Body"].read())
        return ShardObject(names, sealed_to, response["ETag"])

    def put_object(self, shards: int, shard: int, names: Collection[str], sealed_to: Optional[int],
                   version: Optional[str]) -> Optional[str]:
        """PUT the shard with ``If-Match: <ETag>`` (``If-None-Match: *`` when creating it); its new ETag."""
        return self._put(self._layout.shard_key(shard, shards), encode_shard(names, sealed_to),
                         "application/gzip", version)

    def _put(self, key: str, body: bytes, content_type: str, version: Optional[str]) -> Optional[str]:
        """The object's new ETag, or None when the condition failed."""
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        try:
            response = self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type,
                                           **condition)
        except ClientError as exc:
            # If-Match on a vanished object answers 404: a race as well
            if not (_is_conflict(exc) or (version and is_missing(exc))):
                raise
            return None
        return response["ETag"]

    def list_versions(self, shards: int) -> Optional[dict[int, str]]:
        """The ETags of the layout's shard objects (ListObjectsV2: 1,000 keys a request)."""
        prefix = self._layout.layout_prefix(shards)
        versions = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                stem = item["Key"][len(prefix):].removesuffix(".gz")
                if stem.isdigit():
                    versions[int(stem)] = item["ETag"]
        return versions

    def layouts(self) -> list[int]:
        """The layouts that have objects (``shards-<N>/`` prefixes), ascending."""
        found = set()
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=f"{self._layout.prefix}shards-", Delimiter="/")
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                count = common["Prefix"][len(self._layout.prefix) + len("shards-"):].rstrip("/")
                if count.isdigit():
                    found.add(int(count))
        return sorted(found)

    def delete_layout(self, shards: int) -> int:
        """Delete every object under ``shards-<shards>/`` (1,000 keys a request)."""
        deleted = 0
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._layout.layout_prefix(shards))
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._s3.delete_objects(Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted

    def shard_label(self, shards: int, shard: int) -> str:
        """The shard's object key."""
        return self._layout.shard_key(shard, shards)
