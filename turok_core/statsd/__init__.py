"""StatsD with etsy statsd's semantics: lines applied to per-flush state, flushed as carbon points
that go into the windows like any other. No I/O, no reactor."""
