"""3D volumes in the scene, on the slicer-core wheel: a volume with a 3D segmentation exported as it is
(geometry kept: anisotropic spacing, an origin and an oblique direction), a mixed scene refused, and CAM and
feature-map NRRDs of a 3D case loaded back as foreground volumes in the image's geometry, with the volume
rendering option and its guard."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import mapviews, masks, overlays

from Rad4XCNNLogic.cohort.imageio import Image2D
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.cohort.volumes import Volume, read_volume, read_volume_mask
from Rad4XCNNLogic.errors import Rad4XCNNError

SPACING = (0.7, 0.9, 2.5)
ORIGIN = (-20.0, 14.5, -33.0)


def _direction() -> tuple[float, ...]:
    c, s = math.cos(0.3), math.sin(0.3)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture
def mrml():
    return mb.headless_slicer()


def _volume(shape=(6, 14, 12), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(100, 20, shape).astype(np.float32), SPACING, ORIGIN, _direction())


def _ct_with_segment(name="ct01", label="malignant"):
    volume = _volume()
    node = mb.volume_node_from_volume(volume, name)
    node.SetAttribute("Rad4XCNN.label", label)
    mask = np.zeros(volume.shape, np.uint8)
    mask[2:5, 4:10, 3:8] = 1
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} seg")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", [1, 0, 0])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, "lesion", node)
    return volume, node, mask


def test_volume_geometry_round_trip_through_a_node(mrml):
    volume = _volume()
    node = mb.volume_node_from_volume(volume, "ct")
    assert mb.is_volume_3d(node)
    back = mb.volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, SPACING, atol=1e-9)
    np.testing.assert_allclose(back.origin, ORIGIN, atol=1e-9)
    np.testing.assert_allclose(back.direction, _direction(), atol=1e-9)
    # RAS in Slicer: the first two axes flip sign against SimpleITK's LPS
    assert np.allclose(mb.ijk_to_ras_array(node)[:3, 3], (20.0, -14.5, -33.0))


def test_scene_volume_with_3d_segmentation_exports_as_it_is(mrml, tmp_path):
    volume, _, mask = _ct_with_segment()
    manifest = masks.export_scene_cohort(masks.scene_image_segmentation_pairs(), tmp_path)
    cohort = read_manifest(manifest)
    assert cohort.dims == 3 and [c.case_id for c in cohort.cases] == ["ct01"]
    case = cohort.cases[0]
    assert case.label == "malignant"
    image = read_volume(case.image, case.case_id)
    np.testing.assert_array_equal(image.array, volume.array)
    np.testing.assert_allclose(image.spacing, SPACING, atol=1e-6)
    np.testing.assert_allclose(image.origin, ORIGIN, atol=1e-6)
    np.testing.assert_allclose(image.direction, _direction(), atol=1e-6)
    written = read_volume_mask(case.masks, image, case.case_id)
    np.testing.assert_array_equal(np.asarray(written) != 0, mask != 0)


def test_mixed_2d_and_3d_scene_is_one_line(mrml, tmp_path):
    _ct_with_segment()
    flat = mb.volume_node_from_image(Image2D(np.ones((10, 12), np.float32)), "us01")
    mask = np.zeros((10, 12), bool)
    mask[3:6, 4:8] = True
    masks.segmentation_from_mask(mask, flat, "us01 seg")
    with pytest.raises(Rad4XCNNError, match=r"mixes 2D images and 3D volumes \('us01'.*'ct01'") as err:
        masks.export_scene_cohort(masks.scene_image_segmentation_pairs(), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "manifest.csv").exists()


def _write_map(volume: Volume, array: np.ndarray, path):
    sitk.WriteImage(volume.to_sitk(array.astype(np.float32)), str(path))
    return path


def test_3d_cam_nrrd_is_a_foreground_volume_in_the_image_geometry(mrml, tmp_path):
    volume, node, _ = _ct_with_segment()
    cam = np.random.default_rng(1).random(volume.shape).astype(np.float32) * 3
    path = _write_map(volume, cam, tmp_path / "ct01_gradcam.nrrd")
    overlay = overlays.cam_overlay(mb.read_map_array(path), node, opacity=0.35)
    assert slicer.util.arrayFromVolume(overlay).shape == volume.shape
    np.testing.assert_allclose(mb.ijk_to_ras_array(overlay), mb.ijk_to_ras_array(node))
    shown = slicer.util.arrayFromVolume(overlay)
    assert shown.min() == pytest.approx(0.0) and shown.max() == pytest.approx(1.0)
    layers = overlays.slice_layers()
    assert layers and all(
        (layer["background"], layer["foreground"]) == (node.GetID(), overlay.GetID()) for layer in layers
    )
    assert all(layer["opacity"] == pytest.approx(0.35) for layer in layers)
    assert overlay.GetDisplayNode().GetColorNode().GetName() == overlays.HEAT_COLOUR_NAME
    assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(overlay) is not None
    with pytest.raises(Rad4XCNNError, match="does not match the 6 x 14 x 12"):
        overlays.cam_overlay(cam[:-1], node)


def test_3d_feature_map_nrrd_loads_over_its_volume(mrml, tmp_path):
    volume, node, mask = _ct_with_segment()
    values = np.where(mask > 0, np.linspace(1, 2, mask.size).reshape(mask.shape), 0.0)
    path = _write_map(volume, values, tmp_path / "ct01_original_firstorder_Mean.nrrd")
    feature = mapviews.feature_map_volume(path, node, "original_firstorder_Mean")
    np.testing.assert_allclose(mb.ijk_to_ras_array(feature), mb.ijk_to_ras_array(node))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(feature), values, rtol=1e-6)
    mapviews.show_feature_map(feature, node, "instead", opacity=0.6)
    assert {layer["foreground"] for layer in overlays.slice_layers()} == {feature.GetID()}


def test_volume_rendering_option_sets_up_the_3d_view(mrml):
    volume, node, _ = _ct_with_segment()
    overlay = overlays.cam_overlay(np.random.default_rng(2).random(volume.shape), node, volume_rendering=True)
    display = overlays.volume_rendering_logic().GetFirstVolumeRenderingDisplayNode(overlay)
    assert display is not None and display.GetVisibility()
    opacity = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    assert opacity.GetValue(0.1) == pytest.approx(0.0) and opacity.GetValue(1.0) == pytest.approx(0.6)
    # called again, the same display node is reused
    overlays.show_volume_rendering(overlay)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 1


def test_volume_rendering_without_the_module_is_one_line(mrml, monkeypatch):
    volume, node, _ = _ct_with_segment()
    without = types.SimpleNamespace(
        **{k: v for k, v in vars(slicer.modules).items() if k != "volumerendering"}
    )
    monkeypatch.setattr(slicer, "modules", without)
    with pytest.raises(Rad4XCNNError, match="volume rendering is not available") as err:
        overlays.cam_overlay(np.ones(volume.shape), node, volume_rendering=True)
    assert "\n" not in str(err.value)
    flat = mb.volume_node_from_image(Image2D(np.ones((8, 8), np.float32)), "flat")
    monkeypatch.undo()
    with pytest.raises(Rad4XCNNError, match="single slice"):
        overlays.show_volume_rendering(flat)


def test_case_panel_exports_a_3d_case_from_a_segment_or_a_labelmap(mrml, tmp_path):
    from Rad4XCNNLib import results

    _, node, mask = _ct_with_segment()
    segmentation = slicer.mrmlScene.GetFirstNodeByName("ct01 seg")
    labelmap = mb.volume_node_like(mask * 2, node, "ct01 label", node_class="vtkMRMLLabelMapVolumeNode")
    for lesion in (segmentation, labelmap):
        folder = tmp_path / lesion.GetName().replace(" ", "_")
        manifest = results.export_case({"CaseImage": node, "CaseMask": lesion}, folder)
        case = read_manifest(manifest).cases[0]
        loaded = case.load()
        assert isinstance(loaded.image, Volume) and loaded.image.spacing == pytest.approx(SPACING)
        np.testing.assert_array_equal(loaded.mask, mask != 0)


def test_a_3d_feature_map_renders_over_its_own_window(mrml):
    _, node, mask = _ct_with_segment()
    values = np.where(mask > 0, np.linspace(10, 20, mask.size).reshape(mask.shape), 0.0)
    feature = mapviews.feature_map_volume(values, node, "original_glcm_Contrast")
    display = overlays.show_volume_rendering(feature)
    low, high = feature.GetDisplayNode().GetWindowLevelMin(), feature.GetDisplayNode().GetWindowLevelMax()
    assert low > 9 and high < 21  # the lesion's values, not [0, 1] as for a CAM
    opacity = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    assert opacity.GetValue(low) == pytest.approx(0.0) and opacity.GetValue(high) == pytest.approx(0.6)
