"""What the machine offers and what is installed: usable cores, the CPU's name, package versions, devices.

Recorded in ``run.json`` and in the benchmarks' output, and used to size worker pools.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

#: The packages whose versions a run records (distribution names). PyRadiomics is recorded under both of
#: its distributions (PyPI's fork pyradiomics-bhklab, or pyradiomics as SlicerRadiomics builds it), and
#: under "radiomics" as the imported module reports it.
RECORDED_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "SimpleITK",
    "pyradiomics-bhklab",
    "pyradiomics",
    "PyWavelets",
    "torch",
    "torchvision",
    "timm",
    "monai",
    "scikit-learn",
    "xgboost",
    "grad-cam",
    "matplotlib",
    "jinja2",
)


def available_cpus() -> int:
    """Cores this process may use (respects CPU affinity, e.g. under Slurm or taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cpu_name() -> str:
    """The processor's model name (``lscpu``'s "Model name" on Linux)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def package_versions(names: Iterable[str] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for a package that is not installed), with Python's."""
    from importlib.metadata import PackageNotFoundError, version

    from Rad4XCNNLogic import __version__

    found: dict[str, str | None] = {"rad4xcnn": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    radiomics = sys.modules.get("radiomics")  # only when a stage imported it: the import is slow
    if radiomics is not None:
        found["radiomics"] = str(getattr(radiomics, "__version__", "")).lstrip("v") or None
    return found


def device_info(requested: str = "auto") -> dict[str, Any]:
    """The machine a run used: platform, CPU, cores and, when torch sees one, the GPU."""
    info: dict[str, Any] = {
        "requested": requested,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpus": available_cpus(),
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
