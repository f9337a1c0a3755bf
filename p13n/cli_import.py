"""``p13n import``: convert a public dataset into p13n's JSONL contracts (see :mod:`p13n.importers`).

Errors are one line and exit 2: a missing directory or file, a wrong header; rows that cannot
be converted are listed as ``FILE:LINE: reason`` (the first 20), the others are still written,
and the command exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p13n.errors import InputError

__all__ = ["add_import_parser"]

MAX_LISTED = 20


def add_import_parser(sub) -> None:
    """Add ``import movielens DIR OUT`` to the subcommands ``sub`` of the p13n parser."""
    importer = sub.add_parser("import", help="convert a public dataset into items.jsonl + events.jsonl")
    kinds = importer.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    movielens = kinds.add_parser("movielens", help="MovieLens (movies.csv, ratings.csv) -> rating events and items")
    movielens.add_argument("directory", type=Path, metavar="DIR", help="MovieLens directory (e.g. ml-latest-small)")
    movielens.add_argument("out", type=Path, metavar="OUT", help="directory to write items.jsonl and events.jsonl to")
    movielens.add_argument("--tenant", default="default", help="tenant of every record (default: default)")
    movielens.set_defaults(handler=_import_movielens)


def _import_movielens(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from p13n.importers import import_movielens

    if not args.directory.is_dir():
        raise InputError(f"no such directory: {args.directory}")
    console = Console(highlight=False, soft_wrap=True, stderr=True)
    columns = (TextColumn("importing {task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total)
            progress.update(tasks[step], completed=done)

        report = import_movielens(args.directory, args.out, tenant=args.tenant, progress=update)
    for name, line, reason in report.bad_rows[:MAX_LISTED]:
        print(f"{args.directory / name}:{line}: {reason}", file=sys.stderr)
    if len(report.bad_rows) > MAX_LISTED:
        print(f"… and {len(report.bad_rows) - MAX_LISTED} more bad rows", file=sys.stderr)
    print(f"wrote {report.items:,} items to {args.out / 'items.jsonl'} and {report.events:,} rating events of "
          f"{report.users:,} users to {args.out / 'events.jsonl'} in {report.seconds:.1f}s")  # fmt: skip
    if report.bad_rows:
        raise InputError(f"{len(report.bad_rows)} rows of {args.directory} could not be converted (listed above)")
    return 0
