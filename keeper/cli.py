"""``turok-keeper``: show (and with ``--apply``, apply) the retention plan for Turok's day tables.

Exit status: 0 when the plan was shown or fully applied, 1 when some action was refused or
failed (so cron, systemd and schedulers surface it), 2 for a bad configuration or schema file.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from keeper.apply import DEFAULT_GUARD_MAX_PAGES, DEFAULT_HYGIENE_MAX_QUERIES, Applier, list_tables
from keeper.plan import plan_for, render_text, to_json
from turok_core.model.config import load_config
from turok_core.model.schemas import SchemaError, load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.schema_history import SchemaRecordTable, load_history


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``turok-keeper``."""
    parser = argparse.ArgumentParser(
        prog="turok-keeper",
        description="Delete Turok day tables past retention and create the coming days' tables. "
                    "Without --apply only the plan is printed.")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="Turok configuration file (default: $TUROK_CONFIG; TUROK_* variables override)")
    parser.add_argument("--apply", action="store_true", help="apply the plan (default: only print it)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--days-ahead", type=int, default=1, metavar="N",
                        help="create the tables of today and the next N days (default 1)")
    parser.add_argument("--now", type=float, default=None, metavar="EPOCH",
                        help="pretend the time is EPOCH seconds (default: the clock)")
    parser.add_argument("--guard-max-pages", type=int, default=DEFAULT_GUARD_MAX_PAGES, metavar="N",
                        help="Scan pages read per table before deleting it; a table not read whole "
                             f"in N pages is not deleted (default {DEFAULT_GUARD_MAX_PAGES})")
    parser.add_argument("--no-index-hygiene", dest="index_hygiene", action="store_false",
                        help="with --apply, leave the S3 index alone (default: remove the names of "
                             "deleted tables that have no data left in any remaining table)")
    parser.add_argument("--hygiene-max-queries", type=int, default=DEFAULT_HYGIENE_MAX_QUERIES, metavar="N",
                        help=f"DynamoDB queries index hygiene may spend (default {DEFAULT_HYGIENE_MAX_QUERIES})")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the keeper; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.days_ahead < 0:
        print("turok-keeper: --days-ahead must be >= 0", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        schemas = load_schemas(config)
    except (SchemaError, ValueError, OSError) as exc:
        print(f"turok-keeper: {exc}", file=sys.stderr)
        return 2
    now = int(args.now if args.now is not None else time.time())
    client = make_client("dynamodb", config)
    record = SchemaRecordTable(client, config.schema_history_table_name)
    if args.apply:  # the plan alone writes nothing; turokd records the files at its start too
        record.record(schemas, time.time())
    history = load_history(record, schemas)
    plan = plan_for(schemas, list_tables(client), config.table_prefix, config.table_joiner, now, args.days_ahead,
                    history)
    outcomes, hygiene = None, None
    if args.apply:
        s3 = make_client("s3", config) if args.index_hygiene else None
        applier = Applier(client, config, s3_client=s3, guard_max_pages=args.guard_max_pages,
                          hygiene_max_queries=args.hygiene_max_queries)
        outcomes = applier.apply(plan)
        hygiene = applier.hygiene
    if args.json:
        extra = {"index_hygiene": hygiene.as_dict() if hygiene is not None else None}
        sys.stdout.write(to_json(plan, outcomes, extra) + "\n")
    else:
        if hygiene is not None:
            note = hygiene.summary()
        elif args.apply:
            note = "index hygiene: not run (--no-index-hygiene)"
        else:
            note = "index hygiene: runs with --apply (names of deleted tables with no data left leave the index)"
        sys.stdout.write(render_text(plan, outcomes, [note]))
    if outcomes is not None and any(o.status != "done" for o in outcomes):
        return 1
    if hygiene is not None and hygiene.error:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
