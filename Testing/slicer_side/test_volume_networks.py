"""The module's native 3D networks (MONAI), on the slicer-core wheel and without torch or MONAI: offered as
backbones, refused in one line before a run when they cannot work (ImageNet weights, 2D images), and asking
for MONAI only when a run needs it."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import dependencies as deps
from Rad4XCNNLib import parameters as mp
from Rad4XCNNLib import session

from Rad4XCNNLogic.cohort.imageio import Image2D
from Rad4XCNNLogic.cohort.volumes import Volume
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features.volume_nets import VOLUME_NETS

NET = "monai_resnet18"


@pytest.fixture
def mrml():
    return mb.headless_slicer()


def _with_segment(node):
    """A segmentation drawn on ``node``, so that the scene holds one image/segmentation pair."""
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", [1, 0, 0])
    mask = np.zeros(slicer.util.arrayFromVolume(node).shape, np.uint8)
    mask[..., 2:5, 3:6] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, "lesion", node)
    return node


def _image_node(dims: int):
    rng = np.random.default_rng(dims)
    if dims == 2:
        return mb.volume_node_from_image(Image2D(rng.normal(size=(10, 12)).astype(np.float32)), "us")
    return mb.volume_node_from_volume(Volume(rng.normal(size=(6, 10, 12)).astype(np.float32)), "ct")


def _manifest(folder, dims: int):
    """A one-case manifest whose image is 2D (PNG) or 3D (NRRD); only the first image's header is read."""
    shape = (10, 12) if dims == 2 else (6, 10, 12)
    suffix = ".png" if dims == 2 else ".nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.uint8)), str(folder / f"case{suffix}"))
    path = folder / f"manifest{dims}d.csv"
    path.write_text(f" Case_ID , Image ,mask\nc1,case{suffix},m.png\n", encoding="utf-8-sig")
    return path


def test_3d_networks_are_suggested_after_the_2d_ones():
    assert mp.BACKBONES[: -len(VOLUME_NETS)] == (
        "resnet50",
        "densenet121",
        "resnet18",
        "vit_base_patch16_224",
    )
    assert mp.BACKBONES[-len(VOLUME_NETS) :] == tuple(VOLUME_NETS)
    backbone = mp.BY_NAME["Backbone"]
    assert backbone.choices == mp.BACKBONES and "volumes only" in backbone.help
    assert backbone.parse("any_timm_name") == "any_timm_name"  # any name may still be typed


@pytest.mark.parametrize(
    "values, dims, problem",
    [
        ({"Backbone": NET}, None, f"{NET} is a 3D network without ImageNet weights: set Weights to 'check"),
        ({"Backbone": NET, "WeightsSource": "imagenet"}, 3, "without ImageNet weights"),
        (
            {"Backbone": NET, "WeightsSource": "random"},
            2,
            "these images are 2D: choose a 2D backbone (resnet50",
        ),
        ({"Backbone": NET, "WeightsSource": "imagenet"}, 2, "these images are 2D"),  # the 2D images first
        ({"Backbone": NET, "WeightsSource": "random"}, 3, None),
        ({"Backbone": NET, "WeightsSource": "checkpoint"}, None, None),
        ({"Backbone": "resnet50", "WeightsSource": "imagenet"}, 2, None),
        ({"Backbone": "resnet50", "WeightsSource": "imagenet"}, 3, None),  # 2.5D: slice by slice
    ],
)
def test_model_problem_says_what_to_do_instead(values, dims, problem):
    found = mp.model_problem(values, dims)
    if problem is None:
        assert found is None
        mp.check_model(values, dims)
    else:
        assert problem in found and "\n" not in found
        with pytest.raises(Rad4XCNNError, match="3D network"):
            mp.check_model(values, dims)


def test_run_configuration_of_a_3d_network():
    with pytest.raises(Rad4XCNNError, match="without ImageNet weights"):
        mp.run_configuration({"Backbone": NET, "WeightsSource": "imagenet"}, "m.csv", "out")
    config = mp.run_configuration({"Backbone": NET, "WeightsSource": "random"}, "m.csv", "out")
    assert config["models"] == [{"name": NET, "weights": None}]


def test_input_dims_of_a_case_a_scene_and_a_manifest(mrml, tmp_path):
    flat, ct = _image_node(2), _image_node(3)
    assert session.input_dims({"CaseImage": flat}, "case") == 2
    assert session.input_dims({"CaseImage": ct}, "case") == 3
    assert session.input_dims({"CaseImage": None}, "case") is None
    assert session.input_dims({"CohortSource": "scene"}) is None  # no segmentation yet
    _with_segment(flat)
    assert session.input_dims({"CohortSource": "scene"}) == 2
    assert session.manifest_dims(_manifest(tmp_path, 2)) == 2
    values = {"CohortSource": "manifest", "ManifestPath": str(_manifest(tmp_path, 3))}
    assert session.input_dims(values) == 3
    assert session.manifest_dims(tmp_path / "none.csv") is None
    (tmp_path / "empty.csv").write_text("case_id,image,mask\n")
    assert session.manifest_dims(tmp_path / "empty.csv") is None


def test_a_3d_network_on_2d_images_stops_before_anything_is_written(mrml, tmp_path):
    flat = _with_segment(_image_node(2))
    out = tmp_path / "run"
    values = {"Backbone": NET, "WeightsSource": "random", "OutputFolder": str(out), "CohortSource": "scene"}
    with pytest.raises(Rad4XCNNError, match=f"^{NET} is a 3D network, for CT or MR volumes, and these"):
        session.start_cohort_run(values)
    assert not out.exists()
    values.update(CohortSource="manifest", ManifestPath=str(_manifest(tmp_path, 2)))
    with pytest.raises(Rad4XCNNError, match="these images are 2D"):
        session.start_cohort_run(values)
    with pytest.raises(Rad4XCNNError, match="these images are 2D"):
        session.start_case_run({**values, "CaseImage": flat})


def test_install_plan_checks_the_network_then_adds_monai(mrml, tmp_path, monkeypatch):
    """What the module checks before a run: the network first (nothing offered for install when it cannot
    run), then the pipeline's packages with MONAI for a 3D network (dependencies.extra_requirements)."""
    asked = []
    monkeypatch.setattr(deps, "check", lambda group, extra=(): asked.append((group, [r.name for r in extra])))
    ct = _image_node(3)
    session.install_plan("pipeline", {"Backbone": NET, "WeightsSource": "random", "CaseImage": ct}, "case")
    session.install_plan("pipeline", {"Backbone": "resnet50", "CaseImage": _image_node(2)}, "case")
    session.install_plan("module")
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")  # no image: not read for a 2D net
    session.install_plan("pipeline", {"Backbone": "resnet50", "CaseImage": empty}, "case")
    assert asked == [("pipeline", ["monai"]), ("pipeline", []), ("module", []), ("pipeline", [])]
    with pytest.raises(Rad4XCNNError, match="without ImageNet weights"):
        session.install_plan("pipeline", {"Backbone": NET, "CaseImage": ct}, "case")
    with pytest.raises(Rad4XCNNError, match="holds no image data"):
        session.install_plan(
            "pipeline", {"Backbone": NET, "WeightsSource": "random", "CaseImage": empty}, "case"
        )
    assert len(asked) == 4
