"""The ``sqzdse`` command line: every flag and command function lives in this package; the library takes typed
arguments and returns values. One module per command group; heavy libraries are imported when a command runs.

Errors: the project's own (``sqzdse.errors.SqzdseError``) and a missing input file print one line and exit 2;
anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from sqzdse import __version__
from sqzdse.cli import compress, export, model, plot, report, sweep, train
from sqzdse.errors import SqzdseError

COMMAND_GROUPS = (model, export, train, sweep, compress, plot, report)  # in the order of `sqzdse --help`


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sqzdse",
        description="Design-space exploration of SqueezeNet's Fire-module metaparameters (Iandola et al. 2016).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return p


class _Stderr(logging.Handler):
    """A library message as one line on the current ``sys.stderr``: progress as it is, a warning prefixed as the
    CLI's own lines are."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            sys.stderr.write(f"sqzdse: {msg}\n" if record.levelno >= logging.WARNING else f"{msg}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def show_logs():
    """While a command runs: the library's messages (``logging.getLogger("sqzdse")``, INFO and above) on stderr."""
    logger, handler = logging.getLogger("sqzdse"), _Stderr()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one line each, whatever handlers the root logger has
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with show_logs():
        return _run(args)


def _output_folder(output: str | None) -> None:
    """Every command's -o FILE: its folder is made before any work, or the command refuses in one line."""
    folder = os.path.dirname(output) if output else ""
    if folder and os.path.exists(folder) and not os.path.isdir(folder):
        raise SqzdseError(f"-o {output}: {folder} is a file, not a folder")
    if folder and not os.path.isdir(folder):
        try:
            os.makedirs(folder)
        except OSError as e:
            raise SqzdseError(f"-o {output}: cannot make its folder {folder} ({e.strerror})") from None


def _run(args) -> int:
    from sqzdse.runtime import Interrupted, backend_initialized, configure_cpu, parse_cpus

    try:
        _output_folder(getattr(args, "output", None))
        if not backend_initialized():  # XLA:CPU flags and malloc settings must precede JAX's backend
            cpus = os.environ.get("SQZDSE_CPUS")  # set per worker by `sweep run --workers N`
            configure_cpu(cpus=parse_cpus(cpus) if cpus else None)  # what they buy: benchmarks/README.md
        return args.func(args)
    except (SqzdseError, FileNotFoundError) as e:
        print(f"sqzdse: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:  # a command that does not defer signals (sqzdse.runtime.deferred_signals)
        print("sqzdse: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except Interrupted as e:  # a deferred SIGINT/SIGTERM, acted on at a safe point (sqzdse.runtime)
        print(f"sqzdse: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `sqzdse ... | head` closed the pipe: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
