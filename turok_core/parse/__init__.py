"""Bytes from a socket into columns of points (``ParsedLines``): carbon plaintext, carbon pickle,
and the optional C extension that parses clean input. No I/O, no reactor."""
