"""Patients: grouped splits keep a patient's images together, explicit splits pull the patient's other
cases along, straddling patients are found, and a manifest without rows says so."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_manifest_rows

from Rad4XCNNLogic.cohort.manifest import (
    Case,
    assign_splits,
    patients_across_splits,
    read_manifest,
    write_manifest,
)
from Rad4XCNNLogic.errors import Rad4XCNNError


def _patient_cases(n_patients=60, seed=0):
    """1 to 4 images per patient, the patient's label on each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cases = []
    for p in range(n_patients):
        label = "malignant" if p % 3 == 0 else "benign"
        for k in range(int(rng.integers(1, 5))):
            cases.append(Case(f"p{p:02d}_{k}", Path("x"), (), label=label, patient_id=f"P{p:02d}"))
    return cases


def test_grouped_split_keeps_every_patient_on_one_side():
    cases = _patient_cases()
    result = assign_splits(cases, fractions=(0.7, 0.1, 0.2), seed=3)
    splits_of = {}
    for c in result:
        splits_of.setdefault(c.patient_id, set()).add(c.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert patients_across_splits(result) == {}
    # proportions hold in cases up to about one patient per label and split
    counts = Counter(c.split for c in result)
    n = len(result)
    for split, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(counts[split] - share * n) <= 8, (split, counts)
    # both classes on each side
    assert {(c.label, c.split) for c in result} >= {("benign", "test"), ("malignant", "test")}


def test_per_case_split_would_have_separated_patients():
    # the same cases without patient ids: images of one patient land on both sides (what grouping prevents)
    cases = [Case(c.case_id, c.image, (), label=c.label) for c in _patient_cases()]
    result = assign_splits(cases, seed=3)
    by_patient = {}
    for c in result:
        by_patient.setdefault(c.case_id.split("_")[0], set()).add(c.split)
    assert any(len(s) > 1 for s in by_patient.values())


def test_without_patient_ids_the_split_is_unchanged():
    cases = [Case(f"c{i:02d}", Path("x"), (), label="ab"[i % 2]) for i in range(30)]
    grouped = assign_splits(
        [Case(c.case_id, c.image, (), label=c.label, patient_id=c.case_id) for c in cases]
    )
    plain = assign_splits(cases)
    assert [c.split for c in grouped] == [c.split for c in plain]


def test_a_given_split_takes_the_patients_other_cases_along():
    cases = _patient_cases(20)
    first = next(i for i, c in enumerate(cases) if c.patient_id == "P05")
    cases[first] = Case(cases[first].case_id, Path("x"), (), label=cases[first].label, split="test",
                        patient_id="P05")  # fmt: skip
    result = assign_splits(cases, seed=0)
    assert {c.split for c in result if c.patient_id == "P05"} == {"test"}


def test_patients_across_splits_lists_the_places():
    cases = [
        Case("a", Path("x"), (), split="train", patient_id="P1"),
        Case("b", Path("x"), (), split="test", patient_id="P1"),
        Case("c", Path("x"), (), split="test", cohort="external", patient_id="P2"),
        Case("d", Path("x"), (), split="train", patient_id="P2"),
        Case("e", Path("x"), (), split="train", patient_id="P3"),
        Case("f", Path("x"), (), split="train", patient_id="P3"),
    ]
    assert patients_across_splits(cases) == {
        "P1": ["internal/test", "internal/train"],
        "P2": ["external/test", "internal/train"],
    }


def test_manifest_patient_column_round_trip_and_warning(tmp_path, make_case, caplog):
    rows = [
        make_case("a", patient_id="P1", split="train"),
        make_case("b", patient_id="P1", split="test"),
        make_case("c", patient_id="P2"),
        make_case("d"),
    ]
    with caplog.at_level("WARNING"):
        cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows))
    assert "1 patient(s) have cases in more than one split" in caplog.text and "P1 (" in caplog.text
    assert [c.patient_id for c in cohort] == ["P1", "P1", "P2", None]
    assert cohort["d"].patient == "d"
    write_manifest(cohort, tmp_path / "out.csv")
    assert pd.read_csv(tmp_path / "out.csv", keep_default_na=False)["patient_id"].tolist() == [
        "P1",
        "P1",
        "P2",
        "",
    ]


def test_manifest_with_a_header_and_no_rows(tmp_path):
    (tmp_path / "m.csv").write_text("case_id,image,mask,label\n")
    with pytest.raises(Rad4XCNNError, match=r"^manifest m\.csv has no cases \(a header and no rows\)$"):
        read_manifest(tmp_path / "m.csv")


def test_label_only_manifest(tmp_path):
    (tmp_path / "m.csv").write_text("case_id,label,cohort\na,x,internal\nb,y,external\n")
    cohort = read_manifest(tmp_path / "m.csv", require_images=False)
    assert cohort.case_ids == ["a", "b"] and cohort.failures == []
    with pytest.raises(Rad4XCNNError, match="lacks the required column"):
        read_manifest(tmp_path / "m.csv")
