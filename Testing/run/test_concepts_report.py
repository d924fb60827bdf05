"""The report's "Where concepts live" section: shown from the probe files of a run folder, absent without
them, names escaped."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "explain"))
from test_probes import planted_tables

from Rad4XCNNLogic.explain.probes import PROBE_COLUMNS, run_probes
from Rad4XCNNLogic.explain.settings import ProbeConfig
from Rad4XCNNLogic.explain.similarity import cka_table
from Rad4XCNNLogic.run.concepts_report import by_layer_and_family, concepts_section
from Rad4XCNNLogic.run.config import config_from_dict
from Rad4XCNNLogic.run.report import write_report


def _probe_files(folder: Path) -> None:
    deep, control, rad, train, held = planted_tables(n=100, p=12)
    result = run_probes(deep, rad, train, held, ProbeConfig(bootstrap=20), control=control)
    result.probes[list(PROBE_COLUMNS)].to_csv(folder / "probes.csv", index=False)
    groups = {("net", "layer4"): list(deep.columns)}
    cka = cka_table(
        deep,
        rad,
        groups,
        control=control,
        control_pairs=result.pairs,
        control_groups={("net-random", "layer4"): list(control.columns)},
        permutations=10,
    )
    cka.to_csv(folder / "cka.csv", index=False)
    concepts = pd.DataFrame(
        [["net", "layer4", "<b>original_firstorder_Mean</b>", "malignant", 0.8, 0.5, 0.04, 0.2, 2.5, 25]],
        columns=[
            "model",
            "layer",
            "radiomic_feature",
            "target_class",
            "tcav",
            "tcav_random_mean",
            "p",
            "derivative_mean",
            "derivative_z",
            "n_cases",
        ],
    )
    concepts.to_csv(folder / "concepts.csv", index=False)


def test_report_shows_where_concepts_live(tmp_path):
    _probe_files(tmp_path)
    section = concepts_section(tmp_path)
    assert section.measure == "selectivity"
    assert set(section.cka["kind"]) == {"radiomics", "control"}
    html = write_report(tmp_path, config_from_dict({}), {}, []).read_text(encoding="utf-8")
    assert "Where concepts live" in html
    assert "Representation similarity by layer" in html and "Concepts the classifier is sensitive to" in html
    assert "&lt;b&gt;original_firstorder_Mean&lt;/b&gt;" in html and "<b>original_firstorder_Mean" not in html
    # the most selective concept as chosen on the training folds, with the number searched and its interval
    assert section.chosen.startswith("Most selective by the training folds' cross-validated error, among 2 ")
    assert "original_firstorder_Mean in net.layer4, held-out selectivity +" in section.chosen
    assert section.chosen in html.replace("&#39;", "'")
    assert "not Hewitt and Liang's control task" in html.replace("&#39;", "'")


def test_no_probe_files_no_section(tmp_path):
    html = write_report(tmp_path, config_from_dict({}), {}, []).read_text(encoding="utf-8")
    assert "Where concepts live" not in html
    assert concepts_section(tmp_path).figure is None


def test_selectivity_by_layer_and_family_falls_back_to_r2():
    probes = pd.DataFrame(
        {
            "model": ["r", "r"],
            "layer": ["layer2", "layer2"],
            "radiomic_feature": ["original_shape2D_Elongation", "age"],
            "r2": [0.3, 0.1],
            "selectivity": [float("nan"), float("nan")],
        }
    )
    table, what = by_layer_and_family(probes)
    assert what == "r2"
    assert table.loc["r.layer2", "shape2D"] == 0.3 and table.loc["r.layer2", "other"] == 0.1
