"""The PyRadiomics parameters of a run: a preset or a parameter file, resolved, parsed and checked for the
keys PyRadiomics knows, with the hash that keys the cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features.settings import PRESETS, PRESETS_3D
from Rad4XCNNLogic.infra.storage import settings_hash

_TOP_KEYS = ("setting", "imageType", "featureClass", "voxelSetting")


@dataclass(frozen=True)
class RadiomicsParams:
    """A PyRadiomics parameter file, resolved and parsed.

    ``name`` is the preset name (``paper``, ``extended``) or the file's name; ``config`` the parsed YAML;
    ``sha256`` a hash of the parsed content (comments and layout do not change it), used in cache keys.
    """

    name: str
    path: Path
    text: str
    config: dict
    sha256: str

    @property
    def is_preset(self) -> bool:
        return self.name in PRESETS

    @property
    def setting(self) -> dict:
        """The ``setting`` section (discretisation, normalisation, resampling, ...)."""
        return dict(self.config.get("setting") or {})

    def pyradiomics_config(self) -> dict:
        """The configuration handed to PyRadiomics: the file's, with ``label`` 1 (masks are 0/1)."""
        config = {k: v for k, v in self.config.items()}
        config["setting"] = {**self.setting, "label": 1}
        return config


def preset_path(name: str) -> Path:
    """The parameter file of a built-in preset (``paper`` or ``extended``)."""
    if name not in PRESETS:
        raise Rad4XCNNError(f"unknown radiomics preset {name!r}; presets: {', '.join(PRESETS)}")
    return Path(str(resources.files("Rad4XCNNLogic.features") / "data" / PRESETS[name]))


def with_resampling(
    params: RadiomicsParams, spacing: list[float] | tuple[float, ...] | None
) -> RadiomicsParams:
    """``params`` with PyRadiomics' ``resampledPixelSpacing`` set to ``spacing`` (mm; None: unchanged).

    The hash changes with it, so cached features of another spacing are not reused.

    >>> with_resampling(resolve_params("paper3d"), [1, 1, 1]).setting["resampledPixelSpacing"]
    [1.0, 1.0, 1.0]
    """
    if spacing is None:
        return params
    values = [float(v) for v in spacing]
    if len(values) not in (2, 3) or min(values) <= 0:
        raise Rad4XCNNError(
            "resample spacing must be 2 or 3 positive numbers in mm ([x, y] or [x, y, z]), "
            f"got {list(spacing)}"
        )
    config = {**params.config, "setting": {**params.setting, "resampledPixelSpacing": values}}
    return RadiomicsParams(params.name, params.path, params.text, config, settings_hash(config))


def for_volumes(params: RadiomicsParams) -> RadiomicsParams:
    """The parameters to use on 3D volumes: a 2D preset becomes its 3D counterpart (``paper`` ->
    ``paper3d``, with the same resampling); a file made for 2D (``shape2D``, ``force2D``) is refused."""
    if params.name in PRESETS_3D and params.is_preset:
        return with_resampling(
            resolve_params(PRESETS_3D[params.name]), params.setting.get("resampledPixelSpacing")
        )
    classes = params.config.get("featureClass") or {}
    if "shape2D" in classes or params.setting.get("force2D"):
        what = "shape2D" if "shape2D" in classes else "force2D: true"
        raise Rad4XCNNError(
            f"radiomics parameters {params.name} are made for 2D images ({what}) but the cohort holds 3D "
            f"volumes; use the preset paper3d or a file with the 3D 'shape' class"
        )
    return params


def resolve_params(params: str | os.PathLike | RadiomicsParams = "paper") -> RadiomicsParams:
    """Find and parse a preset name or a PyRadiomics YAML file (read with ``yaml.safe_load``).

    The file's structure is checked here (a mapping with PyRadiomics' sections); its settings are checked
    against PyRadiomics' schema when extraction starts. Does not import PyRadiomics.

    Examples
    --------
    >>> p = resolve_params("paper")
    >>> p.name, p.setting["binCount"]
    ('paper', 32)
    >>> resolve_params("my_params.yaml").sha256  # doctest: +SKIP
    '3f9c...'
    """
    import yaml

    if isinstance(params, RadiomicsParams):
        return params
    text_arg = os.fspath(params)
    if text_arg in PRESETS:
        path, name = preset_path(text_arg), text_arg
    else:
        path = Path(os.path.expanduser(text_arg))
        name = path.name
        if not path.is_file():
            raise Rad4XCNNError(
                f"radiomics parameters {text_arg!r} are neither a preset ({', '.join(PRESETS)}) "
                "nor an existing YAML file"
            )
    try:
        text = path.read_text(encoding="utf-8")
        # the C loader when PyYAML has it (same safe subset as yaml.safe_load, ten times faster)
        config = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError) as exc:
        raise Rad4XCNNError(f"cannot read radiomics parameter file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise Rad4XCNNError(
            f"radiomics parameter file {path.name} is not valid YAML{where}: {problem}"
        ) from None
    if not isinstance(config, dict):
        raise Rad4XCNNError(
            f"radiomics parameter file {path.name} must hold a mapping with the sections "
            f"{', '.join(_TOP_KEYS[:3])}; got {type(config).__name__}"
        )
    unknown = [k for k in config if k not in _TOP_KEYS]
    if unknown:
        raise Rad4XCNNError(
            f"radiomics parameter file {path.name}: unknown section {unknown[0]!r}; "
            f"PyRadiomics knows {', '.join(_TOP_KEYS)}"
        )
    for section in _TOP_KEYS:
        if config.get(section) is not None and not isinstance(config[section], dict):
            raise Rad4XCNNError(
                f"radiomics parameter file {path.name}: section {section!r} must be a mapping"
            )
    return RadiomicsParams(name, path.resolve(), text, config, settings_hash(config))
