"""ensure_key_table: a small table created once and waited for only while it is not ACTIVE."""
from __future__ import annotations

from botocore.exceptions import ClientError

from turok_core.storage.key_tables import TABLE_WAIT_INTERVAL, ensure_key_table


class Tables:
    """DescribeTable/CreateTable of one table that stays CREATING for ``creating`` describes."""

    def __init__(self, creating: int) -> None:
        self.creating = creating
        self.exists = False
        self.calls: list[str] = []

    def describe_table(self, TableName):
        self.calls.append("describe")
        if not self.exists:
            raise ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "DescribeTable")
        status = "CREATING" if self.creating > 0 else "ACTIVE"
        self.creating -= 1
        return {"Table": {"TableStatus": status}}

    def create_table(self, **kwargs):
        self.calls.append("create")
        self.exists = True
        return {"TableDescription": {"TableStatus": "CREATING" if self.creating > 0 else "ACTIVE"}}


def test_a_table_active_at_creation_is_not_waited_for():
    tables, sleeps = Tables(creating=0), []
    assert ensure_key_table(tables, "leases", "key", sleeps.append) is True
    assert tables.calls == ["describe", "create"] and sleeps == []


def test_a_creating_table_is_polled_until_active():
    tables, sleeps = Tables(creating=2), []
    assert ensure_key_table(tables, "leases", "key", sleeps.append) is True
    assert tables.calls == ["describe", "create", "describe", "describe", "describe"]
    assert sleeps == [TABLE_WAIT_INTERVAL] * 3


def test_an_existing_active_table_is_left_alone():
    tables, sleeps = Tables(creating=0), []
    tables.exists = True
    assert ensure_key_table(tables, "leases", "key", sleeps.append) is False
    assert tables.calls == ["describe"] and sleeps == []
