"""The paper's protocol over one manifest: phases by cohort, the evaluation sets, and the leakage check that
stops a run when a training case - by id or by image - is scored as held out."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.cohort.protocol import (
    INTERNAL_TEST,
    Protocol,
    TrainingPhase,
    check_no_leakage,
    find_leaks,
)
from Rad4XCNNLogic.errors import Rad4XCNNError

PAPER = Protocol((TrainingPhase("busi"), TrainingPhase("palermo")), classification_cohort="palermo")


@pytest.fixture
def three_cohorts(synthetic_manifest, tmp_path):
    """The synthetic cohort as three: 12 BUSI-like, 12 in-house (palermo), 6 external, no splits given."""
    rows = pd.read_csv(synthetic_manifest, dtype=str, keep_default_na=False)
    folder = synthetic_manifest.parent
    for column in ("image", "mask"):
        rows[column] = [str(folder / p) for p in rows[column]]
    internal = rows.index[rows["cohort"] == "internal"]
    rows.loc[internal[::2], "cohort"] = "busi"
    rows.loc[internal[1::2], "cohort"] = "palermo"
    rows["split"] = ""
    path = tmp_path / "manifest.csv"
    rows.to_csv(path, index=False)
    return path, rows


def _read(path, protocol=PAPER):
    return read_manifest(path, train_cohort=protocol.split_cohorts(), seed=0)


def test_the_paper_protocol_passes_and_names_its_sets(three_cohorts):
    path, _ = three_cohorts
    cohort = _read(path)
    assert PAPER.split_cohorts() == ["palermo", "busi"]
    # both training cohorts are split; the external cohort is test data only
    assert {c.split for c in cohort if c.cohort == "busi"} == {"train", "val", "test"}
    assert {c.split for c in cohort if c.cohort == "external"} == {"test"}
    sets = PAPER.evaluation_sets(cohort)
    assert list(sets) == [INTERNAL_TEST, "external"]
    assert {c.cohort for c in sets[INTERNAL_TEST]} == {"palermo"} and len(sets["external"]) == 6
    trained = PAPER.trained_cases(cohort)
    used = {(c.cohort, c.split) for c in trained}
    assert used <= {("busi", "train"), ("busi", "val"), ("palermo", "train"), ("palermo", "val")}
    hashes = check_no_leakage(PAPER, cohort)
    assert len(hashes) == len(trained) + sum(map(len, sets.values()))


def test_a_phase_that_trains_on_test_cases_stops_the_run(three_cohorts):
    path, _ = three_cohorts
    greedy = Protocol((TrainingPhase("busi"), TrainingPhase("palermo", ("train", "val", "test"))), "palermo")
    cohort = _read(path, greedy)
    tested = sorted(c.case_id for c in cohort if c.cohort == "palermo" and c.split == "test")
    with pytest.raises(Rad4XCNNError) as info:
        check_no_leakage(greedy, cohort, hash_images=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"leakage: {len(tested)} evaluation case(s) were used to train the network: ")
    assert f"{tested[0]} (in {INTERNAL_TEST})" in message
    # a phase on the external cohort, evaluated by default? no: a trained cohort is not evaluated...
    ext = Protocol((TrainingPhase("external"),), "palermo")
    assert "external" not in ext.evaluation_sets(_read(path, ext))
    # ...unless asked for, and then the check refuses it
    asked = Protocol(
        (TrainingPhase("external", ("train", "val", "test")),), "palermo", evaluate_on=("external",)
    )
    with pytest.raises(Rad4XCNNError, match=r"in external\)"):
        check_no_leakage(asked, _read(path, asked), hash_images=False)


def test_the_same_image_under_another_id_stops_the_run(three_cohorts, tmp_path):
    path, rows = three_cohorts
    cohort = _read(path)
    source = next(c for c in cohort if c.cohort == "busi" and c.split == "train")
    copy = tmp_path / "renamed.png"
    shutil.copy(source.image, copy)
    extra = {"case_id": "ext_copy", "image": str(copy), "mask": str(source.masks[0]), "label": source.label,
             "split": "", "cohort": "external"}  # fmt: skip
    pd.concat([rows, pd.DataFrame([extra])]).to_csv(path, index=False)
    cohort = _read(path)
    with pytest.raises(Rad4XCNNError, match=rf"{source.case_id} = ext_copy \(same image, in external\)"):
        check_no_leakage(PAPER, cohort)
    # without reading images only the ids are compared: this leak would pass unseen
    check_no_leakage(PAPER, cohort, hash_images=False)


def test_a_second_fine_tuning_manifest_goes_through_the_same_check(three_cohorts, tmp_path):
    path, _ = three_cohorts
    cohort = _read(path)
    held_out = next(c for c in cohort if c.cohort == "external")
    copy = tmp_path / "second.png"
    shutil.copy(held_out.image, copy)
    second = pd.DataFrame([{"case_id": held_out.case_id, "image": str(copy), "mask": str(held_out.masks[0]),
                            "label": held_out.label, "split": "train"}])  # fmt: skip
    second.to_csv(tmp_path / "second.csv", index=False)
    other = read_manifest(tmp_path / "second.csv")
    with pytest.raises(Rad4XCNNError, match=r"\(fine-tuning manifest\) = .*same image, in external"):
        check_no_leakage(PAPER, cohort, extra_trained=other.cases)
    # the same id with another image is not a leak: ids of another manifest mean nothing here
    other_image = next(c for c in cohort if c.cohort == "busi")
    second.assign(image=str(other_image.image), mask=str(other_image.masks[0])).to_csv(
        tmp_path / "second.csv", index=False
    )
    other = read_manifest(tmp_path / "second.csv")
    check_no_leakage(Protocol((), "palermo"), cohort, extra_trained=other.cases)


def test_phase_specs_and_bad_protocols(three_cohorts):
    assert TrainingPhase.parse("busi") == TrainingPhase("busi", ("train", "val"))
    assert TrainingPhase.parse({"cohort": "p", "splits": ["train"]}).splits == ("train",)
    with pytest.raises(Rad4XCNNError, match="a training phase needs a cohort"):
        TrainingPhase.parse({"splits": ["train"]})
    with pytest.raises(Rad4XCNNError, match="unknown split"):
        TrainingPhase.parse({"cohort": "p", "splits": ["holdout"]})
    with pytest.raises(Rad4XCNNError, match="unknown key"):
        TrainingPhase.parse({"cohort": "p", "epochs": 3})
    path, _ = three_cohorts
    cohort = _read(path)
    with pytest.raises(Rad4XCNNError, match="protocol: cohort 'inhouse' is not in the manifest"):
        Protocol((TrainingPhase("inhouse"),), "palermo").check_cohorts(cohort.cohorts)
    with pytest.raises(Rad4XCNNError, match=r"evaluation cohort\(s\) mars not in the manifest"):
        Protocol((), "palermo", evaluate_on=("mars",)).evaluation_cohorts(cohort.cohorts)
    assert find_leaks([], {"x": list(cohort)}) == []
