"""boto3 clients built from a TurokConfig, honouring boto3's standard configuration chain.

Every client gets a session of its own (the configuration chain read when it is made), but all
sessions of the process share one botocore data loader: each session's own loader parses
botocore's endpoint rules and service models again, about 10 MB of RSS per client (turokd makes
four), where a shared one parses each file once.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.loaders import Loader

from turok_core.model.config import TurokConfig

DEFAULT_REGION = "us-east-1"
AwsClient = Any  # a boto3 client: boto3 ships no types

_loader: Optional[Loader] = None
_lock = threading.Lock()  # boto3 sessions are not thread-safe, nor is sharing their loader


def _session() -> boto3.session.Session:
    """A new boto3 session on the process's shared data loader (call with ``_lock`` held)."""
    global _loader
    core = botocore.session.get_session()
    if _loader is None:
        _loader = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _loader)
    session = boto3.session.Session(botocore_session=core)
    paths = _loader.search_paths  # boto3 appends its data directory once per session
    paths[:] = list(dict.fromkeys(paths))
    return session


def make_client(service: str, config: TurokConfig) -> AwsClient:
    """A boto3 client for ``service``; ``aws_endpoint_url``/``aws_region`` override the AWS chain.

    Without them boto3 decides as usual (``AWS_ENDPOINT_URL_<SERVICE>``, profiles, …). A missing
    region falls back to us-east-1 so a local endpoint works with no AWS configuration at all.
    DynamoDB clients skip botocore's client-side parameter validation (below).
    """
    with _lock:
        session = _session()
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
    with _lock:
        return session.client(service, **kwargs)
