"""Configuration loading and carbon's schema files."""
import textwrap

import pytest

from turok_core.model.config import TurokConfig, load_config
from turok_core.model.schemas import Archive, SchemaError, SchemaSet
from turok_core.storage.block_layout import block_span, decode_datapoints, encode_datapoints
from turok_core.wire.queues import batch_bodies


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_file_then_environment_override(tmp_path):
    path = write(tmp_path, "turok.conf", """
        [turok]
        plaintext_port = 3003
        queue_name = from-file
        flush_interval_seconds = 0.5
        """)
    config = load_config(str(path), environ={"TUROK_QUEUE_NAME": "from-env"})
    assert (config.plaintext_port, config.queue_name, config.flush_interval_seconds) == (3003, "from-env", 0.5)
    assert load_config(environ={"TUROK_CONFIG": str(path)}).queue_name == "from-file"
    assert load_config(environ={}) == TurokConfig()


@pytest.mark.parametrize("text, error", [
    ("[turok]\nplaintext_prot = 1\n", "unknown setting"),
    ("[turok]\nplaintext_port = many\n", "not a valid int"),
    ("[carbon]\nx = 1\n", "unknown section"),
])
def test_bad_config_files_are_refused(tmp_path, text, error):
    with pytest.raises(ValueError, match=error):
        load_config(str(write(tmp_path, "bad.conf", text)), environ={})


def test_schemas_first_match_wins_with_aggregation(tmp_path):
    schemas = write(tmp_path, "storage-schemas.conf", """
        [stats]
        pattern = ^stats\\.
        retentions = 10s:6h,1min:7d,1h:5y
        [legacy_points]
        pattern = ^old\\.
        retentions = 60:1440
        [default]
        pattern = .*
        retentions = 60s:1d
        """)
    aggregation = write(tmp_path, "storage-aggregation.conf", """
        [counts]
        pattern = \\.count$
        xFilesFactor = 0
        aggregationMethod = sum
        [maxes]
        pattern = \\.max$
        aggregationMethod = max
        """)
    schema_set = SchemaSet(schemas, aggregation)
    policy = schema_set.policy_for("stats.web.count")
    assert policy.archives == (Archive(10, 21600), Archive(60, 604800), Archive(3600, 5 * 31536000))
    assert (policy.step, policy.aggregation_type, policy.x_files_factor) == (10, "sum", 0.0)
    assert schema_set.policy_for("old.x.max").archives == (Archive(60, 86400),)
    assert schema_set.policy_for("old.x.max").aggregation_type == "maximum"
    assert schema_set.policy_for("other").aggregation_type == "average"
    assert schema_set.policy_for("other").x_files_factor == 0.5
    # metrics matching the same sections share one policy object (turokd caches one per metric)
    assert schema_set.policy_for("stats.a.count") is schema_set.policy_for("stats.b.count")
    assert schema_set.policy_for("stats.a.max") is not schema_set.policy_for("stats.a.count")


@pytest.mark.parametrize("retentions, reason", [
    ("10s:6h,15s:7d", "does not divide"),
    ("1min:7d,10s:6h", "finer to coarser"),
    ("10s:7d,1min:6h", "retain longer"),
    ("7s:1d", "does not divide a day"),
    ("10s", "precision:retention"),
    ("10x:1d", "unknown unit"),
])
def test_invalid_schemas_are_refused_with_file_line_and_reason(tmp_path, retentions, reason):
    path = write(tmp_path, "storage-schemas.conf", f"[ok]\npattern = ^a\nretentions = 60s:1d\n\n[bad]\n"
                                                   f"pattern = .*\nretentions = {retentions}\n")
    with pytest.raises(SchemaError, match=rf"storage-schemas.conf:5: section \[bad\]: .*{reason}"):
        SchemaSet(path)


def test_bad_pattern_and_bad_aggregation_method_are_refused(tmp_path):
    schemas = write(tmp_path, "s.conf", "[a]\npattern = (\nretentions = 60s:1d\n")
    with pytest.raises(SchemaError, match="bad pattern"):
        SchemaSet(schemas)
    good = write(tmp_path, "g.conf", "[a]\npattern = .*\nretentions = 60s:1d\n")
    aggregation = write(tmp_path, "a.conf", "[a]\npattern = .*\naggregationMethod = median\n")
    with pytest.raises(SchemaError, match="unknown aggregation 'median'"):
        SchemaSet(good, aggregation)


def test_shipped_defaults_load():
    schema_set = SchemaSet(TurokConfig().schemas_path, TurokConfig().aggregation_path)
    assert schema_set.policy_for("servers.a.cpu").step == 10
    assert schema_set.policy_for("stats_counts.x.count").aggregation_type == "sum"
    assert schema_set.policy_for("turok.agents.h.gateway.x").step == 60


def test_blocks_divide_a_day_and_round_trip():
    assert block_span(10, 60) == 600
    assert block_span(60, 60) == 3600
    assert block_span(3600, 60) == 86400  # 24 slots: a day is the largest block
    assert block_span(20, 7) == 20 * 6  # the largest slot count <= 7 dividing 4320
    assert 86400 % block_span(20, 7) == 0
    assert decode_datapoints(encode_datapoints([1.5, None, 3, None, None])) == [1.5, None, 3]
    assert decode_datapoints("[1, null, 30000]") == [1, None, 30000]


def test_sqs_batches_hold_at_most_ten_bodies_and_the_size_limit():
    batches = batch_bodies(["x" * 100] * 25, 262144)
    assert [len(b) for b in batches] == [10, 10, 5]
    batches = batch_bodies(["x" * 100_000] * 5, 262144)
    assert [len(b) for b in batches] == [2, 2, 1]


class _FlakyClient:
    """SendMessageBatch that fails whole calls for the first batch and one entry once."""

    def __init__(self):
        self.sent, self.calls = [], 0

    def get_queue_url(self, QueueName):
        return {"QueueUrl": "q"}

    def send_message_batch(self, QueueUrl, Entries):
        self.calls += 1
        if any(e["MessageBody"].startswith("doomed") for e in Entries):
            raise ConnectionError("endpoint down")
        failed = [{"Id": e["Id"], "Code": "InternalError"} for e in Entries
                  if e["MessageBody"] == "flaky" and self.calls == 2]
        self.sent += [e["MessageBody"] for e in Entries if e["Id"] not in {f["Id"] for f in failed}]
        return {"Failed": failed}


def test_queue_send_retries_failed_entries_and_still_tries_later_batches():
    from turok_core.wire.queues import MessageQueue, QueueSendError

    client = _FlakyClient()
    queue = MessageQueue(client, "q", max_message_bytes=20, max_attempts=3, sleep=lambda s: None)
    with pytest.raises(QueueSendError) as raised:
        queue.send(["doomed" + "x" * 10, "flaky", "ok" + "y" * 10])
    assert raised.value.bodies == ["doomed" + "x" * 10]
    assert sorted(client.sent) == ["flaky", "ok" + "y" * 10]
