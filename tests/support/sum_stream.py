"""A stream of ``sum`` metrics sent straight to SQS as Turok messages, and the audit of what got stored.

Each slot of each metric gets distinct random integer datapoints, so a stored value tells what
happened to it: the expected sum (stored once), a larger one (counted twice), nothing (lost).
Used by the fault-injection and SIGKILL tests against a real turokd.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tests.conftest import wait_for
from turok_core.model.message import TurokMessage
from turok_core.runtime.aws import make_client
from turok_core.storage.tables import BlockStore
from turok_core.wire.codec import encode_messages
from turok_core.wire.partitions import partition_dead_letter_queue_name, partition_queue_names, split_by_partition
from turok_core.wire.queues import MessageQueue

STEP = 10  # the test schema's finest archive
ROLLUP_STEP = 60  # and its coarser one

SCHEMAS = f"[all]\npattern = .*\nretentions = {STEP}s:1d,{ROLLUP_STEP}s:2d\n"
AGGREGATION = "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = sum\n"


@dataclass
class Audit:
    """What the store holds compared with what was sent."""
    sent: int = 0
    stored: int = 0  # slots holding exactly their sum
    duplicated: int = 0  # slots holding more (a message counted twice)
    lost: int = 0  # slots with no value
    wrong: int = 0  # slots holding anything else
    bodies_complete: int = 0  # SQS bodies whose every slot is stored
    rollups_wrong: int = 0  # coarse slots not equal to the sum of their fine slots sent
    examples: list = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.stored == self.sent and not (self.duplicated or self.lost or self.wrong)


class SumStream:
    """``metrics`` sum metrics, one Turok message per metric and slot, several metrics per SQS body."""

    def __init__(self, config, metrics: int, first_slot: int, seed: int = 0, per_body: int = 10,
                 prefix: str = "faults") -> None:
        self._config = config
        self._random = random.Random(seed)
        self.metrics = [f"{prefix}.m{i:03d}.count" for i in range(metrics)]
        self.first_slot = first_slot - first_slot % ROLLUP_STEP
        self.per_body = per_body
        self.expected: dict[tuple[str, int], int] = {}
        self.bodies: list[list[tuple[str, int]]] = []  # the (metric, slot) pairs of each body sent
        sqs = make_client("sqs", config)  # one queue per partition, each metric sent to its own
        self._queues = [MessageQueue.from_config(sqs, config, name) for name in partition_queue_names(config)]
        self.next_slot = self.first_slot
        self._lock = threading.Lock()  # a sender thread may run while the test audits

    def send_slot(self) -> int:
        """Send every metric's messages for the next slot; returns the slot."""
        slot, self.next_slot = self.next_slot, self.next_slot + STEP
        for offset in range(0, len(self.metrics), self.per_body):
            messages, sums = [], {}
            for metric in self.metrics[offset:offset + self.per_body]:
                datapoints = [self._random.randint(1, 1000) for _ in range(self._random.randint(1, 4))]
                sums[(metric, slot)] = sum(datapoints)
                messages.append(TurokMessage(metric, slot, datapoints, STEP, "sum"))
            groups = split_by_partition(messages, [m.metric for m in messages], len(self._queues))
            for partition, group in sorted(groups.items()):
                bodies = encode_messages(group, self._config.sqs_max_message_bytes)
                assert len(bodies) == 1, "one SQS body per group keeps the body audit exact"
                self._queues[partition].send(bodies)
                with self._lock:
                    self.bodies.append([(m.metric, slot) for m in group])
                    self.expected.update({(m.metric, slot): sums[(m.metric, slot)] for m in group})
        return slot

    def send_steadily(self, slots: int, interval: float, on_slot=None) -> None:
        """Send ``slots`` slots one every ``interval`` seconds; ``on_slot(index)`` after each."""
        start = time.monotonic()
        for index in range(slots):
            self.send_slot()
            if on_slot is not None:
                on_slot(index)
            delay = start + (index + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    @property
    def bodies_sent(self) -> int:
        with self._lock:
            return len(self.bodies)

    @property
    def end(self) -> int:
        return self.next_slot

    def audit(self, store: BlockStore, rollups: bool = False) -> Audit:
        """Read back every slot sent (and with ``rollups`` the coarse archive) and compare."""
        with self._lock:
            expected, bodies = dict(self.expected), list(self.bodies)
        audit = Audit(sent=len(expected))
        end = self.end + (-self.end) % ROLLUP_STEP
        series = store.fetch_series(self.metrics, STEP, self.first_slot, end)
        complete: set[tuple[str, int]] = set()
        for (metric, slot), want in expected.items():
            got = series[metric][(slot - self.first_slot) // STEP]
            if got == want:
                audit.stored += 1
                complete.add((metric, slot))
                continue
            if got is None:
                audit.lost += 1
            elif got > want:
                audit.duplicated += 1
            else:
                audit.wrong += 1
            if len(audit.examples) < 5:
                audit.examples.append((metric, slot, want, got))
        audit.bodies_complete = sum(all(pair in complete for pair in pairs) for pairs in bodies)
        if rollups:
            coarse = store.fetch_series(self.metrics, ROLLUP_STEP, self.first_slot, end)
            for metric in self.metrics:
                for index, got in enumerate(coarse[metric]):
                    start = self.first_slot + index * ROLLUP_STEP
                    want = sum(expected.get((metric, t), 0) for t in range(start, start + ROLLUP_STEP, STEP))
                    if got != (want or None):
                        audit.rollups_wrong += 1
                        if len(audit.examples) < 10:
                            audit.examples.append(("rollup", metric, start, want, got))
        return audit


def audit_store(config) -> BlockStore:
    """A BlockStore reading moto directly that never trusts its table cache (a day table turokd
    creates must show at once, not after the store's cached "missing" expires)."""
    ticks = iter(range(0, 10 ** 12, 3600))
    return BlockStore(make_client("dynamodb", config), config, clock=lambda: float(next(ticks)))


def turokd_ready(log: Path) -> bool:
    """``running_twistd``'s readiness test for turokd."""
    return "poller(s) on queue" in log.read_text()


def queue_depth(config, name: Optional[str] = None) -> int:
    """Messages on queue ``name`` (default: every partition's metrics queue), visible or in flight."""
    sqs = make_client("sqs", config)
    depth = 0
    for queue in [name] if name else partition_queue_names(config):
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        depth += int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
    return depth


def dead_letter_depth(config) -> int:
    """Messages on every partition's dead-letter queue."""
    return sum(queue_depth(config, partition_dead_letter_queue_name(config, p))
               for p in range(max(1, config.queue_partitions)))


def peak_rss_kib(pid: int) -> Optional[int]:
    """A live process's peak resident set (VmHWM) in KiB, None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class DrainWatch:
    """Checks, while turokd works, that no SQS body leaves the queue before its data is stored.

    Each ``check`` reads the queue depth first and the store second: a body deleted before the
    first read must already be complete in the second, so ``deleted <= bodies_complete`` always.
    """

    def __init__(self, stream: SumStream, store: BlockStore, config) -> None:
        self._stream, self._store, self._config = stream, store, config
        self.checks = 0
        self.violations: list[tuple[int, int]] = []  # (deleted, complete) when deleted > complete
        self.last: Optional[Audit] = None
        self.depth = -1

    def wait(self, timeout: float) -> None:
        """Check every half second until the queue is empty and everything is stored exactly."""
        try:
            wait_for(self.check, timeout, "every point stored and the queue empty", interval=0.5)
        except AssertionError as exc:
            last, config = self.last, self._config
            raise AssertionError(
                f"{exc}: queue depth {self.depth}, dead-letter queue "
                f"{dead_letter_depth(config)}; stored {last.stored}/{last.sent}, "
                f"duplicated {last.duplicated}, lost {last.lost}, wrong {last.wrong}; e.g. {last.examples}") from None

    def check(self) -> bool:
        """One observation; True once the queue is empty and everything sent is stored exactly.

        moto counts visible messages, then in-flight ones: a body whose visibility timeout ends
        between the two counts is in neither (SQS's own counts are approximate too). After a
        SIGKILL many bodies become visible at about the same moment, so one reading can miss
        one. A miss is gone at the next reading, a body deleted too early is not: a violation
        counts only when the observation made again at once shows it too.
        """
        deleted, audit = self._observe()
        if deleted > audit.bodies_complete:
            deleted, audit = self._observe()
            if deleted > audit.bodies_complete:
                self.violations.append((deleted, audit.bodies_complete))
        return self.depth == 0 and audit.exact

    def _observe(self) -> tuple[int, Audit]:
        """(bodies deleted, the audit read after the depth): a body deleted meanwhile is stored
        by the audit's read, and one sent meanwhile adds to the depth only."""
        sent = self._stream.bodies_sent
        self.depth = max(queue_depth(self._config), queue_depth(self._config))
        audit = self.last = self._stream.audit(self._store)
        self.checks += 1
        return sent - self.depth, audit
