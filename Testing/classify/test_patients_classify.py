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
    assert result.settings["cv"].startswith("stratified group k-fold by patient")
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
