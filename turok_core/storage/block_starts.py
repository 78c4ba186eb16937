"""The record, in each day table, of the block starts ever written there.

Every writer adds a block's start to its table's record *before* it writes the block (``note``),
so a consistent read of the record (``read``) names every start at which any block of the table
may exist. A writer that knows no one else can write a metric since some moment (turokd holding
the metric's partition, ``turokd/start_snapshots.py``) then knows, from a record read after that
moment, that a block whose start is not in it does not exist: it may put the block whole, and
compute coarse blocks from the finer blocks it wrote, without reading DynamoDB first.

The record is one item per table: ``metric`` ``RECORD_METRIC`` (whitespace: no metric name can be
it, ``model/metric_names.py``), ``start_time`` 0, ``starts`` a number set (added with
``ADD``, so concurrent writers merge) and ``complete``. A record is trusted only with ``complete``,
set by whoever created the table (``created``), so a table written before records existed, or
whose creator died before marking it, is never taken to be empty: ``read`` answers None and
callers read DynamoDB as before. A record that would outgrow its item (``MAX_STARTS``, or
DynamoDB refusing the size) loses ``complete`` the same way. Writers from before this record
existed must not write tables created after it (docs/write-path.md).

Each process remembers the starts it has added (one ``UpdateItem`` per new start and table, a
few dozen a day). Pure boto3 and blocking; thread-safe.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Optional

from botocore.exceptions import ClientError

from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code

RECORD_METRIC = " block starts"
RECORD_KEY = {"metric": {"S": RECORD_METRIC}, "start_time": {"N": "0"}}
MAX_STARTS = 20_000  # ~200 KB of numbers, half DynamoDB's 400 KB item limit
ATTEMPTS = 8  # throttled record updates retried with the store's backoff
_THROTTLED = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")


class BlockStarts:
    """The block-start records of the day tables, through one DynamoDB client."""

    def __init__(self, client: AwsClient, backoff: Callable[[int], None]) -> None:
        self._client = client
        self._backoff = backoff
        self._lock = threading.Lock()
        self._noted: dict[str, set[int]] = {}  # table → starts this process added
        self._given_up: set[str] = set()  # tables whose record this process made untrusted

    def created(self, table: str) -> None:
        """This process created ``table``: its record starts complete (every writer records)."""
        with self._lock:
            self._noted.pop(table, None)
            self._given_up.discard(table)
        self._update(table, "SET complete = :yes", {":yes": {"BOOL": True}})

    def forget(self, tables: Iterable[str]) -> None:
        """``tables`` were deleted under us: what this process added to them is gone too."""
        with self._lock:
            for table in tables:
                self._noted.pop(table, None)
                self._given_up.discard(table)

    def note(self, table: str, starts: Iterable[int]) -> None:
        """Add ``starts`` to ``table``'s record; call before writing blocks there."""
        with self._lock:
            if table in self._given_up:
                return
            noted = self._noted.setdefault(table, set())
            new = set(starts) - noted
            too_many = len(noted) + len(new) > MAX_STARTS
        if not new:
            return
        if too_many:
            self._give_up(table)
            return
        try:
            self._update(table, "ADD starts :new", {":new": {"NS": [str(start) for start in sorted(new)]}})
        except ClientError as exc:
            if error_code(exc) != "ValidationException":  # the item's size limit: untrust it
                raise
            self._give_up(table)
            return
        with self._lock:
            noted |= new

    def read(self, table: str) -> Optional[frozenset[int]]:
        """The starts recorded in ``table`` (a consistent read); None when the record is not
        trusted (no ``complete``); empty when the table does not exist."""
        try:
            item = self._client.get_item(TableName=table, Key=RECORD_KEY, ConsistentRead=True).get("Item")
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return frozenset()
            raise
        if not item or not item.get("complete", {}).get("BOOL"):
            return None
        return frozenset(int(start) for start in item.get("starts", {}).get("NS", ()))

    def _give_up(self, table: str) -> None:
        self._update(table, "REMOVE complete", None)
        with self._lock:
            self._given_up.add(table)

    def _update(self, table: str, expression: str, values: Optional[dict]) -> None:
        request: dict = {"TableName": table, "Key": RECORD_KEY, "UpdateExpression": expression}
        if values:
            request["ExpressionAttributeValues"] = values
        for attempt in range(ATTEMPTS):
            try:
                self._client.update_item(**request)
                return
            except ClientError as exc:
                if error_code(exc) not in _THROTTLED or attempt + 1 >= ATTEMPTS:
                    raise
                self._backoff(attempt)
