"""``turok-import``: copy carbon's whisper files into Turok (see docs/import.md).

Prints the DynamoDB cost before starting (``--dry-run``: only that), a progress line on stderr,
each skipped file with its reason, and a summary. Exit status: 0 when every file was imported
(or was already), 1 when some files were skipped as unreadable or the import stopped on an
error (run it again: it resumes), 2 for bad arguments or a bad configuration or schema file,
130 on Ctrl-C (run it again to resume).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from typing import Optional, Sequence

from turok_core.importer.journal import Journal
from turok_core.importer.progress import Progress
from turok_core.importer.run import Importer, estimate
from turok_core.model.config import load_config
from turok_core.model.schemas import SchemaError, load_schemas


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``turok-import``."""
    parser = argparse.ArgumentParser(
        prog="turok-import",
        description="Import carbon's whisper files (a/b/c.wsp is a.b.c, tagged series under _tagged/) "
                    "into Turok's day tables at each metric's Turok schema. Resumable: run it again "
                    "with the same arguments after an interruption.")
    parser.add_argument("dirs", nargs="+", metavar="WHISPER_DIR", help="carbon's whisper directory (or files)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="Turok configuration file (default: $TUROK_CONFIG; TUROK_* variables override)")
    parser.add_argument("--dry-run", action="store_true", help="print what the import would cost, import nothing")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes reading and writing files (default: the CPU count)")
    parser.add_argument("--journal", metavar="FILE", default=None,
                        help="where finished files are recorded (default: turok-import-<hash of the "
                             "directories and table prefix>.journal in the current directory)")
    parser.add_argument("--now", type=int, default=None, metavar="EPOCH", help=argparse.SUPPRESS)  # tests
    return parser


def default_journal(dirs: Sequence[str], table_prefix: str) -> str:
    """The journal of an import of ``dirs`` into ``table_prefix``: the same arguments, the same file."""
    digest = hashlib.sha256("\0".join([table_prefix, *sorted(os.path.abspath(d) for d in dirs)]).encode()).hexdigest()
    return f"turok-import-{digest[:12]}.journal"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run an import; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print("turok-import: --jobs must be >= 1", file=sys.stderr)
        return 2
    missing = [d for d in args.dirs if not os.path.exists(d)]
    if missing:
        print(f"turok-import: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        schemas = load_schemas(config)
    except (SchemaError, ValueError, OSError) as exc:
        print(f"turok-import: {exc}", file=sys.stderr)
        return 2
    from turok_core.storage.block_layout import archive_span

    now = args.now if args.now is not None else int(time.time())
    journal = Journal(args.journal or default_journal(args.dirs, config.table_prefix))
    cost, done = estimate(args.dirs, config, schemas, journal, now,
                          lambda step, level: archive_span(step, level, config.block_slots, config.coarse_block_slots))
    if done:
        print(f"{done} file(s) imported before (journal {journal.path})")
    sys.stdout.write(cost.render())
    sys.stdout.flush()
    if args.dry_run:
        return 0
    from turok_core.importer.guard import ImportGuard
    from turok_core.runtime.aws import make_client
    from turok_core.storage.leases import LeaseTable
    from turok_core.storage.tables import BlockStore
    from turok_core.wire.queues import MessageQueue

    dynamodb = make_client("dynamodb", config)
    store = BlockStore(dynamodb, config) if args.jobs == 1 else None
    queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
    started = time.monotonic()
    try:
        leases = LeaseTable(dynamodb, config.lease_table_name)
        leases.ensure_table()
        # every slot imported starts at or before ``now``: blocks from ``now + 1`` on stay turokd's alone
        guard = ImportGuard.for_config(leases, config, now + 1)
        importer = Importer(config, schemas, journal, queue, now, args.jobs, store, Progress(cost.files),
                            report=lambda line: print(line, file=sys.stderr), guard=guard)
        result = importer.run(args.dirs)
    except KeyboardInterrupt:
        print("turok-import: interrupted; run it again with the same arguments to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # AWS refusing writes after every retry, a lost connection
        print(f"turok-import: stopped: {exc}; run it again with the same arguments to resume", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    stats = result.stats
    print(f"imported {result.files} file(s) in {elapsed:.1f}s ({result.skipped} done before): {result.points} "
          f"points, {result.blocks} blocks, {stats.items_written} written ({stats.items_unchanged} unchanged), "
          f"{stats.write_units} write units")
    if result.bad:
        print(f"turok-import: {len(result.bad)} file(s) skipped (reasons above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
