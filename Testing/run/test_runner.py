"""The whole pipeline: run folder contents, caching and resumption, the report, and failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
from Rad4XCNNLogic.infra.progress import ENV, parse_progress_line
from Rad4XCNNLogic.run.config import config_from_dict
from Rad4XCNNLogic.run.runner import run_pipeline
from Rad4XCNNLogic.run.stages import gallery_cases


def _settings(manifest: Path, out: Path, **sections) -> dict:
    data = {
        "manifest": str(manifest),
        "out": str(out),
        "device": "cpu",
        "training": {"pretrained": False, "epochs": 2, "batch_size": 8, "input_size": 64, "patience": 2},
        "models": [{"name": "resnet18", "weights": "trained"}],
        "deep": {"input_size": 64},
        "radiomics": {"jobs": 1},
        "explain": {"thresholds": [0.6, 0.8], "fdr": 0.05, "permutations": 20, "bootstrap": 10},
        "classification": {
            "classifiers": ["rf", "svm"],
            "cv_folds": 2,
            "n_bootstrap": 20,
            "repeated_splits": 2,
        },
        "cam": {"methods": ["gradcam", "eigencam"], "gallery": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@pytest.fixture(scope="module")
def cohort_manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline_cohort")
    return make_synthetic_cohort(out, n=24, n_external=10, seed=7, shape=(96, 128))


@pytest.fixture(scope="module")
def first_run(cohort_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline_run") / "run"
    config = config_from_dict(_settings(cohort_manifest, out))
    return config, run_pipeline(config, progress=False)


def _statuses(result) -> dict[str, str]:
    return {name: record.status for name, record in result.stages.items()}


def test_end_to_end_writes_every_file_with_the_documented_columns(first_run):
    config, result = first_run
    out = Path(config.out)
    assert result.ok, [r.line() for r in result.stages.values()]
    assert set(_statuses(result).values()) == {"computed"}
    from Rad4XCNNLogic.run.stages import STAGES

    missing = [(stage.name, name) for stage in STAGES for name in stage.writes if not (out / name).exists()]
    assert not missing, missing  # each stage record declares files the stage does write

    radiomics = pd.read_csv(out / "radiomics.csv", index_col=0)
    deep = pd.read_csv(out / "deep_features.csv", index_col=0)
    assert radiomics.index.name == deep.index.name == "case_id"
    assert radiomics.shape == (34, 474)
    # control: random (the default) adds the random-weights copy of the trained resnet18
    assert deep.shape == (34, 1024) and deep.columns[0] == "resnet18_0" and "resnet18-random_0" in deep

    corr = pd.read_csv(out / "correlations.csv")
    assert list(corr.columns[:8]) == [
        "deep_feature",
        "radiomic_feature",
        "rho",
        "p",
        "q",
        "rho_within",
        "p_within",
        "q_within",
    ]
    assert {"image_type", "feature_class", "feature", "status", "cluster"} <= set(corr.columns)
    # explain.stratify [label, cohort] (the default): explained pairs meet the rule within strata,
    # confounded ones only pooled
    explained = corr[corr["status"] == "explained"]
    assert (explained["rho_within"].abs() >= 0.6 - 1e-12).all() and (explained["q_within"] <= 0.05).all()
    confounded = corr[corr["status"] == "confounded"]
    assert (confounded["rho"].abs() >= 0.6 - 1e-12).all() and (confounded["q"] <= 0.05).all()
    expl = pd.read_csv(out / "explanations.csv", index_col=0)
    assert expl.index.name == "deep_feature" and len(expl) == 1024
    assert {"n_partners", "partners", "strongest_partner", "families", "summary"} <= set(expl.columns)
    assert {"n_clusters", "partner_clusters", "n_confounded"} <= set(expl.columns)
    # explain.cases train (the default): the explanation comes from train + val of the internal cohort,
    # and the explained pairs are re-measured on the internal test split and the external cohort
    summary = json.loads((out / "explanation.json").read_text())
    cohort = pd.read_csv(out / "cohort.csv", dtype=str)
    training = cohort[(cohort["cohort"] == "internal") & cohort["split"].isin(["train", "val"])]
    assert sorted(summary["cases"]) == sorted(training["case_id"])
    assert set(pd.read_csv(out / "heldout.csv")["set"]) == {"internal_test", "external"}
    control = pd.read_csv(out / "control_coverage.csv")
    assert set(control["control"]) == {"resnet18-random"} and len(control) == 13  # M = 0.30 ... 0.90

    metrics = pd.read_csv(out / "classification.csv")
    assert {"feature_set", "classifier", "evaluated_on", "auc", "auc_ci_low", "auc_ci_high"} <= set(
        metrics.columns
    )
    assert set(metrics["classifier"]) == {"rf", "svm"}
    assert set(metrics["evaluated_on"]) == {"internal-test", "external"}
    assert (out / "importances.csv").is_file() and (out / "explanations_by_importance.csv").is_file()

    cam = pd.read_csv(out / "cam" / "cam_metrics.csv")
    assert set(cam["method"]) == {"gradcam", "eigencam"} and cam["case_id"].nunique() == 2
    for case_id in cam["case_id"].unique():
        assert (out / "cam" / f"{case_id}_gradcam.nrrd").is_file()
    assert (out / "models" / "resnet18.pt").is_file()

    run = json.loads((out / "run.json").read_text())
    assert {"config", "versions", "device", "seeds", "inputs", "stages", "timings_s", "failures"} <= set(run)
    assert len(run["inputs"]["cases"]) == 34 and run["versions"]["torch"]
    assert run["stages"]["radiomics"]["status"] == "computed"
    assert (out / "run.log").read_text().count("radiomics") > 0


def test_report_holds_each_section(first_run):
    config, _ = first_run
    html = (Path(config.out) / "report.html").read_text()
    for section in ("cohort", "coverage", "heatmap", "explained", "classification", "cam", "failures", "run"):
        assert f'id="{section}"' in html
    assert html.count("data:image/png;base64,") >= 5  # coverage, heatmap, ROC, training, CAM gallery
    assert "internal-test" in html and "gradcam" in html
    assert "<script" not in html  # self-contained and static


def test_rerun_with_nothing_changed_recomputes_nothing(first_run):
    config, _ = first_run
    again = run_pipeline(config, progress=False)
    assert set(_statuses(again).values()) == {"cached"}
    assert all(r.seconds < 5 for r in again.stages.values())


def test_changing_m_reruns_only_the_explanation_and_what_depends_on_it(first_run, tmp_path):
    config, _ = first_run
    out = tmp_path / "run"  # a copy of the run folder: the first run stays as the other tests expect it
    shutil.copytree(config.out, out)
    changed = config_from_dict(
        {**config.to_dict(), "out": str(out), "explain": {**config.to_dict()["explain"], "thresholds": [0.7]}}
    )
    result = run_pipeline(changed, progress=False)
    statuses = _statuses(result)
    assert statuses == {
        "cohort": "cached",
        "train": "cached",
        "deep": "cached",
        "radiomics": "cached",
        "explain": "computed",
        "classify": "computed",
        "cam": "cached",
        "report": "computed",
    }
    corr = pd.read_csv(out / "correlations.csv")
    # Kept by the pooled or the within-stratum rule at the new M, or reversed: strata that disagree in
    # sign with a stratum at |rho| >= M.
    kept = corr[corr["status"] != "reversed"]
    assert (np.maximum(kept["rho"].abs(), kept["rho_within"].abs()) >= 0.7 - 1e-12).all()
    flipped = corr[corr["status"] == "reversed"]
    strongest = np.maximum(flipped["rho_stratum_min"].abs(), flipped["rho_stratum_max"].abs())
    assert (strongest >= 0.7 - 1e-12).all()


def _light(manifest: Path, out: Path, **sections) -> dict:
    """No training, classifiers or CAMs: the fast path."""
    light = {
        "models": [{"name": "resnet18", "weights": None}],
        "classification": {"enabled": False},
        "cam": {"enabled": False},
        "explain": {"permutations": 0, "bootstrap": 0},
    }
    return _settings(manifest, out, **{**light, **sections})


def test_a_run_killed_during_radiomics_resumes_to_the_same_results(cohort_manifest, tmp_path):
    config_file = tmp_path / "run.yaml"
    # the extended preset is slow enough per case to be caught in the middle of the radiomics stage
    slow = {"radiomics": {"jobs": 1, "params": "extended"}}
    reference = run_pipeline(
        config_from_dict(_light(cohort_manifest, tmp_path / "reference", **slow)), progress=False
    )
    assert reference.ok
    config_file.write_text(yaml.safe_dump(_light(cohort_manifest, tmp_path / "killed", **slow)))
    env = {**os.environ, ENV: "jsonl", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "Rad4XCNNLogic", "run", str(config_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    killed_at = None
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        event = parse_progress_line(line)
        if event and event["stage"] == "radiomics" and event["event"] == "progress" and event["done"] >= 5:
            killed_at = event["done"]
            proc.send_signal(signal.SIGKILL)
            break
        if time.monotonic() > deadline:
            break
    proc.wait(timeout=60)
    assert killed_at is not None and killed_at < 34, "the run was not caught inside the radiomics stage"
    assert not (tmp_path / "killed" / "radiomics.csv").exists()

    resumed = run_pipeline(
        config_from_dict(_light(cohort_manifest, tmp_path / "killed", **slow)), progress=False
    )
    assert resumed.ok
    assert _statuses(resumed)["deep"] == "cached"
    assert resumed.stages["radiomics"].summary["cache_hits"] >= killed_at
    for name in ("radiomics.csv", "deep_features.csv", "correlations.csv", "explanations.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "killed" / name), pd.read_csv(tmp_path / "reference" / name)
        )


def test_a_failing_stage_keeps_what_came_before_and_the_report_says_why(cohort_manifest, tmp_path, capsys):
    settings = _light(cohort_manifest, tmp_path / "run")
    settings["classification"] = {
        "enabled": True,
        "classifiers": ["rf"],
        "positive": "no-such-class",
        "cv_folds": 2,
        "n_bootstrap": 10,
    }
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    assert main(["run", str(config_file)]) == 1
    err = capsys.readouterr().err
    assert "stage classify failed:" in err and "no-such-class" in err
    out = tmp_path / "run"
    assert (out / "radiomics.csv").is_file() and (out / "explanations.csv").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["stages"]["classify"]["status"] == "failed"
    html = (out / "report.html").read_text()
    assert "Stage(s) that failed" in html and "no-such-class" in html


def test_bad_cases_and_their_names_reach_the_report_escaped(cohort_manifest, tmp_path):
    frame = pd.read_csv(cohort_manifest)
    bad = frame.iloc[0].copy()
    bad["case_id"] = "<script>alert(1)</script>"
    bad["image"] = "images/missing.png"
    frame = pd.concat([frame, bad.to_frame().T])
    frame["image"] = [str(cohort_manifest.parent / p) for p in frame["image"]]
    frame["mask"] = [str(cohort_manifest.parent / p) for p in frame["mask"]]
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    result = run_pipeline(config_from_dict(_light(manifest, tmp_path / "run")), progress=False)
    assert result.ok
    assert [f.case_id for f in result.failures] == ["<script>alert(1)</script>"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


def test_broken_configuration_names_the_key(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("manifest: m.csv\nout: run\nexplain:\n  permutation: 10\n")
    assert main(["run", str(config_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "explain.permutation: unknown key; allowed keys in explain: thresholds, fdr, permutations" in err
    assert main(["run", "--out", str(tmp_path / "x")]) == 2
    assert "manifest: a cohort manifest is required" in capsys.readouterr().err


def test_print_config_lists_every_setting(capsys):
    assert main(["run", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["explain"]["thresholds"] == [0.6]


def test_gallery_takes_internal_test_cases_first_and_alternates_classes(cohort_manifest):
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    cohort = read_manifest(cohort_manifest)
    chosen = gallery_cases(cohort, 4, seed=0)
    cases = [cohort[c] for c in chosen]
    assert all(c.split == "test" for c in cases)
    internal_test = [c for c in cohort if c.split == "test" and c.cohort == "internal"]
    assert [c.cohort for c in cases[: len(internal_test)]] == ["internal"] * min(4, len(internal_test))
    assert len({c.label for c in cases[:2]}) == 2
    assert gallery_cases(cohort, 4, seed=0) == chosen
    assert np.unique(chosen).size == 4


def test_a_bad_setting_fails_its_stage_and_the_independent_stages_still_run(cohort_manifest, tmp_path):
    settings = _light(cohort_manifest, tmp_path / "run", models=[{"name": "resnet18", "weights": "gone.pt"}])
    result = run_pipeline(config_from_dict(settings), progress=False)
    statuses = _statuses(result)
    assert statuses["deep"] == "failed"
    assert "weights file not found for resnet18" in result.stages["deep"].error
    assert statuses["radiomics"] == "computed" and statuses["explain"] == "blocked"
    assert statuses["report"] == "computed" and not result.ok
    assert (tmp_path / "run" / "radiomics.csv").is_file()


def test_stage_commands_write_byte_identical_tables(first_run, cohort_manifest, tmp_path):
    """Each stage command runs its run stage's plan: on the run's inputs and with the run's configuration
    file, no setting spelt out (strata, training cases, replicability, the random-weights control, the
    training cohort and the evaluated cohorts all come from it), it writes the very tables ``rad4xcnn run``
    wrote (docs/ARCHITECTURE.md, "Stages")."""
    import json

    from Rad4XCNNLogic.cli import main

    config, _ = first_run
    run = Path(config.out)
    other = tmp_path / "commands"
    settings = tmp_path / "run.yaml"
    settings.write_text(yaml.safe_dump(_settings(cohort_manifest, run)), encoding="utf-8")
    manifest = str(run / "cohort.csv")
    checkpoint = str(run / "models" / "resnet18.pt")
    cam_cases = json.loads((run / "run.json").read_text())["stages"]["cam"]["summary"]["cases"]
    commands = [
        ["deep", "--manifest", manifest, "--weights", checkpoint, "--input-size", "64", "--device", "cpu",
         "--out", str(other / "deep_features.csv")],
        ["radiomics", "--config", str(settings), "--manifest", manifest, "--no-cache",
         "--out", str(other / "radiomics.csv")],
        ["explain", "--config", str(settings), "--deep", str(run / "deep_features.csv"),
         "--radiomics", str(run / "radiomics.csv"), "--manifest", manifest, "--out", str(other)],
        ["classify", "--config", str(settings), "--deep", str(run / "deep_features.csv"),
         "--radiomics", str(run / "radiomics.csv"), "--manifest", manifest,
         "--explained", str(run / "explanations.csv"), "--out", str(other)],
        ["cam", "--manifest", manifest, "--weights", checkpoint, "--methods", "gradcam,eigencam",
         "--cases", ",".join(cam_cases), "--device", "cpu", "--out", str(other)],
    ]  # fmt: skip
    for argv in commands:
        assert main(["-q", *argv, "--no-progress"]) == 0, argv[0]
    # run also extracted the random-weights control (control: random), which 'deep' extracts when asked
    # for it alone: the trained backbone's columns are the very same
    from_run = pd.read_csv(run / "deep_features.csv", index_col=0)
    from_command = pd.read_csv(other / "deep_features.csv", index_col=0)
    pd.testing.assert_frame_equal(from_run[from_command.columns], from_command, check_exact=True)
    tables = [
        "radiomics.csv",
        "correlations.csv",
        "explanations.csv",
        "coverage.csv",
        "explained_by_threshold.csv",
        "heldout.csv",
        "heldout_pairs.csv",
        "control_coverage.csv",
        "radiomic_clusters.csv",
        "replicability/replicability.csv",
        "replicability/replicated_pairs.csv",
        "classification.csv",
        "roc.csv",
        "importances.csv",
    ]
    tables += sorted(str(p.relative_to(run)) for p in (run / "cam").glob("*.csv"))
    assert len(tables) > 13
    for name in tables:
        assert (other / name).read_bytes() == (run / name).read_bytes(), name
