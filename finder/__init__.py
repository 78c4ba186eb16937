"""Turok's graphite-web finder and TagDB: ``STORAGE_FINDERS = ('finder.TurokFinder',)`` and
``TAGDB = 'finder.TurokTagDB'``.

The classes are imported on first use: graphite-web imports ``turok_core.dev.graphite_settings`` while its
own settings are still loading, before graphite's modules can be imported.
"""

__all__ = ["TurokFinder", "TurokReader", "TurokTagDB"]


def __getattr__(name: str):
    if name == "TurokFinder":
        from finder.finder import TurokFinder
        return TurokFinder
    if name == "TurokTagDB":
        from finder.tagdb import TurokTagDB
        return TurokTagDB
    if name == "TurokReader":
        from finder.reader import TurokReader
        return TurokReader
    raise AttributeError(f"module 'finder' has no attribute {name!r}")
