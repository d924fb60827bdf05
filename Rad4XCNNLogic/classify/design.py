"""Which cases train and which evaluate: the features matched to the manifest, labels turned into classes,
the training split and every held-out evaluation set, with each case left out counted and recorded.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from Rad4XCNNLogic.cohort.manifest import DEFAULT_COHORT, Cohort
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError

log = logging.getLogger(__name__)

#: ``evaluated_on`` value of the training cohort's test split.
INTERNAL_TEST = "internal-test"
STAGE = "classify"
#: Names that are taken as the positive class of a two-class problem when ``positive`` is not given.
POSITIVE_NAMES = (
    "malignant",
    "positive",
    "cancer",
    "tumor",
    "tumour",
    "abnormal",
    "disease",
    "yes",
    "true",
    "1",
)


@dataclass
class _Design:
    """Cases, labels and evaluation groups after matching the features to the manifest."""

    classes: list[str]
    y: dict[str, int]  # case_id -> class index
    train: list[str]
    evaluations: dict[str, list[str]]
    failures: list[CaseFailure]
    counts: dict[str, int]
    positive: str | None
    train_cohort: str
    groups: dict[str, str]  # case_id -> its group (Case.group: near-duplicates and patient; else the case)


def _choose_positive(labels: Sequence[str], positive: str | None) -> str | None:
    if positive is not None:
        if positive not in labels:
            raise Rad4XCNNError(
                f"positive class {positive!r} is not a label of the cohort (labels: {', '.join(labels)})"
            )
        return positive
    if len(labels) != 2:
        return None
    for name in POSITIVE_NAMES:
        for label in labels:
            if label.lower() == name:
                return label
    log.info("positive class not given: taking %r (the second label in sorted order)", labels[1])
    return labels[1]


def training_design(
    feature_ids: Sequence[str],
    cohort: Cohort,
    *,
    positive: str | None,
    train_cohort: str | None,
    train_splits: Sequence[str],
    cv_folds: int,
    feature_failures: Sequence[CaseFailure] = (),
    evaluate_on: Sequence[str] | None = None,
) -> _Design:
    """Who trains and who is evaluated: the cases of ``feature_ids`` split into the training design and the
    evaluation sets, with the reasons cases are left out."""
    failures: list[CaseFailure] = []
    reasons: Counter[str] = Counter()
    manifest_ids = set(cohort.case_ids)
    partial = {f.case_id: f for f in feature_failures}
    for case_id, failure in partial.items():
        if case_id not in manifest_ids:
            failures.append(failure)
            reasons["missing_from_a_feature_table"] += 1
    have = set(feature_ids)
    unknown = [i for i in feature_ids if i not in manifest_ids]
    if len(unknown) == len(feature_ids):
        raise Rad4XCNNError(
            f"none of the {len(feature_ids)} case ids of the feature table is in the manifest "
            f"(e.g. {', '.join(map(repr, list(feature_ids)[:3]))}; the manifest has e.g. "
            f"{', '.join(map(repr, cohort.case_ids[:3]))}): are the features from another cohort?"
        )
    for case_id in unknown:
        failures.append(CaseFailure(case_id, STAGE, "has features but is not in the manifest"))
        reasons["not_in_manifest"] += 1
    if unknown:
        log.warning("%d case(s) of the feature table are not in the manifest; left out", len(unknown))

    cohorts = cohort.cohorts
    train_cohort = _training_cohort(train_cohort, cohorts)

    usable = []
    for case in cohort.cases:
        if case.case_id in partial:
            failures.append(partial[case.case_id])
            reasons["missing_from_a_feature_table"] += 1
        elif case.case_id not in have and not case.has_lesion:
            reasons["no_lesion"] += 1  # expected: lesion features are not computed without a lesion
        elif case.case_id not in have:
            failures.append(CaseFailure(case.case_id, STAGE, "no features (not in the feature table)"))
            reasons["no_features"] += 1
        elif case.label is None:
            failures.append(CaseFailure(case.case_id, STAGE, "no label"))
            reasons["no_label"] += 1
        elif case.cohort == train_cohort and case.split is None:
            failures.append(CaseFailure(case.case_id, STAGE, "no split"))
            reasons["no_split"] += 1
        else:
            usable.append(case)
    for key, text in (("no_label", "without a label"), ("no_features", "without features")):
        if reasons[key]:
            log.warning("%d case(s) %s left out of classification", reasons[key], text)

    train_cases = [c for c in usable if c.cohort == train_cohort and c.split in train_splits]
    train_name = f"training split (cohort {train_cohort}, {'+'.join(train_splits)})"
    train_labels = sorted({c.label for c in train_cases})
    if not train_cases:
        raise Rad4XCNNError(f"the {train_name} has no labelled case with features")
    if len(train_labels) < 2:
        raise Rad4XCNNError(
            f"the {train_name} has a single class ({train_labels[0]!r}, {len(train_cases)} cases); "
            "classification needs at least two"
        )
    all_labels = sorted({c.label for c in usable})
    positive = _choose_positive(all_labels, positive)
    if positive is not None:
        others = [lab for lab in all_labels if lab != positive]
        classes = [others[0] if len(others) == 1 else f"not-{positive}", positive]

        def index(label: str) -> int | None:
            return int(label == positive)
    else:
        classes = train_labels

        def index(label: str) -> int | None:
            return classes.index(label) if label in classes else None

    y: dict[str, int] = {}
    kept = []
    for case in usable:
        k = index(case.label)
        if k is None:
            failures.append(
                CaseFailure(case.case_id, STAGE, f"label {case.label!r} is not a training class ({classes})")
            )
            reasons["unseen_class"] += 1
            continue
        y[case.case_id] = k
        kept.append(case)

    train = [c.case_id for c in kept if c.cohort == train_cohort and c.split in train_splits]
    train_counts = Counter(y[i] for i in train)
    if len(train_counts) < 2:
        raise Rad4XCNNError(f"the {train_name} has a single class ({classes[next(iter(train_counts))]!r})")
    by_patient = {c.case_id: c.patient for c in kept}
    # folds keep a group whole: a patient, joined with the patients of its near-duplicate images
    by_group = {c.case_id: c.group for c in kept}
    _check_folds(train, y, classes, by_group, cv_folds, train_name)
    evaluations = _evaluation_sets(kept, cohorts, train_cohort, evaluate_on, reasons)
    for name, members in evaluations.items():
        present = {y[i] for i in members}
        if len(present) < 2:
            where = f"the test split of cohort {train_cohort}" if name == INTERNAL_TEST else f"cohort {name}"
            raise Rad4XCNNError(
                f"evaluation set {name} ({where}) has a single class ({classes[present.pop()]!r}, "
                f"{len(members)} cases): AUC, sensitivity and specificity need both classes"
            )
    _refuse_shared_patients(train, evaluations, by_patient, train_name)
    counts = {"train": len(train), **{f"evaluated_on:{k}": len(v) for k, v in evaluations.items()}}
    counts.update({f"left_out:{k}": v for k, v in sorted(reasons.items()) if v})
    return _Design(classes, y, train, evaluations, failures, counts, positive, train_cohort, by_group)


def _training_cohort(train_cohort: str | None, cohorts: Sequence[str]) -> str:
    """The cohort whose train split trains: the one named, else ``internal``, else the only one."""
    if train_cohort is None:
        if DEFAULT_COHORT in cohorts:
            return DEFAULT_COHORT
        if len(cohorts) == 1:
            return cohorts[0]
        raise Rad4XCNNError(
            f"no cohort is named {DEFAULT_COHORT!r}: name the training cohort (one of {', '.join(cohorts)})"
        )
    if train_cohort not in cohorts:
        raise Rad4XCNNError(f"training cohort {train_cohort!r} is not in the manifest ({', '.join(cohorts)})")
    return train_cohort


def _check_folds(train, y, classes, by_patient, cv_folds: int, train_name: str) -> None:
    """Refuse a training split too small for ``cv_folds``-fold (patient-grouped) cross-validation."""
    train_counts = Counter(y[i] for i in train)
    if cv_folds < 2:
        raise Rad4XCNNError(f"cross-validation needs at least 2 folds, got {cv_folds}")
    smallest, n_small = min(train_counts.items(), key=lambda kv: (kv[1], kv[0]))
    if n_small < cv_folds:
        raise Rad4XCNNError(
            f"too few cases for {cv_folds}-fold cross-validation: the {train_name} has {n_small} "
            f"{classes[smallest]!r} case(s), at least {cv_folds} are needed; lower the number of folds "
            f"(--cv-folds) or add cases"
        )
    patients = {k: {by_patient[i] for i in train if y[i] == k} for k in train_counts}
    if len(set(by_patient[i] for i in train)) < len(train):
        k_small, p_small = min(((k, len(v)) for k, v in patients.items()), key=lambda kv: (kv[1], kv[0]))
        if p_small < cv_folds:
            raise Rad4XCNNError(
                f"too few patients for {cv_folds}-fold grouped cross-validation: the {train_name} has "
                f"{p_small} patient(s) (or near-duplicate groups) with {classes[k_small]!r} cases, at least "
                f"{cv_folds} are needed; lower the number of folds (--cv-folds) or add patients"
            )


def _evaluation_sets(kept, cohorts, train_cohort: str, evaluate_on, reasons: Counter) -> dict[str, list[str]]:
    """The evaluation sets: the training cohort's test split, then each other cohort's test or unassigned
    cases (only those of ``evaluate_on`` when given); counts what is left out in ``reasons``."""
    evaluations: dict[str, list[str]] = {}
    internal_test = [c.case_id for c in kept if c.cohort == train_cohort and c.split == "test"]
    if internal_test:
        evaluations[INTERNAL_TEST] = internal_test
    if evaluate_on is not None:
        unknown = [c for c in evaluate_on if c not in cohorts]
        if unknown:
            raise Rad4XCNNError(
                f"evaluation cohort(s) {', '.join(unknown)} not in the manifest ({', '.join(cohorts)})"
            )
        reasons["not_evaluated"] += sum(
            c.cohort != train_cohort and c.cohort not in evaluate_on for c in kept
        )
    for name in cohorts:
        if name != train_cohort and (evaluate_on is None or name in evaluate_on):
            members = [c.case_id for c in kept if c.cohort == name and c.split in ("test", None)]
            reasons["not_held_out"] += sum(c.cohort == name and c.split not in ("test", None) for c in kept)
            if members:
                evaluations[name] = members
    if not evaluations:
        raise Rad4XCNNError(
            f"no held-out case to evaluate on: cohort {train_cohort} has no test split "
            "and there is no other cohort"
        )
    return evaluations


def _refuse_shared_patients(train, evaluations, patient, train_name) -> None:
    """Raise when a patient has cases both in the training data and in an evaluation set."""
    # a case evaluated and trained on (``train_splits`` asked to include ``test``) is the caller's explicit
    # choice, warned about; another case of a trained patient is the leak that nothing else would show
    train_set = set(train)
    trained = {patient[i] for i in train}
    for name, members in evaluations.items():
        reused = [i for i in members if i in train_set]
        if reused:
            log.warning("%d case(s) of evaluation set %s are also training cases", len(reused), name)
        shared = sorted({patient[i] for i in members if i not in train_set} & trained)
        if shared:
            raise Rad4XCNNError(
                f"{len(shared)} patient(s) have cases in the {train_name} and in evaluation set {name}: "
                f"{', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''}; a patient must stay on "
                "one side (leave the split empty to have it assigned by patient)"
            )
