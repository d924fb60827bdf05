"""The module loads in a stock 3D Slicer: with only the packages Slicer ships (pandas, PyYAML, torch,
torchvision, timm, scikit-learn, xgboost, PyRadiomics, matplotlib, Jinja2 and their kin refused by an import
hook), Rad4XCNN.py imports, the module and its parameters are built, and the default self-test runs what
needs no engine package and says why it skips the rest. Run in a fresh interpreter (stock_slicer.py), so
that the hook and the stand-ins for Qt never touch this test session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import slicer  # noqa: F401  a missing slicer-core must fail loudly, not skip

HELPER = Path(__file__).with_name("stock_slicer.py")


def _stock(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(HELPER), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_module_loads_and_self_tests_with_only_what_slicer_ships(tmp_path):
    report = _stock("selftest", str(tmp_path))
    assert report["unsupported"] is None and report["title"] == "Rad4XCNN"
    assert report["refused_loaded"] == []  # nothing refused was imported, not even by a fallback
    outcomes = dict(report["outcomes"])
    # what needs only Slicer's packages ran (each scenario checks its own result)
    assert outcomes["a case in the scene"].endswith("image and segmentation paired")
    assert outcomes["CAM overlay"] == "synthetic case CAM"
    assert outcomes["parameter node"].startswith("defaults, a kept value, bad values refused")
    assert outcomes["close the scene"] == "the CAM colours are there again"
    # the rest says what it needs
    for name in ("synthetic cohort", "export the mask", "run a small correlation"):
        assert outcomes[name].startswith("skipped: needs pandas, pyyaml"), outcomes[name]


def test_loading_the_module_brings_no_numpy_of_its_own():
    """At Slicer's start only the module file and its light helpers load (vtk, numpy and scipy are Slicer's
    own start-up); the MRML and result modules wait until the panel is shown or a run needs them."""
    report = _stock("import")
    assert report["refused_loaded"] == []
    modules = set(report["rad4xcnnlib_loaded"])
    assert not modules & {"bridge", "masks", "tables", "plots", "overlays", "mapviews", "results"}, modules
