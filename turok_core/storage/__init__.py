"""DynamoDB: day-table names, how slots are laid out in blocks, the day tables and ``BlockStore``
(``tables``), batched writes and merges (``writes``), batched reads (``reads``), the same store in
memory (``memory``), and series read back the way graphite sees them (``series_reader``)."""
