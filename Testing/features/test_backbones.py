"""Backbones by timm name: feature sizes, pooling, stages, weights files, checkpoints, devices, bad names."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402
from Rad4XCNNLogic.features.backbones import (  # noqa: E402
    PreprocessConfig,
    build_backbone,
    check_model_name,
    check_stage,
    load_checkpoint,
    pooled_features,
    resolve_device,
    resolve_dtype,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def two_case_cohort(tmp_path_factory):
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("two")
    return read_manifest(make_synthetic_cohort(out, n=2, seed=1, shape=(96, 128)))


@pytest.mark.parametrize(
    "name, size",
    [("resnet50", 2048), ("densenet121", 1024), ("vit_base_patch16_224", 768)],
)
def test_feature_size_per_architecture(name, size, two_case_cohort):
    from Rad4XCNNLogic.features.deep import extract_deep_features

    result = extract_deep_features(two_case_cohort, name, device="cpu", batch_size=2, progress=False)
    assert result.features.shape == (2, size)
    assert list(result.features.columns[:2]) == [f"{name}_0", f"{name}_1"]
    assert result.settings["random_init"] is True
    assert result.settings["preprocess"]["input_size"] == 224
    assert np.isfinite(result.features.to_numpy()).all()


def test_pooled_features_are_global_average_for_cnn_and_cls_token_for_vit():
    x = torch.randn(2, 3, 64, 64)
    cnn = build_backbone("resnet18").model
    with torch.inference_mode():
        torch.testing.assert_close(pooled_features(cnn, x), cnn.forward_features(x).mean(dim=(2, 3)))
    vit = build_backbone("vit_base_patch32_224", input_size=64).model
    with torch.inference_mode():
        tokens = vit.forward_features(x)  # (B, 1 + patches, 768), CLS first, after the final norm
        torch.testing.assert_close(pooled_features(vit, x), tokens[:, 0])
    assert tokens.shape == (2, 1 + 4, 768)


def test_intermediate_stage_is_pooled_and_checked():
    model = build_backbone("resnet18").model
    x = torch.randn(1, 3, 64, 64)
    assert check_stage(model, "resnet18", -1) == 4
    with torch.inference_mode():
        stage2 = pooled_features(model, x, 2)
        expected = model.forward_intermediates(x, indices=[2], intermediates_only=True)[0].mean(dim=(2, 3))
    assert stage2.shape == (1, 128)
    torch.testing.assert_close(stage2, expected)
    with pytest.raises(Rad4XCNNError, match=r"stage 9 does not exist in resnet18; its stages are 0: 64 ch"):
        check_stage(model, "resnet18", 9)


def test_unknown_model_names_get_suggestions():
    assert check_model_name("resnet50") == "resnet50"
    assert check_model_name("resnet50.a1_in1k") == "resnet50.a1_in1k"
    with pytest.raises(Rad4XCNNError, match=r"unknown model 'resnet5O'; closest timm names: .*resnet50"):
        check_model_name("resnet5O")
    with pytest.raises(Rad4XCNNError, match=r"unknown model 'densnet121'.*densenet121"):
        build_backbone("densnet121")
    with pytest.raises(Rad4XCNNError, match=r"unknown pretrained tag in 'resnet18.nope'; timm has: resnet18"):
        check_model_name("resnet18.nope")


def test_unknown_model_name_on_the_cli_is_one_line(synthetic_manifest, tmp_path, capsys):
    from Rad4XCNNLogic.cli import main

    out = tmp_path / "d.csv"
    argv = ["deep", "--manifest", str(synthetic_manifest), "--model", "vit_base_patch16_2244"]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rad4xcnn: error: unknown model 'vit_base_patch16_2244'; closest timm names: ")
    assert "vit_base_patch16_224" in err and "\n" not in err
    assert not out.exists()


def test_random_initialisation_is_seeded_and_reported(caplog):
    torch.manual_seed(123)
    before = torch.rand(1)
    a = build_backbone("resnet18", seed=0)
    b = build_backbone("resnet18", seed=0)
    c = build_backbone("resnet18", seed=1)
    torch.manual_seed(123)
    assert torch.equal(before, torch.rand(1)), "the caller's random state must be left alone"
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert a.weights.random_init and a.weights.to_dict()["seed"] == 0
    assert "resnet18 has random weights (seed 0)" in caplog.text


def test_torchvision_and_wrapped_state_dicts_load(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        tv.conv1.weight.mul_(3.0)  # not what timm's seeded init would give
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}  # DataParallel
    torch.save(wrapped, tmp_path / "wrapped.pt")
    from safetensors.torch import save_file

    save_file(tv.state_dict(), os.fspath(tmp_path / "tv.safetensors"))
    for file in ("tv.pth", "wrapped.pt", "tv.safetensors"):
        bb = build_backbone("resnet18", tmp_path / file)  # a feature extractor: ImageNet's fc is left out
        assert bb.weights.source == "file" and not bb.weights.random_init and len(bb.weights.sha256) == 64
        own = bb.model.state_dict()
        assert "fc.weight" not in own
        assert all(torch.equal(own[k], v) for k, v in tv.state_dict().items() if not k.startswith("fc."))
    headed = build_backbone("resnet18", tmp_path / "tv.pth", num_classes=2)  # new 2-class head
    assert headed.model.get_classifier().out_features == 2
    torch.testing.assert_close(headed.model.layer4[1].bn2.weight, tv.layer4[1].bn2.weight)


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    torch.save(build_backbone("resnet18").model.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(Rad4XCNNError) as info:
        build_backbone("densenet121", tmp_path / "r18.pth")
    message = str(info.value)
    assert "do not fit densenet121" in message
    assert "missing keys: features.conv0.weight" in message
    assert "unexpected keys: conv1.weight" in message
    assert "\n" not in message
    with pytest.raises(Rad4XCNNError, match=r"do not fit resnet34.*missing keys: layer1\.2\.conv1\.weight"):
        build_backbone("resnet34", tmp_path / "r18.pth")
    with pytest.raises(Rad4XCNNError, match="plain state dict: give the model it was saved from"):
        build_backbone(None, tmp_path / "r18.pth")


def test_unsafe_or_missing_weights_files_are_refused(tmp_path):
    torch.save(build_backbone("resnet18").model, tmp_path / "whole_model.pt")  # pickled code
    with pytest.raises(Rad4XCNNError, match=r"cannot read weights file whole_model\.pt safely"):
        build_backbone("resnet18", tmp_path / "whole_model.pt")
    with pytest.raises(Rad4XCNNError, match="weights file not found"):
        build_backbone("resnet18", tmp_path / "absent.pth")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(Rad4XCNNError, match="does not hold a state dict"):
        build_backbone("resnet18", tmp_path / "no_tensors.pt")


def test_checkpoint_round_trip_keeps_head_and_preprocessing(tmp_path):
    bb = build_backbone("resnet18", num_classes=3, input_size=96, margin=0.25, seed=4)
    history = [{"epoch": 1, "train_loss": 0.5, "val_auc": np.float64(0.75)}]
    path = save_checkpoint(
        tmp_path / "m.pt",
        bb.model,
        bb.name,
        bb.preprocess,
        class_names=["a", "b", "c"],
        history=history,
        best_metric={"name": "val_auc", "value": 0.75, "epoch": 1},
        seed=4,
        extra={"note": torch.__version__},  # a str subclass: stored as plain str
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "rad4xcnn-checkpoint" and raw["version"] == 1
    assert (raw["model_name"], raw["num_classes"], raw["class_names"]) == ("resnet18", 3, ["a", "b", "c"])
    assert raw["preprocess"]["input_size"] == 96 and raw["preprocess"]["margin"] == 0.25
    assert raw["history"][0]["val_auc"] == 0.75
    model, pre, meta = load_checkpoint(path)
    assert pre == bb.preprocess
    assert meta["class_names"] == ["a", "b", "c"] and meta["best_metric"]["epoch"] == 1
    assert model.get_classifier().out_features == 3 and not model.training
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), bb.model(x))
    with pytest.raises(Rad4XCNNError, match="holds a resnet18, not a densenet121"):
        build_backbone("densenet121", path)
    torch.save(bb.model.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(Rad4XCNNError, match="plain state dict, not a rad4xcnn checkpoint"):
        load_checkpoint(tmp_path / "plain.pth")


def test_preprocess_config_for_models():
    assert PreprocessConfig.for_model("vit_base_patch16_224").mean == (0.5, 0.5, 0.5)
    cfg = PreprocessConfig.for_model("resnet50", input_size=128, margin=0.3)
    assert (cfg.input_size, cfg.margin, cfg.interpolation) == (128, 0.3, "bicubic")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Rad4XCNNError, match="margin must be between 0 and 5"):
        PreprocessConfig("resnet50", margin=-0.1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda(synthetic_manifest, tmp_path, capsys):
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_dtype("auto", resolve_device("cpu")) == torch.float32
    with pytest.raises(Rad4XCNNError, match="device cuda was asked for but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(Rad4XCNNError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    from Rad4XCNNLogic.cli import main

    argv = ["deep", "--manifest", str(synthetic_manifest), "--model", "resnet18", "--device", "cuda"]
    assert main([*argv, "--out", str(tmp_path / "d.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rad4xcnn: error: device cuda was asked for but CUDA is not available")


def test_imagenet_weights_offline_say_how_to_give_a_file(synthetic_manifest, tmp_path):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(empty),
        "HF_HUB_CACHE": str(empty / "hub"),
        "TORCH_HOME": str(empty / "torch"),
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
    }
    # a subprocess, since huggingface_hub reads HF_HUB_OFFLINE when imported; offline mode fails at once,
    # the timeout only guards the test run
    command = [sys.executable, "-m", "Rad4XCNNLogic", "deep", "--manifest", str(synthetic_manifest)]
    command += ["--model", "resnet18", "--weights", "imagenet", "--out", str(tmp_path / "d.csv")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("rad4xcnn: error: ImageNet weights for resnet18 could not be obtained")
    assert "https://huggingface.co/timm/resnet18.a1_in1k" in err
    assert "--weights PATH" in err
