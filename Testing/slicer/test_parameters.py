"""The module's parameter node on real MRML: defaults, typed values, node references, and a saved scene."""

from __future__ import annotations

import numpy as np
import pytest
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
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
    mp.set_value(node, "Threshold", 0.75)
    assert node.GetParameter("Threshold") == "0.75" and mp.get(node, "Threshold") == 0.75
    mp.set_value(node, "TopFeatures", 12)
    assert mp.get(node, "TopFeatures") == 12
    with pytest.raises(Rad4XCNNError, match=r"Threshold: 1.5 is outside \[0.05, 1.0\]"):
        mp.set_value(node, "Threshold", 1.5)
    with pytest.raises(Rad4XCNNError, match="CamMethod: 'lime' is not one of gradcam"):
        mp.set_value(node, "CamMethod", "lime")
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
    seg = mb.segmentation_from_mask(np.eye(8, 9, dtype=bool), volume, "us seg")
    table = mb.table_node_from_dataframe(__import__("pandas").DataFrame({"rho": [0.7]}), "explanations")
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
        "OutputFolder": str(tmp_path / "run"),
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


def test_pipeline_arguments(tmp_path):
    values = {"Backbone": "densenet121", "WeightsSource": "random", "Threshold": 0.65, "Device": "cuda"}
    assert mp.pipeline_arguments(values, "m.csv", "out") == [
        "run",
        "--manifest",
        "m.csv",
        "--out",
        "out",
        "--model",
        "densenet121",
        "--radiomics-params",
        "paper",
        "--threshold",
        "0.65",
        "--device",
        "cuda",
    ]
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
    args = mp.pipeline_arguments(values, "m.csv", "out")
    assert args[args.index("--weights") + 1] == str(checkpoint)
    assert args[args.index("--radiomics-params") + 1] == str(params)


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
def test_pipeline_argument_errors(values, message):
    with pytest.raises(Rad4XCNNError, match=message):
        mp.pipeline_arguments(values, "m.csv", "out")


def test_every_parameter_is_well_formed():
    for p in mp.PARAMETERS:
        assert p.kind in mp.WIDGET_CLASSES, p.name
        if p.kind == "choice":
            assert p.default in p.choices, p.name
        if p.kind != "node":
            assert p.parse(p.format(p.default)) == p.default, p.name
    widgets = [p.widget for p in mp.PARAMETERS if p.widget]
    assert len(widgets) == len(set(widgets))


def test_pipeline_arguments_parse_with_the_engine_cli(tmp_path):
    """The Run button's command line must be one that ``rad4xcnn run`` accepts (once the pipeline exists)."""
    from Rad4XCNNLogic.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    if "run" not in commands:
        pytest.skip("the engine has no 'rad4xcnn run' command yet (the pipeline stage)")
    values = {"Backbone": "resnet18", "WeightsSource": "random", "Threshold": 0.7, "Device": "cpu"}
    args = parser.parse_args(mp.pipeline_arguments(values, tmp_path / "m.csv", tmp_path / "out"))
    assert args.command == "run"
