"""Saliency maps of volumes (2.5D): slice-wise maps of the 2D network, put back into the volume.

Each volume case gives its lesion slices as the deep features and the fine-tuning see them
(:mod:`~Rad4XCNNLogic.features.slices`: a square window in millimetres around the lesion's in-plane box).
Every slice window becomes a 2D case of its own (its grey input, and a box as its region, so that the 2D
crop is the window itself) and goes through :func:`~Rad4XCNNLogic.cam.maps.
compute_cams` with every check of the 2D maps: the sanity flags, ROAD and deletion / insertion with their
baselines, and the randomisation test. Per case and method:

* the map volume ``<case_id>_<method>.nrrd``: each slice's map put back into its place (linear, in the
  image's own voxels), 0 outside the processed slices and windows, in the image's geometry (size, spacing,
  origin and direction);
* ``energy_inside``, ``energy_chance`` and ``pointing_hit`` measured on the map volume inside the 3D lesion
  (chance: the lesion's share of the voxels the windows cover);
* the slices' checks aggregated: faithfulness scores, target probability and randomisation similarity by
  their mean over the slices, the flags by their union (``flagged_slices`` counts the slices with any), the
  method agreement by its mean over the slices, the randomisation cascade by its mean per step.

The windows' baseline "shuffled within the lesion" shuffles each slice's map within that slice's lesion:
the 3D mask's cross-section on the slice, on the window's model-input grid (:func:`window_lesion`, the
samples of the grey input, nearest voxel), given to :func:`~Rad4XCNNLogic.cam.maps.compute_cams` as
``input_lesions``; the box only places the crop. A window that holds none of its slice's lesion (a thin
edge of it that the samples step over) has no such baseline (NaN, as a 2D case without lesion), and the
case's ``*_shuffled`` scores are the mean over its other slices. The sanity flags (``outside``) read the
same cross-sections; the slices' own ``energy_inside`` and ``pointing_hit`` are replaced by the measures
inside the 3D lesion above.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from Rad4XCNNLogic.cam.images import write_volume
from Rad4XCNNLogic.cam.measures import lesion_measures
from Rad4XCNNLogic.cohort.manifest import Case
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError

log = logging.getLogger(__name__)

__all__ = ["compute_cam_volumes", "is_volume_cohort", "lesion_measures", "write_volume"]

STAGE = "cam"
#: How the slices' checks become one row per case and method (recorded in ``cam_run.json``).
AGGREGATION = (
    "per case and method: energy_inside, energy_chance and pointing_hit on the map volume inside the 3D "
    "lesion; faithfulness scores, target probability and randomisation similarity by their mean over the "
    "slices; flags by their union (flagged_slices: slices with any); agreement and the randomisation "
    "cascade by their mean over the slices"
)
#: Separates a volume case's id from its slice's in the 2D cases made from the slices.
SLICE_MARK = "@"


def is_volume_cohort(cohort) -> bool:
    """Whether a cohort (or list of cases) holds volumes; read without checking files, the first image's
    header says."""
    from Rad4XCNNLogic.cohort.volumes import image_info

    cases = list(getattr(cohort, "cases", cohort))
    if cases and all(c.dims is None for c in cases):
        info = image_info(cases[0].image) if cases[0].image.exists() else None
        return bool(info and info[0] == 3)
    return any(c.dims == 3 for c in cases)


def window_lesion(mask: np.ndarray | None, window) -> np.ndarray | None:
    """The 3D lesion's cross-section on a window's slice, on the window's ``size x size`` model-input grid
    (the samples of the grey input, :meth:`~Rad4XCNNLogic.features.slices.SliceWindow.coordinates`; nearest
    voxel, outside the volume none); None where the window holds none of it.

    >>> from Rad4XCNNLogic.features.slices import SliceWindow
    >>> mask = np.zeros((3, 4, 4), bool); mask[1, 2, 1:3] = True
    >>> window_lesion(mask, SliceWindow(0, 1, (1.0, 0.0), (1.0, 1.0), 3)).astype(int)
    array([[0, 0, 0],
           [0, 1, 1],
           [0, 0, 0]])
    >>> window_lesion(mask, SliceWindow(0, 0, (1.0, 0.0), (1.0, 1.0), 3)) is None
    True
    """
    from scipy.ndimage import map_coordinates

    if mask is None:
        return None
    plane = np.take(np.asarray(mask), window.index, axis=window.axis).astype(np.float32)
    rows, cols = window.coordinates()
    lesion = map_coordinates(plane, [rows, cols], order=0, mode="constant", cval=0.0) > 0.5
    return lesion if lesion.any() else None


def _slice_cases(cases: Sequence[Case], config, planes: str, max_slices: int, folder: Path, failures: list):
    """Each volume case's slice windows written as 2D cases (grey NRRD and box PNG) into ``folder``;
    returns (the 2D cases, {case_id: (loaded volume case, windows)}, {2D case_id: its slice's lesion on the
    model input or None})."""
    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.features.slices import volume_inputs

    made, volumes, lesions = [], {}, {}
    for case in cases:
        try:
            loaded = case.load()
            grey, windows = volume_inputs(loaded, config, planes, max_slices)
        except CaseError as exc:
            failures.append(CaseFailure(case.case_id, STAGE, exc.problem))
            log.warning("%s", exc)
            continue
        volumes[case.case_id] = (loaded, windows)
        size = config.input_size
        margin = float(config.margin)
        lo = round(size * margin / (1 + 2 * margin))
        box = np.zeros((size, size), np.uint8)
        box[lo : size - lo, lo : size - lo] = 255  # the crop around it, grown by the margin, is the window
        mask = loaded.mask if case.has_lesion else None
        for k, array in enumerate(grey):
            sid = f"{case.case_id}{SLICE_MARK}{k}"
            lesions[sid] = window_lesion(mask, windows[k])
            image = write_image(folder / f"{sid}.nrrd", array.astype(np.float32))
            written = write_image(folder / f"{sid}_box.png", box)
            made.append(replace(case, case_id=sid, image=image, masks=(written,), dims=2, has_lesion=True))
    return made, volumes, lesions


def _volume_maps(result, case_id: str, loaded, windows, methods) -> dict[str, np.ndarray]:
    """Each method's slice maps of a case put back into its volume (0 where no slice window lies)."""
    from Rad4XCNNLogic.features.slices import window_to_volume

    shape = loaded.image.shape
    out = {}
    for method in methods:
        volume = np.zeros(shape, np.float32)
        for k, window in enumerate(windows):
            cam = result.maps.get((f"{case_id}{SLICE_MARK}{k}", method))
            if cam is None:
                continue
            plane = window_to_volume(cam, window, shape)
            index = [slice(None)] * 3
            index[window.axis] = window.index
            current = volume[tuple(index)]
            volume[tuple(index)] = np.maximum(current, plane)  # triplanar: planes crossing keep the larger
        out[method] = volume
    return out


def _covered(loaded, windows) -> np.ndarray:
    """The voxels the slice windows cover."""
    from Rad4XCNNLogic.features.slices import window_to_volume

    shape = loaded.image.shape
    covered = np.zeros(shape, bool)
    for window in windows:
        plane = window_to_volume(np.ones((window.size, window.size)), window, shape) > 0
        index = [slice(None)] * 3
        index[window.axis] = window.index
        covered[tuple(index)] |= plane
    return covered


def _aggregate(result, volumes: dict, methods, out_dir: Path | None):
    """The per-slice tables of ``result`` as per-case tables (see the module's text); writes the volumes."""
    import pandas as pd

    from Rad4XCNNLogic.cam.images import CAM_SUBDIR

    metrics = result.metrics.copy()
    metrics.insert(0, "volume", metrics["case_id"].str.rsplit(SLICE_MARK, n=1).str[0])
    rows, files = [], {}
    for case_id, (loaded, windows) in volumes.items():
        maps = _volume_maps(result, case_id, loaded, windows, methods)
        covered = _covered(loaded, windows)
        mask = loaded.mask if loaded.case.has_lesion else None
        for method, cam in maps.items():
            part = metrics[(metrics["volume"] == case_id) & (metrics["method"] == method)]
            if part.empty:
                continue
            numeric = part.select_dtypes("number").drop(
                columns=["pointing_hit", "peak_row", "peak_col"], errors="ignore"
            )
            flags = sorted({f for text in part["flags"] for f in str(text).split(";") if f})
            row = {
                **numeric.mean().to_dict(),
                "case_id": case_id,
                "method": method,
                "label": loaded.case.label,
                "has_lesion": bool(loaded.case.has_lesion),
                "target_class": part["target_class"].mode().iloc[0]
                if part["target_class"].notna().any()
                else None,
                "predicted_class": part["predicted_class"].mode().iloc[0]
                if part["predicted_class"].notna().any()
                else None,
                **lesion_measures(cam, mask, covered),
                "peak_row": None,
                "peak_col": None,
                "max_value": float(cam.max()),
                "empty": bool(cam.max() <= 0),
                "flags": ";".join(flags),
                "slices": len(part),
                "flagged_slices": int((part["flags"].astype(str) != "").sum()),
            }
            rows.append(row)
            if out_dir is not None:
                folder = Path(out_dir) / CAM_SUBDIR
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{case_id}_{method}.nrrd"
                write_volume(path, cam, loaded.image)
                files[(case_id, method)] = {"nrrd": path}
    columns = [*result.metrics.columns, "slices", "flagged_slices"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["pointing_hit"] = table["pointing_hit"].astype("Float64").round().astype("Int8")
    table["peak_row"] = table["peak_row"].astype("Int64")
    table["peak_col"] = table["peak_col"].astype("Int64")

    def per_case(frame, keys):
        if frame is None or frame.empty:
            return frame
        frame = frame.copy()
        frame["case_id"] = frame["case_id"].str.rsplit(SLICE_MARK, n=1).str[0]
        numeric = [c for c in frame.columns if c not in keys and pd.api.types.is_numeric_dtype(frame[c])]
        return frame.groupby(keys, sort=False, as_index=False)[numeric].mean()

    agreement = per_case(result.agreement, ["case_id", "method_a", "method_b"])
    randomisation = per_case(result.randomisation, ["case_id", "method", "step"])
    return table, agreement, randomisation, files


def compute_cam_volumes(
    cohort,
    checkpoint,
    settings=None,
    *,
    model: str | None = None,
    cases=None,
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
    planes: str = "axial",
    max_slices: int = 16,
    seed: int = 0,
    progress: bool = True,
):
    """Saliency map volumes of a cohort of volumes, with the checks per slice aggregated per case (see the
    module's text); the arguments as :func:`~Rad4XCNNLogic.cam.maps.compute_cams`, and ``planes``,
    ``max_slices`` as for the deep features. Returns a :class:`~Rad4XCNNLogic.cam.maps.CamResult` whose
    tables are per case (``slices`` and ``flagged_slices`` added to the metrics), ``maps`` empty, and
    ``files`` the map volumes; with ``out_dir``, they and the tables are in ``<out_dir>/cam/``.

    A checkpoint of a native 3D network (``monai_*``) gets its maps on each case's cube instead, with the
    checks in 3D (:func:`~Rad4XCNNLogic.cam.volumes3d.compute_cube_cams`; ``planes`` and ``max_slices``
    do not apply); given 2D images it is refused in one line."""
    from Rad4XCNNLogic.cam.maps import CamResult, compute_cams, select_cases, write_cams
    from Rad4XCNNLogic.cam.model import load_cam_model
    from Rad4XCNNLogic.features.volume_nets import check_images, is_volume_net

    failures: list[CaseFailure] = []
    chosen = select_cases(cohort, cases, failures)
    cam_model = load_cam_model(checkpoint, model, seed)
    if is_volume_net(cam_model.name):
        from Rad4XCNNLogic.cam.volumes3d import compute_cube_cams

        check_images(cam_model.name, is_volume_cohort(chosen))
        return compute_cube_cams(
            chosen, checkpoint, settings, model=model, device=device, out_dir=out_dir, seed=seed,
            progress=progress, failures=failures,
        )  # fmt: skip
    config = cam_model.preprocess
    scratch = Path(tempfile.mkdtemp(prefix="rad4xcnn-slices-"))
    try:
        made, volumes, lesions = _slice_cases(chosen, config, planes, max_slices, scratch, failures)
        if not made:
            raise Rad4XCNNError(
                f"no saliency map: all {len(chosen)} volume cases failed (first: {failures[0]})"
            )
        result = compute_cams(
            made,
            checkpoint,
            settings,
            model=model,
            device=device,
            keep_maps=True,
            seed=seed,
            progress=progress,
            input_lesions=lesions,
        )
        methods = list(result.settings["methods"])
        metrics, agreement, randomisation, files = _aggregate(result, volumes, methods, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for failure in result.failures:
        case_id = failure.case_id.rsplit(SLICE_MARK, 1)[0]
        failures.append(CaseFailure(case_id, STAGE, f"slice {failure.case_id}: {failure.problem}"))
    settings_out = {
        **result.settings,
        "volumes": {
            "planes": planes,
            "max_slices": int(max_slices),
            "aggregation": AGGREGATION,
        },
        "cases": len(metrics["case_id"].unique()) if len(metrics) else 0,
    }
    final = CamResult(
        metrics, agreement, {}, files, failures, settings_out, {c.case_id: c for c in chosen}, {}, {},
        randomisation,
    )  # fmt: skip
    if out_dir is not None:
        write_cams(final, out_dir, maps=False)
    return final


def compute_maps(cohort, checkpoint, settings=None, *, deep=None, **kwargs):
    """The saliency maps of a cohort, whatever it holds, as the run's CAM stage and ``rad4xcnn case`` make
    them: :func:`~Rad4XCNNLogic.cam.maps.compute_cams` for 2D images, :func:`compute_cam_volumes` for
    volumes (a 3D network's cubes, or the slices ``deep``, a ``deep`` section, chooses for a 2D network).
    ``kwargs`` as for :func:`~Rad4XCNNLogic.cam.maps.compute_cams`."""
    from Rad4XCNNLogic.cam.maps import compute_cams
    from Rad4XCNNLogic.features.settings import DEEP

    if not is_volume_cohort(cohort):
        return compute_cams(cohort, checkpoint, settings, **kwargs)
    section = deep or DEEP
    return compute_cam_volumes(
        cohort, checkpoint, settings, planes=section.planes, max_slices=section.max_slices, **kwargs
    )
