"""The metric-name index: shards of names on S3 updated by compare-and-swap, a sorted name list
for Graphite globs, and the cache the finder revalidates. ``service.py`` is turok-indexer."""
