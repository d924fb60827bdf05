"""Any feature table classifies: unrecognised numeric columns form a set named after the file (or NAME=FILE),
text columns and manifest columns are not features, and a table without numbers is a one-line error."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.classify.classifiers import classify
from Rad4XCNNLogic.classify.settings import ClassificationConfig
from Rad4XCNNLogic.classify.tables import (
    OTHER_SETS_KEY,
    parse_feature_source,
    read_feature_tables,
    resolve_feature_sets,
)
from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.errors import Rad4XCNNError

QUICK = {"progress": False}
QUICK_SETTINGS = ClassificationConfig(n_bootstrap=100, jobs=1, cv_folds=3)


@pytest.fixture(scope="module")
def wdbc(tmp_path_factory):
    """sklearn's bundled Wisconsin table written as a new user has it: its own column names, a label-only
    manifest (case_id, label, cohort; no images)."""
    from sklearn.datasets import load_breast_cancer

    folder = tmp_path_factory.mktemp("wdbc")
    data = load_breast_cancer(as_frame=True)
    table = data.data.copy()
    table.insert(0, "case_id", [f"p{i:03d}" for i in range(len(table))])
    table.to_csv(folder / "wdbc.csv", index=False)
    rng = np.random.default_rng(0)
    manifest = pd.DataFrame(
        {
            "case_id": table["case_id"],
            "label": np.where(data.target == 0, "malignant", "benign"),
            "cohort": np.where(rng.random(len(table)) < 0.2, "external", "internal"),
        }
    )
    manifest.to_csv(folder / "labels.csv", index=False)
    return folder


def test_parse_feature_source(tmp_path):
    assert parse_feature_source("clinical=a/b.csv") == ("clinical", pd.io.common.Path("a/b.csv"))
    assert parse_feature_source(("x", "t.csv"))[0] == "x"
    odd = tmp_path / "a=b.csv"
    odd.write_text("case_id,v\n1,2\n")
    assert parse_feature_source(str(odd)) == (None, odd)  # an existing file wins over NAME=FILE
    assert parse_feature_source("dir/x=y.csv")[0] is None


def test_generic_table_classifies_as_a_set_named_after_the_file(wdbc):
    frame, failures = read_feature_tables([wdbc / "wdbc.csv"])
    assert failures == [] and frame.shape == (569, 30)
    assert set(frame.attrs[OTHER_SETS_KEY].values()) == {"wdbc"}
    cohort = read_manifest(wdbc / "labels.csv", require_images=False)
    assert len(cohort) == 569 and cohort.failures == []
    result = classify(frame, cohort, replace(QUICK_SETTINGS, classifiers=("svm",)), **QUICK)
    assert list(result.feature_sets) == ["wdbc"] and len(result.feature_sets["wdbc"]) == 30
    assert (result.metrics["auc"] > 0.95).all()  # published AUCs on this table are about 0.99


def test_named_table_joins_deep_features(wdbc, tmp_path):
    frame = pd.read_csv(wdbc / "wdbc.csv")
    frame[["case_id", "mean radius", "mean texture"]].to_csv(tmp_path / "clin.csv", index=False)
    deep = frame[["case_id", "worst area", "worst concave points"]].set_axis(
        ["case_id", "cnn_0", "cnn_1"], axis=1
    )
    deep.to_csv(tmp_path / "deep_features.csv", index=False)
    joined, _ = read_feature_tables([tmp_path / "deep_features.csv", f"clinical={tmp_path / 'clin.csv'}"])
    sets = resolve_feature_sets(joined)
    assert sets == {"deep": ["cnn_0", "cnn_1"], "clinical": ["mean radius", "mean texture"]}


def test_text_and_manifest_columns_are_not_features(tmp_path, caplog):
    pd.DataFrame({"case_id": ["a", "b"], "site": ["x", "y"], "age": [50, 60], "label": [0, 1]}).to_csv(
        tmp_path / "clin.csv", index=False
    )
    frame, _ = read_feature_tables([tmp_path / "clin.csv"])
    assert list(frame.columns) == ["age", "label"]
    with caplog.at_level("WARNING"):
        assert resolve_feature_sets(frame) == {"clin": ["age"]}
    assert "manifest column(s) in the feature table are not features: label" in caplog.text


def test_table_without_numbers_is_a_one_line_error(tmp_path, capsys):
    pd.DataFrame({"case_id": ["a", "b"], "site": ["x", "y"], "sex": ["f", "m"]}).to_csv(
        tmp_path / "notes.csv", index=False
    )
    with pytest.raises(
        Rad4XCNNError, match=r"^feature table notes\.csv has no numeric column \(found: site, sex\)$"
    ):
        read_feature_tables([tmp_path / "notes.csv"])
    pd.DataFrame({"case_id": ["a"], "image": ["i"], "mask": ["m"], "label": ["x"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    code = main(["classify", "--features", str(tmp_path / "notes.csv"), "--manifest", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "notes.csv has no numeric column" in err


def test_a_file_stem_may_not_take_a_default_set_name(tmp_path):
    pd.DataFrame({"case_id": ["a"], "resnet50_0": [1.0], "age": [3.0]}).to_csv(
        tmp_path / "deep.csv", index=False
    )
    frame, _ = read_feature_tables([tmp_path / "deep.csv"])
    with pytest.raises(Rad4XCNNError, match="feature set name 'deep' is taken by a default set"):
        resolve_feature_sets(frame)
    frame, _ = read_feature_tables([f"clinical={tmp_path / 'deep.csv'}"])
    assert resolve_feature_sets(frame) == {"deep": ["resnet50_0"], "clinical": ["age"]}


def test_cli_classify_with_a_named_generic_table(wdbc, tmp_path, capsys):
    labels = pd.read_csv(wdbc / "labels.csv").assign(image="x.png", mask="x_mask.png")
    labels.to_csv(tmp_path / "manifest.csv", index=False)
    code = main(["classify", "--features", f"wisconsin={wdbc / 'wdbc.csv'}", "--manifest",
                 str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "out"), "--classifiers", "svm",
                 "--cv-folds", "3", "--bootstrap", "50", "--jobs", "1"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "out" / "classification.csv")
    assert set(table["feature_set"]) == {"wisconsin"} and (table["auc"] > 0.95).all()


def test_cli_classify_with_a_label_only_manifest_and_evaluate_on(wdbc, tmp_path, capsys):
    code = main(["classify", "--features", str(wdbc / "wdbc.csv"), "--manifest", str(wdbc / "labels.csv"),
                 "--out", str(tmp_path / "out"), "--classifiers", "svm", "--cv-folds", "3",
                 "--bootstrap", "50", "--jobs", "1", "--evaluate-on", "external"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "out" / "classification.csv")
    assert set(table["evaluated_on"]) == {"internal-test", "external"}
    assert "wrote" in capsys.readouterr().out


def _column_groups(wdbc, tmp_path) -> list[str]:
    """The Wisconsin table's "mean", "worst" and "error" columns as three feature tables, NAME=FILE each."""
    table = pd.read_csv(wdbc / "wdbc.csv", dtype={"case_id": str})
    sources = []
    for name, pick in (("means", "mean "), ("worst", "worst "), ("error", " error")):
        columns = [c for c in table.columns if pick in c]
        assert len(columns) == 10
        table[["case_id", *columns]].to_csv(tmp_path / f"{name}.csv", index=False)
        sources.append(f"{name}={tmp_path / f'{name}.csv'}")
    return sources


def test_cli_compares_tables_a_user_names(wdbc, tmp_path, capsys):
    # set names imply no comparison (no deep, no radiomic): every pair is compared, Holm-adjusted together
    sources = _column_groups(wdbc, tmp_path)
    quick = ["--manifest", str(wdbc / "labels.csv"), "--classifiers", "svm", "--cv-folds", "3",
             "--bootstrap", "50", "--jobs", "1"]  # fmt: skip
    code = main(["classify", "--features", *sources[:2], "--out", str(tmp_path / "two"), *quick])
    assert code == 0
    table = pd.read_csv(tmp_path / "two" / "comparisons.csv")
    assert table[["set_a", "set_b", "family"]].drop_duplicates().values.tolist() == [
        ["means", "worst", "all-pairs"]
    ]
    assert len(table) == 2 and (table["family_size"] == 1).all()  # one pair on each of two evaluation sets
    assert (table["p_holm"] == table["p_delong"]).all()  # a family of one: nothing to adjust
    # pairs a user names replace the default; the difference is A - B
    code = main(["classify", "--features", *sources, "--out", str(tmp_path / "named"), *quick,
                 "--compare", "error:worst"])  # fmt: skip
    table = pd.read_csv(tmp_path / "named" / "comparisons.csv")
    assert code == 0 and table[["set_a", "set_b", "family"]].drop_duplicates().values.tolist() == [
        ["error", "worst", "named"]
    ]
    assert "paired comparisons: 2 in 2 famil(ies)" in capsys.readouterr().out
    code = main(["classify", "--features", *sources, "--out", str(tmp_path / "bad"), *quick,
                 "--compare", "means:wrst"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "no feature set 'wrst'; the sets are means, worst, error" in err
    assert not (tmp_path / "bad" / "classification.csv").exists()  # refused before any model is fitted
