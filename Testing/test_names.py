"""The one owner of encoded names: deep columns, PyRadiomics names, feature sets, run files."""

from __future__ import annotations

import pytest

from Rad4XCNNLogic.names import (
    FEATURE_SET_KINDS,
    RunFiles,
    deep_columns,
    deep_model,
    feature_set_kind,
    feature_set_model,
    feature_set_name,
    is_radiomic_feature,
    model_of,
    parse_radiomic_name,
    relabel_deep_columns,
)


def test_deep_columns_round_trip():
    for model, stage in (("resnet50", None), ("vit_base_patch16_224", None), ("resnet18-random", 2)):
        columns = deep_columns(model, 4, stage)
        expected = model if stage is None else f"{model}_stage{stage}"
        assert {deep_model(c) for c in columns} == {expected}
    assert deep_model("densenet121") is None
    assert deep_model("original_glcm_Contrast") is None
    assert model_of("age") == "age"


def test_relabel_keeps_indices_and_leaves_other_columns():
    assert relabel_deep_columns(["resnet18_7", "original_firstorder_Mean"], "resnet18", "r18-ctrl") == [
        "r18-ctrl_7",
        "original_firstorder_Mean",
    ]


@pytest.mark.parametrize(
    "name, parts, level",
    [
        ("original_shape2D_Elongation", ("original", "shape2D", "Elongation"), None),
        ("wavelet-LH_glszm_SmallAreaEmphasis", ("wavelet-LH", "glszm", "SmallAreaEmphasis"), 1),
        # wavelet level 2: the glossary accepted it and classification dropped it before one parser owned it
        ("wavelet2-LLH_firstorder_10Percentile", ("wavelet2-LLH", "firstorder", "10Percentile"), 2),
        ("log-sigma-3-0-mm-3D_glcm_Idmn", ("log-sigma-3-0-mm-3D", "glcm", "Idmn"), None),
        ("lbp-3D-m1_gldm_DependenceEntropy", ("lbp-3D-m1", "gldm", "DependenceEntropy"), None),
    ],
)
def test_pyradiomics_names_parse(name, parts, level):
    parsed = parse_radiomic_name(name)
    assert parsed.is_pyradiomics and (parsed.image_type, parsed.feature_class, parsed.feature) == parts
    assert parsed.wavelet_level == level


@pytest.mark.parametrize(
    "name",
    ["diagnostics_Mask-original_VoxelNum", "resnet50_2047", "tumour_stiffness", "original_foo_Mean", "x"],
)
def test_other_names_are_not_radiomic(name):
    assert not is_radiomic_feature(name)
    assert parse_radiomic_name(name).feature_class == ""


def test_wavelet_level_two_columns_form_the_radiomic_set():
    from Rad4XCNNLogic.classify.classifiers import infer_feature_sets

    sets = infer_feature_sets(["resnet50_0", "wavelet2-LLH_glcm_Contrast", "original_glcm_Contrast"])
    assert sets["radiomic"] == ["wavelet2-LLH_glcm_Contrast", "original_glcm_Contrast"]


def test_feature_set_names_round_trip():
    for kind in FEATURE_SET_KINDS:
        for model in (None, "resnet50", "vit_base_patch32_224"):
            name = feature_set_name(kind, model)
            assert feature_set_kind(name) == kind
            assert feature_set_model(name) == (None if kind == "radiomic" else model)
    assert feature_set_kind("clinical") == "other"
    with pytest.raises(ValueError, match="unknown feature-set kind"):
        feature_set_name("shallow")


def test_run_files():
    assert RunFiles.checkpoint("resnet50") == "models/resnet50.pt"
    assert RunFiles.side_file(RunFiles.DEEP, ".json") == "deep_features.json"


def test_layer_columns_round_trip():
    from Rad4XCNNLogic.names import FINAL_LAYER, deep_layer, deep_model, layer_columns

    for model, layer in (("resnet18", "layer3"), ("vit_small_patch16_224", "blocks.11"), ("r-random", "s_2")):
        columns = layer_columns(model, layer, 3)
        assert [deep_layer(c) for c in columns] == [(model, layer)] * 3
        assert deep_model(columns[2]) == f"{model}.{layer}"  # the explanation groups by model and layer
    assert deep_layer("densenet121_1023") == ("densenet121", FINAL_LAYER)
    assert deep_layer("resnet50_stage3_12") == ("resnet50", "stage3")
    assert deep_layer("wavelet-LH_glrlm_RunEntropy") is None and deep_layer("age") is None


@pytest.mark.parametrize(("model", "layer"), [("resnet50.a1", "layer3"), ("", "layer3"), ("r", "la yer")])
def test_layer_columns_refuse_ambiguous_names(model, layer):
    from Rad4XCNNLogic.names import layer_columns

    with pytest.raises(ValueError):
        layer_columns(model, layer, 2)
