"""The local package index of the install-plan resolver test (test_install_resolver.py), and how to fill it.

The test runs pip's own resolver on the module's install plan with ``--no-index --find-links`` on a folder
of wheels, so that it needs no network when it runs. ``make wheelhouse`` (called by ``make test312``, which
CI runs) fills the folder once with ``pip download`` from PyPI:

    python Testing/slicer_side/resolver_wheelhouse.py .wheelhouse/py312

It holds: the older Slicer-like base (numpy 1.26.4, scipy 1.13.1: what Slicer 5.8 shipped); everything the
plan's pip steps resolve to under that base's constraints; the ``--no-deps`` packages themselves; setuptools
and wheel (grad-cam is published as an sdist, whose metadata pip builds); and, for the control that shows
the test can fail, the newest opencv-python-headless with the numpy 2 it requires.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Rad4XCNN"))
from Rad4XCNNLib import dependencies

#: The Python the test builds: an older numpy, as in Slicer 5.8 (Slicer 5.10 ships numpy 2.0.2, scipy 1.13.1:
#: SuperBuild/External_python-numpy.cmake and External_python-scipy.cmake at v5.8.1 and v5.10.0).
BASE = ("numpy==1.26.4", "scipy==1.13.1")
#: Not in the pip plan of a Slicer with the extensions: torch and torchvision come from the PyTorch extension,
#: PyRadiomics from SlicerRadiomics (its sdist, pyradiomics-bhklab, would need a compiler to be resolved).
PROVIDED = {"numpy", "scipy", "SimpleITK", "torch", "torchvision", "radiomics"}
BUILD_BACKEND = ("setuptools", "wheel")
CONTROL = ("opencv-python-headless",)


def plan(system: str | None = None) -> dependencies.InstallPlan:
    """The module's install plan on a Slicer that has the PyTorch and SlicerRadiomics extensions and
    nothing else of the pipeline's packages."""
    missing = [r for r in dependencies.REQUIREMENTS if "pipeline" in r.groups and r.module not in PROVIDED]
    return dependencies.install_plan(missing, pytorch_extension=True, radiomics_extension=True, system=system)


def _pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", "download", "--quiet", *args], check=True)


def fill(out: str | Path, python: str = sys.executable) -> Path:
    """Download every wheel the resolver test needs for ``python``'s version into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    the_plan = plan()
    with tempfile.TemporaryDirectory() as scratch:
        constraints = Path(scratch) / "base.txt"
        constraints.write_text("\n".join(BASE) + "\n")
        _pip(python, "-d", str(out), *BASE)
        for step in the_plan.steps:
            if step.no_deps:
                _pip(python, "-d", str(out), "--no-deps", *step.requirements)
            else:
                _pip(python, "-d", str(out), "-c", str(constraints), *step.requirements)
        _pip(python, "-d", str(out), *BUILD_BACKEND)
        _pip(python, "-d", str(out), *CONTROL)
    (out / "COMPLETE").write_text("filled by Testing/slicer_side/resolver_wheelhouse.py\n")
    return out


if __name__ == "__main__":
    print(fill(sys.argv[1]))
