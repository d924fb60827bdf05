"""The dependency check and install plan of the Slicer module (nothing is installed here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from Rad4XCNNLib import dependencies as deps

ROOT = Path(__file__).resolve().parents[2]


def _hiding(*names: str):
    """importlib's real lookup, except that ``names`` look uninstalled (as in a fresh Slicer)."""

    def find_spec(name):
        return None if name in names else importlib.util.find_spec(name)

    return find_spec


def test_this_environment_has_everything():
    assert deps.missing_requirements("module") == []
    assert deps.missing_requirements("pipeline") == []
    assert deps.check("pipeline").empty


def test_requirement_floors_agree_with_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    declared = {m.lower() for m in re.findall(r'"([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?[<>=!~][^"]*)"', text)}
    for requirement in deps.REQUIREMENTS:
        assert requirement.requirement.lower() in declared, requirement.requirement


def test_fresh_slicer_with_the_pytorch_extension():
    """Slicer ships numpy, scipy, SimpleITK; the PyTorch extension is installed but torch is not yet."""
    hidden = ("torch", "torchvision", "timm", "pandas", "sklearn", "radiomics")
    find_spec = _hiding(*hidden)
    missing = deps.missing_requirements("pipeline", find_spec)
    assert [r.module for r in missing] == ["pandas", "torch", "torchvision", "timm", "radiomics", "sklearn"]
    plan = deps.install_plan(missing, pytorch_extension=True, radiomics_extension=False)
    assert [s.kind for s in plan.steps] == ["pytorch", "pip"]
    assert plan.steps[0].requirements == ("torch>=2.4", "torchvision>=0.19")
    assert plan.steps[0].version_of("torch") == ">=2.4"
    assert plan.steps[0].version_of("torchvision") == ">=0.19"
    assert plan.steps[1].requirements == (
        "pyradiomics-bhklab>=3.1.4",
        "pandas>=2.0",
        "timm>=1.0",
        "scikit-learn>=1.4",
    )
    message = plan.message()
    assert "torch (deep features (CNNs))" in message
    assert "through the PyTorch extension" in message
    assert "PyRadiomics is installed from PyPI" in message
    assert message.rstrip().endswith("Continue?")


def test_module_group_needs_only_the_light_packages():
    find_spec = _hiding("torch", "pandas")
    assert [r.module for r in deps.missing_requirements("module", find_spec)] == ["pandas"]


def test_without_the_pytorch_extension_torch_comes_from_pypi():
    plan = deps.install_plan(
        deps.missing_requirements("pipeline", _hiding("torch")),
        pytorch_extension=False,
        radiomics_extension=True,
    )
    (step,) = plan.steps
    assert step.kind == "pip" and step.requirements == ("torch>=2.4",)
    assert "PyTorch extension was not found" in step.note


def test_extension_detection_uses_the_module_path(tmp_path, monkeypatch):
    """Inside Slicer an extension's module folder is on sys.path: finding PyTorchUtils means it is there."""
    (tmp_path / "PyTorchUtils.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    plan = deps.check("pipeline", _hiding("torch"))
    assert [s.kind for s in plan.steps] == ["pytorch"]
    monkeypatch.undo()
    importlib.invalidate_caches()
    plan = deps.check("pipeline", _hiding("torch", "PyTorchUtils"))
    assert [s.kind for s in plan.steps] == ["pip"]


def test_broken_package_counts_as_missing():
    def find_spec(name):
        if name == "xgboost":
            raise ValueError("xgboost.__spec__ is None")
        return importlib.util.find_spec(name)

    assert [r.module for r in deps.missing_requirements("pipeline", find_spec)] == ["xgboost"]


def test_names_and_groups():
    assert {r.name for r in deps.REQUIREMENTS} >= {"scikit-learn", "grad-cam", "pyradiomics-bhklab"}
    with pytest.raises(ValueError, match="unknown group 'gui'"):
        deps.missing_requirements("gui")
    assert deps.InstallPlan([]).message() == "All required Python packages are installed."
