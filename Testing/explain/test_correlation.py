"""Spearman at scale: values against scipy, p/q, the permutation null, bootstrap, backends and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import (
    CorrelationResult,
    benjamini_hochberg,
    rank_data,
    read_feature_table,
    resolve_backend,
    spearman,
    spearman_pvalues,
)
from Rad4XCNNLogic.explain.resampling import (
    bootstrap_intervals,
    fwer_pvalues,
    permutation_null,
    permutation_threshold,
    suggest_threshold,
)

RAD_NAMES = [
    f"{image}_{klass}_{feature}"
    for image in ("original", "wavelet-HL", "wavelet-LH")
    for klass, feature in (
        ("firstorder", "Mean"),
        ("firstorder", "Entropy"),
        ("glcm", "Contrast"),
        ("glszm", "ZoneEntropy"),
        ("gldm", "DependenceEntropy"),
    )
]


def tables(n=60, n_deep=12, n_rad=10, ties=False, seed=0, model="resnet50"):
    """Random deep (ReLU-like when ``ties``) and radiomic tables indexed by case id."""
    rng = np.random.default_rng(seed)
    cases = [f"case{i:03d}" for i in range(n)]
    deep = rng.normal(size=(n, n_deep))
    rad = rng.normal(size=(n, n_rad))
    if ties:
        deep = np.maximum(deep, 0)  # ReLU: many exact zeros
        rad = np.round(rad, 1)
    return (
        pd.DataFrame(deep, index=cases, columns=[f"{model}_{k}" for k in range(n_deep)]),
        pd.DataFrame(rad, index=cases, columns=(RAD_NAMES * 3)[:n_rad] if n_rad <= 15 else None),
    )


BACKENDS = ["numpy", "torch:cpu"]


@pytest.fixture(scope="module", autouse=True)
def _torch_available():
    pytest.importorskip("torch")


# ------------------------------------------------------------------------------------------ scipy anchor
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ties", [False, True])
def test_rho_and_p_equal_scipy_spearmanr(backend, ties):
    deep, rad = tables(n=80, n_deep=14, n_rad=9, ties=ties, seed=1)
    result = spearman(deep, rad, backend=backend, chunk_size=5)
    ref = stats.spearmanr(deep.to_numpy(), rad.to_numpy())
    rho_ref = ref.statistic[:14, 14:]
    p_ref = ref.pvalue[:14, 14:]
    assert np.abs(result.rho - rho_ref).max() < 1e-12
    assert np.abs(result.p - p_ref).max() < 1e-12
    assert np.allclose(result.p, p_ref, rtol=1e-10, atol=0)
    assert result.deep_features == list(deep.columns)
    assert result.radiomic_features == list(rad.columns)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranks_equal_scipy_rankdata_with_ties(backend):
    x = np.round(np.random.default_rng(2).normal(size=(7, 50)), 0)
    x[3] = 0.0  # a constant row: every rank (n + 1) / 2
    assert np.array_equal(rank_data(x, backend), stats.rankdata(x, axis=1))


def test_q_equals_scipy_false_discovery_control():
    deep, rad = tables(n=40, n_deep=20, n_rad=12, seed=3)
    result = spearman(deep, rad, backend="numpy")
    expected = stats.false_discovery_control(result.p.ravel(), method="bh").reshape(result.p.shape)
    assert np.abs(result.q - expected).max() < 1e-15
    assert np.isnan(benjamini_hochberg(np.array([0.1, np.nan]))[1])


def test_pvalues_of_perfect_and_undefined_rho():
    p = spearman_pvalues(np.array([1.0, -1.0, 0.0, np.nan]), 10)
    assert p[0] == 0 and p[1] == 0 and p[2] == pytest.approx(1.0) and np.isnan(p[3])


def test_chunking_and_backends_agree():
    deep, rad = tables(n=50, n_deep=23, n_rad=8, ties=True, seed=4)
    whole = spearman(deep, rad, backend="numpy")
    for backend, chunk in (("numpy", 1), ("numpy", 7), ("torch:cpu", 4)):
        other = spearman(deep, rad, backend=backend, chunk_size=chunk)
        assert np.allclose(other.rho, whole.rho, atol=1e-14, rtol=0)
        assert other.backend.startswith(backend.split(":")[0])


def test_auto_backend_is_numpy_without_a_gpu():
    import torch

    expected = "torch" if torch.cuda.is_available() else "numpy"
    assert resolve_backend("auto").name == expected
    with pytest.raises(Rad4XCNNError, match="unknown backend"):
        resolve_backend("jax")


# ------------------------------------------------------------------------------------- zero variance
def test_zero_variance_features_get_no_rho_and_are_reported():
    deep, rad = tables(n=30, n_deep=5, n_rad=4, seed=5)
    deep["resnet50_2"] = 0.0  # a dead ReLU unit
    rad[rad.columns[1]] = 7.5
    result = spearman(deep, rad, backend="numpy")
    assert result.zero_variance == {"deep": ["resnet50_2"], "radiomic": [rad.columns[1]]}
    assert "resnet50_2" in result.deep_features  # reported, not silently dropped
    assert np.isnan(result.rho[2]).all() and np.isnan(result.rho[:, 1]).all()
    assert np.isnan(result.p[2]).all() and np.isnan(result.q[:, 1]).all()
    assert np.isfinite(np.delete(np.delete(result.rho, 2, 0), 1, 1)).all()


def test_all_constant_features_on_one_side_is_an_error():
    deep, rad = tables(n=30, n_deep=3, n_rad=4, seed=5)
    rad[:] = 1.0
    with pytest.raises(Rad4XCNNError, match="every radiomic feature is constant over the 30 cases"):
        spearman(deep, rad, backend="numpy")


# ----------------------------------------------------------------------------------------- bad input
def test_case_ids_that_differ_use_the_intersection_and_report_the_rest():
    deep, rad = tables(n=40, seed=6)
    result = spearman(deep.drop(index=["case000", "case001"]), rad.drop(index=["case039"]), backend="numpy")
    assert result.n_cases == 37
    assert result.dropped_cases == {
        "case000": "only in the radiomics table",
        "case001": "only in the radiomics table",
        "case039": "only in the deep-feature table",
    }
    common = deep.index[2:39]
    ref = stats.spearmanr(deep.loc[common].to_numpy(), rad.loc[common].to_numpy()).statistic[:12, 12:]
    assert np.abs(result.rho - ref).max() < 1e-12


def test_row_order_does_not_matter():
    deep, rad = tables(n=45, ties=True, seed=7)
    a = spearman(deep, rad, backend="numpy")
    b = spearman(deep.sample(frac=1, random_state=1), rad.sample(frac=1, random_state=2), backend="numpy")
    assert np.array_equal(a.rho, b.rho) and a.cases == b.cases
    null_a = permutation_null(deep, rad, n_permutations=30, seed=3, backend="numpy")
    null_b = permutation_null(deep.iloc[::-1], rad, n_permutations=30, seed=3, backend="numpy")
    assert np.array_equal(null_a, null_b)


def test_integer_and_text_case_ids_match():
    deep, rad = tables(n=20, seed=8)
    deep.index = range(20)
    rad.index = [str(i) for i in range(20)]
    assert spearman(deep, rad, backend="numpy").n_cases == 20


def test_too_few_cases_is_a_clear_error():
    deep, rad = tables(n=2, seed=9)
    with pytest.raises(Rad4XCNNError, match=r"only 2 case\(s\).*need at least 3"):
        spearman(deep, rad, backend="numpy")
    deep, rad = tables(n=6, seed=9)
    assert spearman(deep, rad, backend="numpy").n_cases == 6
    with pytest.raises(Rad4XCNNError, match="permutation test needs at least 8 cases, got 6"):
        permutation_null(deep, rad, n_permutations=10, backend="numpy")
    with pytest.raises(Rad4XCNNError, match="bootstrap intervals need at least 8 cases"):
        bootstrap_intervals(deep, rad, [("resnet50_0", rad.columns[0])], n_boot=10, backend="numpy")


def test_no_shared_case_id_names_both_sides():
    deep, rad = tables(n=10, seed=10)
    rad.index = [f"x{i}" for i in range(10)]
    with pytest.raises(Rad4XCNNError, match=r"share no case id \(deep: case000.*radiomics: x0"):
        spearman(deep, rad, backend="numpy")


def test_missing_values_drop_features_then_cases_and_say_why():
    deep, rad = tables(n=40, seed=11)
    deep.iloc[:30, 3] = np.nan  # missing in most cases: the feature goes
    deep.iloc[5, 1] = np.nan  # one missing value: the case goes
    rad.iloc[7, 2] = np.inf  # not finite counts as missing
    result = spearman(deep, rad, backend="numpy")
    assert result.dropped_features == {"deep": {"resnet50_3": "missing in 30 of 40 cases"}, "radiomic": {}}
    assert "resnet50_3" not in result.deep_features
    assert result.dropped_cases == {
        "case005": "missing value in deep feature resnet50_1",
        "case007": f"missing value in radiomic feature {rad.columns[2]}",
    }
    kept = deep.drop(index=["case005", "case007"]).drop(columns="resnet50_3")
    ref = stats.spearmanr(kept.to_numpy(), rad.loc[kept.index].to_numpy()).statistic[:11, 11:]
    assert np.abs(result.rho - ref).max() < 1e-12


def test_all_features_missing_is_an_error():
    deep, rad = tables(n=10, seed=12)
    deep[:] = np.nan
    with pytest.raises(Rad4XCNNError, match="every deep feature is missing in most cases"):
        spearman(deep, rad, backend="numpy")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d, r: d.set_axis(["resnet50_0"] * 2 + list(d.columns[2:]), axis=1), "duplicate feature name"),
        (lambda d, r: d.set_axis(["case001", *d.index[1:]]), "duplicate case id"),
        (lambda d, r: d.assign(resnet50_4=["x"] * len(d)), "non-numeric column"),
    ],
)
def test_bad_tables_are_refused_with_one_line(change, message):
    deep, rad = tables(n=12, seed=13)
    with pytest.raises(Rad4XCNNError, match=message) as info:
        spearman(change(deep, rad), rad, backend="numpy")
    assert "\n" not in str(info.value)


def test_pyradiomics_diagnostics_columns_are_left_out():
    deep, rad = tables(n=15, seed=14)
    rad["diagnostics_Versions_PyRadiomics"] = "v3.1.4"
    result = spearman(deep, rad, backend="numpy")
    assert "diagnostics_Versions_PyRadiomics" not in result.radiomic_features


def test_read_feature_table_keeps_ids_as_text_and_refuses_duplicate_headers(tmp_path):
    path = tmp_path / "deep.csv"
    path.write_text("case_id,resnet50_0,resnet50_1\n007,1.5,2\n010,3,4\n")
    frame = read_feature_table(path, "deep-feature")
    assert list(frame.index) == ["007", "010"] and frame.loc["007", "resnet50_0"] == 1.5
    path.write_text("case_id,resnet50_0,resnet50_0\n007,1.5,2\n")
    with pytest.raises(Rad4XCNNError, match=r"duplicate feature name.*resnet50_0"):
        read_feature_table(path, "deep-feature")
    with pytest.raises(Rad4XCNNError, match="deep-feature table not found"):
        read_feature_table(tmp_path / "absent.csv", "deep-feature")


# ------------------------------------------------------------------------------------ permutation test
def test_permutation_null_is_the_max_abs_rho_of_shuffled_cases():
    deep, rad = tables(n=30, n_deep=6, n_rad=5, ties=True, seed=15)
    null = permutation_null(
        deep, rad, n_permutations=20, seed=4, backend="numpy", chunk_size=2, single_precision=False
    )
    # Recompute the first shuffle by hand: the same seeded permutation applied to the deep table.
    perm = np.random.default_rng(4).permuted(np.tile(np.arange(30), (20, 1)), axis=1)[0]
    shuffled = deep.sort_index().to_numpy()[perm]
    ref = stats.spearmanr(shuffled, rad.sort_index().to_numpy()).statistic[:6, 6:]
    assert null[0] == pytest.approx(np.abs(ref).max(), abs=1e-12)
    for backend, chunk in (("torch:cpu", 4), ("numpy", 6)):  # either side shuffled, either backend
        other = permutation_null(
            deep, rad, n_permutations=20, seed=4, backend=backend, chunk_size=chunk, single_precision=False
        )
        assert np.allclose(other, null, atol=1e-12, rtol=0)
        single = permutation_null(deep, rad, n_permutations=20, seed=4, backend=backend, chunk_size=chunk)
        assert np.allclose(single, null, atol=1e-6, rtol=0)  # float32 products: rounding only


def test_permutation_threshold_and_fwer_pvalues_agree():
    null = np.random.default_rng(16).uniform(0.1, 0.4, 999)
    threshold = permutation_threshold(null, alpha=0.05)
    assert (null > threshold).sum() == 49  # k - 1 null values exceed the k-th largest, k = 50
    rho = np.array([threshold, np.nextafter(threshold, 1), 0.05, np.nan])
    p = fwer_pvalues(rho, null)
    assert p[0] > 0.05 >= p[1]  # strictly above the threshold is significant
    assert p[2] == 1.0 and np.isnan(p[3])
    assert suggest_threshold(null, alpha=0.05) == pytest.approx(np.ceil(threshold / 0.05) * 0.05)
    with pytest.raises(Rad4XCNNError, match="use at least 19"):
        permutation_threshold(null[:10], alpha=0.05)


def test_permutation_threshold_controls_the_family_wise_error():
    # Under no relation at all, the chance that any pair exceeds the threshold is alpha.
    alpha, n_seeds = 0.1, 150
    false_alarms = 0
    for seed in range(n_seeds):
        deep, rad = tables(n=25, n_deep=6, n_rad=5, seed=1000 + seed)
        observed = np.nanmax(np.abs(spearman(deep, rad, backend="numpy").rho))
        null = permutation_null(deep, rad, n_permutations=99, seed=seed, backend="numpy")
        false_alarms += observed > permutation_threshold(null, alpha=alpha)
    rate = false_alarms / n_seeds
    # Binomial(150, 0.1): mean 15, sd 3.7; the band is about +-2.7 sd.
    assert 0.035 <= rate <= 0.17, rate


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_intervals_cover_the_estimate_and_repeat_with_the_seed():
    rng = np.random.default_rng(17)
    x = rng.normal(size=120)
    rad = pd.DataFrame({"original_firstorder_Mean": x, "original_glcm_Contrast": rng.normal(size=120)})
    deep = pd.DataFrame(
        {"cnn_0": np.maximum(x + 0.7 * rng.normal(size=120), 0), "cnn_1": rng.normal(size=120)}
    )
    pairs = [("cnn_0", "original_firstorder_Mean"), ("cnn_1", "original_glcm_Contrast")]
    ci = bootstrap_intervals(deep, rad, pairs, n_boot=200, seed=1, backend="numpy")
    rho = spearman(deep, rad, backend="numpy").frame()
    for d, r in pairs:
        low, high = ci.loc[(d, r)]
        assert low < rho.loc[d, r] < high
    strong, null = ci.loc[pairs[0]], ci.loc[pairs[1]]
    assert strong["ci_low"] > 0.5 and null["ci_low"] < 0 < null["ci_high"]
    again = bootstrap_intervals(deep, rad, pairs, n_boot=200, seed=1, backend="torch:cpu")
    assert np.allclose(again.to_numpy(), ci.to_numpy(), atol=1e-12)
    with pytest.raises(Rad4XCNNError, match="unknown feature pair"):
        bootstrap_intervals(deep, rad, [("cnn_9", "original_firstorder_Mean")], n_boot=10, backend="numpy")


# ------------------------------------------------------------------------------------------ persistence
def test_result_saves_and_loads(tmp_path):
    deep, rad = tables(n=30, seed=18)
    deep.iloc[0, 0] = np.nan
    result = spearman(deep, rad, backend="numpy")
    result.save(tmp_path)
    loaded = CorrelationResult.load(tmp_path)
    assert np.array_equal(loaded.rho, result.rho, equal_nan=True)
    assert loaded.deep_features == result.deep_features and loaded.dropped_cases == result.dropped_cases
    (tmp_path / "rho.npy").write_bytes(b"garbage")
    with pytest.raises(Rad4XCNNError, match="cannot read the correlation matrices"):
        CorrelationResult.load(tmp_path)


def test_permutations_do_not_depend_on_the_batch_size():
    from Rad4XCNNLogic.explain.correlation import _permutation_batches

    whole = np.concatenate(list(_permutation_batches(30, 20, 20, seed=4)))
    batched = np.concatenate(list(_permutation_batches(30, 20, 7, seed=4)))
    assert np.array_equal(whole, batched)
    assert all(sorted(row) == list(range(30)) for row in whole)
