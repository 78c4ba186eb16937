"""The metric-name rule (turok_core.model.metric_names) and its use by every receiver and by turokd."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.connections import ConnectionCounters
from gateway.pickle_receiver import CarbonPickleFactory
from gateway.plaintext_receivers import PlaintextTCPFactory, PlaintextUDPProtocol
from gateway.service import make_gateway_service
from gateway.statsd_receivers import StatsdTCPFactory
from turok_core.model.config import TurokConfig
from turok_core.model.message import MessageError, validate_message
from turok_core.model.metric_names import (
    HARD_MAX_NAME_BYTES,
    MAX_COMPONENT_BYTES,
    MetricNameError,
    NameRule,
    check_stored,
    normalise,
    quick_ok,
)
from turok_core.parse.carbon_pickle import decode_points
from turok_core.parse.plaintext import parse_plaintext
from turok_core.statsd.parse import StatsdAggregator
from turok_core.statsd.settings import StatsdSettings

T0 = 1_700_000_000

NORMALISED = [
    ("a.b.c", "a.b.c"),
    ("a..b", "a.b"),
    ("...a...b...", "a.b"),
    (".leading", "leading"),
    ("trailing.", "trailing"),
    ("ünïcödé.naме", "ünïcödé.naме"),
    ("a-b_c:d#e@f%g+h,i=j/k\\l|m~n!o$p&q'r(s)t<u>v^w`x\"y", "a-b_c:d#e@f%g+h,i=j/k\\l|m~n!o$p&q'r(s)t<u>v^w`x\"y"),
    ("disk.used;host=a;dc=eu", "disk.used;dc=eu;host=a"),  # carbon's tag order
    ("m;k=1;k=2", "m;k=2"),  # a repeated tag keeps its last value
    ("a..b;x=1.2..3", "a.b;x=1.2..3"),  # tag values are not paths
]

REFUSED = [
    ("", "empty"),
    ("...", "no path"),
    (";k=v", "no path"),
    ("a b", "not allowed"), ("a\tb", "not allowed"), ("a\x00b", "not allowed"), ("a\x7fb", "not allowed"),
    ("a\x85b", "not allowed"), ("a\u00a0b", "not allowed"), ("a\u2028b", "not allowed"),
    ("a*", "not allowed"), ("a?", "not allowed"), ("a[1]", "not allowed"), ("{a,b}", "not allowed"),
    ("lone\ud800", "not allowed"),
    ("m;novalue", "tag"), ("m;=v", "tag"), ("m;k=", "tag"), ("m;k!=v", "tag"), ("m;k=~v", "tag"),
    ("a." + "x" * (MAX_COMPONENT_BYTES + 1), "component"),
    (".".join(["x" * 200] * 6), "name limit"),
]


@pytest.mark.parametrize("name, normal", NORMALISED)
def test_normalised_names(name, normal):
    assert normalise(name) == normal
    assert normalise(normal) == normal  # idempotent


@pytest.mark.parametrize("name, reason", REFUSED)
def test_refused_names(name, reason):
    with pytest.raises(MetricNameError, match=reason):
        normalise(name)
    assert NameRule().verdict(name)[0] is None


def test_length_limits():
    assert normalise(".".join(["x" * 250] * 4)) == ".".join(["x" * 250] * 4)  # 1003 bytes
    rule = NameRule(HARD_MAX_NAME_BYTES)
    assert rule.verdict(".".join(["x" * 250] * 8))[0] is not None  # 2007 bytes
    assert rule.verdict(".".join(["x" * 250] * 9))[1].startswith("2258 bytes")
    assert NameRule(10).verdict("é" * 6)[1] == "12 bytes, over the 10-byte name limit"  # bytes, not characters
    for bad in (0, -1, HARD_MAX_NAME_BYTES + 1):
        with pytest.raises(ValueError):
            NameRule(bad)


names = st.text(st.sampled_from("ab.é;=*\x00 \t\u00a0~!"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=6))
def test_batch_clean_agrees_with_one_by_one(batch):
    rule = NameRule()
    cleaned, kept, refused = rule.clean(batch)
    verdicts = [NameRule().verdict(name) for name in batch]
    assert cleaned == [clean for clean, _ in verdicts if clean is not None]
    assert [name for name, _ in refused] == [name for name, (clean, _) in zip(batch, verdicts) if clean is None]
    if kept is not None:
        assert kept == [i for i, (clean, _) in enumerate(verdicts) if clean is not None]
    joined = "\n".join(batch).encode("utf-8", "surrogatepass")
    if "\n" not in "".join(batch) and quick_ok(joined, max(len(n.encode()) for n in batch), rule.max_bytes):
        assert all(normalise(name) == name for name in batch)


def test_a_name_holding_a_newline_is_not_taken_for_two():
    assert NameRule().clean(["a.b\nc.d"])[2] == [("a.b\nc.d", "character '\\n' is not allowed in a metric name")]


def test_plaintext_applies_the_rule_on_both_paths():
    lines = b"ok.one 1 %d\na..b 2 %d\nglob.* 3 %d\n.lead 4 %d\n" % (T0, T0, T0, T0)
    for chunk in (lines, lines + b"slow.path.line notanumber %d\n" % T0):
        parsed = parse_plaintext(chunk, T0, 4096)
        assert parsed.names == ["ok.one", "a.b", "lead"]
        assert parsed.values == [1.0, 2.0, 4.0]
        assert parsed.bad == (1 if chunk == lines else 2)
        assert b"glob.* (metric name: character '*' is not allowed in a metric name)" in parsed.bad_examples
    clean = parse_plaintext(b"a.b 1 %d\n" % T0, T0, 4096, NameRule(3))
    assert (clean.names, clean.bad) == (["a.b"], 0)
    too_long = parse_plaintext(b"a.bc 1 %d\n" % T0, T0, 4096, NameRule(3))
    assert (too_long.names, too_long.bad) == ([], 1)


def test_plaintext_and_pickle_give_every_name_the_same_verdict():
    table = [name for name, _ in NORMALISED + REFUSED if name and not any(c.isspace() for c in name)
             and "\ud800" not in name]
    plain = b"".join(b"%s 1 %d\n" % (name.encode(), T0) for name in table)
    parsed_plain = parse_plaintext(plain, T0, 8192)
    parsed_pickle = decode_points([(name, (T0, 1)) for name in table], T0)
    assert parsed_plain.names == parsed_pickle.names
    assert parsed_plain.bad == parsed_pickle.bad == sum(1 for name, _ in REFUSED if name in table)
    assert decode_points([("a b", (T0, 1)), ("", (T0, 1)), (b"x..y", (T0, 1))], T0).names == ["x.y"]


def test_statsd_keys_take_etsy_sanitising_then_the_rule():
    aggregator = StatsdAggregator(StatsdSettings(max_metric_name_bytes=100))
    bad = aggregator.apply_datagram(b"a..b:1|c\nweird key/x*:2|c\n...:3|c\nm:4|c|#b:2,a:1\n" + b"k" * 80 + b":5|c\n")
    assert bad == 2  # "..." has no path left; the 80-byte key cannot fit with its prefixes and suffixes
    assert aggregator.counters == {"a.b": 1.0, "weird_key-x": 2.0, "m;a=1;b=2": 4.0}
    names, _ = aggregator.flush()
    assert "stats.a.b" in names and "stats_counts.m;a=1;b=2" in names
    assert all(normalise(name, 100) == name for name in names)
    with pytest.raises(ValueError, match="no room"):
        StatsdAggregator(StatsdSettings(max_metric_name_bytes=20))


def test_turokd_decoder_refuses_names_the_gateway_would_not_send():
    assert validate_message("a.b;k=v", T0, [1.0], 10, "average").metric == "a.b;k=v"
    for name in ("", "a..b", "a b", "a*", "m;b=1;a=2", "x" * 300, 42, None):
        with pytest.raises(MessageError):
            validate_message(name, T0, [1.0], 10, "average")
    assert check_stored(".".join(["x" * 250] * 8))  # over the default limit, under DynamoDB's


def test_the_gateway_configures_every_receiver(tmp_path):
    config = TurokConfig(max_metric_name_bytes=512, max_connections=7, idle_timeout_seconds=42)
    top = make_gateway_service(config)
    # (TCP factories wrapped by the gateway's backpressure: unwrap them)
    receivers = {child.name: getattr(child.args[1], "wrappedFactory", child.args[1])
                 for child in top if hasattr(child, "args")}
    for name in ("plaintext-tcp", "pickle-tcp", "statsd-tcp"):
        assert (receivers[name].guard.limits.max_connections, receivers[name].guard.limits.idle_timeout) == (7, 42.0)
    assert isinstance(receivers["plaintext-tcp"], PlaintextTCPFactory)
    assert isinstance(receivers["pickle-tcp"], CarbonPickleFactory)
    assert isinstance(receivers["statsd-tcp"], StatsdTCPFactory)
    assert isinstance(receivers["plaintext-udp"], PlaintextUDPProtocol)
    for name in ("plaintext-tcp", "pickle-tcp", "plaintext-udp"):
        assert receivers[name].name_rule.max_bytes == 512
    assert receivers["statsd-tcp"].aggregator.name_rule.max_bytes == 512
    gateway = top.getServiceNamed("gateway")
    assert isinstance(gateway.receiver_counters["plaintext_tcp"], ConnectionCounters)
    counters, _ = gateway.self_metrics()
    assert {"plaintext_tcp.connections_over_limit", "pickle.idle_closed", "statsd.connections"} <= set(counters)
