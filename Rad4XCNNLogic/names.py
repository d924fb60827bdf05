"""Every encoded name of Rad4XCNN, encoded and decoded here and nowhere else: deep-feature columns,
feature-set names, PyRadiomics feature names and the run folder's file names (docs/ARCHITECTURE.md).

A name is written by one function of this module and read back by its inverse, so that a change of
convention is one edit. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# ------------------------------------------------------------------------------------------ deep features
#: ``<model>_<index>`` (``resnet50_17``), ``<model>_stage<k>_<index>`` for a pooled intermediate stage.
_DEEP = re.compile(r"^(?P<model>.+)_(?P<index>[0-9]+)$")


def deep_prefix(model: str, stage: int | None = None) -> str:
    """The prefix of a backbone's deep-feature columns: its label, and the stage when one is pooled.

    Examples
    --------
    >>> deep_prefix("resnet50"), deep_prefix("resnet50", 3)
    ('resnet50', 'resnet50_stage3')
    """
    return str(model) if stage is None else f"{model}_stage{int(stage)}"


def deep_columns(model: str, n: int, stage: int | None = None) -> list[str]:
    """The ``n`` deep-feature column names of a backbone.

    Examples
    --------
    >>> deep_columns("resnet18", 3)
    ['resnet18_0', 'resnet18_1', 'resnet18_2']
    """
    prefix = deep_prefix(model, stage)
    return [f"{prefix}_{i}" for i in range(int(n))]


#: How the slice features of a volume (2.5D) are pooled into one vector per case, in column order.
SLICE_POOLINGS = ("mean", "max")


def slice_pooled_widths(widths: Iterable[int]) -> list[int]:
    """The widths of the column blocks (the final features, or each layer's) of a volume's pooled features.

    A block of ``n`` slice features becomes ``n * len(SLICE_POOLINGS)`` columns under the same prefix:
    ``<model>_0 .. <model>_{n-1}`` the means over slices, ``<model>_{n} .. <model>_{2n-1}`` the maxima. The
    names stay those of 2D deep features, so every reader of deep columns takes them as they are; which
    pooling a column holds is :func:`slice_pooling`.

    >>> slice_pooled_widths([512]), slice_pooling(515, 512)
    ([1024], ('max', 3))
    """
    return [int(w) * len(SLICE_POOLINGS) for w in widths]


def slice_pooling(index: int, width: int) -> tuple[str, int]:
    """The pooling and the slice feature of column ``index`` in a pooled block of ``width`` slice features."""
    return SLICE_POOLINGS[int(index) // int(width)], int(index) % int(width)


#: The layer of a backbone's pre-logits features (columns ``<model>_<index>``) when layers are listed.
FINAL_LAYER = "pre_logits"
_LAYER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_STAGE = re.compile(r"^(?P<model>.+)_(?P<layer>stage[0-9]+)$")


def layer_prefix(model: str, layer: str) -> str:
    """The prefix of the deep-feature columns of one intermediate layer: ``<model>.<layer>``.

    The model is everything before the first dot, so a model label with a dot cannot name a layer's
    columns (layer names may hold dots: ``blocks.11``).

    Examples
    --------
    >>> layer_prefix("resnet18", "layer3"), layer_prefix("vit_tiny_patch16_224", "blocks.11")
    ('resnet18.layer3', 'vit_tiny_patch16_224.blocks.11')
    """
    model, layer = str(model), str(layer)
    if not model or "." in model:
        raise ValueError(f"a model label with layers may not be empty or hold a dot, got {model!r}")
    if not _LAYER.match(layer):
        raise ValueError(f"layer name {layer!r} must be letters, digits, '_', '.' or '-'")
    return f"{model}.{layer}"


def layer_columns(model: str, layer: str, n: int) -> list[str]:
    """The ``n`` deep-feature column names of one layer of a backbone: ``<model>.<layer>_<index>``.

    Examples
    --------
    >>> layer_columns("resnet18", "layer2", 2)
    ['resnet18.layer2_0', 'resnet18.layer2_1']
    """
    prefix = layer_prefix(model, layer)
    return [f"{prefix}_{i}" for i in range(int(n))]


def deep_layer(name: str) -> tuple[str, str] | None:
    """The backbone and layer of a deep-feature column, or None for any other name: ``<model>.<layer>_<i>``
    gives the layer, ``<model>_stage<k>_<i>`` ``stage<k>``, and ``<model>_<i>`` :data:`FINAL_LAYER`.

    Examples
    --------
    >>> deep_layer("resnet18.layer3_7"), deep_layer("vit_small_patch16_224.blocks.11_0")
    (('resnet18', 'layer3'), ('vit_small_patch16_224', 'blocks.11'))
    >>> deep_layer("resnet50_2047"), deep_layer("resnet50_stage2_5"), deep_layer("original_glcm_Contrast")
    (('resnet50', 'pre_logits'), ('resnet50', 'stage2'), None)
    """
    prefix = deep_model(name)
    if prefix is None:
        return None
    if "." in prefix:
        model, layer = prefix.split(".", 1)
        return model, layer
    stage = _STAGE.match(prefix)
    if stage:
        return stage["model"], stage["layer"]
    return prefix, FINAL_LAYER


def relabel_deep_columns(columns: Iterable[str], model: str, label: str) -> list[str]:
    """The columns of backbone ``model`` named after ``label`` instead (one architecture used twice).

    Examples
    --------
    >>> relabel_deep_columns(["resnet18_0", "resnet18_stage2_1"], "resnet18", "resnet18-random")
    ['resnet18-random_0', 'resnet18-random_stage2_1']
    """
    return [label + c[len(model) :] if c.startswith(model) else c for c in map(str, columns)]


#: The label suffix of a randomly initialised control backbone (``resnet50-random``).
CONTROL_SUFFIX = "-random"


def control_label(key: str) -> str:
    """The label of a backbone's random-weights control (the same architecture, never trained).

    Examples
    --------
    >>> control_label("resnet50")
    'resnet50-random'
    """
    return f"{key}{CONTROL_SUFFIX}"


def controlled_key(label: str) -> str | None:
    """The backbone whose random-weights control ``label`` is (the inverse of :func:`control_label`), or
    None when ``label`` names no control.

    >>> controlled_key("resnet50-random"), controlled_key("resnet50")
    ('resnet50', None)
    """
    label = str(label)
    return label.removesuffix(CONTROL_SUFFIX) if label.endswith(CONTROL_SUFFIX) else None


def control_pairs(models: Iterable[str], controls: dict[str, str] | None = None) -> dict[str, str]:
    """Each backbone of ``models`` -> its random-weights control, both in ``models``; a backbone that pools
    layers pairs layer by layer (``<key>.<layer>`` -> ``<control>.<layer>``). ``controls``: backbone key ->
    control key (a run's configuration); None: the control is the one named :func:`control_label`.

    >>> control_pairs(["r18", "r18-random", "vit.blocks.11", "vit-random.blocks.11", "r50"])
    {'r18': 'r18-random', 'vit.blocks.11': 'vit-random.blocks.11'}
    >>> control_pairs(["r18", "rand"], {"r18": "rand"})
    {'r18': 'rand'}
    """
    present = list(dict.fromkeys(map(str, models)))
    pairs = {}
    for model in present:
        cuts = [len(model)] + [i for i, ch in enumerate(model) if ch == "."]
        for cut in cuts:
            key, layer = model[:cut], model[cut:]
            if controls is None:
                control = None if controlled_key(key) else control_label(key)
            else:
                control = controls.get(key)
            if control is not None and control + layer in present and control + layer != model:
                pairs[model] = control + layer
                break
    return pairs


def deep_model(name: str) -> str | None:
    """The backbone (with its stage) of a deep-feature column, or None for a radiomic or any other name.

    Examples
    --------
    >>> deep_model("vit_base_patch16_224_5"), deep_model("original_glcm_Contrast"), deep_model("age")
    ('vit_base_patch16_224', None, None)
    """
    name = str(name)
    if parse_radiomic_name(name).is_pyradiomics:
        return None
    match = _DEEP.match(name)
    return match["model"] if match else None


def model_of(name: str) -> str:
    """The backbone of a deep feature (``resnet50`` for ``resnet50_17``); any other name is returned as is.

    Examples
    --------
    >>> model_of("densenet121_1023"), model_of("tumour_size")
    ('densenet121', 'tumour_size')
    """
    return deep_model(name) or str(name)


# ---------------------------------------------------------------------------------------- radiomic names
#: PyRadiomics' feature classes (the glossary has an entry for each; a test checks that they agree).
RADIOMIC_CLASSES = ("shape2D", "shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
#: PyRadiomics' image types as they appear in feature names; wavelet names carry the level when it is not
#: 1 (``wavelet2-LLH``), LoG names the sigma (``log-sigma-2-0-mm-3D``), 3D LBP the level or kurtosis.
_IMAGE_TYPE = re.compile(
    r"^(?:original|square|squareroot|logarithm|exponential|gradient|lbp-2D"
    r"|wavelet(?P<level>[0-9]*)-(?P<bands>[LH]{2,3})"
    r"|log-sigma-[0-9]+-[0-9]+-mm-[23]D"
    r"|lbp-3D-(?:m[0-9]+|k))$"
)
_FEATURE = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class RadiomicName:
    """A PyRadiomics feature name split into its parts; ``feature_class`` is empty for any other name."""

    name: str
    image_type: str = ""
    feature_class: str = ""
    feature: str = ""

    @property
    def is_pyradiomics(self) -> bool:
        """Whether the name has PyRadiomics' form ``<image type>_<feature class>_<feature>``."""
        return bool(self.feature_class)

    @property
    def wavelet_level(self) -> int | None:
        """The decomposition level of a wavelet image type (1 when the name gives none), else None."""
        match = _IMAGE_TYPE.match(self.image_type)
        if not match or not match["bands"]:
            return None
        return int(match["level"] or 1)


def parse_radiomic_name(name: str) -> RadiomicName:
    """Split ``<image type>_<feature class>_<feature>``; a name of another form keeps only ``name``.

    This is the one PyRadiomics name parser of the project: classification, explanation, glossary and
    report all read names through it.

    Examples
    --------
    >>> parse_radiomic_name("wavelet2-LLH_glcm_Contrast").wavelet_level
    2
    >>> parse_radiomic_name("log-sigma-2-0-mm-3D_glszm_ZoneEntropy").image_type
    'log-sigma-2-0-mm-3D'
    >>> parse_radiomic_name("tumour_stiffness").is_pyradiomics
    False
    """
    name = str(name)
    parts = name.split("_", 2)
    if (
        len(parts) == 3
        and parts[1] in RADIOMIC_CLASSES
        and _IMAGE_TYPE.match(parts[0])
        and _FEATURE.match(parts[2])
    ):
        return RadiomicName(name, parts[0], parts[1], parts[2])
    return RadiomicName(name)


def is_radiomic_feature(name: str) -> bool:
    """Whether ``name`` is a PyRadiomics feature name.

    Examples
    --------
    >>> is_radiomic_feature("wavelet-HL_glcm_Contrast"), is_radiomic_feature("resnet50_17")
    (True, False)
    """
    return parse_radiomic_name(name).is_pyradiomics


# ------------------------------------------------------------------------------------------ feature sets
#: The kinds of feature set that classification compares (the configuration's ``feature_sets`` choices).
FEATURE_SET_KINDS = ("deep", "radiomic", "combined", "explained")
RADIOMIC_SET = "radiomic"


def feature_set_name(kind: str, model: str | None = None) -> str:
    """The name of a feature set: ``deep``, ``radiomic``, ``deep+radiomic``, ``explained-deep``, with
    ``-<model>`` after ``deep`` when several backbones are compared.

    Examples
    --------
    >>> [feature_set_name(k) for k in FEATURE_SET_KINDS]
    ['deep', 'radiomic', 'deep+radiomic', 'explained-deep']
    >>> feature_set_name("combined", "resnet50")
    'deep-resnet50+radiomic'
    """
    if kind not in FEATURE_SET_KINDS:
        raise ValueError(f"unknown feature-set kind {kind!r}; known: {', '.join(FEATURE_SET_KINDS)}")
    if kind == "radiomic":
        return RADIOMIC_SET
    deep = "deep" if model is None else f"deep-{model}"
    return {"deep": deep, "combined": f"{deep}+radiomic", "explained": f"explained-{deep}"}[kind]


def feature_set_kind(name: str) -> str:
    """The kind of a feature-set name made by :func:`feature_set_name`; any other name is ``other``.

    Examples
    --------
    >>> [feature_set_kind(n) for n in ("explained-deep-vit", "deep+radiomic", "radiomic", "deep", "age")]
    ['explained', 'combined', 'radiomic', 'deep', 'other']
    """
    name = str(name)
    if name == RADIOMIC_SET:
        return "radiomic"
    if name.startswith("explained-deep"):
        return "explained"
    if name.startswith("deep") and name.endswith("+radiomic"):
        return "combined"
    if name == "deep" or name.startswith("deep-"):
        return "deep"
    return "other"


def feature_set_model(name: str) -> str | None:
    """The backbone a deep, combined or explained feature set belongs to (None: one backbone, or no deep set).

    Examples
    --------
    >>> feature_set_model("explained-deep-resnet50"), feature_set_model("deep+radiomic")
    ('resnet50', None)
    """
    kind = feature_set_kind(name)
    if kind in ("radiomic", "other"):
        return None
    core = str(name).removeprefix("explained-").removesuffix("+radiomic")
    return core[len("deep-") :] if core.startswith("deep-") else None


# ---------------------------------------------------------------------------------------- the run folder
class RunFiles:
    """The file names of a run folder (docs/ARCHITECTURE.md), relative to it."""

    COHORT = "cohort.csv"
    COHORT_FAILURES = "cohort_failures.csv"
    DUPLICATES = "duplicates.csv"
    MODELS = "models"
    TRAINING_HISTORY = "training_history.csv"
    DEEP = "deep_features.csv"
    RADIOMICS = "radiomics.csv"
    CORRELATIONS = "correlations.csv"
    EXPLANATIONS = "explanations.csv"
    EXPLANATION = "explanation.json"
    COVERAGE = "coverage.csv"
    EXPLAINED_BY_THRESHOLD = "explained_by_threshold.csv"
    PROBES = "probes.csv"
    PROBES_SETTINGS = "probes.json"
    CKA = "cka.csv"
    CONCEPTS = "concepts.csv"
    HELDOUT = "heldout.csv"
    HELDOUT_PAIRS = "heldout_pairs.csv"
    CONTROL_COVERAGE = "control_coverage.csv"
    REPLICABILITY = "replicability"
    BY_IMPORTANCE = "explanations_by_importance.csv"
    CLASSIFICATION = "classification.csv"
    IMPORTANCES = "importances.csv"
    REPEATED_SPLITS = "repeated_splits.csv"
    CAM = "cam"
    REPORT = "report.html"
    RUN = "run.json"
    LOG = "run.log"
    STATE = ".rad4xcnn/state.json"
    CACHE = "cache"

    @staticmethod
    def checkpoint(label: str) -> str:
        """Where the training stage writes the fine-tuned checkpoint of backbone ``label``."""
        return f"{RunFiles.MODELS}/{label}.pt"

    @staticmethod
    def side_file(table: str, suffix: str) -> str:
        """A table's side file: ``deep_features.csv`` -> ``deep_features.json`` for ``.json``."""
        return table.rsplit(".", 1)[0] + suffix


#: What each run-folder file a stage reads holds: the help of a stage command's flag for that file
#: (:mod:`Rad4XCNNLogic.cli.stagecmd`), stated once.
FILE_HELP = {
    RunFiles.COHORT: "the cohort manifest (case_id, image, mask, label, cohort, split; a run's cohort.csv)",
    RunFiles.MODELS: "the fine-tuned checkpoints (a run's models/)",
    RunFiles.DEEP: "deep_features.csv (case_id x deep features)",
    RunFiles.RADIOMICS: "radiomics.csv (case_id x radiomic features)",
    RunFiles.EXPLANATIONS: (
        "explanations.csv (columns deep_feature, n_partners): its deep features with n_partners > 0 form "
        "the 'explained-deep' feature set"
    ),
}
