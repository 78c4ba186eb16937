"""Turok's graphite-web finder: ``STORAGE_FINDERS = ('finder.TurokFinder',)``.

The classes are imported on first use: graphite-web imports ``turok_core.dev.graphite_settings`` while its
own settings are still loading, before graphite's modules can be imported.
"""

__all__ = ["TurokFinder", "TurokReader"]


def __getattr__(name: str):
    if name == "TurokFinder":
        from finder.finder import TurokFinder
        return TurokFinder
    if name == "TurokReader":
        from finder.reader import TurokReader
        return TurokReader
    raise AttributeError(f"module 'finder' has no attribute {name!r}")
