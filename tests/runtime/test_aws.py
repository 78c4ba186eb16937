"""make_client: a session per client (the configuration chain read afresh), one shared data loader."""
from __future__ import annotations

import pytest

from turok_core.model.config import TurokConfig
from turok_core.runtime import aws
from turok_core.runtime.aws import make_client


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def test_clients_share_one_data_loader(credentials: None) -> None:
    config = TurokConfig(aws_endpoint_url="http://127.0.0.1:9", aws_region="us-east-1")
    first = make_client("dynamodb", config)
    paths = list(aws._loader.search_paths) if aws._loader is not None else []
    second, third = make_client("dynamodb", config), make_client("sqs", config)
    assert aws._loader is not None and paths == aws._loader.search_paths  # boto3's path added once
    models = {id(client._loader) for client in (first, second, third)}
    assert models == {id(aws._loader)}
    # the same parsed service model, not a second copy of it
    assert first.meta.service_model._service_description is second.meta.service_model._service_description


def test_each_client_reads_the_configuration_chain_afresh(credentials: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = TurokConfig(aws_endpoint_url="http://127.0.0.1:9", aws_region="")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert make_client("sqs", config).meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert make_client("sqs", config).meta.region_name == "ap-south-1"
