"""BatchWriteItem bodies written by ``lean_writes`` against botocore's own serialisation of the
same parameters (byte-equal), on the wire of a real boto3 client whose sends are answered here;
throttled and unprocessed requests resent as botocore does; and against a moto server."""
from __future__ import annotations

import base64
import json
import os
import random

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.serialize import JSONSerializer

from turok_core.storage.lean_writes import batch_write_body, lean_batch_write


class Wire:
    """Answers a client's sends itself (``before-send``) and keeps each request's body."""

    def __init__(self, client, answers: list[tuple[int, dict]]) -> None:
        self.bodies: list[bytes] = []
        self._answers = list(answers)
        client.meta.events.register("before-send.dynamodb", self._send)

    def _send(self, request, **_):
        self.bodies.append(bytes(request.body))
        status, document = self._answers.pop(0) if self._answers else (200, {"UnprocessedItems": {}})
        headers = {"x-amzn-requestid": "test"}
        return _Raw(status, json.dumps(document).encode(), headers, request.url)


class _Raw(AWSResponse):
    def __init__(self, status: int, body: bytes, headers: dict, url: str) -> None:
        super().__init__(url, status, headers, _Stream(body))


class _Stream:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body

    def read(self, *_args, **_kwargs):
        body, self._body = self._body, b""
        return body


def make(lean: bool, endpoint: str = "http://127.0.0.1:1", retries: int = 1):
    client = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(parameter_validation=False, retries={"mode": "standard", "total_max_attempts": retries}))
    if lean:
        lean_batch_write(client)
    return client


def block_item(rng: random.Random, n: int) -> dict:
    return {"metric": {"S": f"servers.h{n:03d}.cpu.é{n}"}, "start_time": {"N": str(1_795_478_400 + 4320 * n)},
            "datapoints": {"B": rng.randbytes(rng.randint(0, 900))}}


def requests(seed: int, tables: int = 2, items: int = 25) -> dict:
    rng = random.Random(seed)
    out: dict[str, list] = {}
    for n in range(items):
        out.setdefault(f"turok_10s_2026-11-{24 + n % tables}", []).append({"PutRequest": {"Item": block_item(rng, n)}})
    return out


def sent(lean: bool, **params) -> bytes:
    client = make(lean)
    wire = Wire(client, [])
    client.batch_write_item(**params)
    assert len(wire.bodies) == 1
    return wire.bodies[0]


@pytest.mark.parametrize("seed", range(5))
def test_body_is_botocores_byte_for_byte(seed, monkeypatch):
    params = {"RequestItems": requests(seed)}
    walked = []
    original = JSONSerializer._serialize_type_blob
    monkeypatch.setattr(JSONSerializer, "_serialize_type_blob",
                        lambda self, *args: walked.append(1) or original(self, *args))
    lean = sent(True, **params)
    assert not walked  # botocore's serializer never saw the blocks
    assert lean == sent(False, **params) == batch_write_body(params)
    assert len(walked) == 25
    # and it is the full request: every item, blobs in base64
    document = json.loads(lean)
    got = [base64.b64decode(r["PutRequest"]["Item"]["datapoints"]["B"])
           for rs in document["RequestItems"].values() for r in rs]
    assert got == [r["PutRequest"]["Item"]["datapoints"]["B"] for rs in params["RequestItems"].values() for r in rs]


def test_every_attribute_type_and_delete_requests_match_botocore():
    item = {"s": {"S": "x"}, "n": {"N": "1.5"}, "b": {"B": b"\x00\xff"}, "bs": {"BS": [b"a", b"bc"]},
            "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]}, "t": {"BOOL": True}, "z": {"NULL": True},
            "m": {"M": {"inner": {"B": b"\x01"}, "l": {"L": [{"S": "y"}, {"B": b"\x02"}, {"M": {}}]}}},
            "l": {"L": []}}
    params = {"RequestItems": {"t1": [{"PutRequest": {"Item": item}}, {"DeleteRequest": {"Key": {"k": {"S": "a"}}}}]},
              "ReturnConsumedCapacity": "TOTAL"}
    assert sent(True, **params) == sent(False, **params)


def test_what_is_not_dynamodb_json_is_left_to_botocore():
    params = {"RequestItems": {"t1": [{"PutRequest": {"Item": {"odd": {"S": "a", "N": "1"}}}}]}}
    assert sent(True, **params) == sent(False, **params)


def test_the_callers_request_is_not_changed():
    params = {"RequestItems": requests(7)}
    snapshot = json.dumps(params, default=repr)
    sent(True, **params)
    assert json.dumps(params, default=repr) == snapshot


def test_a_throttled_request_is_resent_lean_then_surfaces_as_client_error():
    client = make(True, retries=3)
    throttled = (400, {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                       "message": "slow down"})
    wire = Wire(client, [throttled, throttled, throttled])
    params = {"RequestItems": requests(1, items=3)}
    with pytest.raises(ClientError) as raised:
        client.batch_write_item(**params)
    assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert len(wire.bodies) == 3 and set(wire.bodies) == {batch_write_body(params)}


def test_a_validation_error_surfaces_as_client_error():
    client = make(True)
    Wire(client, [(400, {"__type": "com.amazon.coral.validate#ValidationException",
                         "message": "Too many items requested for the BatchWriteItem call"})])
    with pytest.raises(ClientError) as raised:
        client.batch_write_item(RequestItems=requests(2, items=26))
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_unprocessed_items_come_back_as_bytes_and_are_resent_as_they_were():
    client = make(True)
    params = {"RequestItems": requests(3, tables=1, items=4)}
    table, first = next(iter(params["RequestItems"].items()))
    left = {table: [json.loads(batch_write_body({"RequestItems": {table: first[2:]}}))["RequestItems"][table]][0]}
    wire = Wire(client, [(200, {"UnprocessedItems": left})])
    answer = client.batch_write_item(**params)
    unprocessed = answer["UnprocessedItems"]
    assert unprocessed == {table: first[2:]}  # B parsed back to bytes by botocore
    client.batch_write_item(RequestItems=unprocessed)
    assert wire.bodies[1] == batch_write_body({"RequestItems": {table: first[2:]}})


@pytest.fixture
def moto_client(moto_endpoint):
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    return make(True, endpoint=moto_endpoint)


def test_moto_stores_what_the_lean_body_carries(moto_client):
    name = f"lean_{random.randrange(1 << 30)}"
    moto_client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                             KeySchema=[{"AttributeName": "metric", "KeyType": "HASH"},
                                        {"AttributeName": "start_time", "KeyType": "RANGE"}],
                             AttributeDefinitions=[{"AttributeName": "metric", "AttributeType": "S"},
                                                   {"AttributeName": "start_time", "AttributeType": "N"}])
    try:
        rng = random.Random(5)
        items = [block_item(rng, n) for n in range(25)]
        answer = moto_client.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": i}} for i in items]})
        assert not answer.get("UnprocessedItems")
        for item in items:
            stored = moto_client.get_item(TableName=name, Key={"metric": item["metric"],
                                                               "start_time": item["start_time"]})["Item"]
            assert stored == item
        with pytest.raises(ClientError) as raised:
            moto_client.batch_write_item(RequestItems={name + "_missing": [{"PutRequest": {"Item": items[0]}}]})
        assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        moto_client.delete_table(TableName=name)
