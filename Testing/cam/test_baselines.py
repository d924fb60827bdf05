"""Faithfulness against baselines: ROAD removes exact fractions of a sparse map, insertion blurs with RISE's
kernel, and a method is judged by its paired gain over a random map and over its own map shuffled within the
lesion, on models whose output rests on a known region."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from Rad4XCNNLogic.cam.faithfulness import (  # noqa: E402
    BASELINE_COLUMNS,
    DEFAULT_PERCENTILES,
    faithfulness_scores,
    impute,
    removal_masks,
    rise_blur,
    rise_kernel,
    road_scores,
    shuffled_within,
)
from Rad4XCNNLogic.cam.sanity import method_verdicts  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BrightModel(torch.nn.Module):
    """Two classes; the logit of class 1 grows with the mean brightness of rows 0-15, columns 0-15 of the
    input. A blur keeps that brightness; removing the region (imputing it from its surroundings) does not."""

    def forward(self, x):
        score = 8.0 * x[:, :, :16, :16].mean(dim=(1, 2, 3)) - 4.0
        return torch.stack([torch.zeros_like(score), score], dim=1)


def bright_cases(n: int, seed: int = 0):
    """``n`` noisy 32 x 32 inputs, bright in the region the model reads, and the true map: the region (1)
    above a faint ramp over the rest (so that the map ranks every pixel)."""
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.normal(0.0, 0.1, (n, 3, 32, 32)), dtype=torch.float32)
    x[:, :, :16, :16] += torch.as_tensor(rng.uniform(0.8, 1.2, (n, 1, 1, 1)), dtype=torch.float32)
    true = np.zeros((n, 32, 32), np.float32)
    true[:, :16, :16] = 1.0
    true += np.linspace(0.0, 0.05, 32 * 32, dtype=np.float32).reshape(32, 32)
    return x, true


def sparse_random_maps(n: int, share: float = 0.1, seed: int = 1) -> np.ndarray:
    """Maps that know nothing: a random ``share`` of the pixels with random positive values, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    maps = np.zeros((n, 32 * 32), np.float32)
    for i in range(n):
        chosen = rng.choice(32 * 32, round(share * 32 * 32), replace=False)
        maps[i, chosen] = rng.uniform(0.01, 1.0, chosen.size)
    return maps.reshape(n, 32, 32)


# ------------------------------------------------------------------------------------------------ ROAD
def test_road_removes_the_fraction_asked_of_a_map_with_90_percent_zeros():
    cam = sparse_random_maps(1)[0]
    assert (cam == 0).mean() == pytest.approx(0.9, abs=0.001)
    morf, lerf = removal_masks(cam, DEFAULT_PERCENTILES, seed=0)
    for level, p in enumerate(DEFAULT_PERCENTILES):
        wanted = (1 - p / 100) * cam.size
        assert abs(int(morf[level].sum()) - wanted) <= 1 and abs(int(lerf[level].sum()) - wanted) <= 1
    # most relevant first: the positive pixels go before any zero; least relevant first: zeros only up to 90%
    positive = cam > 0
    assert morf[-1].sum() == positive.sum() and (morf[-1] == positive).all()
    assert not (lerf[:-1] & positive).any()
    # the zeros' order is a seeded random one, not raster: the 10% of zeros removed lie all over the image
    rows = np.nonzero(lerf[-1])[0]
    assert rows.min() <= 3 and rows.max() >= 28
    again, _ = removal_masks(cam, DEFAULT_PERCENTILES, seed=0)
    other, _ = removal_masks(cam, DEFAULT_PERCENTILES, seed=1)
    assert (again == morf).all() and not (other == morf).all()


def test_the_imputation_is_pytorch_grad_cams_noisy_linear_imputation():
    import warnings

    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    rng = np.random.default_rng(4)
    image = torch.as_tensor(rng.normal(size=(3, 20, 24)), dtype=torch.float32)
    removed = rng.random((20, 24)) < 0.6
    removed[:5, :5] = True  # a block at the corner: neighbours outside the image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(0)
        theirs = NoisyLinearImputer()(image, torch.as_tensor(~removed, dtype=torch.float32))
    torch.manual_seed(0)
    ours = impute(image, removed)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)
    assert (ours[:, ~removed] == image[:, ~removed]).all()
    assert torch.equal(impute(image, np.zeros((20, 24), bool)), image)


def test_a_sparse_random_map_no_longer_scores_like_the_true_map():
    # pytorch-grad-cam's percentile masks gave this sparse random map a ROAD of about +0.47, above the true
    # map's +0.40: its zeros reach every percentile, so "most relevant first" removed the whole image
    model = BrightModel().eval()
    x, true = bright_cases(3)
    sparse = sparse_random_maps(3)
    road_true = road_scores(model, x, true, [1, 1, 1], seed=0, batch_size=32)["combined"]
    road_sparse = road_scores(model, x, sparse, [1, 1, 1], seed=0, batch_size=32)["combined"]
    assert (road_true > 0.3).all()
    assert (np.abs(road_sparse) < 0.05).all()


# ------------------------------------------------------------------------------------------- insertion
def test_insertion_blurs_with_the_rise_kernel_scaled_to_the_input():
    kernel = rise_kernel(224)
    assert kernel.shape == (11, 11) and kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel.T)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
    assert np.linalg.matrix_rank(kernel, tol=1e-10) == 1  # a separable Gaussian
    # RISE's gkern(11, 5): a unit impulse smoothed with sigma 5 on the 11 x 11 grid
    assert kernel[5, 5] == pytest.approx(0.0088326, abs=1e-6) and kernel[0, 0] == pytest.approx(
        0.0077366, abs=1e-6
    )
    assert rise_kernel(112).shape == (5, 5) and rise_kernel(448).shape == (21, 21)
    # the blur reaches exactly 5 pixels at 224 (a full Gaussian of sigma 5 reaches 20), zero past the border
    impulse = torch.zeros(1, 3, 224, 224)
    impulse[0, :, 100, 120] = 1.0
    blurred = rise_blur(impulse)[0, 1].numpy()
    rows, cols = np.nonzero(blurred > 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (95, 105, 115, 125)
    np.testing.assert_allclose(blurred[95:106, 115:126], kernel, atol=1e-7)
    corner = torch.zeros(1, 1, 224, 224)
    corner[0, 0, 0, 0] = 1.0
    assert float(rise_blur(corner).sum()) == pytest.approx(float(kernel[5:, 5:].sum()), abs=1e-6)


# ------------------------------------------------------------------------------------------- baselines
def test_shuffled_within_keeps_the_values_and_moves_them_only_inside_the_lesion():
    cams = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 1:5] = True
    out = shuffled_within(cams, [mask, mask], seed=3)
    for i in range(2):
        assert (out[i][~mask] == cams[i][~mask]).all()
        assert sorted(out[i][mask]) == sorted(cams[i][mask]) and not (out[i][mask] == cams[i][mask]).all()


def test_a_random_map_that_puts_deletion_before_insertion_is_no_better_than_a_random_map():
    model = BrightModel().eval()
    n = 6
    x, true = bright_cases(n)
    noise = np.random.default_rng(7).random((n, 32, 32)).astype(np.float32)
    lesion = np.zeros((32, 32), bool)
    lesion[:24, :24] = True  # larger than the region the model reads
    masks = [lesion] * (n - 1) + [None]  # the last case has no lesion: no shuffled baseline
    scores = faithfulness_scores(
        model, x, [1] * n, {"true": true, "noise": noise}, masks, steps=8, batch_size=64, seed=0
    )
    assert set(scores["true"]) >= set(BASELINE_COLUMNS)
    assert np.isnan(scores["true"]["road_combined_shuffled"][-1])
    assert np.isfinite(scores["true"]["road_combined_shuffled"][:-1]).all()
    # the random baseline is one map per image, shared by the methods
    np.testing.assert_array_equal(
        scores["true"]["road_combined_random"], scores["noise"]["road_combined_random"]
    )
    # the planted situation: insertion starts from a blur the model still classifies, so a map that knows
    # nothing puts deletion before insertion all the same
    assert (scores["noise"]["deletion_auc"] < scores["noise"]["insertion_auc"] - 0.1).all()
    rows = [
        {"case_id": f"c{i}", "method": method, "flags": "", **{k: float(v[i]) for k, v in columns.items()}}
        for method, columns in scores.items()
        for i in range(n)
    ]
    table = method_verdicts(pd.DataFrame(rows))
    assert table.loc["noise", "verdict"].startswith("no better than a random map: paired gain ROAD")
    assert "over 6 cases" in table.loc["noise", "verdict"]
    assert not table.loc["noise", "beats_baselines"]
    assert table.loc["true", "verdict"].startswith("supported: beats a random map")
    assert "over 5 cases" in table.loc["true", "verdict"]  # the shuffled map needs a lesion
    assert table.loc["true", "beats_baselines"] and table.loc["true", "cases_shuffled"] == 5
    assert table.loc["true", "road_gain_shuffled_low"] > 0 and table.loc["true", "insdel_gain_random_low"] > 0
    # a batch whose every method failed scores no baseline either
    assert faithfulness_scores(model, x, [1] * n, {}, masks, batch_size=32) == {}
