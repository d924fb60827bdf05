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
    """Iterate with a progress bar (tqdm on stderr) or progress events; silent when ``enabled`` is False.

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
    if machine_readable():
        name = stage or desc
        last = 0.0
        emit("progress", name, done=0, total=total, message=desc)
        for done, item in enumerate(iterable, start=1):
            yield item
            now = time.monotonic()
            if now - last >= _MIN_INTERVAL_S or done == total:
                emit("progress", name, done=done, total=total, message=desc)
                last = now
        return
    from tqdm.auto import tqdm

    yield from tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None,
    )
