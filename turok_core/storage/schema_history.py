"""The durable record of the schema files in force over time (``model/schema_history.py``).

DynamoDB table ``<table_prefix><table_joiner>schemas`` (not a day table: the keeper leaves it
alone), one item ``name = "history"`` holding ``versions``, a JSON list of
``{"since", "digest", "schemas", "aggregation"}`` (the two files' text; a few KB per version,
far under DynamoDB's 400 KB item limit for any realistic number of edits), and ``revision``,
bumped by every change. ``record`` appends the current files when the newest recorded version
differs, with a conditional put on the revision read, so two processes starting at once record
a change once (or, racing on the same files, twice in a row, which readers fold into one).

turokd records at start and the keeper at every run; the finder only reads (a missing table or
item reads as "nothing recorded": the current files are then the whole history). Blocking
boto3; ``MemorySchemaRecord`` is the in-memory twin (tests hold both to one contract).
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional, Protocol

from botocore.exceptions import ClientError

from turok_core.model.schema_history import SchemaHistory, files_digest
from turok_core.model.schemas import SchemaSet
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code
from turok_core.storage.key_tables import ensure_key_table

KEY = "name"
ITEM = "history"
RECORD_ATTEMPTS = 5  # conditional puts lost to a concurrent recorder before giving up


class SchemaRecord(Protocol):
    """What the stages call on the record (``SchemaRecordTable``, ``MemorySchemaRecord``)."""

    def load(self) -> list[dict]: ...

    def record(self, schemas: SchemaSet, now: float) -> bool: ...


def _entry(schemas: SchemaSet, now: float) -> dict:
    return {"since": float(now), "digest": files_digest(schemas.schemas_text, schemas.aggregation_text),
            "schemas": schemas.schemas_text, "aggregation": schemas.aggregation_text}


def load_history(record: SchemaRecord, schemas: SchemaSet) -> SchemaHistory:
    """The history in ``record`` with ``schemas`` (the files loaded now) as its newest version."""
    return SchemaHistory.from_records(record.load(), schemas)


class SchemaRecordTable:
    """The record in DynamoDB table ``name`` (see the module)."""

    def __init__(self, client: AwsClient, name: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self.name = name
        self._sleep = sleep

    def ensure_table(self) -> bool:
        """Create the table unless it exists and wait until it is ACTIVE; True when created."""
        return ensure_key_table(self._client, self.name, KEY, self._sleep)

    def _read(self) -> tuple[list[dict], Optional[int]]:
        try:
            item = self._client.get_item(TableName=self.name, Key={KEY: {"S": ITEM}},
                                         ConsistentRead=True).get("Item")
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return [], None
            raise
        if item is None:
            return [], None
        return json.loads(item["versions"]["S"]), int(item["revision"]["N"])

    def load(self) -> list[dict]:
        """The recorded versions, oldest first ([] when nothing was recorded)."""
        return self._read()[0]

    def record(self, schemas: SchemaSet, now: float) -> bool:
        """Append ``schemas`` as in force from ``now`` unless it is the newest version already;
        True when appended. Makes the table on first use."""
        digest = files_digest(schemas.schemas_text, schemas.aggregation_text)
        for _attempt in range(RECORD_ATTEMPTS):
            versions, revision = self._read()
            if versions and versions[-1]["digest"] == digest:
                return False
            if revision is None and not versions:
                self.ensure_table()
            item = {KEY: {"S": ITEM}, "versions": {"S": json.dumps(versions + [_entry(schemas, now)])},
                    "revision": {"N": str((revision or 0) + 1)}}
            condition: dict = {"ConditionExpression": "attribute_not_exists(#k)",
                               "ExpressionAttributeNames": {"#k": KEY}}
            if revision is not None:
                condition = {"ConditionExpression": "#r = :r", "ExpressionAttributeNames": {"#r": "revision"},
                             "ExpressionAttributeValues": {":r": {"N": str(revision)}}}
            try:
                self._client.put_item(TableName=self.name, Item=item, **condition)
                return True
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
        raise RuntimeError(f"schema history {self.name}: {RECORD_ATTEMPTS} concurrent changes in a row")


class MemorySchemaRecord:
    """The record in memory, for tests and tools."""

    def __init__(self) -> None:
        self.versions: list[dict] = []

    def load(self) -> list[dict]:
        return [dict(version) for version in self.versions]

    def record(self, schemas: SchemaSet, now: float) -> bool:
        digest = files_digest(schemas.schemas_text, schemas.aggregation_text)
        if self.versions and self.versions[-1]["digest"] == digest:
            return False
        self.versions.append(_entry(schemas, now))
        return True
