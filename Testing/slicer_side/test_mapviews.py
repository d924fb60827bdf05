"""The Case panel's maps on real MRML: the CAM trust table, feature maps as volumes with a colour map, shown
instead of or beside the CAM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import mapviews, overlays, tables

from Rad4XCNNLogic.cohort.imageio import Image2D, write_image
from Rad4XCNNLogic.errors import Rad4XCNNError


@pytest.fixture
def scene():
    env = mb.headless_slicer()
    yellow = env.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    yellow.SetLayoutName("Yellow")
    image = Image2D(np.random.default_rng(1).normal(size=(20, 24)).astype(np.float32), spacing=(0.2, 0.3))
    return env, mb.volume_node_from_image(image, "c05"), image


def write_cam_folder(folder):
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "method": ["gradcam", "eigencam"],
            "flagged_maps": [0, 3],
            "road_combined": [0.12, -0.02],
            "deletion_auc": [0.2, 0.5],
            "insertion_auc": [0.7, 0.4],
            "randomisation_similarity": [0.05, 0.91],
            "paired_gain": [0.08, -0.01],
            "beats_baselines": [True, False],
            "verdict": ["supported: beats a random map", "not trustworthy: its maps barely change"],
        }
    ).to_csv(folder / "cam_summary.csv", index=False)
    pd.DataFrame(
        {
            "case_id": ["c05", "c05", "c06"],
            "method": ["gradcam", "eigencam", "gradcam"],
            "flags": ["", "saturated", ""],
            "road_combined": [0.3, -0.1, 0.2],
            "deletion_auc": [0.1, 0.6, 0.2],
            "insertion_auc": [0.8, 0.3, 0.7],
            "randomisation_similarity": [0.02, 0.95, 0.1],
        }
    ).to_csv(folder / "cam_metrics.csv", index=False)
    return folder


def test_trust_table_joins_the_cohort_verdict_and_the_case(scene, tmp_path):
    folder = write_cam_folder(tmp_path / "cam")
    node = mapviews.show_cam_trust(folder, "c05")
    frame = tables.dataframe_from_table_node(node)
    assert set(frame.index) == {"gradcam", "eigencam"}
    assert frame.loc["eigencam", "verdict"].startswith("not trustworthy")
    assert frame.loc["eigencam", "case_flags"] == "saturated" and frame.loc["gradcam", "case_flags"] == ""
    assert frame.loc["gradcam", "case_road_combined"] == pytest.approx(0.3)
    assert "Spearman" in node.GetColumnDescription("randomisation_similarity")
    assert frame.loc["gradcam", "paired_gain"] == pytest.approx(0.08)
    assert "random map" in node.GetColumnDescription("paired_gain")
    with pytest.raises(Rad4XCNNError, match=r"case c99 has no saliency map"):
        mapviews.cam_trust_frame(folder, "c99")
    with pytest.raises(Rad4XCNNError, match=r"no CAM summary in"):
        mapviews.cam_trust_frame(tmp_path)


def test_feature_map_volume_in_the_image_geometry_with_a_colour_map(scene, tmp_path):
    _, volume, image = scene
    value = np.zeros((20, 24), np.float32)
    value[5:10, 6:12] = np.arange(30, dtype=np.float32).reshape(5, 6) + 10.0
    path = write_image(tmp_path / "c05_original_glcm_Contrast.nrrd", value, like=image)
    node = mapviews.feature_map_volume(path, volume, "original_glcm_Contrast")
    value[6, 7] = np.nan  # undefined in memory: shown as 0, left out of the window
    assert mb.image_from_volume_node(mapviews.feature_map_volume(value, volume, "x")).array[6, 7] == 0.0
    assert np.allclose(mb.ijk_to_ras_array(node), mb.ijk_to_ras_array(volume))
    shown = mb.image_from_volume_node(node).array
    assert shown[5, 6] == 10.0 and shown[6, 7] == 17.0 and shown[0, 0] == 0.0
    display = node.GetDisplayNode()
    assert display.GetWindowLevelMin() == pytest.approx(
        10.0
    ) and display.GetWindowLevelMax() == pytest.approx(39.0)
    assert display.GetColorNodeID() == overlays.colour_node("Iron").GetID()
    for colour in mapviews.FEATURE_COLOURS:
        mapviews.set_feature_colour(node, colour)
        assert display.GetColorNodeID() == overlays.colour_node(colour).GetID()
    with pytest.raises(Rad4XCNNError, match=r"unknown colour table 'Plasma9'"):
        mapviews.set_feature_colour(node, "Plasma9")
    # its colour legend (Slicer's default legend), titled with the feature, follows the colour map
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
    assert legend is not None and legend.GetTitleText() == "original_glcm_Contrast" and legend.GetVisibility()
    assert legend.GetPrimaryDisplayNode() is display


def test_feature_map_instead_of_or_beside_the_cam(scene, tmp_path):
    _, volume, _ = scene
    cam = overlays.cam_overlay(np.random.default_rng(0).random((20, 24)), volume, opacity=0.4)
    feature = mapviews.feature_map_volume(np.ones((20, 24), np.float32), volume, "original_firstorder_Mean")
    mapviews.show_feature_map(feature, volume, "beside", opacity=0.5, cam_node=cam)
    layers = {layer["view"]: layer for layer in overlays.slice_layers()}
    assert layers["Red"]["foreground"] == cam.GetID() and layers["Yellow"]["foreground"] == feature.GetID()
    mapviews.show_feature_map(feature, volume, "instead")
    assert {layer["foreground"] for layer in overlays.slice_layers()} == {feature.GetID()}
    assert all(layer["background"] == volume.GetID() for layer in overlays.slice_layers())
    with pytest.raises(Rad4XCNNError, match=r"placement must be 'instead' or 'beside'"):
        mapviews.show_feature_map(feature, volume, "over")


def test_load_the_feature_maps_of_a_case(scene, tmp_path):
    _, volume, image = scene
    folder = tmp_path / "fm"
    for name in ("original_firstorder_Mean", "original_glcm_Contrast"):
        write_image(folder / f"c05_{name}.nrrd", np.full((20, 24), 2.0, np.float32), like=image)
    pd.DataFrame(
        {
            "case_id": ["c05", "c05", "c06"],
            "feature": ["original_firstorder_Mean", "original_glcm_Contrast", "original_firstorder_Mean"],
            "file": ["c05_original_firstorder_Mean.nrrd", "c05_original_glcm_Contrast.nrrd", "gone.nrrd"],
        }
    ).to_csv(folder / "featuremaps.csv", index=False)
    nodes = mapviews.load_feature_maps(folder, "c05", volume, colour="Rainbow")
    assert list(nodes) == ["original_firstorder_Mean", "original_glcm_Contrast"]
    assert nodes["original_glcm_Contrast"].GetAttribute("Rad4XCNN.featuremap") == "original_glcm_Contrast"
    assert mapviews.load_feature_maps(folder, "c06", volume) == {}
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3  # image + 2 maps


def test_show_case_maps_after_the_case_command(scene, tmp_path):
    _, volume, image = scene
    folder = tmp_path / "case"
    write_cam_folder(folder / "cam")
    pd.DataFrame({"case_id": ["c05"], "image": ["images/c05.nrrd"], "mask": ["masks/c05_mask.nrrd"]}).to_csv(
        folder / "manifest.csv", index=False
    )
    maps = folder / "featuremaps"
    write_image(maps / "c05_original_firstorder_Mean.nrrd", np.full((20, 24), 3.0, np.float32), like=image)
    pd.DataFrame(
        {
            "case_id": ["c05"],
            "feature": ["original_firstorder_Mean"],
            "file": ["c05_original_firstorder_Mean.nrrd"],
        }
    ).to_csv(maps / "featuremaps.csv", index=False)
    notes = mapviews.show_case_maps(folder, volume)
    assert notes == [
        "which map to trust: table 'Rad4XCNN CAM trust'",
        "1 radiomic feature map(s) loaded (original_firstorder_Mean)",
    ]
    mapviews.show_case_maps(folder, volume)  # again: the trust table is refilled, not duplicated
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    assert mapviews.show_case_maps(tmp_path / "nothing", volume) == []


def test_case_maps_are_placed_and_recoloured_from_the_panel(scene, tmp_path):
    _, volume, image = scene
    folder = tmp_path / "case"
    folder.mkdir()
    pd.DataFrame({"case_id": ["c05"], "image": ["i.nrrd"], "mask": ["m.nrrd"]}).to_csv(
        folder / "manifest.csv", index=False
    )
    maps = folder / "featuremaps"
    write_image(maps / "c05_original_glcm_Contrast.nrrd", np.full((20, 24), 3.0, np.float32), like=image)
    pd.DataFrame(
        {
            "case_id": ["c05"],
            "feature": ["original_glcm_Contrast"],
            "file": ["c05_original_glcm_Contrast.nrrd"],
        }
    ).to_csv(maps / "featuremaps.csv", index=False)
    cam = overlays.cam_overlay(np.random.default_rng(0).random((20, 24)), volume, opacity=0.4)
    notes = mapviews.show_case_maps(folder, volume, colour="Rainbow", placement="beside", cam_node=cam)
    assert notes[-1].startswith("original_glcm_Contrast shown beside")
    layers = {layer["view"]: layer for layer in overlays.slice_layers()}
    (feature,) = mapviews.feature_map_nodes()
    assert layers["Red"]["foreground"] == cam.GetID() and layers["Yellow"]["foreground"] == feature.GetID()
    colour = feature.GetDisplayNode().GetColorNodeID()
    assert mapviews.recolour_feature_maps("Grey") == 1
    assert feature.GetDisplayNode().GetColorNodeID() not in (colour, None)
    assert cam.GetDisplayNode().GetColorNodeID() != feature.GetDisplayNode().GetColorNodeID()


def test_case_command_asks_for_feature_maps_when_the_panel_does(tmp_path, monkeypatch):
    from Rad4XCNNLib import results

    from Rad4XCNNLogic.cli import build_parser

    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(results, "export_case", lambda values, folder: folder / "manifest.csv")
    values = {"OutputFolder": str(run), "Backbone": "resnet18", "WeightsSource": "random", "TopFeatures": 3}
    plain = results.case_command(values, tmp_path / "case")
    assert "--top-from-run" not in plain
    argv = results.case_command({**values, "FeatureMaps": True}, tmp_path / "case")
    assert argv[argv.index("--top") + 1] == "3" and "--top-from-run" in argv
    args = build_parser().parse_args(argv)  # the engine's own parser accepts the module's command
    assert args.top_from_run and args.top == 3 and args.run == str(run)
