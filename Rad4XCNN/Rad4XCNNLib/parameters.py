"""The Slicer module's settings: one parameter node holds them all, so a saved scene restores the module.

:data:`PARAMETERS` lists every setting with its default, allowed values and the widget of ``Rad4XCNN.ui``
bound to it; the module's widget binds them generically and the static test checks the names against the
.ui file. Values are stored as plain text (and nodes as node references) on a ``vtkMRMLScriptedModuleNode``,
so a saved ``.mrml`` scene stays readable. Nothing here imports ``slicer``: nodes are used through their
methods, which lets the same code run in Slicer and on the ``slicer-core`` wheel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.config import CAM_METHODS, DEVICES

MODULE_NAME = "Rad4XCNN"

#: Suggested backbones (any timm model name may be typed in).
BACKBONES = ("resnet50", "densenet121", "resnet18", "vit_base_patch16_224")
WEIGHT_SOURCES = ("imagenet", "checkpoint", "random")
RADIOMICS_PRESETS = ("paper", "extended", "file")
COHORT_SOURCES = ("manifest", "scene")

#: The Qt/CTK/MRML widget classes that can show each kind of parameter (checked against the .ui file).
WIDGET_CLASSES = {
    "node": ("qMRMLNodeComboBox",),
    "choice": ("QComboBox", "ctkComboBox"),
    "text": ("QComboBox", "ctkComboBox", "QLineEdit"),
    "path": ("ctkPathLineEdit",),
    "float": ("ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox", "qMRMLSliderWidget"),
    "int": ("QSpinBox", "ctkSliderWidget"),
    "bool": ("QCheckBox", "ctkCheckBox"),
}


@dataclass(frozen=True)
class Parameter:
    """One setting of the module: its parameter-node name, kind, default, limits and bound widget."""

    name: str
    kind: str
    default: Any = None
    widget: str | None = None
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    node_classes: tuple[str, ...] = ()

    def parse(self, text: str | None) -> Any:
        """The typed value of the stored ``text`` (the default when missing or unreadable)."""
        if text is None or text == "":
            return self.default
        try:
            if self.kind == "float":
                value = float(text)
                return value if math.isfinite(value) else self.default
            if self.kind == "int":
                return int(float(text))
            if self.kind == "bool":
                return text.strip().lower() in ("1", "true", "yes", "on")
        except ValueError:
            return self.default
        if self.kind == "choice" and text not in self.choices:
            return self.default
        return text

    def format(self, value: Any) -> str:
        """``value`` checked against the limits and written as the stored text."""
        if value is None:
            return ""
        if self.kind == "choice":
            if str(value) not in self.choices:
                raise Rad4XCNNError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
            return str(value)
        if self.kind in ("float", "int"):
            number = float(value)
            if not math.isfinite(number):
                raise Rad4XCNNError(f"{self.name}: expected a number, got {value!r}")
            if (self.minimum is not None and number < self.minimum) or (
                self.maximum is not None and number > self.maximum
            ):
                raise Rad4XCNNError(f"{self.name}: {value} is outside [{self.minimum}, {self.maximum}]")
            return str(int(number)) if self.kind == "int" else repr(number)
        if self.kind == "bool":
            return "true" if value else "false"
        return str(value)


PARAMETERS: tuple[Parameter, ...] = (
    # the model shared by the case and the cohort
    Parameter("Backbone", "text", "resnet50", "backboneComboBox", "timm model name", choices=BACKBONES),
    Parameter(
        "WeightsSource",
        "choice",
        "imagenet",
        "weightsSourceComboBox",
        "ImageNet weights (timm downloads them once), a fine-tuned checkpoint file, or random weights",
        choices=WEIGHT_SOURCES,
    ),
    Parameter("WeightsPath", "path", "", "weightsPathLineEdit", "checkpoint file (.pt, .pth, .safetensors)"),
    Parameter("Device", "choice", "auto", "deviceComboBox", "where the network runs", choices=DEVICES),
    # the case
    Parameter(
        "CaseImage",
        "node",
        widget="caseImageSelector",
        help="the 2D image (a single-slice scalar or RGB volume)",
        node_classes=("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"),
    ),
    Parameter(
        "CaseMask",
        "node",
        widget="caseMaskSelector",
        help="the lesion: a segmentation (choose the segment) or a labelmap",
        node_classes=("vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"),
    ),
    Parameter("CaseSegment", "text", "", "caseSegmentComboBox", "the segment of the segmentation"),
    Parameter("CamMethod", "choice", "gradcam", "camMethodComboBox", "saliency method", choices=CAM_METHODS),
    Parameter(
        "CamOpacity",
        "float",
        0.5,
        "camOpacitySliderWidget",
        "opacity of the CAM overlay",
        minimum=0,
        maximum=1,
    ),
    Parameter(
        "TopFeatures",
        "int",
        5,
        "topFeaturesSpinBox",
        "how many of the classifier's most important deep features to explain for this case",
        minimum=1,
        maximum=50,
    ),
    # the cohort
    Parameter("CohortSource", "choice", "manifest", "cohortSourceComboBox", choices=COHORT_SOURCES),
    Parameter("ManifestPath", "path", "", "manifestPathLineEdit", "cohort manifest CSV (DESIGN.md §4)"),
    Parameter(
        "RadiomicsPreset",
        "choice",
        "paper",
        "radiomicsPresetComboBox",
        "'paper': the 474 features of the paper; 'extended': more filters; 'file': a PyRadiomics YAML file",
        choices=RADIOMICS_PRESETS,
    ),
    Parameter("RadiomicsParamsPath", "path", "", "radiomicsParamsPathLineEdit", "PyRadiomics parameter file"),
    Parameter(
        "Threshold",
        "float",
        0.6,
        "thresholdSliderWidget",
        "M: a deep feature is explained by a radiomic feature when |Spearman rho| >= M",
        minimum=0.05,
        maximum=1.0,
    ),
    Parameter("OutputFolder", "path", "", "outputFolderPathLineEdit", "the run folder"),
    # results (node references kept with the scene; no widget)
    Parameter("ExplanationsTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("CorrelationsTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("ClassificationTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("CaseTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("CoverageChart", "node", node_classes=("vtkMRMLPlotChartNode",)),
    Parameter("RhoChart", "node", node_classes=("vtkMRMLPlotChartNode",)),
    Parameter("CamVolume", "node", node_classes=("vtkMRMLScalarVolumeNode",)),
)
BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}


def _parameter(name: str) -> Parameter:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown module parameter {name!r}") from None


def parameter_node(scene, module_name: str = MODULE_NAME):
    """The module's singleton parameter node in ``scene``, created (with defaults) when missing.

    This does what Slicer's ``ScriptedLoadableModuleLogic.getParameterNode()`` does, for use without Slicer's
    application; inside Slicer, the module's logic calls that method and then :func:`set_defaults`.
    """
    node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(module_name)
        node.SetName(scene.GenerateUniqueName(module_name))
        node.SetAttribute("ModuleName", module_name)
        node = scene.AddNode(node)
    set_defaults(node)
    return node


def set_defaults(node) -> None:
    """Give every setting that the node does not hold yet its default (values already set are kept)."""
    for parameter in PARAMETERS:
        if (
            parameter.kind != "node"
            and not node.GetParameter(parameter.name)
            and parameter.default not in (None, "")
        ):
            node.SetParameter(parameter.name, parameter.format(parameter.default))


def get(node, name: str) -> Any:
    """The typed value of one setting (a node for node references)."""
    parameter = _parameter(name)
    if parameter.kind == "node":
        return node.GetNodeReference(name)
    return parameter.parse(node.GetParameter(name))


def set_value(node, name: str, value: Any) -> None:
    """Store one setting, checked against its limits (a node, or None, for node references)."""
    parameter = _parameter(name)
    if parameter.kind == "node":
        if (
            value is not None
            and parameter.node_classes
            and not any(value.IsA(c) for c in parameter.node_classes)
        ):
            raise Rad4XCNNError(
                f"{name}: expected a {' or '.join(parameter.node_classes)}, got {value.GetClassName()}"
            )
        node.SetNodeReferenceID(name, None if value is None else value.GetID())
        return
    text = parameter.format(value)
    if node.GetParameter(name) != text:
        node.SetParameter(name, text)


def read_all(node) -> dict[str, Any]:
    """Every setting's typed value."""
    return {p.name: get(node, p.name) for p in PARAMETERS}


def write_all(node, values: Mapping[str, Any]) -> None:
    """Store several settings at once (one Modified event)."""
    was_modifying = node.StartModify()
    try:
        for name, value in values.items():
            set_value(node, name, value)
    finally:
        node.EndModify(was_modifying)


# --------------------------------------------------------------------------------------- command lines
def weights_argument(values: Mapping[str, Any]) -> str | None:
    """The ``--weights`` value of the settings: ``imagenet``, a checkpoint path, or None (random)."""
    source = values.get("WeightsSource") or "imagenet"
    if source == "imagenet":
        return "imagenet"
    if source == "checkpoint":
        path = values.get("WeightsPath") or ""
        if not path:
            raise Rad4XCNNError("choose the checkpoint file of the network's weights")
        if not Path(path).is_file():
            raise Rad4XCNNError(f"checkpoint file not found: {path}")
        return str(path)
    return None


def radiomics_argument(values: Mapping[str, Any]) -> str:
    """The ``--radiomics-params`` value: a preset name or the parameter file."""
    preset = values.get("RadiomicsPreset") or "paper"
    if preset != "file":
        return preset
    path = values.get("RadiomicsParamsPath") or ""
    if not path or not Path(path).is_file():
        raise Rad4XCNNError(f"PyRadiomics parameter file not found: {path or '(none chosen)'}")
    return str(path)


def pipeline_arguments(values: Mapping[str, Any], manifest: str | Path, out: str | Path) -> list[str]:
    """The ``rad4xcnn run`` arguments that the Cohort panel's Run button starts.

    Examples
    --------
    >>> args = pipeline_arguments({"Backbone": "resnet50", "Threshold": 0.6}, "m.csv", "run")
    >>> " ".join(args[6:])
    'resnet50 --weights imagenet --radiomics-params paper --threshold 0.6 --device auto'
    """
    backbone = str(values.get("Backbone") or "").strip()
    if not backbone:
        raise Rad4XCNNError("choose a backbone network")
    args = ["run", "--manifest", str(manifest), "--out", str(out), "--model", backbone]
    weights = weights_argument(values)
    if weights is not None:
        args += ["--weights", weights]
    args += ["--radiomics-params", radiomics_argument(values)]
    args += ["--threshold", f"{float(values.get('Threshold') or BY_NAME['Threshold'].default):g}"]
    args += ["--device", str(values.get("Device") or "auto")]
    return args
