"""graphite-web settings for Turok's embedded stack: ``GRAPHITE_SETTINGS_MODULE=turok_core.dev.graphite_settings``.

graphite-web's ``graphite/settings.py`` imports this module in place of ``local_settings`` and
copies every name in it over its defaults, then derives the paths it was not given from
``STORAGE_DIR``. Everything graphite keeps (sqlite database, logs, index file, secret key) lives in
``$GRAPHITE_STORAGE_DIR``; the metrics themselves come from Turok through ``finder.TurokFinder``
(configured by ``$TUROK_CONFIG`` and ``TUROK_*``), never from whisper files or carbon.
"""
import os as _os
import secrets as _secrets

STORAGE_DIR = _os.path.abspath(_os.environ.get("GRAPHITE_STORAGE_DIR")
                               or _os.path.join(_os.getcwd(), ".run", "graphite"))
LOG_DIR = _os.path.join(STORAGE_DIR, "log", "webapp")  # graphite-web's own layout
_os.makedirs(LOG_DIR, exist_ok=True)  # graphite's loggers open their files at import


def _install_secret(storage_dir: str) -> str:
    """A random key made once per install and kept (mode 0600) next to graphite's database."""
    path = _os.path.join(storage_dir, "secret_key")
    try:
        descriptor = _os.open(path, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as existing:
            key = existing.read().strip()
        if key:
            return key
        raise RuntimeError(f"{path} is empty: delete it or set TUROK_GRAPHITE_SECRET_KEY")
    key = _secrets.token_urlsafe(48)
    with _os.fdopen(descriptor, "w") as created:
        created.write(key + "\n")
    return key


SECRET_KEY = _os.environ.get("TUROK_GRAPHITE_SECRET_KEY") or _install_secret(STORAGE_DIR)

# Turok is the only storage: no whisper/ceres/rrd directories, no carbon cache, no cluster
STORAGE_FINDERS = ("finder.TurokFinder",)
STANDARD_DIRS = [_os.path.join(STORAGE_DIR, "no-whisper")]  # non-empty, so graphite adds none
CARBONLINK_HOSTS = []
CLUSTER_SERVERS = []
REMOTE_RENDERING = False
RENDERING_HOSTS = []
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

del _install_secret
