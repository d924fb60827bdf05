"""Result nodes of the module on real MRML: importance order, a case's table and CAM, export of a case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import slicer  # a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import masks, overlays, tables
from Rad4XCNNLib import parameters as settings
from Rad4XCNNLib import results as mrml_results

from Rad4XCNNLogic.cohort.imageio import Image2D, write_image
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.explanation import explain, write_explanation
from Rad4XCNNLogic.explain.settings import ExplainConfig

RADIOMIC = ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape2D_Elongation"]


@pytest.fixture
def run(tmp_path):
    """A run folder with planted relations: cnn_0 ~ Mean, cnn_1 ~ -Contrast, cnn_2 unrelated; importances
    rank cnn_1 above cnn_0."""
    rng = np.random.default_rng(4)
    cases = [f"c{i:02d}" for i in range(30)]
    radiomics = pd.DataFrame(
        rng.normal(size=(30, 3)), index=pd.Index(cases, name="case_id"), columns=RADIOMIC
    )
    deep = pd.DataFrame(
        {
            "cnn_0": radiomics[RADIOMIC[0]] * 2 + rng.normal(scale=0.6, size=30),
            "cnn_1": -radiomics[RADIOMIC[1]] + rng.normal(scale=0.3, size=30),
            "cnn_2": rng.normal(size=30),
        },
        index=radiomics.index,
    )
    folder = tmp_path / "run"
    write_explanation(
        explain(
            deep,
            radiomics,
            ExplainConfig(thresholds=[0.6], bootstrap=0, backend="numpy", fdr=None, permutations=0),
        ),
        folder,
    )
    radiomics.to_csv(folder / "radiomics.csv")
    pd.DataFrame(
        {
            "feature_set": ["deep"] * 3,
            "classifier": ["rf"] * 3,
            "feature": ["cnn_0", "cnn_1", "cnn_2"],
            "importance_mean": [0.2, 0.5, 0.1],
        }
    ).to_csv(folder / "importances.csv", index=False)
    return folder


@pytest.fixture
def scene():
    env = mb.headless_slicer()
    volume = mb.volume_node_from_image(
        Image2D(np.random.default_rng(1).normal(size=(20, 24)).astype(np.float32), spacing=(0.2, 0.2)), "c05"
    )
    mask = np.zeros((20, 24), bool)
    mask[6:12, 8:16] = True
    segmentation = masks.segmentation_from_mask(mask, volume, "c05 segmentation")
    node = settings.parameter_node(env.scene)
    settings.write_all(node, {"CaseImage": volume, "CaseMask": segmentation, "CaseSegment": "lesion"})
    return env, node, volume, segmentation, mask


def test_run_tables_follow_importance_and_m(run, scene):
    _, node, *_ = scene
    results = mrml_results.load_run(run)
    results, summary = mrml_results.show_run(results, node, 0.6)
    assert summary.startswith("cnn: 2 of 3 varying deep features explained at M = 0.60")
    ranked = results.ranked_deep_features(2)
    assert list(ranked.index) == ["cnn_1", "cnn_0"]
    table = tables.dataframe_from_table_node(settings.get(node, "ExplanationsTable"))
    assert table.loc["cnn_0", "strongest_partner"] == RADIOMIC[0]
    assert settings.get(node, "ClassificationTable") is None  # no classification.csv in this run
    results, summary = mrml_results.apply_threshold(results, node, 0.99)
    assert "0 of 3" in summary
    assert tables.dataframe_from_table_node(settings.get(node, "CorrelationsTable"), index_col=None).empty


def test_a_new_run_adds_its_own_nodes_and_keeps_the_previous_ones(run, scene, tmp_path):
    import shutil

    env, node, *_ = scene
    first, second = shutil.copytree(run, tmp_path / "first"), shutil.copytree(run, tmp_path / "second")
    mrml_results.show_run(mrml_results.load_run(first), node, 0.6)
    kept = {ref: settings.get(node, ref) for ref in ("ExplanationsTable", "CoverageChart", "RhoChart")}
    mrml_results.show_run(mrml_results.load_run(first), node, 0.8)  # the same run again: refilled
    assert all(settings.get(node, ref) is n for ref, n in kept.items())
    mrml_results.show_run(mrml_results.load_run(second), node, 0.6)
    assert settings.get(node, "ExplanationsTable").GetName() == "second explanations"
    assert kept["ExplanationsTable"].GetName() == "first explanations"
    assert kept["ExplanationsTable"].GetScene() is env.scene  # still there, as it was
    assert kept["CoverageChart"].GetName() == "first coverage"
    assert settings.get(node, "CoverageChart").GetName() == "second coverage"
    # with Reuse outputs, the next run refills the nodes of the previous one
    settings.set_value(node, "ReuseOutputs", True)
    latest = settings.get(node, "ExplanationsTable")
    mrml_results.show_run(mrml_results.load_run(first), node, 0.6)
    assert settings.get(node, "ExplanationsTable") is latest and latest.GetName() == "first explanations"


def test_m_works_at_once_after_a_saved_scene_loads(run, scene):
    """The scene holds the result nodes and the run folder but no correlations yet: M re-reads the folder."""
    _, node, *_ = scene
    settings.set_value(node, "OutputFolder", str(run))
    mrml_results.show_run(mrml_results.load_run(run), node, 0.6)
    table = settings.get(node, "ExplanationsTable")
    results, summary = mrml_results.apply_threshold(None, node, 0.99)
    assert "0 of 3" in summary and results.threshold == 0.99
    assert settings.get(node, "ExplanationsTable") is table  # the saved scene's nodes, refilled


def test_probe_tables_become_table_nodes(run, scene):
    import pandas as pd

    _, node, *_ = scene
    assert mrml_results.show_concept_tables(run, node) == []  # no probe run yet
    probes = pd.DataFrame(
        {
            "model": ["cnn"],
            "layer": ["layer3"],
            "radiomic_feature": [RADIOMIC[0]],
            "r2": [0.61],
            "r2_ci_low": [0.5],
            "r2_ci_high": [0.7],
            "r2_control": [0.1],
            "selectivity": [0.51],
        }
    )
    probes.to_csv(run / "probes.csv", index=False)
    pd.DataFrame({"kind": ["radiomics"], "model_a": ["cnn"], "cka": [0.4]}).to_csv(
        run / "cka.csv", index=False
    )
    try:
        mrml_results.show_run(mrml_results.load_run(run), node, 0.6)
        table = tables.dataframe_from_table_node(settings.get(node, "ProbesTable"), index_col=None)
        assert list(table.columns) == list(probes.columns) and table.loc[0, "selectivity"] == pytest.approx(
            0.51
        )
        cka = tables.dataframe_from_table_node(settings.get(node, "CkaTable"), index_col=None)
        assert cka.loc[0, "cka"] == 0.4
        assert settings.get(node, "ConceptsTable") is None  # no concepts.csv
        assert settings.get(node, "ProbesTable").GetName() == "run probes"  # named after the run folder
    finally:
        (run / "probes.csv").unlink()
        (run / "cka.csv").unlink()


def test_case_table_and_cam(run, scene, tmp_path):
    _, node, volume, *_ = scene
    results = mrml_results.load_run(run, threshold=0.6)
    settings.write_all(node, {"TopFeatures": 1, "CamOpacity": 0.3, "CamMethod": "eigencam"})
    case = tmp_path / "case"
    pd.DataFrame(
        {name: [value] for name, value in zip(RADIOMIC, [1.5, -0.2, 0.0], strict=True)}, index=["c05"]
    ).to_csv(case.mkdir() or case / "radiomics.csv")
    cam = np.zeros((20, 24), np.float32)
    cam[8, 10] = 5.0
    write_image(case / "cam" / "c05_eigencam.nrrd", cam, like=mb.image_from_volume_node(volume))
    summary = mrml_results.show_case(results, node, case)
    assert "eigencam map shown over c05" in summary
    assert "1 of the 1 most important deep features explained" in summary
    table = tables.dataframe_from_table_node(settings.get(node, "CaseTable"), index_col=None)
    assert table["deep_feature"].tolist() == ["cnn_1"]  # the most important deep feature only
    assert table["radiomic_feature"].tolist() == [RADIOMIC[1]]
    assert table.loc[0, "case_value"] == -0.2
    cohort = pd.read_csv(run / "radiomics.csv", index_col=0)[RADIOMIC[1]]
    assert table.loc[0, "percentile"] == pytest.approx(100 * (cohort < -0.2).mean())
    overlay = settings.get(node, "CamVolume")
    shown = mb.image_from_volume_node(overlay).array
    assert np.unravel_index(shown.argmax(), shown.shape) == (8, 10)
    assert overlays.slice_layers()[0]["opacity"] == pytest.approx(0.3)


def test_export_case_from_a_segment_or_a_labelmap(scene, tmp_path):
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    _, node, volume, _, mask = scene
    manifest = mrml_results.export_case(settings.read_all(node), tmp_path / "a")
    loaded = read_manifest(manifest, check_images=True).cases[0].load()
    assert np.array_equal(loaded.mask, mask) and loaded.image.spacing == (0.2, 0.2)
    labelmap = mb.volume_node_from_array(
        mask.astype(np.uint8), volume, "lm", node_class="vtkMRMLLabelMapVolumeNode"
    )
    settings.set_value(node, "CaseMask", labelmap)
    manifest = mrml_results.export_case(settings.read_all(node), tmp_path / "b")
    assert np.array_equal(read_manifest(manifest).cases[0].load().mask, mask)


def test_case_errors(scene, tmp_path):
    env, node, volume, *_ = scene
    values = settings.read_all(node)
    with pytest.raises(Rad4XCNNError, match="choose the run folder of the cohort"):
        mrml_results.case_command(values, tmp_path / "x")
    with pytest.raises(Rad4XCNNError, match="choose the case's image volume"):
        mrml_results.export_case({**values, "CaseImage": None}, tmp_path)
    with pytest.raises(Rad4XCNNError, match="segmentation or labelmap"):
        mrml_results.export_case({**values, "CaseMask": None}, tmp_path)
    empty = masks.segmentation_from_mask(np.zeros((20, 24), bool), volume, "empty")
    with pytest.raises(Rad4XCNNError, match="lesion of 'c05' is empty"):
        mrml_results.export_case({**values, "CaseMask": empty}, tmp_path)
    with pytest.raises(Rad4XCNNError, match="choose the run folder"):
        mrml_results.load_run("")
    args = mrml_results.case_command({**values, "OutputFolder": str(tmp_path)}, tmp_path / "y")
    assert args[:2] == ["case", "--manifest"] and args[args.index("--cam") + 1] == "gradcam"
    from Rad4XCNNLogic.cli import build_parser

    parsed = build_parser().parse_args(args)  # the command line the module starts is one the CLI accepts
    assert parsed.func.__name__ == "cmd_case" and parsed.weights == "imagenet"
    assert slicer.mrmlScene is env.scene


# ------------------------------------------------------------------------ a run that outlives its scene
def _finished_job():
    import sys

    from Rad4XCNNLib.background import BackgroundJob

    job = BackgroundJob([sys.executable, "-c", "pass"]).start()
    assert job.wait(timeout=60) == 0
    return job


def _case_folder(folder, volume):
    pd.DataFrame(
        {name: [value] for name, value in zip(RADIOMIC, [1.5, -0.2, 0.0], strict=True)}, index=["c05"]
    ).to_csv(folder.mkdir() or folder / "radiomics.csv")
    cam = np.zeros((20, 24), np.float32)
    cam[8, 10] = 5.0
    write_image(folder / "cam" / "c05_gradcam.nrrd", cam, like=mb.image_from_volume_node(volume))
    return folder


def test_cohort_results_load_from_the_run_folder_after_the_scene_closed(run, scene):
    from Rad4XCNNLib.session import RunSession

    env, node, *_ = scene
    settings.write_all(node, {"OutputFolder": str(run), "Threshold": 0.6})
    job = _finished_job()
    session = RunSession("cohort", job, run, settings.read_all(node), node)
    env.scene.Clear(0)  # File > Close Scene while the run went on: the parameter node is reset in place
    current = settings.parameter_node(env.scene)
    assert settings.get(current, "OutputFolder") == "" and settings.get(current, "Threshold") == 0.6
    settings.set_value(current, "Threshold", 0.99)  # the new scene's M is not the run's
    _, summary = session.finish(current)
    assert summary.startswith("cnn: 2 of 3 varying deep features explained at M = 0.60")
    assert settings.get(current, "OutputFolder") == str(run)
    assert settings.get(current, "ExplanationsTable").GetScene() is env.scene
    assert run.is_dir()  # a cohort's run folder is never removed


def test_m_moved_during_a_run_applies_when_the_scene_stayed(run, scene):
    from Rad4XCNNLib.session import RunSession

    _, node, *_ = scene
    settings.write_all(node, {"OutputFolder": str(run), "Threshold": 0.6})
    session = RunSession("cohort", _finished_job(), run, settings.read_all(node), node)
    settings.set_value(node, "Threshold", 0.99)
    _, summary = session.finish(node)
    assert "0 of 3" in summary


def test_a_case_whose_image_left_the_scene_is_shown_without_its_cam(run, scene, tmp_path):
    from Rad4XCNNLib.session import RunSession

    env, node, volume, *_ = scene
    settings.write_all(node, {"OutputFolder": str(run), "TopFeatures": 1, "CamMethod": "gradcam"})
    folder = _case_folder(tmp_path / "case", volume)
    session = RunSession("case", _finished_job(), folder, settings.read_all(node), node, temporary=True)
    env.scene.Clear(0)
    current = settings.parameter_node(env.scene)
    results, summary = session.finish(current)  # no image: no AttributeError, the table is still shown
    assert "image is no longer in the scene" in summary and f"kept in {folder}" in summary
    assert settings.get(current, "CamVolume") is None
    table = tables.dataframe_from_table_node(settings.get(current, "CaseTable"), index_col=None)
    assert table["deep_feature"].tolist() == ["cnn_1"]
    assert folder.is_dir() and results.folder == run


def test_a_shown_case_folder_is_removed(run, scene, tmp_path):
    from Rad4XCNNLib.session import RunSession

    _, node, volume, *_ = scene
    settings.write_all(node, {"OutputFolder": str(run), "TopFeatures": 1, "CamMethod": "gradcam"})
    folder = _case_folder(tmp_path / "case", volume)
    session = RunSession("case", _finished_job(), folder, settings.read_all(node), node, temporary=True)
    _, summary = session.finish(node)
    assert "gradcam map shown over c05" in summary
    assert settings.get(node, "CamVolume") is not None
    assert not folder.exists()
    with pytest.raises(ValueError, match="unknown run kind 'probe'"):
        RunSession("probe", session.job, folder)


def test_the_demo_button_runs_the_engines_demo(tmp_path):
    """ "Try the demo cohort" runs ``rad4xcnn demo`` (synthetic cohort, then the whole pipeline), and the
    session reads its results where the demo writes them."""
    from Rad4XCNNLib.session import demo_command

    from Rad4XCNNLogic.cli import build_parser

    args, run_folder = demo_command(tmp_path / "demo")
    parsed = build_parser().parse_args(args)
    assert parsed.func.__name__ == "cmd_demo" and parsed.out == str(tmp_path / "demo")
    assert run_folder == tmp_path / "demo" / "run"
