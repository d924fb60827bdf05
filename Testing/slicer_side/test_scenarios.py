"""The module's self-test scenarios on the slicer-core wheel (real MRML classes), as Slicer runs them."""

from __future__ import annotations

import numpy as np
import pytest
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import overlays, scenarios

from Rad4XCNNLogic.errors import Rad4XCNNError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return scenarios.make_cohort(tmp_path_factory.mktemp("scenarios"))


@pytest.fixture
def scene_case(cohort):
    mb.headless_slicer()
    return scenarios.load_image_and_segmentation(cohort, index=1)


def test_load_image_and_segmentation(scene_case):
    assert scene_case.volume.GetName() == scene_case.case_id
    assert scene_case.segmentation.GetSegmentation().GetSegment(scene_case.segment_id).GetName() == "lesion"
    assert slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLabelMapVolumeNode") is None  # the import labelmap


def test_export_the_mask(scene_case, tmp_path):
    manifest = scenarios.export_mask(scene_case, tmp_path)
    assert manifest.is_file() and (tmp_path / "exported" / "masks").is_dir()


def test_cam_overlay(scene_case):
    node = scenarios.add_cam_overlay(scene_case, opacity=0.25)
    assert overlays.slice_layers()[0]["opacity"] == 0.25
    assert node.GetDisplayNode().GetWindowLevelMax() == 1.0


def test_cam_overlay_places_any_map_faithfully(scene_case):
    shifted = np.roll(scenarios.lesion_map(scene_case), 7, axis=1)
    scenarios.add_cam_overlay(scene_case, cam=shifted)  # checks the peak stays where the map has it
    with pytest.raises(Rad4XCNNError, match="does not match the 96x120"):
        scenarios.add_cam_overlay(scene_case, cam=shifted[:, :100])


def _needs_the_engine():
    """Skip (with the reason) where the engine's packages are missing, e.g. CI's light Python 3.12 run."""
    missing = scenarios.engine_packages_missing()
    if missing:
        pytest.skip(f"the engine's packages are not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def correlation(cohort, tmp_path_factory):
    """Scenario 3 once for the module: the engine's commands in background processes on the cohort."""
    _needs_the_engine()
    return scenarios.run_small_correlation(cohort, tmp_path_factory.mktemp("correlation"))


def test_run_a_small_correlation(correlation):
    assert correlation.rho.shape[0] == 512  # ResNet-18's pooled features
    assert correlation.threshold == 0.6
    assert "varying deep features explained at M = 0.60" in correlation.summary()


def test_fill_tables_and_plots_and_move_m(scene_case, correlation):
    node = scenarios.fill_tables_and_plots(correlation, threshold=0.6, new_threshold=0.75)
    from Rad4XCNNLib import parameters as settings

    assert settings.get(node, "ExplanationsTable").GetName() == "run explanations"  # the run folder's name
    assert settings.get(node, "CoverageChart").GetNumberOfPlotSeriesNodes() == 2  # resnet18 and the M marker


def test_one_case_against_the_cohort(scene_case, correlation, tmp_path):
    node = scenarios.fill_tables_and_plots(correlation)
    table, cam = scenarios.explain_case(scene_case, node, correlation, tmp_path)
    assert set(table["deep_feature"]) <= set(correlation.explanations.index)
    assert table["percentile"].between(0, 100).all()
    assert cam.shape == scenarios.SHAPE and np.isfinite(cam).all()
    assert (tmp_path / "case" / "cam").is_dir()


def test_run_all_in_order(tmp_path):
    _needs_the_engine()
    mb.headless_slicer()
    names = [name for name, _ in scenarios.run_all(tmp_path)]
    assert names == [
        "synthetic cohort",
        "load image and segmentation",
        "export the mask",
        "run a small correlation",
        "fill the tables and plots",
        "one case against the cohort",
        "CAM overlay",
    ]


def test_default_self_test_installs_nothing_and_says_why_it_skips(tmp_path):
    """The build-machine self-test: without the engine's packages the run is skipped with the reason (here
    the packages are said to be missing, as on a fresh Slicer)."""
    mb.headless_slicer()
    outcomes = dict(scenarios.run_default(tmp_path, missing=["torch", "timm"]))
    assert list(outcomes) == [
        "a case in the scene",
        "CAM overlay",
        "parameter node",
        "close the scene",
        "synthetic cohort",
        "load image and segmentation",
        "export the mask",
        "run a small correlation",
    ]
    assert outcomes["run a small correlation"] == (
        "skipped: the engine's packages are not installed (torch, timm)"
    )
    assert not (tmp_path / "run").exists()  # no engine process ran


def test_default_self_test_without_the_modules_own_packages(tmp_path):
    """As in a stock Slicer: no pandas or PyYAML, so the cohort scenarios say so; the scene ones run."""
    mb.headless_slicer()
    outcomes = dict(scenarios.run_default(tmp_path, missing=["pandas", "pyyaml", "torch"]))
    assert outcomes["close the scene"] == "the CAM colours are there again"
    why = "skipped: needs pandas, pyyaml, not in this Python (installed on the first run)"
    cohort = ("synthetic cohort", "load image and segmentation", "export the mask")
    assert [outcomes[name] for name in (*cohort, "run a small correlation")] == [why] * 4
    assert not any(tmp_path.iterdir())  # nothing written


def test_default_self_test_runs_the_engine_when_it_is_there(tmp_path):
    _needs_the_engine()
    mb.headless_slicer()
    outcomes = dict(scenarios.run_default(tmp_path))
    assert "varying deep features explained" in outcomes["run a small correlation"]
    assert "fill the tables and plots" in outcomes


def test_full_self_test_switch():
    assert scenarios.full_self_test_requested({"RAD4XCNN_FULL_SELFTEST": "1"})
    assert scenarios.full_self_test_requested({"RAD4XCNN_FULL_SELFTEST": "yes"})
    assert not scenarios.full_self_test_requested({"RAD4XCNN_FULL_SELFTEST": "0"})
    assert not scenarios.full_self_test_requested({})
