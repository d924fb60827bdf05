"""The run configuration: every setting of ``rad4xcnn run``, its default, its allowed values and its meaning.

A configuration is a YAML file (read with ``yaml.safe_load``) whose keys mirror the dataclasses below;
anything left out takes its default. A wrong key or value fails with one line naming the key and what is
allowed. :func:`reference_yaml` writes the documented defaults (``rad4xcnn run --print-config``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.cam.settings import CamConfig
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.cohort.settings import SplitConfig
from Rad4XCNNLogic.errors import UsageError
from Rad4XCNNLogic.explain.settings import CONTROLS, ExplainConfig, ProbeConfig
from Rad4XCNNLogic.features.settings import (
    DEVICES,
    PRESETS,
    DeepConfig,
    ModelConfig,
    RadiomicsConfig,
    TrainingConfig,
    check_device_name,
    weights_kind,
)
from Rad4XCNNLogic.infra.settings import Setting, build, fail, lookup, option, section
from Rad4XCNNLogic.names import control_label
from Rad4XCNNLogic.run.settings import ReportConfig

__all__ = [
    "CamConfig",
    "ClassificationConfig",
    "DeepConfig",
    "ExplainConfig",
    "ModelConfig",
    "ProbeConfig",
    "RadiomicsConfig",
    "ReportConfig",
    "RunConfig",
    "Setting",
    "SplitConfig",
    "TrainingConfig",
    "absolute_paths",
    "config_from_dict",
    "load_config",
    "merge_settings",
    "reference_yaml",
    "setting",
]


@dataclass
class RunConfig:
    """A whole Rad4XCNN run."""

    manifest: str | None = option(None, "the cohort manifest CSV (required)")
    out: str | None = option(None, "the run folder (required)")
    seed: int = option(0, "seed of every random choice (splits, initialisation, permutations, bootstrap)")
    device: str = option(
        "auto", f"where the networks run: {', '.join(DEVICES)} or cuda:N", check=check_device_name
    )
    lesion_only: bool = option(True, "leave out cases with has_lesion=false")
    split: SplitConfig = section(SplitConfig, "split assignment")
    training: TrainingConfig = section(TrainingConfig, "fine-tuning (of the models with weights: trained)")
    models: list[ModelConfig] = field(
        default_factory=lambda: [ModelConfig()], metadata={"help": "backbones whose features are explained"}
    )
    control: str = option(
        "random",
        "random: also explain a random-weights copy of each backbone with weights (label <key>-random), "
        "to show what training added beyond the architecture; none",
        choices=CONTROLS,
    )
    deep: DeepConfig = section(DeepConfig, "deep feature extraction")
    radiomics: RadiomicsConfig = section(RadiomicsConfig, "radiomics")
    explain: ExplainConfig = section(ExplainConfig, "correlation")
    probe: ProbeConfig = section(ProbeConfig, "probes and CKA")
    classification: ClassificationConfig = section(ClassificationConfig, "classification")
    cam: CamConfig = section(CamConfig, "saliency maps")
    report: ReportConfig = section(ReportConfig, "report")

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
            if model.weights_kind == "random":
                continue
            existing = [
                m.key
                for m in self.models
                if m.weights_kind == "random"
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
def setting(key: str) -> Setting:
    """The setting ``key`` (``explain.thresholds``, ``models.weights``, ``seed``) and its rule.

    Examples
    --------
    >>> s = setting("explain.thresholds")
    >>> s.default, str(s.interval), s.item_type.__name__
    ([0.6], '(0, 1]', 'float')
    """
    return lookup(RunConfig, key)


def config_from_dict(data: dict | None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a (YAML-loaded) dictionary."""
    cfg = build(RunConfig, data or {})
    if abs(sum(cfg.split.fractions) - 1.0) > 1e-6 or len(cfg.split.fractions) != 3:
        fail("split.fractions", f"must be three fractions adding up to 1, got {cfg.split.fractions}")
    if not cfg.models:
        fail("models", "name at least one backbone")
    if not cfg.explain.thresholds:
        fail("explain.thresholds", "name at least one value of M")
    names = [m.key for m in cfg.models]
    if len(set(names)) != len(names):
        fail("models", f"each backbone may appear once (give a 'label' to use one twice), got {names}")
    for model in cfg.models:
        if model.label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", model.label):
            fail("models.label", f"{model.label!r} must be letters, digits, '_', '.' or '-'")
        if model.layers and model.stage is not None:
            fail("models.layers", f"{model.key}: give either a stage or layers, not both")
        if model.layers and "." in model.key:
            fail("models.label", f"{model.key!r}: a backbone with layers needs a label without '.'")
    if cfg.cam.model is not None and cfg.cam.model not in names:
        fail("cam.model", f"{cfg.cam.model!r} is not one of the models: {', '.join(names)}")
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
    ("radiomics", "params"): tuple(PRESETS),
}


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
    if isinstance(weights, str) and weights_kind(weights) == "file":
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
