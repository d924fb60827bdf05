"""The dependency check and install plan of the Slicer module (nothing is installed here)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from pathlib import Path

import pytest
from Rad4XCNNLib import dependencies as deps

ROOT = Path(__file__).resolve().parents[2]


def _hiding(*names: str):
    """A lookup in which every package is installed except ``names`` (as in a fresh Slicer, whatever the
    Python that runs the tests holds); PyTorchUtils and SlicerRadiomics count as packages too."""

    def find_spec(name):
        return None if name in names else importlib.machinery.ModuleSpec(name, None)

    return find_spec


def test_this_environment_has_everything():
    for module in ("torch", "radiomics", "xgboost", "pytorch_grad_cam"):
        pytest.importorskip(module)
    assert deps.missing_requirements("module") == []
    assert deps.missing_requirements("pipeline") == []
    assert deps.check("pipeline").empty


def test_requirement_floors_agree_with_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    declared = {m.lower() for m in re.findall(r'"([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?[<>=!~][^"]*)"', text)}
    for requirement in deps.REQUIREMENTS:
        assert requirement.requirement.lower() in declared, requirement.requirement
    # an optional package is the floor of its pyproject extra (MONAI: volumes3d), not of a core dependency
    (volumes3d,) = re.findall(r"^volumes3d = \[(.*)\]$", text, re.MULTILINE)
    assert [r.requirement for r in deps.REQUIREMENTS if r.optional] == ["monai>=1.3"]
    assert '"monai>=1.3"' in volumes3d


def test_fresh_slicer_with_the_pytorch_extension():
    """Slicer ships numpy, scipy, SimpleITK; the PyTorch extension is installed but torch is not yet."""
    hidden = ("torch", "torchvision", "timm", "pandas", "sklearn", "radiomics")
    find_spec = _hiding(*hidden)
    missing = deps.missing_requirements("pipeline", find_spec)
    assert [r.module for r in missing] == ["pandas", "torch", "torchvision", "timm", "radiomics", "sklearn"]
    plan = deps.install_plan(missing, pytorch_extension=True, radiomics_extension=False, system="Linux")
    assert [(s.kind, s.no_deps) for s in plan.steps] == [("pytorch", False), ("pip", False), ("pip", True)]
    assert plan.steps[0].requirements == ("torch>=2.4", "torchvision>=0.19")
    assert plan.steps[0].version_of("torch") == ">=2.4"
    assert plan.steps[0].version_of("torchvision") == ">=0.19"
    # the packages that would pull torch or SimpleITK go in without their declared dependencies ...
    assert plan.steps[2].requirements == ("timm>=1.0", "pyradiomics-bhklab>=3.1.4")
    # ... after what they really need, listed once each
    assert plan.steps[1].requirements == (
        "pandas>=2.0",
        "scikit-learn>=1.4",
        "huggingface_hub>=0.20",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "PyWavelets>=1.4",
        "pykwalify>=1.8",
        "six>=1.16",
    )
    assert not any("SimpleITK" in r or "opencv-python>" in r for r in plan.pip_requirements())
    message = plan.message()
    assert "torch (deep features (CNNs))" in message
    assert "through the PyTorch extension" in message
    assert "pyradiomics-bhklab) is installed from PyPI" in message
    assert "Slicer already has (numpy, scipy, SimpleITK, vtk, ...) are kept" in message
    assert message.rstrip().endswith("Continue?")


def test_grad_cam_comes_without_opencv_python_and_xgboost_without_nccl():
    missing = deps.missing_requirements("pipeline", _hiding("pytorch_grad_cam", "xgboost"))
    linux = deps.install_plan(missing, pytorch_extension=True, radiomics_extension=True, system="Linux")
    assert linux.steps[0].requirements[0] == "xgboost-cpu>=2.1"
    assert "opencv-python-headless>=4.8" in linux.steps[0].requirements
    assert linux.steps[1].requirements == ("grad-cam>=1.5.4",) and linux.steps[1].no_deps
    mac = deps.install_plan(missing, pytorch_extension=True, radiomics_extension=True, system="Darwin")
    assert mac.steps[0].requirements[0] == "xgboost>=2.0"


def test_no_deps_needs_cover_what_the_packages_declare():
    """Each --no-deps package's declared requirements, read from its installed metadata, are listed, except
    torch/torchvision (the PyTorch extension's) and SimpleITK (Slicer's)."""
    from importlib.metadata import PackageNotFoundError, requires

    Requirement = pytest.importorskip("packaging.requirements").Requirement
    provided = {"torch", "torchvision", "simpleitk", "numpy"}
    checked = 0
    for package, needs in deps.NO_DEPS_NEEDS.items():
        try:
            requires(package)
        except PackageNotFoundError:
            continue  # the light Python 3.12 environment of CI has none of them
        checked += 1
        declared = {
            Requirement(text).name.lower().replace("_", "-")
            for text in requires(package) or []
            if "extra ==" not in text
        }
        listed = {deps._name(n).lower().replace("_", "-") for n in needs}
        assert declared - provided <= listed, (package, declared - provided - listed)
    if not checked:
        pytest.skip("none of grad-cam, timm, pyradiomics-bhklab, monai is installed here")


def test_simpleitk_is_never_installed():
    missing = deps.missing_requirements("module", _hiding("SimpleITK"))
    plan = deps.install_plan(missing, pytorch_extension=True, radiomics_extension=True)
    assert plan.steps == [] and not plan.empty
    assert plan.refused[0].startswith("SimpleITK: it is part of 3D Slicer")
    assert "Not installed by Rad4XCNN" in plan.message()


def test_constraints_pin_every_installed_distribution(tmp_path):
    installed = deps.installed_distributions()
    assert {"numpy", "scipy", "pandas"} <= {n.lower() for n in installed}
    path = deps.write_constraints(tmp_path, {**installed, "weird": "unknown"})
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    pins = dict(ln.split("==") for ln in lines)
    import numpy

    assert pins["numpy"] == numpy.__version__
    assert "weird" not in pins and len(pins) == len(installed)
    step = deps.InstallStep("pip", ("grad-cam>=1.5.4",), no_deps=True)
    assert deps.pip_arguments(step, path) == ["-c", str(path), "--no-deps", "grad-cam>=1.5.4"]
    with pytest.raises(ValueError, match="not run with pip"):
        deps.pip_arguments(deps.InstallStep("pytorch", ("torch",)), path)


def test_one_install_at_a_time():
    with deps.one_install_at_a_time():
        assert deps.install_in_progress()
        with (
            pytest.raises(deps.InstallInProgress, match="being installed already"),
            deps.one_install_at_a_time(),
        ):
            pass
    assert not deps.install_in_progress()


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
    assert step.kind == "pip" and step.requirements == ("torch>=2.4",) and not step.no_deps
    assert "PyTorch extension was not found" in step.note


def test_extension_detection_uses_the_module_path(tmp_path, monkeypatch):
    """Inside Slicer an extension's module folder is on sys.path: finding PyTorchUtils means it is there."""

    def hiding_torch(name):  # the real lookup, with torch and torchvision absent
        return None if name in ("torch", "torchvision") else importlib.util.find_spec(name)

    (tmp_path / "PyTorchUtils.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    plan = deps.check("pipeline", hiding_torch)
    assert plan.steps[0].kind == "pytorch"
    monkeypatch.undo()
    importlib.invalidate_caches()
    plan = deps.check("pipeline", hiding_torch)
    assert plan.steps[0].kind == "pip" and plan.steps[0].requirements == ("torch>=2.4", "torchvision>=0.19")


def test_broken_package_counts_as_missing():
    def find_spec(name):
        if name == "xgboost":
            raise ValueError("xgboost.__spec__ is None")
        return _hiding()(name)

    assert [r.module for r in deps.missing_requirements("pipeline", find_spec)] == ["xgboost"]


def test_names_and_groups():
    assert {r.name for r in deps.REQUIREMENTS} >= {"scikit-learn", "grad-cam", "pyradiomics-bhklab"}
    with pytest.raises(ValueError, match="unknown group 'gui'"):
        deps.missing_requirements("gui")
    assert deps.InstallPlan([]).message() == "All required Python packages are installed."


# ------------------------------------------------------------------------------------ the package panel
def test_package_panel_rows_and_upgrade_plan():
    from Rad4XCNNLib.dependencies import package_rows, pip_arguments, upgrade_plan

    installed = {
        "numpy": "2.1.0",
        "pandas": "1.5.3",
        "xgboost-cpu": "2.1.4",
        "pyradiomics": "3.0.1",
        "timm": "1.0.9",
    }
    rows = {row.name: row for row in package_rows(installed)}
    assert rows["numpy"].status == "ok" and rows["pandas"].status == "too old"  # the floor is 2.0
    assert rows["xgboost"].installed == "2.1.4"  # its CPU-only distribution counts
    assert rows["pyradiomics-bhklab"].installed == "3.0.1"  # SlicerRadiomics' pyradiomics counts
    assert rows["torch"].status == "missing"
    assert rows["pandas"].text() == "pandas 1.5.3 (needs >=2.0; result tables): too old"
    plan = upgrade_plan(list(rows.values()))
    upgrade = plan.steps[-1]
    assert upgrade.upgrade and "pandas>=2.0" in upgrade.requirements and "timm>=1.0" in upgrade.requirements
    assert not any(
        r.startswith(("numpy", "scipy", "SimpleITK", "pillow", "torch")) for r in upgrade.requirements
    )
    assert pip_arguments(upgrade, "c.txt")[:3] == ["-c", "c.txt", "--upgrade"]
    assert any(step.kind == "pytorch" for step in plan.steps)  # what is missing, as on a first run


def test_an_upgrade_leaves_its_packages_out_of_the_constraints(tmp_path):
    from types import SimpleNamespace

    from Rad4XCNNLib.dependencies import InstallPlan, InstallStep, run_plan

    calls = []
    fake = SimpleNamespace(util=SimpleNamespace(pip_install=lambda args: calls.append(list(args))))
    plan = InstallPlan([], [InstallStep("pip", ("pandas>=2.0",), upgrade=True)])
    run_plan(plan, tmp_path, fake, installed=lambda: {"pandas": "2.1.0", "numpy": "2.1.0"})
    (args,) = calls
    assert args == ["-c", str(tmp_path / "rad4xcnn-constraints.txt"), "--upgrade", "pandas>=2.0"]
    pinned = (tmp_path / "rad4xcnn-constraints.txt").read_text()
    assert "numpy==2.1.0" in pinned and "pandas==" not in pinned


# ------------------------------------------------------------------------- optional: MONAI's 3D networks
def test_monai_is_optional_and_planned_only_for_a_3d_network():
    without_monai = _hiding("monai")
    assert deps.check("pipeline", without_monai).empty  # a 2D run installs no MONAI
    assert deps.extra_requirements("resnet50") == () and deps.extra_requirements(None) == ()
    extra = deps.extra_requirements("monai_resnet18")
    assert [(r.name, r.requirement, r.optional) for r in extra] == [("monai", "monai>=1.3", True)]
    assert deps.check("pipeline", _hiding(), extra).empty  # installed: nothing to do
    plan = deps.check("pipeline", without_monai, extra)
    assert [r.name for r in plan.missing] == ["monai"]
    # MONAI goes in with its declared dependencies (torch, numpy), which the constraints hold
    assert [(s.kind, s.requirements, s.no_deps) for s in plan.steps] == [("pip", ("monai>=1.3",), False)]
    assert "monai (native 3D networks for volumes)" in plan.message()


def test_fresh_slicer_with_a_3d_network_gets_torch_first_then_monai_under_its_pins():
    find_spec = _hiding("torch", "torchvision", "timm", "monai")
    plan = deps.check("pipeline", find_spec, deps.extra_requirements("monai_densenet121"))
    assert [(s.kind, s.no_deps) for s in plan.steps] == [("pytorch", False), ("pip", False), ("pip", True)]
    assert "monai>=1.3" in plan.steps[1].requirements and plan.steps[2].requirements == ("timm>=1.0",)
    assert not any(r.startswith(("torch", "SimpleITK")) for r in plan.pip_requirements())


def test_monai_install_runs_under_the_constraints_that_hold_torch(tmp_path):
    """Slicer 5.10 (pip arguments) and 5.12 (slicer.packaging): torch and numpy pinned, so pip picks a MONAI
    release that fits them rather than replacing them."""
    from types import SimpleNamespace

    plan = deps.check("pipeline", _hiding("monai"), deps.extra_requirements("monai_resnet10"))
    held = {"torch": "2.5.1+cu121", "numpy": "2.1.0"}
    calls = []
    old = SimpleNamespace(util=SimpleNamespace(pip_install=lambda args: calls.append(list(args))))
    deps.run_plan(plan, tmp_path, old, installed=lambda: held)
    constraints = str(tmp_path / "rad4xcnn-constraints.txt")
    assert calls == [["-c", constraints, "monai>=1.3"]]
    pins = (tmp_path / "rad4xcnn-constraints.txt").read_text().splitlines()
    assert "torch==2.5.1+cu121" in pins and "numpy==2.1.0" in pins
    kwargs = []
    new = SimpleNamespace(
        packaging=SimpleNamespace(pip_install=lambda regular, **k: kwargs.append((regular, k)))
    )
    deps.run_plan(plan, tmp_path, new, installed=lambda: held)
    ((regular, options),) = kwargs
    assert regular == ["monai>=1.3"] and not options.get("no_deps_requirements")
    assert options["constraints"] == constraints


def test_package_panel_shows_monai_as_optional_and_upgrade_leaves_it_out():
    rows = {row.name: row for row in deps.package_rows({"numpy": "2.1.0"})}
    assert rows["monai"].status == "optional, not installed" and rows["torch"].status == "missing"
    assert (
        rows["monai"].text()
        == "monai - (needs >=1.3; native 3D networks for volumes): optional, not installed"
    )
    plan = deps.upgrade_plan(list(rows.values()))
    assert "monai" not in {r.name for r in plan.missing}
    assert not any("monai" in r for step in plan.steps for r in step.requirements)
    installed = deps.upgrade_plan(deps.package_rows({"numpy": "2.1.0", "monai": "1.3.2"}))
    assert "monai>=1.3" in installed.steps[-1].requirements and installed.steps[-1].upgrade
