"""graphite-web settings for the reference graphite-web the tag tests compare Turok with.

Turok's own settings (``turok_core.dev.graphite_settings``), but with graphite-web's stock TagDB
(``LocalDatabaseTagDB`` on its sqlite database) and graphite's whisper finder on an empty
directory: it knows the series it is told through ``/tags/tagMultiSeries`` and nothing else. (A
finder without tag support must exist: graphite-web asks the TagDB for autocomplete only then.)
"""
from turok_core.dev.graphite_settings import *  # noqa: F401,F403

STORAGE_FINDERS = ("graphite.finders.standard.StandardFinder",)
TAGDB = "graphite.tags.localdatabase.LocalDatabaseTagDB"
TAGDB_CACHE_DURATION = 0  # answers as the database has them
