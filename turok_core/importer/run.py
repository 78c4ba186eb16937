"""One import: walk the trees, plan and write each file's blocks, announce names, journal files.

Each file is read, planned (``plan.py``) and its blocks merged with ``fill_gaps`` (stored slots,
what turokd wrote, win) by a worker: in this process with ``jobs`` 1, else in ``jobs`` worker
processes, each with its own block store, at most ``IN_FLIGHT_PER_JOB`` files per worker queued,
so memory follows the parallelism, not the tree. This process announces the names of finished
files on the index queue (``wire/announcements.py``, as turokd does) and only then records the
files in the journal: a file is journaled after its blocks and its name are stored, so a run
killed at any point and started again redoes at most the files in flight, whose blocks merge
unchanged (no write unit spent). A file that cannot be imported (unreadable, not whisper,
truncated, a refused name, no schema) is reported with its reason and counted, never journaled.
With a ``guard`` (``guard.py``), every write happens while the import's mark in the lease table
tells turokd not to merge those blocks as sole writer.
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Protocol

from turok_core.importer.cost import CostEstimate
from turok_core.importer.guard import ImportGuard
from turok_core.importer.journal import FileKey, Journal, file_key
from turok_core.importer.layout import TreeFile, metric_name, walk
from turok_core.importer.plan import plan_file, planned_blocks
from turok_core.importer.progress import Progress
from turok_core.importer.whisper_file import WhisperFileError, read_header, read_whisper
from turok_core.model.config import TurokConfig
from turok_core.model.metric_names import MetricNameError
from turok_core.model.schemas import MetricPolicy, PolicyCache, SchemaSet
from turok_core.storage.writes import WriteStats
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.queues import Queue

IN_FLIGHT_PER_JOB = 4
ANNOUNCE_EVERY_NAMES = 1000  # names announced (and files journaled) together ...
ANNOUNCE_EVERY_SECONDS = 2.0  # ... or at least this often


class ImportStore(Protocol):
    """What an import needs of a block store (``BlockStore``, ``MemoryBlockStore``)."""

    def archive_span(self, step: int, level: int) -> int: ...

    def write_blocks(self, blocks: Iterable[tuple[str, int, int, dict[int, float]]], assume_new: bool = True,
                     exclusive: bool = False, fill_gaps: bool = False) -> WriteStats: ...


@dataclass
class FileOutcome:
    key: FileKey
    name: str
    points: int = 0
    blocks: int = 0
    stats: WriteStats = field(default_factory=WriteStats)
    error: str = ""  # why the file was not imported


@dataclass
class ImportResult:
    files: int = 0  # imported by this run
    skipped: int = 0  # in the journal already
    points: int = 0
    blocks: int = 0
    stats: WriteStats = field(default_factory=WriteStats)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class FileImporter:
    """Imports one file at a time into a block store (a worker's state)."""

    def __init__(self, config: TurokConfig, schemas: SchemaSet, store: ImportStore, now: int) -> None:
        self.config = config
        self.store = store
        self.now = now
        self.policies: PolicyCache[MetricPolicy] = PolicyCache(schemas.policy_for)

    def __call__(self, tree_file: TreeFile, key: FileKey) -> FileOutcome:
        try:
            name = metric_name(tree_file, self.config.max_metric_name_bytes)
        except MetricNameError as exc:
            return FileOutcome(key, "", error=f"no metric name: {exc}")
        policy = self.policies(name)
        if policy is None:
            return FileOutcome(key, name, error=f"no schema matches {name!r}")
        try:
            header, data = read_whisper(tree_file.path)
        except WhisperFileError as exc:
            return FileOutcome(key, name, error=str(exc))
        plan = plan_file(name, header, data, policy, self.now, self.store.archive_span)
        stats = self.store.write_blocks(plan.blocks, assume_new=False, fill_gaps=True) if plan.blocks else WriteStats()
        return FileOutcome(key, name, plan.points, len(plan.blocks), stats)


_worker: Optional[FileImporter] = None  # the state of a worker process


def _start_worker(config: TurokConfig, now: int) -> None:
    global _worker
    from turok_core.model.schemas import load_schemas
    from turok_core.runtime.aws import make_client
    from turok_core.storage.tables import BlockStore

    _worker = FileImporter(config, load_schemas(config), BlockStore(make_client("dynamodb", config), config), now)


def _work(tree_file: TreeFile, key: FileKey) -> FileOutcome:
    assert _worker is not None
    return _worker(tree_file, key)


def estimate(roots: Iterable[str], config: TurokConfig, schemas: SchemaSet, journal: Journal, now: int,
             span_of: Callable[[int, int], int]) -> tuple[CostEstimate, int]:
    """The cost of importing what the journal does not hold yet, and how many files it holds."""
    cost, done = CostEstimate(), 0
    policies: PolicyCache[MetricPolicy] = PolicyCache(schemas.policy_for)
    for root in roots:
        for tree_file in walk(root):
            try:
                if file_key(tree_file.path) in journal:
                    done += 1
                    continue
                cost.files += 1
                policy = policies(metric_name(tree_file, config.max_metric_name_bytes))
                if policy is not None:
                    cost.blocks += planned_blocks(read_header(tree_file.path), policy, now, span_of)
            except (OSError, ValueError):
                continue  # reported when the import reaches it
    return cost, done


class Importer:
    """Drives an import: workers, announcements, journal, progress."""

    def __init__(self, config: TurokConfig, schemas: SchemaSet, journal: Journal, index_queue: Optional[Queue],
                 now: int, jobs: int = 1, store: Optional[ImportStore] = None, progress: Optional[Progress] = None,
                 report: Callable[[str], None] = print, guard: Optional[ImportGuard] = None) -> None:
        if jobs <= 1 and store is None:
            raise ValueError("an import in this process (jobs 1) needs a block store")
        self.config = config
        self.journal = journal
        self.index_queue = index_queue
        self.jobs = max(1, jobs)
        self.local = FileImporter(config, schemas, store, now) if store is not None and self.jobs == 1 else None
        self.now = now
        self.progress = progress
        self.report = report
        self.guard = guard
        self._names: list[str] = []
        self._keys: list[FileKey] = []
        self._flushed = time.monotonic()

    def run(self, roots: Iterable[str]) -> ImportResult:
        if self.guard is None:
            return self._run(roots)
        with self.guard:
            return self._run(roots)

    def _run(self, roots: Iterable[str]) -> ImportResult:
        result = ImportResult()
        try:
            if self.local is not None:
                for tree_file, key in self._todo(roots, result):
                    self._finished(self.local(tree_file, key), result)
            else:
                self._run_pool(roots, result)
        finally:
            self._flush()  # what finished is announced and journaled, also on Ctrl-C or an error
            if self.progress is not None:
                self.progress.finish()
        return result

    def _run_pool(self, roots: Iterable[str], result: ImportResult) -> None:
        limit = self.jobs * IN_FLIGHT_PER_JOB
        with ProcessPoolExecutor(self.jobs, initializer=_start_worker, initargs=(self.config, self.now)) as pool:
            running: set[Future] = set()
            try:
                for tree_file, key in self._todo(roots, result):
                    if len(running) >= limit:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in done:
                            self._finished(future.result(), result)
                    running.add(pool.submit(_work, tree_file, key))
                while running:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        self._finished(future.result(), result)
            except BaseException:
                for future in running:
                    future.cancel()
                raise

    def _todo(self, roots: Iterable[str], result: ImportResult) -> Iterator[tuple[TreeFile, FileKey]]:
        for root in roots:
            for tree_file in walk(root):
                try:
                    key = file_key(tree_file.path)
                except OSError as exc:
                    self._bad(tree_file.path, f"cannot read: {exc.strerror or exc}", result)
                    continue
                if key in self.journal:
                    result.skipped += 1
                    continue
                if self.guard is not None:
                    self.guard.check()  # no write once turokd may merge as sole writer again
                yield tree_file, key

    def _bad(self, path: str, reason: str, result: ImportResult) -> None:
        result.bad.append((path, reason))
        self.report(f"turok-import: skipped {path}: {reason}")
        if self.progress is not None:
            self.progress.add(1, 0, 0)

    def _finished(self, outcome: FileOutcome, result: ImportResult) -> None:
        if outcome.error:
            self._bad(outcome.key[0], outcome.error, result)
            return
        result.files += 1
        result.points += outcome.points
        result.blocks += outcome.blocks
        result.stats.add(outcome.stats)
        self._names.append(outcome.name)
        self._keys.append(outcome.key)
        if self.progress is not None:
            self.progress.add(1, outcome.points, outcome.stats.write_units)
        if len(self._names) >= ANNOUNCE_EVERY_NAMES or time.monotonic() - self._flushed >= ANNOUNCE_EVERY_SECONDS:
            self._flush()

    def _flush(self) -> None:
        """Announce the finished files' names, then journal the files (in that order: at least once)."""
        names, keys = self._names, self._keys
        self._names, self._keys, self._flushed = [], [], time.monotonic()
        if names and self.index_queue is not None:
            self.index_queue.send(encode_announcements(sorted(set(names)), self.config.sqs_max_message_bytes))
        self.journal.record(keys)
