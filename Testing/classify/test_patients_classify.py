"""Patients in classification: grouped cross-validation, and a patient on both sides refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.classify.classifiers import classify, cv_splitter
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, assign_splits
from Rad4XCNNLogic.errors import Rad4XCNNError

TOY = {"progress": False}
TOY_SETTINGS = ClassificationConfig(n_bootstrap=50, jobs=1, classifiers=["svm"], cv_folds=3)


def _patients(n_patients=40, per_patient=3, seed=0):
    """Patients with several images each; a patient's images share a patient effect (so that a per-image
    CV would see the patient on both sides)."""
    rng = np.random.default_rng(seed)
    cases, rows = [], {}
    for p in range(n_patients):
        label = "malignant" if p % 2 else "benign"
        effect = rng.normal(size=3) * 2
        for k in range(per_patient):
            cid = f"p{p:02d}_{k}"
            cases.append(Case(cid, Path("x"), (), label=label, patient_id=f"P{p:02d}"))
            rows[cid] = effect + rng.normal(size=3) * 0.3 + (label == "malignant") * 0.8
    features = pd.DataFrame.from_dict(rows, orient="index", columns=["cnn_0", "cnn_1", "cnn_2"])
    return features, Cohort(assign_splits(cases, fractions=(0.7, 0.0, 0.3), seed=seed))


def test_grouped_cross_validation_keeps_patients_out_of_their_own_folds():
    features, cohort = _patients()
    result = classify(features, cohort, TOY_SETTINGS, **TOY)
    assert result.settings["cv"].startswith("stratified group k-fold by split group")
    train = [c for c in cohort if c.split == "train"]
    groups = [c.patient_id for c in train]
    y = np.array([c.label == "malignant" for c in train])
    for fit_rows, held_rows in cv_splitter(3, 0, groups).split(np.zeros((len(y), 1)), y, groups):
        assert not {groups[i] for i in fit_rows} & {groups[i] for i in held_rows}
    # without patient ids the folds are per image
    plain = Cohort([Case(c.case_id, c.image, (), label=c.label, split=c.split) for c in cohort])
    assert classify(features, plain, TOY_SETTINGS, **TOY).settings["cv"].startswith("stratified k-fold")


def test_a_patient_on_both_sides_is_refused():
    features, cohort = _patients()
    cases = list(cohort.cases)
    # move one image of a training patient into the test split
    k = next(i for i, c in enumerate(cases) if c.split == "train")
    moved = cases[k]
    cases[k] = Case(
        moved.case_id, moved.image, (), label=moved.label, split="test", patient_id=moved.patient_id
    )
    with pytest.raises(
        Rad4XCNNError,
        match=rf"^1 patient\(s\) have cases in the training split .* and in evaluation set internal-test: "
        rf"{moved.patient_id}; a patient must stay on one side",
    ):
        classify(features, Cohort(cases), TOY_SETTINGS, **TOY)


def test_too_few_patients_for_grouped_folds():
    features, cohort = _patients(n_patients=6, per_patient=4)
    with pytest.raises(Rad4XCNNError, match=r"too few patients for 3-fold grouped cross-validation"):
        classify(features, cohort, TOY_SETTINGS, **TOY)


def test_evaluate_on_leaves_a_training_phase_cohort_out():
    features, cohort = _patients(n_patients=60, per_patient=1)
    # a third of the patients form a cohort that trained the network: it must not be scored as external
    cases = [
        Case(c.case_id, c.image, (), c.label, "test", "busi" if i % 3 == 0 else "external")
        if c.split == "test"
        else c
        for i, c in enumerate(cohort.cases)
    ]
    everything = classify(features, Cohort(cases), TOY_SETTINGS, **TOY)
    assert set(everything.metrics["evaluated_on"]) == {"busi", "external"}
    chosen = classify(features, Cohort(cases), replace(TOY_SETTINGS, evaluate_on=["external"]), **TOY)
    assert set(chosen.metrics["evaluated_on"]) == {"external"}
    assert chosen.counts["left_out:not_evaluated"] == sum(c.cohort == "busi" for c in cases)
    with pytest.raises(Rad4XCNNError, match=r"evaluation cohort\(s\) mars not in the manifest"):
        classify(features, Cohort(cases), replace(TOY_SETTINGS, evaluate_on=["mars"]), **TOY)


def test_near_duplicate_groups_group_the_folds_and_the_bootstrap():
    """A split_group (near-duplicates joined by the cohort stage) groups like a patient id: the folds, and
    the bootstrap, which draws a group's cases together."""
    features, cohort = _patients()
    grouped = Cohort(
        [Case(c.case_id, c.image, (), label=c.label, split=c.split, split_group=c.patient_id) for c in cohort]
    )
    result = classify(features, grouped, TOY_SETTINGS, **TOY)
    assert result.settings["cv"].startswith("stratified group k-fold by split group")
    test = result.predictions[result.predictions["evaluated_on"] == "internal-test"]
    assert (test["split_group"] == test["case_id"].str[:3].str.replace("p", "P")).all()
    from Rad4XCNNLogic.classify.metrics import stratified_bootstrap_weights

    y = np.array([0, 0, 0, 1, 1, 1])
    w = stratified_bootstrap_weights(y, 200, np.random.default_rng(0), ["a", "a", "b", "c", "c", "d"])
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all()
    assert not (w[:, 0] == w[:, 2]).all()
    # no group of several cases: the draws of the per-case bootstrap, unchanged
    plain = stratified_bootstrap_weights(y, 50, np.random.default_rng(1))
    same = stratified_bootstrap_weights(y, 50, np.random.default_rng(1), list("abcdef"))
    assert (plain == same).all()


def test_repeated_splits_measure_leakage_of_near_duplicates():
    """Labels unrelated to the features, each case with a near-copy: split as if ungrouped, the copy in
    training gives the answer away; grouped, the AUC stays near chance."""
    from Rad4XCNNLogic.classify.repeated import GROUPED, UNGROUPED, repeated_splits, summarise_repeats

    rng = np.random.default_rng(0)
    cases, rows = [], {}
    for g in range(36):
        label = "malignant" if rng.random() < 0.5 else "benign"
        base = rng.normal(size=4)
        for k in range(2):
            cid = f"g{g:02d}_{k}"
            cases.append(Case(cid, Path("x"), (), label=label, split_group=f"G{g:02d}"))
            rows[cid] = base + rng.normal(size=4) * 0.01
    features = pd.DataFrame.from_dict(rows, orient="index", columns=[f"cnn_{i}" for i in range(4)])
    cohort = Cohort(assign_splits(cases, fractions=(0.7, 0.0, 0.3), seed=0))
    result = classify(features, cohort, TOY_SETTINGS, **TOY)
    table = repeated_splits(features, cohort, result, repeats=4, seed=0, jobs=1)
    assert set(table["grouping"]) == {GROUPED, UNGROUPED} and len(table) == 8
    assert np.isfinite(table["auc"]).all() and (table["n_test"] > 0).all()
    summary = summarise_repeats(table, result.metrics).set_index("grouping")
    assert summary.loc[UNGROUPED, "mean_auc"] > summary.loc[GROUPED, "mean_auc"] + 0.2
    assert 0 <= summary.loc[GROUPED, "headline_rank"] <= 1
    # without near-duplicates joining patients only the grouped repeats are run
    plain = Cohort([replace(c, split_group=None) for c in cohort])
    alone = repeated_splits(
        features, plain, classify(features, plain, TOY_SETTINGS, **TOY), repeats=2, seed=0, jobs=1
    )
    assert set(alone["grouping"]) == {GROUPED}
