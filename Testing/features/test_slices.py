"""2.5D deep features of volumes: the lesion's slices cropped in millimetres, pooled by mean and max per case,
the pooling recorded, and the maps of a slice's input mapped back onto its voxels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from Rad4XCNNLogic.cohort.manifest import Case, LoadedCase, read_manifest  # noqa: E402
from Rad4XCNNLogic.cohort.volumes import Volume  # noqa: E402
from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402
from Rad4XCNNLogic.features.backbones import build_backbone, pooled_features  # noqa: E402
from Rad4XCNNLogic.features.deep import extract_deep_features  # noqa: E402
from Rad4XCNNLogic.features.preprocessing import normalize_batch  # noqa: E402
from Rad4XCNNLogic.features.slices import (  # noqa: E402
    lesion_slices,
    sample_window,
    slice_window,
    volume_inputs,
    window_to_volume,
)
from Rad4XCNNLogic.names import slice_pooled_widths, slice_pooling  # noqa: E402

SMALL = {"model": "resnet18", "input_size": 64, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Six small synthetic volumes with anisotropic spacing."""
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes

    out = tmp_path_factory.mktemp("vol")
    return read_manifest(
        make_synthetic_volumes(out, n=6, seed=3, shape=(32, 32, 12), spacing=(0.6, 0.9, 2.5))
    )


def _ball_case(spacing_xyz=(0.5, 1.0, 3.0), shape=(12, 40, 60), radius_mm=6.0):
    """A volume whose lesion is a ball in millimetres, on a grid of anisotropic spacing."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    sx, sy, sz = spacing_xyz
    centre = [(n - 1) / 2 for n in shape]
    r2 = ((z - centre[0]) * sz) ** 2 + ((y - centre[1]) * sy) ** 2 + ((x - centre[2]) * sx) ** 2
    mask = r2 <= radius_mm**2
    array = np.where(mask, 200.0, 50.0).astype(np.float32)
    case = Case("ball", Path("ball.nrrd"), (), dims=3)
    return LoadedCase(case, Volume(array, spacing_xyz), mask)


def test_lesion_slices_keep_the_lesion_and_spread_evenly():
    mask = np.zeros((20, 4, 4), bool)
    mask[3:18, 1:3, 1:3] = True
    assert lesion_slices(mask, 0, None) == list(range(3, 18))
    picked = lesion_slices(mask, 0, 4)
    assert picked == [3, 8, 12, 17]  # first and last kept, gaps as even as integers allow
    assert lesion_slices(mask, 1, None) == [1, 2]


@pytest.mark.parametrize("plane_axis", [0, 1])
def test_the_crop_is_square_in_millimetres_whatever_the_spacing(plane_axis):
    """A ball of 6 mm radius on a 0.5 x 1 x 3 mm grid is a disc in every model input: as wide as tall,
    and 1 / (1 + 2 * margin) of the input (the margin is a fraction of the lesion's longer side in mm)."""
    loaded = _ball_case()
    spacing_zyx = tuple(reversed(loaded.image.spacing))
    index = loaded.image.shape[plane_axis] // 2
    window = slice_window(loaded.mask, spacing_zyx, plane_axis, index, margin=0.25, size=96)
    disc = sample_window(loaded.mask.astype(np.float32), window) > 0.5
    rows = np.flatnonzero(disc.any(axis=1))
    cols = np.flatnonzero(disc.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert abs(height - width) <= 0.1 * 96, (height, width)  # not stretched by the anisotropic voxels
    assert 0.45 * 96 <= max(height, width) <= 0.7 * 96  # 1 / 1.5 of the input, less the voxel rounding


def test_a_map_on_the_input_maps_back_onto_the_slice():
    loaded = _ball_case()
    spacing_zyx = tuple(reversed(loaded.image.spacing))
    window = slice_window(loaded.mask, spacing_zyx, 0, 6, margin=0.1, size=64)
    sampled = sample_window(loaded.mask.astype(np.float32), window)
    back = window_to_volume(sampled, window, loaded.image.shape) > 0.5
    truth = loaded.mask[6]
    assert back.shape == truth.shape
    overlap = (back & truth).sum() / (back | truth).sum()
    assert overlap > 0.85
    assert not back[:, :5].any()  # 0 outside the window


def test_volume_features_are_the_pooled_slice_features(volumes):
    """Every case gets a vector; each column block is the mean then the max of the slices' features, as
    the 2D network gives them slice by slice."""
    result = extract_deep_features(volumes, max_slices=5, **SMALL)
    features = result.features
    assert list(features.index) == volumes.case_ids
    assert features.shape[1] == slice_pooled_widths([512])[0] and np.isfinite(features.values).all()
    assert result.settings["volumes"]["pooling"] == ["mean", "max"]
    assert (
        result.settings["volumes"]["planes"] == "axial" and result.settings["volumes"]["slices_computed"] > 4
    )

    backbone = build_backbone("resnet18", input_size=64)
    loaded = volumes.cases[0].load()
    grey, windows = volume_inputs(loaded, backbone.preprocess, "axial", 5)
    assert 1 < len(windows) <= 5 and all(loaded.mask[w.index].any() for w in windows)
    with torch.inference_mode():
        x = normalize_batch(torch.from_numpy(grey)[:, None], backbone.preprocess)
        slices = pooled_features(backbone.model.eval(), x).numpy()
    row = features.iloc[0].to_numpy()
    np.testing.assert_allclose(row[:512], slices.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(row[512:], slices.max(axis=0), rtol=1e-4, atol=1e-5)
    assert slice_pooling(512 + 7, 512) == ("max", 7)


def test_triplanar_and_layers_pool_each_block(volumes):
    axial = extract_deep_features(volumes.cases[:2], layers=["layer2", "pre_logits"], **SMALL)
    tri = extract_deep_features(
        volumes.cases[:2], layers=["layer2", "pre_logits"], planes="triplanar", **SMALL
    )
    assert tri.settings["volumes"]["slices_computed"] > axial.settings["volumes"]["slices_computed"]
    columns = list(tri.features.columns)
    assert columns[:2] == ["resnet18.layer2_0", "resnet18.layer2_1"] and columns[255] == "resnet18.layer2_255"
    assert columns[256] == "resnet18_0" and columns[-1] == "resnet18_1023" and len(columns) == 256 + 1024
    means, maxima = tri.features.iloc[:, :128].to_numpy(), tri.features.iloc[:, 128:256].to_numpy()
    assert (maxima >= means - 1e-6).all()
    with pytest.raises(Rad4XCNNError, match="triplanar"):
        extract_deep_features(volumes.cases[:1], planes="coronal", **SMALL)


def test_the_deep_stage_records_the_pooling(volumes, tmp_path):
    from Rad4XCNNLogic.features.settings import DEEP
    from Rad4XCNNLogic.run.work import DeepJob, deep_stage

    out = tmp_path / "deep_features.csv"
    summary = deep_stage(
        volumes,
        [DeepJob(None, "resnet18")],
        out,
        deep=replace(DEEP, input_size=64, max_slices=3),
        device="cpu",
        seed=0,
        cache_dir=None,
        progress=False,
    )
    assert summary["cases"] == len(volumes)
    side = json.loads(out.with_name("deep_features.json").read_text())
    assert side["resnet18"]["settings"]["volumes"]["pooling"] == ["mean", "max"]
    assert side["resnet18"]["settings"]["volumes"]["max_slices"] == 3


def test_slice_predictions_average_per_case():
    from Rad4XCNNLogic.features.slices import per_case

    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]])
    mean, labels = per_case([0, 0, 1, 1], [2, 0, 1, 3], proba, [1, 0, 0, 1])
    # rows hold items 2, 0, 1, 3: case 0 (items 0, 1) is rows 1 and 2, case 1 (items 2, 3) rows 0 and 3
    np.testing.assert_allclose(mean, [[0.35, 0.65], [0.65, 0.35]])
    assert labels == [0, 1]


def test_fine_tuning_learns_from_volume_slices(volumes, tmp_path):
    from Rad4XCNNLogic.features.settings import TrainingConfig
    from Rad4XCNNLogic.features.slices import SliceDataset
    from Rad4XCNNLogic.features.training import train_model

    val_ids = {"vol0002", "vol0006"}  # one benign, one malignant: a validation AUC per case
    cases = [replace(c, split="val" if c.case_id in val_ids else "train") for c in volumes.cases]
    train = [c for c in cases if c.split == "train"]
    section = TrainingConfig(epochs=1, batch_size=8, input_size=64, pretrained=False)
    result = train_model(
        cases, "resnet18", section, device="cpu", out=tmp_path / "m.pt", max_slices=3, progress=False
    )
    assert len(result.history) == 1 and np.isfinite(result.history[-1]["train_loss"])
    assert result.settings["volumes"]["max_slices"] == 3 and result.settings["val_cases"] == 2
    dataset = SliceDataset(train, result.backbone.preprocess, max_slices=3)
    assert result.settings["volumes"]["train_slices"] > result.settings["train_cases"]
    assert len(dataset) > len(train) and {c.label for c in dataset.cases} <= {c.label for c in train}
    features = extract_deep_features(
        volumes, weights=tmp_path / "m.pt", device="cpu", progress=False, max_slices=3
    )
    assert features.features.shape == (len(volumes), 1024)
