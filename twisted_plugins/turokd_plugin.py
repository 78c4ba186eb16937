"""``twistd turokd [--config FILE]``: Turok messages from SQS, written once per block to DynamoDB."""
from turok_core.runtime.plugin import TurokServiceMaker

turokd = TurokServiceMaker(
    "turokd", "turokd: Turok messages from SQS, aggregated into DynamoDB day tables.",
    "turok_core.turokd.service:make_turokd_service")
