"""The gateway's counters, shared by the service and its collaborators (outbox, backpressure).

Every field becomes a self-metric ``turok.agents.<agent>.gateway.<field>``; the per-protocol
dicts become ``…gateway.<field>.<protocol>``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GatewayCounters:
    points_received: int = 0  # good points handed to the window buffer
    points_rejected: int = 0  # points of metrics no schema matches
    points_expired: int = 0  # points older than every archive of their own metric (whisper drops them)
    bad_lines: int = 0
    nan_dropped: int = 0
    points_dropped_overload: int = 0  # UDP points refused while the spool was over its bound
    messages_encoded: int = 0  # windows released and encoded into bodies
    messages_unencodable: int = 0
    bodies_spooled: int = 0
    bodies_sent: int = 0
    bytes_sent: int = 0
    send_errors: int = 0  # drain rounds that failed (their bodies stay in the spool)
    bodies_dropped: int = 0  # bodies SQS kept refusing while it took others (logged)
    spool_errors: int = 0  # spool writes that failed (disk full…): logged, data kept in memory
    backpressure_pauses: int = 0  # times TCP reading was paused for a full spool
    points_replayed: int = 0  # journaled points put back into windows at start-up
    bodies_replayed: int = 0  # spooled bodies found unsent at start-up
    spool_damaged_records: int = 0  # damaged or torn spool regions skipped at start-up
    cache_queries: int = 0  # finder queries for the windows held here
    cache_queries_refused: int = 0  # malformed ones
    # per receiving protocol (plaintext_tcp, plaintext_udp, pickle, statsd, …): the key is
    # accept's ``protocol`` argument; reported as turok.agents.<agent>.gateway.<field>.<protocol>
    points_by_protocol: dict[str, int] = field(default_factory=dict)
    bad_lines_by_protocol: dict[str, int] = field(default_factory=dict)
