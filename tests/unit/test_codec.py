"""Round trips of Turok messages through the msgpack envelope and the design's JSON form."""
import base64
import json
import random

import msgpack
import pytest

from turok_core.codec import decode_body, encode_json, encode_messages, MAX_RAW_DATAPOINTS
from turok_core.message import MessageError, TurokMessage

T0 = 1396362900  # 01-04-2014 14:35:00 UTC


def msg(metric="a.b", start=T0, points=(1.0,), step=20, agg="average"):
    return TurokMessage(metric, start, list(points), step, agg)


def test_envelope_round_trip_keeps_every_field_and_order():
    messages = [msg(f"servers.web{i}.cpu", T0 + 20 * (i % 5), [i, i + 0.5], 20,
                    ["sum", "average", "minimum", "maximum", "last"][i % 5]) for i in range(500)]
    bodies = encode_messages(messages, 262144)
    assert len(bodies) == 1
    assert [m for b in bodies for m in decode_body(b)] == messages


def test_design_json_form_is_accepted_exactly_as_the_design_shows_it():
    body = ('{"metric": "a.b", "start_time": "01-04-2014 14:35:00", '
            '"datapoints": "[1, 2, 30000, 3, 40]", "resolution": "20sec", "aggregation_type": "average"}')
    assert decode_body(body) == [TurokMessage("a.b", T0, [1, 2, 30000, 3, 40], 20, "average")]


def test_design_json_array_and_real_list_datapoints():
    body = json.dumps([msg().to_wire(), msg("c.d", T0 + 60, [5], 60, "sum").to_wire()])
    assert decode_body(body) == [msg(), msg("c.d", T0 + 60, [5], 60, "sum")]


def test_encode_json_round_trip_uses_the_design_strings():
    wire = json.loads(encode_json(msg(points=[1, 2])))
    assert wire == {"metric": "a.b", "start_time": "01-04-2014 14:35:00", "datapoints": "[1, 2]",
                    "resolution": "20sec", "aggregation_type": "average"}
    assert decode_body(encode_json(msg(points=[1, 2]))) == [msg(points=[1, 2])]


@pytest.mark.parametrize("limit", [4096, 65536, 262144])
def test_bodies_never_exceed_the_limit_and_lose_nothing(limit):
    rng = random.Random(7)
    messages = [msg(f"host{rng.randrange(10**9)}.metric{i}", T0, [rng.random() for _ in range(3)])
                for i in range(20000)]
    bodies = encode_messages(messages, limit)
    assert all(len(b) <= limit for b in bodies)
    assert [m for b in bodies for m in decode_body(b)] == messages


def test_compression_is_used_when_it_pays_and_not_for_tiny_bodies():
    many = encode_messages([msg(f"servers.web042.cpu.user{i}") for i in range(2000)])
    assert base64.b64decode(many[0])[:1] == b"\x01"
    tiny = encode_messages([msg()])
    assert base64.b64decode(tiny[0])[:1] == b"\x00"


def test_huge_window_is_sent_as_its_exact_aggregate():
    values = list(range(MAX_RAW_DATAPOINTS * 3))
    for agg, expected in [("sum", sum(values)), ("maximum", max(values)), ("last", values[-1]),
                          ("average", sum(values) / len(values))]:
        (decoded,) = decode_body(encode_messages([msg(points=values, agg=agg)])[0])
        assert decoded.datapoints == [expected]


@pytest.mark.parametrize("body, reason", [
    ("", "empty body"),
    ("!!!not base64!!!", "base64"),
    (base64.b64encode(b"\x07abc").decode(), "flag"),
    (base64.b64encode(b"\x01not zlib").decode(), "undecodable"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 99})).decode(), "version"),
    (base64.b64encode(b"\x00" + msgpack.packb([1, 2])).decode(), "not a map"),
    ('{"metric": "a"}', "lacks field"),
    ('{"metric": "a", "start_time": "99-99-2014 00:00:00", "datapoints": [1], '
     '"resolution": "20sec", "aggregation_type": "sum"}', "malformed"),
    ('{"metric": "a", "start_time": "01-04-2014 14:35:00", "datapoints": [1], '
     '"resolution": "20sec", "aggregation_type": "median"}', "aggregation_type"),
    ('{"metric": "a", "start_time": "01-04-2014 14:35:10", "datapoints": [1], '
     '"resolution": "20sec", "aggregation_type": "sum"}', "aligned"),
    ('{"metric": "a", "start_time": "01-04-2014 14:35:00", "datapoints": [], '
     '"resolution": "20sec", "aggregation_type": "sum"}', "non-empty"),
    ('{"metric": "a", "start_time": "01-04-2014 14:35:00", "datapoints": ["x"], '
     '"resolution": "20sec", "aggregation_type": "sum"}', "non-number"),
    ("[]", "non-empty array"),
    ("{not json", "invalid JSON"),
])
def test_bad_bodies_are_refused_with_a_reason(body, reason):
    with pytest.raises(MessageError, match=reason):
        decode_body(body)
