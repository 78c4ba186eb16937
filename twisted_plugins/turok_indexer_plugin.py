"""``twistd turok-indexer [--config FILE]``: announced metric names into the sharded S3 index."""
from turok_core.runtime.plugin import TurokServiceMaker

indexer = TurokServiceMaker(
    "turok-indexer", "turok-indexer: new metric names into the sharded S3 index.",
    "turok_core.index.service:make_indexer_service")
