"""The Device panel's logic, the widget-state decisions, and the PyRadiomics check (no Qt needed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from Rad4XCNNLib import device, guistate, radiomics_check
from Rad4XCNNLib.dependencies import InstallInProgress, one_install_at_a_time


# ------------------------------------------------------------------------------------------- device
def test_torch_report_of_the_installed_torch():
    torch = pytest.importorskip("torch")
    report = device.torch_report("auto")
    assert report.installed and report.version == torch.__version__
    if torch.version.cuda:  # a CUDA build, with or without a GPU on this machine
        assert report.build == f"CUDA {torch.version.cuda}"
    if torch.cuda.is_available():
        assert len(report.gpus) == torch.cuda.device_count() and report.device == "cuda"
        assert report.gpus[0].memory_bytes == torch.cuda.get_device_properties(0).total_memory
    else:
        assert report.gpus == [] and report.device in ("cpu", "mps")
        assert "GPU: none seen by PyTorch" in report.lines()
        assert device.torch_report("cuda").device.startswith("none (device cuda was asked for")
    assert report.lines()[0] == f"PyTorch {torch.__version__} ({report.build})"
    assert device.torch_report("cpu").device == "cpu"


def test_torch_report_without_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda n: None if n == "torch" else real(n))
    report = device.torch_report()
    assert not report.installed and report.lines()[0].startswith("PyTorch: not installed")


def test_the_torch_report_comes_from_a_child_process():
    """The Device panel and the CPU estimate ask a child process: the GUI's Python never imports torch."""
    import os
    import subprocess
    import sys

    from Rad4XCNNLib.background import ENGINE_ROOT, LIB_ROOT

    code = (
        "import sys\n"
        "from Rad4XCNNLib import device\n"
        "report = device.torch_report_in_child('cpu')\n"
        "print('torch' in sys.modules, report.installed, report.device or '-')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ENGINE_ROOT), str(LIB_ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True
    ).stdout.split()
    installed = importlib.util.find_spec("torch") is not None
    assert out == ["False", str(installed), "cpu" if installed else "-"]


def test_a_failing_child_is_named():
    with pytest.raises(RuntimeError, match=r"'device bogus cpu' failed: .*invalid choice: 'bogus'"):
        device.run_in_child("bogus", "cpu")


def test_gpu_line():
    assert device.GPU(1, "NVIDIA H200", 143 * 2**30).text() == "cuda:1 NVIDIA H200 (143.0 GiB)"


def test_reinstall_torch_removes_then_installs_with_the_backend():
    calls = []
    result = device.reinstall_torch(
        "cu121", lambda: calls.append("uninstall"), lambda *args: calls.append(("install", *args)) or "torch"
    )
    assert result == "torch"
    assert calls == ["uninstall", ("install", False, "cu121", ">=2.4", ">=0.19")]
    calls.clear()
    device.reinstall_torch("automatic", lambda: calls.append("uninstall"), lambda *a: calls.append(a))
    assert calls[1] == (False, None, ">=2.4", ">=0.19")  # the extension detects the driver
    with pytest.raises(ValueError, match="unknown PyTorch backend 'gpu'"):
        device.reinstall_torch("gpu", lambda: None, lambda *a: None)
    with one_install_at_a_time(), pytest.raises(InstallInProgress):  # never two installs at once
        device.reinstall_torch("cpu", lambda: None, lambda *a: None)


def test_estimate_from_rates_and_cores():
    rates = device.Rates(deep=0.2, radiomics=0.06)
    one = device.estimate_run_time(100, rates, processes=1)
    assert one.deep == pytest.approx(20.0) and one.radiomics == pytest.approx(6.0)
    four = device.estimate_run_time(100, rates, processes=4)
    assert four.radiomics == pytest.approx(6.0 / 3.7) and four.deep == pytest.approx(20.0)
    assert device.estimate_run_time(780, device.Rates(0.5, 0.05)).text() == (
        "780 cases on the CPU: about 7 min (deep features 6 min, radiomics 39 s)"
    )
    assert "about 2.2 h" in device.estimate_run_time(30000, rates).text()
    with pytest.raises(ValueError, match="cannot have -1 cases"):
        device.estimate_run_time(-1, rates)


def test_count_cases(tmp_path, make_case):
    from conftest import write_manifest_rows

    manifest = write_manifest_rows(tmp_path / "m.csv", [make_case(f"c{i}") for i in range(3)])
    with manifest.open("a") as handle:
        handle.write(",,,\n")  # a blank row is not a case
    assert device.count_cases(manifest) == 3
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        device.count_cases(tmp_path / "none.csv")


def test_measure_rates_on_this_computer():
    pytest.importorskip("timm")
    pytest.importorskip("radiomics")
    rates = device.measure_rates("resnet18", input_size=64, repeats=1)
    assert rates.backbone == "resnet18" and rates.input_size == 64
    assert 0 < rates.deep < 30 and 0 < rates.radiomics < 30
    assert device.estimate_run_time(10, rates).total == pytest.approx(10 * (rates.deep + rates.radiomics))


def test_measure_rates_of_a_3d_network_times_one_cube():
    """A native 3D network takes one grey cube per case, not a 2D RGB image (which it would refuse)."""
    pytest.importorskip("monai")
    pytest.importorskip("radiomics")
    rates = device.measure_rates("monai_resnet10", input_size=16, repeats=1)
    assert rates.backbone == "monai_resnet10" and rates.input_size == 16 and 0 < rates.deep < 30


# ------------------------------------------------------------------------------------------ guistate
class _Node:
    def __init__(self, cls):
        self.cls = cls

    def IsA(self, name):  # MRML spelling
        return name == self.cls


def test_buttons_follow_the_state(tmp_path):
    values = {"OutputFolder": str(tmp_path), "CaseImage": _Node("vtkMRMLScalarVolumeNode")}
    values["CaseMask"] = _Node("vtkMRMLSegmentationNode")
    idle = guistate.enabled_states(values, running=False, installing=False)
    assert idle["runButton"] and idle["caseRunButton"] and idle["loadResultsButton"]
    assert idle["caseSegmentComboBox"] and not idle["cancelButton"] and not idle["openReportButton"]
    installing = guistate.enabled_states(values, running=False, installing=True)
    assert not any(
        installing[b] for b in ("runButton", "caseRunButton", "loadResultsButton", "estimateButton")
    )
    running = guistate.enabled_states(values, running=True, installing=False)
    assert running["cancelButton"] and not running["runButton"]
    (tmp_path / "report.html").write_text("<html></html>")
    assert guistate.enabled_states(values, running=False, installing=False)["openReportButton"]
    old = guistate.enabled_states(values, running=False, installing=False, unsupported=True)
    assert not old["runButton"] and not old["reinstallTorchButton"]
    labelmap = guistate.enabled_states(
        {**values, "CaseMask": _Node("vtkMRMLLabelMapVolumeNode")}, running=False, installing=False
    )
    assert not labelmap["caseSegmentComboBox"] and not labelmap["showExplanationsButton"]


def test_typed_text_is_not_rewritten():
    assert guistate.text_to_show("resnet5", "resnet5") is None
    assert guistate.text_to_show("resnet5", "resnet50") == "resnet50"
    assert guistate.text_to_show("", None) is None
    assert guistate.text_to_show("/data/x", "") == ""
    assert guistate.scene_pairs_text([]) == "no image with a segmentation in the scene"
    assert guistate.scene_pairs_text([f"c{i}" for i in range(7)]).endswith("c3, c4, ...")


# ---------------------------------------------------------------------------------------- radiomics
def test_reference_case_is_fixed():
    image, mask = radiomics_check.reference_case()
    assert image.shape == (64, 72) and image.dtype == np.uint8
    assert int(image.sum()) == 497680 and int(mask.sum()) == 901


def test_installed_pyradiomics_gives_the_reference_features():
    """Checked as the module checks it: in a process started as the runs are."""
    pytest.importorskip("radiomics")
    check = radiomics_check.check_in_engine_process()
    assert check.accepted, check.problems
    assert check.n_features == 474  # the paper preset
    assert check.installed["distribution"] in radiomics_check.DISTRIBUTIONS
    assert "match the reference" in check.message()
    assert check.as_record()["accepted"] is True


def test_a_different_pyradiomics_is_refused(tmp_path):
    import pandas as pd

    pytest.importorskip("radiomics")
    reference = pd.read_csv(radiomics_check.REFERENCE, index_col=0)
    reference.loc["original_glcm_Contrast", "value"] *= 1.01  # what another commit's GLCM might give
    reference.loc["original_firstorder_Made_up"] = 1.0
    path = tmp_path / "ref.csv"
    reference.to_csv(path)
    check = radiomics_check.check_radiomics(path)
    assert not check.accepted
    assert check.problems[0] == "1 feature(s) missing, e.g. original_firstorder_Made_up"
    assert check.problems[1].startswith("original_glcm_Contrast = ")
    assert "Rad4XCNN can install pyradiomics-bhklab" in check.message()


def test_compare_features_names_and_values():
    import pandas as pd

    reference = pd.Series({"a": 1.0, "b": 2.0, "c": np.nan})
    assert (
        radiomics_check.compare_features(pd.Series({"a": 1.0, "b": 2.0 + 1e-9, "c": np.nan}), reference) == []
    )
    problems = radiomics_check.compare_features(pd.Series({"a": 1.5, "b": 2.0, "d": 0.0}), reference)
    assert problems == [
        "1 feature(s) missing, e.g. c",
        "1 unexpected feature(s), e.g. d",
        "a = 1.5, reference 1",
    ]


def test_the_offered_pyradiomics_comes_under_the_same_rules():
    plan = radiomics_check.radiomics_install_plan(system="Linux")
    assert [(s.requirements, s.no_deps) for s in plan.steps] == [
        (("PyWavelets>=1.4", "pykwalify>=1.8", "six>=1.16"), False),
        (("pyradiomics-bhklab==3.1.4",), True),  # without its declared SimpleITK
    ]


def test_run_json_records_the_pyradiomics_in_use():
    from Rad4XCNNLogic.infra.environment import package_versions

    versions = package_versions()
    assert "pyradiomics" in versions and "pyradiomics-bhklab" in versions
    radiomics = pytest.importorskip("radiomics")
    assert package_versions()["radiomics"] == str(radiomics.__version__).lstrip("v")


def _fake_radiomics(folder, version, distribution=None):
    """A stand-in ``radiomics`` package in ``folder`` (and, with ``distribution``, pip's record of it)."""
    package = folder / "radiomics"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"__version__ = {version!r}\n")
    if distribution:
        info = folder / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    return folder


def test_the_engine_process_imports_the_installed_pyradiomics(tmp_path):
    """As Slicer sets the path: SlicerRadiomics' site-packages on PYTHONPATH, ahead of the site-packages
    where pip installed pyradiomics-bhklab (here a second folder after it)."""
    import os

    from Rad4XCNNLib.background import engine_environment

    extension = _fake_radiomics(tmp_path / "SlicerRadiomics" / "site-packages", "3.0.1.post14+gabcdef")
    site = _fake_radiomics(tmp_path / "site-packages", "3.1.4", distribution="pyradiomics-bhklab")
    env = engine_environment({**os.environ, "PYTHONPATH": os.pathsep.join([str(extension), str(site)])})
    before = radiomics_check.imported_by_engine(env)
    assert before["location"] == str(extension.resolve())
    assert before["module_version"] == "3.0.1.post14+gabcdef"
    assert radiomics_check.installed_location([str(extension), str(site)]) == site.resolve()

    fixed = radiomics_check.prefer_installed_radiomics(env, paths=[str(extension), str(site)])
    after = radiomics_check.imported_by_engine(fixed)
    assert (after["location"], after["module_version"]) == (str(site.resolve()), "3.1.4")
    assert after["distribution"] == "pyradiomics-bhklab"
    # nothing shadows, or nothing installed: the environment is left alone
    assert radiomics_check.prefer_installed_radiomics(fixed, paths=[str(site)]) == fixed
    assert radiomics_check.prefer_installed_radiomics(env, paths=[str(extension)]) == env
    message = radiomics_check.shadowed_message(site, before["location"])
    assert str(extension.resolve()) in message and "Uninstall the SlicerRadiomics extension" in message
