"""The paper's protocol through 'rad4xcnn run': two training phases by cohort of one manifest, classifiers
on the in-house cohort, external validation on the third cohort only, paired comparisons in the report; and
a training image found in an evaluation set stopping the run before any work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from Rad4XCNNLogic.classify.comparisons import COMPARISON_COLUMNS
from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.config import config_from_dict
from Rad4XCNNLogic.run.runner import run_pipeline


@pytest.fixture(scope="module")
def three_cohorts(tmp_path_factory) -> Path:
    """48 internal cases made into BUSI-like and in-house halves, and 12 external cases; absolute paths."""
    folder = tmp_path_factory.mktemp("protocol_cohort")
    manifest = make_synthetic_cohort(folder, n=48, n_external=12, seed=5, shape=(96, 128))
    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for column in ("image", "mask"):
        rows[column] = [str(folder / p) for p in rows[column]]
    internal = rows.index[rows["cohort"] == "internal"]
    rows.loc[internal[::2], "cohort"] = "busi"
    rows.loc[internal[1::2], "cohort"] = "palermo"
    rows["split"] = ""
    path = folder / "three.csv"
    rows.to_csv(path, index=False)
    return path


def _config(manifest: Path, out: Path, **changes):
    data = {
        "manifest": str(manifest),
        "out": str(out),
        "device": "cpu",
        "split": {"train_cohort": "palermo"},
        "training": {"pretrained": False, "epochs": 1, "batch_size": 8, "input_size": 64, "patience": 1,
                     "phases": ["busi", "palermo"]},
        "models": [{"name": "resnet18", "weights": "trained"}],
        "deep": {"input_size": 64},
        "radiomics": {"jobs": 1},
        "explain": {"thresholds": [0.6], "fdr": None, "permutations": 0, "bootstrap": 0},
        "classification": {"classifiers": ["svm"], "cv_folds": 2, "n_bootstrap": 50, "repeated_splits": 3},
        "cam": {"enabled": False},
    }  # fmt: skip
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return config_from_dict(data)


def test_two_phases_then_classifiers_on_the_inhouse_cohort(three_cohorts, tmp_path):
    config = _config(three_cohorts, tmp_path / "run")
    result = run_pipeline(config, progress=False)
    assert result.ok, [r.line() for r in result.stages.values()]
    out = tmp_path / "run"
    cohort_summary = result.stages["cohort"].summary
    assert cohort_summary["near_duplicates_across_splits"] == []  # 60 different synthetic images
    history = pd.read_csv(out / "training_history.csv")
    assert list(dict.fromkeys(history["phase"])) == ["train", "finetune"]
    cohort = pd.read_csv(out / "cohort.csv", dtype=str, keep_default_na=False)
    assert set(cohort.loc[cohort["cohort"] == "busi", "split"]) == {"train", "val", "test"}
    metrics = pd.read_csv(out / "classification.csv")
    # BUSI trained the network: it is not an external validation set
    assert set(metrics["evaluated_on"]) == {"internal-test", "external"}
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert list(comparisons.columns) == list(COMPARISON_COLUMNS) and len(comparisons) > 0
    html = (out / "report.html").read_text()
    assert "Paired comparisons" in html and "forest plot of the paired comparisons" in html
    assert "as measured here" in html and "deep features classify better than radiomic features" in html
    # near-duplicates: none here, recorded as such; split luck over repeated grouped splits
    assert pd.read_csv(out / "duplicates.csv").empty and cohort_summary["label_conflicts"] == []
    assert cohort["split_group"].ne("").all()
    repeated = pd.read_csv(out / "repeated_splits.csv")
    assert set(repeated["grouping"]) == {"grouped"} and repeated["seed"].nunique() == 3
    assert repeated["auc"].notna().all()
    assert "Split luck and leakage" in html and "fine-tuned on the headline split" in html
    assert "No near-duplicate images were found." in html


def test_a_training_image_in_an_evaluation_set_stops_the_run(three_cohorts, tmp_path):
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    rows = pd.read_csv(three_cohorts, dtype=str, keep_default_na=False)
    # the run splits BUSI and the in-house cohort with seed 0: take a case of BUSI's training split
    split = read_manifest(three_cohorts, train_cohort=["palermo", "busi"], seed=0)
    source_id = next(c.case_id for c in split if c.cohort == "busi" and c.split == "train")
    source = rows.set_index("case_id").loc[source_id]
    copy = tmp_path / "renamed.png"
    shutil.copy(source["image"], copy)
    extra = {**source.to_dict(), "case_id": "ext_renamed", "image": str(copy), "cohort": "external"}
    manifest = tmp_path / "leaky.csv"
    pd.concat([rows, pd.DataFrame([extra])]).to_csv(manifest, index=False)
    with pytest.raises(Rad4XCNNError) as stopped:
        run_pipeline(_config(manifest, tmp_path / "run"), progress=False)
    message = str(stopped.value)
    assert message.startswith("leakage: 1 evaluation case(s) were used to train the network: ")
    assert f"{source_id} = ext_renamed (same image, in external)" in message and "\n" not in message
    assert not (tmp_path / "run" / "deep_features.csv").exists()
    assert not (tmp_path / "run" / "models").exists()
