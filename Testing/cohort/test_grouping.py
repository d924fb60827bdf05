"""Near-duplicate images as split groups, label conflicts, and the BUSI importer, on a BUSI-shaped folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from busi_like import case_id, make_busi_like

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.busi import SIDE_BY_SIDE, SUBFOLDERS, import_busi
from Rad4XCNNLogic.cohort.grouping import group_and_split, read_grouped, split_groups
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, read_manifest
from Rad4XCNNLogic.cohort.settings import SplitConfig
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.probes import fold_labels

COPY, ORIGINAL = case_id("benign", 7), case_id("benign", 1)
CONFLICT = (case_id("benign", 3), case_id("malignant", 6))


@pytest.fixture(scope="module")
def busi_manifest(tmp_path_factory) -> Path:
    root = make_busi_like(tmp_path_factory.mktemp("busi") / "Dataset_BUSI_with_GT")
    out = root.parent / "busi.csv"
    import_busi(root, out)
    return out


def _unsplit(manifest: Path) -> Cohort:
    return read_manifest(manifest, assign_split=False)


def test_no_cluster_straddles_the_split(busi_manifest):
    for seed in range(6):
        grouping = group_and_split(_unsplit(busi_manifest), SplitConfig(label_conflicts="keep"), seed=seed)
        split = {c.case_id: c.split for c in grouping.cohort}
        assert split[COPY] == split[ORIGINAL] and split[CONFLICT[0]] == split[CONFLICT[1]]
        assert not grouping.across_splits
        group = {c.case_id: c.split_group for c in grouping.cohort}
        assert group[COPY] == group[ORIGINAL] and group[CONFLICT[0]] == group[CONFLICT[1]]
        assert len(set(group.values())) == len(group) - 2
    assert {(p.case_a, p.case_b) for p in grouping.pairs} == {(ORIGINAL, COPY), CONFLICT}
    # off: patients only, and some seed puts the copy on the other side of its original
    off = SplitConfig(group_duplicates=False, label_conflicts="keep")
    straddled = [group_and_split(_unsplit(busi_manifest), off, seed=s).across_splits for s in range(12)]
    assert any(straddled)


def test_patients_and_near_duplicates_join_in_one_group():
    cases = [
        Case(n, Path(n), (), patient_id=p) for n, p in [("a", "P1"), ("b", "P1"), ("c", None), ("d", None)]
    ]
    from Rad4XCNNLogic.cohort.duplicates import DuplicatePair

    groups = split_groups(cases, [DuplicatePair("b", "c", 3, False, "", "")])
    assert groups["a"] == groups["b"] == groups["c"] != groups["d"]


def test_label_conflicts_each_policy(busi_manifest):
    cohort = _unsplit(busi_manifest)
    # train (the default): both into the training split, and listed
    grouping = group_and_split(cohort, seed=3)
    split = {c.case_id: c.split for c in grouping.cohort}
    assert split[CONFLICT[0]] == split[CONFLICT[1]] == "train"
    assert [(p.case_a, p.case_b) for p in grouping.conflicts] == [CONFLICT]
    assert "training split" in grouping.conflict_action
    # keep: listed, left where the split puts them
    kept = group_and_split(cohort, SplitConfig(label_conflicts="keep"), seed=3)
    assert set(CONFLICT) <= set(kept.cohort.case_ids) and len(kept.conflicts) == 1
    # drop: both left out, with the reason
    dropped = group_and_split(cohort, SplitConfig(label_conflicts="drop"), seed=3)
    assert not set(CONFLICT) & set(dropped.cohort.case_ids)
    problems = {f.case_id: f.problem for f in dropped.cohort.failures}
    assert "benign_003 (benign) ~ malignant_006 (malignant), pHash distance" in problems[CONFLICT[1]]
    # stop: one line naming both cases
    with pytest.raises(Rad4XCNNError, match=r"1 label conflict\(s\).*benign_003 \(benign\) ~ malignant_006"):
        group_and_split(cohort, SplitConfig(label_conflicts="stop"))
    # train, the copy in an external cohort: it cannot train, so it is left out of the evaluation
    moved = Cohort([replace(c, cohort="ext") if c.case_id == CONFLICT[1] else c for c in cohort])
    external = group_and_split(moved, seed=3)
    assert CONFLICT[1] not in external.cohort.case_ids
    assert "left out of evaluation" in {f.case_id: f.problem for f in external.cohort.failures}[CONFLICT[1]]


def test_the_runs_cohort_csv_keeps_the_groups(busi_manifest, tmp_path):
    from Rad4XCNNLogic.cohort.grouping import grouping_summary
    from Rad4XCNNLogic.cohort.manifest import write_manifest

    grouping = read_grouped(busi_manifest, seed=1, check_images=True)
    found = grouping_summary(grouping, tmp_path / "duplicates.csv")
    assert found["near_duplicates"] == 2 and len(found["label_conflicts"]) == 1
    table = pd.read_csv(tmp_path / "duplicates.csv")
    assert table["conflict"].tolist() == [False, True] or table["conflict"].tolist() == [True, False]
    assert not table["across_splits"].any() and table["distance"].le(6).all()
    write_manifest(grouping.cohort, tmp_path / "cohort.csv")
    again = read_grouped(tmp_path / "cohort.csv", seed=99)  # splits given: not hashed, groups read back
    assert not again.hashed
    assert {c.case_id: (c.split, c.group) for c in again.cohort} == {
        c.case_id: (c.split, c.group) for c in grouping.cohort
    }


def test_probe_folds_keep_groups_whole():
    groups = ["g0", "g0", "g0", "g1", "g2", "g2", "g3", "g4", "g5", "g5"]
    for seed in range(5):
        labels = fold_labels(len(groups), 3, seed, groups)
        for g in set(groups):
            assert len({labels[i] for i, x in enumerate(groups) if x == g}) == 1
        assert np.bincount(labels).min() >= 2


@pytest.mark.parametrize("layout", ["busi", "masks", "mask"])
def test_import_reads_each_layout_and_mask_mode(tmp_path, layout):
    root = make_busi_like(tmp_path / "archive" / "Dataset_BUSI_with_GT", layout)
    result = import_busi(tmp_path / "archive", tmp_path / "m.csv")  # the folder inside is found
    assert result.layouts == [SIDE_BY_SIDE if layout == "busi" else SUBFOLDERS]
    assert len(result.cohort) == 15 and not result.cohort.failures
    assert result.multi_mask_cases == ["benign_002"]
    assert set(result.mask_modes) == {"1", "L", "RGB", "RGBA"} and result.image_modes == {"RGB": 15}
    cohort = read_manifest(tmp_path / "m.csv", check_images=True)
    assert not cohort.failures and root.is_dir()
    for case in cohort:
        loaded = case.load()
        # an opaque RGBA or an RGB mask would cover the whole image if read as "any channel nonzero"
        assert loaded.mask.mean() < 0.3, case.case_id
        assert loaded.mask.any() == case.has_lesion
    two = cohort["benign_002"].load()
    assert two.mask[1:5, 1:5].all()  # the _mask_1 file, merged as the union


def test_import_command_reports_layout_sizes_and_conflicts(tmp_path, capsys):
    root = make_busi_like(tmp_path / "busi")
    assert main(["import-busi", str(root), "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "layout: BUSI layout" in out and "image sizes: " in out and "mask modes: 1 " in out
    assert "2 near-duplicate pair(s) in 2 cluster(s)" in out
    assert "LABEL CONFLICTS: 1" in out and "benign_003 (benign) ~ malignant_006 (malignant)" in out
    assert main(["cohort", str(tmp_path / "m.csv"), "--label-conflicts", "drop"]) == 0
    out = capsys.readouterr().out
    assert "both cases left out" in out and "13 cases" in out


def test_probe_bootstrap_draws_groups_whole():
    """Held-out cases that are copies of each other are one case for the interval: drawn together, the
    interval is wider than if they were independent."""
    from Rad4XCNNLogic.explain.probes import ridge_probe
    from Rad4XCNNLogic.explain.settings import DEFAULT_PENALTIES

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6))
    y = x[:, :1] + rng.normal(size=(80, 1))
    x_test = np.repeat(x[60:], 2, axis=0)  # 20 held-out scans, each twice
    y_test = np.repeat(y[60:], 2, axis=0)
    pairs = [f"g{i // 2}" for i in range(40)]
    common = dict(penalties=DEFAULT_PENALTIES, folds=4, bootstrap=400, seed=0)
    plain = ridge_probe(x[:60], y[:60], x_test, y_test, **common)
    grouped = ridge_probe(x[:60], y[:60], x_test, y_test, test_groups=pairs, **common)
    assert plain.r2[0] == grouped.r2[0]
    assert grouped.ci_high[0] - grouped.ci_low[0] > 1.2 * (plain.ci_high[0] - plain.ci_low[0])


def test_a_chain_of_near_duplicates_is_one_group_and_warned_about(caplog):
    from Rad4XCNNLogic.cohort.duplicates import ImageHashes

    rng = np.random.default_rng(0)
    chain = [(1 << k) - 1 for k in range(12)]  # each one bit from the next: a ~ b ~ c ...
    others = [int(v) for v in rng.integers(0, 2**63, size=18, dtype=np.int64)]
    hashes = [ImageHashes(f"c{i:02d}", h, str(i)) for i, h in enumerate(chain + others)]
    cases = [
        Case(h.case_id, Path("x"), (), label="benign" if i % 2 else "malignant") for i, h in enumerate(hashes)
    ]
    grouping = group_and_split(Cohort(cases), SplitConfig(label_conflicts="keep"), hashes=hashes)
    assert len({c.split_group for c in grouping.cohort if c.case_id < "c12"}) == 1
    assert len({c.split for c in grouping.cohort if c.case_id < "c12"}) == 1
    assert grouping.largest_group == 12 and "one split group holds 12 cases" in grouping.text()
    assert "chained near-duplicates" in caplog.text
