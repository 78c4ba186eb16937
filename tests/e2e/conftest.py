"""The whole stack as real processes: moto server, twistd services and graphite-web."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.conftest import ROOT, free_port
from turok_core.dev.stack import DevStack
from turok_core.model.config import TurokConfig


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """A running DevStack on free loopback ports, using the checkout's code."""
    config = TurokConfig(
        table_prefix=f"e2e{uuid.uuid4().hex[:6]}",
        cache_port=free_port(),
        gateway_cache_port=free_port(),
        block_close_delay_seconds=2,
        late_merge_delay_seconds=2,
        plaintext_port=free_port(),
        plaintext_udp_port=free_port(),
        pickle_port=free_port(),
        statsd_port=free_port(),
        local_aws_port=free_port(),
        graphite_port=free_port(),
        window_grace_seconds=2,
        flush_interval_seconds=0.5,
        statsd_flush_interval_seconds=1,  # test_tags waits for a flush of its DogStatsD gauge
        receive_wait_seconds=1,
        index_refresh_seconds=0.5,
    )
    local = DevStack(config, tmp_path_factory.mktemp("stack"), extra_env={"PYTHONPATH": str(ROOT)})
    try:
        local.start(timeout=90)
        yield local
    finally:
        local.stop()


def graphite_get(stack, path: str, **params):
    url = f"{stack.graphite_url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())
