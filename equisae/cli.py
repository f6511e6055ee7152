"""The ``equisae`` command: reproduce the notebooks and the book, run a sweep, check results.

Every failure is reported as one line on stderr naming the cause and the fix, with a non-zero
exit code (1 for a failure or a usage error, 130 for Ctrl-C); ``--debug`` shows the traceback
instead. After Ctrl-C nothing but the one line reaches the terminal: the stderr of the worker
processes (papermill kernels, Dask workers) is relayed through this process and dropped once
the interrupt arrives (:func:`quiet_interrupts`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import NoReturn

from equisae.modes import MODES

EXIT_USAGE = 1
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted (Ctrl-C): finished work is cached; rerun the same command to resume"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line naming the flag, exit code 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _parse_only(values: Sequence[str]) -> list[str]:
    """The notebook prefixes of the repeated, comma-separated ``--only`` options."""
    only = [part.strip() for item in values for part in item.split(",")]
    if values and not any(only):
        raise ValueError("--only got an empty name; give a notebook number such as --only 03")
    return [part for part in only if part]


def _reproduce(args: argparse.Namespace) -> int:
    from equisae.reproduce import reproduce

    only = _parse_only(args.only)
    runs = reproduce(args.mode, only=only, book=not args.no_book, device=args.device)
    total = sum(run.seconds for run in runs)
    print(f"ran {len(runs)} notebook(s) in {total:.1f} s ({args.mode} mode)")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from equisae.io import project_root
    from equisae.profile import profile_run, write_profile

    profile = profile_run(args.mode, artifacts=args.artifacts, results=args.results)
    out = Path(args.out) if args.out else project_root() / "benchmarks" / "results"
    json_path, md_path = write_profile(profile, out)
    walls = sum(nb["wall_s"] for nb in profile["notebooks"].values())
    print(
        f"profile of the {args.mode} run: {len(profile['notebooks'])} notebook(s), "
        f"{walls:.0f} s; wrote {md_path} and {json_path}"
    )
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from equisae.runner import check_scheduler, run_sweep, sweep_summary
    from equisae.sweeps import SWEEPS, sweep_jobs

    if args.name not in SWEEPS:
        known = ", ".join(sorted(SWEEPS))
        print(
            f"error: equisae sweep: argument name: unknown sweep {args.name!r}; known sweeps: "
            f"{known}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.scheduler and "://" in args.scheduler:
        check_scheduler(args.scheduler)  # fail fast, before building the jobs
    from equisae.device import use_device

    with use_device(args.device) as device:  # the workers inherit $EQUISAE_DEVICE
        jobs = sweep_jobs(args.name, args.mode)  # hashes include a device other than the CPU
        result = run_sweep(jobs, scheduler=args.scheduler or None)
    print(sweep_summary(result))
    _record_sweep(args.name, args.mode, result, device.type)
    return 1 if result.failures else 0


def _record_sweep(name: str, mode: str, result: object, device: str = "cpu") -> None:
    """``results/<mode>/run/sweep_<name>.json``: the counts and repairs of the last sweep."""
    from dataclasses import asdict

    from equisae.io import results_dir, write_json_atomic

    path = results_dir(mode) / "run" / f"sweep_{name}.json"
    write_json_atomic(
        path,
        {
            "sweep": name,
            "mode": mode,
            "device": device,
            "requested": len(result.jobs),
            "computed": len(result.computed),
            "cached": result.n_cached,
            "failed": len(result.failures),
            "repairs": [asdict(r) for r in result.repairs],
        },
    )


def _extended(args: argparse.Namespace) -> int:
    from equisae.runner import check_scheduler
    from equisae.sweeps.extended import run_extended

    if args.scheduler and "://" in args.scheduler:
        check_scheduler(args.scheduler)
    from equisae.device import use_device

    with use_device(args.device):
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


def _positive_int(text: str) -> int:
    """argparse type of ``--size``: a positive number of pixels (the rule of every source)."""
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a positive number of pixels, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {value}")
    return value


def _check_images_args(args: argparse.Namespace) -> None:
    """Validate ``equisae images`` flags before any data is read or any model trained."""
    from pathlib import Path

    from equisae.activation_cache import resolve_layer
    from equisae.models import get_spec

    if args.source != "digits":
        if args.path is None:
            raise ValueError(f"--source {args.source} needs a path (--path) to the files")
        path = Path(args.path)
        if args.source == "folder" and path.is_file():
            raise ValueError(f"--path {path} is a file; --source folder needs a folder")
    if args.study:
        from equisae.sources.pipeline import STUDY_MODELS

        models = STUDY_MODELS
    else:
        models = (args.model,)
    for model in models:
        try:
            get_spec(model)
        except KeyError as exc:
            raise KeyError(f"--model: {exc.args[0]}") from None
        try:
            resolve_layer(model, args.layer)
        except KeyError as exc:
            raise KeyError(f"--layer: {exc.args[0]}") from None


def _images(args: argparse.Namespace) -> int:
    from equisae.sources.pipeline import main_images
    from equisae.study import is_model_spec, main_study

    if is_model_spec(args.model) or args.checkpoint:
        main_study(args, args.model, args.checkpoint)
        return 0
    _check_images_args(args)
    try:
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
    except ValueError as exc:
        if "image_size" not in str(exc):
            raise
        # library messages name the argument; on the command line it is --size
        raise ValueError(str(exc).replace("image_size", "--size")) from exc
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from equisae.plots.gallery import main_gallery

    main_gallery(
        args.model,
        args.layer,
        args.sae,
        source=args.source,
        path=args.path,
        mode=args.mode,
        seed=args.seed,
        split=args.split,
        out=args.out,
        n_show=args.n_show,
    )
    return 0


def _device_argument(parser: argparse.ArgumentParser) -> None:
    from equisae.device import DEVICES

    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where models and SAEs train and evaluate: auto (default: cuda if torch sees a "
        "GPU, else mps, else cpu), cpu, cuda or mps; CPU results are bit-identical to the "
        "reference, other devices get their own cache entries",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``equisae`` command."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of a failure instead of a one-line error",
    )
    parser = _Parser(
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
    _device_argument(rep)
    rep.set_defaults(func=_reproduce)

    prf = sub.add_parser(
        "profile",
        help="seconds per phase and notebook of a run, from its artifacts and notebook times",
        parents=[debug],
    )
    prf.add_argument("--mode", choices=MODES, default="full")
    prf.add_argument(
        "--artifacts",
        default=None,
        metavar="DIR",
        help="the run's artifacts folder (default: ./artifacts or $EQUISAE_ARTIFACTS)",
    )
    prf.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help="the run's results folder (default: results/<mode> or $EQUISAE_RESULTS/<mode>)",
    )
    prf.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where profile_<mode>.md and .json go (default: benchmarks/results)",
    )
    prf.set_defaults(func=_profile)

    swp = sub.add_parser("sweep", help="run a named sweep without the notebooks", parents=[debug])
    swp.add_argument("name", help="the sweep: planted, frontier, probing, setting, ...")
    swp.add_argument("--mode", choices=MODES, default="full")
    swp.add_argument(
        "--scheduler",
        default=None,
        help="'serial', a Dask scheduler address tcp://host:port, or empty for a LocalCluster",
    )
    _device_argument(swp)
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
    _device_argument(ext)
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
    img.add_argument(
        "--size", type=_positive_int, default=None, help="resize images to SIZE x SIZE pixels"
    )
    img.add_argument("--quick", action="store_true", help="small, fast settings")
    img.add_argument("--out", default=None, help="output folder for summary.json")
    img.add_argument(
        "--model",
        default="cnn_augmented",
        help="a built-in base model name, your own model as module:callable, or a TorchScript file",
    )
    img.add_argument("--checkpoint", default=None, help="state-dict file loaded into --model")
    img.add_argument("--device", default=None, help="train/evaluate the SAEs there (e.g. cuda)")
    img.add_argument("--layer", default="bottleneck", help="layer role or module name")
    img.add_argument("--seed", type=int, default=0)
    img.add_argument(
        "--study",
        action="store_true",
        help="run notebook 07's study (3 base models, all SAE types, seeds) and write study.json",
    )
    img.set_defaults(func=_images)

    gal = sub.add_parser(
        "gallery", help="write the offline latent gallery of a saved SAE", parents=[debug]
    )
    gal.add_argument("--model", required=True, help="base model name")
    gal.add_argument("--layer", default="bottleneck", help="layer role or module name")
    gal.add_argument("--sae", required=True, help="folder of a saved SAE (save_sae)")
    gal.add_argument(
        "--source", choices=("shapes", "digits", "galaxy-mnist", "folder"), default="shapes"
    )
    gal.add_argument("--path", default=None, help="HDF5 file or folder (galaxy-mnist, folder)")
    gal.add_argument("--mode", choices=MODES, default="quick", help="data sizes (shapes)")
    gal.add_argument("--seed", type=int, default=0)
    gal.add_argument("--split", choices=("train", "val", "test"), default="test")
    gal.add_argument("--out", default=None, help="output folder of the page")
    gal.add_argument("--n-show", type=int, default=3, help="top orbits shown per latent")
    gal.set_defaults(func=_gallery)
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


class _Relay:
    """Relays what the children write to fd 2 to the real stderr, until an interrupt."""

    HOLD_S = 0.3  # a chunk waits this long, so a Ctrl-C arriving with it drops it

    def __init__(self, terminal_fd: int, read_fd: int) -> None:
        self.terminal_fd = terminal_fd
        self.read_fd = read_fd
        self.interrupted = threading.Event()
        self.terminal = open(terminal_fd, "w", buffering=1, closefd=False)  # noqa: SIM115
        self.thread = threading.Thread(target=self._pump, name="equisae-stderr", daemon=True)

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            if self.interrupted.wait(self.HOLD_S):
                continue  # after Ctrl-C: drain and drop
            with contextlib.suppress(OSError):
                os.write(self.terminal_fd, chunk)


@contextlib.contextmanager
def quiet_interrupts() -> Iterator[_Relay | None]:
    """Route fd 2 (inherited by kernels and Dask workers) through a relay that stops at Ctrl-C.

    This process keeps writing to the terminal through ``sys.stderr``; on SIGINT the relay
    drops whatever the children print while they die (asyncio, Dask and kernel tracebacks) and
    this process's later stderr is silenced once its one line is out (:func:`_say_interrupted`).
    Does nothing when stderr is not a real file descriptor (tests capture it).
    """
    try:
        std_fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        std_fd = -1
    if std_fd != 2 or threading.current_thread() is not threading.main_thread():
        yield None
        return
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    relay = _Relay(terminal_fd, read_fd)
    previous_stderr = sys.stderr
    sys.stderr = relay.terminal
    os.dup2(write_fd, 2)
    os.close(write_fd)
    relay.thread.start()

    def on_sigint(signum: int, frame: object) -> None:
        relay.interrupted.set()
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - what the unwinding prints is noise
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield relay
    finally:
        if relay.interrupted.is_set():  # a second Ctrl-C while unwinding: no second traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, previous_handler)
            sys.stderr.flush()
            os.dup2(terminal_fd, 2)  # our copy of the pipe's write end closes here
            relay.thread.join(timeout=2.0)
            sys.stderr = previous_stderr


def _say_interrupted(relay: _Relay | None) -> None:
    """Print the one line of Ctrl-C, then silence this process's stderr for good."""
    if relay is None:
        print(INTERRUPTED, file=sys.stderr, flush=True)
        return
    relay.interrupted.set()
    print(INTERRUPTED, file=relay.terminal, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equisae`` console script."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    guard = contextlib.nullcontext(None) if debug else quiet_interrupts()
    try:
        with guard as relay:
            try:
                return int(args.func(args))
            except KeyboardInterrupt:
                if debug:
                    raise
                _say_interrupted(relay)
                return EXIT_INTERRUPTED
            except Exception as exc:
                if debug:
                    raise
                print(
                    f"error: {one_line(exc)} (rerun with --debug for the traceback)",
                    file=sys.stderr,
                )
                return 1
    except KeyboardInterrupt:  # Ctrl-C while setting up or tearing down
        if debug:
            raise
        _say_interrupted(None)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
