"""Self-test scenarios of the Slicer module, written once and run in two places.

Slicer's test runner runs them through ``Rad4XCNNTest`` (in ``Rad4XCNN/Rad4XCNN.py``); the pytest suite
runs each one on the ``slicer-core`` wheel with real MRML classes (``Testing/slicer_side/test_scenarios.py``).
They work
on ``slicer.mrmlScene`` and ``slicer.modules``, whichever application set them up, on a small synthetic
cohort that the scenario writes itself. A failed check raises :class:`ScenarioError` saying what was expected.

:func:`run_default` is the default self-test, fit for Slicer's extension build machines: it installs
nothing; the scenarios on a case made in the scene need only what 3D Slicer ships (numpy, scipy, MRML), those
on a cohort of files need the module's own packages (pandas, ...), and a tiny engine job runs only when the
engine's packages are there: a scenario whose packages are missing says so and why instead of running.
:func:`run_all` is the full scenario (every engine command and the case's Grad-CAM); the Slicer self-test
runs it when the environment variable ``RAD4XCNN_FULL_SELFTEST=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from Rad4XCNNLib import bridge, masks, overlays, plots, tables

#: Size of the synthetic cohort: enough cases for Spearman's rho to mean something, small enough to be quick.
N_CASES = 24
SHAPE = (96, 120)
#: The switch that makes Slicer's self-test run :func:`run_all` (and install what it needs) instead of
#: :func:`run_default`.
FULL_SELF_TEST_ENV = "RAD4XCNN_FULL_SELFTEST"
#: Called while a scenario waits for an engine process; Slicer's self-test sets ``slicer.app.processEvents``
#: so that the GUI keeps responding (None: just wait).
wait_idle = None


class ScenarioError(AssertionError):
    """A self-test scenario found something other than what it expected."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioError(message)


@dataclass
class LoadedScene:
    """One case in the scene, as a user would have it: an image volume and its segmentation (``manifest``:
    the cohort file it was loaded from, None for a case made in the scene)."""

    case_id: str
    volume: object
    segmentation: object
    segment_id: str
    manifest: Path | None = None


def case_in_the_scene(seed: int = 0) -> LoadedScene:
    """Scenario A: the SampleData module's synthetic case, made in memory and put into the scene as a
    single-slice volume and a segmentation; the scene offers them as an image/segmentation pair and the
    segment reads back as the lesion. Needs only what 3D Slicer ships."""
    from Rad4XCNNLib import sampledata

    (pair,) = sampledata.load_cases(1, seed=seed)
    mask = masks.mask_from_segment(pair.segmentation, None, pair.volume)
    _check(mask.any() and pair.label == "benign", "the sample case has no lesion or no label")
    return LoadedScene(pair.case_id, pair.volume, pair.segmentation, pair.segment_id)


def parameter_node_rules() -> object:
    """Scenario B: the module's parameter node holds its defaults, keeps a value, and refuses a bad one by
    the engine's own rule for that setting (M in (0, 1], a known CAM method)."""
    from Rad4XCNNLib import parameters as settings
    from Rad4XCNNLogic.errors import Rad4XCNNError

    node = settings.parameter_node(slicer.mrmlScene)
    _check(settings.get(node, "Threshold") == 0.6, "M does not default to 0.6")
    settings.set_value(node, "Threshold", 0.7)
    _check(settings.parameter_node(slicer.mrmlScene) is node, "a second parameter node was made")
    _check(settings.get(node, "Threshold") == 0.7, "M was not kept")
    for name, bad in (("Threshold", 2.0), ("CamMethod", "no-such-cam")):
        try:
            settings.set_value(node, name, bad)
        except Rad4XCNNError:
            continue
        raise ScenarioError(f"{name} = {bad!r} was accepted")
    settings.set_value(node, "Threshold", 0.6)
    return node


def make_cohort(folder: Path, n: int = N_CASES, seed: int = 0) -> Path:
    """Scenario 0: write a small synthetic breast-ultrasound cohort (NRRD, 0.1 mm pixels); its manifest."""
    from Rad4XCNNLogic.cohort.manifest import read_manifest
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    manifest = make_synthetic_cohort(Path(folder) / "cohort", n=n, seed=seed, shape=SHAPE, fmt="nrrd")
    cohort = read_manifest(manifest, check_images=True)
    _check(len(cohort) == n and not cohort.failures, f"expected {n} good synthetic cases, got {len(cohort)}")
    return manifest


def load_image_and_segmentation(manifest: Path, index: int = 0) -> LoadedScene:
    """Scenario 1: load a case's image and mask files with Slicer's readers; the mask becomes a segmentation.

    Checks that the volume read by Slicer is the image the engine reads (pixels and geometry) and that the
    segment is the mask.
    """
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    case = read_manifest(manifest).cases[index]
    loaded = case.load()
    volume = bridge.load_volume_file(case.image, case.case_id)
    labelmap = bridge.load_volume_file(case.masks[0], f"{case.case_id} mask", labelmap=True)
    _check(labelmap.IsA("vtkMRMLLabelMapVolumeNode"), "the mask is not a labelmap")
    scene = slicer.mrmlScene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{case.case_id} segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    _check(
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation),
        "the labelmap could not be imported into a segmentation",
    )
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    segmentation.GetSegmentation().GetSegment(segment_id).SetName("lesion")
    scene.RemoveNode(labelmap)

    image = bridge.image_from_volume_node(volume)
    _check(image.shape == loaded.image.shape, f"image shape {image.shape} != {loaded.image.shape}")
    _check(np.array_equal(image.array, loaded.image.array), "the pixels Slicer read differ from the engine's")
    _check(
        np.allclose(image.spacing, loaded.image.spacing) and np.allclose(image.origin, loaded.image.origin),
        f"geometry differs: Slicer {image.spacing}/{image.origin}, "
        f"engine {loaded.image.spacing}/{loaded.image.origin}",
    )
    return LoadedScene(case.case_id, volume, segmentation, segment_id, Path(manifest))


def export_mask(scene_case: LoadedScene, folder: Path) -> Path:
    """Scenario 2: export the segment as a mask in the image's geometry and as a cohort the engine reads.

    Returns the exported manifest; its case must load with the original image and mask.
    """
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    mask = masks.mask_from_segment(scene_case.segmentation, "lesion", scene_case.volume)
    original = next(
        c for c in read_manifest(scene_case.manifest).cases if c.case_id == scene_case.case_id
    ).load()
    _check(mask.shape == original.mask.shape, f"mask shape {mask.shape} != {original.mask.shape}")
    _check(np.array_equal(mask, original.mask), "the exported mask differs from the mask file")
    pairs = [p for p in masks.scene_image_segmentation_pairs() if p.volume is scene_case.volume]
    _check(len(pairs) == 1, "the loaded image and segmentation are not found as a pair in the scene")
    manifest = masks.export_scene_cohort(pairs, Path(folder) / "exported")
    (case,) = read_manifest(manifest, check_images=True).cases
    exported = case.load()
    _check(np.array_equal(exported.mask, original.mask), "the exported cohort's mask differs")
    _check(np.allclose(exported.image.array, original.image.array), "the exported cohort's image differs")
    _check(np.allclose(exported.image.spacing, original.image.spacing), "the exported image lost its spacing")
    return manifest


def _run_engine(name: str, *args: str, timeout: float = 900.0):
    """Run one engine command as the module does (a background process with progress); the finished job."""
    from Rad4XCNNLib.background import BackgroundJob, engine_command

    job = BackgroundJob(engine_command(*args), env=bridge.engine_process_environment()).start()
    code = job.wait(timeout=timeout, idle=wait_idle)
    if code is None:
        job.cancel()
    _check(code == 0, f"{name} failed: {job.error_message() or 'timed out'}\n{job.log_text()[-2000:]}")
    return job


def _explained_at(rho: np.ndarray, threshold: float) -> int:
    """How many deep features have a radiomic partner with |rho| >= M, straight from the rho matrix."""
    best = np.where(np.isnan(rho), -1.0, np.abs(rho)).max(axis=1) if rho.shape[1] else np.full(len(rho), -1.0)
    return int((best >= threshold - 1e-12).sum())


def run_small_correlation(manifest: Path, folder: Path, threshold: float = 0.6):
    """Scenario 3: radiomic and deep features of the cohort and their Spearman correlations, computed by the
    engine's commands in background processes (as the module runs them), then read back for a new M.

    Deep features come from a randomly initialised ResNet-18 (no weights are downloaded). Returns the run's
    :class:`~Rad4XCNNLogic.run.results.RunResults`.
    """
    import pandas as pd
    from scipy import stats

    from Rad4XCNNLogic.run.results import RunResults

    run = Path(folder) / "run"
    job = _run_engine(
        "radiomics", "radiomics", "--manifest", str(manifest), "--out", str(run / "radiomics.csv")
    )
    _check(
        job.progress.stage == "radiomics" and job.progress.done == job.progress.total, "no radiomics progress"
    )
    _run_engine(
        "deep features",
        *("deep", "--manifest", str(manifest), "--out", str(run / "deep_features.csv")),
        *("--model", "resnet18", "--input-size", "64", "--device", "cpu"),
    )
    _run_engine(
        "correlation",
        *("explain", "--deep", str(run / "deep_features.csv"), "--radiomics", str(run / "radiomics.csv")),
        # the paper's rule alone (no FDR) and no permutation null: the check below recounts |rho| >= M
        *("--out", str(run), "--threshold", str(threshold), "--bootstrap", "0", "--fdr", "none"),
        *("--permutations", "0"),
    )
    results = RunResults.load(run)
    deep = pd.read_csv(run / "deep_features.csv", index_col=0)
    radiomics = pd.read_csv(run / "radiomics.csv", index_col=0)
    rho = results.rho
    _check(rho.shape == (deep.shape[1], radiomics.shape[1]), f"rho is {rho.shape}, not deep x radiomic")
    # one pair checked against SciPy, on the tables the engine wrote
    i, j = np.unravel_index(int(np.nanargmax(np.abs(rho))), rho.shape)
    expected = stats.spearmanr(deep.iloc[:, i], radiomics.loc[deep.index].iloc[:, j]).statistic
    _check(abs(rho[i, j] - expected) < 1e-6, f"rho {rho[i, j]:.6f} differs from SciPy's {expected:.6f}")
    for m in (threshold, 0.8):
        at_m = results.with_threshold(m)
        explained = int((at_m.explanations["status"] == "explained").sum())
        _check(explained == _explained_at(rho, m), f"at M = {m}: {explained} explained, rho says otherwise")
    fractions = results.coverage().to_numpy()
    _check(bool(np.all(np.diff(fractions, axis=0) <= 1e-12)), "the coverage curve rises with M")
    return results


def fill_tables_and_plots(results, threshold: float = 0.6, new_threshold: float = 0.8):
    """Scenario 4: the run's tables and plots as Slicer nodes, and a new M applied to the same nodes.

    Returns the module's parameter node, which references the result nodes.
    """
    from Rad4XCNNLib import parameters as settings
    from Rad4XCNNLib import results as mrml_results

    scene = slicer.mrmlScene
    node = settings.parameter_node(scene)
    settings.set_value(node, "OutputFolder", str(results.folder))
    results, _ = mrml_results.show_run(results, node, threshold)
    rho = results.rho
    table = tables.dataframe_from_table_node(settings.get(node, "ExplanationsTable"))
    _check(len(table) == rho.shape[0], f"the explanations table has {len(table)} rows, not {rho.shape[0]}")
    _check(
        int((table["status"] == "explained").sum()) == _explained_at(rho, threshold), "wrong explained count"
    )
    pairs = tables.dataframe_from_table_node(settings.get(node, "CorrelationsTable"), index_col=None)
    _check(len(pairs) == min(len(results.correlations), mrml_results.MAX_TABLE_ROWS), "correlation rows lost")
    _check(bool((pairs["rho"].abs() >= threshold - 1e-12).all()), "a kept pair has |rho| < M")
    coverage = settings.get(node, "CoverageChart")
    for model, fractions in results.coverage().items():
        _, y = plots.series_values(coverage, str(model))
        _check(np.allclose(y, fractions.to_numpy(), equal_nan=True), f"coverage of {model} differs")
    histogram = settings.get(node, "RhoChart")
    _, below = plots.series_values(histogram, "below M")
    _, above = plots.series_values(histogram, "|rho| >= M")
    _check(int(below.sum() + above.sum()) == int(np.isfinite(rho).sum()), "the histogram lost rho values")
    tables.show_table(settings.get(node, "ExplanationsTable"))
    plots.show_chart(coverage)
    selection = bridge.application_logic().GetSelectionNode()
    _check(selection.GetActiveTableID() == settings.get(node, "ExplanationsTable").GetID(), "table not shown")
    _check(selection.GetActivePlotChartID() == coverage.GetID(), "coverage plot not shown")

    # the M slider: the same nodes refilled from the stored rho, nothing recomputed, no node added
    ids = {ref: settings.get(node, ref).GetID() for ref in ("ExplanationsTable", "CoverageChart", "RhoChart")}
    n_nodes = scene.GetNumberOfNodes()
    results, _ = mrml_results.apply_threshold(results, node, new_threshold)
    _check(scene.GetNumberOfNodes() == n_nodes, "moving M added nodes")
    _check(all(settings.get(node, ref).GetID() == i for ref, i in ids.items()), "moving M replaced nodes")
    table = tables.dataframe_from_table_node(settings.get(node, "ExplanationsTable"))
    _check(int((table["status"] == "explained").sum()) == _explained_at(rho, new_threshold), "M not applied")
    marker, _ = plots.series_values(coverage, "M")
    _check(np.allclose(marker, new_threshold), "the coverage plot's M marker did not move")
    centres, counts = plots.series_values(histogram, "below M")
    _check(not bool(((np.abs(centres) >= new_threshold) & (counts > 0)).any()), "histogram not split at M")
    return node


def explain_case(scene_case: LoadedScene, parameter_node, results, folder: Path):
    """Scenario 6: one case against the cohort (the Case panel): export it, compute its radiomic features
    (with the run's parameters) and its Grad-CAM in the background, fill the case table and show the CAM.

    The CAM comes from a randomly initialised ResNet-18 (nothing is downloaded): its map checks the plumbing,
    not the network. Returns the case table and the CAM array.
    """
    import pandas as pd

    from Rad4XCNNLib import parameters as settings
    from Rad4XCNNLib import results as mrml_results

    settings.write_all(
        parameter_node,
        {
            "CaseImage": scene_case.volume,
            "CaseMask": scene_case.segmentation,
            "CaseSegment": "lesion",
            "Backbone": "resnet18",
            "WeightsSource": "random",
            "Device": "cpu",
            "CamMethod": "gradcam",
            "CamOpacity": 0.45,
        },
    )
    case_folder = Path(folder) / "case"
    values = settings.read_all(parameter_node)
    args = mrml_results.case_command(values, case_folder)
    _run_engine("the case", *args)
    summary = mrml_results.show_case(results, parameter_node, case_folder)
    table = tables.dataframe_from_table_node(settings.get(parameter_node, "CaseTable"), index_col=None)
    _check(len(table) > 0, f"the case table is empty ({summary})")
    cohort = pd.read_csv(Path(results.folder) / "radiomics.csv", index_col=0)
    row = table.iloc[0]
    # the case is one of the cohort: its values must be the cohort's own values for that case
    own = cohort.loc[scene_case.case_id, row["radiomic_feature"]]
    _check(abs(row["case_value"] - own) <= 1e-6 * max(1.0, abs(own)), "the case's radiomic value differs")
    values = cohort[row["radiomic_feature"]].dropna()
    expected = 100.0 * ((values < own).sum() + 0.5 * (values == own).sum()) / len(values)
    _check(abs(row["percentile"] - expected) < 1e-9, "wrong percentile of the case in the cohort")
    _, cam = mrml_results.read_case_outputs(case_folder)
    _check(cam is not None, "the case command wrote no CAM")
    overlay = settings.get(parameter_node, "CamVolume")
    _check(overlay is not None, "the CAM is not shown")
    _check(
        np.allclose(bridge.ijk_to_ras_array(overlay), bridge.ijk_to_ras_array(scene_case.volume)),
        "the case's CAM is not in the image's geometry",
    )
    layers = overlays.slice_layers()
    _check(all(abs(layer["opacity"] - 0.45) < 1e-9 for layer in layers), "opacity not applied")
    return table, cam


def lesion_map(scene_case: LoadedScene) -> np.ndarray:
    """A smooth map peaking inside the lesion: a stand-in for a CAM, to check the overlay's placement."""
    from scipy import ndimage

    mask = masks.mask_from_segment(scene_case.segmentation, "lesion", scene_case.volume)
    inside = ndimage.distance_transform_edt(mask)
    return ndimage.gaussian_filter(inside, sigma=3.0)


def add_cam_overlay(scene_case: LoadedScene, cam: np.ndarray | None = None, opacity: float = 0.4):
    """Scenario 5: show a CAM over the image: heat colours, foreground layer, the image's geometry.

    ``cam`` is a map of the image's pixel grid, e.g. the Grad-CAM of :func:`explain_case`; it defaults to
    :func:`lesion_map`. Returns the CAM volume node.
    """
    cam = lesion_map(scene_case) if cam is None else np.asarray(cam)
    node = overlays.cam_overlay(cam, scene_case.volume, opacity=opacity)
    _check(
        np.allclose(bridge.ijk_to_ras_array(node), bridge.ijk_to_ras_array(scene_case.volume)),
        "the CAM volume is not in the image's geometry",
    )
    shown = bridge.image_from_volume_node(node).array
    peak = np.unravel_index(int(np.argmax(shown)), shown.shape)
    _check(peak == np.unravel_index(int(np.argmax(cam)), cam.shape), "the CAM's peak moved in the overlay")
    _check(abs(float(shown.max()) - 1.0) < 1e-6, "the CAM is not scaled to [0, 1]")
    colour = node.GetDisplayNode().GetColorNode()
    heat = colour is not None and colour.GetName() == overlays.HEAT_COLOUR_NAME
    _check(heat, "the CAM has no heat colours")
    layers = overlays.slice_layers()
    _check(bool(layers), "the scene has no slice view")
    for layer in layers:
        _check(layer["foreground"] == node.GetID(), f"view {layer['view']} does not show the CAM in front")
        _check(layer["background"] == scene_case.volume.GetID(), f"view {layer['view']} lost the image")
        _check(abs(layer["opacity"] - opacity) < 1e-9, f"view {layer['view']} has opacity {layer['opacity']}")
    return node


def engine_packages_missing() -> list[str]:
    """The engine packages (of the background pipeline) that this Python lacks; empty when all are there."""
    from Rad4XCNNLib.dependencies import missing_requirements

    return [r.name for r in missing_requirements("pipeline")]


def full_self_test_requested(environ=None) -> bool:
    """True when the full self-test was asked for (``RAD4XCNN_FULL_SELFTEST`` set to 1, true or yes)."""
    import os

    value = (os.environ if environ is None else environ).get(FULL_SELF_TEST_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def colours_survive_a_closed_scene(scene_case: LoadedScene) -> None:
    """Scenario 7: the CAM's heat colours are there again after the scene is closed and a CAM is shown."""
    scene = slicer.mrmlScene
    add_cam_overlay(scene_case)
    scene.Clear(0)
    _check(
        scene.GetNodesByName(overlays.HEAT_COLOUR_NAME).GetNumberOfItems() == 0,
        "the heat colour table outlived the closed scene",
    )
    colour = overlays.heat_colour_node()
    _check(colour.GetNumberOfColors() == 256, f"the heat table has {colour.GetNumberOfColors()} colours")


def run_default(folder: Path, missing: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """The default self-test: the scenarios each Python can run, the others skipped with the reason.

    Installs nothing and writes only in ``folder``. ``missing`` (default: :func:`engine_packages_missing`)
    names the packages this Python lacks: the cohort scenarios need the module's own (pandas, PyYAML, ...),
    the engine run every engine package; their outcome then says which packages are missing.
    """
    folder = Path(folder)
    missing = engine_packages_missing() if missing is None else missing
    scene_case = case_in_the_scene()
    yield "a case in the scene", f"{scene_case.case_id}: image and segmentation paired"
    yield "CAM overlay", add_cam_overlay(scene_case).GetName()
    parameter_node_rules()
    yield "parameter node", "defaults, a kept value, bad values refused by the engine's rules"
    colours_survive_a_closed_scene(scene_case)
    yield "close the scene", "the CAM colours are there again"
    from Rad4XCNNLib.dependencies import REQUIREMENTS

    module_needs = {r.name for r in REQUIREMENTS if "module" in r.groups}
    lacking = [name for name in missing if name in module_needs]
    cohort_scenarios = ("synthetic cohort", "load image and segmentation", "export the mask")
    if lacking:
        why = f"skipped: needs {', '.join(lacking)}, not in this Python (installed on the first run)"
        for name in (*cohort_scenarios, "run a small correlation"):
            yield name, why
        return
    manifest = make_cohort(folder)
    yield "synthetic cohort", f"{N_CASES} cases in {manifest.parent}"
    scene_case = load_image_and_segmentation(manifest)
    yield "load image and segmentation", scene_case.case_id
    yield "export the mask", str(export_mask(scene_case, folder))
    if missing:
        yield (
            "run a small correlation",
            f"skipped: the engine's packages are not installed ({', '.join(missing)})",
        )
        return
    results = run_small_correlation(manifest, folder)
    yield "run a small correlation", results.summary()
    fill_tables_and_plots(results)
    yield "fill the tables and plots", "explanations, correlations, coverage and rho plots; M moved to 0.8"


def run_all(folder: Path) -> Iterator[tuple[str, str]]:
    """Run every scenario in order in ``folder``; yields (scenario, outcome) as each one passes."""
    folder = Path(folder)
    manifest = make_cohort(folder)
    yield "synthetic cohort", f"{N_CASES} cases in {manifest.parent}"
    scene_case = load_image_and_segmentation(manifest)
    yield "load image and segmentation", scene_case.case_id
    exported = export_mask(scene_case, folder)
    yield "export the mask", str(exported)
    results = run_small_correlation(manifest, folder)
    yield "run a small correlation", results.summary()
    parameter_node = fill_tables_and_plots(results)
    yield "fill the tables and plots", "explanations, correlations, coverage and rho plots; M moved to 0.8"
    table, cam = explain_case(scene_case, parameter_node, results, folder)
    yield "one case against the cohort", f"{len(table)} radiomic values compared"
    node = add_cam_overlay(scene_case, cam=cam)
    yield "CAM overlay", node.GetName()
