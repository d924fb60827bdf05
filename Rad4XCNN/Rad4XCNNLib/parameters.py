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
from Rad4XCNNLogic.features.settings import DEVICES, PRESETS
from Rad4XCNNLogic.features.volume_nets import VOLUME_NETS, is_volume_net
from Rad4XCNNLogic.run.config import setting

MODULE_NAME = "Rad4XCNN"


def split_items(text: str) -> list[str]:
    """The items of a comma-separated list as typed in the panel.

    Examples
    --------
    >>> split_items(" label, cohort ,"), split_items("")
    (['label', 'cohort'], [])
    """
    return [item.strip() for item in str(text).split(",") if item.strip()]


#: Suggested backbones: 2D timm networks (any timm model name may be typed in), then the engine's native 3D
#: networks (MONAI), for volumes only.
BACKBONES = ("resnet50", "densenet121", "resnet18", "vit_base_patch16_224", *VOLUME_NETS)
WEIGHT_SOURCES = ("imagenet", "checkpoint", "random")
RADIOMICS_PRESETS = (*PRESETS, "file")
#: Colour maps offered for feature maps (Slicer's built-in colour nodes, found in every scene, plus heat).
FEATURE_COLOURS = ("Iron", "Rainbow", "Grey", "heat", "PET-Heat", "Cool1", "Warm1")
#: Where a feature map is shown: instead of the CAM in every slice view, or beside it (other views).
FEATURE_PLACEMENTS = ("instead", "beside")
#: The file the Run button writes into the run folder, and hands to ``rad4xcnn run``.
RUN_CONFIGURATION = "rad4xcnn_run.yaml"
#: The smallest step of the widgets that show a number (their lowest value above an open lower bound).
STEP = 0.01
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
    "list": ("QLineEdit",),
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
    #: the run-configuration setting this parameter stands for: its rule is the setting's
    setting: str | None = None

    @classmethod
    def of_setting(cls, name: str, kind: str, key: str, widget: str | None = None, **kwargs) -> Parameter:
        """A parameter that stands for run-configuration setting ``key``: its default, help, choices and
        limits come from the configuration's metadata, and :meth:`format` checks values by its rule."""
        s = setting(key)
        # a list setting shown as one value (M: the first threshold) or, kind "list", as all of them
        default = s.default[0] if s.is_list and s.default and kind != "list" else s.default
        limits = {}
        if s.interval is not None:
            limits = {"minimum": s.interval.smallest(STEP), "maximum": s.interval.largest(STEP)}
        return cls(
            name,
            kind,
            default,
            widget,
            kwargs.pop("help", s.help),
            choices=kwargs.pop("choices", s.choices or ()),
            setting=key,
            **limits,
            **kwargs,
        )

    def parse(self, text: str | None) -> Any:
        """The typed value of the stored ``text`` (the default when missing or unreadable)."""
        if text is None or (text == "" and self.kind != "list"):  # an empty list is a value: [] (pooled)
            return self.default
        try:
            if self.kind == "float":
                value = float(text)
                return value if math.isfinite(value) else self.default
            if self.kind == "int":
                return int(float(text))
            if self.kind == "bool":
                return text.strip().lower() in ("1", "true", "yes", "on")
            if self.kind == "list":
                return split_items(text)
        except ValueError:
            return self.default
        if self.kind == "choice" and text not in self.choices:
            return self.default if self.setting is None or self._problem(text) else text
        return text

    def _checked(self, value: Any) -> Any:
        """``value`` in the engine's spelling, checked by the rule of the setting it stands for."""
        try:
            return setting(self.setting).validate(value)
        except Rad4XCNNError as exc:  # "configuration: key: problem" -> "Name: problem"
            raise Rad4XCNNError(f"{self.name}: {str(exc).split(': ', 2)[-1]}") from None

    def _problem(self, value: Any) -> str | None:
        try:
            self._checked(value)
        except Rad4XCNNError as exc:
            return str(exc)
        return None

    def format(self, value: Any) -> str:
        """``value`` checked and written as the stored text.

        A parameter that stands for a run-configuration setting is checked by that setting's rule alone
        (the engine's metadata, which also maps other spellings, e.g. ``Grad-CAM`` to ``gradcam``); the
        module's own parameters by their choices or limits.
        """
        if value is None:
            return ""
        if self.kind == "list":
            value = split_items(value) if isinstance(value, str) else list(value)
        if self.setting is not None:
            value = self._checked(value)
        elif self.kind == "choice" and str(value) not in self.choices:
            raise Rad4XCNNError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
        if self.kind in ("float", "int"):
            number = float(value)
            if not math.isfinite(number):
                raise Rad4XCNNError(f"{self.name}: expected a number, got {value!r}")
            outside = (self.minimum is not None and number < self.minimum) or (
                self.maximum is not None and number > self.maximum
            )
            if self.setting is None and outside:
                raise Rad4XCNNError(f"{self.name}: {value} is outside [{self.minimum}, {self.maximum}]")
            return str(int(number)) if self.kind == "int" else repr(number)
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "list":
            return ", ".join(map(str, value))
        return str(value)


PARAMETERS: tuple[Parameter, ...] = (
    # the model shared by the case and the cohort
    Parameter(
        "Backbone",
        "text",
        "resnet50",
        "backboneComboBox",
        "a timm model name (2D; a volume goes through it slice by slice), or a native 3D network "
        "(monai_*), for CT and MR volumes only: MONAI is installed when a run first needs it",
        choices=BACKBONES,
    ),
    Parameter(
        "WeightsSource",
        "choice",
        "imagenet",
        "weightsSourceComboBox",
        "ImageNet weights (timm downloads them once), a fine-tuned checkpoint file, or random weights; a 3D "
        "network has no ImageNet weights",
        choices=WEIGHT_SOURCES,
    ),
    Parameter(
        "WeightsPath",
        "path",
        "",
        "weightsPathLineEdit",
        "checkpoint file (.pt, .pth, .safetensors); for a 3D network also a MONAI or MedicalNet weights file",
    ),
    Parameter.of_setting("Device", "choice", "device", "deviceComboBox", choices=DEVICES),
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
    Parameter.of_setting("CamMethod", "choice", "cam.methods", "camMethodComboBox", help="saliency method"),
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
        "VolumeRendering",
        "bool",
        False,
        "volumeRenderingCheckBox",
        "for a 3D volume, also render the CAM in the 3D view (volume rendering)",
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
    Parameter(
        "FeatureMaps",
        "bool",
        False,
        "featureMapsCheckBox",
        "also compute voxel-based radiomic feature maps of the radiomic features that explain the top deep "
        "features (slower: PyRadiomics' voxel-based extraction)",
    ),
    Parameter(
        "FeatureMapColour",
        "choice",
        FEATURE_COLOURS[0],
        "featureMapColourComboBox",
        "colour map of the feature maps",
        choices=FEATURE_COLOURS,
    ),
    Parameter(
        "FeatureMapPlacement",
        "choice",
        FEATURE_PLACEMENTS[0],
        "featureMapPlacementComboBox",
        "show a feature map instead of the CAM, or beside it (the CAM stays in the Red view)",
        choices=FEATURE_PLACEMENTS,
    ),
    # the cohort
    Parameter("CohortSource", "choice", "manifest", "cohortSourceComboBox", choices=COHORT_SOURCES),
    Parameter(
        "ManifestPath",
        "path",
        "",
        "manifestPathLineEdit",
        "cohort manifest CSV (README: the cohort manifest)",
    ),
    Parameter(
        "RadiomicsPreset",
        "choice",
        "paper",
        "radiomicsPresetComboBox",
        "'paper': the 474 features of the paper; 'extended': more filters; 'file': a PyRadiomics YAML file",
        choices=RADIOMICS_PRESETS,
    ),
    Parameter("RadiomicsParamsPath", "path", "", "radiomicsParamsPathLineEdit", "PyRadiomics parameter file"),
    Parameter.of_setting(
        "Threshold",
        "float",
        "explain.thresholds",
        "thresholdSliderWidget",
        help="M: a deep feature is explained by a radiomic feature when |Spearman rho| >= M",
    ),
    Parameter.of_setting("Stratify", "list", "explain.stratify", "stratifyLineEdit"),
    Parameter("OutputFolder", "path", "", "outputFolderPathLineEdit", "the run folder"),
    Parameter(
        "ReuseOutputs",
        "bool",
        False,
        "reuseOutputsCheckBox",
        "refill the previous run's tables and plots instead of adding new ones named after this run",
    ),
    # results (node references kept with the scene; no widget)
    Parameter("ExplanationsTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("CorrelationsTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("ClassificationTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("CaseTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("ProbesTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("CkaTable", "node", node_classes=("vtkMRMLTableNode",)),
    Parameter("ConceptsTable", "node", node_classes=("vtkMRMLTableNode",)),
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
    """Give every setting that the node does not hold yet its default (values already set are kept, an empty
    list too: vtkMRMLScriptedModuleNode::HasParameter at v5.10.0)."""
    for parameter in PARAMETERS:
        if parameter.kind == "node" or parameter.default in (None, "") or node.HasParameter(parameter.name):
            continue
        node.SetParameter(parameter.name, parameter.format(parameter.default))


def get(node, name: str) -> Any:
    """The typed value of one setting (a node for node references)."""
    parameter = _parameter(name)
    if parameter.kind == "node":
        return node.GetNodeReference(name)
    return parameter.parse(node.GetParameter(name) if node.HasParameter(name) else None)


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
    if not node.HasParameter(name) or node.GetParameter(name) != text:
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


# ------------------------------------------------------------------------------------------ the network
def model_problem(values: Mapping[str, Any], dims: int | None = None) -> str | None:
    """What to do instead, in one line, when the network of the settings ``values`` cannot run: a native 3D
    network on 2D images (``dims``: 2 or 3, the dimensions of the run's images; None when not known) or
    with ImageNet weights (it has none). None when it can.

    Examples
    --------
    >>> model_problem({"Backbone": "monai_resnet18", "WeightsSource": "random"}, dims=3) is None
    True
    >>> model_problem({"Backbone": "monai_resnet18", "WeightsSource": "imagenet"})[:55]
    'monai_resnet18 is a 3D network without ImageNet weights'
    """
    backbone = str(values.get("Backbone") or "").strip()
    if not is_volume_net(backbone):
        return None
    if dims == 2:
        return (
            f"{backbone} is a 3D network, for CT or MR volumes, and these images are 2D: choose a 2D "
            f"backbone ({', '.join(b for b in BACKBONES if not is_volume_net(b))}, or any timm name)"
        )
    if (values.get("WeightsSource") or BY_NAME["WeightsSource"].default) == "imagenet":
        return (
            f"{backbone} is a 3D network without ImageNet weights: set Weights to 'checkpoint' with a MONAI "
            "or MedicalNet weights file (or a rad4xcnn checkpoint), or to 'random' to try the pipeline"
        )
    return None


def check_model(values: Mapping[str, Any], dims: int | None = None) -> None:
    """Raise :func:`model_problem`'s line as a :class:`Rad4XCNNError` when there is one."""
    problem = model_problem(values, dims)
    if problem:
        raise Rad4XCNNError(problem)


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


def run_configuration(values: Mapping[str, Any], manifest: str | Path, out: str | Path) -> dict:
    """The ``rad4xcnn run`` configuration of the Cohort panel's settings (validated by the engine's rules).

    Examples
    --------
    >>> config = run_configuration({"Backbone": "resnet50", "Threshold": 0.6}, "m.csv", "run")
    >>> config["models"], config["explain"]
    ([{'name': 'resnet50', 'weights': 'imagenet'}], {'thresholds': [0.6], 'stratify': ['label', 'cohort']})
    """
    from Rad4XCNNLogic.run.config import config_from_dict

    backbone = str(values.get("Backbone") or "").strip()
    if not backbone:
        raise Rad4XCNNError("choose a backbone network")
    check_model(values)  # a 3D network's weights (its images are checked where they are known)
    config = {
        "manifest": str(manifest),
        "out": str(out),
        "device": str(values.get("Device") or BY_NAME["Device"].default),
        "models": [{"name": backbone, "weights": weights_argument(values)}],
        "radiomics": {"params": radiomics_argument(values)},
        # M as the parameter node holds it (checked by explain.thresholds' rule when it was set)
        "explain": {
            "thresholds": [values.get("Threshold", BY_NAME["Threshold"].default)],
            "stratify": list(values.get("Stratify", BY_NAME["Stratify"].default)),
        },
    }
    config_from_dict(config)  # the same rules as a configuration file: a bad value is named here
    return config


def write_run_configuration(values: Mapping[str, Any], manifest: str | Path, out: str | Path) -> Path:
    """Write the run configuration of :func:`run_configuration` into the run folder (``rad4xcnn_run.yaml``),
    for ``rad4xcnn run CONFIG``: the module and the command line share one representation of a run."""
    import yaml

    from Rad4XCNNLogic.infra.storage import write_text_atomic

    config = run_configuration(values, manifest, out)
    header = "# written by the Rad4XCNN Slicer module; run it again with: rad4xcnn run THIS_FILE\n"
    return write_text_atomic(Path(out) / RUN_CONFIGURATION, header + yaml.safe_dump(config, sort_keys=False))
