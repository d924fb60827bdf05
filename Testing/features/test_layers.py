"""Layer-wise deep features: the pooled layers equal timm's own intermediate outputs, columns name model and
layer, ViT blocks give the CLS token, and unknown layers are refused with the model's layers listed."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from Rad4XCNNLogic.cohort.manifest import read_manifest  # noqa: E402
from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402
from Rad4XCNNLogic.features.backbones import build_backbone  # noqa: E402
from Rad4XCNNLogic.features.deep import extract_deep_features  # noqa: E402
from Rad4XCNNLogic.features.layers import model_layers, pooled_layers, resolve_layers  # noqa: E402
from Rad4XCNNLogic.features.preprocessing import preprocess_case  # noqa: E402
from Rad4XCNNLogic.names import deep_layer  # noqa: E402


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("layers")
    return read_manifest(make_synthetic_cohort(out, n=4, seed=5, shape=(80, 96))).lesion_cases().cases[:3]


def test_layer_features_equal_timms_intermediate_outputs(cases):
    layers = ["layer2", "layer4", "pre_logits"]
    result = extract_deep_features(
        cases, "resnet18", layers=layers, input_size=64, device="cpu", progress=False, num_workers=0
    )
    frame = result.features
    assert frame.shape == (len(cases), 128 + 512 + 512)
    assert frame.columns[0] == "resnet18.layer2_0" and frame.columns[128] == "resnet18.layer4_0"
    assert frame.columns[-1] == "resnet18_511"
    assert [deep_layer(c) for c in frame.columns[[0, 200, -1]]] == [
        ("resnet18", "layer2"),
        ("resnet18", "layer4"),
        ("resnet18", "pre_logits"),
    ]
    assert result.settings["layers"] == {"layer2": 128, "layer4": 512, "pre_logits": 512}

    backbone = build_backbone("resnet18", input_size=64)  # the same seed: the same random weights
    model = backbone.model.eval()
    x = torch.stack([preprocess_case(c.load(), backbone.preprocess)[0] for c in cases])
    with torch.inference_mode():
        inter = model.forward_intermediates(x, indices=[2, 4], intermediates_only=True)
        final = model.forward_head(model.forward_features(x), pre_logits=True)
    expected = np.hstack([inter[0].mean((2, 3)).numpy(), inter[1].mean((2, 3)).numpy(), final.numpy()])
    np.testing.assert_allclose(frame.to_numpy(), expected, rtol=1e-4, atol=1e-5)


def test_vit_blocks_give_the_cls_token():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plan = resolve_layers(model, "vit", ["blocks.1", "blocks.11"])
    with torch.inference_mode():
        out = pooled_layers(model, x, plan)
        tokens = []
        h = model._pos_embed(model.patch_embed(x))
        h = model.norm_pre(model.patch_drop(h))
        for i, block in enumerate(model.blocks):
            h = block(h)
            if i in (1, 11):
                tokens.append(h[:, 0])
    assert out.shape == (2, 2 * 192)
    torch.testing.assert_close(out, torch.cat(tokens, dim=1), rtol=1e-5, atol=1e-5)


def test_unknown_layer_lists_the_models_layers():
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert model_layers(model) == ["act1", "layer1", "layer2", "layer3", "layer4", "pre_logits"]
    with pytest.raises(Rad4XCNNError, match=r"resnet18 has no layer 'layer9'; its layers are act1, layer1,"):
        resolve_layers(model, "resnet18", ["layer2", "layer9"])
    with pytest.raises(Rad4XCNNError, match="named twice"):
        resolve_layers(model, "resnet18", ["layer2", "layer2"])


def test_layers_and_stage_together_are_refused(cases):
    with pytest.raises(Rad4XCNNError, match="either an intermediate stage or layers"):
        extract_deep_features(cases, "resnet18", layers=["layer2"], stage=1, input_size=64, progress=False)


def test_deep_command_with_layers(cases, tmp_path, capsys):
    import pandas as pd

    from Rad4XCNNLogic.cli import main

    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "case_id": [c.case_id for c in cases],
            "image": [c.image for c in cases],
            "mask": [c.masks[0] for c in cases],
        }
    ).to_csv(manifest, index=False)
    out = tmp_path / "deep.csv"
    common = [
        "deep",
        "--manifest",
        str(manifest),
        "--model",
        "resnet18",
        "--input-size",
        "64",
        "--no-progress",
    ]
    assert main([*common, "--layers", "layer1,layer3", "--device", "cpu", "--out", str(out)]) == 0
    table = pd.read_csv(out, index_col=0)
    assert table.shape == (3, 64 + 256)
    assert {deep_layer(c) for c in table.columns} == {("resnet18", "layer1"), ("resnet18", "layer3")}
    capsys.readouterr()
    assert main([*common, "--layers", "layer3,fc", "--out", str(tmp_path / "x.csv")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the random-weights warning
    assert last == (
        "rad4xcnn: error: resnet18 has no layer 'fc'; its layers are act1, layer1, layer2, layer3, layer4, "
        "pre_logits"
    )


def test_configuration_layers_rules():
    from Rad4XCNNLogic.run.config import config_from_dict

    cfg = config_from_dict({"models": [{"name": "resnet18", "layers": ["layer2", "pre_logits"]}]})
    assert cfg.models[0].layers == ["layer2", "pre_logits"]
    with pytest.raises(Rad4XCNNError, match=r"models\.layers: resnet18: give either a stage or layers"):
        config_from_dict({"models": [{"name": "resnet18", "layers": ["layer2"], "stage": 1}]})
    with pytest.raises(Rad4XCNNError, match=r"a backbone with layers needs a label without '\.'"):
        config_from_dict({"models": [{"name": "resnet18", "label": "r.18", "layers": ["layer2"]}]})


def test_run_configuration_layers_reach_the_deep_job():
    from Rad4XCNNLogic.run.config import config_from_dict
    from Rad4XCNNLogic.run.stages import _deep_job

    cfg = config_from_dict({"models": [{"name": "resnet18", "layers": ["layer2", "layer4"]}]})
    job, weights_id = _deep_job(None, cfg.models[0])
    assert job.layers == ("layer2", "layer4") and job.stage is None and weights_id is None


def test_a_backbones_random_control_pools_the_same_layers():
    from Rad4XCNNLogic.run.config import config_from_dict

    cfg = config_from_dict(
        {"models": [{"name": "resnet18", "weights": "imagenet", "layers": ["layer2", "layer4"]}]}
    )
    control = cfg.deep_models()[-1]
    assert (control.label, control.weights, control.layers) == ("resnet18-random", None, ["layer2", "layer4"])
    # a random model of the same architecture but other layers is not its control
    other = {"name": "resnet18", "label": "r-l1", "weights": None, "layers": ["layer1"]}
    cfg = config_from_dict(
        {"models": [{"name": "resnet18", "weights": "imagenet", "layers": ["layer2"]}, other]}
    )
    assert cfg.controls() == {"resnet18": "resnet18-random"}
