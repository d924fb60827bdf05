"""The glossary covers every PyRadiomics feature and image type, in its own words."""

from __future__ import annotations

import re

import numpy as np
import pytest

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.glossary import (
    category_of,
    describe,
    describe_feature,
    describe_feature_class,
    describe_image_type,
    family_of,
    glossary_features,
    image_type_label,
    load_glossary,
    short_meaning,
    summary_line,
)
from Rad4XCNNLogic.names import RADIOMIC_CLASSES, parse_radiomic_name

radiomics = pytest.importorskip("radiomics")


def pyradiomics_features(deprecated: bool = False) -> dict[str, list[str]]:
    return {
        name: [f for f, is_deprecated in cls.getFeatureNames().items() if deprecated or not is_deprecated]
        for name, cls in radiomics.getFeatureClasses().items()
    }


def pyradiomics_image_type_names() -> set[str]:
    """The image type names PyRadiomics' filters give on a 2D and a 3D image, with two wavelet levels."""
    import SimpleITK as sitk
    from radiomics import imageoperations

    rng = np.random.default_rng(0)
    names = set()
    for shape in ((24, 24), (12, 24, 24)):
        image = sitk.GetImageFromArray(rng.normal(100, 20, shape).astype(np.float32))
        mask_array = np.zeros(shape, np.uint8)
        mask_array[..., 4:20, 4:20] = 1
        mask = sitk.GetImageFromArray(mask_array)
        for image_type in radiomics.getImageTypes():
            produce = getattr(imageoperations, f"get{image_type}Image")
            settings = {"LoG": {"sigma": [1.0, 2.5]}, "Wavelet": {"level": 2}}.get(image_type, {})
            names.update(name for _, name, _ in produce(image, mask, **settings))
    # The LBP filters need scikit-image / trimesh, which this environment may lack; their names are fixed
    # strings in PyRadiomics (imageoperations.getLBP2DImage / getLBP3DImage).
    names.update({"lbp-2D", "lbp-3D-m1", "lbp-3D-m2", "lbp-3D-k"})
    return names


def test_every_non_deprecated_pyradiomics_feature_has_an_entry():
    glossary = glossary_features()
    missing = [
        f"{klass}_{feature}"
        for klass, features in pyradiomics_features().items()
        for feature in features
        if feature not in glossary.get(klass, [])
    ]
    assert not missing, missing
    counts = {klass: len(features) for klass, features in pyradiomics_features().items()}
    assert sum(counts[k] for k in ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")) == 93
    assert counts["shape2D"] == 9  # 9 + 5 x 93 = 474, the paper's count


def test_every_glossary_entry_is_a_real_pyradiomics_feature():
    real = pyradiomics_features(deprecated=True)
    invented = [
        f"{k}_{f}"
        for k, features in glossary_features().items()
        for f in features
        if f not in real.get(k, [])
    ]
    assert not invented, invented
    assert set(load_glossary()["feature_classes"]) == set(real)


def test_every_image_type_pyradiomics_produces_is_described():
    names = pyradiomics_image_type_names()
    assert {"original", "wavelet-HL", "wavelet-LLH", "wavelet2-HHH", "log-sigma-2-5-mm-3D"} <= names
    for name in sorted(names):
        assert len(describe_image_type(name)) > 80, name
        assert image_type_label(name), name
    assert describe_image_type("log-sigma-2-0-mm-2D").startswith("Sigma = 2.0 mm.")


def test_entries_are_complete_and_readable():
    glossary = load_glossary()
    for klass, features in glossary["features"].items():
        assert glossary["feature_classes"][klass]["category"] in glossary["categories"]
        for feature, entry in features.items():
            assert set(entry) == {"label", "short", "meaning"}, (klass, feature)
            assert len(entry["short"]) <= 50, (klass, feature)
            assert entry["meaning"].strip().endswith("."), (klass, feature)
            assert len(entry["meaning"]) >= 30, (klass, feature)


def _shingles(text: str, size: int = 7) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def test_meanings_are_our_own_words_not_pyradiomics_docstrings():
    # No run of seven words of a glossary entry may be copied from the feature's PyRadiomics docstring.
    copied = []
    for klass, cls in radiomics.getFeatureClasses().items():
        for feature in cls.getFeatureNames():
            doc = getattr(cls, f"get{feature}FeatureValue").__doc__ or ""
            ours = load_glossary()["features"][klass].get(feature)
            if ours and _shingles(ours["meaning"]) & _shingles(doc):
                copied.append(f"{klass}_{feature}")
    assert not copied, copied


def test_describe_a_feature_name():
    text = describe("wavelet-HL_glcm_Contrast")
    assert text.startswith("wavelet-HL_glcm_Contrast: contrast - local grey-level variation.")
    assert "co-occurrence" in text and "high-pass along x, low-pass along y" in text
    assert "lesion area" in describe("original_shape2D_MeshSurface")
    assert short_meaning("original_firstorder_Mean") == "average intensity"
    assert summary_line("log-sigma-3-0-mm-3D_glszm_ZoneEntropy").startswith(
        "zone entropy (GLSZM) on Laplacian of Gaussian, sigma 3.0 mm (3D): "
    )
    assert summary_line("my_custom_feature") == "not in the glossary"
    assert short_meaning("original_glcm_Nonsense") == "not in the glossary"
    assert describe_feature("ngtdm", "Coarseness").startswith("Reciprocal")
    assert describe_feature_class("gldm").startswith("Grey-level dependence matrix (GLDM): ")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: describe("resnet50_3"), "not a PyRadiomics feature name"),
        (lambda: describe("original_glcm_Nonsense"), "no entry for feature 'Nonsense'"),
        (lambda: describe_image_type("median-filter"), "unknown PyRadiomics image type"),
        (lambda: describe_feature_class("glxm"), "unknown PyRadiomics feature class"),
    ],
)
def test_unknown_names_are_clear_errors(call, message):
    with pytest.raises(Rad4XCNNError, match=message):
        call()


def test_parse_names():
    assert parse_radiomic_name("wavelet2-LLH_firstorder_10Percentile").feature == "10Percentile"
    assert parse_radiomic_name("lbp-3D-k_gldm_DependenceEntropy").image_type == "lbp-3D-k"
    assert category_of("original_shape2D_PixelSurface") == "shape"
    assert category_of(parse_radiomic_name("original_firstorder_Mean")) == "first-order"
    other = parse_radiomic_name("age_at_diagnosis")
    assert not other.is_pyradiomics and family_of(other) == "other"


def test_glossary_knows_every_feature_class_the_name_parser_knows():
    assert set(load_glossary()["feature_classes"]) == set(RADIOMIC_CLASSES)


@pytest.mark.parametrize("preset", ["paper", "extended"])
def test_every_feature_the_presets_produce_has_an_entry(synthetic_manifest, preset):
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.features.radiomics import extract_radiomics

    cohort = read_manifest(synthetic_manifest).subset(keep=["syn0001"])
    result = extract_radiomics(cohort, preset, jobs=1, progress=False)
    names = list(result.features.columns)
    assert len(names) == 474 if preset == "paper" else len(names) > 474
    for name in names:  # describe() raises for a feature or image type the glossary lacks
        assert len(describe(name)) > 20


def test_every_feature_of_the_paper3d_preset_has_an_entry(tmp_path):
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes
    from Rad4XCNNLogic.features.radiomics import extract_radiomics

    manifest = make_synthetic_volumes(tmp_path, n=1, shape=(24, 24, 10), malignant_fraction=0.0)
    result = extract_radiomics(read_manifest(manifest), "paper3d", jobs=1, progress=False)
    names = list(result.features.columns)
    assert len(names) == 851 and "original_shape_SurfaceVolumeRatio" in names
    for name in names:  # the 3D shape class and the eight 3D wavelet sub-bands
        assert len(describe(name)) > 20
    assert "z (slice)" in describe("wavelet-HHH_glcm_Contrast")
