"""Command-line options derived from the run configuration's metadata: a flag that sets a setting takes its
type, range, choices and help from :mod:`Rad4XCNNLogic.run.config`, so the command line enforces exactly
what a configuration file does. Also the options shared by many commands (parent parsers).
"""

from __future__ import annotations

import argparse
from typing import Any

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.config import load_config, merge_settings, setting

#: Prefix of the argparse destinations that hold a setting (``cfg__explain__thresholds``).
PREFIX = "cfg__"
_NULL = {"none", "null", "off"}


class _Null:
    """``none`` given on the command line, told apart from a flag left out (argparse's None)."""

    def __repr__(self) -> str:
        return "none"


NULL = _Null()


def setting_dest(key: str) -> str:
    """The argparse destination that holds setting ``key``."""
    return PREFIX + key.replace(".", "__")


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def setting_type(key: str, *, comma: bool = False):
    """An argparse ``type`` that reads one value of setting ``key`` and checks it by the setting's rule
    (``none`` gives None where the setting may be null; with ``comma``, a comma-separated list, and
    ``none`` the empty one)."""
    s = setting(key)
    convert = {int: int, float: float, str: str}[s.item_type]

    def parse_one(text: str) -> Any:
        if s.nullable and text.strip().lower() in _NULL:
            return NULL
        try:
            value = convert(text)
        except ValueError:
            kind = {int: "a whole number", float: "a number"}[s.item_type]
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return s.validate(value)
        except Rad4XCNNError as exc:  # "configuration: key: problem" -> "problem"
            raise argparse.ArgumentTypeError(str(exc).split(": ", 2)[-1]) from None

    def parse(text: str) -> Any:
        if comma and s.is_list and text.strip().lower() in _NULL:
            return []  # 'none': the empty list
        if comma:
            return [parse_one(part.strip()) for part in text.split(",") if part.strip()]
        return parse_one(text)

    parse.__name__ = key  # argparse names the type in its messages
    return parse


def add_setting(parser, key: str, *flags: str, help: str | None = None, comma: bool = False, **kwargs):
    """Add a flag that sets configuration setting ``key``; its default stays the configuration's.

    List settings repeat the flag (``-M 0.6 -M 0.8``) unless ``nargs`` or ``comma`` is given.
    """
    s = setting(key)
    text = help or s.help
    if s.choices:
        text += f"; one of {', '.join(map(str, s.choices))}"
    if s.interval is not None:
        text += f"; {s.interval}"
    text += f" (default: {_describe(s.default)})"
    text = text.replace("%", "%%")  # argparse formats help with %
    if s.item_type is bool and not s.is_list:
        return parser.add_argument(
            *flags, dest=setting_dest(key), action=argparse.BooleanOptionalAction, default=None, help=text
        )
    kwargs.setdefault("type", setting_type(key, comma=comma))
    if s.is_list and not comma and "nargs" not in kwargs:
        kwargs.setdefault("action", "append")
    metavar = kwargs.pop("metavar", None) or flags[-1].lstrip("-").upper().replace("-", "_")
    return parser.add_argument(
        *flags, dest=setting_dest(key), default=None, metavar=metavar, help=text, **kwargs
    )


def settings_from_args(args: argparse.Namespace) -> dict:
    """The nested configuration overrides given on the command line (flags left out are absent)."""
    overrides: dict = {}
    for dest, value in vars(args).items():
        if not dest.startswith(PREFIX) or value is None:
            continue
        *sections, name = dest[len(PREFIX) :].split("__")
        node = overrides
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = None if value is NULL else value
    return overrides


def config_from_args(args: argparse.Namespace, path=None, extra: dict | None = None):
    """The run configuration of a command: the file ``path`` (if any), then ``extra``, then the flags."""
    return load_config(path, merge_settings(extra or {}, settings_from_args(args)))


def parents() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers of the options many commands share: ``seed``, ``device``, ``progress``, ``normal``."""
    seed = argparse.ArgumentParser(add_help=False)
    add_setting(seed, "seed", "--seed")
    device = argparse.ArgumentParser(add_help=False)
    add_setting(device, "device", "--device")
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument("--no-progress", action="store_true", help="no progress bar")
    normal = argparse.ArgumentParser(add_help=False)
    normal.add_argument(
        "--include-normal",
        dest=setting_dest("lesion_only"),
        action="store_const",
        const=False,
        default=None,
        help="keep cases without a lesion (has_lesion=false; the whole image is the crop)",
    )
    return {"seed": seed, "device": device, "progress": progress, "normal": normal}


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: not with ``--no-progress`` or ``--quiet``."""
    return not getattr(args, "no_progress", False) and args.verbosity >= 0


def print_failures(failures, what: str) -> None:
    """List the cases left out of ``what``, one line each."""
    if failures:
        print(f"{len(failures)} case(s) left out of {what}:")
        for failure in failures:
            print(f"  {failure}")


def value(args: argparse.Namespace, key: str) -> Any:
    """Setting ``key`` as given on the command line, else its configured default."""
    given = getattr(args, setting_dest(key), None)
    if given is NULL:
        return None
    return setting(key).default if given is None else given


def given(args: argparse.Namespace, key: str) -> bool:
    """Whether setting ``key`` was given on the command line."""
    return getattr(args, setting_dest(key), None) is not None
