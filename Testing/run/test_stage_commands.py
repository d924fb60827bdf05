"""The stage commands run their stage's plan: with no setting flag they use the run's settings."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.run.config import load_config


def _tables(folder, n=48, seed=0):
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"c{i:02d}" for i in range(n)], name="case_id")
    rad = pd.DataFrame(rng.normal(size=(n, 3)), index=ids)
    rad.columns = ["original_glcm_Contrast", "original_firstorder_Mean", "original_shape_Sphericity"]
    deep = pd.DataFrame(
        {
            "resnet18_0": np.exp(rad["original_glcm_Contrast"]) + rng.normal(scale=0.3, size=n),
            "resnet18_1": rng.normal(size=n),
            "resnet18-random_0": rng.normal(size=n),
            "resnet18-random_1": rad["original_firstorder_Mean"] + rng.normal(scale=0.5, size=n),
        },
        index=ids,
    )
    manifest = pd.DataFrame(
        {
            "case_id": ids,
            "image": "x.png",
            "mask": "x_mask.png",
            "label": ["benign", "malignant"] * (n // 2),
            "cohort": ["internal"] * (n - 12) + ["external"] * 12,
            "split": (["train"] * 24 + ["val"] * 6 + ["test"] * 6) + ["test"] * 12,
        }
    )
    deep.to_csv(folder / "deep_features.csv")
    rad.to_csv(folder / "radiomics.csv")
    manifest.to_csv(folder / "manifest.csv", index=False)


def _flags_of(section: dict) -> list[str]:
    """The explain command's flags that spell out ``section`` (the run's explain settings)."""
    flags = [arg for m in section["thresholds"] for arg in ("-M", str(m))]
    flags += ["--fdr", "none" if section["fdr"] is None else str(section["fdr"])]
    flags += ["--permutations", str(section["permutations"]), "--bootstrap", str(section["bootstrap"])]
    flags += ["--alpha", str(section["alpha"]), "--backend", section["backend"]]
    flags += ["--stratify", ",".join(section["stratify"]) or "none", "--cases", section["cases"]]
    return flags


def test_explain_without_setting_flags_is_explain_with_the_run_settings_spelt_out(tmp_path):
    _tables(tmp_path)
    files = ["--deep", str(tmp_path / "deep_features.csv"), "--radiomics", str(tmp_path / "radiomics.csv")]
    files += ["--manifest", str(tmp_path / "manifest.csv"), "--no-progress"]
    run = load_config()  # what 'rad4xcnn run' uses when the configuration says nothing
    spelt = [
        *_flags_of(asdict(run.explain)),
        "--train-cohort",
        run.split.train_cohort,
        "--seed",
        str(run.seed),
    ]
    assert main(["-q", "explain", *files, "--out", str(tmp_path / "bare")]) == 0
    assert main(["-q", "explain", *files, *spelt, "--out", str(tmp_path / "spelt")]) == 0
    written = sorted(p.name for p in (tmp_path / "bare").glob("*.csv"))
    assert {"correlations.csv", "explanations.csv", "heldout.csv", "control_coverage.csv"} <= set(written)
    for name in written:
        assert (tmp_path / "bare" / name).read_bytes() == (tmp_path / "spelt" / name).read_bytes(), name
    # and the run's defaults did apply: the explanation comes from the training cases, within strata
    corr = pd.read_csv(tmp_path / "bare" / "correlations.csv")
    assert "rho_within" in corr.columns
    assert set(pd.read_csv(tmp_path / "bare" / "heldout.csv")["set"]) == {"internal_test", "external"}


def test_a_stage_command_takes_the_settings_of_a_run_configuration_file(tmp_path):
    _tables(tmp_path)
    (tmp_path / "run.yaml").write_text("explain:\n  thresholds: [0.4]\n  permutations: 0\n  stratify: []\n")
    files = ["--deep", str(tmp_path / "deep_features.csv"), "--radiomics", str(tmp_path / "radiomics.csv")]
    files += ["--manifest", str(tmp_path / "manifest.csv"), "--no-progress", "--bootstrap", "0"]
    argv = ["-q", "explain", "--config", str(tmp_path / "run.yaml"), *files, "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    corr = pd.read_csv(tmp_path / "o" / "correlations.csv")
    assert "rho_within" not in corr.columns and (corr["rho"].abs() >= 0.4).all()
    assert (pd.read_csv(tmp_path / "o" / "explained_by_threshold.csv")["threshold"] == 0.4).all()
