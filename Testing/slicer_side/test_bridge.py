"""The MRML bridge on the slicer-core wheel: real MRML nodes, geometry both ways, masks, tables, plots, CAMs.

slicer-core is part of the ``slicer`` extra (installed by ``all``); these tests import it unconditionally so
that a missing wheel fails the suite instead of skipping it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import masks, overlays, plots, tables

from Rad4XCNNLogic.cohort.imageio import Image2D, read_image, read_mask, write_image
from Rad4XCNNLogic.errors import Rad4XCNNError


@pytest.fixture
def mrml():
    return mb.headless_slicer()


def _rotated(angle: float) -> tuple[float, float, float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return (c, -s, s, c)


def _image(shape=(40, 56), spacing=(0.3, 0.7), origin=(-12.5, 33.0), direction=(1.0, 0.0, 0.0, 1.0), seed=0):
    rng = np.random.default_rng(seed)
    return Image2D(rng.normal(100, 20, shape).astype(np.float32), spacing, origin, direction)


def _assert_same_geometry(a: Image2D, b: Image2D):
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-9)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-9)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-9)


# ------------------------------------------------------------------------------------------ geometry
def test_ijk_to_ras_flips_the_first_two_axes():
    image = _image(spacing=(0.5, 2.0), origin=(10.0, -5.0))
    m = mb.ijk_to_ras_from_image(image)
    np.testing.assert_allclose(m[:3, 3], [-10.0, 5.0, 0.0])
    np.testing.assert_allclose(np.diag(m)[:3], [-0.5, -2.0, 1.0])
    # the RAS position of pixel (row 3, column 7) is the LPS position of SimpleITK with x and y negated
    sitk_image = image.to_sitk()
    lps = sitk_image.TransformIndexToPhysicalPoint((7, 3))
    ras = m @ np.array([7, 3, 0, 1.0])
    np.testing.assert_allclose(ras[:2], [-lps[0], -lps[1]], atol=1e-9)


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0, 1.0), _rotated(0.4), (-1.0, 0.0, 0.0, 1.0)])
def test_image_round_trip_through_a_volume_node(mrml, direction):
    image = _image(direction=direction)
    node = mb.volume_node_from_image(image, "us")
    assert node.GetImageData().GetDimensions() == (56, 40, 1)
    back = mb.image_from_volume_node(node)
    _assert_same_geometry(back, image)
    np.testing.assert_array_equal(back.array, image.array)


def test_pixel_positions_agree_with_simpleitk(mrml):
    image = _image(direction=_rotated(-0.3))
    node = mb.volume_node_from_image(image, "us")
    sitk_image = image.to_sitk()
    for row, col in [(0, 0), (5, 9), (39, 55)]:
        lps = sitk_image.TransformIndexToPhysicalPoint((col, row))
        ras = mb.ijk_to_ras_array(node) @ np.array([col, row, 0, 1.0])
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], 0.0], atol=1e-9)


def test_file_read_by_slicer_matches_file_read_by_the_engine(mrml, tmp_path):
    """Slicer's own NRRD reader and the engine's SimpleITK reader must agree on the geometry."""
    image = _image(direction=_rotated(0.3))
    path = write_image(tmp_path / "case.nrrd", image.array, like=image)
    node = mrml.volumes.AddArchetypeVolume(str(path), "case")
    assert node is not None
    from_slicer = mb.image_from_volume_node(node)
    from_engine = read_image(path)
    _assert_same_geometry(from_slicer, from_engine)
    np.testing.assert_array_equal(from_slicer.array, from_engine.array)


def test_volume_written_by_slicer_reads_back_in_the_engine(mrml, tmp_path):
    image = _image(spacing=(0.25, 0.4), origin=(3.0, -8.0), direction=_rotated(-0.2))
    node = mb.volume_node_from_image(image, "us")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    mrml.scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "written.nrrd"))
    assert storage.WriteData(node)
    back = read_image(tmp_path / "written.nrrd")
    _assert_same_geometry(back, image)
    np.testing.assert_allclose(back.array, image.array)


def test_numbered_files_load_one_at_a_time(mrml, tmp_path):
    """Slicer would read "case (1).nrrd", "case (2).nrrd", ... as one 3D series; each is a 2D image here."""
    for i in (1, 2, 3):
        write_image(tmp_path / f"case ({i}).nrrd", np.full((6, 7), i, np.float32))
    node = mb.load_volume_file(tmp_path / "case (2).nrrd")
    assert node.GetName() == "case (2)"
    image = mb.image_from_volume_node(node)
    assert image.shape == (6, 7) and (image.array == 2).all()
    label = mb.load_volume_file(tmp_path / "case (3).nrrd", "mask", labelmap=True)
    assert label.IsA("vtkMRMLLabelMapVolumeNode")
    with pytest.raises(Rad4XCNNError, match="could not read"):
        mb.load_volume_file(tmp_path / "missing.nrrd")


def test_rgb_vector_volume_becomes_grey(mrml):
    rgb = np.zeros((1, 8, 10, 3), np.uint8)
    rgb[0, ..., 0], rgb[0, ..., 1], rgb[0, ..., 2] = 200, 100, 50
    node = slicer.util.addVolumeFromArray(rgb, name="rgb", nodeClassName="vtkMRMLVectorVolumeNode")
    image = mb.image_from_volume_node(node)
    assert image.shape == (8, 10)
    np.testing.assert_allclose(image.array, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, rtol=1e-6)


def test_single_slice_along_another_axis(mrml):
    """A coronal single-slice volume (thin along J) is still a 2D image: rows along K, columns along I."""
    array = np.arange(6 * 1 * 9, dtype=np.float32).reshape(6, 1, 9)
    node = slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([-0.5, -1.0, 2.0, 1.0]), name="coronal")
    image = mb.image_from_volume_node(node)
    assert image.shape == (6, 9)
    np.testing.assert_array_equal(image.array, array[:, 0, :])
    assert image.spacing == (0.5, 2.0)


def test_volume_and_label_errors(mrml):
    volume = slicer.util.addVolumeFromArray(np.zeros((3, 4, 5), np.float32), name="ct")
    with pytest.raises(Rad4XCNNError, match="'ct' has 3 slices"):
        mb.image_from_volume_node(volume)
    label = slicer.util.addVolumeFromArray(
        np.zeros((1, 4, 5), np.uint8), name="lm", nodeClassName="vtkMRMLLabelMapVolumeNode"
    )
    with pytest.raises(Rad4XCNNError, match="is a labelmap"):
        mb.image_from_volume_node(label)
    with pytest.raises(Rad4XCNNError, match="expected a scalar or vector volume"):
        mb.image_from_volume_node(None)


# --------------------------------------------------------------------------------------------- masks
def _lesion(shape=(40, 56)):
    mask = np.zeros(shape, bool)
    mask[10:22, 15:40] = True
    mask[12:14, 40:44] = True
    return mask


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0, 1.0), _rotated(0.5)])
def test_segment_mask_round_trip(mrml, direction):
    image = _image(direction=direction)
    volume = mb.volume_node_from_image(image, "us")
    mask = _lesion()
    seg = masks.segmentation_from_mask(mask, volume, "us seg")
    assert masks.segment_id_of(seg) == "lesion"
    np.testing.assert_array_equal(masks.mask_from_segment(seg, "lesion", volume), mask)
    np.testing.assert_array_equal(masks.mask_from_segment(seg, None, volume), mask)


def test_segment_drawn_on_another_grid_is_resampled(mrml):
    """A segment drawn on a 2x finer grid of the same field of view comes back on the image's grid."""
    image = _image(shape=(20, 30), spacing=(1.0, 1.0), origin=(0.0, 0.0))
    volume = mb.volume_node_from_image(image, "us")
    fine = Image2D(np.zeros((40, 60), np.float32), spacing=(0.5, 0.5), origin=(-0.25, -0.25))
    fine_volume = mb.volume_node_from_image(fine, "fine")
    fine_mask = np.zeros((40, 60), bool)
    fine_mask[10:20, 20:40] = True  # rows 5-9, columns 10-19 of the coarse grid
    seg = masks.segmentation_from_mask(fine_mask, fine_volume, "seg")
    coarse = masks.mask_from_segment(seg, "lesion", volume)
    expected = np.zeros((20, 30), bool)
    expected[5:10, 10:20] = True
    np.testing.assert_array_equal(coarse, expected)


def test_labelmap_mask_same_grid_label_value_and_cropped_grid(mrml):
    image = _image(shape=(30, 40), spacing=(0.5, 0.5), origin=(2.0, -3.0))
    volume = mb.volume_node_from_image(image, "us")
    labels = np.zeros((30, 40), np.uint8)
    labels[5:12, 6:20] = 1
    labels[20:25, 25:35] = 2
    same = mb.volume_node_from_array(labels, volume, "labels", node_class="vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(masks.mask_from_labelmap(same, volume), labels > 0)
    np.testing.assert_array_equal(masks.mask_from_labelmap(same, volume, label=2), labels == 2)
    # the same labels cropped to rows 4..27, columns 5..37 (another origin): resampled back to the full grid
    cropped_image = Image2D(
        labels[4:28, 5:38].astype(np.float32), spacing=(0.5, 0.5), origin=(2.0 + 5 * 0.5, -3.0 + 4 * 0.5)
    )
    cropped = mb.volume_node_from_image(cropped_image, "cropped", node_class="vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(masks.mask_from_labelmap(cropped, volume, label=1), labels == 1)
    empty = mb.volume_node_from_image(
        Image2D(np.zeros((5, 5), np.float32), origin=(2.0, -3.0)),
        "empty",
        node_class="vtkMRMLLabelMapVolumeNode",
    )
    assert not masks.mask_from_labelmap(empty, volume).any()
    temporary = [n.GetName() for n in slicer.util.getNodes("__rad4xcnn*").values()]
    assert temporary == []


def test_segment_choice_errors(mrml):
    volume = mb.volume_node_from_image(_image(), "us")
    seg = masks.segmentation_from_mask(_lesion(), volume, "seg", segment_name="tumour")
    masks.segmentation_from_mask(_lesion(), volume, "seg", segment_name="cyst", node=seg)
    with pytest.raises(Rad4XCNNError, match="has 2 segments \\(tumour, cyst\\); choose one"):
        masks.segment_id_of(seg)
    assert masks.segment_id_of(seg, "cyst") == "cyst"
    with pytest.raises(Rad4XCNNError, match="no segment 'bone'; segments: tumour, cyst"):
        masks.segment_id_of(seg, "bone")
    with pytest.raises(Rad4XCNNError, match="does not match the 40x56"):
        masks.segmentation_from_mask(np.zeros((3, 3), bool), volume, "bad")
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(Rad4XCNNError, match="'empty' has no segment"):
        masks.segment_id_of(empty)


# -------------------------------------------------------------------------------------------- tables
def test_table_round_trip_keeps_types_and_index(mrml):
    frame = pd.DataFrame(
        {
            "rho": [0.71, -0.65, np.nan],
            "n_partners": [3, 0, 12],
            "explained": [True, False, True],
            "partner": ["original_glcm_Contrast", None, "wavelet-LL_firstorder_Mean"],
        },
        index=pd.Index(["resnet50_1", "resnet50_7", "resnet50_9"], name="deep_feature"),
    )
    node = tables.table_node_from_dataframe(frame, "explanations", descriptions={"rho": "Spearman's rho"})
    assert node.GetNumberOfColumns() == 5
    assert node.GetColumnName(0) == "deep_feature"
    assert node.GetColumnDescription("rho") == "Spearman's rho"
    back = tables.dataframe_from_table_node(node)
    assert list(back.index) == list(frame.index)
    assert back.index.name == "deep_feature"
    np.testing.assert_allclose(back["rho"], frame["rho"])
    assert back["n_partners"].tolist() == [3, 0, 12]
    assert back["explained"].dtype == bool and back["explained"].tolist() == [True, False, True]
    assert back["partner"].tolist() == ["original_glcm_Contrast", "", "wavelet-LL_firstorder_Mean"]
    # refilling the same node replaces its columns
    tables.table_node_from_dataframe(frame[["rho"]].iloc[:1], "", node=node)
    assert tables.dataframe_from_table_node(node).shape == (1, 1)


def test_table_node_writes_the_csv_the_engine_reads(mrml, tmp_path):
    frame = pd.DataFrame({"AUC": [0.91, 0.84]}, index=pd.Index(["deep", "radiomic"], name="feature_set"))
    node = tables.table_node_from_dataframe(frame, "classification")
    storage = mrml.scene.AddNewNodeByClass("vtkMRMLTableStorageNode")
    storage.SetFileName(str(tmp_path / "classification.csv"))
    assert storage.WriteData(node)
    back = pd.read_csv(tmp_path / "classification.csv", index_col=0)
    pd.testing.assert_frame_equal(back, frame)


# --------------------------------------------------------------------------------------------- plots
def test_coverage_plot_series_and_threshold_marker(mrml):
    coverage = pd.DataFrame(
        {"resnet50": [0.9, 0.5, 0.1], "densenet121": [0.8, 0.4, 0.0]}, index=pd.Index([0.5, 0.6, 0.7])
    )
    chart = plots.plot_coverage(coverage, threshold=0.6)
    names = [chart.GetNthPlotSeriesNode(i).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert names == ["resnet50", "densenet121", "M"]
    x, y = plots.series_values(chart, "densenet121")
    np.testing.assert_allclose(x, [0.5, 0.6, 0.7])
    np.testing.assert_allclose(y, [0.8, 0.4, 0.0])
    np.testing.assert_allclose(plots.series_values(chart, "M")[0], [0.6, 0.6])
    assert chart.GetXAxisTitle().startswith("M ")
    # moving M updates the marker in place, without new nodes
    n_nodes = mrml.scene.GetNumberOfNodes()
    plots.plot_coverage(coverage, threshold=0.7, chart=chart)
    np.testing.assert_allclose(plots.series_values(chart, "M")[0], [0.7, 0.7])
    assert mrml.scene.GetNumberOfNodes() == n_nodes
    plots.set_threshold_marker(chart, None, (0, 1))
    assert chart.GetNumberOfPlotSeriesNodes() == 2


def test_rho_histogram_counts_and_split_at_m(mrml):
    rho = np.array([[-0.95, -0.62, 0.0], [0.05, 0.61, 0.99], [np.nan, 0.3, 0.3]])
    frame = plots.rho_histogram(rho, bins=10, threshold=0.6)
    assert frame.to_numpy().sum() == 8  # NaN left out
    assert frame["|rho| >= M"].sum() == 4  # -0.95, -0.62, 0.61, 0.99 (bins centred at |0.7| and |0.9|)
    assert frame.loc[0.3, "below M"] == 2
    chart = plots.plot_rho_histogram(rho, threshold=0.6, bins=10)
    x, y = plots.series_values(chart, "|rho| >= M")
    assert len(x) == 10 and y.sum() == 4
    assert chart.GetNthPlotSeriesNode(0).GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeBar
    plots.plot_rho_histogram(rho, threshold=0.9, bins=10, chart=chart)
    assert plots.series_values(chart, "|rho| >= M")[1].sum() == 2


def test_show_table_and_chart_select_them(mrml):
    table = tables.table_node_from_dataframe(pd.DataFrame({"a": [1.0]}), "t")
    tables.show_table(table)
    selection = mrml.application_logic.GetSelectionNode()
    assert selection.GetActiveTableID() == table.GetID()
    chart = plots.plot_rho_histogram([0.1, 0.2])
    plots.show_chart(chart)
    assert selection.GetActivePlotChartID() == chart.GetID()


# ---------------------------------------------------------------------------------------- CAM overlay
def test_heat_colour_table(mrml):
    node = overlays.heat_colour_node()
    assert node.GetNumberOfColors() == 256
    rgba = [0.0] * 4
    node.GetColor(0, rgba)
    assert rgba[:3] == [0.0, 0.0, 0.0]
    node.GetColor(255, rgba)
    assert rgba[:3] == [1.0, 1.0, 1.0]
    node.GetColor(153, rgba)  # position 0.6: orange
    np.testing.assert_allclose(rgba[:3], [1.0, 0.45, 0.0], atol=0.01)
    reds = []
    for i in range(256):
        node.GetColor(i, rgba)
        reds.append(rgba[0])
    assert all(b >= a for a, b in itertools.pairwise(reds))  # brightness never falls
    assert overlays.heat_colour_node() is node  # one per scene
    assert overlays.colour_node("Iron").GetID() == "vtkMRMLColorTableNodeIron"
    assert overlays.colour_node("PET-Heat").GetID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    with pytest.raises(Rad4XCNNError, match="unknown colour table 'Plasma'"):
        overlays.colour_node("Plasma")


def test_cam_overlay_geometry_display_and_layers(mrml, tmp_path):
    image = _image(direction=_rotated(0.2))
    volume = mb.volume_node_from_image(image, "us")
    rows, cols = np.mgrid[0:40, 0:56]
    cam = np.exp(-((rows - 15.0) ** 2 + (cols - 30.0) ** 2) / 50.0) * 7.0 + 2.0
    node = overlays.cam_overlay(cam, volume, opacity=0.35)
    np.testing.assert_allclose(mb.ijk_to_ras_array(node), mb.ijk_to_ras_array(volume))
    values = mb.image_from_volume_node(node).array
    assert values.max() == pytest.approx(1.0) and values.min() == pytest.approx(0.0)
    assert np.unravel_index(values.argmax(), values.shape) == (15, 30)
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == overlays.HEAT_COLOUR_NAME
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    (layer,) = overlays.slice_layers()
    assert layer == {"view": "Red", "background": volume.GetID(), "foreground": node.GetID(), "opacity": 0.35}
    overlays.set_overlay_opacity(0.8)
    assert overlays.slice_layers()[0]["opacity"] == pytest.approx(0.8)
    # the overlay written by Slicer is the CAM in the image's geometry, as the engine reads it
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    mrml.scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "cam.nrrd"))
    assert storage.WriteData(node)
    _assert_same_geometry(read_image(tmp_path / "cam.nrrd"), image)
    # a new CAM refills the same node; another colour table can be chosen
    again = overlays.cam_overlay(np.ones((40, 56)), volume, opacity=0.5, colour="Iron", node=node)
    assert again is node and not mb.image_from_volume_node(node).array.any()
    assert node.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeIron"


def test_cam_overlay_bad_input(mrml):
    volume = mb.volume_node_from_image(_image(), "us")
    with pytest.raises(Rad4XCNNError, match="does not match the 40x56"):
        overlays.cam_overlay(np.zeros((224, 224)), volume)
    with pytest.raises(Rad4XCNNError, match="NaN"):
        overlays.cam_overlay(np.full((40, 56), np.nan), volume)
    with pytest.raises(Rad4XCNNError, match="opacity must be between 0 and 1"):
        overlays.cam_overlay(np.zeros((40, 56)), volume, opacity=1.5)


# -------------------------------------------------------------------------------------- scene cohort
def test_scene_pairs_export_to_a_manifest_the_engine_loads(mrml, tmp_path):
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    images = [_image(seed=i, origin=(i * 10.0, -4.0)) for i in range(3)]
    lesions = [np.roll(_lesion(), 3 * i, axis=1) for i in range(3)]
    for i, (image, mask) in enumerate(zip(images, lesions, strict=True)):
        name = "case 1" if i == 1 else f"case{i}"
        volume = mb.volume_node_from_image(image, name)
        volume.SetAttribute("Rad4XCNN.label", "malignant" if i else "benign")
        masks.segmentation_from_mask(mask, volume, f"{name} seg")
    lonely = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no reference")  # skipped
    assert lonely is not None
    pairs = masks.scene_image_segmentation_pairs()
    assert [p.case_id for p in pairs] == ["case0", "case 1", "case2"]
    manifest = masks.export_scene_cohort(pairs, tmp_path / "cohort")
    cohort = read_manifest(manifest, check_images=True)
    assert cohort.case_ids == ["case0", "case_1", "case2"] and not cohort.failures
    assert [c.label for c in cohort.cases] == ["benign", "malignant", "malignant"]
    for case, image, mask in zip(cohort.cases, images, lesions, strict=True):
        loaded = case.load()
        _assert_same_geometry(loaded.image, image)
        np.testing.assert_allclose(loaded.image.array, image.array)
        np.testing.assert_array_equal(loaded.mask, mask)
        np.testing.assert_array_equal(read_mask(case.masks[0]), mask)


def test_every_segment_of_a_segmentation_is_a_case(mrml, tmp_path):
    """As SlicerRadiomics: one result per segment, whatever the segments are called."""
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    volume = mb.volume_node_from_image(_image(), "us")
    tumour, cyst = _lesion(), np.roll(_lesion(), 12, axis=1)
    seg = masks.segmentation_from_mask(tumour, volume, "seg", segment_name="tumour")
    masks.segmentation_from_mask(cyst, volume, "seg", segment_name="cyst", node=seg)
    mrml.scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", "empty"
    ).SetReferenceImageGeometryParameterFromVolumeNode(volume)  # no segment: no case
    pairs = masks.scene_image_segmentation_pairs()
    assert [p.case_id for p in pairs] == ["us tumour", "us cyst"]
    cohort = read_manifest(masks.export_scene_cohort(pairs, tmp_path), check_images=True)
    assert cohort.case_ids == ["us_tumour", "us_cyst"]
    np.testing.assert_array_equal(cohort.cases[1].load().mask, cyst)


def test_empty_scene_has_no_cohort(mrml, tmp_path):
    with pytest.raises(Rad4XCNNError, match="no image volume with a segmentation"):
        masks.export_scene_cohort(masks.scene_image_segmentation_pairs(), tmp_path)


def test_sitk_and_bridge_agree_on_direction_conventions(tmp_path, mrml):
    """A flipped-x NRRD (direction diag(-1, 1)) written by SimpleITK reads the same through both readers."""
    img = sitk.GetImageFromArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    img.SetDirection((-1.0, 0.0, 0.0, 1.0))
    img.SetOrigin((7.0, 2.0))
    img.SetSpacing((0.5, 1.5))
    sitk.WriteImage(img, str(tmp_path / "flip.nrrd"))
    node = mrml.volumes.AddArchetypeVolume(str(tmp_path / "flip.nrrd"), "flip")
    _assert_same_geometry(mb.image_from_volume_node(node), read_image(tmp_path / "flip.nrrd"))
