"""Spearman within strata: equal to Spearman with one stratum, the weighted mean of per-stratum rhos, its
degrees of freedom, the within-stratum permutation null and bootstrap, calibration, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.correlation import prepare_tables, spearman
from Rad4XCNNLogic.explain.resampling import bootstrap_intervals, fwer_pvalues, permutation_null
from Rad4XCNNLogic.explain.strata import prepare_within, spearman_within, stratum_labels

BACKENDS = ["numpy", "torch:cpu"]


def tables(n=90, n_deep=7, n_rad=5, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    cases = [f"c{i:03d}" for i in range(n)]
    deep = rng.normal(size=(n, n_deep))
    rad = rng.normal(size=(n, n_rad))
    if ties:
        deep, rad = np.maximum(deep, 0), np.round(rad, 1)
    return (
        pd.DataFrame(deep, index=cases, columns=[f"cnn_{k}" for k in range(n_deep)]),
        pd.DataFrame(rad, index=cases, columns=[f"original_firstorder_F{k}" for k in range(n_rad)]),
    )


def three_strata(index, seed=1):
    rng = np.random.default_rng(seed)
    return pd.Series(rng.choice(["a", "b", "c"], len(index)), index=index)


@pytest.fixture(scope="module", autouse=True)
def _torch_available():
    pytest.importorskip("torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_stratum_is_ordinary_spearman(backend):
    deep, rad = tables()
    pooled = spearman(deep, rad, backend=backend)
    within = spearman_within(deep, rad, pd.Series("all", index=deep.index), backend=backend, chunk_size=3)
    np.testing.assert_allclose(within.rho, pooled.rho, atol=1e-12, rtol=0)
    np.testing.assert_allclose(within.p, pooled.p, atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(within.q, pooled.q, atol=1e-12, rtol=1e-10)
    assert within.strata == {"all": 90} and within.small_strata == {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_rho_within_is_the_size_weighted_mean_of_per_stratum_spearman(backend):
    deep, rad = tables()
    strata = three_strata(deep.index)
    deep.loc[strata == "a", "cnn_1"] = 0.0  # constant in stratum a: only b and c count for it
    within = spearman_within(deep, rad, strata, backend=backend, chunk_size=2)
    sizes = strata.value_counts()
    for i in range(deep.shape[1]):
        for j in range(rad.shape[1]):
            used = [s for s in "abc" if not (i == 1 and s == "a")]
            rhos = [
                stats.spearmanr(deep[strata == s].iloc[:, i], rad[strata == s].iloc[:, j])[0] for s in used
            ]
            expected = np.average(rhos, weights=[sizes[s] for s in used])
            assert within.rho[i, j] == pytest.approx(expected, abs=1e-12)
            # t approximation with n - strata - 1 degrees of freedom over the strata used
            dof = sum(sizes[s] for s in used) - len(used) - 1
            t = expected * np.sqrt(dof / (1 - expected**2))
            assert within.p[i, j] == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)


def test_stratum_labels_join_columns_and_refuse_bad_manifests():
    manifest = pd.DataFrame(
        {"case_id": ["x1", "x2", "x3"], "label": ["benign", "malignant", "benign"], "cohort": ["in"] * 3}
    )
    labels = stratum_labels(manifest, ["label", "cohort"])
    assert labels.to_dict() == {"x1": "benign | in", "x2": "malignant | in", "x3": "benign | in"}
    with pytest.raises(Rad4XCNNError, match="no column scanner to stratify by") as err:
        stratum_labels(manifest, "label,scanner")
    assert "\n" not in str(err.value)
    manifest.loc[1, "cohort"] = None
    with pytest.raises(Rad4XCNNError, match="case x2 has no value in the stratum column cohort"):
        stratum_labels(manifest, "label,cohort")
    with pytest.raises(Rad4XCNNError, match="no stratum column given"):
        stratum_labels(manifest, "")


def test_small_strata_are_left_out_and_reported():
    deep, rad = tables(n=40)
    strata = pd.Series(["big"] * 20 + ["other"] * 18 + ["tiny"] * 2, index=deep.index)
    within = spearman_within(deep, rad, strata, backend="numpy")
    assert within.small_strata == {"tiny": 2} and within.strata == {"big": 20, "other": 18}
    assert within.n_cases == 38 and not set(within.cases) & set(deep.index[-2:])
    reference = spearman_within(deep.iloc[:38], rad.iloc[:38], strata.iloc[:38], backend="numpy")
    np.testing.assert_allclose(within.rho, reference.rho, atol=1e-12)


def test_strata_too_small_or_missing_cases_are_one_line_errors():
    deep, rad = tables(n=6)
    with pytest.raises(Rad4XCNNError, match="no stratum of s has at least 5 cases") as err:
        spearman_within(deep, rad, pd.Series(list("aabbcc"), index=deep.index, name="s"), backend="numpy")
    assert "\n" not in str(err.value)
    deep, rad = tables(n=30)
    partial = pd.Series("a", index=deep.index[:-2])
    with pytest.raises(
        Rad4XCNNError, match=r"2 case\(s\) of the feature tables are missing from the manifest"
    ):
        spearman_within(deep, rad, partial, backend="numpy")


def test_within_permutations_stay_in_their_stratum_and_ignore_the_batch_size():
    deep, rad = tables(n=30)
    strata = three_strata(deep.index)
    prep = prepare_within(prepare_tables(deep, rad, "numpy", None, 0.5), strata)
    whole = np.concatenate(list(prep.permutation_batches(25, 25, seed=3)))
    batched = np.concatenate(list(prep.permutation_batches(25, 4, seed=3)))
    np.testing.assert_array_equal(whole, batched)
    assert (prep.stratum_of[whole] == prep.stratum_of[None, :]).all()  # every case stays in its stratum
    assert not (whole == np.arange(30)).all(axis=1).any()  # and cases do move


@pytest.mark.parametrize("backend,chunk", [("numpy", 2), ("torch:cpu", 4), ("numpy", 50)])
def test_within_null_is_the_max_rho_within_of_within_shuffles(backend, chunk):
    deep, rad = tables(n=36, n_deep=5, n_rad=4)  # chunks of 2 shuffle the deep side, of 5 the radiomic
    strata = three_strata(deep.index)
    deep.loc[strata == "b", "cnn_2"] = 0.0  # a denominator below 1 on the permutation path too
    deep.loc[strata != "a", "cnn_3"] = 0.0
    rad.loc[strata == "a", rad.columns[1]] = 1.0  # and a pair with no stratum where both vary
    null = permutation_null(
        deep,
        rad,
        n_permutations=15,
        seed=2,
        backend=backend,
        chunk_size=chunk,
        strata=strata,
        single_precision=False,
    )
    prep = prepare_within(prepare_tables(deep, rad, "numpy", None, 0.5), strata)
    cases = prep.aligned.cases  # grouped by stratum: the order the permutations index
    for k, order in enumerate(next(prep.permutation_batches(15, 15, seed=2))):
        shuffled = deep.loc[[cases[i] for i in order]]
        shuffled.index = cases  # case m takes the deep values of case order[m]
        expected = np.nanmax(np.abs(spearman_within(shuffled, rad, strata, backend="numpy").rho))
        assert null[k] == pytest.approx(expected, abs=1e-12)


def test_within_bootstrap_covers_the_estimate_and_repeats():
    rng = np.random.default_rng(4)
    site = np.repeat([0.0, 4.0], 50)
    latent = rng.normal(size=100)
    rad = pd.DataFrame({"original_firstorder_Mean": latent + site})
    deep = pd.DataFrame({"cnn_0": latent + 0.7 * rng.normal(size=100) - site})
    strata = pd.Series(site.astype(str), index=deep.index)
    pairs = [("cnn_0", "original_firstorder_Mean")]
    ci = bootstrap_intervals(deep, rad, pairs, n_boot=200, strata=strata, backend="numpy", seed=1)
    again = bootstrap_intervals(deep, rad, pairs, n_boot=200, strata=strata, backend="torch:cpu", seed=1)
    rho = spearman_within(deep, rad, strata, backend="numpy").rho[0, 0]
    assert ci["ci_low"].iloc[0] < rho < ci["ci_high"].iloc[0] and rho > 0.5
    np.testing.assert_allclose(ci.to_numpy(), again.to_numpy(), atol=1e-12)
    pooled = bootstrap_intervals(deep, rad, pairs, n_boot=200, backend="numpy", seed=1)
    assert pooled["ci_high"].iloc[0] < 0.3  # pooled, the shift reverses the sign


def _shifted_null_tables(seed, n_per=15, n_features=4):
    """No relation within any stratum; strong site and class shifts shared by every feature."""
    rng = np.random.default_rng(seed)
    site = np.repeat([0, 1, 0, 1], n_per)
    label = np.repeat([0, 0, 1, 1], n_per)
    shift = 3.0 * site + 2.0 * label
    cases = [f"c{i}" for i in range(4 * n_per)]
    deep = pd.DataFrame(shift[:, None] + rng.normal(size=(4 * n_per, n_features)), index=cases)
    deep.columns = [f"cnn_{k}" for k in range(n_features)]
    rad = pd.DataFrame(shift[:, None] + rng.normal(size=(4 * n_per, n_features)), index=cases)
    strata = pd.Series([f"{s}|{c}" for s, c in zip(site, label, strict=True)], index=cases)
    return deep, rad, strata


def test_stratified_permutation_fwer_holds_its_level_under_site_and_class_shifts():
    alpha, rejected, rejected_pooled, runs = 0.05, 0, 0, 200
    for seed in range(runs):
        deep, rad, strata = _shifted_null_tables(seed)
        null = permutation_null(deep, rad, n_permutations=99, seed=seed, backend="numpy", strata=strata)
        rho = spearman_within(deep, rad, strata, backend="numpy").rho
        rejected += bool((fwer_pvalues(rho, null) <= alpha).any())
        if seed < 20:
            pooled_null = permutation_null(deep, rad, n_permutations=99, seed=seed, backend="numpy")
            pooled_rho = spearman(deep, rad, backend="numpy").rho
            rejected_pooled += bool((fwer_pvalues(pooled_rho, pooled_null) <= alpha).any())
    # Exact under exchangeability within strata: the rate is alpha up to binomial noise (sd 0.015 here).
    assert 0.01 <= rejected / runs <= 0.08
    assert rejected_pooled == 20  # the pooled test calls the shared shift an association every time
