"""StatsD with etsy statsd's semantics: lines applied to per-flush state, flushed as carbon points
that go into the windows like any other. No I/O, no reactor.

``settings`` (what shapes a flush, from the config), ``parse`` (keys, lines, and
``StatsdAggregator``, the per-flush state), ``flush`` (what a flush computes from that state)."""
