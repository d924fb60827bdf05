"""The run configuration: every setting of ``rad4xcnn run``, its default, its allowed values and its meaning.

A configuration is a YAML file (read with ``yaml.safe_load``) whose keys mirror the dataclasses below;
anything left out takes its default. A wrong key or value fails with one line naming the key and what is
allowed. :func:`reference_yaml` writes the documented defaults (``rad4xcnn run --print-config``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.cam.maps import METHODS as CAM_METHOD_RECORDS
from Rad4XCNNLogic.cam.maps import RANDOMISATIONS
from Rad4XCNNLogic.classify.classifiers import CLASSIFIERS
from Rad4XCNNLogic.errors import UsageError
from Rad4XCNNLogic.explain.backends import BACKENDS
from Rad4XCNNLogic.explain.explanation import FDR_RANGE, THRESHOLD_RANGE
from Rad4XCNNLogic.explain.heldout import CASES as EXPLAIN_CASES
from Rad4XCNNLogic.explain.heldout import CONTROLS
from Rad4XCNNLogic.explain.probes import DEFAULT_PENALTIES, PENALTY_RANGE
from Rad4XCNNLogic.explain.resampling import ALPHA_RANGE
from Rad4XCNNLogic.features.backbones import DEVICES, DTYPES, check_device_name
from Rad4XCNNLogic.features.radiomics import PRESETS
from Rad4XCNNLogic.infra.interval import Interval
from Rad4XCNNLogic.names import FEATURE_SET_KINDS, control_label

# Each vocabulary belongs to the module that uses it; the configuration only refers to it.
CAM_METHODS = tuple(CAM_METHOD_RECORDS)
UNIT = Interval(0, 1)
UNIT_OPEN = Interval(0, 1, low_open=True, high_open=True)


def _opt(
    default: Any,
    help: str,
    choices: tuple | None = None,
    minimum: float | None = None,
    interval: Interval | None = None,
    check: typing.Callable[[Any], str | None] | None = None,
) -> Any:
    """A setting: its default, its help, and its rule (choices, an interval, or a check that returns the
    problem with a value). This metadata is the only statement of the rule: the configuration file, the
    command line (:mod:`Rad4XCNNLogic.cli`) and the Slicer parameter node all read it."""
    if minimum is not None:
        interval = Interval(minimum)
    meta = {"help": help, "choices": choices, "interval": interval, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """One backbone whose deep features are explained."""

    name: str = _opt("resnet50", "timm model name (resnet50, densenet121, vit_base_patch16_224, ...)")
    weights: str | None = _opt(
        None,
        "null: random initialisation from the seed; 'imagenet': timm's pretrained weights (online); "
        "'trained': fine-tuned on the cohort by the training stage; or a path to a checkpoint file",
    )
    label: str | None = _opt(
        None,
        "name of this backbone's features and files (null: the model name); lets one architecture appear "
        "twice, e.g. fine-tuned and randomly initialised",
    )
    stage: int | None = _opt(
        None,
        "take the pooled output of this intermediate CNN stage instead of the "
        "pre-logits features (null: pre-logits)",
        minimum=0,
    )
    layers: list[str] = _opt(
        [],
        "pool these layers instead, side by side, as columns <model>.<layer>_<index> (timm's feature_info "
        "modules, e.g. layer2, layer4 or blocks.11 (the CLS token), and pre_logits); empty: pre-logits only",
    )

    @property
    def key(self) -> str:
        """The name of this backbone's features, checkpoint and files: its label, else the model name."""
        return self.label or self.name


@dataclass
class SplitConfig:
    """How cases without a ``split`` in the manifest are assigned one."""

    fractions: list[float] = _opt([0.7, 0.1, 0.2], "train/val/test fractions for the training cohort")
    train_cohort: str = _opt("internal", "the cohort that is split; every other cohort is external test data")


@dataclass
class TrainingConfig:
    """Fine-tuning of every backbone whose ``weights`` is ``trained`` (the paper fine-tunes its CNNs)."""

    pretrained: bool = _opt(True, "start from ImageNet weights (needs network access or timm's cache)")
    epochs: int = _opt(30, "maximum number of epochs", minimum=1)
    batch_size: int = _opt(32, "training batch size", minimum=1)
    learning_rate: float = _opt(3e-4, "AdamW learning rate", minimum=0)
    patience: int = _opt(8, "early stopping: epochs without a better validation AUC", minimum=1)
    input_size: int | None = _opt(None, "model input size in pixels (null: the model's default)", minimum=16)
    augment: bool = _opt(True, "ultrasound data augmentation (flips, small affine, gain, speckle, blur)")
    val_fraction: float = _opt(
        0.15,
        "share of the train cases held out for validation when the cohort has no val split",
        interval=UNIT_OPEN,
    )
    phases: list[str] = _opt(
        [],
        "the network's training phases in order, by cohort of the manifest, each fitting on the cohort's "
        "train split and early-stopping on its val split; e.g. [busi, palermo]: the paper's protocol "
        "(empty: one phase on split.train_cohort). Cases used here may not be evaluated: the run stops",
    )
    finetune_manifest: str | None = _opt(
        None,
        "a second phase on another manifest's train split (older form of 'phases'); its images go "
        "through the same leakage check against the evaluation sets",
    )
    dtype: str = _opt(
        "auto",
        "compute type of training (auto: bfloat16 autocast on CUDA, float32 elsewhere); the deep features "
        "are extracted afterwards in deep.dtype",
        choices=DTYPES,
    )


@dataclass
class DeepConfig:
    """Deep feature extraction."""

    batch_size: int = _opt(32, "images per forward pass", minimum=1)
    margin: float = _opt(
        0.1, "ROI margin around the lesion, as a fraction of its longer side", interval=Interval(0, 5)
    )
    dtype: str = _opt(
        "float32",
        "compute type of the forward pass; float32 gives the same features on every device; bfloat16 "
        "(auto: bfloat16 on CUDA) is faster on a GPU but keeps about 3 significant digits, adds rank ties "
        "and makes rho depend on the device",
        choices=DTYPES,
    )
    input_size: int | None = _opt(
        None, "model input size in pixels (null: the model's or checkpoint's)", minimum=16
    )
    num_workers: int | None = _opt(None, "image-decoding worker processes (null: automatic)", minimum=0)


@dataclass
class RadiomicsConfig:
    """Radiomic features with PyRadiomics."""

    params: str = _opt(
        "paper",
        f"a preset ({', '.join(PRESETS)}; paper: the 474 features of shape2D, original and 4 wavelet "
        "sub-bands; extended: adds LoG and other filters) or a path to a PyRadiomics YAML file",
    )
    jobs: int | None = _opt(None, "worker processes (null: all cores)", minimum=1)
    scheduler: str | None = _opt(None, "address of a Dask scheduler to run the cases on (null: local)")


@dataclass
class ExplainConfig:
    """Correlation of deep and radiomic features, and the explanation rule |rho| >= M."""

    thresholds: list[float] = _opt(
        [0.6],
        "values of M, the smallest |rho| that explains; the first is the primary one used downstream",
        interval=THRESHOLD_RANGE,
    )
    fdr: float | None = _opt(
        0.05, "also require q <= fdr (Benjamini-Hochberg); null: |rho| >= M alone", interval=FDR_RANGE
    )
    permutations: int = _opt(1000, "permutations for the family-wise null of max |rho| (0: none)", minimum=0)
    bootstrap: int = _opt(200, "bootstrap resamples for the 95% intervals of kept pairs (0: none)", minimum=0)
    alpha: float = _opt(0.05, "family-wise error level of the permutation null", interval=ALPHA_RANGE)
    backend: str = _opt("auto", "auto: torch on a GPU when present, else numpy", choices=BACKENDS)
    chunk_size: int | None = _opt(None, "deep features per chunk (null: by memory)", minimum=1)
    stratify: list[str] = _opt(
        ["label", "cohort"],
        "manifest columns (label, cohort, scanner, ...) within whose strata a pair must hold to explain; "
        "pairs that hold only pooled over them are 'confounded'; []: the paper's pooled rule",
    )
    cases: str = _opt(
        "train",
        "cases the explanation, its permutation null, the suggested M and the classifiers' explained "
        "set come from: train (train and val of the training cohort; the internal test split and every "
        "other cohort re-measure the kept pairs) or all",
        choices=EXPLAIN_CASES,
    )


@dataclass
class ProbeConfig:
    """Probes (ridge regressions from each layer's deep features to each radiomic feature's ranks) and
    representation similarity (linear CKA): where each radiomic concept lives in the network."""

    penalties: list[float] = _opt(
        list(DEFAULT_PENALTIES),
        "the grid of ridge penalties (on standardised deep features) searched by cross-validation",
        interval=PENALTY_RANGE,
    )
    folds: int = _opt(5, "cross-validation folds over the training cases that choose each penalty", minimum=2)
    bootstrap: int = _opt(
        1000, "bootstrap resamples of the held-out cases for the 95% interval of R² (0: none)", minimum=0
    )
    permutations: int = _opt(200, "case shuffles of the CKA permutation baseline (0: none)", minimum=0)
    concepts: int = _opt(
        5, "most selective radiomic concepts whose classifier sensitivity is measured (TCAV-style)", minimum=1
    )
    random_directions: int = _opt(100, "random directions of the concept sensitivity's null", minimum=0)
    backend: str = _opt("auto", "auto: torch on a GPU when present, else numpy", choices=BACKENDS)


@dataclass
class ClassificationConfig:
    """Shallow classifiers on deep, radiomic and combined features."""

    enabled: bool = _opt(True, "train and validate the classifiers")
    classifiers: list[str] = _opt(list(CLASSIFIERS), "classifiers to train", choices=CLASSIFIERS)
    feature_sets: list[str] = _opt(
        list(FEATURE_SET_KINDS), "feature sets to compare", choices=FEATURE_SET_KINDS
    )
    positive: str | None = _opt(None, "the positive class name (null: 'malignant' if present, else the last)")
    cv_folds: int = _opt(5, "stratified cross-validation folds for the hyper-parameter search", minimum=2)
    n_bootstrap: int = _opt(1000, "bootstrap resamples for the metrics' 95% intervals", minimum=0)
    correlation_threshold: float | None = _opt(
        0.95,
        "drop features correlated above this |Spearman rho| with a stronger one (null: keep all)",
        interval=Interval(0, 1, low_open=True),
    )
    select_k: int | None = _opt(None, "keep the k features with the smallest Mann-Whitney p", minimum=1)
    jobs: int | None = _opt(None, "parallel fits (null: all cores)", minimum=1)
    evaluate_on: list[str] | None = _opt(
        None,
        "external cohorts to validate on (their test or unassigned cases; null: every cohort that "
        "trains neither the network nor the classifiers)",
    )


@dataclass
class CamConfig:
    """Saliency maps for a gallery of cases (needs a model with a classifier head)."""

    enabled: bool = _opt(True, "compute CAMs (needs a fine-tuned backbone or a rad4xcnn checkpoint)")
    model: str | None = _opt(
        None, "the backbone whose CAMs are shown (null: the first one with a classifier)"
    )
    methods: list[str] = _opt(["gradcam", "eigencam", "scorecam"], "CAM methods", choices=CAM_METHODS)
    gallery: int = _opt(6, "number of test cases in the gallery (half per class where possible)", minimum=0)
    cases: list[str] = _opt([], "explicit case ids for the gallery (overrides 'gallery')")
    batch_size: int = _opt(32, "ScoreCAM batch size (it runs one forward pass per channel)", minimum=1)
    target_layer: str | None = _opt(
        None,
        "dotted module name, e.g. layer4.1 (null: layer4[-1] for ResNets, features.norm5 for DenseNets, "
        "blocks[-1].norm1 for ViTs)",
    )
    target_class: str | None = _opt(None, "the class explained, by name (null: each case's prediction)")
    tolerance: float = _opt(0.0, "pointing game: pixels around the lesion that count", minimum=0)
    faithfulness: bool = _opt(
        True, "measure each map's faithfulness: ROAD (most/least relevant first), deletion and insertion AUC"
    )
    deletion_steps: int = _opt(16, "removal steps of the deletion and insertion curves", minimum=1)
    randomisation: str = _opt(
        "all",
        "model-randomisation test: all (every weight random: one more map per method), cascade (top layers "
        "first, then all: about 7-10 maps per method; ScoreCAM's cost times that) or none",
        choices=RANDOMISATIONS,
    )


@dataclass
class ReportConfig:
    """The HTML report."""

    top_features: int = _opt(10, "explained deep features listed per backbone", minimum=1)
    heatmap_features: int = _opt(30, "deep and radiomic features in the clustered heatmap", minimum=2)


@dataclass
class RunConfig:
    """A whole Rad4XCNN run."""

    manifest: str | None = _opt(None, "the cohort manifest CSV (required)")
    out: str | None = _opt(None, "the run folder (required)")
    seed: int = _opt(0, "seed of every random choice (splits, initialisation, permutations, bootstrap)")
    device: str = _opt(
        "auto", f"where the networks run: {', '.join(DEVICES)} or cuda:N", check=check_device_name
    )
    lesion_only: bool = _opt(True, "leave out cases with has_lesion=false")
    split: SplitConfig = field(default_factory=SplitConfig, metadata={"help": "split assignment"})
    training: TrainingConfig = field(
        default_factory=TrainingConfig, metadata={"help": "fine-tuning (of the models with weights: trained)"}
    )
    models: list[ModelConfig] = field(
        default_factory=lambda: [ModelConfig()], metadata={"help": "backbones whose features are explained"}
    )
    control: str = _opt(
        "random",
        "random: also explain a random-weights copy of each backbone with weights (label <key>-random), "
        "to show what training added beyond the architecture; none",
        choices=CONTROLS,
    )
    deep: DeepConfig = field(default_factory=DeepConfig, metadata={"help": "deep feature extraction"})
    radiomics: RadiomicsConfig = field(default_factory=RadiomicsConfig, metadata={"help": "radiomics"})
    explain: ExplainConfig = field(default_factory=ExplainConfig, metadata={"help": "correlation"})
    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata={"help": "probes and CKA"})
    classification: ClassificationConfig = field(
        default_factory=ClassificationConfig, metadata={"help": "classification"}
    )
    cam: CamConfig = field(default_factory=CamConfig, metadata={"help": "saliency maps"})
    report: ReportConfig = field(default_factory=ReportConfig, metadata={"help": "report"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def controls(self) -> dict[str, str]:
        """Backbone key -> its random-weights control's key, for every backbone with weights (none when
        ``control`` is ``none``). A random model of the same architecture, stage and layers already in
        ``models`` is the control; otherwise one is added (see :meth:`deep_models`)."""
        if self.control == "none":
            return {}
        found = {}
        for model in self.models:
            if model.weights is None:
                continue
            existing = [
                m.key
                for m in self.models
                if m.weights is None
                and m.name == model.name
                and m.stage == model.stage
                and m.layers == model.layers
            ]
            found[model.key] = existing[0] if existing else control_label(model.key)
        return found

    def deep_models(self) -> list[ModelConfig]:
        """The backbones whose deep features are extracted: ``models`` and the controls they lack."""
        keys = {m.key for m in self.models}
        by_key = {m.key: m for m in self.models}
        added = [
            ModelConfig(
                name=by_key[key].name,
                weights=None,
                label=control,
                stage=by_key[key].stage,
                layers=list(by_key[key].layers),  # the same layers: the probes pair them by name
            )
            for key, control in self.controls().items()
            if control not in keys
        ]
        return [*self.models, *added]


# ------------------------------------------------------------------------------------------- validation
def _fail(key: str, problem: str) -> typing.NoReturn:
    raise UsageError(f"configuration: {key}: {problem}")


def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, non_null[0], meta)
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        (item_tp,) = args
        return [_coerce(f"{key}[{i}]", v, item_tp, meta) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if value is None:
        _fail(key, f"must be {_type_name(tp)}, not empty")
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, f"must be true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"must be a whole number, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"must be a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            _fail(key, f"must be a text, got {value!r}")
        value = str(value)
    choices = meta.get("choices")
    if choices and value not in choices:
        _fail(key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, choices))}")
    interval = meta.get("interval")
    problem = interval.problem(value) if interval is not None else None
    if problem is None and meta.get("check") is not None:
        problem = meta["check"](value)
    if problem:
        _fail(key, problem)
    return value


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(prefix or "configuration", f"must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        _fail(where, f"unknown key; allowed keys{' in ' + prefix if prefix else ''}: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(key, value, hints[name], dict(fields[name].metadata))
    return cls(**kwargs)


@dataclass(frozen=True)
class Setting:
    """One setting of the configuration, by its dotted key, with the metadata that states its rule."""

    key: str
    type: Any
    default: Any
    help: str
    choices: tuple | None
    interval: Interval | None

    @property
    def item_type(self) -> Any:
        """The scalar type of a value (of one item, for a list setting; None removed)."""
        tp = self.type
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if typing.get_origin(tp) is list:
            (tp,) = typing.get_args(tp)
        return tp

    @property
    def is_list(self) -> bool:
        tp = self.type
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return typing.get_origin(tp) is list

    @property
    def nullable(self) -> bool:
        return typing.get_origin(self.type) in (typing.Union, types.UnionType)

    def validate(self, value: Any) -> Any:
        """``value`` converted and checked by the rule of this setting; :class:`Rad4XCNNError` names the key
        and the problem. For a list setting, ``value`` may be one item."""
        field_ = _field(self.key)
        tp = self.item_type if self.is_list and not isinstance(value, list) else self.type
        return _coerce(self.key, value, tp, dict(field_.metadata))


def _field(key: str) -> dataclasses.Field:
    cls: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise KeyError(f"no setting {'.'.join(parts[: i + 1])!r}")
        found = fields[part]
        if i < len(parts) - 1:
            tp = typing.get_type_hints(cls)[part]
            if typing.get_origin(tp) is list:
                (tp,) = typing.get_args(tp)
            cls = tp
    return found


def setting(key: str) -> Setting:
    """The setting ``key`` (``explain.thresholds``, ``models.weights``, ``seed``) and its rule.

    Examples
    --------
    >>> s = setting("explain.thresholds")
    >>> s.default, str(s.interval), s.item_type.__name__
    ([0.6], '(0, 1]', 'float')
    """
    parts = key.split(".")
    owner: Any = RunConfig
    for part in parts[:-1]:
        tp = typing.get_type_hints(owner)[part]
        owner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
    field_ = _field(key)
    default = getattr(owner(), parts[-1])
    meta = field_.metadata
    return Setting(
        key,
        typing.get_type_hints(owner)[parts[-1]],
        default,
        meta.get("help", ""),
        meta.get("choices"),
        meta.get("interval"),
    )


def config_from_dict(data: dict | None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a (YAML-loaded) dictionary."""
    cfg = _build(RunConfig, data or {})
    if abs(sum(cfg.split.fractions) - 1.0) > 1e-6 or len(cfg.split.fractions) != 3:
        _fail("split.fractions", f"must be three fractions adding up to 1, got {cfg.split.fractions}")
    if not cfg.models:
        _fail("models", "name at least one backbone")
    if not cfg.explain.thresholds:
        _fail("explain.thresholds", "name at least one value of M")
    names = [m.key for m in cfg.models]
    if len(set(names)) != len(names):
        _fail("models", f"each backbone may appear once (give a 'label' to use one twice), got {names}")
    for model in cfg.models:
        if model.label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", model.label):
            _fail("models.label", f"{model.label!r} must be letters, digits, '_', '.' or '-'")
        if model.layers and model.stage is not None:
            _fail("models.layers", f"{model.key}: give either a stage or layers, not both")
        if model.layers and "." in model.key:
            _fail("models.label", f"{model.key!r}: a backbone with layers needs a label without '.'")
    if cfg.cam.model is not None and cfg.cam.model not in names:
        _fail("cam.model", f"{cfg.cam.model!r} is not one of the models: {', '.join(names)}")
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> RunConfig:
    """Read a YAML configuration (if given), apply ``overrides`` (nested dict), and validate.

    Relative paths in the file (``manifest``, ``out``, checkpoint ``weights``, ...) are taken from the
    file's folder; relative paths in ``overrides`` (the command line's flags) from the working directory.
    The configuration returned holds absolute paths only, so a run does not depend on where it started.

    Examples
    --------
    >>> cfg = load_config("paper.yaml", {"out": "runs/paper"})  # doctest: +SKIP
    >>> cfg.explain.thresholds  # doctest: +SKIP
    [0.6, 0.7, 0.8]
    """
    data: dict = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"configuration file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise UsageError(f"configuration {path.name} is not valid YAML{where}") from None
        if not isinstance(data, dict):
            raise UsageError(f"configuration {path.name} must be a mapping of keys to values")
        data = absolute_paths(data, path.resolve().parent)
    data = merge_settings(data, absolute_paths(overrides or {}, Path.cwd()))
    return config_from_dict(data)


#: The settings that hold a file or folder (section, key), and the words some of them take instead.
PATH_SETTINGS = {
    ("manifest",): (),
    ("out",): (),
    ("training", "finetune_manifest"): (),
    ("radiomics", "params"): ("paper", "extended"),
}
WEIGHT_WORDS = ("imagenet", "trained", "none", "null")


def absolute_paths(data: dict, base: Path) -> dict:
    """``data`` (a nested settings dict) with every relative path made absolute against ``base``.

    The one place that decides what a relative path means: a configuration file's paths are relative to
    its folder, a flag's to the working directory (``~`` is expanded). Values that are not text are left
    for validation to name.

    >>> absolute_paths({"out": "runs/a", "radiomics": {"params": "paper"}}, Path("/data"))["out"]
    '/data/runs/a'
    """
    out = dict(data)
    for keys, words in PATH_SETTINGS.items():
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                break
            node[key] = node = dict(node[key])
        else:
            value = node.get(keys[-1])
            if isinstance(value, str) and value and value not in words:
                node[keys[-1]] = str(_absolute(value, base))
    if isinstance(out.get("models"), list):
        out["models"] = [_absolute_weights(model, base) for model in out["models"]]
    return out


def _absolute_weights(model, base: Path):
    if not isinstance(model, dict):
        return model
    weights = model.get("weights")
    if isinstance(weights, str) and weights and weights.lower() not in WEIGHT_WORDS:
        return {**model, "weights": str(_absolute(weights, base))}
    return model


def _absolute(text: str, base: Path) -> Path:
    p = Path(os.path.expanduser(text))
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def merge_settings(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied, section by section (a nested dict of settings)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------ reference
def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _reference_lines(cls: type, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    default = cls()
    for f in dataclasses.fields(cls):
        meta = f.metadata
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}# {meta.get('help', '')}")
            lines.append(f"{pad}{f.name}:")
            lines.extend(_reference_lines(type(value), indent + 1))
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            lines.append(f"{pad}# {meta.get('help', '')}")
            lines.append(f"{pad}{f.name}:")
            item = _reference_lines(type(value[0]), indent + 2)
            first = next(i for i, line in enumerate(item) if not line.strip().startswith("#"))
            for i in range(first):
                item[i] = "  " * (indent + 1) + item[i].strip()
            item[first] = "  " * (indent + 1) + "- " + item[first].strip()
            lines.extend(item)
            continue
        note = meta.get("help", "")
        if meta.get("choices"):
            note += f" [allowed: {', '.join(meta['choices'])}]"
        if meta.get("interval") is not None:
            note += f" [range: {meta['interval']}]"
        lines.append(f"{pad}# {note}")
        lines.append(f"{pad}{f.name}: {_yaml_value(value)}")
    return lines


def reference_yaml() -> str:
    """Every setting with its default and a comment saying what it does: a starting configuration."""
    header = [
        "# Rad4XCNN run configuration: every setting, with its default. Keys left out take the default.",
        "# Relative paths are taken from this file's folder. Run: rad4xcnn run CONFIG.yaml",
    ]
    return "\n".join(header + _reference_lines(RunConfig, 0)) + "\n"
