"""Probes: planted encodings are recovered against a control, nothing is found where nothing is encoded, the
closed-form cross-validation equals explicit refits, numpy and torch agree, and bad input is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.probes import (
    PROBE_COLUMNS,
    control_groups,
    fold_labels,
    layer_groups,
    match_controls,
    probe_cases,
    rank_concepts,
    rank_transform,
    ridge_probe,
    run_probes,
)
from Rad4XCNNLogic.explain.settings import DEFAULT_PENALTIES, ProbeConfig
from Rad4XCNNLogic.names import layer_columns

#: the probe section's grid and folds, which the ridge probe takes explicitly
GRID = {"penalties": DEFAULT_PENALTIES, "folds": ProbeConfig().folds}

ENCODED, NOWHERE = "original_firstorder_Mean", "original_glcm_Contrast"


def planted_tables(n=240, p=48, seed=0):
    """Deep features of layer ``layer4`` of ``net``, a control network's, and a radiomic table in which
    ``ENCODED`` is a monotone function of a linear read-out of the deep features and ``NOWHERE`` is noise."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
    x = rng.normal(size=(n, p))
    readout = x @ rng.normal(size=p) / np.sqrt(p)
    encoded = np.exp(readout + 0.3 * rng.normal(size=n))  # monotone: the rank transform undoes it
    deep = pd.DataFrame(x, index=ids, columns=layer_columns("net", "layer4", p))
    random_columns = layer_columns("net-random", "layer4", p)
    control = pd.DataFrame(rng.normal(size=(n, p)), index=ids, columns=random_columns)
    rad = pd.DataFrame({ENCODED: encoded, NOWHERE: rng.gamma(2.0, size=n)}, index=ids)
    train, held = ids[: 3 * n // 4], ids[3 * n // 4 :]
    return deep, control, rad, train, held


def test_planted_encoding_is_recovered_and_selective():
    deep, control, rad, train, held = planted_tables()
    result = run_probes(deep, rad, train, held, ProbeConfig(bootstrap=400), control=control, seed=1)
    table = result.probes.set_index("radiomic_feature")
    assert list(result.probes.columns[: len(PROBE_COLUMNS)]) == list(PROBE_COLUMNS)
    hit = table.loc[ENCODED]
    assert (hit["model"], hit["layer"]) == ("net", "layer4")
    assert hit["r2"] > 0.5
    assert hit["selectivity"] > 0.3
    assert hit["r2_ci_low"] < hit["r2"] < hit["r2_ci_high"]
    assert hit["r2_control"] < 0.1
    miss = table.loc[NOWHERE]
    assert abs(miss["r2"]) < 0.1
    assert miss["r2_ci_low"] <= 0 <= miss["r2_ci_high"]
    assert result.settings["train_cases"] == 180 and result.settings["heldout_cases"] == 60
    assert result.pairs == {("net", "layer4"): ("net-random", "layer4")}


def test_the_most_selective_concept_is_chosen_on_training_folds_and_measured_held_out():
    # pure-noise targets: no layer encodes any. Chosen by the held-out selectivity, the winner of 40 measures
    # itself high by chance; chosen on the training folds' CV error, its held-out value is not biased upward.
    winners_by_heldout, chosen_by_cv, everyone = [], [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        ids = [f"c{i:03d}" for i in range(90)]
        deep = pd.DataFrame(rng.normal(size=(90, 16)), index=ids, columns=layer_columns("net", "layer4", 16))
        control = pd.DataFrame(
            rng.normal(size=(90, 16)), index=ids, columns=layer_columns("net-random", "layer4", 16)
        )
        noise = pd.DataFrame(
            rng.normal(size=(90, 40)), index=ids, columns=[f"original_glcm_F{j}" for j in range(40)]
        )
        result = run_probes(
            deep, noise, ids[:60], ids[60:], ProbeConfig(bootstrap=200), control=control, seed=seed
        )
        probes = result.probes
        assert result.settings["searched"] == 40
        winners_by_heldout.append(probes["selectivity"].max())
        chosen_by_cv.append(rank_concepts(probes).iloc[0]["selectivity"])
        everyone.append(probes["selectivity"].mean())
    assert np.mean(winners_by_heldout) > 0.15  # the bias of choosing on the cases that measure
    assert np.mean(chosen_by_cv) <= np.mean(everyone) + 0.02


def test_selectivity_has_a_paired_interval_and_a_planted_concept_ranks_first():
    deep, control, rad, train, held = planted_tables(n=160, p=24)
    noise = np.random.default_rng(5).normal(size=(160, 20))
    rad = rad.join(pd.DataFrame(noise, index=rad.index, columns=[f"original_glrlm_N{j}" for j in range(20)]))
    result = run_probes(deep, rad, train, held, ProbeConfig(bootstrap=300), control=control, seed=2)
    ranked = rank_concepts(result.probes)
    assert ranked.iloc[0]["radiomic_feature"] == ENCODED and ranked.iloc[0]["cv_selectivity"] > 0.3
    hit = ranked.iloc[0]
    assert (
        hit["selectivity_ci_low"] > 0.2
        and hit["selectivity_ci_low"] < hit["selectivity"] < hit["selectivity_ci_high"]
    )
    assert hit["cv_r2"] == pytest.approx(hit["cv_r2_control"] + hit["cv_selectivity"])
    noise_rows = result.probes[result.probes["radiomic_feature"].str.startswith("original_glrlm")]
    covered = (noise_rows["selectivity_ci_low"] <= 0) & (noise_rows["selectivity_ci_high"] >= 0)
    assert covered.mean() >= 0.8


def test_control_inside_the_deep_table_is_used_and_not_probed_itself():
    deep, control, rad, train, held = planted_tables(n=120, p=16)
    both = pd.concat([deep, control], axis=1)
    result = run_probes(both, rad, train, held, ProbeConfig(bootstrap=0))
    assert set(result.probes["model"]) == {"net"}
    assert result.probes["r2_control"].notna().all()
    # no control anywhere: r2_control and selectivity are NaN, r2 is still measured
    alone = run_probes(deep, rad, train, held, ProbeConfig(bootstrap=0))
    assert alone.probes["selectivity"].isna().all() and alone.probes["r2"].notna().all()


def _standardised(x_train):
    return (x_train - x_train.mean(0)) / x_train.std(0)


def test_closed_form_fold_errors_equal_explicit_refits():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(4)
    x = rng.normal(size=(90, 120))  # more features than cases, as in a network's layer
    y = np.column_stack([x[:, :3].sum(1) + rng.normal(size=90), rng.normal(size=90)])
    penalties = (0.5, 20.0, 800.0)
    fit = ridge_probe(x[:70], y[:70], x[70:], y[70:], penalties=penalties, folds=4, bootstrap=0, seed=2)
    xs, labels = _standardised(x[:70]), fold_labels(70, 4, 2)
    for k, lam in enumerate(penalties):
        err = np.zeros(2)
        for f in range(4):
            model = Ridge(alpha=lam).fit(xs[labels != f], y[:70][labels != f])
            err += ((y[:70][labels == f] - model.predict(xs[labels == f])) ** 2).sum(0)
        np.testing.assert_allclose(fit.cv_error[k], err / 70, rtol=1e-8)
    assert fit.penalty[0] == penalties[int(np.argmin(fit.cv_error[:, 0]))]


def test_held_out_predictions_and_r2_equal_scikit_learn_at_the_chosen_penalty():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_squared_error

    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, 40))
    y = np.column_stack([x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=100), rng.normal(size=100)])
    fit = ridge_probe(x[:75], y[:75], x[75:], y[75:], **GRID, bootstrap=0)
    mean, sd = x[:75].mean(0), x[:75].std(0)
    for j in range(2):
        model = Ridge(alpha=fit.penalty[j]).fit((x[:75] - mean) / sd, y[:75, j])
        pred = model.predict((x[75:] - mean) / sd)
        np.testing.assert_allclose(fit.predictions[:, j], pred, rtol=1e-7, atol=1e-9)
        # R² against the training mean: 1 - SSE / sum of squares around the training mean
        expected = 1 - mean_squared_error(y[75:, j], pred) / np.mean((y[75:, j] - y[:75, j].mean()) ** 2)
        assert fit.r2[j] == pytest.approx(expected)


def test_numpy_and_torch_give_the_same_probes():
    pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(80, 100))
    y = rng.normal(size=(80, 5)) + x[:, :5]
    a = ridge_probe(x[:60], y[:60], x[60:], y[60:], **GRID, bootstrap=100, backend="numpy")
    b = ridge_probe(x[:60], y[:60], x[60:], y[60:], **GRID, bootstrap=100, backend="torch:cpu")
    for name in ("r2", "ci_low", "ci_high", "penalty", "cv_error", "predictions"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-10)


def test_rank_transform_uses_the_training_cases_only():
    train = np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 5.0], [2.0, 0.0]])
    ranks = rank_transform(train, train)
    np.testing.assert_allclose(ranks, rankdata(train, axis=0) / 4)
    held = rank_transform(train, np.array([[0.0, 100.0], [2.5, 1.0]]))
    np.testing.assert_allclose(held, [[0.125, 1.125], [0.875, 0.625]])  # 2.5 lies between ranks 3 and 4


def test_fold_labels_are_balanced_and_seeded():
    labels = fold_labels(23, 5, seed=3)
    assert sorted(np.bincount(labels)) == [4, 4, 5, 5, 5]
    assert np.array_equal(labels, fold_labels(23, 5, seed=3))
    assert not np.array_equal(labels, fold_labels(23, 5, seed=4))


def test_groups_and_control_pairs():
    columns = ["a.layer1_0", "a.layer1_1", "a_0", "b.blocks.11_0", "original_glcm_Contrast"]
    groups = layer_groups(columns)
    assert list(groups) == [("a", "layer1"), ("a", "pre_logits"), ("b", "blocks.11")]
    assert groups[("b", "blocks.11")] == ["b.blocks.11_0"]
    # a control table of one backbone pairs by layer whatever its label
    pairs = control_groups(groups, {("rnd", "layer1"): [], ("rnd", "pre_logits"): []})
    assert pairs == {
        ("a", "layer1"): ("rnd", "layer1"),
        ("a", "pre_logits"): ("rnd", "pre_logits"),
        ("b", "blocks.11"): None,
    }
    table = pd.DataFrame(columns=["a_0", "a-random_0", "b_0"])
    _, _, inside = match_controls(table, None)
    assert inside == {("a", "pre_logits"): ("a-random", "pre_logits"), ("b", "pre_logits"): None}


def test_probe_cases_split_as_the_run_does(synthetic_manifest):
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    cohort = read_manifest(synthetic_manifest, seed=0)
    train, held = probe_cases(cohort)
    by_id = {c.case_id: c for c in cohort.cases}
    assert train and held and not set(train) & set(held)
    assert all(by_id[c].cohort == "internal" and by_id[c].split in ("train", "val") for c in train)
    assert any(by_id[c].cohort != "internal" for c in held)
    assert all(by_id[c].split == "test" or by_id[c].cohort != "internal" for c in held)
    with pytest.raises(Rad4XCNNError, match="training cohort 'elsewhere' is not in the manifest"):
        probe_cases(cohort, "elsewhere")


def test_too_few_training_cases_for_the_folds_asked():
    deep, _, rad, train, held = planted_tables(n=60, p=8)
    with pytest.raises(Rad4XCNNError, match=r"too few training cases for 10-fold .*: 12 training cases"):
        run_probes(deep, rad, train[:12], held, ProbeConfig(folds=10))
    with pytest.raises(Rad4XCNNError, match="too few held-out cases"):
        run_probes(deep, rad, train, held[:2])
    # a section built in Python is checked once against the probe section's rules, naming the setting
    with pytest.raises(Rad4XCNNError, match=r"probe\.folds"):
        run_probes(deep, rad, train, held, ProbeConfig(folds=1))


def test_control_table_with_other_case_ids_is_refused():
    deep, control, rad, train, held = planted_tables(n=60, p=8)
    other = control.rename(index=lambda c: "x" + c)
    with pytest.raises(Rad4XCNNError, match=r"control table has other case ids: 60 of the 60"):
        run_probes(deep, rad, train, held, control=other)


def test_bad_penalties_are_refused():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(Rad4XCNNError, match="penalties must be positive"):
        ridge_probe(x[:15], x[:15], x[15:], x[15:], penalties=[0.0, 1.0], folds=3, bootstrap=0)


def test_text_and_missing_radiomic_columns_are_left_out():
    deep, _, rad, train, held = planted_tables(n=60, p=8)
    rad = rad.assign(diagnostics_Versions_PyRadiomics="3.1", original_shape2D_Area=np.nan)
    result = run_probes(deep, rad, train, held, ProbeConfig(bootstrap=0))
    assert set(result.probes["radiomic_feature"]) == {ENCODED, NOWHERE}


def test_the_explanation_and_its_coverage_work_per_layer():
    from Rad4XCNNLogic.explain.explanation import explain
    from Rad4XCNNLogic.explain.settings import ExplainConfig

    deep, _, rad, _, _ = planted_tables(n=80, p=6)
    second = deep.set_axis(layer_columns("net", "layer2", 6), axis=1) * -1.0
    result = explain(
        pd.concat([deep, second], axis=1),
        rad,
        ExplainConfig(thresholds=[0.3], bootstrap=0, backend="numpy", fdr=None, permutations=0),
    )
    assert set(result.coverage["model"]) == {"net.layer4", "net.layer2"}


def test_the_explain_stage_compares_each_layer_with_the_controls_same_layer(tmp_path):
    from Rad4XCNNLogic.run.config import ExplainConfig
    from Rad4XCNNLogic.run.work import explain_stage

    deep, control, rad, _, _ = planted_tables(n=60, p=6)
    rename = {"layer4": "layer2"}
    tables = [deep, control]
    for t in (deep, control):
        tables.append(t.set_axis([c.replace("layer4", rename["layer4"]) for c in t.columns], axis=1) * 2.0)
    pd.concat(tables, axis=1).to_csv(tmp_path / "deep.csv", index_label="case_id")
    rad.to_csv(tmp_path / "rad.csv", index_label="case_id")
    explain = ExplainConfig(thresholds=[0.3], fdr=None, permutations=0, bootstrap=0, backend="numpy")
    explain_stage(
        tmp_path / "deep.csv",
        tmp_path / "rad.csv",
        tmp_path,
        explain=explain,
        seed=0,
        controls={"net": "net-random"},
    )
    table = pd.read_csv(tmp_path / "control_coverage.csv")
    pairs = set(zip(table["model"], table["control"], strict=True))
    assert pairs == {("net.layer2", "net-random.layer2"), ("net.layer4", "net-random.layer4")}
