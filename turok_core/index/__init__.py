"""The index stage: metric names announced by turokd, kept on S3 for graphite-web's finder.

In data order: ``shards`` (which shard holds a name, a shard object's bytes), ``layout`` (the
manifest, and the names readers see while the index moves to more shards), ``store`` (what every
index store does: names added and removed shard by shard with compare-and-swap, also during a
move), ``reshard`` (``move_shards``: the move itself), ``s3_store`` (``IndexStore``, that on S3:
manifest, layout, conditional PUTs) and ``memory_store`` (the same in memory), then the
reader's side: ``glob_compiler`` (Graphite globs into component matchers), ``names``
(``NameList``, the sorted names the globs walk) and ``s3_cache`` (``IndexCache``, the finder's
copy of the S3 index, revalidated by ETag), and for Graphite tags ``tag_index`` (``TagIndex``,
tag queries as graphite-web's TagDB answers them) and ``tag_cache`` (the tag index: the same
store on its own prefix, and ``TagCache``, the TagDB's copy).
``service.py`` is turok-indexer, the Twisted shell that feeds announcements into both indexes.
"""
