"""The manifest: reading, every bad input, writing, and the seeded stratified split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import write_manifest_rows, write_png

from Rad4XCNNLogic.cohort.manifest import Case, assign_splits, format_summary, read_manifest, write_manifest
from Rad4XCNNLogic.errors import Rad4XCNNError


def _problems(cohort):
    return {f.case_id: f.problem for f in cohort.failures}


def test_good_manifest_loads_with_resolved_paths(tmp_path, make_case):
    rows = [make_case("a", "benign"), make_case("b", "malignant", split="test", cohort="siteB")]
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows), check_images=True)
    assert cohort.case_ids == ["a", "b"]
    assert cohort.failures == []
    a = cohort["a"]
    assert a.image == tmp_path / "img" / "a.png" and a.image.is_file()
    assert a.cohort == "internal" and a.has_lesion
    assert cohort["b"].split == "test" and cohort["b"].cohort == "siteB"
    loaded = a.load()
    assert loaded.mask.sum() == 20 * 30
    assert loaded.image.shape == loaded.mask.shape == (60, 80)


def test_missing_required_column_is_one_clear_error(tmp_path, make_case):
    rows = [make_case("a")]
    for r in rows:
        del r["mask"]
    with pytest.raises(Rad4XCNNError, match=r"lacks the required column\(s\) mask; found: case_id, image"):
        read_manifest(write_manifest_rows(tmp_path / "m.csv", rows))


def test_unreadable_manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    with pytest.raises(Rad4XCNNError, match="not a readable UTF-8 CSV"):
        read_manifest(path)
    with pytest.raises(Rad4XCNNError, match="manifest not found"):
        read_manifest(tmp_path / "absent.csv")


def test_bad_cases_are_reported_and_good_cases_load(tmp_path, make_case):
    good = make_case("good")
    dup1, dup2 = make_case("dup"), make_case("dup")
    bad_split = make_case("badsplit", split="trian")
    missing = make_case("missing")
    missing["image"] = "img/does_not_exist.png"
    unreadable = make_case("unreadable")
    (tmp_path / "img" / "unreadable.png").write_bytes(b"not an image at all")
    wrong_size = make_case("wrongsize")
    write_png(tmp_path / "msk" / "wrongsize_mask.png", np.zeros((61, 80), np.uint8) + 255)
    empty = make_case("empty")
    write_png(tmp_path / "msk" / "empty_mask.png", np.zeros((60, 80), np.uint8))
    nonbinary = make_case("nonbinary")
    nb = np.zeros((60, 80), np.uint8)
    nb[:10] = 100
    nb[10:20] = 200
    write_png(tmp_path / "msk" / "nonbinary_mask.png", nb)
    normal = make_case("normal", label="normal", has_lesion="false")
    write_png(tmp_path / "msk" / "normal_mask.png", np.zeros((60, 80), np.uint8))
    no_id = make_case("x")
    no_id["case_id"] = ""
    rows = [good, dup1, dup2, bad_split, missing, unreadable, wrong_size, empty, nonbinary, normal, no_id]
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows), check_images=True)
    assert cohort.case_ids == ["good", "normal"]
    problems = _problems(cohort)
    assert "duplicate case_id (2 rows use it" in problems["dup"]
    assert problems["badsplit"].startswith("unknown split 'trian'")
    assert problems["missing"].startswith("image file not found")
    assert problems["unreadable"].startswith("cannot read image unreadable.png")
    assert "has size 80x61 but the image is 80x60" in problems["wrongsize"]
    assert problems["empty"].startswith("mask is empty")
    assert "is not binary" in problems["nonbinary"]
    assert problems["row12"] == "row 12 has an empty case_id"
    assert all("\n" not in p for p in problems.values())
    assert not cohort["normal"].has_lesion
    assert cohort.lesion_cases().case_ids == ["good"]


def test_without_image_check_only_file_existence_is_checked(tmp_path, make_case):
    empty = make_case("empty")
    write_png(tmp_path / "msk" / "empty_mask.png", np.zeros((60, 80), np.uint8))
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", [empty]))
    assert cohort.case_ids == ["empty"]
    with pytest.raises(Rad4XCNNError, match=r"^case empty: mask is empty"):
        cohort["empty"].load()


def test_several_mask_files_are_merged(tmp_path, make_case):
    row = make_case("a", box=(5, 5, 10, 10))
    extra = np.zeros((60, 80), np.uint8)
    extra[40:50, 40:60] = 255
    write_png(tmp_path / "msk" / "a_mask_1.png", extra)
    row["mask"] = "msk/a_mask.png; msk/a_mask_1.png"
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", [row]), check_images=True)
    assert len(cohort["a"].masks) == 2
    assert cohort["a"].load().mask.sum() == 25 + 200


def test_write_then_read_round_trip(tmp_path, make_case):
    rows = [make_case(f"c{i}", "benign" if i % 2 else "malignant") for i in range(6)]
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows), seed=4)
    out = tmp_path / "sub" / "again.csv"
    write_manifest(cohort, out)
    text = pd.read_csv(out, dtype=str)
    assert text["image"].iloc[0] == "../img/c0.png"
    again = read_manifest(out)
    assert [(c.case_id, c.label, c.split, c.image) for c in again] == [
        (c.case_id, c.label, c.split, c.image) for c in cohort
    ]


def _cases(n_benign, n_malignant, cohort="internal"):
    return [
        Case(f"b{i:03d}", image=None, masks=(), label="benign", cohort=cohort) for i in range(n_benign)
    ] + [
        Case(f"m{i:03d}", image=None, masks=(), label="malignant", cohort=cohort) for i in range(n_malignant)
    ]


def test_split_is_stratified_and_exact():
    cases = assign_splits(_cases(70, 30), fractions=(0.7, 0.1, 0.2), seed=0)
    counts = Counter((c.label, c.split) for c in cases)
    assert counts == {
        ("benign", "train"): 49,
        ("benign", "val"): 7,
        ("benign", "test"): 14,
        ("malignant", "train"): 21,
        ("malignant", "val"): 3,
        ("malignant", "test"): 6,
    }
    assert all(c.split_assigned for c in cases)


def test_split_is_deterministic_and_independent_of_row_order():
    cases = _cases(40, 25)
    a = {c.case_id: c.split for c in assign_splits(cases, seed=7)}
    b = {c.case_id: c.split for c in assign_splits(list(reversed(cases)), seed=7)}
    c = {c.case_id: c.split for c in assign_splits(cases, seed=8)}
    assert a == b
    assert a != c


def test_given_splits_are_kept_and_external_cases_are_test():
    cases = _cases(10, 10) + _cases(3, 3, cohort="external")
    cases[0] = Case("b000", image=None, masks=(), label="benign", split="val")
    result = assign_splits(cases, seed=0)
    assert result[0].split == "val" and not result[0].split_assigned
    assert {c.split for c in result if c.cohort == "external"} == {"test"}


def test_bad_fractions_are_refused():
    with pytest.raises(Rad4XCNNError, match="three non-negative numbers"):
        assign_splits(_cases(3, 3), fractions=(0.5, 0.5))


def test_summary_lists_counts_and_failures(synthetic_manifest):
    cohort = read_manifest(synthetic_manifest)
    text = format_summary(cohort)
    assert "30 cases (30 with a lesion), 0 left out" in text
    assert "external" in text and "internal" in text
