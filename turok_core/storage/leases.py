"""The partition lease table in DynamoDB: which turokd writes which metrics-queue partition.

Modelled on the Kinesis Client Library's lease table. One item per partition (``lease`` =
``partition-<p>``) holds its ``owner`` (empty when free), ``expires`` (epoch seconds, the owner's
clock) and ``counter``, bumped by every take, renew and release. Every change is a conditional
write on the counter last seen (and the owner for renew and release), so of two turokd racing
for a lease exactly one wins, and an owner whose lease was taken learns it at its next renew.
Each live turokd also keeps a ``worker-<id>`` item with its own expiry, so the others count it
when they compute their fair share before it holds anything. A running ``turok-import`` keeps an
``import-<id>`` item with its expiry and ``before``: while it lives, the import writes blocks that
start before ``before``, so no turokd is those blocks' sole writer (``lease_holder.py``).

Blocking boto3: turokd calls it from its AWS thread pool. ``memory_leases.MemoryLeaseTable`` is
the in-memory twin; ``tests/storage/test_lease_table_contract.py`` holds both to one contract.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from botocore.exceptions import ClientError

from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code
from turok_core.storage.key_tables import ensure_key_table

KEY = "lease"
PARTITION_PREFIX = "partition-"
WORKER_PREFIX = "worker-"
IMPORT_PREFIX = "import-"


@dataclass(frozen=True)
class Lease:
    """One partition's lease as last read or written; ``owner`` is empty when free."""
    partition: int
    owner: str
    expires: float
    counter: int

    def free_at(self, now: float) -> bool:
        """Nobody holds it at ``now``: never taken, released, or expired."""
        return not self.owner or self.expires <= now


@dataclass(frozen=True)
class LeaseView:
    """The whole table: every partition's lease that exists, and each worker's expiry."""
    leases: dict[int, Lease]
    workers: dict[str, float]
    imports: dict[str, tuple[float, float]] = field(default_factory=dict)  # id → (expires, before)


class LeaseStore(Protocol):
    """What turokd calls on a lease table (``LeaseTable`` here, ``MemoryLeaseTable`` in memory)."""

    def read(self) -> LeaseView: ...

    def take(self, partition: int, owner: str, expires: float, seen: Optional[Lease]) -> Optional[Lease]: ...

    def renew(self, lease: Lease, expires: float) -> Optional[Lease]: ...

    def release(self, lease: Lease) -> bool: ...

    def announce(self, worker: str, expires: float) -> None: ...

    def retire(self, worker: str) -> None: ...

    def announce_import(self, name: str, expires: float, before: float) -> None: ...

    def end_import(self, name: str) -> None: ...


def _partition_key(partition: int) -> dict:
    return {KEY: {"S": f"{PARTITION_PREFIX}{partition}"}}


class LeaseTable:
    """The lease table ``name`` in DynamoDB (see the module for the items and conditions)."""

    def __init__(self, client: AwsClient, name: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self.name = name
        self._sleep = sleep

    def ensure_table(self) -> bool:
        """Create the table unless it exists and wait until it is ACTIVE; True when created."""
        return ensure_key_table(self._client, self.name, KEY, self._sleep)

    def read(self) -> LeaseView:
        """Every item, read consistently (the table holds one item per partition and turokd)."""
        leases: dict[int, Lease] = {}
        workers: dict[str, float] = {}
        imports: dict[str, tuple[float, float]] = {}
        kwargs: dict = {"TableName": self.name, "ConsistentRead": True}
        while True:
            page = self._client.scan(**kwargs)
            for item in page.get("Items", []):
                key = item[KEY]["S"]
                expires = float(item.get("expires", {}).get("N", "0"))
                if key.startswith(PARTITION_PREFIX):
                    partition = int(key[len(PARTITION_PREFIX):])
                    leases[partition] = Lease(partition, item.get("owner", {}).get("S", ""), expires,
                                              int(item.get("counter", {}).get("N", "0")))
                elif key.startswith(WORKER_PREFIX):
                    workers[key[len(WORKER_PREFIX):]] = expires
                elif key.startswith(IMPORT_PREFIX):
                    imports[key[len(IMPORT_PREFIX):]] = (expires, float(item.get("before", {}).get("N", "0")))
            if "LastEvaluatedKey" not in page:
                return LeaseView(leases, workers, imports)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def take(self, partition: int, owner: str, expires: float, seen: Optional[Lease]) -> Optional[Lease]:
        """Take ``partition`` for ``owner`` if its lease is still as ``seen`` (None: no item yet);
        the new lease, or None when another turokd changed it first."""
        if seen is None:
            condition, values = "attribute_not_exists(#k)", {}
        else:
            condition, values = "#c = :seen", {":seen": {"N": str(seen.counter)}}
        return self._update(partition, "SET #o = :owner, #e = :expires, #c = if_not_exists(#c, :zero) + :one",
                            condition, {":owner": {"S": owner}, ":expires": {"N": repr(float(expires))}, **values})

    def renew(self, lease: Lease, expires: float) -> Optional[Lease]:
        """Extend a lease still held as ``lease``; the new lease, or None when it was lost."""
        return self._update(lease.partition, "SET #e = :expires, #c = #c + :one", "#o = :owner AND #c = :seen",
                            {":owner": {"S": lease.owner}, ":seen": {"N": str(lease.counter)},
                             ":expires": {"N": repr(float(expires))}})

    def release(self, lease: Lease) -> bool:
        """Give a lease back (free at once for any taker); False when it was lost already."""
        return self._update(lease.partition, "SET #o = :free, #e = :zero, #c = #c + :one",
                            "#o = :owner AND #c = :seen",
                            {":owner": {"S": lease.owner}, ":seen": {"N": str(lease.counter)},
                             ":free": {"S": ""}}) is not None

    def announce(self, worker: str, expires: float) -> None:
        """Say ``worker`` is alive until ``expires``."""
        self._client.put_item(TableName=self.name, Item={KEY: {"S": f"{WORKER_PREFIX}{worker}"},
                                                         "expires": {"N": repr(float(expires))}})

    def retire(self, worker: str) -> None:
        """``worker`` stops: the others stop counting it at once."""
        self._client.delete_item(TableName=self.name, Key={KEY: {"S": f"{WORKER_PREFIX}{worker}"}})

    def announce_import(self, name: str, expires: float, before: float) -> None:
        """Say import ``name`` runs until ``expires``, writing blocks that start before ``before``."""
        self._client.put_item(TableName=self.name, Item={KEY: {"S": f"{IMPORT_PREFIX}{name}"},
                                                         "expires": {"N": repr(float(expires))},
                                                         "before": {"N": repr(float(before))}})

    def end_import(self, name: str) -> None:
        """Import ``name`` wrote its last block: turokd may be sole writer again."""
        self._client.delete_item(TableName=self.name, Key={KEY: {"S": f"{IMPORT_PREFIX}{name}"}})

    def _update(self, partition: int, update: str, condition: str, values: dict) -> Optional[Lease]:
        names = {"#o": "owner", "#e": "expires", "#c": "counter"}
        if "#k" in condition:
            names["#k"] = KEY
        values = {":zero": {"N": "0"}, ":one": {"N": "1"}, **values}
        used = {name: value for name, value in values.items() if name in update or name in condition}
        try:
            item = self._client.update_item(
                TableName=self.name, Key=_partition_key(partition), UpdateExpression=update,
                ConditionExpression=condition, ExpressionAttributeNames=names,
                ExpressionAttributeValues=used, ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return Lease(partition, item["owner"]["S"], float(item["expires"]["N"]), int(item["counter"]["N"]))
