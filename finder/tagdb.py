"""graphite-web 1.1 TagDB over Turok's tag index: ``TAGDB = 'finder.TurokTagDB'``.

Beside ``STORAGE_FINDERS = ('finder.TurokFinder',)``, it answers ``seriesByTag`` and every
``/tags*`` endpoint from the tag index the indexer keeps on S3 (``turok_core.index.tag_cache``),
through a local copy revalidated by ETag every ``config.index_refresh_seconds`` like the finder's.
Answers are graphite-web's own TagDB's (``LocalDatabaseTagDB``): same series, tags, values,
counts and order; only its row ``id`` fields are absent. graphite-web then fetches the series
found through ``TurokFinder``, in bulk, as for globs.

Writes: Turok's series come from the data (a tagged point creates its series), so the HTTP write
endpoints cannot make or remove one. ``/tags/tagSeries`` and ``/tags/tagMultiSeries`` accept the
series Turok already has (answering their normalised names, as graphite-web does) and refuse the
others with a 400 naming them; ``/tags/delSeries`` accepts series Turok does not have (nothing to
delete) and refuses the others: a series leaves the index when its data expires (the keeper).
"""
from __future__ import annotations

from typing import Optional

from graphite.tags.base import BaseTagDB
from graphite.tags.utils import TaggedSeries
from graphite.util import HttpError

from turok_core.index.tag_cache import TagCache
from turok_core.index.tag_index import Limit, TagIndex
from turok_core.model.config import TurokConfig, load_config
from turok_core.runtime.aws import make_client

SHOWN = 10  # unknown series named in a refusal


class TurokTagDB(BaseTagDB):
    """graphite-web's TagDB answering from Turok's tag index (read-only: see the module doc)."""

    def __init__(self, settings, *args, config: Optional[TurokConfig] = None, index: Optional[TagCache] = None,
                 **kwargs) -> None:
        super().__init__(settings, *args, **kwargs)
        self.cache = None  # the index is in memory already: caching answers would only delay new series
        self.config = config if config is not None else load_config()
        self.index = index if index is not None else TagCache(make_client("s3", self.config), self.config)

    @property
    def tags(self) -> TagIndex:
        """The current tag index (revalidated when due)."""
        return self.index.tag_index

    def _find_series(self, tags, requestContext=None) -> list[str]:
        return self.tags.find_series(tags)

    def get_series(self, path: str, requestContext=None) -> Optional[TaggedSeries]:
        parsed = TaggedSeries.parse(path)
        return parsed if parsed.path in self.tags else None

    def list_tags(self, tagFilter: Optional[str] = None, limit: Limit = None, requestContext=None) -> list[dict]:
        return self.tags.list_tags(tagFilter, limit)

    def get_tag(self, tag: str, valueFilter: Optional[str] = None, limit: Limit = None,
                requestContext=None) -> Optional[dict]:
        return self.tags.get_tag(tag, valueFilter, limit)

    def list_values(self, tag: str, valueFilter: Optional[str] = None, limit: Limit = None,
                    requestContext=None) -> list[dict]:
        return self.tags.list_values(tag, valueFilter, limit)

    def auto_complete_tags(self, exprs, tagPrefix: Optional[str] = None, limit: Limit = None,
                           requestContext=None) -> list[str]:
        return self.tags.auto_complete_tags(list(exprs), tagPrefix, self._limit(limit))

    def auto_complete_values(self, exprs, tag: str, valuePrefix: Optional[str] = None, limit: Limit = None,
                             requestContext=None) -> list[str]:
        return self.tags.auto_complete_values(list(exprs), tag, valuePrefix, self._limit(limit))

    def _limit(self, limit: Limit) -> int:
        """graphite-web's: the request's ``limit``, else ``TAGDB_AUTOCOMPLETE_LIMIT``."""
        return self.settings.TAGDB_AUTOCOMPLETE_LIMIT if limit is None else int(limit)

    # --- writes: the data makes the series --------------------------------------------------------

    def tag_series(self, series: str, requestContext=None) -> str:
        return self.tag_multi_series([series], requestContext)[0]

    def tag_multi_series(self, seriesList, requestContext=None) -> list[str]:
        """The normalised names of ``seriesList`` when Turok has every one; a 400 naming the others."""
        paths = [TaggedSeries.parse(series).path for series in seriesList]
        index = self.tags
        unknown = [path for path in paths if path not in index]
        if unknown:
            raise HttpError(
                f"Turok makes tagged series from their data: send points for them (plaintext, pickle or "
                f"StatsD) and they are indexed; {len(unknown)} of these series have none yet: "
                f"{', '.join(unknown[:SHOWN])}{' …' if len(unknown) > SHOWN else ''}", status=400)
        return paths

    def del_series(self, series: str, requestContext=None) -> bool:
        return self.del_multi_series([series], requestContext)

    def del_multi_series(self, seriesList, requestContext=None) -> bool:
        """True when Turok has none of ``seriesList`` (nothing to delete); a 400 naming the others."""
        index = self.tags
        known = [path for path in (TaggedSeries.parse(series).path for series in seriesList) if path in index]
        if known:
            raise HttpError(
                f"Turok keeps a tagged series while it has data: it leaves the tag index when its data "
                f"expires (turok-keeper); {len(known)} of these series have data: "
                f"{', '.join(known[:SHOWN])}{' …' if len(known) > SHOWN else ''}", status=400)
        return True
