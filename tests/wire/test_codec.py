"""Round trips of Turok messages through the msgpack envelopes (v2 columnar, v1) and the design's JSON."""
import base64
import json
import random
import zlib

import msgpack
import pytest

from turok_core.model.message import MessageError, TurokMessage
from turok_core.windows.buffer import WindowBuffer
from turok_core.wire.codec import MAX_RAW_DATAPOINTS, decode_body, encode_json, encode_messages

T0 = 1396362900  # 01-04-2014 14:35:00 UTC


def msg(metric="a.b", start=T0, points=(1.0,), step=20, agg="average"):
    return TurokMessage(metric, start, list(points), step, agg)


def canonical(messages):
    """Envelope order: by slot, step, aggregation, then name (stable: duplicates keep their order)."""
    return sorted(messages, key=lambda m: (m.start_time, m.resolution, m.aggregation_type, m.metric))


def decode_all(bodies):
    return [m for b in bodies for m in decode_body(b)]


def envelope(body):
    payload = base64.b64decode(body)
    data = zlib.decompress(payload[1:]) if payload[:1] == b"\x01" else payload[1:]
    return msgpack.unpackb(data)


def v1_body(messages, level=6):
    """A version-1 body as the previous encoder wrote it: one row per message, text time/resolution."""
    rows = [list(m.to_wire().values()) for m in messages]
    packed = msgpack.packb({"v": 1, "fields": ["metric", "start_time", "datapoints", "resolution",
                                               "aggregation_type"], "messages": rows})
    return base64.b64encode(b"\x01" + zlib.compress(packed, level)).decode()


def host_names(count):
    return [f"servers.web{i // 10:04d}.cpu.{['user', 'system', 'idle', 'iowait', 'nice'][i % 5]}{i % 10 // 5}"
            for i in range(count)]


def test_envelope_round_trip_keeps_every_field():
    messages = [msg(f"servers.web{i}.cpu", T0 + 20 * (i % 5), [i, i + 0.5], 20,
                    ["sum", "average", "minimum", "maximum", "last"][i % 5]) for i in range(500)]
    bodies = encode_messages(messages, 262144)
    assert len(bodies) == 1
    assert decode_all(bodies) == canonical(messages)


def test_v2_round_trip_of_many_groups_and_mixed_values():
    rng = random.Random(3)
    messages = []
    for i in range(3000):
        step = [10, 60, 3600][i % 3]
        count = [1, 1, 1, 2, 7][i % 5]
        values = [rng.choice([0.0, -0.5, 42.0, -7.0, 1e300, -1e-300, 2.0 ** 70, 123456789.25, rng.uniform(-1e6, 1e6)])
                  for _ in range(count)]
        messages.append(msg(f"app{i % 17}.{'x' * (i % 40)}.m{i}", T0 // 3600 * 3600 - step * (i % 4), values,
                            step, ["sum", "average", "minimum", "maximum", "last"][i % 5]))
    decoded = decode_all(encode_messages(messages, 65536))
    assert decoded == canonical(messages)
    # integral floats went as ints and come back as floats, as every value does
    assert {type(v) for m in decoded for v in m.datapoints} == {float}
    groups = envelope(encode_messages(messages)[0])["groups"]
    assert len(groups) == len({(m.start_time, m.resolution, m.aggregation_type) for m in messages})
    assert any(isinstance(v, int) for g in groups for v in g[4])


def test_v2_groups_are_columnar_with_sorted_joined_names():
    names = host_names(1000)
    random.Random(1).shuffle(names)
    messages = [msg(name, T0, [float(i % 100)], 10, "sum") for i, name in enumerate(names)]
    messages.append(msg("slow.metric", T0, [1.5, 2.5], 60, "average"))
    (body,) = encode_messages(messages)
    doc = envelope(body)
    assert doc["v"] == 2
    (fast, slow) = doc["groups"]
    assert fast[:3] == [T0, 10, "sum"] and fast[3] == "\n".join(sorted(names))
    assert all(isinstance(v, int) for v in fast[4]) and len(fast[4]) == 1000  # a flat list of ints
    assert slow == [T0, 60, "average", "slow.metric", [[1.5, 2.5]]]


def test_ints_negatives_and_large_values_survive():
    values = [0, -1, 7, 2 ** 53, -(2 ** 40), 3.5, -2.25, 1e20, -1e20, 2.0 ** 63, 0.1]
    messages = [msg(f"v.{i}", points=[v]) for i, v in enumerate(values)] + [msg("v.all", points=values)]
    assert decode_all(encode_messages(messages)) == canonical(messages)


def test_names_holding_the_separator_and_huge_names():
    huge = "h." + "x" * 100_000
    messages = [msg("odd\nname"), msg("plain"), msg(huge, points=[1, 2]), msg("ünïcode.名前")]
    assert decode_all(encode_messages(messages, 262144)) == canonical(messages)
    incompressible = "h." + random.Random(5).randbytes(300_000).hex()
    with pytest.raises(MessageError, match="over the"):
        encode_messages([msg(incompressible)], 262144)


def test_one_metric_twice_for_a_slot_keeps_both_messages_in_order():
    messages = [msg("dup", points=[1, 2], agg="sum"), msg("other"), msg("dup", points=[3], agg="sum")]
    decoded = decode_all(encode_messages(messages))
    assert [m.datapoints for m in decoded if m.metric == "dup"] == [[1, 2], [3]]


@pytest.mark.parametrize("limit", [4096, 65536, 262144])
def test_bodies_never_exceed_the_limit_and_lose_nothing(limit):
    rng = random.Random(7)
    messages = [msg(f"host{rng.randrange(10**9)}.metric{i}", T0 + 20 * (i % 3),
                    [rng.random() for _ in range(i % 3 + 1)])
                for i in range(20000)]
    bodies = encode_messages(messages, limit)
    assert all(len(b) <= limit for b in bodies)
    assert decode_all(bodies) == canonical(messages)
    if limit == 4096:
        assert len(bodies) > 20


def test_window_batch_from_the_buffer_encodes_like_its_messages():
    buffer = WindowBuffer(lambda name: (10, "sum") if name.endswith("count") else (60, "average"), grace_seconds=0)
    names = host_names(5000) + [f"req{i}.count" for i in range(300)]
    buffer.add_points(names, [float(i) for i in range(len(names))], [T0] * len(names))
    buffer.add_points(names[:50], [0.5] * 50, [T0 + 5] * 50)  # second values for some windows
    batch = buffer.release(T0 + 3600)
    assert len(batch) == len(names)
    bodies = encode_messages(batch, 8192)
    assert len(bodies) > 1 and all(len(b) <= 8192 for b in bodies)
    assert decode_all(bodies) == canonical(list(batch))
    assert decode_all(bodies) == decode_all(encode_messages(list(batch), 8192))


def test_v2_is_about_half_the_size_of_v1_and_level_1_is_close_to_level_6():
    names = host_names(10000)
    messages = [msg(name, T0, [float(i % 1000) + 0.5], 10, "average") for i, name in enumerate(names)]
    v1 = v1_body(messages)
    (v2_level6,) = encode_messages(messages, 10 ** 7, compression_level=6)
    (v2_level1,) = encode_messages(messages, 10 ** 7, compression_level=1)
    assert decode_body(v1) == messages
    # one value per window: names shrink from ~6 to ~2.7 bytes, values stay ~1.5 bytes (measured)
    assert len(v2_level6) * 1.7 < len(v1)
    assert len(v2_level1) < 1.25 * len(v2_level6)


def test_version_1_bodies_are_still_decoded():
    messages = [msg("a.b", T0, [1, 2.5], 20, "sum"), msg("c.d", T0 + 60, [-3], 60, "last")]
    assert decode_body(v1_body(messages)) == messages
    raw = {"v": 1, "fields": ["datapoints", "metric", "start_time", "resolution", "aggregation_type"],
           "messages": [[[4], "e.f", "01-04-2014 14:35:00", "20sec", "maximum"]]}
    body = base64.b64encode(b"\x00" + msgpack.packb(raw)).decode()
    assert decode_body(body) == [msg("e.f", T0, [4], 20, "maximum")]


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


def test_compression_is_used_when_it_pays_and_not_for_tiny_bodies():
    many = encode_messages([msg(f"servers.web042.cpu.user{i}") for i in range(200)])
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
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2})).decode(), "lacks groups"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a"]]})).decode(), "is not"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0 + 1, 20, "sum", "a", [1]]]})).decode(),
     "bad slot"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 0, "sum", "a", [1]]]})).decode(), "bad slot"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "median", "a", [1]]]})).decode(),
     "aggregation_type"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a\nb", [1]]]})).decode(),
     "pair up"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a\n", [1, 2]]]})).decode(),
     "empty or non-string"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "\na", [1, 2]]]})).decode(),
     "empty or non-string"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a\n\nb", [1, 2, 3]]]})).decode(),
     "empty or non-string"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "", [1]]]})).decode(),
     "empty or non-string"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", ["a", ""], [1, 2]]]})).decode(),
     "empty or non-string"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", ["a", 7], [1, 2]]]})).decode(),
     "empty or non-string"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a", ["x"]]]})).decode(),
     "non-number"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a", [True]]]})).decode(),
     "non-number"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a", [[]]]]})).decode(),
     "empty"),
    (base64.b64encode(b"\x00" + msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a", [float("inf")]]]})).decode(),
     "non-finite"),
    (base64.b64encode(b"\x00" + msgpack.packb(
        {"v": 2, "groups": [[T0, 20, "sum", "a", [[1, float("nan")]]]]})).decode(),
     "non-finite"),
    ("{not json", "invalid JSON"),
])
def test_bad_bodies_are_refused_with_a_reason(body, reason):
    with pytest.raises(MessageError, match=reason):
        decode_body(body)


def test_a_zlib_bomb_is_refused_before_it_fills_memory():
    import base64
    import tracemalloc
    import zlib

    from turok_core.model.message import MessageError
    from turok_core.wire.codec import FLAG_ZLIB, MAX_ENVELOPE_BYTES, decode_body

    bomb = base64.b64encode(FLAG_ZLIB + zlib.compress(bytes(200 << 20), 9)).decode()  # 272 KB → 200 MB
    tracemalloc.start()
    try:
        with pytest.raises(MessageError, match="inflates past"):
            decode_body(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_ENVELOPE_BYTES
