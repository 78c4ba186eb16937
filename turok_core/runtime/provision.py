"""Create what Turok needs in an AWS account (or a local endpoint): queues, dead-letter queue, bucket.

``turok-provision [--config FILE]`` is safe to run repeatedly: what exists is kept, and queues are
brought to the configured attributes (visibility timeout, size, redrive policy).
Day tables are created by turokd on first use (and ahead of time by the keeper).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from turok_core.model.config import TurokConfig, load_config
from turok_core.runtime.aws import AwsClient, make_client


def ensure_queue(sqs: AwsClient, name: str, attributes: dict[str, str]) -> str:
    """The URL of queue ``name``, created with ``attributes`` or updated to them."""
    try:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:  # same name, other attributes: apply the configured ones
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url


def provision_queues(sqs: AwsClient, config: TurokConfig) -> dict[str, str]:
    """Create the metrics queue (with its dead-letter queue) and the index queue; return URLs."""
    message_bytes = str(config.sqs_max_message_bytes)
    dlq_url = ensure_queue(sqs, config.dead_letter_queue_name, {"MessageRetentionPeriod": "1209600"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(config.dead_letter_max_receives)})
    urls = {config.dead_letter_queue_name: dlq_url}
    for name in (config.queue_name, config.index_queue_name):
        urls[name] = ensure_queue(sqs, name, {
            "VisibilityTimeout": str(config.visibility_timeout_seconds),
            "MaximumMessageSize": message_bytes,
            "MessageRetentionPeriod": "1209600",
            "RedrivePolicy": redrive,
        })
    return urls


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


def provision(config: TurokConfig) -> dict[str, str]:
    """Everything Turok needs before its services start."""
    urls = provision_queues(make_client("sqs", config), config)
    provision_bucket(make_client("s3", config), config)
    return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turok-provision", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="Turok configuration file (INI, section [turok])")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for name, url in provision(config).items():
        print(f"queue {name}: {url}")
    print(f"bucket {config.index_bucket}: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
