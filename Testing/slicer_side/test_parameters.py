"""The module's parameter node on real MRML: defaults, typed values, node references, and a saved scene."""

from __future__ import annotations

import numpy as np
import pytest
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import masks, tables
from Rad4XCNNLib import parameters as mp

from Rad4XCNNLogic.cohort.imageio import Image2D
from Rad4XCNNLogic.errors import Rad4XCNNError


@pytest.fixture
def mrml():
    return mb.headless_slicer()


def test_singleton_node_with_defaults(mrml):
    node = mp.parameter_node(mrml.scene)
    assert node.GetAttribute("ModuleName") == "Rad4XCNN"
    assert mp.parameter_node(mrml.scene) is node
    values = mp.read_all(node)
    assert values["Threshold"] == 0.6 and values["CamOpacity"] == 0.5 and values["TopFeatures"] == 5
    assert values["Backbone"] == "resnet50" and values["CamMethod"] == "gradcam"
    assert values["CaseImage"] is None and values["WeightsPath"] == ""


def test_typed_values_and_limits(mrml):
    node = mp.parameter_node(mrml.scene)
    assert mp.get(node, "Stratify") == ["label", "cohort"]
    mp.set_value(node, "Stratify", " scanner,label ")
    assert node.GetParameter("Stratify") == "scanner, label" and mp.get(node, "Stratify") == [
        "scanner",
        "label",
    ]
    mp.set_value(node, "Stratify", "")  # the paper's pooled rule: kept, not replaced by the default
    mp.set_defaults(node)
    assert mp.get(node, "Stratify") == []
    mp.set_value(node, "Threshold", 0.75)
    assert node.GetParameter("Threshold") == "0.75" and mp.get(node, "Threshold") == 0.75
    mp.set_value(node, "TopFeatures", 12)
    assert mp.get(node, "TopFeatures") == 12
    with pytest.raises(Rad4XCNNError, match=r"Threshold: must lie in \(0, 1\], got 1.5"):
        mp.set_value(node, "Threshold", 1.5)
    # the CAM method and the device by the engine's own rules, in the engine's spelling
    with pytest.raises(Rad4XCNNError, match="CamMethod: 'lime' is not allowed; allowed values: gradcam"):
        mp.set_value(node, "CamMethod", "lime")
    mp.set_value(node, "CamMethod", "Grad-CAM")
    assert node.GetParameter("CamMethod") == "gradcam"
    mp.set_value(node, "Device", "cuda:1")
    assert mp.get(node, "Device") == "cuda:1"
    with pytest.raises(Rad4XCNNError, match="WeightsSource: 'imagenet21k' is not one of"):
        mp.set_value(node, "WeightsSource", "imagenet21k")  # the module's own choice
    with pytest.raises(KeyError, match="unknown module parameter 'Colour'"):
        mp.set_value(node, "Colour", "red")
    # text edited by hand in a scene file falls back to the default rather than breaking the module
    node.SetParameter("Threshold", "not a number")
    node.SetParameter("Device", "tpu")
    assert mp.get(node, "Threshold") == 0.6 and mp.get(node, "Device") == "auto"


def test_node_references_are_checked(mrml):
    node = mp.parameter_node(mrml.scene)
    volume = mb.volume_node_from_image(Image2D(np.zeros((4, 5), np.float32)), "us")
    mp.set_value(node, "CaseImage", volume)
    assert mp.get(node, "CaseImage") is volume
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    with pytest.raises(Rad4XCNNError, match="CaseImage: expected a vtkMRMLScalarVolumeNode"):
        mp.set_value(node, "CaseImage", table)
    mp.set_value(node, "CaseImage", None)
    assert mp.get(node, "CaseImage") is None


def test_saved_scene_restores_every_setting(mrml, tmp_path):
    node = mp.parameter_node(mrml.scene)
    volume = mb.volume_node_from_image(Image2D(np.zeros((8, 9), np.float32), spacing=(0.5, 0.5)), "us")
    seg = masks.segmentation_from_mask(np.eye(8, 9, dtype=bool), volume, "us seg")
    table = tables.table_node_from_dataframe(__import__("pandas").DataFrame({"rho": [0.7]}), "explanations")
    chosen = {
        "Backbone": "densenet121",
        "WeightsSource": "checkpoint",
        "WeightsPath": str(tmp_path / "model.pt"),
        "Device": "cpu",
        "CaseImage": volume,
        "CaseMask": seg,
        "CaseSegment": "lesion",
        "CamMethod": "eigencam",
        "CamOpacity": 0.3,
        "TopFeatures": 8,
        "CohortSource": "scene",
        "ManifestPath": str(tmp_path / "manifest.csv"),
        "RadiomicsPreset": "extended",
        "Threshold": 0.7,
        "Stratify": [],
        "OutputFolder": str(tmp_path / "run"),
        "ReuseOutputs": True,
        "ExplanationsTable": table,
    }
    mp.write_all(node, chosen)
    scene_file = tmp_path / "scene" / "rad4xcnn.mrml"
    scene_file.parent.mkdir()
    mrml.scene.SetRootDirectory(str(scene_file.parent))
    mrml.scene.SetURL(str(scene_file))
    assert mrml.scene.Commit()

    restored = slicer.vtkMRMLScene()
    restored.SetURL(str(scene_file))
    assert restored.Connect()
    values = mp.read_all(mp.parameter_node(restored))
    for name, value in chosen.items():
        if hasattr(value, "GetID"):
            assert values[name].GetID() == value.GetID() and values[name].GetName() == value.GetName(), name
        else:
            assert values[name] == value, name


def test_run_configuration(tmp_path):
    values = {"Backbone": "densenet121", "WeightsSource": "random", "Threshold": 0.65, "Device": "cuda"}
    assert mp.run_configuration(values, "m.csv", "out") == {
        "manifest": "m.csv",
        "out": "out",
        "device": "cuda",
        "models": [{"name": "densenet121", "weights": None}],
        "radiomics": {"params": "paper"},
        "explain": {"thresholds": [0.65], "stratify": ["label", "cohort"]},  # the engine's default
    }
    # the pooled rule (nothing typed) is a value of its own, kept by the node
    assert mp.run_configuration({**values, "Stratify": []}, "m.csv", "out")["explain"]["stratify"] == []
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"x")
    params = tmp_path / "params.yaml"
    params.write_text("setting: {}\n")
    values.update(
        WeightsSource="checkpoint",
        WeightsPath=str(checkpoint),
        RadiomicsPreset="file",
        RadiomicsParamsPath=str(params),
    )
    config = mp.run_configuration(values, "m.csv", "out")
    assert config["models"][0]["weights"] == str(checkpoint)
    assert config["radiomics"]["params"] == str(params)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"Backbone": " "}, "choose a backbone network"),
        ({"Backbone": "resnet50", "WeightsSource": "checkpoint"}, "choose the checkpoint file"),
        (
            {"Backbone": "resnet50", "WeightsSource": "checkpoint", "WeightsPath": "/no/such.pt"},
            "checkpoint file not",
        ),
        ({"Backbone": "resnet50", "RadiomicsPreset": "file"}, "parameter file not found: \\(none chosen\\)"),
    ],
)
def test_run_configuration_errors(values, message):
    with pytest.raises(Rad4XCNNError, match=message):
        mp.run_configuration(values, "m.csv", "out")


def test_every_parameter_is_well_formed():
    for p in mp.PARAMETERS:
        assert p.kind in mp.WIDGET_CLASSES, p.name
        if p.kind == "choice":
            assert p.default in p.choices, p.name
        if p.kind != "node":
            assert p.parse(p.format(p.default)) == p.default, p.name
    widgets = [p.widget for p in mp.PARAMETERS if p.widget]
    assert len(widgets) == len(set(widgets))


def test_run_button_writes_a_configuration_that_rad4xcnn_run_reads(tmp_path):
    """The Run button hands ``rad4xcnn run`` a configuration file: one representation of a run."""
    from Rad4XCNNLogic.cli import build_parser
    from Rad4XCNNLogic.run.config import load_config

    values = {"Backbone": "resnet18", "WeightsSource": "random", "Threshold": 0.7, "Device": "cpu"}
    path = mp.write_run_configuration(values, tmp_path / "m.csv", tmp_path / "out")
    assert path == tmp_path / "out" / mp.RUN_CONFIGURATION
    args = build_parser().parse_args(["run", str(path)])
    assert args.command == "run" and args.config == str(path)
    config = load_config(path)
    assert config.explain.thresholds == [0.7] and config.models[0].name == "resnet18"
    assert config.models[0].weights is None and config.device == "cpu"
