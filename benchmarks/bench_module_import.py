"""Benchmark: the time 3D Slicer spends importing the module file at start-up, in a stock Slicer's Python.

Each repeat starts a fresh interpreter with
``python -X importtime Testing/slicer_side/stock_slicer.py import``: only the packages Slicer ships (the
engine's own are refused by an import hook), Qt and the application stood in for, and what Slicer's own
``import slicer`` loads first (vtk, numpy, scipy) loaded before the module. The figure is
``-X importtime``'s cumulative microseconds of the ``Rad4XCNN`` entry: the module file and everything it
imports. The anchor, in the same run, is what the module file imported before it deferred its MRML and
result modules: those modules (``bridge``, ``masks``, ``tables``, ``plots``, ``overlays``, ``mapviews``,
``results``) imported after the same start-up imports in this (full) environment, pandas included.

    python benchmarks/bench_module_import.py               # 7 repeats, median
    python benchmarks/bench_module_import.py --repeats 15
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "Testing" / "slicer_side" / "stock_slicer.py"
DEFERRED = ("bridge", "masks", "tables", "plots", "overlays", "mapviews", "results")


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # Slicer's build compiles the module's .pyc files
    return env


def _cumulative_us(stderr: str, name: str) -> int:
    """``-X importtime``'s cumulative microseconds of the top-level entry ``name``."""
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$", line)
        if match and match.group(3) == name and not match.group(2):
            return int(match.group(1))
    raise RuntimeError(f"no import time for {name}:\n{stderr[-2000:]}")


def module_import_seconds() -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(HELPER), "import"],
        capture_output=True,
        text=True,
        env=_environment(),
        check=True,
    )
    return _cumulative_us(done.stderr, "Rad4XCNN") / 1e6


def deferred_import_seconds() -> float:
    """The anchor: the MRML and result modules, after the same start-up imports, in this environment
    (timed with ``time.perf_counter`` around their import in a fresh interpreter)."""
    code = (
        "import sys, time, numpy, scipy.linalg, vtk, slicer\n"
        f"sys.path[:0] = [{str(ROOT / 'Rad4XCNN')!r}, {str(ROOT)!r}]\n"
        "start = time.perf_counter()\n"
        f"from Rad4XCNNLib import {', '.join(DEFERRED)}\n"
        "print(time.perf_counter() - start)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_environment(), check=True
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    module_import_seconds()  # warm-up: writes the .pyc files, fills the disk cache
    deferred_import_seconds()
    module = [module_import_seconds() for _ in range(args.repeats)]
    deferred = [deferred_import_seconds() for _ in range(args.repeats)]
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"module import in a stock Slicer's Python: median {statistics.median(module):.3f} s "
        f"(min {min(module):.3f}, max {max(module):.3f}; {args.repeats} runs; target <= 0.5 s)"
    )
    print(
        f"anchor, the deferred MRML and result modules: median {statistics.median(deferred):.3f} s "
        f"(min {min(deferred):.3f}, max {max(deferred):.3f})"
    )


if __name__ == "__main__":
    main()
