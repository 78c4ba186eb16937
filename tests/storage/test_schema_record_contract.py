"""The schema record contract: ``MemorySchemaRecord`` and the DynamoDB ``SchemaRecordTable`` on moto
and dynalite record a new pair of files once, the same files never twice in a row."""
from __future__ import annotations

import pytest

from tests.conftest import DYNAMODB_SERVERS, make_dynamodb_config
from turok_core.model.schemas import SchemaSet
from turok_core.runtime.aws import make_client
from turok_core.storage.schema_history import MemorySchemaRecord, SchemaRecordTable, load_history

OLD = SchemaSet.from_texts("[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n", "")
NEW = SchemaSet.from_texts("[all]\npattern = .*\nretentions = 30s:7d,5min:1y\n",
                           "[s]\npattern = x\naggregationMethod = sum\n")


@pytest.fixture(params=["memory", *DYNAMODB_SERVERS])
def record(request):
    if request.param == "memory":
        return MemorySchemaRecord()
    config = make_dynamodb_config(request, request.param)
    return SchemaRecordTable(make_client("dynamodb", config), config.schema_history_table_name)


def test_each_change_is_recorded_once_with_the_files(record):
    assert record.load() == []  # no table yet: nothing recorded
    assert load_history(record, OLD).current is OLD
    assert record.record(OLD, 100.0) is True
    assert record.record(OLD, 200.0) is False
    assert record.record(NEW, 300.0) is True
    assert record.record(NEW, 400.0) is False
    versions = record.load()
    assert [(v["since"], v["schemas"], v["aggregation"]) for v in versions] == [
        (100.0, OLD.schemas_text, ""), (300.0, NEW.schemas_text, NEW.aggregation_text)]
    history = load_history(record, NEW)
    assert [v.since for v in history.versions][1:] == [300.0] and history.current is NEW
    assert [p.until for p in history.policies_for("a")] == [float("inf"), 300.0]


@pytest.mark.parametrize("server", DYNAMODB_SERVERS)
def test_a_lost_conditional_put_reads_again(request, server):
    config = make_dynamodb_config(request, server)
    client = make_client("dynamodb", config)
    table = SchemaRecordTable(client, config.schema_history_table_name)
    assert table.record(OLD, 1.0)

    class Racing(SchemaRecordTable):
        raced = False

        def _read(self):
            seen = super()._read()
            if not Racing.raced:
                Racing.raced = True
                table.record(NEW, 2.0)  # another process records the same change in between
            return seen

    assert Racing(client, config.schema_history_table_name).record(NEW, 3.0) is False
    assert [v["since"] for v in table.load()] == [1.0, 2.0]
