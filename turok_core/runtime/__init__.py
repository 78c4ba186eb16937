"""The Twisted services turokd and turok-indexer: thin shells around turok-lib."""
