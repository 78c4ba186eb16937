"""graphite-web settings for Turok's embedded stack: ``GRAPHITE_SETTINGS_MODULE=turok_core.dev.graphite_settings``.

graphite-web's ``graphite/settings.py`` imports this module in place of ``local_settings`` and
copies every name in it over its defaults, then derives the paths it was not given from
``STORAGE_DIR``. Everything graphite keeps (sqlite database, logs, index file, secret key) lives in
``$GRAPHITE_STORAGE_DIR``; the metrics themselves come from Turok through ``finder.TurokFinder``
(configured by ``$TUROK_CONFIG`` and ``TUROK_*``), never from whisper files or carbon.

Importing it only sets names: it reads the secret key but creates nothing. The launcher
(``turok_core.dev.stack.prepare_graphite_storage``) makes the log directory and the key first.
"""
import os as _os

STORAGE_DIR = _os.path.abspath(_os.environ.get("GRAPHITE_STORAGE_DIR")
                               or _os.path.join(_os.getcwd(), ".run", "graphite"))
LOG_DIR = _os.path.join(STORAGE_DIR, "log", "webapp")  # graphite-web's own layout


def _read_secret(path: str) -> str:
    try:
        with open(path) as kept:
            return kept.read().strip()
    except FileNotFoundError:
        return ""


SECRET_KEY = (_os.environ.get("TUROK_GRAPHITE_SECRET_KEY")
              or _read_secret(_os.path.join(STORAGE_DIR, "secret_key")))
if not SECRET_KEY:  # graphite-web would fall back to a well-known key
    raise RuntimeError(f"no secret key in {STORAGE_DIR}: turok_core.dev.stack.prepare_graphite_storage makes "
                       "one (make run does), or set TUROK_GRAPHITE_SECRET_KEY")

# Turok is the only storage: no whisper/ceres/rrd directories, no carbon cache, no cluster
STORAGE_FINDERS = ("finder.TurokFinder",)
TAGDB = "finder.TurokTagDB"  # seriesByTag and /tags* from Turok's tag index, not a sqlite table
STANDARD_DIRS = [_os.path.join(STORAGE_DIR, "no-whisper")]  # non-empty, so graphite adds none
CARBONLINK_HOSTS: list[str] = []
CLUSTER_SERVERS: list[str] = []
REMOTE_RENDERING = False
RENDERING_HOSTS: list[str] = []
INDEX_FILE = _os.path.join(STORAGE_DIR, "index")

TIME_ZONE = "UTC"
DEBUG = False
LOG_ROTATION = False  # one process owns its files; logrotate or the operator rotates them
LOG_RENDERING_PERFORMANCE = False
LOG_CACHE_PERFORMANCE = False
LOG_INFO_PERFORMANCE = True

# a glob over the index is fast, but the DynamoDB reads of a wide render need time
FIND_TIMEOUT = 10.0
FETCH_TIMEOUT = 30.0

del _read_secret
