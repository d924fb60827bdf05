"""Progress reporting shared by every stage: tqdm bars for people, or JSON lines for a parent process.

When the environment variable ``RAD4XCNN_PROGRESS`` is ``jsonl`` (the 3D Slicer module sets it for its
background process), progress is written to stdout as lines ``@rad4xcnn {json}`` instead of bars, with
the fields ``event`` (``stage-start``, ``progress``, ``stage-end``, ``message``), ``stage``, ``done``,
``total`` and ``message``; :func:`parse_progress_line` reads them back.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
PREFIX = "@rad4xcnn "
ENV = "RAD4XCNN_PROGRESS"
_MIN_INTERVAL_S = 0.2


def machine_readable() -> bool:
    """True when progress goes to a parent process as JSON lines."""
    return os.environ.get(ENV, "").lower() == "jsonl"


def emit(event: str, stage: str, **fields: Any) -> None:
    """Write one progress event as a JSON line (only in machine-readable mode)."""
    if not machine_readable():
        return
    record = {"event": event, "stage": stage, **fields}
    sys.stdout.write(PREFIX + json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_progress_line(line: str) -> dict | None:
    """The event of a ``@rad4xcnn {...}`` line, or None for any other line."""
    if not line.startswith(PREFIX):
        return None
    try:
        record = json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


def track(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    stage: str = "",
    enabled: bool = True,
    unit: str = "case",
) -> Iterator[T]:
    """Iterate with a :class:`ProgressBar` (tqdm on stderr, or progress events); silent when not ``enabled``.

    Examples
    --------
    >>> for case in track(cases, total=len(cases), desc="radiomics", stage="radiomics"):  # doctest: +SKIP
    ...     work(case)
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not enabled:
        yield from iterable
        return
    with ProgressBar(total, desc=desc, stage=stage, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)


class ProgressBar:
    """A manually advanced progress bar: tqdm on stderr for people, progress events in JSON-lines mode.

    Use it where the work is not a plain loop over items (batches, epochs, chunks); :func:`track` wraps an
    iterable. tqdm stays silent when stderr is not a terminal, so logs and CI output hold no bar lines.

    Examples
    --------
    >>> with ProgressBar(total=100, desc="rho", stage="explain") as bar:  # doctest: +SKIP
    ...     bar.update(10)
    ...     bar.set_postfix(loss="0.41")
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "",
        stage: str = "",
        enabled: bool = True,
        unit: str = "it",
        delay: float = 0.0,
    ):
        self.total = total
        self.desc = desc
        self.stage = stage or desc
        self.done = 0
        self.postfix = ""
        self._last = 0.0
        self._bar = None
        self._events = enabled and machine_readable()
        if enabled and not self._events:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,
                delay=delay,
            )
        if self._events:
            emit("progress", self.stage, done=0, total=total, message=desc)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._events:
            now = time.monotonic()
            if now - self._last >= _MIN_INTERVAL_S or self.done == self.total:
                self._last = now
                message = f"{self.desc} {self.postfix}".strip()
                emit("progress", self.stage, done=self.done, total=self.total, message=message)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(**values)
        if self._events:
            emit(
                "progress",
                self.stage,
                done=self.done,
                total=self.total,
                message=f"{self.desc} {self.postfix}",
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
