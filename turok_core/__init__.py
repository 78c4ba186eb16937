"""turok-lib: the pure heart of Turok.

Parsing, windows, aggregation, codecs, naming, index structures, configuration and storage
access. Nothing in this package (outside ``services/``) touches the Twisted reactor.
"""
