"""Explanations a researcher can trust: confounded pairs flagged, per-backbone statistics, readable partner
groups, and the planted ground truth of the synthetic cohort recovered."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.explanation import explain, load_explanation, write_explanation
from Rad4XCNNLogic.explain.partners import cluster_radiomics, group_partners, groups_text
from Rad4XCNNLogic.explain.settings import ExplainConfig
from Rad4XCNNLogic.explain.strata import stratum_labels

IMAGE_TYPES = ("original", "wavelet-LL", "wavelet-HL", "wavelet-LH", "wavelet-HH")
FEATURES = (
    ("firstorder", "Mean"),
    ("firstorder", "Median"),
    ("glcm", "Contrast"),
    ("glcm", "Idm"),
    ("glszm", "ZoneEntropy"),
    ("glrlm", "RunEntropy"),
    ("gldm", "DependenceEntropy"),
    ("ngtdm", "Busyness"),
)
# Cluster k = feature k on the 5 image types: 8 collinear groups of 5 members.
CLUSTERS = [[f"{it}_{c}_{f}" for it in IMAGE_TYPES] for c, f in FEATURES]


def confounded_cohort(n_per=60, seed=0, n_real=12, n_confounded=8, n_noise=8, model="cnn"):
    """Two sites x two classes. Radiomic features: 8 collinear clusters, each shifted by site and class.

    Deep features: ``real`` ones follow one cluster's latent factor within every stratum (with their own
    site and class shifts); ``confounded`` ones copy a cluster's site and class shifts but nothing within
    strata; ``noise`` ones are independent. Returns tables, strata, and the truth.
    """
    rng = np.random.default_rng(seed)
    site = np.repeat([0, 1, 0, 1], n_per)
    label = np.repeat([0, 0, 1, 1], n_per)
    n = 4 * n_per
    cases = [f"case{i:04d}" for i in range(n)]
    latent = rng.normal(size=(n, len(CLUSTERS)))
    shifts = rng.choice([-2.5, 2.5], size=(len(CLUSTERS), 2))
    rad = {}
    for k, members in enumerate(CLUSTERS):
        base = latent[:, k] + shifts[k, 0] * site + shifts[k, 1] * label
        for j, name in enumerate(members):
            rad[name] = base + 0.12 * rng.normal(size=n) if j else base  # near copies of each other
    deep, truth_real, truth_confounded = {}, {}, {}
    for i in range(n_real):
        k = i % len(CLUSTERS)
        own_shift = rng.normal(scale=2.0, size=2)
        deep[f"{model}_{i}"] = (
            np.tanh(latent[:, k]) * rng.choice([-1, 1])
            + 0.15 * rng.normal(size=n)
            + own_shift[0] * site
            + own_shift[1] * label
        )
        truth_real[f"{model}_{i}"] = k
    for i in range(n_real, n_real + n_confounded):
        k = i % len(CLUSTERS)
        deep[f"{model}_{i}"] = shifts[k, 0] * site + shifts[k, 1] * label + 0.6 * rng.normal(size=n)
        truth_confounded[f"{model}_{i}"] = k
    for i in range(n_real + n_confounded, n_real + n_confounded + n_noise):
        deep[f"{model}_{i}"] = rng.normal(size=n)
    strata = pd.Series([f"site{s}|class{c}" for s, c in zip(site, label, strict=True)], index=cases)
    return (
        pd.DataFrame(deep, index=cases),
        pd.DataFrame(rad, index=cases),
        strata,
        truth_real,
        truth_confounded,
    )


@pytest.fixture(scope="module")
def stratified():
    deep, rad, strata, real, confounded = confounded_cohort()
    result = explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.5], fdr=0.05, permutations=99, bootstrap=0, backend="numpy"),
        strata=strata,
    )
    return result, real, confounded


def _precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


def test_confounded_pairs_flagged_and_real_pairs_explained_at_cluster_level(stratified):
    result, real, confounded = stratified
    table = result.explanations
    cluster_of = result.clusters.table["cluster"]
    assert result.clusters.n_clusters == len(CLUSTERS)  # the collinear groups, recovered
    # A real feature whose own shift between strata runs against its within-stratum relation has pooled and
    # within rho of opposite signs: it is reversed, not explained (the pooled sign misleads).
    reversed_ = set(table.index[table["status"] == "reversed"])
    assert reversed_ <= set(real) and len(reversed_) <= 3
    flips = result.correlations[result.correlations["status"] == "reversed"]
    assert (np.sign(flips["rho"]) != np.sign(flips["rho_within"])).all()
    truth = {(d, cluster_of[CLUSTERS[k][0]]) for d, k in real.items() if d not in reversed_}
    found = {
        (d, c)
        for d, row in table[table["status"] == "explained"].iterrows()
        for c in row["partner_clusters"].split(";")
    }
    precision, recall = _precision_recall(found, truth)
    assert precision >= 0.95 and recall >= 0.95
    flagged = set(table.index[table["status"] == "confounded"])
    precision, recall = _precision_recall(flagged, set(confounded))
    assert precision >= 0.95 and recall >= 0.95
    # The paper's pooled rule alone calls the confounded features explained.
    assert result.summary()["n_explained_pooled"] >= len(confounded) + result.n_explained // 2
    assert result.summary()["n_confounded"] == len(flagged)
    pairs = result.correlations
    shown = pairs[pairs["deep_feature"].isin(list(confounded))]
    assert (shown["status"] == "confounded").all() and (shown["rho"].abs() >= 0.5).all()
    assert (shown["rho_within"].abs() < 0.5).all()
    assert {"rho", "p", "q", "rho_within", "p_within", "q_within", "p_fwer", "cluster"} <= set(pairs.columns)


def test_partner_groups_read_as_named_clusters(stratified):
    result, _real, _ = stratified
    row = result.explanations.loc["cnn_0"]  # follows cluster 0: mean intensity on the five images
    assert row["n_partners"] == 5 and row["n_clusters"] == 1
    central = result.clusters.table.loc[CLUSTERS[0][0], "cluster"]
    assert row["partner_clusters"] == central and central in CLUSTERS[0]
    assert row["summary"].startswith("5 partners in 1 group: ") and "average intensity" in row["summary"]
    assert f"({central} and 4 similar)" in row["summary"]


def test_without_strata_the_paper_rule_calls_shared_shifts_explained():
    deep, rad, _, _real, confounded = confounded_cohort(seed=1)
    pooled = explain(
        deep, rad, ExplainConfig(thresholds=[0.5], bootstrap=0, backend="numpy", fdr=None, permutations=0)
    )
    status = pooled.explanations["status"]
    assert set(status.unique()) <= {"explained", "unexplained", "zero variance"}
    assert (status[list(confounded)] == "explained").mean() >= 0.9
    assert "rho_within" not in pooled.correlations.columns and "strata" not in pooled.summary()


def test_adding_a_backbone_never_changes_another_backbones_results():
    deep_a, rad, strata, *_ = confounded_cohort(seed=2, model="resnet18")
    deep_b, *_ = confounded_cohort(seed=3, model="densenet121", n_real=3, n_confounded=20)
    both = pd.concat([deep_b, deep_a], axis=1)  # the other backbone first: positions move
    settings = ExplainConfig(
        thresholds=[0.5], fdr=0.05, permutations=60, bootstrap=0, backend="numpy", chunk_size=7
    )
    for with_strata in (None, strata):
        alone = explain(deep_a, rad, settings, strata=with_strata)
        joint = explain(both, rad, settings, strata=with_strata)
        a_rows = [c for c in both.columns if c.startswith("resnet18")]
        np.testing.assert_array_equal(joint.correlation.frame("q").loc[a_rows], alone.correlation.frame("q"))
        np.testing.assert_array_equal(
            joint.permutation_nulls["resnet18"], alone.permutation_nulls["resnet18"]
        )
        assert joint.suggested_Ms["resnet18"] == alone.suggested_Ms["resnet18"]
        assert joint.permutation_thresholds["resnet18"] == alone.permutation_thresholds["resnet18"]
        mine = joint.correlations[joint.correlations["deep_feature"].str.startswith("resnet18")]
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), alone.correlations.reset_index(drop=True))
        pd.testing.assert_frame_equal(joint.explanations.loc[a_rows], alone.explanations)
        if with_strata is not None:
            np.testing.assert_array_equal(joint.within.q[both.columns.get_indexer(a_rows)], alone.within.q)
        # and the other backbone's family is really different: its null is not resnet18's
        assert not np.array_equal(joint.permutation_nulls["densenet121"], joint.permutation_nulls["resnet18"])


def test_stratified_explanation_round_trips_through_its_files(stratified, tmp_path):
    result, *_ = stratified
    written = write_explanation(result, tmp_path)
    assert {"strata", "radiomic_clusters", "permutation_nulls"} <= set(written)
    back = load_explanation(tmp_path)
    pd.testing.assert_frame_equal(back.explanations, result.explanations)
    pd.testing.assert_frame_equal(back.correlations, result.correlations)
    np.testing.assert_array_equal(back.within.rho, result.within.rho)
    assert back.suggested_Ms == result.suggested_Ms
    summary = json.loads((tmp_path / "explanation.json").read_text())
    assert summary["strata"]["sizes"] == {
        "site0|class0": 60,
        "site0|class1": 60,
        "site1|class0": 60,
        "site1|class1": 60,
    }
    assert len(summary["cases"]) == 240 and "within" in summary["rule"]
    stricter = back.with_threshold(0.99)
    assert stricter.n_explained < result.n_explained


def test_cluster_level_partners_on_collinear_radiomics():
    rng = np.random.default_rng(5)
    latent = rng.normal(size=(150, 3))
    names = [m for group in CLUSTERS[:3] for m in group]
    rad = np.column_stack([latent[:, k] + 0.1 * rng.normal(size=150) for k in range(3) for _ in range(5)])
    rho = pd.DataFrame(rad).rank().corr().to_numpy()
    clusters = cluster_radiomics(rho, names)
    assert clusters.n_clusters == 3
    for group in CLUSTERS[:3]:
        assert clusters.table.loc[group, "cluster"].nunique() == 1
        assert (clusters.table.loc[group, "n_members"] == 5).all()
    # anti-correlated members join the cluster and carry sign -1, so directions read right
    rho_flip = rho.copy()
    rho_flip[0, 1:5] *= -1
    rho_flip[1:5, 0] *= -1
    flipped = cluster_radiomics(rho_flip, names)
    assert flipped.table.loc[CLUSTERS[0], "cluster"].nunique() == 1
    central = flipped.table.loc[CLUSTERS[0][1], "cluster"]
    assert flipped.table.loc[CLUSTERS[0][0], "sign"] == (-1 if central != CLUSTERS[0][0] else 1)
    groups = group_partners(clusters, [CLUSTERS[0][2], CLUSTERS[1][0], CLUSTERS[0][3]], [-0.8, 0.7, -0.75])
    assert [len(g.members) for g in groups] == [2, 1] and groups[0].direction == -1
    text = groups_text(groups)
    assert (
        text.startswith("2 groups: low average intensity (")
        and "high middle intensity (original_firstorder_Median)" in text
    )


def test_clusters_cut_at_the_documented_level():
    names = ["original_firstorder_Mean", "original_firstorder_Median", "original_glcm_Contrast"]
    rho = np.array([[1.0, 0.81, 0.2], [0.81, 1.0, 0.2], [0.2, 0.2, 1.0]])
    assert cluster_radiomics(rho, names).n_clusters == 2
    rho[0, 1] = rho[1, 0] = 0.79
    assert cluster_radiomics(rho, names).n_clusters == 3
    assert cluster_radiomics(rho, names, level=0.7).n_clusters == 2


# ------------------------------------------------------------------------------------------ ground truth
SMALL_PARAMS = """
setting: {binCount: 32, normalize: false, label: 1, minimumROIDimensions: 2, minimumROISize: 15}
imageType: {Original: {}}
featureClass: {shape2D: , firstorder: , glcm: }
"""


@pytest.fixture(scope="module")
def synthetic_truth(tmp_path_factory):
    """40 synthetic cases (96 x 112), their PyRadiomics features and their planted factors."""
    pytest.importorskip("radiomics")
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
    from Rad4XCNNLogic.features.radiomics import extract_radiomics

    out = tmp_path_factory.mktemp("truth")
    manifest = make_synthetic_cohort(out / "cohort", n=40, seed=5, shape=(96, 112))
    params = out / "params.yaml"
    params.write_text(SMALL_PARAMS)
    radiomics = extract_radiomics(read_manifest(manifest), params, jobs=1, progress=False).features
    factors = pd.read_csv(out / "cohort" / "factors.csv", index_col="case_id")
    factors.index = factors.index.astype(str)
    return radiomics, factors, pd.read_csv(manifest)


def test_planted_factors_correlate_within_class_with_the_radiomics_that_measure_them(synthetic_truth):
    radiomics, factors, manifest = synthetic_truth
    planted = {
        "lesion_area_px": ("original_shape2D_PixelSurface", 0.95),
        "radius_fraction": ("original_shape2D_MeshSurface", 0.9),
        "echogenicity": ("original_firstorder_Mean", 0.6),
        "spicules": ("original_shape2D_Sphericity", -0.5),
    }
    # The factors stand in for deep features (``factor_<k>``), so the whole explanation path runs.
    names = [*list(planted), "shadowing"]
    deep = factors[names].set_axis([f"factor_{k}" for k in range(len(names))], axis=1)
    result = explain(
        deep,
        radiomics,
        ExplainConfig(thresholds=[0.45], bootstrap=0, backend="numpy", fdr=None, permutations=0),
        strata=stratum_labels(manifest, "label"),
    )
    within = pd.DataFrame(result.within.rho, index=names, columns=result.correlation.radiomic_features)
    for k, (factor, (feature, bound)) in enumerate(planted.items()):
        rho = within.loc[factor, feature]
        assert (rho >= bound) if bound > 0 else (rho <= bound), (factor, feature, rho)
        row = result.explanations.loc[f"factor_{k}"]
        assert row["status"] == "explained" and feature in row["partners"].split(";")
    assert set(result.within.strata) == {"benign", "malignant"}
    # Posterior shadowing is drawn per class and lies below the lesion: whatever lesion feature it tracks
    # pooled over the classes, it tracks only through the class.
    assert result.explanations.loc["factor_4", "status"] == "confounded"


# ------------------------------------------------------------------------------------- held out, control
def test_kept_pairs_are_remeasured_on_held_out_cases():
    from Rad4XCNNLogic.explain.heldout import remeasure

    deep, rad, strata, real, _confounded = confounded_cohort(n_per=80, seed=6)
    train = deep.index[::2]
    held = pd.Series({c: ("test" if i % 4 == 1 else "external") for i, c in enumerate(deep.index) if i % 2})
    result = explain(
        deep.loc[train],
        rad.loc[train],
        ExplainConfig(thresholds=[0.5], bootstrap=0, backend="numpy", fdr=None, permutations=0),
        strata=strata,
    )
    out = remeasure(result, deep, rad, held, strata=strata, backend="numpy")
    assert set(out.summary["set"]) == {"test", "external"}
    assert (out.summary["n_cases"] == 80).all() and (out.summary["n_pairs"] == len(out.pairs)).all()
    explained = result.correlations[result.correlations["status"] == "explained"]
    assert len(out.pairs) == len(explained) and set(out.pairs["deep_feature"]) <= set(real)
    # The real relations hold on cases the explanation never saw.
    assert (out.summary["fraction_replicated"] >= 0.95).all()
    manual = spearman_within_pair(deep, rad, strata, held[held == "test"].index, out.pairs.iloc[0])
    assert out.pairs["rho_heldout_test"].iloc[0] == pytest.approx(manual, abs=1e-12)
    with pytest.raises(Rad4XCNNError, match=r"1 held-out case\(s\) were used by the explanation"):
        remeasure(result, deep, rad, pd.Series({train[0]: "test"}), strata=strata, backend="numpy")
    with pytest.raises(Rad4XCNNError, match="needs the strata"):
        remeasure(result, deep, rad, held, backend="numpy")


def spearman_within_pair(deep, rad, strata, cases, row):
    from Rad4XCNNLogic.explain.strata import spearman_within

    one = spearman_within(
        deep.loc[cases, [row["deep_feature"]]],
        rad.loc[cases, [row["radiomic_feature"]]],
        strata,
        backend="numpy",
    )
    return one.rho[0, 0]


def test_coverage_beside_the_random_control():
    from Rad4XCNNLogic.explain.heldout import coverage_against_control

    deep, rad, strata, *_ = confounded_cohort(seed=7, model="resnet18")
    rng = np.random.default_rng(0)
    control = pd.DataFrame(
        rng.normal(size=deep.shape),
        index=deep.index,
        columns=[c.replace("resnet18", "resnet18-random") for c in deep.columns],
    )
    result = explain(
        pd.concat([deep, control], axis=1),
        rad,
        ExplainConfig(thresholds=[0.5], bootstrap=0, backend="numpy", fdr=None, permutations=0),
        strata=strata,
    )
    table = coverage_against_control(result.coverage, {"resnet18": "resnet18-random"})
    at = table.set_index("M").loc[0.5]
    assert at["fraction"] == pytest.approx(12 / 28) and at["fraction_control"] == 0.0
    assert at["gain"] == pytest.approx(12 / 28) and "fraction_pooled_control" in table.columns
    assert len(table) == len(result.coverage) // 2
    with pytest.raises(Rad4XCNNError, match="no coverage for model"):
        coverage_against_control(result.coverage, {"resnet18": "vit-random"})


# ------------------------------------------------------------------------ rad4xcnn explain --stratify
@pytest.fixture
def tables(tmp_path):
    deep, rad, strata, real, confounded = confounded_cohort(n_per=40, seed=11)
    site = strata.str.slice(4, 5).map({"0": "internal", "1": "external"})
    label = strata.str.slice(-1).map({"0": "benign", "1": "malignant"})
    rng = np.random.default_rng(0)
    split = np.where(
        site == "internal", rng.choice(["train", "val", "test"], len(site), p=[0.6, 0.15, 0.25]), "test"
    )
    manifest = pd.DataFrame(
        {
            "case_id": deep.index,
            "image": "none.png",
            "mask": "none_mask.png",
            "label": label.to_numpy(),
            "cohort": site.to_numpy(),
            "split": split,
        }
    )
    deep.to_csv(tmp_path / "deep.csv", index_label="case_id")
    rad.to_csv(tmp_path / "rad.csv", index_label="case_id")
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    argv = [
        "explain",
        "--deep",
        str(tmp_path / "deep.csv"),
        "--radiomics",
        str(tmp_path / "rad.csv"),
        "-M",
        "0.5",
        "--permutations",
        "0",
        "--bootstrap",
        "0",
        "--backend",
        "numpy",
        "--no-progress",
    ]
    return tmp_path, argv, real, confounded


def test_explain_stratify_flags_confounded_features(tables, capsys):
    tmp_path, argv, real, confounded = tables
    out = tmp_path / "o"
    assert (
        main(
            [
                *argv,
                "--manifest",
                str(tmp_path / "manifest.csv"),
                "--cases",
                "all",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "within label,cohort" in printed and " confounded, " in printed and " reversed, " in printed
    corr = pd.read_csv(out / "correlations.csv")
    assert {"rho", "rho_within", "p_within", "q_within", "status"} <= set(corr.columns)
    table = pd.read_csv(out / "explanations.csv", index_col=0)
    flagged = set(table.index[table["status"] == "confounded"])
    # A planted confounded feature may show a chance within-stratum association (q_within just under the
    # level) of the sign opposite to its pooled one: reversed, not confounded. At most one here.
    assert flagged <= set(confounded) and len(flagged) >= len(confounded) - 1
    assert f"{len(flagged)} confounded" in printed
    reversed_ = set(table.index[table["status"] == "reversed"])
    assert set(table.index[table["status"] == "explained"]) == set(real) - reversed_
    assert {"n_clusters", "partner_clusters", "n_confounded"} <= set(table.columns)
    summary = json.loads((out / "explanation.json").read_text())
    assert summary["strata"]["columns"] == ["label", "cohort"] and len(summary["cases"]) == 160
    assert not (out / "heldout.csv").exists()  # every case: nothing is held out


def test_explain_cases_train_remeasures_on_held_out_cases(tables, capsys):
    tmp_path, argv, real, _ = tables
    out = tmp_path / "o"
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert (
        main(
            [
                *argv,
                "--manifest",
                str(tmp_path / "manifest.csv"),
                "--stratify",
                "label",
                "--cases",
                "train",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "held out internal_test" in printed and "held out external" in printed
    summary = json.loads((out / "explanation.json").read_text())
    training = manifest.loc[
        (manifest["cohort"] == "internal") & manifest["split"].isin(["train", "val"]), "case_id"
    ]
    assert sorted(summary["cases"]) == sorted(training) and summary["settings"]["cases"] == "train"
    held = pd.read_csv(out / "heldout.csv").set_index("set")
    assert held.loc["external", "n_cases"] == 80
    assert held.loc["internal_test", "n_cases"] == int(
        ((manifest["cohort"] == "internal") & (manifest["split"] == "test")).sum()
    )
    pairs = pd.read_csv(out / "heldout_pairs.csv")
    assert {"rho_heldout_external", "replicated_external", "rho_heldout_internal_test"} <= set(pairs.columns)
    assert pairs["replicated_external"].mean() >= 0.9 and set(pairs["deep_feature"]) <= set(real)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stratify", "label"], "--stratify and --cases train need --manifest"),
        (["--manifest", "MANIFEST", "--stratify", "label,scanner"], "the manifest has no column scanner"),
        (["--manifest", "SHORT", "--stratify", "label", "--cases", "all"], "are missing from the manifest"),
        (["--manifest", "TINY", "--stratify", "label"], "no stratum of label has at least 5 cases"),
    ],
)
def test_explain_stratify_bad_input_is_one_line(tables, capsys, extra, message):
    tmp_path, argv, *_ = tables
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    manifest.iloc[:-5].to_csv(tmp_path / "short.csv", index=False)  # 5 cases of the tables lack a row
    manifest.assign(label=[f"c{i}" for i in range(len(manifest))]).to_csv(tmp_path / "tiny.csv", index=False)
    paths = {"MANIFEST": "manifest.csv", "SHORT": "short.csv", "TINY": "tiny.csv"}
    extra = [str(tmp_path / paths[e]) if e in paths else e for e in extra]
    assert main([*argv, *extra, "--out", str(tmp_path / "o")]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o" / "correlations.csv").exists()


def test_explain_without_a_manifest_says_it_cannot_stratify(tables, capsys):
    """The run's defaults stratify and hold cases out; without the manifest they cannot, and one line says
    so before the pooled rule is applied to every case."""
    tmp_path, argv, real, confounded = tables
    out = tmp_path / "o"
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == (
        "without --manifest there are no strata and no splits: the pooled rule on every case"
    )
    summary = json.loads((out / "explanation.json").read_text())
    assert "strata" not in summary and len(summary["cases"]) == 160 and summary["settings"]["cases"] == "all"
    table = pd.read_csv(out / "explanations.csv", index_col=0)
    assert set(table.index[table["status"] == "explained"]) == set(real) | set(confounded)


def test_report_says_what_explained_means_and_escapes_names(tables, capsys):
    pytest.importorskip("jinja2")  # the report extra (jinja2, markupsafe)
    from Rad4XCNNLogic.run.report import _trust_section

    tmp_path, argv, _, confounded = tables
    # A hostile feature name: every string from the data reaches the report escaped.
    deep = pd.read_csv(tmp_path / "deep.csv", index_col=0)
    deep = deep.rename(columns={sorted(confounded)[0]: "<script>alert(1)</script>_0"})
    deep.to_csv(tmp_path / "deep.csv")
    out = tmp_path / "o"
    assert (
        main(
            [
                *argv,
                "--manifest",
                str(tmp_path / "manifest.csv"),
                "--stratify",
                "label,cohort",
                "--cases",
                "train",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    section = _trust_section(out)
    assert section["stratified"] and "within the strata of label, cohort" in section["rule_note"]
    assert "not proof" in section["rule_note"] and "training cases" in section["rule_note"]
    counts = str(section["counts_table"])
    assert "confounded" in counts and "explained by the pooled rule alone" in counts
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in counts and "<script>" not in counts
    assert "rho within strata" in str(section["confounded_table"])
    assert "internal_test" in str(section["heldout_table"])
    pooled = tmp_path / "pooled"
    assert main([*argv, "--out", str(pooled)]) == 0
    section = _trust_section(pooled)
    assert not section["stratified"] and "pooled rule" in section["rule_note"]
    assert "confounded_table" not in section and "heldout_table" not in section


def test_each_pooled_stage_is_its_own_family():
    deep, rad, strata, *_ = confounded_cohort(seed=8, n_real=4, n_confounded=2, n_noise=2, model="resnet18")
    stage = deep.set_axis([c.replace("resnet18", "resnet18_stage3") for c in deep.columns], axis=1)
    both = pd.concat([deep, stage + 0.01], axis=1)
    result = explain(
        both,
        rad,
        ExplainConfig(thresholds=[0.5], permutations=30, bootstrap=0, backend="numpy", fdr=None),
        strata=strata,
    )
    assert set(result.permutation_nulls) == {"resnet18", "resnet18_stage3"}
    alone = explain(
        deep,
        rad,
        ExplainConfig(thresholds=[0.5], permutations=30, bootstrap=0, backend="numpy", fdr=None),
        strata=strata,
    )
    np.testing.assert_array_equal(result.permutation_nulls["resnet18"], alone.permutation_nulls["resnet18"])
    assert set(result.explanations["model"]) == {"resnet18", "resnet18_stage3"}
