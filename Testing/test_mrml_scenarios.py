"""The module's self-test scenarios on the slicer-core wheel (real MRML classes), as Slicer runs them."""

from __future__ import annotations

import numpy as np
import pytest
import slicer  # a missing slicer-core must fail loudly, not skip

from Rad4XCNNLogic import mrml_bridge as mb
from Rad4XCNNLogic import mrml_scenarios as scenarios
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
    assert mb.slice_layers()[0]["opacity"] == 0.25
    assert node.GetDisplayNode().GetWindowLevelMax() == 1.0


def test_cam_overlay_places_any_map_faithfully(scene_case):
    shifted = np.roll(scenarios.lesion_map(scene_case), 7, axis=1)
    scenarios.add_cam_overlay(scene_case, cam=shifted)  # checks the peak stays where the map has it
    with pytest.raises(Rad4XCNNError, match="does not match the 96x120"):
        scenarios.add_cam_overlay(scene_case, cam=shifted[:, :100])


def test_run_all_in_order(tmp_path):
    mb.headless_slicer()
    names = [name for name, _ in scenarios.run_all(tmp_path)]
    assert names[:3] == ["synthetic cohort", "load image and segmentation", "export the mask"]
    assert names[-1] == "CAM overlay"
