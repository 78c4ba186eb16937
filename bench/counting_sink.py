"""A counting sink for the relays under benchmark: accepts Carbon pickle or plaintext over TCP
and counts points, writing the running total to a file.

Run as ``python bench/counting_sink.py PORT COUNT_FILE [SUM_PREFIX]``. Each connection's protocol is guessed
from its first byte: a pickle frame starts with a 4-byte big-endian length (first byte 0 for any
frame under 16 MB), a plaintext line with a printable character. The total is rewritten to
COUNT_FILE (atomically) every 0.1 s while it changes; the process exits on SIGTERM.

With SUM_PREFIX (plaintext only, e.g. ``stats_counts.bench.``) it instead adds up the values of
the lines whose name starts with it, per the next dotted component of the name, and writes them
as JSON ({"t0": 150000.0, ...}): the StatsD benchmark counts its counters end to end this way.
"""
from __future__ import annotations

import json
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time

WRITE_INTERVAL = 0.1
RECV_BYTES = 1 << 20


class _Conn:
    __slots__ = ("sock", "mode", "pending")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.mode = ""  # "" until the first byte, then "pickle" or "line"
        self.pending = b""


def _count_pickle(conn: _Conn, data: bytes) -> int:
    """Count the points of every complete pickle frame in pending + data."""
    buf = conn.pending + data if conn.pending else data
    count = 0
    offset = 0
    end = len(buf)
    while end - offset >= 4:
        (size,) = struct.unpack_from("!L", buf, offset)
        if end - offset - 4 < size:
            break
        # the frames come from a relay on loopback that this benchmark started
        count += len(pickle.loads(buf[offset + 4:offset + 4 + size]))
        offset += 4 + size
    conn.pending = buf[offset:]
    return count


def _sum_lines(conn: _Conn, data: bytes, prefix: bytes, sums: dict[str, float]) -> None:
    """Add the values of complete lines starting with ``prefix`` into ``sums``."""
    buf = conn.pending + data if conn.pending else data
    complete, _, conn.pending = buf.rpartition(b"\n")
    for line in complete.split(b"\n"):
        if line.startswith(prefix):
            parts = line.split()
            if len(parts) >= 2:
                key = parts[0][len(prefix):].split(b".", 1)[0].decode()
                sums[key] = sums.get(key, 0.0) + float(parts[1])


def serve(port: int, count_path: str, sum_prefix: bytes = b"") -> None:
    """Accept on 127.0.0.1:port until SIGTERM, counting points into count_path."""
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    total = 0
    sums: dict[str, float] = {}
    written = -1
    last_write = 0.0
    while running[0]:
        for key, _ in selector.select(WRITE_INTERVAL):
            if key.data is None:
                sock, _addr = listener.accept()
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, _Conn(sock))
                continue
            conn: _Conn = key.data
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(conn.sock)
                conn.sock.close()
                continue
            if not conn.mode:
                conn.mode = "pickle" if data[0] == 0 else "line"
            if sum_prefix:
                _sum_lines(conn, data, sum_prefix, sums)
                total += data.count(b"\n")
            elif conn.mode == "line":
                total += data.count(b"\n")
            else:
                total += _count_pickle(conn, data)
        now = time.monotonic()
        if total != written and now - last_write >= WRITE_INTERVAL:
            _write_count(count_path, json.dumps(sums) if sum_prefix else str(total))
            written, last_write = total, now
    _write_count(count_path, json.dumps(sums) if sum_prefix else str(total))


def _write_count(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3].encode() if len(sys.argv) > 3 else b"")
