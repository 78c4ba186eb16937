"""Create what Turok needs in an AWS account (or a local endpoint): queues, lease and schema history tables, bucket.

``turok-provision [--config FILE]`` is safe to run repeatedly: what exists is kept, and queues are
brought to the configured attributes (visibility timeout, size, redrive policy). The metrics
queue is one queue per partition (``queue_partitions``, names in ``turok_core/wire/partitions.py``),
each with its own dead-letter queue; turokd divides them through the lease table.
Day tables are created by turokd on first use (and ahead of time by the keeper).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping, Optional

from turok_core.model.config import TurokConfig, load_config
from turok_core.runtime.aws import AwsClient, make_client
from turok_core.storage.leases import LeaseTable
from turok_core.storage.schema_history import SchemaRecordTable
from turok_core.wire.partitions import partition_dead_letter_queue_name, partition_queue_names


def ensure_queue(sqs: AwsClient, name: str, attributes: dict[str, str]) -> str:
    """The URL of queue ``name``, created with ``attributes`` or updated to them."""
    try:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:  # same name, other attributes: apply the configured ones
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url


def _dead_letter_redrive(sqs: AwsClient, config: TurokConfig, name: str) -> tuple[str, str]:
    """Dead-letter queue ``name`` made; (its URL, the redrive policy pointing at it)."""
    dlq_url = ensure_queue(sqs, name, {"MessageRetentionPeriod": "1209600"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    receives = str(config.dead_letter_max_receives)
    return dlq_url, json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": receives})


def provision_queues(sqs: AwsClient, config: TurokConfig) -> dict[str, str]:
    """Create each partition's metrics queue with its dead-letter queue, and the index queue
    (whose dead letters go to the first partition's); return the URLs by name."""
    def attributes(redrive: str) -> dict[str, str]:
        return {"VisibilityTimeout": str(config.visibility_timeout_seconds),
                "MaximumMessageSize": str(config.sqs_max_message_bytes),
                "MessageRetentionPeriod": "1209600", "RedrivePolicy": redrive}

    urls: dict[str, str] = {}
    first_redrive = ""
    for partition, name in enumerate(partition_queue_names(config)):
        dlq_name = partition_dead_letter_queue_name(config, partition)
        urls[dlq_name], redrive = _dead_letter_redrive(sqs, config, dlq_name)
        first_redrive = first_redrive or redrive
        urls[name] = ensure_queue(sqs, name, attributes(redrive))
    urls[config.index_queue_name] = ensure_queue(sqs, config.index_queue_name, attributes(first_redrive))
    return urls


def provision_lease_table(dynamodb: AwsClient, config: TurokConfig) -> bool:
    """Create turokd's partition lease table unless it exists; True when created."""
    return LeaseTable(dynamodb, config.lease_table_name).ensure_table()


def provision_schema_history(dynamodb: AwsClient, config: TurokConfig) -> bool:
    """Create the table recording the schema files in force over time; True when created."""
    return SchemaRecordTable(dynamodb, config.schema_history_table_name).ensure_table()


def provision_bucket(s3: AwsClient, config: TurokConfig) -> None:
    """Create the index bucket unless it exists."""
    try:
        s3.head_bucket(Bucket=config.index_bucket)
        return
    except s3.exceptions.ClientError:
        pass
    kwargs: dict[str, Any] = {"Bucket": config.index_bucket}
    region = s3.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)


def provision(config: TurokConfig, clients: Optional[Mapping[str, AwsClient]] = None) -> dict[str, str]:
    """Everything Turok needs before its services start. ``clients``: boto3 clients by service
    ("sqs", "dynamodb", "s3") to use instead of new ones (a test suite provisioning for every
    test shares its own)."""
    def client(service: str) -> AwsClient:
        return clients[service] if clients and service in clients else make_client(service, config)

    urls = provision_queues(client("sqs"), config)
    dynamodb = client("dynamodb")
    provision_lease_table(dynamodb, config)
    provision_schema_history(dynamodb, config)
    provision_bucket(client("s3"), config)
    return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turok-provision", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="Turok configuration file (INI, section [turok])")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for name, url in provision(config).items():
        print(f"queue {name}: {url}")
    print(f"lease table {config.lease_table_name}: ready")
    print(f"schema history table {config.schema_history_table_name}: ready")
    print(f"bucket {config.index_bucket}: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
