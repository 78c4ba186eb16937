"""Bytes from a socket into columns of points: carbon plaintext, carbon pickle, and the optional
C extension that parses clean input. No I/O, no reactor.

``batch`` holds ``ParsedLines``, the batch every receiver (StatsD's flush too) hands the gateway."""
