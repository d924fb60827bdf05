"""Checks of saliency maps: sanity flags on hand-made maps, faithfulness on a model whose output rests on a
known region, the randomisation test's copies, the per-method verdicts, and the CAM stage writing it all."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

from Rad4XCNNLogic.cam.faithfulness import (  # noqa: E402
    cascade_steps,
    deletion_insertion_auc,
    randomised_copy,
    road_scores,
    spearman_per_image,
)
from Rad4XCNNLogic.cam.maps import compute_cams  # noqa: E402
from Rad4XCNNLogic.cam.methods import METHODS, CamMethod, _with_raw_maps  # noqa: E402
from Rad4XCNNLogic.cam.sanity import map_flags, method_verdicts  # noqa: E402
from Rad4XCNNLogic.cam.settings import CamConfig  # noqa: E402
from Rad4XCNNLogic.cohort.manifest import read_manifest  # noqa: E402
from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ flags
def test_each_flag_on_hand_made_maps():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    clean = np.zeros((20, 20))
    clean[6:9, 6:9] = 1.0
    clean[12, 12] = 0.3
    assert map_flags(np.array([[0.0, 1.0], [2.0, 0.5]]), clean, mask) == []
    assert map_flags(np.array([[np.nan, 1.0]]), clean, mask) == ["non-finite"]
    assert map_flags(np.full((3, 3), 0.7), np.zeros((20, 20)), mask) == ["constant"]
    assert map_flags(np.array([[-1.0, -2.0]]), np.zeros((20, 20)), mask) == ["empty"]
    assert map_flags(np.array([[0.0, 1.0]]), np.ones((20, 20)), mask) == ["saturated"]
    away = np.zeros((20, 20))
    away[15:18, 15:18] = 1.0
    assert map_flags(np.array([[0.0, 1.0]]), away, mask) == ["outside"]
    # saturation is judged inside the crop's part of the image only
    half = np.zeros((20, 20))
    half[:, :10] = 1.0
    assert map_flags(np.array([[0.0, 1.0]]), half, mask, box=(0, 0, 20, 10)) == ["saturated"]
    assert map_flags(np.array([[0.0, 1.0]]), half, mask, box=(0, 5, 20, 20)) == []


# ------------------------------------------------------------------------------------------ faithfulness
class RegionModel(torch.nn.Module):
    """Two classes; the logit of class 1 grows with the fine texture (vertical differences) of the input's
    rows 0-15, columns 0-15, which blurring and imputation from neighbours both remove."""

    def forward(self, x):
        region = x[:, :, :16, :16]
        texture = (region[:, :, 1:, :] - region[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
        score = 4.0 * texture - 2.0
        return torch.stack([torch.zeros_like(score), score], dim=1)


def region_case():
    x = torch.zeros(1, 3, 32, 32)
    rows, cols = np.mgrid[:16, :16]
    x[:, :, :16, :16] = torch.as_tensor(np.where((rows + cols) % 2 == 0, 1.0, -1.0), dtype=torch.float32)
    good = np.zeros((1, 32, 32), np.float32)
    good[0, :16, :16] = 1.0
    good[0] += np.linspace(0, 0.1, 32 * 32).reshape(32, 32)  # a ranking of the rest, not ties
    return x, good, 1.0 - good


def test_road_and_deletion_insertion_reward_the_map_of_what_the_model_uses():
    model = RegionModel().eval()
    x, good, bad = region_case()
    road_good = road_scores(model, x, good, [1], batch_size=32)
    road_bad = road_scores(model, x, bad, [1], batch_size=32)
    assert road_good["combined"][0] > 0.05 > -0.05 > road_bad["combined"][0]
    np.testing.assert_allclose(road_good["combined"], (road_good["lerf"] - road_good["morf"]) / 2)
    # seeded imputation noise: the same scores twice
    assert road_scores(model, x, good, [1], batch_size=32)["combined"][0] == road_good["combined"][0]
    deletion_good, insertion_good = deletion_insertion_auc(model, x, good, [1], steps=8, batch_size=32)
    deletion_bad, insertion_bad = deletion_insertion_auc(model, x, bad, [1], steps=8, batch_size=32)
    assert deletion_good[0] < insertion_good[0]
    assert deletion_good[0] < deletion_bad[0] - 0.1
    assert insertion_good[0] > insertion_bad[0] + 0.1
    assert 0.0 <= deletion_good[0] <= 1.0 and 0.0 <= insertion_good[0] <= 1.0


def test_spearman_per_image():
    a = np.random.default_rng(0).random((3, 4, 4))
    b = a.copy()
    b[1] = -b[1]
    b[2] = 1.0
    out = spearman_per_image(a, b)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(-1.0) and np.isnan(out[2])


# ----------------------------------------------------------------------------------------- randomisation
@pytest.fixture(scope="module")
def tiny_resnet():
    from Rad4XCNNLogic.features.backbones import build_backbone

    return build_backbone("test_resnet", num_classes=2, input_size=64).model.eval()


def test_cascade_goes_from_the_head_down_and_ends_with_all(tiny_resnet):
    steps = cascade_steps(tiny_resnet)
    labels = [label for label, _ in steps]
    assert labels[0] == "fc" and labels[1] == "fc+layer4" and labels[-1] == "all"
    assert steps[-1][1][-1] == "conv1" and len(steps[-1][1]) == len(labels)


def test_randomised_copy_changes_only_what_it_is_told(tiny_resnet):
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    twin = randomised_copy(tiny_resnet, ["fc", "layer4"], seed=3)
    for key, value in tiny_resnet.state_dict().items():
        assert torch.equal(value, before[key])  # the original is untouched
    changed = {
        k for k, v in twin.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])
    }
    assert any(k.startswith("fc.") for k in changed) and any(k.startswith("layer4.") for k in changed)
    assert not any(k.startswith(("layer1.", "layer2.", "layer3.", "conv1.")) for k in changed)
    again = randomised_copy(tiny_resnet, ["fc", "layer4"], seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in twin.state_dict().items())
    everything = randomised_copy(tiny_resnet, None, seed=3)
    changed = {k for k, v in everything.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("conv1.") for k in changed)


# ---------------------------------------------------------------------------------------------- verdicts
def _metrics(
    method, n, flags="", road=0.1, deletion=0.2, insertion=0.6, similarity=0.1, gain=0.1, gain_shuffled=None
):
    """``n`` cases of one method whose ROAD and insertion - deletion beat the random map by ``gain`` and the
    shuffled map by ``gain_shuffled`` (default ``gain``) per case, give or take 0.02 (None: no baselines)."""
    frame = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "method": method,
            "flags": [flags] * n,
            "road_combined": road,
            "deletion_auc": deletion,
            "insertion_auc": insertion,
            "randomisation_similarity": similarity,
        }
    )
    if gain is None:
        return frame
    wobble = 0.02 * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    for baseline, by in (("random", gain), ("shuffled", gain if gain_shuffled is None else gain_shuffled)):
        frame[f"road_combined_{baseline}"] = road - by - wobble
        frame[f"deletion_auc_{baseline}"] = deletion
        frame[f"insertion_auc_{baseline}"] = insertion - by + wobble
    return frame


def test_verdicts_say_which_map_to_trust():
    metrics = pd.concat(
        [
            # the higher ROAD, the smaller gain over the baselines: trusted second
            _metrics("gradcam", 4, road=0.3, gain=0.1),
            _metrics("layercam", 4, road=0.2, gain=0.2),
            _metrics("eigencam", 4, similarity=0.9),
            _metrics("scorecam", 4, flags="empty"),
            _metrics("hirescam", 4, road=-0.05, deletion=0.5, insertion=0.4),
            # deletion well below insertion, ROAD positive, and no better than a random map
            _metrics("gradcam++", 4, road=0.1, gain=0.0),
            _metrics("xgradcam", 4, gain=0.1, gain_shuffled=0.0),
            _metrics("eigengradcam", 4, gain=None),
        ]
    )
    table = method_verdicts(metrics)
    assert table.loc["layercam", "verdict"].startswith(
        "the map to trust first (supported: beats a random map (paired gain ROAD +0.20 ["
    )
    assert table.loc["gradcam", "verdict"].startswith("supported: beats a random map (paired gain ROAD +0.10")
    assert "over 4 cases) and its own map shuffled within the lesion" in table.loc["gradcam", "verdict"]
    assert table.loc["layercam", "paired_gain"] == pytest.approx(0.2)
    assert table.loc["eigencam", "verdict"].startswith("not trustworthy: its maps barely change")
    assert (
        bool(table.loc["eigencam", "fails_randomisation"]) and not table.loc["gradcam", "fails_randomisation"]
    )
    assert table.loc["scorecam", "verdict"] == "not trustworthy: 4 of 4 maps flagged (empty 4)"
    assert table.loc["hirescam", "verdict"].startswith("unfaithful")
    assert table.loc["gradcam++", "verdict"] == (
        "no better than a random map: paired gain ROAD +0.00 [-0.04, +0.04], insertion - deletion AUC +0.00 "
        "[-0.04, +0.04] over 4 cases"
    )
    assert (
        table.loc["gradcam++", "road_gain_random_low"] < 0 < table.loc["gradcam++", "road_gain_random_high"]
    )
    assert table.loc["xgradcam", "verdict"].startswith(
        "no better than its own map shuffled within the lesion"
    )
    assert table.loc["eigengradcam", "verdict"].startswith("unconfirmed: not compared with a random map")
    # beating the baselines is one condition of the verdict, shown apart from the others
    beats = table["beats_baselines"]
    assert beats[["gradcam", "layercam", "eigencam"]].all()
    assert not beats[["gradcam++", "xgradcam", "eigengradcam"]].any()
    assert table.loc["scorecam", "flagged_maps"] == 4 and table.loc["gradcam", "flagged_maps"] == 0
    assert (
        method_verdicts(metrics, randomisation_threshold=0.95).loc["eigencam", "verdict"].startswith("supp")
    )
    # one case gives no interval: not supported
    assert method_verdicts(_metrics("gradcam", 1)).loc["gradcam", "verdict"].startswith("unconfirmed")


# ------------------------------------------------------------------------------------------ the CAM stage
def _flat_factory(model, target_modules, reshape_transform, batch_size, progress):
    from pytorch_grad_cam import GradCAM

    class FlatCAM(GradCAM):
        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
            return np.full(activations.shape[:1] + activations.shape[2:], 0.5, np.float32)

    return _with_raw_maps(FlatCAM)(model, target_modules, reshape_transform=reshape_transform)


def test_the_stage_writes_flags_faithfulness_randomisation_and_raw_maps(
    tmp_path, synthetic_manifest, monkeypatch
):
    from Rad4XCNNLogic.features.backbones import PreprocessConfig, build_backbone, save_checkpoint

    # adding a CAM method is one record; this one gives a constant map, which must be flagged
    monkeypatch.setitem(METHODS, "flat", CamMethod("flat", "GradCAM", True, True, "constant", _flat_factory))
    backbone = build_backbone("test_resnet", num_classes=2, input_size=64, seed=1)
    ckpt = save_checkpoint(
        tmp_path / "tiny.pt",
        backbone.model,
        "test_resnet",
        PreprocessConfig.for_model("test_resnet", input_size=64),
        class_names=["benign", "malignant"],
    )
    cohort = read_manifest(synthetic_manifest)
    ids = cohort.case_ids[:3]
    result = compute_cams(
        cohort,
        ckpt,
        CamConfig(methods=["gradcam", "eigencam", "flat"], deletion_steps=4, randomisation="cascade"),
        cases=ids,
        device="cpu",
        progress=False,
        out_dir=tmp_path / "run",
        keep_maps=True,
        road_percentiles=(30, 70),
    )
    metrics = result.metrics.set_index(["case_id", "method"])
    for column in ("road_combined", "deletion_auc", "insertion_auc", "randomisation_similarity"):
        assert column in metrics
    assert (metrics.xs("flat", level="method")["flags"] == "constant").all()
    real = metrics.drop(index="flat", level="method")
    assert real["deletion_auc"].between(0, 1).all() and real["insertion_auc"].between(0, 1).all()
    assert real["road_combined"].notna().all()
    # the flagged maps are out of the agreement figures and listed
    assert not ((result.agreement["method_a"] == "flat") | (result.agreement["method_b"] == "flat")).any()
    clean = [
        c
        for c in ids
        if not metrics.loc[(c, "gradcam"), "flags"] and not metrics.loc[(c, "eigencam"), "flags"]
    ]
    assert sorted(result.agreement["case_id"]) == sorted(clean)  # gradcam x eigencam, both unflagged
    listed = json.loads((tmp_path / "run" / "cam" / "cam_run.json").read_text())["flagged_maps"]
    assert {(r["case_id"], r["method"]) for r in listed} >= {(c, "flat") for c in ids}
    # the randomisation cascade: every step per case and method, the last one is "all" and fills the column
    steps = result.randomisation
    assert steps.groupby(["case_id", "method"]).size().nunique() == 1
    assert set(steps["step"]) >= {"fc", "all"}
    last = steps[steps["step"] == "all"].set_index(["case_id", "method"])["spearman"]
    assert np.allclose(
        last.sort_index().to_numpy(),
        metrics.loc[last.index, "randomisation_similarity"].sort_index().to_numpy(),
        equal_nan=True,
    )
    # EigenCAM ignores the head: randomising only fc leaves its maps as they were
    fc_only = steps[(steps["step"] == "fc") & (steps["method"] == "eigencam")]["spearman"]
    assert np.allclose(fc_only, 1.0)
    # raw maps beside the normalised ones, in the image's geometry
    written = result.files[(ids[0], "gradcam")]
    assert written["raw"].is_file() and written["nrrd"].is_file()
    from Rad4XCNNLogic.cohort.imageio import read_image

    raw = read_image(written["raw"]).array
    assert raw.shape == read_image(cohort.cases[0].image).shape
    np.testing.assert_allclose(raw, result.raw_maps[(ids[0], "gradcam")], atol=1e-6)
    summary = pd.read_csv(tmp_path / "run" / "cam" / "cam_summary.csv", index_col=0)
    assert summary.loc["flat", "verdict"] == "not trustworthy: 3 of 3 maps flagged (constant 3)"
    assert set(summary.columns) >= {"flagged_maps", "road_combined", "randomisation_similarity", "verdict"}
    # every map is scored against a random map and its own map shuffled within the lesion, case by case
    written = pd.read_csv(tmp_path / "run" / "cam" / "cam_metrics.csv")
    assert written[["road_combined_random", "insertion_auc_shuffled"]].notna().all().all()
    assert set(summary.columns) >= {
        "road_gain_random",
        "insdel_gain_shuffled_low",
        "cases_random",
        "paired_gain",
    }
    assert (summary["cases_random"] == 3).all()


def test_bad_check_settings(synthetic_manifest):
    cohort = read_manifest(synthetic_manifest)
    args = {"model": "test_resnet", "cases": cohort.case_ids[:1], "device": "cpu", "progress": False}
    with pytest.raises(
        Rad4XCNNError, match=r"^cam\.randomisation: 'some' is not allowed; allowed values: cascade, all, none"
    ):
        compute_cams(cohort, None, CamConfig(randomisation="some"), **args)
    with pytest.raises(Rad4XCNNError, match=r"^cam\.deletion_steps: must be at least 1, got 0"):
        compute_cams(cohort, None, CamConfig(deletion_steps=0), **args)


def test_report_says_which_map_to_trust_escaped(tmp_path):
    from Rad4XCNNLogic.run.report import _cam_section

    cam = tmp_path / "cam"
    cam.mkdir()
    pd.DataFrame(
        {
            "case_id": ["<b>c1</b>", "c2"],
            "method": ["gradcam", "gradcam"],
            "energy_inside": [0.5, 0.6],
            "pointing_hit": [1, 0],
            "flags": ["saturated", None],
        }
    ).to_csv(cam / "cam_metrics.csv", index=False)
    summary = method_verdicts(_metrics("gradcam", 2, similarity=0.8))
    summary.loc["gradcam", "verdict"] += " <script>x</script>"
    summary.to_csv(cam / "cam_summary.csv")
    section = _cam_section(tmp_path, {})
    trust, flagged = str(section["trust_table"]), str(section["flagged_table"])
    assert "not trustworthy: its maps barely change" in trust and "&lt;script&gt;" in trust
    assert "<script>" not in trust and "Spearman with randomised weights (median)" in trust
    # the paired gains over the baselines, with their interval and the cases paired
    assert "ROAD gain over a random map [95% interval] (cases)" in trust
    assert "insertion - deletion AUC gain over its map shuffled in the lesion" in trust
    assert "+0.10 [-0.15, +0.35] (2)" in trust
    assert "&lt;b&gt;c1&lt;/b&gt;" in flagged and "saturated" in flagged and "c2" not in flagged
