"""StatsD: etsy semantics in the pure aggregator, and the Twisted receivers and flush timer."""
from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.statsd_receivers import StatsdFlushService, StatsdTCPProtocol, StatsdUDPProtocol
from tests.conftest import ROOT, free_port, wait_for
from turok_core.model.config import TurokConfig, load_config
from turok_core.statsd.parse import StatsdAggregator, sanitise_key
from turok_core.statsd.settings import StatsdSettings, parse_histograms, parse_thresholds

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "statsd-vectors.json").read_text())
INTERNAL = ("statsd.", "stats.statsd.", "stats_counts.statsd.", "stats.counters.statsd.")


def run(lines, **settings) -> dict[str, float]:
    """Each item one datagram; one flush; user metrics only (statsd's own left out)."""
    aggregator = StatsdAggregator(StatsdSettings(**settings))
    for datagram in lines:
        aggregator.apply_datagram(datagram.encode() if isinstance(datagram, str) else datagram)
    return user_metrics(aggregator.flush())


def user_metrics(flushed) -> dict[str, float]:
    names, values = flushed
    return {n: v for n, v in zip(names, values) if not n.startswith(INTERNAL)}


def test_public_vectors_exactly():
    config = VECTORS["config"]
    aggregator = StatsdAggregator(StatsdSettings(flush_interval=config["flush_interval_s"],
                                                 legacy_namespace=config["legacy_namespace"],
                                                 percent_thresholds=tuple(config["percent_threshold"])))
    for packet in VECTORS["packets"]:
        assert aggregator.apply_datagram(packet.encode()) == 0
    names, values = aggregator.flush()
    got = dict(zip(names, values))
    assert len(got) == len(names)  # no name twice
    assert user_metrics((names, values)) == VECTORS["expected"]
    packets = len(VECTORS["packets"])
    assert got["stats_counts.statsd.packets_received"] == packets
    assert got["stats.statsd.packets_received"] == packets / 10
    assert got["stats_counts.statsd.metrics_received"] == 23  # non-empty lines
    assert got["stats_counts.statsd.bad_lines_seen"] == 0
    assert got["statsd.numStats"] == 19  # 11 counters (3 statsd's own) + 4 timers + 2 gauges + 2 sets
    assert "stats.statsd.processing_time" in got


def test_counters_sample_rates_floats_and_negatives():
    got = run(["a:1|c|@0.5", "a:2|c", "b:0.25|c\nb:-1|c", "c:3|c|@1"])
    assert got == {"stats.a": 0.4, "stats_counts.a": 4.0, "stats.b": -0.075, "stats_counts.b": -0.75,
                   "stats.c": 0.3, "stats_counts.c": 3.0}
    assert run(["r:1|c|@0.1"], flush_interval=2)["stats.r"] == 5.0  # rate over the configured interval


def test_gauges_set_adjust_and_persist_across_flushes():
    aggregator = StatsdAggregator()
    aggregator.apply_datagram(b"g:10|g\ng:+5|g\ng:-3|g\nneg:-4|g\npos:+2|g")
    assert user_metrics(aggregator.flush()) == {"stats.gauges.g": 12.0, "stats.gauges.neg": -4.0,
                                                "stats.gauges.pos": 2.0}
    aggregator.apply_datagram(b"g:-2|g\nneg:7|g")
    assert user_metrics(aggregator.flush()) == {"stats.gauges.g": 10.0, "stats.gauges.neg": 7.0,
                                                "stats.gauges.pos": 2.0}
    assert user_metrics(aggregator.flush())["stats.gauges.g"] == 10.0  # idle: repeated


def test_timer_statistics_and_thresholds():
    values = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
    got = run(["t:" + "|ms:".join(map(str, values)) + "|ms"], percent_thresholds=(90, 50, -20, 99.9))
    prefix = "stats.timers.t."
    stats = {k[len(prefix):]: v for k, v in got.items()}
    mean = 5.5
    assert stats["count"] == 10 and stats["count_ps"] == 1.0
    assert (stats["lower"], stats["upper"], stats["sum"], stats["mean"], stats["median"]) == (1, 10, 55, 5.5, 5.5)
    assert stats["sum_squares"] == 385
    assert stats["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 10))
    # 90%: the 9 lowest
    assert (stats["count_90"], stats["upper_90"], stats["sum_90"], stats["mean_90"]) == (9, 9, 45, 5.0)
    assert stats["sum_squares_90"] == 285
    assert (stats["count_50"], stats["upper_50"], stats["mean_50"]) == (5, 5, 3.0)
    # -20: the 2 highest, named _top20 with lower_ instead of upper_
    assert (stats["count_top20"], stats["lower_top20"], stats["sum_top20"], stats["mean_top20"]) == (2, 9, 19, 9.5)
    assert stats["sum_squares_top20"] == 181
    assert "upper_top20" not in stats
    assert stats["count_99_9"] == 10 and stats["upper_99_9"] == 10  # dot in a threshold -> _
    assert set(stats) == {"count", "count_ps", "lower", "upper", "sum", "sum_squares", "mean", "median",
                          "std"} | {f"{s}_{n}" for n in ("90", "50", "99_9") for s in
                                    ("count", "mean", "upper", "sum", "sum_squares")} | {
        f"{s}_top20" for s in ("count", "mean", "lower", "sum", "sum_squares")}


def test_timer_median_even_count_sample_rates_and_h_alias():
    got = run(["t:4|ms", "t:1|h|@0.5", "t:3|ms", "t:2|h"])
    assert got["stats.timers.t.median"] == 2.5
    assert got["stats.timers.t.count"] == 5.0  # 1 + 2 + 1 + 1
    assert got["stats.timers.t.count_ps"] == 0.5
    assert got["stats.timers.t.mean"] == 2.5  # the sample rate weighs the count, not the values
    # a threshold keeping no value of a multi-value timer is left out (round(0.1 * 4) == 0)
    assert "stats.timers.t.count_10" not in run(["t:1|ms:2|ms:3|ms:4|ms"], percent_thresholds=(10,))
    # halves round up as in JavaScript: 50% of 5 values is 3
    assert run(["t:1|ms:2|ms:3|ms:4|ms:5|ms"], percent_thresholds=(50,))["stats.timers.t.count_50"] == 3


def test_histogram_bins():
    histograms = parse_histograms(json.dumps([
        {"metric": "api", "bins": [0.5, 2, 10, "inf"]},
        {"metric": "", "bins": [1, 5]},  # catch-all, after the specific one
    ]))
    got = run(["api.t:0.1|ms:0.5|ms:1|ms:2|ms:9.9|ms:10|ms:50|ms", "web:0.5|ms:1|ms:4|ms:5|ms:99|ms"],
              histograms=histograms)
    bins = {k: v for k, v in got.items() if ".histogram." in k}
    assert bins == {
        "stats.timers.api.t.histogram.bin_0_5": 1.0,  # strictly below 0.5
        "stats.timers.api.t.histogram.bin_2": 2.0,  # 0.5, 1
        "stats.timers.api.t.histogram.bin_10": 2.0,  # 2, 9.9
        "stats.timers.api.t.histogram.bin_inf": 2.0,  # 10, 50
        "stats.timers.web.histogram.bin_1": 1.0,
        "stats.timers.web.histogram.bin_5": 2.0,  # 5 and 99 fall past the last bin: not counted
    }
    with pytest.raises(ValueError, match="ascending"):
        parse_histograms('[{"metric": "x", "bins": [10, 1]}]')


def test_sets_count_distinct_values_per_flush():
    aggregator = StatsdAggregator()
    aggregator.apply_datagram(b"u:a|s\nu:b|s\nu:a|s\nu:1|s|@0.1\nv:|s")
    assert user_metrics(aggregator.flush()) == {"stats.sets.u.count": 3.0, "stats.sets.v.count": 1.0}
    aggregator.apply_datagram(b"u:a|s")
    assert user_metrics(aggregator.flush()) == {"stats.sets.u.count": 1.0, "stats.sets.v.count": 0.0}


def test_multi_metric_datagrams_multi_value_lines_crlf_and_empty_lines():
    got = run(["m:1|c:2|c|@0.5:3|ms\n\nn:4|g\r\n", "o:1|c\n"])
    assert got["stats_counts.m"] == 5.0
    assert got["stats.timers.m.count"] == 1.0
    assert got["stats.gauges.n"] == 4.0
    assert got["stats_counts.o"] == 1.0


def test_dogstatsd_tags_follow_every_suffix():
    got = run(["req:2|c|@0.5|#env:prod,region:eu", "lat:5|ms|#env:prod", "g:1|g|#a:b:c,x;y:z"],
              legacy_namespace=False)
    assert got["stats.counters.req.rate;env=prod;region=eu"] == 0.4
    assert got["stats.counters.req.count;env=prod;region=eu"] == 4.0
    assert got["stats.timers.lat.upper_90;env=prod"] == 5.0
    assert got["stats.gauges.g;a=bc;x_y=z"] == 1.0  # first ':' -> '=', first ';' -> '_', then sanitised


def test_key_sanitising():
    assert sanitise_key("my key\t here/there!@#$%^&*()é.ok-1_2") == "my_key_here-there.ok-1_2"
    got = run(["a b/c*d:1|c"])
    assert got == {"stats.a_b-cd": 0.1, "stats_counts.a_b-cd": 1.0}


def test_namespaces_and_prefixes():
    packet = ["c:1|c\nt:1|ms\ng:1|g\ns:1|s"]
    legacy = StatsdAggregator()
    legacy.apply_datagram(packet[0].encode())
    names = set(legacy.flush()[0])
    assert {"stats.c", "stats_counts.c", "stats.timers.t.mean", "stats.gauges.g", "stats.sets.s.count",
            "stats.statsd.bad_lines_seen", "stats_counts.statsd.bad_lines_seen", "statsd.numStats",
            "stats.statsd.processing_time"} <= names
    modern = StatsdAggregator(StatsdSettings(legacy_namespace=False))
    modern.apply_datagram(packet[0].encode())
    names = set(modern.flush()[0])
    assert {"stats.counters.c.rate", "stats.counters.c.count", "stats.timers.t.mean", "stats.gauges.g",
            "stats.sets.s.count", "stats.counters.statsd.bad_lines_seen.count", "stats.statsd.numStats",
            "stats.statsd.processing_time"} <= names
    custom = StatsdAggregator(StatsdSettings(legacy_namespace=False, global_prefix="app", prefix_counter="",
                                             prefix_timer="tm", prefix_gauge="gg", prefix_set="ss",
                                             prefix_internal="sd"))
    custom.apply_datagram(packet[0].encode())
    names = set(custom.flush()[0])
    assert {"app.c.rate", "app.c.count", "app.tm.t.mean", "app.gg.g", "app.ss.s.count", "app.sd.numStats",
            "app.sd.packets_received.count"} <= names
    legacy_custom = StatsdAggregator(StatsdSettings(global_prefix="p", prefix_stats_counts="pc"))
    legacy_custom.apply_datagram(b"c:1|c")
    assert {"p.c", "pc.c", "sd.numStats"} - set(legacy_custom.flush()[0]) == {"sd.numStats"}


def test_idle_keys_without_and_with_delete_idle_stats():
    for delete in (False, True):
        aggregator = StatsdAggregator(StatsdSettings(delete_idle_stats=delete))
        aggregator.apply_datagram(b"c:5|c\nt:3|ms\ng:7|g\ns:x|s")
        assert len(user_metrics(aggregator.flush())) == 2 + 14 + 1 + 1
        idle = aggregator.flush()
        if delete:
            assert user_metrics(idle) == {}
        else:
            assert user_metrics(idle) == {"stats.c": 0.0, "stats_counts.c": 0.0, "stats.timers.t.count": 0.0,
                                          "stats.timers.t.count_ps": 0.0, "stats.gauges.g": 7.0,
                                          "stats.sets.s.count": 0.0}
        # statsd's own counters are always sent
        assert dict(zip(*idle))["stats_counts.statsd.packets_received"] == 0.0
    aggregator = StatsdAggregator(StatsdSettings(delete_idle_stats=True))
    aggregator.apply_datagram(b"g:7|g")
    aggregator.flush()
    aggregator.apply_datagram(b"g:+1|g")  # the gauge was forgotten: the delta starts it afresh
    assert user_metrics(aggregator.flush()) == {"stats.gauges.g": 1.0}


BAD_LINES = [
    "nocolon", "novalue:", "notype:1", "x:1|", "x:1|zz", "x:abc|c", "x:|c", "x:1|c|0.1", "x:1|c|@",
    "x:1|c|@abc", "x:1|c|@-0.5", "x:1|c|@0", "x:1|c|@inf", "x:nan|c", "x:inf|g", "x:-inf|ms", "x:1e999|c",
    "x:-5|ms", "x:1_000|c", "x:1|c|@0_1", ":1|c", "!!!:1|c", "x:0x10|c", "x:1 2|c",
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_lines_are_counted_and_change_nothing_else(line):
    aggregator = StatsdAggregator()
    aggregator.apply_datagram(b"keep:1|c")
    before = (dict(aggregator.counters), dict(aggregator.timers), dict(aggregator.gauges), dict(aggregator.sets))
    assert aggregator.apply_datagram(line.encode()) == 1
    assert (aggregator.counters, aggregator.timers, aggregator.gauges, aggregator.sets) == before
    got = dict(zip(*aggregator.flush()))
    assert got["stats_counts.statsd.bad_lines_seen"] == 1
    assert user_metrics((list(got), list(got.values()))) == {"stats.keep": 0.1, "stats_counts.keep": 1.0}


def test_bad_parts_bad_bytes_and_long_lines_do_not_spoil_their_datagram():
    aggregator = StatsdAggregator(StatsdSettings(max_line_length=100))
    datagram = b"a:1|c:x|c:2|c\n\xff\xfe:1|c\nb:1|c\n" + b"long:" + b"1" * 200 + b"|c\nc:1|c\x00\nd:1|c"
    assert aggregator.apply_datagram(datagram) == 4  # the bad part, the non-UTF-8 line, the long line, c's type
    got = dict(zip(*aggregator.flush()))
    assert (got["stats_counts.a"], got["stats_counts.b"], got["stats_counts.d"]) == (3.0, 1.0, 1.0)
    assert got["stats_counts.statsd.metrics_received"] == 6
    assert got["stats_counts.statsd.bad_lines_seen"] == 4
    assert aggregator.totals.bad_lines_seen == 4
    count, examples = aggregator.take_bad_lines()
    assert count == 4 and len(examples) == 3 and any("a:x|c" in e for e in examples)
    assert aggregator.take_bad_lines() is None


def test_settings_from_config_and_thresholds():
    assert parse_thresholds("90, 95,-10,99.9") == (90.0, 95.0, -10.0, 99.9)
    for bad in ("0", "101", "x"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)
    config = load_config(environ={"TUROK_STATSD_PERCENT_THRESHOLDS": "50,-5",
                                  "TUROK_STATSD_LEGACY_NAMESPACE": "false",
                                  "TUROK_STATSD_HISTOGRAMS": '[{"metric": "a", "bins": ["inf"]}]',
                                  "TUROK_STATSD_FLUSH_INTERVAL_SECONDS": "5"})
    settings = StatsdSettings.from_config(config)
    assert settings.percent_thresholds == (50.0, -5.0)
    assert settings.legacy_namespace is False and settings.flush_interval == 5.0
    assert settings.histograms[0].names == ("bin_inf",)
    assert StatsdSettings.from_config(TurokConfig()) == StatsdSettings()
    with pytest.raises(ValueError):
        StatsdSettings.from_config(TurokConfig(statsd_flush_interval_seconds=0))


def test_overflow_to_infinity_is_dropped_not_sent():
    aggregator = StatsdAggregator()
    aggregator.apply_datagram(b"big:1e308|c\nbig:1e308|c\nok:1|c")
    got = dict(zip(*aggregator.flush()))
    assert "stats_counts.big" not in got and got["stats_counts.ok"] == 1.0
    assert aggregator.totals.nonfinite_dropped == 2


def test_batch_speed():
    """A 64 KB datagram's worth of lines is applied in well under a millisecond per hundred lines."""
    datagram = b"\n".join(b"app.svc%d.req:1|c" % (i % 50) for i in range(3000))
    aggregator = StatsdAggregator()
    started = time.perf_counter()
    for _ in range(20):
        aggregator.apply_datagram(datagram)
    elapsed = time.perf_counter() - started
    assert aggregator.counters["app.svc0.req"] == 20 * 60
    assert elapsed < 2.0, elapsed  # 60,000 lines


# --- Twisted side -------------------------------------------------------------------------------

def test_tcp_lines_across_reads_long_lines_and_partial_tail():
    aggregator = StatsdAggregator(StatsdSettings(max_line_length=50))
    protocol = StatsdTCPProtocol(aggregator, 50)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"a:1|c\nb:")
    protocol.dataReceived(b"2|c\n" + b"x" * 80)
    protocol.dataReceived(b"y" * 80 + b"\nc:3|c\nd:4|")  # the long line is dropped up to its newline
    protocol.connectionLost()
    assert aggregator.counters == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert aggregator.totals.bad_lines_seen == 2  # the long line and the cut-off "d:4|"


def test_udp_protocol_applies_each_datagram():
    aggregator = StatsdAggregator()
    protocol = StatsdUDPProtocol(aggregator)
    protocol.datagramReceived(b"a:1|c\na:2|c", ("127.0.0.1", 1))
    protocol.datagramReceived(b"\xff", ("127.0.0.1", 1))
    assert aggregator.counters == {"a": 3.0}
    assert (aggregator.totals.packets_received, aggregator.totals.bad_lines_seen) == (2, 1)


def test_flush_service_flushes_mid_slot_and_stamps_the_flush_time():
    clock = Clock()
    clock.advance(1_700_000_003.0)
    received = []
    aggregator = StatsdAggregator(StatsdSettings(flush_interval=10))
    flusher = StatsdFlushService(aggregator, lambda parsed, source: received.append((parsed, source)), clock)
    flusher.startService()
    clock.advance(2)  # the loop starts mid-slot, at 1_700_000_005
    clock.advance(8)
    assert received == []  # no StatsD traffic yet: not even StatsD's own counters are sent
    aggregator.apply_datagram(b"a:1|c\nbad")
    clock.advance(1.5)
    assert received == []
    clock.advance(0.5)  # 1_700_000_015: the middle of the slot
    (parsed, source), = received
    assert source == "statsd"
    assert set(parsed.timestamps) == {1_700_000_015}
    assert dict(zip(parsed.names, parsed.values))["stats_counts.a"] == 1.0
    assert parsed.bad == 1 and parsed.bad_examples == [b"bad"]
    clock.advance(10)
    assert received[-1][0].timestamps[0] == 1_700_000_025 and received[-1][0].bad == 0
    aggregator.apply_datagram(b"a:2|c")
    clock.advance(3)
    flusher.stopService()  # the last interval is flushed at shutdown
    assert dict(zip(received[-1][0].names, received[-1][0].values))["stats_counts.a"] == 2.0
    assert received[-1][0].timestamps[0] == 1_700_000_028
    clock.advance(30)
    assert len(received) == 3


def test_flush_service_stops_without_a_flush_when_the_interval_was_empty():
    clock = Clock()
    received = []
    aggregator = StatsdAggregator()
    flusher = StatsdFlushService(aggregator, lambda parsed, source: received.append(parsed), clock)
    flusher.startService()
    aggregator.apply_datagram(b"a:1|c")
    clock.advance(10)
    assert len(received) == 1
    flusher.stopService()
    assert len(received) == 1


def test_make_gateway_service_adds_statsd_listeners():
    from gateway.service import make_gateway_service
    top = make_gateway_service(TurokConfig(statsd_port=free_port()), clock=lambda: 0.0)
    names = {s.name for s in top}
    assert {"statsd-flush", "statsd-tcp", "statsd-udp"} <= names
    udp = top.getServiceNamed("statsd-udp")
    assert udp.kwargs["maxPacketSize"] == 65536


LISTENER = textwrap.dedent("""
    import json, sys
    from twisted.application import service
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from gateway.statsd_receivers import add_statsd_services
    from turok_core.model.config import TurokConfig
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    def sink(parsed, source):
        points = dict(zip(parsed.names, parsed.values))
        if points.get("stats_counts.statsd.packets_received"):
            with open(sys.argv[2], "a") as out:
                out.write(json.dumps(points) + "\\n")
    top = service.MultiService()
    add_statsd_services(top, TurokConfig(statsd_port=int(sys.argv[1]), statsd_flush_interval_seconds=0.5), sink)
    top.startService()
    reactor.run()
""")


@pytest.mark.processes
def test_real_sockets_take_64k_datagrams_and_tcp(tmp_path):
    port = free_port()
    out = tmp_path / "flushed.jsonl"
    process = subprocess.Popen([sys.executable, "-c", LISTENER, str(port), str(out)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "listener.log", "w"))
    try:
        wait_for(lambda: "statsd UDP: receive buffer" in (tmp_path / "listener.log").read_text(), 20, "listener")
        assert "asked 16777216" in (tmp_path / "listener.log").read_text()
        datagram = b"\n".join([b"big:1|c"] * 8000)  # 63,999 bytes: far past Twisted's default 8192
        assert len(datagram) < 65507
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(datagram, ("127.0.0.1", port))
        udp.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
            tcp.sendall(b"tcp:2|c\ntcp:3|c\n")

        def flushed():
            seen: dict[str, float] = {}
            for line in out.read_text().splitlines() if out.exists() else []:
                seen.update((name, value) for name, value in json.loads(line).items() if value)
            return seen if "stats_counts.big" in seen and "stats_counts.tcp" in seen else None

        seen = wait_for(flushed, 15, "the flushed points")
        assert seen["stats_counts.big"] == 8000.0
        assert seen["stats_counts.tcp"] == 5.0
    finally:
        process.terminate()
        process.wait(10)
