"""How a setting is declared and checked: :func:`option` states a setting's default, help and rule
(choices, an :class:`~Rad4XCNNLogic.infra.interval.Interval`, or a check) on a field of a section
dataclass, and :func:`build` turns a plain mapping (a YAML section, flags, a Slicer parameter node) into
that dataclass, failing with one line that names the key and what is allowed.

Each subpackage declares its own section in a light ``settings.py`` (``explain/settings.py``,
``cam/settings.py``, ...) with this module; :mod:`Rad4XCNNLogic.run.config` composes them. Nothing here
imports numpy, pandas or PyYAML, so the command line's help and the Slicer panel read the rules cheaply.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from Rad4XCNNLogic.errors import Rad4XCNNError, UsageError
from Rad4XCNNLogic.infra.interval import Interval

#: [0, 1] and (0, 1): the ranges of shares and probabilities.
UNIT = Interval(0, 1)
UNIT_OPEN = Interval(0, 1, low_open=True, high_open=True)


def option(
    default: Any,
    help: str,
    choices: tuple | None = None,
    minimum: float | None = None,
    interval: Interval | None = None,
    check: typing.Callable[[Any], str | None] | None = None,
    normalise: typing.Callable[[Any], Any] | None = None,
) -> Any:
    """A setting: its default, its help, and its rule (choices, an interval, or a check that returns the
    problem with a value); ``normalise`` maps other spellings of a value to the one the rule names. This
    metadata is the only statement of the rule: the configuration file, the command line
    (:mod:`Rad4XCNNLogic.cli`) and the Slicer parameter node all read it."""
    if minimum is not None:
        interval = Interval(minimum)
    meta = {"help": help, "choices": choices, "interval": interval, "check": check, "normalise": normalise}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A field holding a whole section (a settings dataclass), with its one-line help."""
    return field(default_factory=cls, metadata={"help": help})


def fail(key: str, problem: str) -> typing.NoReturn:
    """Refuse a setting: ``configuration: KEY: PROBLEM``."""
    raise UsageError(f"configuration: {key}: {problem}")


def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}.get(tp, str(tp))


def coerce(key: str, value: Any, tp: Any, meta: dict) -> Any:
    """``value`` converted to type ``tp`` and checked by the rule in ``meta`` (an :func:`option`'s)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return coerce(key, value, non_null[0], meta)
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        (item_tp,) = args
        return [coerce(f"{key}[{i}]", v, item_tp, meta) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if value is None:
        fail(key, f"must be {_type_name(tp)}, not empty")
    value = _scalar(key, value, tp)
    if meta.get("normalise") is not None:
        value = meta["normalise"](value)
    choices = meta.get("choices")
    if choices and value not in choices:
        fail(key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, choices))}")
    interval = meta.get("interval")
    problem = interval.problem(value) if interval is not None else None
    if problem is None and meta.get("check") is not None:
        problem = meta["check"](value)
    if problem:
        fail(key, problem)
    return value


def _scalar(key: str, value: Any, tp: Any) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            fail(key, f"must be true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, f"must be a whole number, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, f"must be a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            fail(key, f"must be a text, got {value!r}")
        value = str(value)
    return value


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """The section ``cls`` from a mapping of its keys (missing keys take their defaults); a wrong key or
    value fails with one line naming it (``prefix`` is the section's dotted key)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(prefix or "configuration", f"must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        fail(where, f"unknown key; allowed keys{' in ' + prefix if prefix else ''}: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = coerce(key, value, hints[name], dict(fields[name].metadata))
    return cls(**kwargs)


def _without_null(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


@dataclass(frozen=True)
class Setting:
    """One setting, by its dotted key, with the metadata that states its rule."""

    key: str
    type: Any
    default: Any
    help: str
    choices: tuple | None
    interval: Interval | None
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def item_type(self) -> Any:
        """The scalar type of a value (of one item, for a list setting; None removed)."""
        tp = _without_null(self.type)
        if typing.get_origin(tp) is list:
            (tp,) = typing.get_args(tp)
        return tp

    @property
    def is_list(self) -> bool:
        return typing.get_origin(_without_null(self.type)) is list

    @property
    def nullable(self) -> bool:
        return typing.get_origin(self.type) in (typing.Union, types.UnionType)

    def validate(self, value: Any) -> Any:
        """``value`` converted and checked by the rule of this setting; :class:`Rad4XCNNError` names the key
        and the problem. For a list setting, ``value`` may be one item."""
        tp = self.item_type if self.is_list and not isinstance(value, list) else self.type
        return coerce(self.key, value, tp, dict(self.meta))


def lookup(root: type, key: str) -> Setting:
    """The setting ``key`` (dotted: ``explain.thresholds``, ``models.weights``) of the dataclass ``root``."""
    parts = key.split(".")
    owner: Any = root
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if part not in fields:
            raise KeyError(f"no setting {'.'.join(parts[: i + 1])!r}")
        tp = typing.get_type_hints(owner)[part]
        if i == len(parts) - 1:
            meta = dict(fields[part].metadata)
            default = getattr(owner(), part)
            return Setting(
                key, tp, default, meta.get("help", ""), meta.get("choices"), meta.get("interval"), meta
            )
        owner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
    raise KeyError(f"no setting {key!r}")


def check_section(section: Any, name: str, *, checked: tuple[str, ...] = ()) -> Any:
    """``section`` (a settings dataclass built in Python, not read from a file or flags) checked once
    against its options' rules; returns it. A bad value raises :class:`Rad4XCNNError` naming
    ``NAME.KEY`` and the problem, without the ``configuration:`` of a file's or a flag's error. A
    computation that takes its section whole calls this once, instead of restating the ranges.
    ``checked``: fields the computation checks itself (against a wider registry, e.g. CAM methods)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        if f.name in checked:
            continue
        value = getattr(section, f.name)
        if isinstance(value, tuple):  # a list written as a tuple in Python
            value = list(value)
        if dataclasses.is_dataclass(value):
            check_section(value, f"{name}.{f.name}")
            continue
        try:
            coerce(f"{name}.{f.name}", value, hints[f.name], dict(f.metadata))
        except UsageError as exc:
            raise Rad4XCNNError(str(exc).removeprefix("configuration: ")) from None
    return section
