"""Graphite tags end to end, judged against graphite-web's own TagDB (issue 14).

Tagged points go in over plaintext, pickle and StatsD (DogStatsD tags) to the real stack; a
second, real graphite-web with its stock ``LocalDatabaseTagDB`` on sqlite is told the same series
through ``/tags/tagMultiSeries``. Every ``/tags*`` query, the autocomplete calls as Grafana sends
them and every ``seriesByTag`` expression are asked of both: the answers must be equal (the
reference's row ``id`` fields aside). Renders of ``seriesByTag`` return the series the reference
finds with the values sent, and graphite's tag functions compute on them.
"""
from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import wait_for
from tests.support.pickle_frames import encode_frame
from tests.support.reference_graphite import call, reference_graphite

pytestmark = [pytest.mark.processes]

PLAINTEXT = {  # as sent (tags unsorted where carbon would sort them): value
    "tg.disk.used;host=a;dc=eu": 1.0,
    "tg.disk.used;dc=eu;host=ab": 2.0,
    "tg.disk.used;dc=us;host=xa": 3.0,
    "tg.disk.used;host=b": 4.0,
    "tg.disk.free;dc=eu;host=a": 5.0,
}
PICKLE = {
    "tg.cpu;role=db;host=a;dc=eu": 6.0,
    "tg.cpu;dc=us;host=b;role=web": 7.0,
    "tg.cpu;host=c": 8.0,
}
STATSD_SERIES = "stats.gauges.tg.sd.temp;env=prod;role=web"  # etsy's gauge name, DogStatsD tags as carbon tags

FIND = [  # seriesByTag expressions, one list per query
    ["name=tg.disk.used"],
    ["dc=eu"],
    ["name=tg.disk.used", "dc!=eu"],
    ["name=tg.disk.used", "dc="],  # without the tag
    ["dc!="],  # with the tag
    ["name=tg.disk.used", "host=~a"],  # anchored: a, ab, not xa
    ["name=tg.disk.used", "host=~.*a"],
    ["name=tg.disk.used", "host!=~a"],
    ["name=~tg\\.", "role=~.*"],  # matches series without role too
    ["name=~tg\\.", "role!=~d"],
    ["host=~^(a|b)$", "name!=tg.cpu"],
    ["host=~a|b"],
    ["name=~^tg\\.(cpu|sd)"],
    ["env=prod"],
    ["name=nothing.here"],
    ["dc="],  # only empty-matching expressions: graphite's error
    ["dc!=eu", "role=~.*"],
    ["not a tagspec"],
]
LISTS = [  # (path, params)
    ("/tags", []),
    ("/tags", [("filter", "d")]),
    ("/tags", [("filter", "^(h|n)"), ("limit", "2")]),
    ("/tags/dc", []),
    ("/tags/host", [("filter", "a")]),
    ("/tags/name", [("filter", "tg"), ("limit", "3")]),
    ("/tags/nosuchtag", []),
    # Grafana's Graphite data source (>= 1.1): every condition already in the editor, the typed
    # prefix, limit 10000 for template variables
    ("/tags/autoComplete/tags", [("limit", "10000")]),
    ("/tags/autoComplete/tags", [("tagPrefix", "h"), ("limit", "100")]),
    ("/tags/autoComplete/tags", [("expr", "name=tg.disk.used"), ("tagPrefix", ""), ("limit", "10000")]),
    ("/tags/autoComplete/tags", [("expr", "name=~tg\\."), ("expr", "dc=eu"), ("tagPrefix", "r"), ("limit", "10")]),
    ("/tags/autoComplete/values", [("tag", "host"), ("limit", "10000")]),
    ("/tags/autoComplete/values", [("tag", "host"), ("valuePrefix", "a"), ("limit", "1")]),
    ("/tags/autoComplete/values", [("tag", "host"), ("expr", "name=tg.disk.used"), ("valuePrefix", ""),
                                   ("limit", "10000")]),
    ("/tags/autoComplete/values", [("tag", "dc"), ("expr", "name=~tg\\."), ("expr", "host!=a")]),
    ("/tags/autoComplete/values", [("tag", "name"), ("expr", "dc=eu"), ("valuePrefix", "tg.d")]),
]


def without_ids(answer):
    """The reference's answer without its row ids (no part of the contract)."""
    if isinstance(answer, list):
        return [without_ids(item) for item in answer]
    if isinstance(answer, dict):
        return {key: without_ids(value) for key, value in answer.items() if key != "id"}
    return answer


def normalised(name: str) -> str:
    metric, *tags = name.split(";")
    return metric + "".join(sorted(f";{tag}" for tag in tags))


@pytest.fixture(scope="module")
def sent(stack):
    """The tagged points, sent over the three protocols; {series: value} once Turok finds them all."""
    now = int(time.time())
    slot = now - now % 60 - 120
    with socket.create_connection(("127.0.0.1", stack.config.plaintext_port), timeout=10) as sock:
        sock.sendall("".join(f"{name} {value} {slot}\n" for name, value in PLAINTEXT.items()).encode())
    with socket.create_connection(("127.0.0.1", stack.config.pickle_port), timeout=10) as sock:
        sock.sendall(encode_frame([(name, (slot, value)) for name, value in PICKLE.items()]))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(b"tg.sd.temp:21|g|#role:web,env:prod", ("127.0.0.1", stack.config.statsd_port))
    udp.close()
    expected = sorted({normalised(n) for n in [*PLAINTEXT, *PICKLE]} | {STATSD_SERIES})
    url = stack.graphite_url
    # StatsD flushes every statsd_flush_interval_seconds (1 s here), its gauge's 10 s window closes
    # 2 s after its slot; the index copy refreshes every 0.5 s
    wait_for(lambda: call(url, "/tags/findSeries", [("expr", "name=~(tg|stats\\.gauges\\.tg)\\.")])[1] == expected,
             90, "every tagged series in Turok's TagDB", interval=0.5)
    return slot, {normalised(n): v for n, v in {**PLAINTEXT, **PICKLE}.items()}


@pytest.fixture(scope="module")
def reference(stack, sent, tmp_path_factory):
    """The reference graphite-web, told the series as they were sent, and any other tagged series
    this shared stack holds (other tests'), so both know the same series."""
    others = call(stack.graphite_url, "/tags/findSeries", [("expr", "name!=")])[1]
    told = [*PLAINTEXT, *PICKLE, STATSD_SERIES, *others]
    with reference_graphite(tmp_path_factory.mktemp("reference")) as url:
        status, answer = call(url, "/tags/tagMultiSeries", [("path", name) for name in told], post=True)
        assert status == 200, answer
        assert answer == [normalised(name) for name in told]  # carbon's and graphite's normalisation agree
        yield url


def synced(stack, reference) -> None:
    """Tell the reference the tagged series Turok has and it lacks: a series another test of this
    shared stack sent may reach the index late, and both must know the same series."""
    every = [("expr", "name!=")]
    missing = sorted(set(call(stack.graphite_url, "/tags/findSeries", every)[1])
                     - set(call(reference, "/tags/findSeries", every)[1]))
    if missing:
        assert call(reference, "/tags/tagMultiSeries", [("path", name) for name in missing], post=True)[0] == 200


@pytest.mark.parametrize("exprs", FIND, ids=[",".join(e) for e in FIND])
def test_find_series_answers_as_graphite_web_does(stack, reference, exprs):
    synced(stack, reference)
    params = [("expr", expr) for expr in exprs]
    ours, theirs = call(stack.graphite_url, "/tags/findSeries", params), call(reference, "/tags/findSeries", params)
    assert ours == theirs
    if exprs in (["name=tg.disk.used", "host=~a"], ["dc="]):  # not merely equal: right
        assert ours == ((200, ["tg.disk.used;dc=eu;host=a", "tg.disk.used;dc=eu;host=ab"]) if exprs[0] != "dc="
                        else (400, {"error": "At least one tagspec must not match the empty string"}))


@pytest.mark.parametrize("path, params", LISTS, ids=[f"{p}?{q}" for p, q in LISTS])
def test_tag_listing_and_autocomplete_answer_as_graphite_web_does(stack, reference, path, params):
    synced(stack, reference)
    status, ours = call(stack.graphite_url, path, params)
    assert status == 200
    assert (status, ours) == (lambda s, a: (s, without_ids(a)))(*call(reference, path, params))


def rendered(stack, target: str, slot: int) -> dict[str, float]:
    status, series = call(stack.graphite_url, "/render", [("target", target), ("format", "json"),
                                                          ("from", slot - 60), ("until", slot + 60)])
    assert status == 200, series
    return {s["target"]: next((v for v, t in s["datapoints"] if t == slot), None) for s in series}


def test_series_by_tag_renders_the_series_the_reference_finds_with_the_values_sent(stack, reference, sent):
    slot, values = sent
    for exprs in [e for e in FIND if e not in (["dc="], ["dc!=eu", "role=~.*"], ["not a tagspec"])]:
        found = call(reference, "/tags/findSeries", [("expr", expr) for expr in exprs])[1]
        expected = {name: values[name] for name in found if name in values}
        if not expected:
            continue
        target = "seriesByTag(" + ",".join(f"'{expr}'" for expr in exprs) + ")"
        wait_for(lambda: {k: v for k, v in rendered(stack, target, slot).items() if k in values} == expected,
                 60, f"{target} rendered", interval=0.5)


def test_tag_functions_compute_on_series_by_tag(stack, reference, sent):
    slot, values = sent
    tagged = "seriesByTag('name=tg.disk.used','dc!=')"  # graphite names a missing tag 'dc=', which it cannot parse
    assert rendered(stack, f"groupByTags({tagged},'sum','dc')", slot) == {
        "tg.disk.used;dc=eu": 3.0, "tg.disk.used;dc=us": 3.0}
    assert rendered(stack, f"aliasByTags({tagged},'host','dc')", slot) == {"a.eu": 1.0, "ab.eu": 2.0, "xa.us": 3.0}
    used = "seriesByTag('name=tg.disk.used')"
    assert rendered(stack, f"sumSeries({used})", slot) == {f"sumSeries({used})": 10.0}
    nested = "sumSeries(seriesByTag('dc=eu','name!=tg.disk.free'))"
    assert rendered(stack, f"alias({nested},'eu')", slot) == {"eu": 9.0}


def test_writes_accept_the_series_turok_has_and_refuse_the_rest(stack, sent):
    url = stack.graphite_url
    known = "tg.disk.used;host=a;dc=eu"
    assert call(url, "/tags/tagSeries", [("path", known)], post=True) == (200, "tg.disk.used;dc=eu;host=a")
    assert call(url, "/tags/tagMultiSeries", [("path", known), ("path", "tg.cpu;host=c")], post=True) == (
        200, ["tg.disk.used;dc=eu;host=a", "tg.cpu;host=c"])
    status, answer = call(url, "/tags/tagMultiSeries", [("path", known), ("path", "tg.never;sent=x")], post=True)
    assert status == 400 and "send points for them" in answer["error"] and "tg.never;sent=x" in answer["error"]
    assert call(url, "/tags/delSeries", [("path", "tg.never;sent=x")], post=True) == (200, True)
    status, answer = call(url, "/tags/delSeries", [("path", known)], post=True)
    assert status == 400 and "when its data expires" in answer["error"]
    assert known.replace(";host=a;dc=eu", ";dc=eu;host=a") in call(url, "/tags/findSeries",
                                                                   [("expr", "name=tg.disk.used")])[1]
