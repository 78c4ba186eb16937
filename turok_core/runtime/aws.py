"""boto3 clients built from a TurokConfig, honouring boto3's standard configuration chain."""
from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from turok_core.model.config import TurokConfig

DEFAULT_REGION = "us-east-1"
AwsClient = Any  # a boto3 client: boto3 ships no types


def make_client(service: str, config: TurokConfig) -> AwsClient:
    """A boto3 client for ``service``; ``aws_endpoint_url``/``aws_region`` override the AWS chain.

    Without them boto3 decides as usual (``AWS_ENDPOINT_URL_<SERVICE>``, profiles, …). A missing
    region falls back to us-east-1 so a local endpoint works with no AWS configuration at all.
    DynamoDB clients skip botocore's client-side parameter validation (below).
    """
    session = boto3.session.Session()
    region = config.aws_region or session.region_name or DEFAULT_REGION
    boto_config = BotoConfig(
        max_pool_connections=config.aws_max_pool_connections,
        retries={"mode": "standard", "max_attempts": 5},
        # S3 conditional writes and our own payloads need no checksum games with local endpoints
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # botocore walks every attribute of a 25-item BatchWriteItem (or 100 BatchGetItem keys)
        # against the model before sending it, about a sixth of a request's CPU; Turok builds its
        # DynamoDB requests itself and DynamoDB still refuses a bad one with as clear an error
        parameter_validation=service != "dynamodb",
    )
    kwargs = {"region_name": region, "config": boto_config}
    if config.aws_endpoint_url:
        kwargs["endpoint_url"] = config.aws_endpoint_url
    return session.client(service, **kwargs)
