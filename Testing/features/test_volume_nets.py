"""Native 3D networks (MONAI) behind timm's interface, the isotropic lesion cube they see, and the deep
features and fine-tuning of volumes through them."""

from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("monai")

from Rad4XCNNLogic.cohort.manifest import Case, LoadedCase, read_manifest  # noqa: E402
from Rad4XCNNLogic.cohort.volumes import Volume  # noqa: E402
from Rad4XCNNLogic.errors import CaseError, Rad4XCNNError  # noqa: E402
from Rad4XCNNLogic.features.backbones import build_backbone, pooled_features  # noqa: E402
from Rad4XCNNLogic.features.cubes import (  # noqa: E402
    CubeDataset,
    cube_to_volume,
    network_input,
    volume_cube,
)
from Rad4XCNNLogic.features.deep import extract_deep_features  # noqa: E402
from Rad4XCNNLogic.features.layers import pooled_layers, resolve_layers  # noqa: E402
from Rad4XCNNLogic.features.settings import TrainingConfig  # noqa: E402
from Rad4XCNNLogic.features.training import train_model  # noqa: E402
from Rad4XCNNLogic.features.volume_nets import VOLUME_NETS, is_volume_net  # noqa: E402

SIDE = 24  # cube side of the tests: small enough for a few-second CPU run


def _flip(array, which):
    axes = tuple(a for a, f in enumerate(which) if f)
    return np.flip(array, axis=axes) if axes else array


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Six small synthetic volumes with anisotropic spacing."""
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes

    out = tmp_path_factory.mktemp("vol3d")
    return read_manifest(
        make_synthetic_volumes(out, n=6, seed=5, shape=(32, 32, 12), spacing=(0.6, 0.9, 2.5))
    )


def _ball_case(spacing_xyz=(0.5, 1.0, 3.0), shape=(12, 40, 60), radius_mm=6.0, centre=None):
    """A volume whose lesion is a ball in millimetres, on a grid of anisotropic spacing."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    sx, sy, sz = spacing_xyz
    centre = centre or [(n - 1) / 2 for n in shape]
    r2 = ((z - centre[0]) * sz) ** 2 + ((y - centre[1]) * sy) ** 2 + ((x - centre[2]) * sx) ** 2
    mask = r2 <= radius_mm**2
    array = np.where(mask, 200.0, 50.0).astype(np.float32)
    return LoadedCase(Case("ball", Path("ball.nrrd"), (), dims=3), Volume(array, spacing_xyz), mask)


def test_a_3d_network_answers_as_a_timm_model():
    # (monai_densenet121 answers the same; building it takes 8 s, too long for the suite)
    net = build_backbone("monai_resnet10", seed=0, input_size=32).model
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.inference_mode():
        maps = net.forward_intermediates(x, intermediates_only=True)
        last, inter = net.forward_intermediates(x)
        features = net.forward_features(x)
        pre_logits = net.forward_head(features, pre_logits=True)
        early = net.forward_intermediates(x, indices=[0], intermediates_only=True, stop_early=True)
    # the stages' widths are the ones feature_info states, and the last one is the feature width
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in net.feature_info]
    assert net.num_features == net.feature_info[-1]["num_chs"] == pre_logits.shape[1]
    assert torch.allclose(last, features) and len(inter) == len(net.feature_info)
    assert torch.allclose(early[0], maps[0])
    # the pooled features are the global average of the last feature map, with no classifier
    assert torch.allclose(pooled_features(net, x), features.mean(dim=(2, 3, 4)), atol=1e-6)
    assert torch.allclose(net(x), pre_logits, atol=1e-6)
    net.reset_classifier(3)
    assert net(x).shape == (2, 3)


def test_the_layers_of_a_3d_network_pool_side_by_side():
    net = build_backbone("monai_resnet10", seed=0).model
    plan = resolve_layers(net, "monai_resnet10", ["layer2", "pre_logits"])
    x = torch.rand(2, 1, SIDE, SIDE, SIDE)
    with torch.inference_mode():
        out = pooled_layers(net, x, plan)
        layer2 = net.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    assert out.shape == (2, 128 + 512)
    assert torch.allclose(out[:, :128], layer2.mean(dim=(2, 3, 4)), atol=1e-6)
    with pytest.raises(Rad4XCNNError, match=r"has no layer 'layer9'.*layer1, layer2, layer3, layer4"):
        resolve_layers(net, "monai_resnet10", ["layer9"])


def test_a_medicalnet_file_loads_and_another_architecture_is_refused(tmp_path):
    source = build_backbone("monai_resnet10", seed=1).model
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # DataParallel, as MedicalNet saves
    state["module.conv_seg.0.weight"] = torch.zeros(2, 512, 1, 1, 1)  # its segmentation decoder
    torch.save({"state_dict": state}, tmp_path / "resnet_10_23dataset.pth")
    loaded = build_backbone("monai_resnet10", tmp_path / "resnet_10_23dataset.pth").model
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    torch.save(build_backbone("monai_resnet18", seed=0).model.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(
        Rad4XCNNError, match=r"do not fit monai_resnet10 \(saved from another architecture\?\)"
    ):
        build_backbone("monai_resnet10", tmp_path / "r18.pt")


def test_3d_network_names_and_weights_have_one_line_errors(monkeypatch):
    assert is_volume_net("monai_resnet18") and not is_volume_net("resnet18")
    assert set(VOLUME_NETS) >= {"monai_resnet10", "monai_resnet50", "monai_densenet121"}
    with pytest.raises(Rad4XCNNError, match=r"unknown 3D network 'monai_resnet12'.*monai_resnet10"):
        build_backbone("monai_resnet12")
    with pytest.raises(Rad4XCNNError, match="without ImageNet weights: give a weights file"):
        build_backbone("monai_resnet10", "imagenet")
    monkeypatch.setitem(sys.modules, "monai", None)  # as if MONAI were not installed
    with pytest.raises(Rad4XCNNError, match=r"pip install 'rad4xcnn\[volumes3d\]'"):
        build_backbone("monai_resnet10")


def test_the_cube_is_isotropic_in_millimetres_and_maps_back_onto_the_voxels():
    loaded = _ball_case()
    config = build_backbone("monai_resnet10", margin=0.25, input_size=SIDE).preprocess
    cube, window = volume_cube(loaded, config)
    assert cube.shape == (SIDE, SIDE, SIDE) and cube.min() >= 0.0 and cube.max() <= 1.0
    # one cube voxel is the same length in mm along the three axes (spacing z, y, x = 3, 1, 0.5 mm)
    mm = [step * spacing for step, spacing in zip(window.step, (3.0, 1.0, 0.5), strict=True)]
    assert np.allclose(mm, mm[0])
    # so the ball is a ball in the cube: the same extent along every axis
    extents = [int((cube > 0.5).any(axis=tuple(a for a in range(3) if a != k)).sum()) for k in range(3)]
    assert max(extents) - min(extents) <= 1
    # the 12 mm ball, grown by 25% of its side on each side, fills 1/1.5 of the cube
    assert abs(max(extents) / SIDE - 1 / 1.5) < 0.1
    # a map that is 1 on the cube's lesion lands on the lesion's voxels
    back = cube_to_volume((cube > 0.5).astype(np.float32), window, loaded.mask.shape)
    inside, outside = back[loaded.mask], back[~loaded.mask]
    assert inside.mean() > 0.9 and outside.mean() < 0.02


def test_a_case_without_lesion_is_seen_whole_and_the_augmentation_flips_axes(volumes):
    loaded = _ball_case()
    empty = LoadedCase(
        Case("normal", Path("n.nrrd"), (), has_lesion=False, dims=3),
        loaded.image,
        np.zeros_like(loaded.mask),
    )
    config = build_backbone("monai_resnet10", margin=0.0, input_size=SIDE).preprocess
    _, window = volume_cube(empty, config)
    back = cube_to_volume(np.ones((SIDE,) * 3), window, loaded.mask.shape)
    assert back.min() == 1.0  # the whole volume lies in the cube
    plain = CubeDataset(volumes.cases[:1], config)
    flipped = CubeDataset(volumes.cases[:1], config, augment=True, seed=1)
    flips = set()
    for epoch in range(8):
        flipped.epoch = epoch
        cube, base = flipped[0][1], plain[0][1]
        axes = [a for a in itertools.product((0, 1), repeat=3) if np.array_equal(cube, _flip(base, a))]
        assert axes, "an augmented cube is the cube flipped along some axes"
        flips.add(axes[0])
    assert len(flips) > 2  # the flips change from one epoch to the next


def test_deep_features_of_volumes_through_a_3d_network(volumes, tmp_path):
    kwargs = {"device": "cpu", "progress": False, "input_size": SIDE, "cache_dir": tmp_path / "cache"}
    result = extract_deep_features(volumes, "monai_resnet10", **kwargs)
    assert result.features.shape == (6, 512)
    assert list(result.features.columns[:2]) == ["monai_resnet10_0", "monai_resnet10_1"]
    assert result.settings["volumes"]["network"] == "3d" and "planes" not in result.settings["volumes"]
    assert result.settings["preprocess"]["input_size"] == SIDE
    assert np.isfinite(result.features.to_numpy()).all()
    again = extract_deep_features(volumes, "monai_resnet10", **kwargs)
    assert again.cache_hits == 6 and again.features.equals(result.features)
    layers = extract_deep_features(
        volumes, "monai_resnet10", layers=["layer3", "pre_logits"], **{**kwargs, "cache_dir": None}
    )
    assert layers.features.shape == (6, 256 + 512)
    assert np.allclose(layers.features.iloc[:, 256:].to_numpy(), result.features.to_numpy(), atol=1e-5)


def test_a_3d_network_refuses_2d_images(synthetic_manifest):
    cohort = read_manifest(synthetic_manifest)
    with pytest.raises(Rad4XCNNError, match="monai_resnet10 is a 3D network and the cohort holds 2D images"):
        extract_deep_features(cohort, "monai_resnet10", device="cpu", progress=False)
    with pytest.raises(Rad4XCNNError, match="monai_resnet10 is a 3D network and the cohort holds 2D images"):
        train_model(cohort, "monai_resnet10", TrainingConfig(epochs=1), device="cpu", progress=False)


def test_fine_tuning_a_3d_network_on_volumes(volumes, tmp_path):
    # training.pretrained is left True: a 3D network has no ImageNet weights and starts at random
    settings = TrainingConfig(epochs=1, batch_size=4, input_size=SIDE, val_fraction=0.5)
    cases = [replace(c, split="train") for c in volumes.cases]  # so validation gets both classes
    out = tmp_path / "m.pt"
    result = train_model(cases, "monai_resnet10", settings, device="cpu", out=out, progress=False)
    assert result.settings["volumes"] == {"network": "3d"}
    assert result.settings["base_weights"]["source"] == "random"
    assert len(result.history) == 1 and np.isfinite(result.history[-1]["train_loss"])
    reread = extract_deep_features(volumes, None, result.checkpoint, device="cpu", progress=False)
    direct = extract_deep_features(volumes, result.backbone, device="cpu", progress=False)
    assert reread.settings["weights"]["checkpoint"] and reread.settings["class_names"] == result.class_names
    assert np.allclose(reread.features.to_numpy(), direct.features.to_numpy(), atol=1e-5)
    meta = torch.load(result.checkpoint, weights_only=True)
    assert meta["model_name"] == "monai_resnet10" and "monai" in meta["versions"]


def test_one_input_per_case_a_cube_for_a_3d_network_and_none_for_2d_slices():
    loaded = _ball_case()
    config = build_backbone("monai_resnet10", input_size=SIDE).preprocess
    x = network_input(loaded, config, "monai_resnet10")
    cube, _ = volume_cube(loaded, config)
    assert x.shape == (1, SIDE, SIDE, SIDE) and torch.equal(x[0], torch.from_numpy(cube))  # mean 0, std 1
    with pytest.raises(CaseError, match="case ball: resnet18 sees a volume as several slices"):
        network_input(loaded, config, "resnet18")


def test_the_concept_sensitivity_of_a_3d_network_is_its_logit_along_a_direction():
    from Rad4XCNNLogic.explain.concepts import directional_derivatives

    net = build_backbone("monai_resnet10", seed=0, num_classes=2).model.double()
    x = torch.rand(2, 1, SIDE, SIDE, SIDE, dtype=torch.float64)
    direction = np.random.default_rng(0).normal(size=256)
    derivative = directional_derivatives(net, "layer3", x, direction[None], 1)[:, 0]
    # moving layer3's output by eps * direction at every voxel moves the logit by eps * derivative
    eps, shift = 1e-7, torch.from_numpy(direction).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        base = net(x)[:, 1]
        handle = net.layer3.register_forward_hook(lambda _m, _i, out: out + eps * shift)
        moved = net(x)[:, 1]
        handle.remove()
    assert np.allclose(((moved - base) / eps).numpy(), derivative, rtol=1e-3, atol=1e-6)
