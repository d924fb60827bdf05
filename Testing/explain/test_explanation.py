"""Explanations: the |rho| >= M rule recovers planted relations; families, coverage, importance,
replicability, the output files and the ``rad4xcnn explain`` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.explanation import (
    coverage_curve,
    explain,
    load_explanation,
    rank_by_importance,
    replicate,
    write_explanation,
)
from Rad4XCNNLogic.explain.glossary import family_of
from Rad4XCNNLogic.explain.settings import ExplainConfig
from Rad4XCNNLogic.names import model_of, parse_radiomic_name

IMAGE_TYPES = ("original", "wavelet-LL", "wavelet-HL", "wavelet-LH", "wavelet-HH")
FEATURES = (
    ("firstorder", "Mean"),
    ("firstorder", "Entropy"),
    ("glcm", "Contrast"),
    ("glcm", "Idm"),
    ("glszm", "ZoneEntropy"),
    ("glrlm", "RunEntropy"),
    ("gldm", "DependenceEntropy"),
    ("ngtdm", "Busyness"),
)
RADIOMIC_NAMES = [f"{it}_{c}_{f}" for it in IMAGE_TYPES for c, f in FEATURES]  # 40 features


def planted(n=300, n_deep=60, n_planted=20, noise=0.3, seed=0, cases=None, radiomics=None):
    """Independent radiomic features; deep feature k < n_planted = ReLU(f_k(radiomic j_k) + noise).

    Each f is a different monotone function, so only the rank relation is planted; the rest of the deep
    features are ReLU'd noise (with many tied zeros), and one is a dead unit.
    """
    rng = np.random.default_rng(seed)
    cases = cases if cases is not None else [f"case{i:04d}" for i in range(n)]
    rad = (
        radiomics
        if radiomics is not None
        else pd.DataFrame(
            rng.normal(size=(len(cases), len(RADIOMIC_NAMES))), index=cases, columns=RADIOMIC_NAMES
        )
    )
    functions = (
        lambda v: np.exp(v / 2),
        lambda v: np.tanh(v / 2),
        lambda v: v**3 + v,
        np.negative,
        np.arcsinh,
    )
    deep, truth = {}, set()
    for k in range(n_deep):
        name = f"resnet50_{k}"
        if k < n_planted:
            j = (7 * k) % len(RADIOMIC_NAMES)
            signal = functions[k % len(functions)](rad.iloc[:, j].to_numpy())
            signal = (signal - signal.mean()) / signal.std()
            deep[name] = np.maximum(signal + noise * rng.normal(size=len(cases)) + 1.0, 0)
            truth.add((name, RADIOMIC_NAMES[j]))
        elif k == n_deep - 1:
            deep[name] = np.zeros(len(cases))
        else:
            deep[name] = np.maximum(rng.normal(size=len(cases)), 0)
    return pd.DataFrame(deep, index=cases), rad, truth


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def result(data):
    deep, rad, _ = data
    return explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.6], fdr=0.05, permutations=200, bootstrap=100, backend="numpy"),
        seed=1,
    )


# ------------------------------------------------------------------------------------------- the rule
def test_planted_relations_are_recovered(result, data):
    _, _, truth = data
    found = set(
        zip(result.correlations["deep_feature"], result.correlations["radiomic_feature"], strict=True)
    )
    precision = len(found & truth) / len(found)
    recall = len(found & truth) / len(truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_kept_pairs_obey_the_rule_and_carry_their_statistics(result):
    table = result.correlations
    assert list(table.columns[:5]) == ["deep_feature", "radiomic_feature", "rho", "p", "q"]
    assert (table["rho"].abs() >= 0.6).all() and (table["q"] <= 0.05).all()
    assert (table["ci_low"] <= table["rho"]).all() and (table["rho"] <= table["ci_high"]).all()
    assert (table["p_fwer"] <= 1 / 201 + 1e-12).all()  # strong pairs beat every one of 200 shuffles
    row = table.iloc[0]
    assert (row["image_type"], row["feature_class"]) == tuple(row["radiomic_feature"].split("_")[:2])
    assert row["family"] in {f"{it} {cat}" for it in IMAGE_TYPES for cat in ("first-order", "texture")}
    assert row["meaning"] and ":" in row["meaning"]
    assert result.permutation_threshold < 0.6 and result.suggested_M <= 0.6
    assert result.cases_used[:2] == ["case0000", "case0001"] and result.dropped_cases == {}


def test_fdr_is_optional_and_only_removes_pairs(data):
    deep, rad, _ = data
    loose = explain(
        deep, rad, ExplainConfig(thresholds=[0.15], bootstrap=0, backend="numpy", fdr=None, permutations=0)
    )
    strict = explain(
        deep, rad, ExplainConfig(thresholds=[0.15], fdr=0.01, bootstrap=0, backend="numpy", permutations=0)
    )
    assert len(strict.correlations) < len(loose.correlations)
    assert (strict.correlations["q"] <= 0.01).all()
    assert set(strict.correlations["radiomic_feature"] + strict.correlations["deep_feature"]) <= set(
        loose.correlations["radiomic_feature"] + loose.correlations["deep_feature"]
    )


def test_explanations_have_one_row_per_deep_feature(result, data):
    deep, _, _ = data
    table = result.explanations
    assert list(table.index) == list(deep.columns)
    assert table.loc["resnet50_59", "status"] == "zero variance"
    assert result.zero_variance["deep"] == ["resnet50_59"]
    unexplained = table[table["status"] == "unexplained"]
    assert (unexplained["n_partners"] == 0).all() and unexplained["summary"].str.startswith(
        "no radiomic"
    ).all()
    explained = table[table["status"] == "explained"]
    assert len(explained) == result.n_explained >= 19
    name = explained.index[0]
    partners = result.correlations[result.correlations["deep_feature"] == name]
    assert explained.loc[name, "n_partners"] == len(partners)
    assert (
        explained.loc[name, "strongest_partner"]
        == partners.iloc[partners["rho"].abs().argmax()]["radiomic_feature"]
    )


def test_family_summary_counts_partners_by_family():
    rng = np.random.default_rng(3)
    n = 200
    base = rng.normal(size=n)
    names = [
        "wavelet-HL_glcm_Contrast",
        "wavelet-HL_glszm_ZoneEntropy",
        "wavelet-HL_firstorder_Mean",
        "original_glcm_Contrast",
        "original_shape2D_Sphericity",
    ]
    rad = pd.DataFrame({name: base + 0.1 * rng.normal(size=n) for name in names[:4]})
    rad[names[4]] = rng.normal(size=n)
    rad["original_glcm_Contrast"] = base + 0.01 * rng.normal(size=n)  # the strongest partner
    deep = pd.DataFrame({"densenet121_4": base, "densenet121_5": rng.normal(size=n)})
    result = explain(
        deep, rad, ExplainConfig(thresholds=[0.6], bootstrap=0, backend="numpy", fdr=None, permutations=0)
    )
    row = result.explanations.loc["densenet121_4"]
    assert row["n_partners"] == 4 and row["top_family"] == "wavelet-HL texture"
    # Ties in the count are ordered by the strongest partner first.
    assert row["families"] == "wavelet-HL texture 2; original texture 1; wavelet-HL first-order 1"
    # The four partners are near copies of each other: one redundancy cluster, named by its central member.
    assert row["n_clusters"] == 1 and row["partner_clusters"] == "original_glcm_Contrast"
    assert row["summary"] == (
        "4 partners in 1 group: high local grey-level variation (original_glcm_Contrast and 3 similar); "
        "strongest original_glcm_Contrast, rho 1.00"
    )
    assert row["strongest_meaning"].startswith("contrast (GLCM) on original image")


def test_rejects_bad_settings(data):
    deep, rad, _ = data
    with pytest.raises(Rad4XCNNError, match=r"^explain\.thresholds\[0\]: must lie in \(0, 1\]"):
        explain(deep, rad, ExplainConfig(thresholds=[1.5], fdr=None, permutations=0))
    with pytest.raises(Rad4XCNNError, match=r"^explain\.fdr: "):
        explain(deep, rad, ExplainConfig(thresholds=[0.6], fdr=0, permutations=0))
    with pytest.raises(Rad4XCNNError, match="use at least 19"):
        explain(
            deep, rad, ExplainConfig(thresholds=[0.6], permutations=5, bootstrap=0, backend="numpy", fdr=None)
        )


# --------------------------------------------------------------------------------------- re-threshold
def test_new_threshold_without_recomputing_matches_a_fresh_run(result, data):
    deep, rad, _ = data
    stricter = result.with_threshold(0.8)
    fresh = explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.8], fdr=0.05, permutations=200, bootstrap=100, backend="numpy"),
        seed=1,
    )
    assert stricter.correlation is result.correlation  # the same matrices, nothing recomputed
    pd.testing.assert_frame_equal(stricter.explanations, fresh.explanations)
    cols = ["deep_feature", "radiomic_feature", "rho", "p", "q", "p_fwer", "family"]
    pd.testing.assert_frame_equal(stricter.correlations[cols], fresh.correlations[cols])
    assert stricter.correlations["ci_low"].notna().all()  # kept at 0.8 implies kept at 0.6: intervals exist
    looser = result.with_threshold(0.15, fdr=None)
    assert looser.correlations["ci_low"].isna().any() and looser.fdr is None


def test_files_are_written_and_read_back(result, tmp_path):
    written = write_explanation(result, tmp_path)
    for name in ("correlations.csv", "explanations.csv", "coverage.csv", "explanation.json", "rho.npy"):
        assert (tmp_path / name).is_file(), name
    corr = pd.read_csv(tmp_path / "correlations.csv", index_col=0)
    assert corr.index.name == "deep_feature"
    assert {"radiomic_feature", "rho", "p", "q", "image_type", "feature_class", "feature"} <= set(
        corr.columns
    )
    expl = pd.read_csv(tmp_path / "explanations.csv", index_col=0)
    assert list(expl.index) == list(result.explanations.index)
    summary = json.loads((tmp_path / "explanation.json").read_text())
    assert summary["n_explained"] == result.n_explained and summary["settings"]["threshold"] == 0.6
    assert summary["zero_variance"]["deep"] == ["resnet50_59"]
    again = load_explanation(tmp_path, threshold=0.7)
    assert again.permutation_threshold == pytest.approx(result.permutation_threshold)
    pd.testing.assert_frame_equal(again.explanations, result.with_threshold(0.7).explanations)
    assert set(written) >= {"correlations", "explanations", "coverage", "summary", "rho", "permutation_null"}


# --------------------------------------------------------------------------------------------- coverage
def test_coverage_falls_monotonically_with_m_per_model(result):
    for _, curve in result.coverage.groupby("model"):
        assert (
            list(curve["M"]) == sorted(curve["M"])
            and curve["M"].iloc[0] == 0.3
            and curve["M"].iloc[-1] == 0.9
        )
        assert (np.diff(curve["fraction"].to_numpy()) <= 0).all()
        assert (curve["n_constant"] == 1).all() and (curve["n_features"] == 60).all()
    at_06 = result.coverage.set_index("M").loc[0.6]
    assert at_06["n_explained"] == result.n_explained
    assert at_06["fraction"] == pytest.approx(result.n_explained / 59)


def test_coverage_compares_models():
    rng = np.random.default_rng(5)
    rho = pd.DataFrame(
        np.concatenate([rng.uniform(-1, 1, (30, 20)), rng.uniform(-0.5, 0.5, (10, 20))]),
        index=[f"resnet50_{i}" for i in range(30)] + [f"vit_base_{i}" for i in range(10)],
    )
    curve = coverage_curve(rho, np.linspace(0.3, 0.9, 7))
    assert list(curve["model"].unique()) == ["resnet50", "vit_base"]
    vit = curve[curve["model"] == "vit_base"].set_index("M")["fraction"]
    assert vit.loc[0.3] > 0 and vit.loc[0.6] == 0
    dense = curve[curve["model"] == "resnet50"]["fraction"].to_numpy()
    assert (np.diff(dense) <= 0).all() and dense[0] == 1.0
    assert model_of("vit_base_patch16_224_767") == "vit_base_patch16_224" and model_of("other") == "other"


# ------------------------------------------------------------------------------------------ importance
def test_rank_by_importance_explains_the_relied_on_features_first(result):
    importances = pd.Series({"resnet50_30": 0.9, "resnet50_0": 0.5, "resnet50_1": 0.2, "elsewhere_3": 0.7})
    ranked = rank_by_importance(result, importances)
    assert list(ranked.index) == ["resnet50_30", "resnet50_0", "resnet50_1"]
    assert list(ranked["importance_rank"]) == [1, 2, 3]
    assert list(ranked["cumulative_explained"]) == [0, 1, 2]
    assert ranked.loc["resnet50_0", "summary"] == result.explanations.loc["resnet50_0", "summary"]


def test_rank_by_importance_reads_the_classification_table(result):
    table = pd.DataFrame(
        {
            "feature_set": ["resnet50"] * 4,
            "classifier": ["rf", "rf", "svm", "svm"],
            "feature": ["resnet50_0", "resnet50_1", "resnet50_0", "resnet50_1"],
            "importance_mean": [0.02, 0.04, 10.0, 1.0],  # different units per classifier
            "importance_std": [0.0] * 4,
            "method": ["impurity", "impurity", "permutation", "permutation"],
        }
    )
    assert list(rank_by_importance(result, table, classifier="rf").index) == ["resnet50_1", "resnet50_0"]
    both = rank_by_importance(result, table)  # scaled to each classifier's largest, then averaged
    assert list(both.index) == ["resnet50_0", "resnet50_1"]
    assert both["importance"].tolist() == pytest.approx([0.75, 0.55])
    with pytest.raises(Rad4XCNNError, match="no importances for classifier 'xgb'"):
        rank_by_importance(result, table, classifier="xgb")
    with pytest.raises(Rad4XCNNError, match="none of the features with an importance"):
        rank_by_importance(result, pd.Series({"vit_1": 1.0}))


# --------------------------------------------------------------------------------------- replicability
def test_replicability_across_two_cohorts():
    internal = [f"int{i:03d}" for i in range(200)]
    external = [f"ext{i:03d}" for i in range(150)]
    deep_a, rad_a, truth = planted(cases=internal, seed=1)
    deep_b, rad_b, _ = planted(cases=external, seed=2)
    # One relation exists in the internal cohort only: the external deep feature becomes noise.
    deep_b["resnet50_0"] = np.maximum(np.random.default_rng(9).normal(size=150), 0)
    deep, rad = pd.concat([deep_a, deep_b]), pd.concat([rad_a, rad_b])
    groups = pd.Series(["internal"] * 200 + ["external"] * 150, index=internal + external)
    groups = groups.drop(index="ext149")  # a case without a cohort is left out and reported
    rep = replicate(deep, rad, groups, 0.6, backend="numpy")
    row = rep.summary.iloc[0]
    assert (row["cohort_a"], row["cohort_b"], row["n_cases_a"], row["n_cases_b"]) == (
        "internal",
        "external",
        200,
        149,
    )
    assert row["n_kept_a"] == 20 and row["n_kept_b"] == 19 and row["n_replicated"] == 19
    assert row["fraction_of_a_replicated"] == pytest.approx(19 / 20)
    assert row["rho_agreement"] > 0.5 and row["rho_agreement_kept"] > 0.5
    lost = rep.pairs[rep.pairs["deep_feature"] == "resnet50_0"].iloc[0]
    assert lost["kept_internal"] and not lost["kept_external"] and not lost["replicated"]
    assert rep.dropped_cases["ext149"] == "no cohort given"
    assert set(zip(rep.pairs["deep_feature"], rep.pairs["radiomic_feature"], strict=True)) == truth


def test_replicability_needs_two_cohorts(data):
    deep, rad, _ = data
    with pytest.raises(Rad4XCNNError, match="at least two cohorts"):
        replicate(deep, rad, pd.Series("internal", index=deep.index), 0.6, backend="numpy")


def test_name_parsing():
    parsed = parse_radiomic_name("wavelet-HL_glcm_Contrast")
    assert (parsed.image_type, parsed.feature_class, parsed.feature) == ("wavelet-HL", "glcm", "Contrast")
    assert (
        family_of(parsed) == "wavelet-HL texture"
        and family_of("original_shape2D_Perimeter") == "original shape"
    )
    assert family_of("my_custom_feature") == "other"


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_explain_writes_the_outputs(tmp_path, capsys):
    deep, rad, _ = planted(n=120, n_deep=12, n_planted=4, seed=4)
    deep.index.name = rad.index.name = "case_id"
    deep.iloc[::-1].to_csv(tmp_path / "deep_features.csv")  # another row order
    rad.iloc[:-2].to_csv(tmp_path / "radiomics.csv")  # two cases fewer
    manifest = pd.DataFrame(
        {
            "case_id": deep.index,
            "image": "x.png",
            "mask": "x_mask.png",
            "cohort": ["internal", "external"] * 60,
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "run"
    argv = [
        "explain",
        "--deep",
        str(tmp_path / "deep_features.csv"),
        "--radiomics",
        str(tmp_path / "radiomics.csv"),
    ]
    argv += ["--threshold", "0.6", "--fdr", "0.05", "--permutations", "50", "--bootstrap", "20"]
    argv += ["--cohorts", str(tmp_path / "manifest.csv"), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "118 cases (2 left out)" in printed and "resnet50: 4 of 11 varying deep features explained" in printed
    )
    assert "suggested M" in printed and "replicability internal -> external" in printed
    for name in (
        "correlations.csv",
        "explanations.csv",
        "coverage.csv",
        "explained_by_threshold.csv",
        "rho.npy",
    ):
        assert (out / name).is_file()
    # the replicability tables go where 'rad4xcnn run' writes them (the command wrote them beside the rest)
    assert (out / "replicability" / "replicability.csv").is_file() and not (
        out / "replicability.csv"
    ).exists()
    corr = pd.read_csv(out / "correlations.csv")
    assert list(corr.columns[:5]) == ["deep_feature", "radiomic_feature", "rho", "p", "q"]
    assert len(corr) == 4


def test_cli_explain_splits_a_manifest_without_splits_as_a_run_does(tmp_path, capsys):
    """A user's manifest has no split column (the run's cohort stage assigns it): explain --manifest with
    no other flag gives its cases the run's seeded split and explains on the training cases, the rest held
    out."""
    deep, rad, _ = planted(n=120, n_deep=12, n_planted=4, seed=4)
    deep.index.name = rad.index.name = "case_id"
    deep.to_csv(tmp_path / "deep_features.csv")
    rad.to_csv(tmp_path / "radiomics.csv")
    pd.DataFrame(
        {
            "case_id": deep.index,
            "image": "x.png",
            "mask": "x_mask.png",
            "label": ["benign", "malignant"] * 60,
            "cohort": ["internal"] * 90 + ["external"] * 30,
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    argv = [
        "explain",
        "--deep",
        str(tmp_path / "deep_features.csv"),
        "--radiomics",
        str(tmp_path / "radiomics.csv"),
    ]
    argv += ["--manifest", str(tmp_path / "manifest.csv"), "--permutations", "0", "--bootstrap", "0"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "within label,cohort" in printed
    assert "held out internal_test" in printed and "held out external (30 cases)" in printed
    held = pd.read_csv(tmp_path / "out" / "heldout.csv")
    assert set(held["set"]) == {"internal_test", "external"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("case_id,resnet50_0,resnet50_0\na,1,2\n", "duplicate feature name(s): resnet50_0"),
        ("case_id,resnet50_0\na,1\nb,2\n", "only 2 case(s) have complete values"),
    ],
)
def test_cli_explain_bad_input_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "deep.csv").write_text(content)
    pd.DataFrame({"original_firstorder_Mean": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="case_id")).to_csv(
        tmp_path / "rad.csv"
    )
    argv = ["explain", "--deep", str(tmp_path / "deep.csv"), "--radiomics", str(tmp_path / "rad.csv")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o" / "correlations.csv").exists()


def test_other_named_features_explain_with_no_glossary_meaning():
    # (issue 14) a radiomics-side table from another tool: its features explain, meaning "not in the glossary"
    rng = np.random.default_rng(4)
    base = rng.normal(size=60)
    rad = pd.DataFrame({"stiffness_kPa": base + 0.05 * rng.normal(size=60), "age": rng.normal(size=60)})
    deep = pd.DataFrame({"resnet50_0": base, "resnet50_1": rng.normal(size=60)})
    result = explain(
        deep, rad, ExplainConfig(thresholds=[0.6], bootstrap=0, backend="numpy", fdr=None, permutations=0)
    )
    row = result.explanations.loc["resnet50_0"]
    assert row["n_partners"] == 1 and row["strongest_partner"] == "stiffness_kPa"
    assert row["strongest_meaning"] == "not in the glossary"
    pairs = result.correlations
    assert pairs.loc[pairs["radiomic_feature"] == "stiffness_kPa", "meaning"].tolist() == [
        "not in the glossary"
    ]
