"""What the UDP receivers share: datagram size and a large kernel receive buffer."""
from __future__ import annotations

import socket

from twisted.logger import Logger

log = Logger(namespace="turok.gateway")

UDP_MAX_PACKET_SIZE = 65536  # a whole datagram, never truncated (Twisted's default is 8192)
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024


def enlarge_receive_buffer(transport, size: int, receiver: str) -> None:
    """Ask for a ``size``-byte SO_RCVBUF, best effort: a big buffer absorbs bursts, and the
    kernel may cap it (``net.core.rmem_max``), so what was granted is logged."""
    try:
        sock = transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except (OSError, AttributeError) as exc:
        log.warn("{receiver} UDP: could not enlarge the receive buffer: {error}", receiver=receiver, error=exc)
    else:
        log.info("{receiver} UDP: receive buffer {granted} bytes (asked {asked}; raise net.core.rmem_max "
                 "for more)", receiver=receiver, granted=granted, asked=size)
