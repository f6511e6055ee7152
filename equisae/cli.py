"""The ``equisae`` command: reproduce the notebooks and the book, run a sweep, check results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

MODES = ("quick", "full")


def _reproduce(args: argparse.Namespace) -> int:
    from equisae.reproduce import NotebookFailed, reproduce

    only = [part for item in args.only for part in item.split(",") if part]
    try:
        runs = reproduce(args.mode, only=only, book=not args.no_book)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(run.seconds for run in runs)
    print(f"ran {len(runs)} notebook(s) in {total:.1f} s ({args.mode} mode)")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from equisae.experiments import SWEEPS
    from equisae.runner import run_sweep, sweep_summary

    if args.name not in SWEEPS:
        known = ", ".join(sorted(SWEEPS))
        print(f"error: unknown sweep {args.name!r}; known sweeps: {known}", file=sys.stderr)
        return 2
    jobs = SWEEPS[args.name](args.mode)
    result = run_sweep(jobs, scheduler=args.scheduler)
    print(sweep_summary(result))
    return 1 if result.failures else 0


def _check(args: argparse.Namespace) -> int:
    from equisae import check

    if args.publish:
        path = check.publish_reference(args.mode)
        print(f"published results/{args.mode} as the reference in {path}")
        return 0
    return check.main_check(args.mode)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``equisae`` command."""
    parser = argparse.ArgumentParser(
        prog="equisae", description="Equivariant sparse autoencoders: reproduce the companion."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run the notebooks with papermill and build the book")
    rep.add_argument("--mode", choices=MODES, default="full")
    rep.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NN",
        help="run only the notebooks whose names start with NN (repeat or comma-separate)",
    )
    rep.add_argument("--no-book", action="store_true", help="skip the book build")
    rep.set_defaults(func=_reproduce)

    swp = sub.add_parser("sweep", help="run a named sweep without the notebooks")
    swp.add_argument("name", help="the sweep: planted, frontier or probing")
    swp.add_argument("--mode", choices=MODES, default="full")
    swp.add_argument(
        "--scheduler",
        default=None,
        help="'serial', a Dask scheduler address tcp://host:port, or empty for a LocalCluster",
    )
    swp.set_defaults(func=_sweep)

    chk = sub.add_parser("check", help="compare results/<mode> with the committed reference")
    chk.add_argument("--mode", choices=MODES, default="full")
    chk.add_argument(
        "--publish", action="store_true", help="copy results/<mode> over the committed reference"
    )
    chk.set_defaults(func=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equisae`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
