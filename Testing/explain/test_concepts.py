"""Concept directions and TCAV-style sensitivity: the probe's direction is the planted one, the one-pass
directional derivatives equal finite differences through the network, and a linear head gives 0 or 1."""

from __future__ import annotations

import numpy as np
import pytest

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.concepts import (
    concept_directions,
    directional_derivatives,
    tcav_scores,
)
from Rad4XCNNLogic.names import FINAL_LAYER


def test_concept_direction_is_the_planted_one_in_raw_feature_space():
    rng = np.random.default_rng(0)
    scales = np.array([0.1, 1.0, 10.0, 3.0, 0.5, 2.0])
    x = rng.normal(size=(400, 6)) * scales
    a = np.array([5.0, 0.0, 0.1, 0.0, -1.0, 0.0])  # in raw units
    y = np.column_stack([np.tanh(x @ a / 2) + 0.01 * rng.normal(size=400), rng.normal(size=400)])
    d = concept_directions(x, y, [1.0, 1.0])
    assert d.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    assert d[0] @ a / np.linalg.norm(a) > 0.95
    assert abs(d[1] @ a / np.linalg.norm(a)) < 0.5


@pytest.fixture(scope="module")
def tiny_classifier():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=2).double().eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.mark.parametrize("layer", ["layer3", FINAL_LAYER])
def test_directional_derivatives_equal_finite_differences(tiny_classifier, layer):
    import torch

    model, x = tiny_classifier
    width = 256 if layer == "layer3" else 512
    v = np.random.default_rng(2).normal(size=(2, width))  # two directions from one backward pass
    ours = directional_derivatives(model, layer, x, v, target=1)
    assert ours.shape == (3, 2)
    eps = 1e-7  # float64: small enough that no ReLU changes side, large enough for rounding
    shift = torch.as_tensor(v[0], dtype=torch.float64)  # finite differences of the first direction

    def logit(sign):
        if layer == FINAL_LAYER:
            module = model.get_classifier()
            handle = module.register_forward_pre_hook(lambda _m, i: (i[0] + sign * eps * shift,))
        else:
            module = model.get_submodule(layer)
            handle = module.register_forward_hook(
                lambda _m, _i, o: o + sign * eps * shift[None, :, None, None]
            )
        with torch.no_grad():
            out = model(x)[:, 1].numpy()
        handle.remove()
        return out

    np.testing.assert_allclose(ours[:, 0], (logit(1) - logit(-1)) / (2 * eps), rtol=1e-6, atol=1e-9)


def test_tcav_scores_and_their_null(tiny_classifier):
    model, x = tiny_classifier
    rng = np.random.default_rng(3)
    directions = {
        "original_glcm_Contrast": rng.normal(size=256),
        "original_firstorder_Mean": rng.normal(size=256),
    }
    table = tcav_scores(model, "layer3", x, directions, target=1, random=50, seed=0)
    assert list(table["radiomic_feature"]) == list(directions)
    assert table["tcav"].between(0, 1).all() and (table["n_cases"] == 3).all()
    assert table["p"].between(1 / 51, 1).all()
    assert table["tcav_random_mean"].between(0, 1).all()
    # under the linear head, every case moves the same way: the score is 0 or 1, the sign of W_c . v
    head = model.get_classifier().weight.detach().numpy()
    v = rng.normal(size=512)
    last = tcav_scores(model, FINAL_LAYER, x, {"f": v}, target=0, random=0)
    assert last["tcav"].iloc[0] == float(head[0] @ v > 0)
    assert np.isnan(last["p"].iloc[0])


def test_bad_layer_class_and_width_are_named(tiny_classifier):
    model, x = tiny_classifier
    with pytest.raises(Rad4XCNNError, match="no layer 'layer9'"):
        directional_derivatives(model, "layer9", x, np.ones((1, 8)), 0)
    with pytest.raises(Rad4XCNNError, match="class 5 is not an output"):
        directional_derivatives(model, "layer3", x, np.ones((1, 256)), 5)
    with pytest.raises(Rad4XCNNError, match="directions have 8 values, layer layer3 has 256"):
        directional_derivatives(model, "layer3", x, np.ones((1, 8)), 0)


def test_probe_command_measures_the_concepts_of_a_checkpoint(synthetic_manifest, tmp_path, capsys):
    """End to end on a checkpoint of random weights with a two-class head: its layer3 features, a radiomic
    table with one feature planted in them, probes, then the classifier's sensitivity (concepts.csv)."""
    pytest.importorskip("timm")  # the light Python 3.12 environment has no deep-learning stack
    import pandas as pd
    import timm

    from Rad4XCNNLogic.cli import main
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.explain.concepts import CONCEPT_COLUMNS
    from Rad4XCNNLogic.features.backbones import PreprocessConfig, save_checkpoint
    from Rad4XCNNLogic.features.deep import extract_deep_features

    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    checkpoint = save_checkpoint(
        tmp_path / "model.pt",
        model,
        "resnet18",
        PreprocessConfig.for_model("resnet18", input_size=32),
        class_names=["benign", "malignant"],
    )
    cohort = read_manifest(synthetic_manifest, seed=0)
    deep = extract_deep_features(
        cohort, weights=checkpoint, layers=["layer3"], device="cpu", progress=False, num_workers=0
    ).features
    rng = np.random.default_rng(0)
    rad = pd.DataFrame(
        {
            "original_firstorder_Mean": deep.to_numpy() @ rng.normal(size=deep.shape[1]),
            "original_glcm_Contrast": rng.normal(size=len(deep)),
        },
        index=deep.index,
    )
    deep.to_csv(tmp_path / "deep.csv", index_label="case_id")
    rad.to_csv(tmp_path / "rad.csv", index_label="case_id")
    out = tmp_path / "out"
    args = ["probe", "--deep", str(tmp_path / "deep.csv"), "--radiomics", str(tmp_path / "rad.csv")]
    args += ["--manifest", str(synthetic_manifest), "--checkpoint", str(checkpoint), "--folds", "3"]
    args += ["--bootstrap", "50", "--permutations", "10", "--random-directions", "20", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "sensitivity of class 'malignant'" in printed
    concepts = pd.read_csv(out / "concepts.csv")
    assert tuple(concepts.columns) == CONCEPT_COLUMNS
    assert concepts["radiomic_feature"].iloc[0] == "original_firstorder_Mean"  # the best probed first
    assert (concepts["n_searched"] == 2).all()  # chosen (by training-fold CV R², no control) among two
    assert set(concepts["layer"]) == {"layer3"} and set(concepts["target_class"]) == {"malignant"}
    assert concepts["tcav"].between(0, 1).all() and concepts["p"].between(1 / 21, 1).all()
    bad = [*args[:-1], str(tmp_path / "bad"), "--concept-layer", "resnet18.layer9"]
    assert main(bad) == 1
    assert "concept layer 'resnet18.layer9' was not probed; the layers probed are resnet18.layer3" in (
        capsys.readouterr().err
    )
