"""turokd's columnar decoding gives what one message object per window gave: same values, same rejections."""
from __future__ import annotations

import base64
import json
import random

import msgpack
import pytest

from turok_core.model.aggregation import AGGREGATION_TYPES, aggregate
from turok_core.model.message import MessageError, TurokMessage
from turok_core.turokd.decode import decode_batch
from turok_core.wire import codec
from turok_core.wire.codec import decode_body, encode_json, encode_messages
from turok_core.wire.queues import ReceivedMessage

T0 = 1_700_000_000 - 1_700_000_000 % 3600


def reference(bodies: list[str]) -> tuple[dict, list[str]]:
    """The per-message reduction turokd did before columns: ``({(metric, step, slot): value}, reasons)``."""
    windows: dict = {}
    reasons = []
    seen = set()
    for body in bodies:
        if body in seen:
            continue
        try:
            messages = decode_body(body)
            for m in messages:  # what turokd refused, message by message
                if 86400 % m.resolution:
                    raise MessageError(f"resolution {m.resolution}s of {m.metric!r} does not divide a day")
                if len(m.metric.encode("utf-8")) > 2048:
                    raise MessageError(f"metric name of {len(m.metric)} characters is too long to store")
        except MessageError as exc:
            reasons.append(str(exc))
            continue
        seen.add(body)
        for m in messages:
            key = (m.metric, m.resolution, m.start_time)
            if key in windows:
                windows[key][1].extend(m.datapoints)
            else:
                windows[key] = (m.aggregation_type, list(m.datapoints))
    return {key: aggregate(kind, values) for key, (kind, values) in windows.items()}, reasons


def rejected_bodies(bodies: list[str]) -> set[str]:
    return {b for b in bodies if reference([b])[1]}


@pytest.mark.parametrize("c_envelopes", [True, False], ids=["C", "reference"])
def test_columns_reduce_like_one_message_per_window_with_repeats_mixed_aggregations_and_rejections(
        c_envelopes, monkeypatch):
    if c_envelopes and codec.native is None:
        pytest.skip("turok_core.wire._envelope not built")
    monkeypatch.setattr(codec, "native", codec.native if c_envelopes else None)
    rng = random.Random(13)
    reasons_seen: set[str] = set()
    for _round in range(40):
        bodies = []
        for _ in range(rng.randint(1, 6)):
            messages = [TurokMessage(f"m{rng.randint(0, 12)}", T0 + 10 * rng.randint(0, 3),
                                     [round(rng.uniform(-9, 9), rng.choice([0, 2, 9]))
                                      for _ in range(rng.choice([1, 1, 3]))],
                                     rng.choice([10, 10, 60]), rng.choice(AGGREGATION_TYPES))
                        for _ in range(rng.randint(1, 15))]
            for m in messages:
                m.start_time -= m.start_time % m.resolution
            bodies += encode_messages(messages, max_body_bytes=rng.choice([300, 100000]))
        if rng.random() < 0.3:
            bodies.append(rng.choice(bodies))  # a repeated body
        if rng.random() < 0.3:
            bodies.append(encode_json(TurokMessage("json.m", T0, [1, 2, 4], 10, "average")))
        if rng.random() < 0.3:
            bodies.append(json.dumps({"metric": "bad.res", "start_time": "01-01-1970 00:00:00",
                                      "datapoints": [1], "resolution": "7sec", "aggregation_type": "sum"}))
        if rng.random() < 0.3:
            bodies.append(encode_messages([TurokMessage("x" * 3000, T0, [1.0], 10, "sum")])[0])
        if rng.random() < 0.3:  # at the limit in UTF-8 bytes, and one byte past it
            bodies.append(encode_messages([TurokMessage("\u00e9" * 1024, T0, [1.0], 10, "sum"),
                                           TurokMessage("a\nb", T0, [2.0], 10, "sum")])[0])
            bodies.append(encode_messages([TurokMessage("\u00e9" * 1024 + "x", T0, [1.0], 10, "sum")])[0])
        rng.shuffle(bodies)
        batch = decode_batch([ReceivedMessage(b, f"r{i}", f"m{i}", 1) for i, b in enumerate(bodies)])
        expected, reasons = reference(bodies)
        assert {(metric, step, slot): value for (step, slot), window in batch.windows.items()
                for metric, value in window.items()} == expected
        assert batch.slot_count == len(expected) and batch.metrics == {metric for metric, _s, _t in expected}
        assert [r.reason for r in batch.rejected] == reasons
        assert batch.messages == sum(len(decode_body(b)) for b in set(bodies) if b not in rejected_bodies(bodies))
        assert len(batch.duplicates) == len(bodies) - len(set(bodies))
        reasons_seen.update(reason.split()[0] for reason in reasons)
    assert reasons_seen == {"resolution", "metric"}


def test_an_empty_group_is_rejected_not_a_crash():
    """It once reached ``max()`` of no names: a ValueError out of turokd's hold."""
    envelopes = [{"v": 2, "groups": [[T0 - T0 % step, step, "sum", [], []]]} for step in (10, 7)]
    bodies = [base64.b64encode(b"\x00" + msgpack.packb(envelope)).decode() for envelope in envelopes]
    batch = decode_batch([ReceivedMessage(b, f"r{i}", f"m{i}", 1) for i, b in enumerate(bodies)])
    assert [r.reason for r in batch.rejected] == ["envelope group holds no windows"] * 2
    assert batch.windows == {} and batch.accepted == []
