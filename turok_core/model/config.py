"""Turok's configuration: one object, read from an INI file and overridden by the environment.

Every service takes a ``TurokConfig``; nothing reads globals. The file has one ``[turok]``
section whose keys are the field names below; each field can also be set by the environment
variable ``TUROK_<FIELD NAME IN CAPITALS>`` (environment wins over the file). AWS credentials,
region and endpoints follow boto3's own chain (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_SQS`` …); ``aws_endpoint_url`` only overrides them.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

CONF_DIR = Path(__file__).resolve().parent / "conf"
SECTION = "turok"
ENV_PREFIX = "TUROK_"


@dataclass(frozen=True)
class TurokConfig:
    # --- AWS (empty means: boto3's own configuration chain decides)
    aws_endpoint_url: str = ""
    aws_region: str = ""
    aws_max_pool_connections: int = 16
    # metrics queue; with queue_partitions > 1 the partition queues are <queue_name>-<p>
    # (turok_core/wire/partitions.py), each with its dead-letter queue <dead_letter_queue_name>-<p>
    queue_name: str = "turok-metrics"
    queue_partitions: int = 1
    index_queue_name: str = "turok-index"
    dead_letter_queue_name: str = "turok-metrics-dlq"
    dead_letter_max_receives: int = 5
    index_bucket: str = "turok-index"
    index_prefix: str = "index/"
    index_shards: int = 64  # when the index is created; it grows by moves (turok_core/index/reshard.py)
    # an indexer moves an index to 4x the shards once the shards it writes hold more names than
    # this on average (a new name rewrites one shard: ~40,000 names keep that near 0.75 MB); 0: never
    index_shard_target_names: int = 40000
    # the tag index (tagged series, for graphite-web's TagDB) in index_bucket, same layout
    tag_index_prefix: str = "tags/"
    tag_index_shards: int = 64
    tag_index_shard_target_names: int = 40000
    table_prefix: str = "turok"
    table_joiner: str = "_"
    # --- carbon schema files (empty: the defaults shipped in turok_core/model/conf)
    schemas_file: str = ""
    aggregation_file: str = ""
    # edits of either file are noticed this often (a stat; parsed again only when changed), as
    # carbon-cache reloads them every 60 s; 0: read at start only
    schema_reload_seconds: float = 60.0
    # --- gateway
    interface: str = "127.0.0.1"
    plaintext_port: int = 2003
    plaintext_udp_port: int = 2003
    pickle_port: int = 2004
    statsd_port: int = 8125
    # --- StatsD (etsy statsd semantics; names as its graphite backend writes them)
    statsd_flush_interval_seconds: float = 10.0
    statsd_percent_thresholds: str = "90"  # comma list; negative N: the top N percent
    statsd_legacy_namespace: bool = True
    statsd_global_prefix: str = "stats"
    statsd_prefix_counter: str = "counters"
    statsd_prefix_timer: str = "timers"
    statsd_prefix_gauge: str = "gauges"
    statsd_prefix_set: str = "sets"
    statsd_prefix_stats_counts: str = "stats_counts"  # legacy namespace: counter counts
    statsd_prefix_internal: str = "statsd"  # statsd's own counters (etsy's prefixStats)
    statsd_delete_idle_stats: bool = False
    statsd_histograms: str = ""  # JSON, as etsy: [{"metric": "substring", "bins": [10, 100, "inf"]}]
    statsd_max_line_length: int = 8192
    max_line_length: int = 4096
    max_pickle_frame_bytes: int = 1048576  # carbon's PICKLE_RECEIVER_MAX_LENGTH; longer: disconnect
    window_grace_seconds: int = 10
    max_future_seconds: int = 86400  # points stamped further ahead than this are refused
    flush_interval_seconds: float = 1.0
    sqs_max_message_bytes: int = 262144
    # metric-name rule (turok_core.model.metric_names): longer names are refused; at most 2048, DynamoDB's key limit
    max_metric_name_bytes: int = 1024
    # TCP receivers (plaintext, pickle, StatsD), each: connections beyond this are closed at once;
    # a connection silent for idle_timeout_seconds is closed (0: never; carbon has no such limit)
    max_connections: int = 1024
    idle_timeout_seconds: float = 300.0
    # write-ahead spool (turok_core/spool/): accepted points and unsent bodies on local disk;
    # a relative spool_dir is under the gateway's working directory
    spool_dir: str = "turok-spool"
    spool_max_bytes: int = 536870912  # past it: TCP stops reading, UDP points are dropped (counted)
    spool_fsync: str = "interval"  # always | interval | never
    spool_fsync_interval_seconds: float = 1.0
    # zlib level of gateway bodies, 0-9: 1 costs far less CPU than 6 for bodies a few % larger
    sqs_compression_level: int = 1
    # the gateway answers the finder's cache queries for the windows it holds (open, or released
    # less than gateway_recent_seconds ago: on their way through SQS to turokd)
    gateway_cache_port: int = 7003
    gateway_recent_seconds: float = 30.0
    # the gateway process's first garbage-collector generation threshold (CPython's is 700); the
    # parser makes a list per line, which set the cyclic collector off every few hundred points
    # (docs/benchmarks.md); 0 keeps Python's default
    gc_threshold: int = 20000
    # --- turokd
    # slots per DynamoDB item; 0: from the write-unit budget (block_layout.block_span: 432 slots
    # of 10 s = 72 minutes, 360 of 1 min, a day of 1 h); others: at most that many, dividing a day
    block_slots: int = 0
    # slots per item of a metric's coarser archives (its second and later; turokd computes them
    # and holds no SQS message for them); 0: as long as base blocks when block_slots is set, else
    # two write units' budget (block_layout.coarse_block_span: 720 slots of 1 min, a day of 1 h);
    # others: at most that many, a multiple of the base block dividing a day
    coarse_block_slots: int = 0
    # turokd holds a block in memory and writes it once, this long after the block's end (for
    # the last slot's message to arrive); its SQS messages are deleted only after that write
    block_close_delay_seconds: float = 30.0
    block_tick_seconds: float = 1.0  # how often turokd looks for blocks to close
    # late data (for a block written already, or closed before its first point came) is written
    # once it has had no more for this long (at most late_merge_max_seconds after it came), not
    # once per batch; its messages wait
    late_merge_delay_seconds: float = 10.0
    late_merge_max_seconds: float = 300.0
    # turokd stops receiving while it holds this many SQS messages (SQS allows ~120,000 in
    # flight per queue; held data is in memory): a DynamoDB outage cannot grow it without bound
    max_held_messages: int = 60000
    # turokd answers the finder's queries for slots it holds (carbon's CACHE_QUERY_PORT)
    cache_interface: str = "127.0.0.1"
    cache_port: int = 7002
    receive_wait_seconds: int = 20
    # turokd holds a message until its blocks are written (up to a block, 72 minutes of 10 s slots,
    # plus the close delay): received with this timeout, longer waits cost a ChangeMessageVisibility
    # request; a dead turokd's messages come back after it
    visibility_timeout_seconds: int = 1200
    turokd_pollers: int = 2
    write_max_attempts: int = 8
    # merge into a block with a conditional PutItem (it still holds what was read), so several
    # turokd processes never lose each other's slots; off: unconditional BatchWriteItem
    conditional_writes: bool = True
    put_threads: int = 8  # conditional PutItem requests of one write sent in parallel
    # partition leases (table <table_prefix><table_joiner>leases): a turokd consumes and writes only
    # the partitions it holds; a dead turokd's partitions move once its lease expires
    lease_duration_seconds: float = 20.0
    lease_heartbeat_seconds: float = 5.0  # renew, take free leases, rebalance this often
    # a partition's blocks are written only while its lease is valid this much longer
    lease_write_margin_seconds: float = 5.0
    # --- indexer
    indexer_pollers: int = 1
    # a write of the index takes every name announced until this long after the first one it
    # takes arrived (or until the write before it ended): a burst of new names rewrites each
    # shard it touches about once, and names reach the finder this much later
    index_coalesce_seconds: float = 0.5
    # --- shared
    aws_threads: int = 8
    # self-metrics under turok.agents.<agent_name>.<service>.* (carbon's CARBON_METRIC_INTERVAL);
    # 0 turns them off; an empty agent_name means the host name with dots as underscores
    self_metrics_interval_seconds: float = 60.0
    agent_name: str = ""
    # --- finder
    index_refresh_seconds: float = 5.0
    # turokd cache endpoints the finder asks for points not yet written (carbon's
    # CARBONLINK_HOSTS): comma-separated host:port; empty: read DynamoDB only
    cache_hosts: str = "127.0.0.1:7002,127.0.0.1:7003"
    cache_timeout_seconds: float = 1.0  # carbon's CARBONLINK_TIMEOUT
    # --- the embedded local stack (`make run`): local AWS endpoint and graphite-web
    local_aws_port: int = 5000
    graphite_port: int = 8080

    @property
    def lease_table_name(self) -> str:
        """The DynamoDB table of partition leases (not a day table: the keeper leaves it alone)."""
        return f"{self.table_prefix}{self.table_joiner}leases"

    @property
    def schema_history_table_name(self) -> str:
        """The DynamoDB table recording the schema files in force over time (not a day table)."""
        return f"{self.table_prefix}{self.table_joiner}schemas"

    @property
    def schemas_path(self) -> Path:
        return Path(self.schemas_file) if self.schemas_file else CONF_DIR / "storage-schemas.conf"

    @property
    def aggregation_path(self) -> Path:
        return Path(self.aggregation_file) if self.aggregation_file else CONF_DIR / "storage-aggregation.conf"

    def replace(self, **changes: Any) -> "TurokConfig":
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: type, raw: str, source: str) -> object:
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw.strip()) if kind is not str else raw
    except ValueError:
        raise ValueError(f"{source}: {name} = {raw!r} is not a valid {kind.__name__}") from None


def load_config(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> TurokConfig:
    """Build the configuration from ``path`` (INI, section ``[turok]``) then ``TUROK_*`` variables.

    ``path`` defaults to ``$TUROK_CONFIG`` when set. Unknown keys are refused so typos surface.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("TUROK_CONFIG") or None
    types = {f.name: (str if f.type == "str" else int if f.type == "int" else float if f.type == "float" else bool)
             for f in fields(TurokConfig)}
    values: dict[str, Any] = {}  # each coerced to its field's type
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        if not parser.read(path):
            raise FileNotFoundError(f"configuration file not found: {path}")
        for section in parser.sections():
            if section != SECTION:
                raise ValueError(f"{path}: unknown section [{section}] (expected [{SECTION}])")
        if parser.has_section(SECTION):
            for key, raw in parser.items(SECTION):
                if key not in types:
                    raise ValueError(f"{path}: unknown setting {key!r} in [{SECTION}]")
                values[key] = _coerce(key, types[key], raw, path)
    for name, kind in types.items():
        variable = environ.get(ENV_PREFIX + name.upper())
        if variable is not None:
            values[name] = _coerce(name, kind, variable, ENV_PREFIX + name.upper())
    return TurokConfig(**values)
