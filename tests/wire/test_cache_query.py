"""The cache query between the finder and turokd: request checks, answers merged across hosts,
an unreachable turokd skipped, and turokd's HTTP resource on a real socket."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port
from tests.support.open_blocks import add_slots
from turok_core.turokd.open_blocks import OpenBlocks
from turok_core.wire.cache_query import CacheClient, CacheQueryError, encode_answer, merge_answer, parse_request


def test_requests_are_checked_and_answers_merge_across_hosts():
    assert parse_request(b'{"metrics": ["a.b"], "from": 10, "until": 20}') == (["a.b"], 10.0, 20.0)
    assert parse_request(b'{"metrics": []}')[2] == float("inf")
    for bad in (b"nope", b"[1]", b'{"metrics": "a.b"}', b'{"metrics": [1]}', b'{"metrics": [], "from": "x"}',
                b'{"metrics": [], "until": true}'):
        with pytest.raises(CacheQueryError):
            parse_request(bad)
    merged: dict = {}
    merge_answer(merged, json.loads(encode_answer({"a.b": {10: [[100, 1.0], [110, 2.0]]}})))
    merge_answer(merged, json.loads(encode_answer({"a.b": {10: [[120, 3.0]], 60: [[60, 4.0]]}, "c": {10: [[100, 5]]}})))
    assert merged == {"a.b": {10: {100: 1.0, 110: 2.0, 120: 3.0}, 60: {60: 4.0}}, "c": {10: {100: 5.0}}}


def test_an_unreachable_turokd_is_skipped_and_a_real_one_answers():
    # the suite's only use of the global reactor in process (it cannot run twice): a thread serves
    from twisted.internet import reactor

    from turok_core.runtime.cache_server import cache_site

    blocks = OpenBlocks(block_slots=6, close_delay=5)
    add_slots(blocks, {("a.b", 10, 1000): 1.5, ("a.b", 10, 1010): 2.5, ("x.y", 10, 1000): 9.0})
    counted = []
    port = reactor.listenTCP(0, cache_site(blocks.points, counted.append), interface="127.0.0.1")
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    try:
        live = f"127.0.0.1:{port.getHost().port}"
        dead = f"127.0.0.1:{free_port()}"
        client = CacheClient([live, dead], timeout=2.0)
        assert client.query(["a.b", "zz"], 1000, 1060) == {"a.b": {10: {1000: 1.5, 1010: 2.5}}}
        assert client.query(["a.b"], 1005, 1010) == {}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"http://{live}/cache", data=b"{"), timeout=5)
        assert refused.value.code == 400 and b"not JSON" in refused.value.read()
        assert counted == [True, True, False]
    finally:
        reactor.callFromThread(port.stopListening)
        reactor.callFromThread(reactor.stop)
        thread.join(10)
