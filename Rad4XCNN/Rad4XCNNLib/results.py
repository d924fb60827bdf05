"""A run's results as Slicer nodes: tables, coverage and rho plots, a case's table and CAM overlay.

The module's logic calls these; the nodes are kept as references on the module's parameter node, so moving
the M slider refills the same nodes (from the stored correlations, without recomputing) and a saved scene
keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from Rad4XCNNLib import bridge, masks, overlays, plots, tables
from Rad4XCNNLib import parameters as settings
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run.results import RunResults, case_comparison

log = logging.getLogger(__name__)

#: Rows of the correlations table shown in Slicer (the strongest pairs); the CSV in the run folder has all.
MAX_TABLE_ROWS = 5000
#: What each result node shows; its name is the run's (its folder's name) followed by this.
_TABLE_NAMES = {
    "ExplanationsTable": "explanations",
    "CorrelationsTable": "correlations",
    "ClassificationTable": "classification",
    "CaseTable": "case",
    "ProbesTable": "probes",
    "CkaTable": "CKA",
    "ConceptsTable": "concepts",
}
#: The attribute that records which run folder a result node shows.
RUN_ATTRIBUTE = "Rad4XCNN.run"
#: The "Where concepts live" tables of ``rad4xcnn probe``, shown when the run folder holds them.
_CONCEPT_TABLES = {
    "ProbesTable": RunFiles.PROBES,
    "CkaTable": RunFiles.CKA,
    "ConceptsTable": RunFiles.CONCEPTS,
}
_DESCRIPTIONS = {
    "status": "explained: at least one radiomic feature with |rho| >= M (within strata when stratified); "
    "reversed: strata disagree in sign; confounded: meets the rule only pooled, no association within "
    "strata; attenuated: pooled, and weaker than M within strata",
    "n_partners": "how many radiomic features explain this deep feature",
    "strongest_partner": "the radiomic feature with the largest |rho|",
    "rho": "Spearman's rank correlation across the cohort's cases",
    "p": "two-sided p-value of rho",
    "q": "Benjamini-Hochberg q-value over all pairs",
    "meaning": "what the radiomic feature measures",
    "case_value": "this case's value of the radiomic feature",
    "percentile": "share of the cohort's cases with a lower value (ties count half), in %",
    "z": "(case value - cohort mean) / cohort standard deviation",
}


def load_run(folder, threshold: float | None = None) -> RunResults:
    """Read a run folder's results (see :class:`~Rad4XCNNLogic.run.results.RunResults`)."""
    if not folder:
        raise Rad4XCNNError("choose the run folder (the output folder of a cohort run)")
    return RunResults.load(folder, threshold=threshold)


def run_name(folder) -> str:
    """The name result nodes of the run in ``folder`` start with: the folder's name."""
    return Path(folder).resolve().name or "Rad4XCNN"


def result_node(parameter_node, reference: str, folder):
    """The node to fill with ``reference``'s result of the run in ``folder``: the parameter node's, when it
    shows this run (M moved, results loaded again) or the *Reuse outputs* setting is on; else None, so that
    a new node is made and the previous run's stays in the scene as it was."""
    node = settings.get(parameter_node, reference)
    if node is None or settings.get(parameter_node, "ReuseOutputs"):
        return node
    shown = node.GetAttribute(RUN_ATTRIBUTE)
    return node if shown in (None, str(Path(folder).resolve())) else None


def _keep(parameter_node, reference: str, node, folder):
    node.SetAttribute(RUN_ATTRIBUTE, str(Path(folder).resolve()))
    settings.set_value(parameter_node, reference, node)
    return node


def _table(parameter_node, reference: str, frame, folder, index: bool = True):
    name = f"{run_name(folder)} {_TABLE_NAMES[reference]}"
    node = tables.table_node_from_dataframe(
        frame,
        name,
        node=result_node(parameter_node, reference, folder),
        index=index,
        descriptions=_DESCRIPTIONS,
    )
    return _keep(parameter_node, reference, node, folder)


def show_run(results: RunResults, parameter_node, threshold: float | None = None) -> tuple[RunResults, str]:
    """Fill (or refill) the result nodes of ``results`` at ``threshold``; returns the results at that M and a
    one-line summary. Tables: explanations, correlations (the strongest :data:`MAX_TABLE_ROWS` pairs) and
    classification; charts: coverage against M with a marker at M, and the histogram of rho."""
    if threshold is not None and results.explanation is not None:
        results = results.with_threshold(threshold)
    folder, name = results.folder, run_name(results.folder)
    if results.explanation is not None:
        _table(parameter_node, "ExplanationsTable", results.explanations, folder)
        pairs = results.correlations.head(MAX_TABLE_ROWS)
        _table(parameter_node, "CorrelationsTable", pairs, folder, index=False)
        coverage = plots.plot_coverage(
            results.coverage(),
            threshold=results.threshold,
            name=f"{name} coverage",
            chart=result_node(parameter_node, "CoverageChart", folder),
        )
        _keep(parameter_node, "CoverageChart", coverage, folder)
        histogram = plots.plot_rho_histogram(
            results.rho,
            threshold=results.threshold,
            name=f"{name} rho histogram",
            chart=result_node(parameter_node, "RhoChart", folder),
        )
        _keep(parameter_node, "RhoChart", histogram, folder)
    if results.classification is not None:
        _table(parameter_node, "ClassificationTable", results.classification, folder)
    show_concept_tables(results.folder, parameter_node)
    return results, results.summary()


def load_and_show(folder, parameter_node, threshold: float | None = None) -> tuple[RunResults, str]:
    """Read the run folder, fill the result nodes at ``threshold`` (:func:`show_run`) and show the
    explanations table and the coverage plot in Slicer's views; returns the results and the summary."""
    results, summary = show_run(load_run(folder), parameter_node, threshold)
    for reference, show in (("ExplanationsTable", tables.show_table), ("CoverageChart", plots.show_chart)):
        node = settings.get(parameter_node, reference)
        if node is not None:
            show(node)
    return results, summary


def show_concept_tables(folder, parameter_node) -> list[str]:
    """The probe, CKA and concept tables of a run folder (``rad4xcnn probe --out RUN``) as table nodes, the
    same tables as the report's "Where concepts live"; returns the names of the tables shown."""
    import pandas as pd

    shown = []
    for reference, name in _CONCEPT_TABLES.items():
        path = Path(folder) / name
        if path.is_file():
            shown.append(_table(parameter_node, reference, pd.read_csv(path), folder, index=False).GetName())
    return shown


def apply_threshold(results: RunResults | None, parameter_node, threshold: float) -> tuple[RunResults, str]:
    """The M slider: re-threshold the stored correlations and refill the same nodes. With ``results`` None
    (a saved scene was just loaded: its result nodes are there, the correlations not yet) the run folder of
    the parameter node is read first, so the slider works at once."""
    if results is None:
        results = load_run(settings.get(parameter_node, "OutputFolder"))
    return show_run(results, parameter_node, threshold)


# ------------------------------------------------------------------------------------------------ a case
def export_case(values: Mapping[str, Any], folder: Path) -> Path:
    """Write the chosen image and lesion (segment or labelmap) of the Case panel as a one-case manifest."""
    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    image_node, mask_node = values.get("CaseImage"), values.get("CaseMask")
    if image_node is None:
        raise Rad4XCNNError("choose the case's image volume")
    if mask_node is None:
        raise Rad4XCNNError("choose the case's segmentation or labelmap")
    # a 3D volume is written as it is, with its geometry (the engine reads the case as a volume)
    three_d = bridge.is_volume_3d(image_node)
    image = bridge.volume_from_node(image_node) if three_d else bridge.image_from_volume_node(image_node)
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        mask = masks.mask_from_segment(mask_node, values.get("CaseSegment") or None, image_node)
    else:
        mask = masks.mask_from_labelmap(mask_node, image_node)
    if not mask.any():
        raise Rad4XCNNError(f"the lesion of '{image_node.GetName()}' is empty in the image's geometry")
    import pandas as pd

    case_id = masks.safe_name(image_node.GetName())
    folder = Path(folder)
    write_image(folder / "images" / f"{case_id}.nrrd", image.array, like=image)
    write_image(folder / "masks" / f"{case_id}_mask.nrrd", mask.astype(np.uint8), like=image)
    manifest = folder / "manifest.csv"
    row = {"case_id": case_id, "image": f"images/{case_id}.nrrd", "mask": f"masks/{case_id}_mask.nrrd"}
    write_csv_atomic(manifest, pd.DataFrame([row]).set_index("case_id"))
    return manifest


def case_command(values: Mapping[str, Any], folder: Path) -> list[str]:
    """Export the case and return the ``rad4xcnn case`` arguments that compute its radiomic features (with
    the run's preset) and its CAM into ``folder``."""
    manifest = export_case(values, folder)
    run = values.get("OutputFolder") or ""
    if not run or not Path(run).is_dir():
        raise Rad4XCNNError("choose the run folder of the cohort (Output folder) before explaining a case")
    args = ["case", "--manifest", str(manifest), "--run", str(run), "--out", str(folder)]
    args += ["--model", str(values.get("Backbone") or "resnet50")]
    weights = settings.weights_argument(values)
    if weights is not None:
        args += ["--weights", weights]
    args += ["--radiomics-params", settings.radiomics_argument(values)]
    args += [
        "--cam",
        str(values.get("CamMethod") or "gradcam"),
        "--device",
        str(values.get("Device") or "auto"),
    ]
    if values.get("FeatureMaps"):
        # the radiomic features that explain the run's most important deep features, as voxel-based maps
        args += ["--top-from-run", "--top", str(int(values.get("TopFeatures") or 5))]
    return args


def read_case_outputs(folder: Path) -> tuple[object | None, np.ndarray | None]:
    """The case's radiomic values (a Series) and CAM (a 2D array, 3D for a volume), where the case command
    wrote them."""
    import pandas as pd

    from Rad4XCNNLib.bridge import read_map_array

    folder = Path(folder)
    values = None
    table = folder / "radiomics.csv"
    if table.is_file():
        frame = pd.read_csv(table, index_col=0)
        if len(frame):
            values = frame.iloc[0]
    cams = sorted((folder / "cam").glob("*.nrrd")) if (folder / "cam").is_dir() else []
    cams = [p for p in cams if not p.name.endswith("_raw.nrrd")]  # raw maps sit beside the scaled ones
    cam = read_map_array(cams[0]) if cams else None
    return values, cam


def show_case(
    results: RunResults, parameter_node, folder: Path, values: Mapping[str, Any] | None = None
) -> str:
    """Show a finished case: its CAM over the image, and its radiomic values against the cohort for the
    radiomic features that explain the classifier's most important deep features.

    ``values`` are the settings the case ran with (default: the parameter node's). When its image is no
    longer in the scene (closed meanwhile) the CAM cannot be placed: the summary says so and the table is
    still filled.
    """
    values = settings.read_all(parameter_node) if values is None else values
    image = values.get("CaseImage")
    case_values, cam = read_case_outputs(folder)
    notes = []
    if cam is not None and image is None:
        notes.append("the case's image is no longer in the scene, so its CAM is not shown")
    elif cam is not None:
        node = overlays.cam_overlay(
            cam,
            image,
            opacity=values["CamOpacity"],
            node=settings.get(parameter_node, "CamVolume"),
            volume_rendering=bool(values.get("VolumeRendering")) and cam.ndim == 3,
        )
        settings.set_value(parameter_node, "CamVolume", node)
        notes.append(f"{values['CamMethod']} map shown over {image.GetName()}")
    from Rad4XCNNLib.mapviews import show_case_maps  # trust table and feature maps, where the case has them

    if image is not None:
        notes += show_case_maps(
            folder,
            image,
            colour=values["FeatureMapColour"],
            placement=values["FeatureMapPlacement"],
            opacity=values["CamOpacity"],
            cam_node=settings.get(parameter_node, "CamVolume"),
        )
    if case_values is not None and results.explanation is not None and results.radiomics is not None:
        top = results.ranked_deep_features(values["TopFeatures"])
        pairs = results.explaining_pairs(list(top.index))
        table = case_comparison(case_values, results.radiomics, pairs)
        _table(parameter_node, "CaseTable", table, results.folder, index=False)
        explained = int((top["status"] == "explained").sum())
        notes.append(
            f"{explained} of the {len(top)} most important deep features "
            f"explained at M = {results.threshold:.2f}"
        )
    return "; ".join(notes) or "the case produced no CAM and no radiomic values"
