"""Data sent at a resolution of schema files edited since rolls up the way those files said."""
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schema_history import SchemaHistory, files_digest
from turok_core.model.schemas import SchemaSet
from turok_core.storage.memory import MemoryBlockStore
from turok_core.turokd.block_writer import BlockWriter
from turok_core.wire.codec import encode_messages
from turok_core.wire.queues import ReceivedMessage

OLD = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n"
NEW = "[all]\npattern = .*\nretentions = 30s:7d,5min:1y\n"
AGG = "[sum]\npattern = count$\naggregationMethod = sum\nxFilesFactor = 0\n"
T = 1_700_006_400 - 1_700_006_400 % 86400


def test_a_block_at_an_old_step_rolls_up_by_the_old_files():
    current = SchemaSet.from_texts(NEW, AGG)
    history = SchemaHistory.from_records(
        [{"since": T - 86400, "digest": files_digest(OLD, AGG), "schemas": OLD, "aggregation": AGG},
         {"since": T, "digest": files_digest(NEW, AGG), "schemas": NEW, "aggregation": AGG}], current)
    config = TurokConfig()
    messages = [TurokMessage("a.count", T + 10 * i, [1.0], 10, "sum") for i in range(3)]  # sent before the edit
    messages += [TurokMessage("a.count", T + 60, [4.0], 30, "sum")]  # the new files' base step
    received = [ReceivedMessage(body, f"r{i}", f"m{i}", 1) for i, body in enumerate(encode_messages(messages))]
    for with_history, minute in ((True, [3.0]), (False, [None])):
        store = MemoryBlockStore(config)
        writer = BlockWriter(store, config, current, clock=lambda: T + 600.0,
                             history=history if with_history else None)
        writer.hold(received)
        writer.close_all()
        assert store.fetch_series(["a.count"], 10, T, T + 30)["a.count"] == [1.0, 1.0, 1.0]
        assert store.fetch_series(["a.count"], 60, T, T + 60)["a.count"] == minute
        assert store.fetch_series(["a.count"], 300, T, T + 300)["a.count"] == [4.0]
