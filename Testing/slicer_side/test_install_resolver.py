"""pip's own resolver on the module's install plan, against a real virtual environment with an older numpy.

The plan is carried out by :func:`Rad4XCNNLib.dependencies.run_plan` exactly as in Slicer, except that each
``pip install`` runs with ``--dry-run --report`` in the test environment, offline, on the local wheelhouse of
``resolver_wheelhouse.py`` (``make wheelhouse``). Without that folder the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
import venv
from pathlib import Path

import pytest
from Rad4XCNNLib import dependencies as deps

ROOT = Path(__file__).resolve().parents[2]


def _load_wheelhouse_module():
    # by path: slicer-core's "slicer" package also imports every module of a folder named "slicer" on
    # sys.path (this one, under pytest), before this folder itself is on sys.path
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "resolver_wheelhouse", Path(__file__).with_name("resolver_wheelhouse.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheelhouse = _load_wheelhouse_module()
FOLDER = Path(
    os.environ.get(
        "RAD4XCNN_WHEELHOUSE", ROOT / ".wheelhouse" / f"py{sys.version_info[0]}{sys.version_info[1]}"
    )
)
pytestmark = pytest.mark.skipif(
    not (FOLDER / "COMPLETE").is_file(),
    reason=f"no local wheelhouse in {FOLDER}: 'make wheelhouse' fills it from PyPI once (then offline)",
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def old_numpy_python(tmp_path_factory):
    """A real venv holding numpy 1.26.4 and scipy 1.13.1 (installed from the wheelhouse, offline)."""
    root = tmp_path_factory.mktemp("slicer-like") / "venv"
    venv.EnvBuilder(with_pip=True).create(root)
    python = str(root / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(FOLDER),
            *wheelhouse.BASE,
        ],
        check=True,
    )
    return python


def _distributions(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


class _DryRunPip:
    """Slicer 5.10's ``slicer.util.pip_install(list_of_pip_arguments)`` (Base/Python/slicer/util.py at
    v5.10.0: ``python -m pip install *args``), aimed at the test venv, dry-run, offline, with a report."""

    def __init__(self, python: str, folder: Path):
        self.python, self.folder, self.reports = python, folder, []

    def pip_install(self, args):
        report = self.folder / f"report{len(self.reports)}.json"
        command = [self.python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report)]
        command += ["--no-index", "--find-links", str(FOLDER), *args]
        out = subprocess.run(command, capture_output=True, text=True)
        assert out.returncode == 0, f"pip could not resolve {args}:\n{out.stderr[-3000:]}"
        self.reports.append((list(args), json.loads(report.read_text())))


class _DryRunPackaging:
    """Slicer main's ``slicer.packaging.pip_install(requirements, constraints=, no_deps_requirements=,
    requester=)``: as its ``_pip_install_simple`` and ``_build_pip_args`` do (Base/Python/slicer/packaging.py
    on main), the --no-deps packages first, then the rest, each call with ``-c constraints``."""

    def __init__(self, pip: _DryRunPip):
        self.pip = pip

    def pip_install(self, requirements, constraints=None, no_deps_requirements=None, requester=None):
        if no_deps_requirements is not None:
            self.pip.pip_install([*no_deps_requirements, "--no-deps", "-c", str(constraints)])
        self.pip.pip_install([*requirements, "-c", str(constraints)])


def _to_install(report) -> dict[str, str]:
    return {_canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}


def test_the_install_plan_replaces_nothing(old_numpy_python, tmp_path):
    before = _distributions(old_numpy_python)
    assert before["numpy"] == "1.26.4"
    plan = wheelhouse.plan()
    pip = _DryRunPip(old_numpy_python, tmp_path)
    slicer_like = types.SimpleNamespace(util=pip)  # no slicer.packaging, as in Slicer 5.10
    deps.run_plan(plan, tmp_path, slicer_like, installed=lambda: _distributions(old_numpy_python))

    constraints = str(tmp_path / "rad4xcnn-constraints.txt")
    expected = [
        ["-c", constraints, *(["--no-deps"] if s.no_deps else []), *s.requirements] for s in plan.steps
    ]
    assert [args for args, _ in pip.reports] == expected  # one pip call per step, each under the constraints
    pins = (tmp_path / "rad4xcnn-constraints.txt").read_text()
    assert "numpy==1.26.4" in pins and "scipy==1.13.1" in pins
    there = {_canonical(n) for n in before}
    planned: dict[str, str] = {}
    for _, report in pip.reports:
        planned.update(_to_install(report))
    replaced = sorted(there & set(planned))
    assert replaced == [], f"the plan would replace {replaced}"
    assert "simpleitk" not in planned and "opencv-python" not in planned
    assert {"pandas", "scikit-learn", "timm", "grad-cam", "opencv-python-headless", "ttach"} <= set(planned)
    # the numpy-1 compatible OpenCV was chosen, not the newest (which needs numpy 2)
    assert planned["opencv-python-headless"].startswith("4.")


def test_without_constraints_pip_would_replace_numpy(old_numpy_python, tmp_path):
    """The control: the same resolver, asked for OpenCV without the constraints file, replaces numpy."""
    pip = _DryRunPip(old_numpy_python, tmp_path)
    pip.pip_install(list(wheelhouse.CONTROL))
    planned = _to_install(pip.reports[0][1])
    assert planned["numpy"].startswith("2.") and planned["opencv-python-headless"].startswith("5.")
    constraints = deps.write_constraints(tmp_path, _distributions(old_numpy_python))
    pip.pip_install(["-c", str(constraints), *wheelhouse.CONTROL])
    assert "numpy" not in _to_install(pip.reports[1][1])


def test_the_install_plan_replaces_nothing_with_slicer_packaging(old_numpy_python, tmp_path):
    """The same plan through ``slicer.packaging`` (Slicer 5.12 and later): one call, --no-deps inside."""
    before = {_canonical(n) for n in _distributions(old_numpy_python)}
    pip = _DryRunPip(old_numpy_python, tmp_path)
    slicer_like = types.SimpleNamespace(util=None, packaging=_DryRunPackaging(pip))
    deps.run_plan(
        wheelhouse.plan(), tmp_path, slicer_like, installed=lambda: _distributions(old_numpy_python)
    )
    assert len(pip.reports) == 2 and "--no-deps" in pip.reports[0][0]
    planned = {name for _, report in pip.reports for name in _to_install(report)}
    assert not before & planned
    assert {"grad-cam", "timm", "pandas", "opencv-python-headless"} <= planned and "simpleitk" not in planned
