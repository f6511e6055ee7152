"""The ``equisae`` command: reproduce the notebooks and the book, run a sweep, check results.

Every failure is reported as one line on stderr naming the cause and the fix, with a non-zero
exit code (1 for a failure, 130 for Ctrl-C); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

MODES = ("quick", "full")
EXIT_INTERRUPTED = 130


def _parse_only(values: Sequence[str]) -> list[str]:
    """The notebook prefixes of the repeated, comma-separated ``--only`` options."""
    only = [part.strip() for item in values for part in item.split(",")]
    if values and not any(only):
        raise ValueError("--only got an empty name; give a notebook number such as --only 03")
    return [part for part in only if part]


def _reproduce(args: argparse.Namespace) -> int:
    from equisae.reproduce import reproduce

    only = _parse_only(args.only)
    runs = reproduce(args.mode, only=only, book=not args.no_book)
    total = sum(run.seconds for run in runs)
    print(f"ran {len(runs)} notebook(s) in {total:.1f} s ({args.mode} mode)")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from equisae.runner import check_scheduler, run_sweep, sweep_summary
    from equisae.sweeps import SWEEPS, sweep_jobs

    if args.name not in SWEEPS:
        known = ", ".join(sorted(SWEEPS))
        print(f"error: unknown sweep {args.name!r}; known sweeps: {known}", file=sys.stderr)
        return 2
    if args.scheduler and "://" in args.scheduler:
        check_scheduler(args.scheduler)  # fail fast, before building the jobs
    jobs = sweep_jobs(args.name, args.mode)
    result = run_sweep(jobs, scheduler=args.scheduler or None)
    print(sweep_summary(result))
    return 1 if result.failures else 0


def _extended(args: argparse.Namespace) -> int:
    from equisae.runner import check_scheduler
    from equisae.sweeps.extended import run_extended

    if args.scheduler and "://" in args.scheduler:
        check_scheduler(args.scheduler)
    path = run_extended(args.mode, scheduler=args.scheduler or None, publish=args.publish)
    print(f"extended sweep ({args.mode} mode): verdicts written to {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from equisae import check

    if args.publish:
        path = check.publish_reference(args.mode)
        print(f"published results/{args.mode} as the reference in {path}")
        return 0
    return check.main_check(args.mode, run_dir=args.results, use_envelope=not args.no_envelope)


def _envelope(args: argparse.Namespace) -> int:
    from equisae.envelope import main_envelope

    return main_envelope(
        args.mode,
        workdir=args.workdir,
        names=args.env or None,
        reuse=args.reuse,
        publish=args.publish,
    )


def _images(args: argparse.Namespace) -> int:
    from equisae.sources.pipeline import main_images

    main_images(
        args.source,
        args.path,
        args.size,
        args.quick,
        args.out,
        args.model,
        args.layer,
        args.seed,
        study=args.study,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``equisae`` command."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of a failure instead of a one-line error",
    )
    parser = argparse.ArgumentParser(
        prog="equisae",
        description="Equivariant sparse autoencoders: reproduce the companion.",
        parents=[debug],
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser(
        "reproduce", help="run the notebooks with papermill and build the book", parents=[debug]
    )
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

    swp = sub.add_parser("sweep", help="run a named sweep without the notebooks", parents=[debug])
    swp.add_argument("name", help="the sweep: planted, frontier, probing, setting, ...")
    swp.add_argument("--mode", choices=MODES, default="full")
    swp.add_argument(
        "--scheduler",
        default=None,
        help="'serial', a Dask scheduler address tcp://host:port, or empty for a LocalCluster",
    )
    swp.set_defaults(func=_sweep)

    ext = sub.add_parser(
        "extended",
        help="run the layers outside the published grid (intermediate layers) and their verdicts",
        parents=[debug],
    )
    ext.add_argument("--mode", choices=MODES, default="full")
    ext.add_argument(
        "--scheduler",
        default=None,
        help="'serial', a Dask scheduler address tcp://host:port, or empty for a LocalCluster",
    )
    ext.add_argument(
        "--publish", action="store_true", help="also write reference/extended/ (full mode)"
    )
    ext.set_defaults(func=_extended)

    chk = sub.add_parser(
        "check", help="compare results/<mode> with the committed reference", parents=[debug]
    )
    chk.add_argument("--mode", choices=MODES, default="full")
    chk.add_argument(
        "--publish", action="store_true", help="copy results/<mode> over the committed reference"
    )
    chk.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help="the run's results folder to check (default: results/<mode> or $EQUISAE_RESULTS/<mode>)",
    )
    chk.add_argument(
        "--no-envelope",
        action="store_true",
        help="ignore reference/<mode>/envelope.json and judge by the fixed tolerances only",
    )
    chk.set_defaults(func=_check)

    env = sub.add_parser(
        "envelope",
        help="rerun the reproduction under several numeric environments and write "
        "reference/<mode>/envelope.json",
        parents=[debug],
    )
    env.add_argument("--mode", choices=MODES, default="quick")
    env.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="where the runs' results and artifacts go (default: _build/envelope)",
    )
    env.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this numeric environment (repeatable; default: all of them)",
    )
    env.add_argument(
        "--reuse", action="store_true", help="keep runs whose results folder is already complete"
    )
    env.add_argument(
        "--publish",
        action="store_true",
        help="first publish the native run's results as reference/<mode> (then build the envelope)",
    )
    env.set_defaults(func=_envelope)

    img = sub.add_parser(
        "images",
        help="run the pipeline (base model, fit of M, SAEs, probes) on real images",
        parents=[debug],
    )
    img.add_argument("--source", choices=("digits", "galaxy-mnist", "folder"), required=True)
    img.add_argument("--path", default=None, help="HDF5 file or folder (not needed for digits)")
    img.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE pixels")
    img.add_argument("--quick", action="store_true", help="small, fast settings")
    img.add_argument("--out", default=None, help="output folder for summary.json")
    img.add_argument("--model", default="cnn_augmented", help="base model name")
    img.add_argument("--layer", default="bottleneck", help="layer role or module name")
    img.add_argument("--seed", type=int, default=0)
    img.add_argument(
        "--study",
        action="store_true",
        help="run notebook 07's study (3 base models, all SAE types, seeds) and write study.json",
    )
    img.set_defaults(func=_images)
    return parser


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: its message (KeyError unquoted), newlines folded."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    known = (ValueError, KeyError, FileNotFoundError, ConnectionError, RuntimeError)
    if not isinstance(exc, known):
        text = f"{type(exc).__name__}: {text}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equisae`` console script."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print(
            "interrupted (Ctrl-C): finished work is cached; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
