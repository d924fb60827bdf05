"""The ``rad4xcnn`` command line: one sub-command per pipeline stage (each runs that stage's work, as
``rad4xcnn run`` does), the whole pipeline, and the cohort tools. It prints for people.

Each command's flags live next to its handler (``cli/<part>.py``); a flag that sets a configuration setting
takes its type, range and help from the configuration's metadata (:mod:`Rad4XCNNLogic.cli.options`). Heavy
libraries are imported inside each command, so ``rad4xcnn --help`` stays fast and works before they are
installed. Errors print as one line (no traceback unless ``--verbose``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.errors import Rad4XCNNError, UsageError, first_line

#: Exit codes, as ``rad4xcnn --help`` states them.
EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """exit codes:
  0    done
  1    failed: bad input data, a failed stage, a missing package or an internal error (one line says which)
  2    usage: an unknown command, flag, configuration key or value
  130  interrupted (Ctrl+C)"""


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbosity > 0 else "%(message)s"))
    root = logging.getLogger("Rad4XCNNLogic")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (the usage itself is in ``--help``)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``rad4xcnn`` parser with every sub-command."""
    from Rad4XCNNLogic.cli import (
        cam,
        classify,
        cohort,
        explain,
        featuremaps,
        features,
        options,
        probe,
        run,
        stagecmd,
    )

    parser = _Parser(
        prog="rad4xcnn",
        description="Explain a CNN's deep features through radiomic features (Rad4XCNN, Prinzi et al. 2024).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rad4xcnn {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        dest="verbosity",
        default=0,
        help="more detail, and a traceback on unexpected errors",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_const", const=-1, dest="verbosity", help="only warnings and errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    shared = options.parents()
    for part in (cohort, probe, cam, featuremaps, run):
        part.register(sub, shared)
    # the stage commands made from the stage records (docs/ARCHITECTURE.md, "Stages")
    commands = [features.TRAIN, features.DEEP, features.RADIOMICS, explain.COMMAND, classify.COMMAND]
    stagecmd.register(sub, shared, [*commands, cam.COMMAND])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rad4xcnn`` with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"rad4xcnn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Rad4XCNNError as exc:
        print(f"rad4xcnn: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rad4xcnn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        if args.verbosity > 0:
            raise
        name = getattr(exc, "name", None) or str(exc)
        print(
            f"rad4xcnn: error: a required package is not installed ({name}); "
            "install the extras with: pip install 'rad4xcnn[all]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except Exception as exc:
        if args.verbosity > 0:
            raise
        print(
            f"rad4xcnn: internal error: {type(exc).__name__}: {first_line(exc)} "
            "(run with --verbose for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED
