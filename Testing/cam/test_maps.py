"""Saliency maps: a trained blob detector points at the blob, the map's geometry round-trips to the image,
the metrics on hand-made maps, ScoreCAM against the library, default layers, the CLI and every bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_manifest_rows, write_png

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

from Rad4XCNNLogic.cam.maps import (  # noqa: E402
    ActivationTransform,
    agreement_rows,
    check_methods,
    compute_cams,
    default_target_layer,
    energy_inside,
    map_metrics,
    map_peak,
    map_to_image,
    overlay_image,
    pointing_game,
    resolve_target_layer,
    spearman_agreement,
    top_fraction_iou,
    top_region,
    write_cams,
)
from Rad4XCNNLogic.cam.settings import CamConfig  # noqa: E402
from Rad4XCNNLogic.cli import main  # noqa: E402
from Rad4XCNNLogic.cohort.imageio import Image2D  # noqa: E402
from Rad4XCNNLogic.cohort.manifest import Case, LoadedCase, read_manifest  # noqa: E402
from Rad4XCNNLogic.cohort.roi import SquareCrop  # noqa: E402
from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # On a shared 2-core machine, torch's two OpenMP threads wait on each other whenever the other core is
    # busy: one thread trains this small network several times faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- the blob detector
def make_blob_cohort(out: Path, n: int = 160, seed: int = 0, shape=(64, 80), radius: int = 8):
    """Noisy images with a rectangular region of interest (the mask); half of them ("blob") hold a bright
    Gaussian blob at a random place inside the region, the others ("plain") none. Returns the manifest
    and, per blob case, the blob's disk (radius ``radius``) as a boolean image."""
    rng = np.random.default_rng(seed)
    rows, blobs = [], {}
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for i in range(n):
        case_id = f"c{i:03d}"
        image = rng.normal(70.0, 12.0, shape)
        h, w = rng.integers(28, 39, 2)
        r0, c0 = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        mask = np.zeros(shape, np.uint8)
        mask[r0 : r0 + h, c0 : c0 + w] = 255
        label = "blob" if i % 2 == 0 else "plain"
        if label == "blob":
            br, bc = rng.integers(r0 + radius, r0 + h - radius), rng.integers(c0 + radius, c0 + w - radius)
            d2 = (rr - br) ** 2 + (cc - bc) ** 2
            image += 110.0 * np.exp(-d2 / (2.0 * (radius / 2.0) ** 2))
            blobs[case_id] = d2 <= radius**2
        write_png(out / "img" / f"{case_id}.png", np.clip(image, 0, 255).astype(np.uint8))
        write_png(out / "msk" / f"{case_id}.png", mask)
        split = "train" if i < 0.6 * n else ("val" if i < 0.75 * n else "test")
        rows.append(
            {
                "case_id": case_id,
                "image": f"img/{case_id}.png",
                "mask": f"msk/{case_id}.png",
                "label": label,
                "split": split,
            }
        )
    return write_manifest_rows(out / "manifest.csv", rows), blobs


@pytest.fixture(scope="module")
def blob_detector(tmp_path_factory):
    """A timm ``test_resnet`` trained by ``train_model`` to tell blob from plain (96-px input)."""
    from Rad4XCNNLogic.features.settings import TrainingConfig
    from Rad4XCNNLogic.features.training import train_model

    out = tmp_path_factory.mktemp("blobs")
    manifest, blobs = make_blob_cohort(out)
    cohort = read_manifest(manifest)
    settings = TrainingConfig(
        pretrained=False, epochs=12, batch_size=16, learning_rate=2e-3, input_size=96, augment=False
    )
    result = train_model(
        cohort,
        "test_resnet",
        settings,
        device="cpu",
        out=out / "blob.pt",
        num_workers=0,
        progress=False,
        seed=0,
    )
    assert result.best_val_auc > 0.95
    return {"manifest": manifest, "cohort": cohort, "blobs": blobs, "checkpoint": result.checkpoint}


def test_gradcam_of_the_trained_detector_points_at_the_blob(blob_detector):
    cohort, blobs = blob_detector["cohort"], blob_detector["blobs"]
    test_blobs = [c.case_id for c in cohort.cases if c.split == "test" and c.case_id in blobs]
    assert len(test_blobs) == 20
    # layer3: the last stage of a 96-px input is a 3x3 grid, too coarse to resolve a radius-8 blob
    result = compute_cams(
        cohort,
        blob_detector["checkpoint"],
        CamConfig(methods=["gradcam"], target_layer="layer3"),
        cases=test_blobs,
        device="cpu",
        progress=False,
    )
    assert result.settings["target_layer"] == "layer3"
    assert result.settings["task_classifier"] is True
    metrics = result.metrics.set_index("case_id")
    assert (metrics["predicted_class"] == "blob").mean() >= 0.9
    assert (metrics["target_class"] == metrics["predicted_class"]).all()
    hits = [pointing_game(result.maps[(c, "gradcam")], blobs[c], tolerance=0) for c in test_blobs]
    assert np.mean(hits) >= 0.8
    assert metrics["pointing_hit"].mean() >= 0.8  # the region of interest holds the blob
    for case_id in test_blobs:
        cam = result.maps[(case_id, "gradcam")]
        assert cam.shape == (64, 80) and cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("svd_sign", [1.0, -1.0])
def test_eigencam_of_the_detector_points_at_the_blob_for_either_svd_sign(
    blob_detector, monkeypatch, svd_sign
):
    cohort, blobs = blob_detector["cohort"], blob_detector["blobs"]
    test_blobs = [c.case_id for c in cohort.cases if c.split == "test" and c.case_id in blobs]
    svd = np.linalg.svd
    seen = []

    def signed_svd(a, *args, **kwargs):
        u, s, vt = svd(a, *args, **kwargs)
        seen.append(True)
        return svd_sign * u, s, svd_sign * vt

    monkeypatch.setattr(np.linalg, "svd", signed_svd)
    args = {"cases": test_blobs, "device": "cpu", "progress": False}
    section = CamConfig(methods=["eigencam"], target_layer="layer3", faithfulness=False, randomisation="none")
    result = compute_cams(cohort, blob_detector["checkpoint"], section, **args)
    assert seen  # the SVD ran with the sign this test forces
    hits = [pointing_game(result.maps[(c, "eigencam")], blobs[c], tolerance=0) for c in test_blobs]
    assert np.mean(hits) >= 0.8
    assert (result.metrics["flags"] == "").mean() >= 0.8


def test_the_unoriented_component_depends_on_the_svd_sign(monkeypatch):
    """The reason for the orientation: the library's projection of a flipped SVD is the negated map."""
    from Rad4XCNNLogic.cam.methods import first_component_projection

    activations = np.random.default_rng(0).random((2, 8, 5, 5)).astype(np.float32)
    plain = first_component_projection(activations, orient=False)
    oriented = first_component_projection(activations)
    svd = np.linalg.svd
    monkeypatch.setattr(
        np.linalg, "svd", lambda a, *k, **kw: (lambda u, s, vt: (-u, s, -vt))(*svd(a, *k, **kw))
    )
    np.testing.assert_allclose(first_component_projection(activations, orient=False), -plain, atol=1e-6)
    np.testing.assert_allclose(first_component_projection(activations), oriented, atol=1e-6)


def test_cli_writes_maps_overlays_and_tables(blob_detector, tmp_path, capsys):
    out = tmp_path / "run"
    ids = ["c120", "c121", "c122"]
    code = main(
        [
            "cam",
            "--manifest",
            str(blob_detector["manifest"]),
            "--weights",
            str(blob_detector["checkpoint"]),
            "--methods",
            "gradcam,eigencam,scorecam",
            "--cases",
            ",".join(ids),
            "--target-layer",
            "layer3",
            "--device",
            "cpu",
            "--batch-size",
            "64",
            "--randomisation",
            "all",
            "--no-faithfulness",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 9 maps of 3 case(s)" in printed and "pointing game" in printed
    assert "which map to trust:" in printed and printed.count("\n  scorecam: ") == 1
    assert "gradcam vs scorecam" in printed
    import pandas as pd
    import SimpleITK as sitk
    from PIL import Image

    metrics = pd.read_csv(out / "cam" / "cam_metrics.csv", index_col=0)
    assert metrics.index.name == "case_id"
    assert sorted(metrics["method"].unique()) == ["eigencam", "gradcam", "scorecam"]
    assert len(metrics) == 9 and set(metrics.index) == set(ids)
    for column in ("flags", "road_combined", "deletion_auc", "insertion_auc", "randomisation_similarity"):
        assert column in metrics
    assert metrics["road_combined"].isna().all()  # --no-faithfulness (measured in test_checks.py)
    assert metrics["randomisation_similarity"].dropna().between(-1, 1).all()
    steps = pd.read_csv(out / "cam" / "cam_randomisation.csv")
    assert set(steps["step"]) == {"all"} and len(steps) == 9
    agreement = pd.read_csv(out / "cam" / "cam_agreement.csv", index_col=0)
    flagged = metrics[metrics["flags"].astype("string").fillna("") != ""]
    assert len(agreement) == 9 - sum(2 for _ in flagged.itertuples())  # a flagged map leaves two pairs
    assert list(agreement.columns) == ["method_a", "method_b", "spearman", "top20_iou"]
    assert agreement["spearman"].between(-1, 1).all() and agreement["top20_iou"].between(0, 1).all()
    run = json.loads((out / "cam" / "cam_run.json").read_text())
    assert run["settings"]["scorecam_forward_passes_per_case"] == 192  # test_resnet's layer3 channels
    assert run["failures"] == [] and run["settings"]["randomisation"] == "all"
    assert len(run["flagged_maps"]) == len(flagged)
    for case_id in ids:
        for method in ("gradcam", "eigencam", "scorecam"):
            img = sitk.ReadImage(str(out / "cam" / f"{case_id}_{method}.nrrd"))
            assert img.GetSize() == (80, 64)
            png = Image.open(out / "cam" / f"{case_id}_{method}.png")
            assert png.size == (80, 64) and png.mode == "RGB"


# ------------------------------------------------------------------------------------------------ geometry
def _loaded(array, mask, spacing=(1.0, 1.0), origin=(0.0, 0.0), case_id="g"):
    case = Case(case_id, Path(f"{case_id}.nrrd"), (Path(f"{case_id}_mask.nrrd"),), "blob")
    return LoadedCase(case, Image2D(array.astype(np.float32), spacing, origin), mask)


def test_a_map_of_ones_maps_back_to_exactly_the_crop_box():
    from Rad4XCNNLogic.features.backbones import PreprocessConfig
    from Rad4XCNNLogic.features.preprocessing import preprocess_case

    shape = (70, 110)  # not square
    mask = np.zeros(shape, bool)
    mask[2:30, 85:108] = True  # near the top-right corner: the square crop pads past the border
    loaded = _loaded(np.random.default_rng(0).uniform(0, 255, shape), mask)
    config = PreprocessConfig("test_resnet", input_size=48, margin=0.4)
    x, crop = preprocess_case(loaded, config)
    assert tuple(x.shape) == (3, 48, 48)
    assert crop.padding[0] > 0 and crop.padding[3] > 0  # padded on top and on the right
    back = map_to_image(np.ones((48, 48), np.float32), crop)
    expected = np.zeros(shape, np.float32)
    r0, c0, r1, c1 = crop.box_in_image
    expected[r0:r1, c0:c1] = 1.0
    assert back.shape == shape
    np.testing.assert_allclose(back, expected, atol=1e-6)


def test_a_peak_on_the_input_lands_where_the_crop_says():
    crop = SquareCrop(top=-12, left=30, side=66, image_shape=(60, 100))
    size = 33  # each input pixel is 2x2 image pixels
    for r, c in [(20, 10), (30, 25), (10, 30)]:
        cam = np.zeros((size, size), np.float32)
        cam[r, c] = 1.0
        back = map_to_image(cam, crop)
        expected_r, expected_c = crop.input_to_image(np.array([r]), np.array([c]), size)
        peak = np.unravel_index(np.argmax(back), back.shape)
        assert abs(peak[0] - expected_r[0]) <= 1.0 and abs(peak[1] - expected_c[0]) <= 1.0


def test_nrrd_keeps_the_image_geometry_and_zero_outside_the_crop(blob_detector, tmp_path):
    import SimpleITK as sitk

    from Rad4XCNNLogic.cohort.imageio import write_image

    shape = (60, 90)
    rng = np.random.default_rng(1)
    array = rng.normal(70, 12, shape)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    array += 110 * np.exp(-((rr - 12) ** 2 + (cc - 10) ** 2) / 32.0)
    mask = np.zeros(shape, np.uint8)
    mask[0:26, 0:28] = 1  # at the corner: padding on top and left
    geometry = Image2D(array.astype(np.float32), spacing=(0.5, 0.8), origin=(3.0, -7.0))
    write_image(tmp_path / "g.nrrd", np.clip(array, 0, 255).astype(np.float32), like=geometry)
    write_image(tmp_path / "g_mask.nrrd", mask, like=geometry)
    manifest = write_manifest_rows(
        tmp_path / "m.csv", [{"case_id": "g 1", "image": "g.nrrd", "mask": "g_mask.nrrd", "label": "blob"}]
    )
    result = compute_cams(
        read_manifest(manifest),
        blob_detector["checkpoint"],
        CamConfig(methods=["gradcam", "eigencam"], target_layer="layer3"),
        device="cpu",
        out_dir=tmp_path / "out",
        progress=False,
    )
    assert result.maps == {}  # written, not kept
    paths = result.files[("g 1", "gradcam")]
    assert paths["nrrd"].parent == tmp_path / "out" / "cam" and paths["nrrd"].name.startswith("g_1_")
    written = sitk.ReadImage(str(paths["nrrd"]))
    assert written.GetSize() == (90, 60)
    assert written.GetSpacing() == pytest.approx((0.5, 0.8))
    assert written.GetOrigin() == pytest.approx((3.0, -7.0))
    cam = sitk.GetArrayFromImage(written)
    crop = result.crops["g 1"]
    r0, c0, r1, c1 = crop.box_in_image
    assert (r0, c0) == (0, 0) and crop.padding[0] > 0 and crop.padding[1] > 0
    outside = np.ones(shape, bool)
    outside[r0:r1, c0:c1] = False
    assert cam[outside].max() == 0.0 and cam[~outside].max() > 0.5
    row = result.metrics.set_index("method").loc["gradcam"]
    assert (row["peak_row"], row["peak_col"]) == map_peak(cam)
    from PIL import Image

    overlay = np.asarray(Image.open(paths["png"]))
    assert overlay.shape == (60, 90, 3)
    assert tuple(overlay[10, 27]) == (0, 255, 0)  # the lesion contour's right edge


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_on_hand_made_maps():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    cam = np.zeros((10, 10))
    cam[3, 3], cam[8, 8] = 3.0, 1.0
    assert energy_inside(cam, mask) == pytest.approx(0.75)
    assert np.isnan(energy_inside(cam, None)) and np.isnan(energy_inside(np.zeros((10, 10)), mask))
    assert pointing_game(cam, mask, tolerance=0) == 1.0
    assert pointing_game(cam, ~mask, tolerance=0) == 0.0
    assert np.isnan(pointing_game(cam, np.zeros((10, 10), bool), tolerance=0))
    assert np.isnan(pointing_game(np.zeros((10, 10)), mask, tolerance=0))
    near = np.zeros((10, 10))
    near[3, 7] = 1.0  # 3 pixels right of the mask
    assert pointing_game(near, mask, tolerance=0) == 0.0
    assert pointing_game(near, mask, tolerance=3) == 1.0
    assert pointing_game(near, mask, tolerance=2) == 0.0
    ties = np.zeros((10, 10))
    ties[3, 3] = ties[8, 8] = 1.0  # one of two maxima inside: a hit; one of three: a miss
    assert pointing_game(ties, mask, tolerance=0) == 1.0
    ties[8, 0] = 1.0
    assert pointing_game(ties, mask, tolerance=0) == 0.0
    plateau = np.zeros((10, 10))
    plateau[1:4, 6:9] = 1.0
    assert map_peak(plateau) == (2, 7)  # the tied maximum nearest their centroid
    assert map_peak(np.zeros((4, 4))) is None

    crop = SquareCrop(top=0, left=0, side=10, image_shape=(10, 10))
    m = map_metrics(cam, mask, crop, tolerance=0)
    assert m["energy_inside"] == pytest.approx(0.75) and m["pointing_hit"] == 1.0
    assert m["energy_chance"] == pytest.approx(9 / 100) and (m["peak_row"], m["peak_col"]) == (3, 3)
    assert m["max_value"] == 3.0 and m["empty"] is False
    none = map_metrics(cam, None, crop, tolerance=0)
    assert np.isnan(none["energy_inside"]) and np.isnan(none["pointing_hit"])
    assert np.isnan(none["energy_chance"])
    assert map_metrics(np.zeros((10, 10)), mask, crop, tolerance=0)["empty"] is True


def test_agreement_on_hand_made_maps():
    a = np.arange(100.0).reshape(10, 10)
    assert spearman_agreement(a, np.sqrt(a)) == pytest.approx(1.0)
    assert spearman_agreement(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman_agreement(a, np.ones_like(a)))
    assert top_region(a).sum() == 20
    assert top_fraction_iou(a, a) == 1.0
    assert top_fraction_iou(a, (a + 50) % 100) == 0.0  # top 20% moved to a disjoint place
    assert top_fraction_iou(a, (a + 10) % 100) == pytest.approx(10 / 30)  # half overlapping
    sparse = np.zeros((10, 10))
    sparse[0, :5] = [5, 4, 3, 2, 1]  # 5% positive: the top region is the positive part, not the zeros
    assert top_region(sparse).sum() == 5
    assert np.isnan(top_fraction_iou(np.zeros((4, 4)), np.zeros((4, 4))))
    # agreement is measured inside the crop: outside it every map is 0 and would inflate the correlation
    crop = SquareCrop(top=0, left=0, side=5, image_shape=(10, 10))
    inside = np.random.default_rng(0).uniform(size=(5, 5))
    m1, m2 = np.zeros((10, 10)), np.zeros((10, 10))
    m1[:5, :5], m2[:5, :5] = inside, inside[::-1, ::-1]
    rows = agreement_rows({"gradcam": m1, "eigencam": m2, "scorecam": m1}, crop)
    assert [(r["method_a"], r["method_b"]) for r in rows] == [
        ("gradcam", "eigencam"),
        ("gradcam", "scorecam"),
        ("eigencam", "scorecam"),
    ]
    assert rows[1]["spearman"] == pytest.approx(1.0) and rows[1]["top20_iou"] == 1.0
    assert rows[0]["spearman"] == pytest.approx(spearman_agreement(inside, inside[::-1, ::-1]))
    assert spearman_agreement(m1, m2) > rows[0]["spearman"]  # what the zeros outside would have done


def test_overlay_blends_by_value_and_draws_the_contour():
    grey = np.full((20, 20), 0.5)
    cam = np.zeros((20, 20))
    cam[5, 5] = 1.0
    mask = np.zeros((20, 20), bool)
    mask[10:15, 10:15] = True
    rgb = overlay_image(grey, cam, mask)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 20, 3)
    assert tuple(rgb[0, 0]) == (128, 128, 128)  # no map: the grey image
    assert rgb[5, 5, 0] > 200 and rgb[5, 5, 2] < 100  # the maximum is red
    assert tuple(rgb[10, 12]) == (0, 255, 0) and tuple(rgb[12, 12]) == (128, 128, 128)


# --------------------------------------------------------------------------------- the library and layers
@pytest.fixture(scope="module")
def tiny_model():
    from Rad4XCNNLogic.features.backbones import build_backbone

    return build_backbone("test_resnet", num_classes=2, input_size=64).model


def test_batched_scorecam_equals_the_librarys(tiny_model, capsys):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from Rad4XCNNLogic.cam.methods import _scorecam_class

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(0)]
    layer = [tiny_model.layer3]
    library = ScoreCAM(tiny_model, layer)(x, targets)
    ours = _scorecam_class()(tiny_model, layer, ActivationTransform(), batch_size=7)(x, targets)
    assert ours.shape == (2, 64, 64)
    np.testing.assert_allclose(ours, library, atol=1e-4)


def test_eigencam_with_the_economy_svd_equals_the_librarys_up_to_its_sign(tiny_model):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from Rad4XCNNLogic.cam.methods import first_component_projection

    activations = np.random.default_rng(1).random((3, 16, 4, 4)).astype(np.float32)
    library = get_2d_projection(activations)
    np.testing.assert_allclose(first_component_projection(activations, orient=False), library, atol=1e-4)
    oriented = first_component_projection(activations)
    flipped = 0
    for ours, theirs, image in zip(oriented, library, activations, strict=True):
        assert np.allclose(ours, theirs, atol=1e-4) or np.allclose(ours, -theirs, atol=1e-4)
        flipped += int(not np.allclose(ours, theirs, atol=1e-4))
        # the oriented component rises where the layer is active on average
        assert np.corrcoef(ours.ravel(), image.mean(axis=0).ravel())[0, 1] > 0


def test_maps_do_not_depend_on_the_batch(tmp_path, synthetic_manifest):
    from Rad4XCNNLogic.features.backbones import PreprocessConfig, build_backbone, save_checkpoint

    backbone = build_backbone("test_resnet", num_classes=2, input_size=64)
    ckpt = save_checkpoint(
        tmp_path / "tiny.pt",
        backbone.model,
        "test_resnet",
        PreprocessConfig.for_model("test_resnet", input_size=64),
        class_names=["benign", "malignant"],
    )
    cohort = read_manifest(synthetic_manifest)
    ids = cohort.case_ids[:4]
    kwargs = {"cases": ids, "device": "cpu", "progress": False}
    section = CamConfig(methods=["gradcam", "gradcam++", "layercam"], target_class="malignant")
    batched = compute_cams(cohort, ckpt, dataclasses.replace(section, batch_size=4), **kwargs)
    single = compute_cams(cohort, ckpt, dataclasses.replace(section, batch_size=1), **kwargs)
    assert set(batched.maps) == set(single.maps) and len(batched.maps) == 12
    for key, cam in batched.maps.items():
        np.testing.assert_allclose(cam, single.maps[key], atol=1e-4)
    assert (batched.metrics["target_class"] == "malignant").all()
    assert batched.settings["target_layer"] == "layer4.0"
    assert batched.settings["target_layer_family"] == "resnet"


def test_default_target_layer_per_family():
    import timm

    assert default_target_layer(timm.create_model("resnet18")) == ("layer4.1", "resnet")
    assert default_target_layer(timm.create_model("densenet121")) == ("features.norm5", "densenet")
    assert default_target_layer(timm.create_model("test_efficientnet")) == ("bn2", "efficientnet")
    assert default_target_layer(timm.create_model("test_convnext")) == ("stages.3", "convnext")
    resnet = timm.create_model("resnet18")
    assert resolve_target_layer(resnet, "layer4[-1]").name == "layer4.1"
    assert resolve_target_layer(resnet, "layer3.-1.conv2").module is resnet.layer3[1].conv2
    vit = timm.create_model("test_vit")
    layer = resolve_target_layer(vit, None, input_size=160)
    assert (layer.name, layer.family, layer.tokens, layer.prefix_tokens) == ("blocks.5.norm1", "vit", True, 1)
    assert layer.grid == (10, 10) and layer.module is vit.blocks[-1].norm1
    tokens = torch.arange(2 * 101 * 4, dtype=torch.float32).reshape(2, 101, 4)
    grid = ActivationTransform(1, (10, 10))(tokens)
    assert tuple(grid.shape) == (2, 4, 10, 10)
    assert torch.equal(grid[1, :, 0, 1], tokens[1, 2])  # token 2 (after the class token) is row 0, col 1


def test_vit_maps_of_a_model_without_task_classifier(tmp_path, caplog):
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    manifest = make_synthetic_cohort(tmp_path / "s", n=3, seed=2, normal_fraction=0.34, shape=(96, 128))
    cohort = read_manifest(manifest)
    normal = [c.case_id for c in cohort.cases if not c.has_lesion]
    assert len(normal) == 1
    with caplog.at_level("WARNING", logger="Rad4XCNNLogic"):
        result = compute_cams(
            cohort,
            None,
            CamConfig(methods=["gradcam", "eigencam"]),
            model="test_vit",
            device="cpu",
            progress=False,
        )
    assert "not meaningful for the task" in caplog.text
    assert result.settings["task_classifier"] is False
    assert result.settings["target_layer"] == "blocks.5.norm1"
    assert result.settings["token_reshape"] == {"prefix_tokens": 1, "grid": [10, 10]}
    assert len(result.metrics) == 6 and len(result.agreement) == 3
    lesionless = result.metrics.set_index("case_id").loc[normal[0]]
    assert lesionless["energy_inside"].isna().all() and lesionless["pointing_hit"].isna().all()
    cam = result.maps[(normal[0], "gradcam")]
    assert cam.shape == (96, 128) and cam.max() > 0
    paths = write_cams(result, tmp_path / "run")
    assert paths["metrics"].exists() and paths["agreement"].exists()
    assert (tmp_path / "run" / "cam" / f"{normal[0]}_eigencam.nrrd").exists()
    assert result.files[(normal[0], "gradcam")]["png"].exists()


# ------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from Rad4XCNNLogic.features.backbones import PreprocessConfig, save_checkpoint

    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt",
        tiny_model,
        "test_resnet",
        PreprocessConfig.for_model("test_resnet", input_size=64),
        class_names=["benign", "malignant"],
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_layer": "layer5"}, r"target layer 'layer5' does not exist in ResNet; closest .*layer4"),
        ({"target_layer": "layer4.7"}, r"target layer 'layer4.7' does not exist.*layer4\.0"),
        ({"target_layer": "fc"}, r"target layer fc gives outputs of shape \(1, 2\), not a feature map"),
        ({"methods": "gradcam,gradcan"}, r"unknown CAM method 'gradcan' \(did you mean gradcam\?\); known"),
        ({"methods": "occlusion"}, r"known methods: gradcam, gradcam\+\+, .*eigencam, .*scorecam"),
        ({"target_class": "cancer"}, r"unknown target class 'cancer'; the model's classes are: benign, mal"),
        ({"cases": "zzz"}, r"case id\(s\) not in the manifest: zzz"),
        ({"batch_size": 0}, r"^cam\.batch_size: must be at least 1, got 0"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message, tiny_checkpoint, synthetic_manifest):
    cohort = read_manifest(synthetic_manifest)
    args = {"cases": cohort.case_ids[:1], "device": "cpu", "progress": False}
    if "cases" in kwargs:
        args["cases"] = kwargs.pop("cases")
    section = CamConfig(**{"methods": ["gradcam"], **kwargs})
    with pytest.raises(Rad4XCNNError, match=message):
        compute_cams(cohort, tiny_checkpoint, section, **args)


def test_missing_checkpoint_and_missing_model(tmp_path, synthetic_manifest):
    cohort = read_manifest(synthetic_manifest)
    with pytest.raises(Rad4XCNNError, match=r"checkpoint not found: .*nope\.pt"):
        compute_cams(cohort, tmp_path / "nope.pt", progress=False)
    with pytest.raises(Rad4XCNNError, match=r"give a checkpoint of 'rad4xcnn train'"):
        compute_cams(cohort, None, progress=False)
    with pytest.raises(Rad4XCNNError, match="known methods"):
        check_methods("")


def test_a_bad_case_is_recorded_and_the_others_go_on(tmp_path, tiny_checkpoint, make_case):
    rows = [make_case("good", box=(10, 10, 40, 50)), make_case("broken", box=(10, 10, 40, 50))]
    (tmp_path / rows[1]["image"]).write_bytes(b"not a png")
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows))
    result = compute_cams(
        cohort, tiny_checkpoint, CamConfig(methods=["gradcam"]), device="cpu", progress=False
    )
    assert list(result.metrics["case_id"]) == ["good"]
    assert [f.case_id for f in result.failures] == ["broken"] and result.failures[0].stage == "cam"


def test_all_cases_failing_is_an_error(tmp_path, tiny_checkpoint, make_case):
    row = make_case("broken")
    (tmp_path / row["image"]).write_bytes(b"not a png")
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", [row]))
    with pytest.raises(Rad4XCNNError, match=r"no saliency map: all 1 cases failed \(first: case broken: "):
        compute_cams(cohort, tiny_checkpoint, CamConfig(methods=["gradcam"]), device="cpu", progress=False)


def test_a_feature_extractor_gets_eigencam_only(synthetic_manifest):
    from Rad4XCNNLogic.features.backbones import build_backbone

    backbone = build_backbone("test_resnet", input_size=64)  # no classifier head
    cohort = read_manifest(synthetic_manifest)
    with pytest.raises(Rad4XCNNError, match=r"no classifier head, so gradcam, scorecam have no class"):
        compute_cams(
            cohort,
            backbone,
            CamConfig(methods=["gradcam", "eigencam", "scorecam"]),
            device="cpu",
            progress=False,
        )
    result = compute_cams(
        cohort,
        backbone,
        CamConfig(methods=["eigencam"]),
        cases=cohort.case_ids[:2],
        device="cpu",
        progress=False,
    )
    assert len(result.metrics) == 2 and result.metrics["target_class"].isna().all()
    assert result.metrics["energy_inside"].between(0, 1).all()


def test_cli_help_states_scorecam_cost_and_bad_input_is_one_line(tmp_path, synthetic_manifest, capsys):
    with pytest.raises(SystemExit):
        main(["cam", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one forward pass per channel of the target layer" in text
    assert "2048 for ResNet50's last stage" in text and "--batch-size" in text
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "Rad4XCNNLogic",
            "cam",
            "--manifest",
            str(synthetic_manifest),
            "--weights",
            str(tmp_path / "missing.pt"),
            "--methods",
            "gradcam,nonsense",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "--methods: 'nonsense' is not allowed; allowed values: gradcam" in proc.stderr


def test_importing_the_module_loads_no_heavy_library():
    code = (
        "import sys, Rad4XCNNLogic.cam.maps\n"
        "heavy = ('torch', 'timm', 'pytorch_grad_cam', 'matplotlib', 'sklearn')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("weights", ["imagenet", "none", None])
def test_cam_command_needs_a_classifier_trained_on_the_cohort(weights, synthetic_manifest, tmp_path, capsys):
    """ImageNet or random weights have no classifier of the cohort's classes: one line says what to give."""
    argv = ["cam", "--manifest", str(synthetic_manifest), "--out", str(tmp_path / "o")]
    argv += ["--weights", weights] if weights else []
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "cam: CAMs need a classifier trained on the cohort: give a rad4xcnn checkpoint (rad4xcnn train)"
    )
    assert "\n" not in err
