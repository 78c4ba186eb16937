"""The turok-lib face: what another producer imports from ``turok_core`` to feed turokd.

Messages built by hand and points windowed by ``WindowBuffer`` are encoded, sent to an SQS queue
on the suite's moto server with ``MessageQueue``, received and decoded back unchanged; and
``import turok_core`` loads none of it until a name is used.
"""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from operator import attrgetter

import pytest

import turok_core
from turok_core import (
    MessageQueue,
    TurokMessage,
    WindowBuffer,
    decode_body,
    encode_messages,
    load_config,
    load_schemas,
    make_client,
)

T0 = 1_700_000_040  # a multiple of 10 and 60: the slots below start at T0


def test_importing_turok_core_loads_the_face_only_when_used():
    code = ("import sys, turok_core, turok_core.model.config\n"
            "heavy = {'boto3', 'msgpack', 'turok_core.wire.codec', 'turok_core.windows.buffer'}\n"
            "assert not heavy & set(sys.modules), sorted(heavy & set(sys.modules))\n"
            "turok_core.encode_messages\n"
            "assert 'turok_core.wire.codec' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_face_names_what_it_lists():
    for name in turok_core.__all__:
        assert name in dir(turok_core)
        assert getattr(turok_core, name).__name__ == name
    assert turok_core.TurokMessage is TurokMessage
    with pytest.raises(AttributeError):
        turok_core.no_such_name  # noqa: B018


def test_messages_windowed_encoded_pushed_to_sqs_and_decoded_back(moto_endpoint):
    config = load_config(environ={"TUROK_AWS_ENDPOINT_URL": moto_endpoint, "TUROK_AWS_REGION": "us-east-1",
                                  "TUROK_QUEUE_NAME": f"lib-{uuid.uuid4().hex[:8]}"})
    client = make_client("sqs", config)
    client.create_queue(QueueName=config.queue_name)
    schemas = load_schemas(config)

    def policy(name: str) -> tuple[int, str]:
        found = schemas.policy_for(name)
        return found.step, found.aggregation_type

    windows = WindowBuffer(policy, config.window_grace_seconds)
    windows.add_points(["app.requests.count", "app.latency", "app.requests.count", "app.latency",
                        "app.requests.count", "app.requests.count"],
                       [1.0, 30.0, 2.0, 50.0, 4.0, 8.0], [T0, T0, T0 + 5, T0 + 9, T0 + 10, T0 + 100])
    released = windows.release(T0 + 30)  # slots T0 and T0 + 10 have closed; T0 + 100 is still open
    assert windows.open_windows == 1
    messages = list(released) + [TurokMessage("app.up", T0, [1.0], 60, "last")]
    assert sorted(messages, key=attrgetter("metric", "start_time")) == [
        TurokMessage("app.latency", T0, [30.0, 50.0], 10, "average"),
        TurokMessage("app.requests.count", T0, [1.0, 2.0], 10, "sum"),
        TurokMessage("app.requests.count", T0 + 10, [4.0], 10, "sum"),
        TurokMessage("app.up", T0, [1.0], 60, "last"),
    ]

    bodies = encode_messages(messages, config.sqs_max_message_bytes)
    queue = MessageQueue.from_config(client, config, config.queue_name)
    queue.send(bodies)
    received: list[str] = []
    deadline = time.monotonic() + 20
    while len(received) < len(bodies) and time.monotonic() < deadline:
        got = queue.receive(wait_seconds=1)
        received += [message.body for message in got]
        queue.delete([message.receipt_handle for message in got])
    decoded = [message for body in received for message in decode_body(body)]
    key = attrgetter("metric", "start_time")
    assert sorted(decoded, key=key) == sorted(messages, key=key)
