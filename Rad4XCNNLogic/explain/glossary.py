"""What each radiomic feature and image type means, in words a clinician can use.

Parses PyRadiomics feature names (``wavelet-HL_glcm_Contrast``) into image type, feature class and feature,
and describes each part from the glossary shipped with the package (``data/radiomics_glossary.yaml``).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

import yaml

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.names import RadiomicName, parse_radiomic_name

GLOSSARY_FILE = "radiomics_glossary.yaml"

_LOG = re.compile(r"^log-sigma-(?P<whole>\d+)-(?P<frac>\d+)-mm-(?P<dim>[23]D)$")
_LBP3D = re.compile(r"^lbp-3D-(?:m(?P<level>\d+)|(?P<kurtosis>k))$")
_AXES = ("x (left-right)", "y (top-bottom)", "z (slice)")


@functools.lru_cache(maxsize=1)
def load_glossary() -> dict[str, Any]:
    """The glossary as a dict: ``categories``, ``image_types``, ``feature_classes``, ``features``.

    Examples
    --------
    >>> load_glossary()["feature_classes"]["glcm"]["category"]
    'texture'
    """
    text = (
        resources.files("Rad4XCNNLogic.explain").joinpath("data", GLOSSARY_FILE).read_text(encoding="utf-8")
    )
    return yaml.safe_load(text)


def category_of(name: str | RadiomicName) -> str:
    """``shape``, ``first-order`` or ``texture`` of a PyRadiomics feature; empty for any other name.

    Examples
    --------
    >>> category_of("original_shape2D_PixelSurface"), category_of("original_firstorder_Mean")
    ('shape', 'first-order')
    """
    parsed = name if isinstance(name, RadiomicName) else parse_radiomic_name(name)
    entry = load_glossary()["feature_classes"].get(parsed.feature_class)
    return entry["category"] if entry else ""


def family_of(name: str | RadiomicName) -> str:
    """Image type and category, the unit explanations are grouped by (``wavelet-HL texture``); ``other``
    for a name that is not a PyRadiomics feature.

    Examples
    --------
    >>> family_of("wavelet-HL_glcm_Contrast"), family_of("my_custom_feature")
    ('wavelet-HL texture', 'other')
    """
    parsed = name if isinstance(name, RadiomicName) else parse_radiomic_name(name)
    return f"{parsed.image_type} {category_of(parsed)}" if parsed.is_pyradiomics else "other"


def _image_type_entry(image_type: str) -> tuple[str, str]:
    """(label, meaning) of an image type, composing the parametrised ones (wavelet bands, LoG sigma)."""
    types = load_glossary()["image_types"]
    if image_type in types and image_type not in {"wavelet", "wavelet_bands", "log", "lbp-3D"}:
        return types[image_type]["label"], types[image_type]["meaning"]
    level = parse_radiomic_name(f"{image_type}_firstorder_Mean").wavelet_level
    if level is not None:
        bands, level = image_type.split("-", 1)[1], str(level)
        band_meaning = types["wavelet_bands"].get(bands) or ", ".join(
            f"{'low' if b == 'L' else 'high'}-pass along {axis}"
            for b, axis in zip(bands, _AXES, strict=False)
        )
        label = f"{types['wavelet']['label']} {bands}" + (f", level {level}" if level != "1" else "")
        return label, f"{band_meaning.rstrip('.')}. {types['wavelet']['meaning']}"
    match = _LOG.match(image_type)
    if match:
        sigma = f"{int(match['whole'])}.{match['frac']}"
        return (
            f"{types['log']['label']}, sigma {sigma} mm ({match['dim']})",
            f"Sigma = {sigma} mm. {types['log']['meaning']}",
        )
    match = _LBP3D.match(image_type)
    if match:
        part = "kurtosis image" if match["kurtosis"] else f"level {match['level']}"
        return f"{types['lbp-3D']['label']}, {part}", types["lbp-3D"]["meaning"]
    raise Rad4XCNNError(f"unknown PyRadiomics image type {image_type!r}")


def image_type_label(image_type: str) -> str:
    """A short label for an image type, e.g. ``wavelet sub-band HL``."""
    return _image_type_entry(image_type)[0]


def describe_image_type(image_type: str) -> str:
    """What an image type (``original``, ``wavelet-HL``, ``log-sigma-3-0-mm-3D``, ``lbp-2D``...) shows.

    Examples
    --------
    >>> describe_image_type("wavelet-LH").startswith("low-pass along x, high-pass along y")
    True
    """
    return _image_type_entry(image_type)[1]


def describe_feature_class(feature_class: str) -> str:
    """What a feature class (``shape2D``, ``firstorder``, ``glcm``...) measures."""
    entry = load_glossary()["feature_classes"].get(feature_class)
    if entry is None:
        raise Rad4XCNNError(f"unknown PyRadiomics feature class {feature_class!r}")
    return f"{entry['label'][0].upper()}{entry['label'][1:]}: {entry['meaning']}"


def _feature_entry(feature_class: str, feature: str) -> dict[str, str]:
    entry = load_glossary()["features"].get(feature_class, {}).get(feature)
    if entry is None:
        raise Rad4XCNNError(f"the glossary has no entry for feature {feature!r} of class {feature_class!r}")
    return entry


def describe_feature(feature_class: str, feature: str) -> str:
    """What one feature of a class measures and what a high value says.

    Examples
    --------
    >>> describe_feature("glcm", "Contrast").startswith("Average of the squared difference")
    True
    """
    return _feature_entry(feature_class, feature)["meaning"]


#: The meaning given to a feature the glossary does not describe (another tool's feature, a clinical
#: variable, a PyRadiomics feature without an entry).
NOT_IN_GLOSSARY = "not in the glossary"


def short_meaning(name: str) -> str:
    """A few words on what a feature measures (``local grey-level variation``); :data:`NOT_IN_GLOSSARY`
    if the name is not a PyRadiomics feature the glossary knows.

    Examples
    --------
    >>> short_meaning("original_firstorder_Mean"), short_meaning("tumour_stiffness_kPa")
    ('average intensity', 'not in the glossary')
    """
    parsed = parse_radiomic_name(name)
    entry = load_glossary()["features"].get(parsed.feature_class, {}).get(parsed.feature)
    return entry["short"] if entry else NOT_IN_GLOSSARY


@functools.lru_cache(maxsize=8192)
def summary_line(name: str) -> str:
    """One line for tables: the feature, its class, the image and the short meaning; :data:`NOT_IN_GLOSSARY`
    for a feature the glossary does not describe.

    Examples
    --------
    >>> summary_line("wavelet-HL_glcm_Contrast")
    'contrast (GLCM) on wavelet sub-band HL: local grey-level variation'
    """
    parsed = parse_radiomic_name(name)
    entry = load_glossary()["features"].get(parsed.feature_class, {}).get(parsed.feature)
    if entry is None:
        return NOT_IN_GLOSSARY
    try:
        where = image_type_label(parsed.image_type)
    except Rad4XCNNError:
        where = parsed.image_type
    klass = load_glossary()["feature_classes"][parsed.feature_class]["short"]
    return f"{entry['label']} ({klass}) on {where}: {entry['short']}"


def describe(name: str) -> str:
    """A full, plain-language description of a PyRadiomics feature name: the feature, its class and the
    image it was computed on.

    Raises :class:`~Rad4XCNNLogic.errors.Rad4XCNNError` for a name that is not a known PyRadiomics feature.

    Examples
    --------
    >>> print(describe("wavelet-HL_glcm_Contrast").splitlines()[0])
    wavelet-HL_glcm_Contrast: contrast - local grey-level variation.
    """
    parsed = parse_radiomic_name(name)
    if not parsed.is_pyradiomics:
        raise Rad4XCNNError(
            f"{name!r} is not a PyRadiomics feature name (<image type>_<feature class>_<feature>)"
        )
    entry = _feature_entry(parsed.feature_class, parsed.feature)
    return "\n".join(
        [
            f"{name}: {entry['label']} - {entry['short']}.",
            entry["meaning"],
            f"Class - {describe_feature_class(parsed.feature_class)}",
            f"Image - {image_type_label(parsed.image_type)}: {describe_image_type(parsed.image_type)}",
        ]
    )


def glossary_features() -> dict[str, list[str]]:
    """Feature names per class that the glossary describes."""
    return {klass: list(entries) for klass, entries in load_glossary()["features"].items()}
