"""``rad4xcnn probe``: probes.csv and cka.csv from the tables a user names, the manifest's splits, and
one-line errors for too few training cases and a control table of other cases."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_probes import ENCODED, NOWHERE, planted_tables

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.explain.probes import PROBE_COLUMNS
from Rad4XCNNLogic.explain.similarity import CKA_COLUMNS


def _write_inputs(tmp_path, n=160, p=24, n_train=None):
    deep, control, rad, _, _ = planted_tables(n=n, p=p)
    ids = list(deep.index)
    n_train = n_train if n_train is not None else n // 2
    split = ["train"] * n_train + ["test"] * (n - n_train)
    cohort = ["internal"] * n
    # the last ten cases are another cohort: held out whatever their split column says is empty
    for i in range(n - 10, n):
        split[i], cohort[i] = "", "external"
    manifest = pd.DataFrame(
        {"case_id": ids, "image": [f"{c}.png" for c in ids], "mask": [f"{c}_m.png" for c in ids]}
    ).assign(label="benign", split=split, cohort=cohort)
    paths = {name: tmp_path / f"{name}.csv" for name in ("manifest", "deep", "rad", "control")}
    manifest.to_csv(paths["manifest"], index=False)
    deep.to_csv(paths["deep"], index_label="case_id")
    rad.to_csv(paths["rad"], index_label="case_id")
    control.to_csv(paths["control"], index_label="case_id")
    return paths


def _args(paths, out, *extra):
    return [
        "probe",
        "--deep",
        str(paths["deep"]),
        "--radiomics",
        str(paths["rad"]),
        "--manifest",
        str(paths["manifest"]),
        "--out",
        str(out),
        *extra,
    ]


def test_probe_command_writes_probes_and_cka(tmp_path, capsys):
    paths = _write_inputs(tmp_path)
    out = tmp_path / "out"
    extra = ["--control", str(paths["control"]), "--bootstrap", "200", "--permutations", "50", "--folds", "4"]
    assert main(_args(paths, out, *extra)) == 0
    printed = capsys.readouterr().out
    assert "80 training and 80 held-out cases" in printed
    assert f"most selective by CV of 2: {ENCODED} (held-out R²" in printed
    probes = pd.read_csv(out / "probes.csv")
    assert tuple(probes.columns) == PROBE_COLUMNS
    table = probes.set_index("radiomic_feature")
    assert table.loc[ENCODED, "selectivity"] > 0.3 and table.loc[ENCODED, "r2"] > 0.5
    assert table.loc[NOWHERE, "r2_ci_low"] <= 0 <= table.loc[NOWHERE, "r2_ci_high"]
    cka = pd.read_csv(out / "cka.csv", keep_default_na=False)
    assert tuple(cka.columns) == CKA_COLUMNS
    assert set(cka["kind"]) == {"radiomics", "control"}
    settings = json.loads((out / "probes.json").read_text())
    assert settings["folds"] == 4 and settings["controls"] == {"net.layer4": "net-random.layer4"}
    assert sum(settings["penalty_chosen"].values()) == 2
    assert settings["searched"] == 2 and settings["ranked_by"].startswith("cv_selectivity")
    hit = table.loc[ENCODED]
    assert (
        hit["selectivity_ci_low"] < hit["selectivity"] < hit["selectivity_ci_high"]
        and hit["cv_selectivity"] > 0.3
    )


def test_penalties_flag_and_its_rule(tmp_path, capsys):
    paths = _write_inputs(tmp_path, n=80, p=8)
    out = tmp_path / "out"
    assert main(_args(paths, out, "--penalties", "1,100", "--bootstrap", "0", "--permutations", "0")) == 0
    assert json.loads((out / "probes.json").read_text())["penalties"] == [1.0, 100.0]
    probes = pd.read_csv(out / "probes.csv")
    assert probes["r2_ci_low"].isna().all() and probes["selectivity"].isna().all()  # no control, no bootstrap
    with pytest.raises(SystemExit) as exc:
        main(_args(paths, out, "--penalties", "1,-5"))
    assert exc.value.code == 2
    assert "--penalties" in capsys.readouterr().err


def test_too_few_training_cases_is_one_line(tmp_path, capsys):
    paths = _write_inputs(tmp_path, n=40, p=8, n_train=7)
    assert main(_args(paths, tmp_path / "out", "--folds", "5")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "too few training cases for 5-fold cross-validation of the probes: 7" in err


def test_control_with_other_case_ids_is_one_line(tmp_path, capsys):
    paths = _write_inputs(tmp_path, n=40, p=8)
    control = pd.read_csv(paths["control"], index_col=0)
    control.index = [f"other{i}" for i in range(len(control))]
    control.to_csv(paths["control"], index_label="case_id")
    assert main(_args(paths, tmp_path / "out", "--control", str(paths["control"]))) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the control table has other case ids" in err
    assert not (tmp_path / "out" / "probes.csv").exists()


def test_missing_table_is_named(tmp_path, capsys):
    paths = _write_inputs(tmp_path, n=40, p=8)
    paths["deep"] = tmp_path / "absent.csv"
    assert main(_args(paths, tmp_path / "out")) == 1
    assert "deep feature table not found" in capsys.readouterr().err
