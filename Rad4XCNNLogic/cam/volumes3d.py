"""Saliency maps of a native 3D network on volumes: each case's lesion cube through the network, each
method's 3D map put back into the volume, with the checks of the 2D maps carried over to three dimensions.

A volume case reaches a 3D network (:mod:`~Rad4XCNNLogic.features.volume_nets`) as one isotropic cube
around its lesion (:func:`~Rad4XCNNLogic.features.cubes.volume_cube`); the maps are computed on that cube by
pytorch-grad-cam, whose methods take 5D activations (every method of :data:`~Rad4XCNNLogic.cam.methods.
METHODS`; ScoreCAM's masks are upsampled trilinearly). Per case and method:

* the map volume ``<case_id>_<method>.nrrd``: the cube's map put back onto the volume's voxels
  (:func:`~Rad4XCNNLogic.features.cubes.cube_to_volume`, linear), 0 outside the cube, in the image's
  geometry (size, spacing, origin and direction);
* ``energy_inside``, ``energy_chance`` and ``pointing_hit`` on the map volume inside the 3D lesion (chance:
  the lesion's share of the voxels the cube covers);
* the sanity flags on the map volume, over the voxels the cube covers (as over the crop in 2D);
* deletion and insertion AUC over the cube's voxels (insertion from RISE's blur in 3D), ROAD with its
  imputer over each voxel's 26 neighbours, each against the paired baselines: a random map, and the map
  shuffled within the lesion (the 3D mask sampled on the cube's grid);
* the randomisation test (the cascade of re-initialised layers, Spearman over the cube's voxels), and the
  agreement between methods over the voxels the cube covers.

The verdicts come from :func:`~Rad4XCNNLogic.cam.sanity.method_verdicts`, as in 2D. The tables are those
of :func:`~Rad4XCNNLogic.cam.maps.compute_cams` (one row per case and method); ``peak_row`` and
``peak_col`` are empty (the peak of a volume has three coordinates).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from Rad4XCNNLogic.cam.faithfulness import DEFAULT_PERCENTILES
from Rad4XCNNLogic.cam.images import cam_paths, write_volume
from Rad4XCNNLogic.cam.maps import (
    RANDOMISATION_COLUMNS,
    CamResult,
    ModelPlan,
    batch_maps,
    checked_section,
    load_prepared,
    metrics_table,
    plan_model,
    predict_batch,
    run_settings,
    write_cams,
)
from Rad4XCNNLogic.cam.measures import agreement_rows, iou_column, lesion_measures
from Rad4XCNNLogic.cam.methods import MapComputer
from Rad4XCNNLogic.cam.model import class_fields
from Rad4XCNNLogic.cam.sanity import RANDOMISATION_THRESHOLD, map_flags
from Rad4XCNNLogic.cam.settings import CamConfig
from Rad4XCNNLogic.cohort.manifest import Case
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError
from Rad4XCNNLogic.features.cubes import CubeWindow, cube_to_volume, volume_cube
from Rad4XCNNLogic.infra.progress import track

log = logging.getLogger(__name__)

__all__ = ["CHECKS", "compute_cube_cams", "cube_maps_to_volume", "lesion_on_cube"]

STAGE = "cam"
#: What each check means for a 3D network's maps (recorded in ``cam_run.json``).
CHECKS = {
    "maps": "each method's map on the cube, min-max scaled to [0, 1] by pytorch-grad-cam (its 3D zoom), put "
    "back onto the volume's voxels (linear), 0 outside the cube",
    "lesion": "energy_inside, energy_chance (the lesion's share of the voxels the cube covers) and "
    "pointing_hit on the map volume inside the 3D lesion",
    "flags": "on the map volume, saturation over the voxels the cube covers",
    "faithfulness": "deletion and insertion AUC over the cube's voxels (insertion from RISE's blur in 3D); "
    "ROAD with the noisy linear imputation over each voxel's 26 neighbours (solved by conjugate gradients); "
    "baselines: a random map and the map shuffled within the lesion sampled on the cube's grid",
    "randomisation": "Spearman between the maps of the trained and the re-initialised network over the "
    "cube's voxels",
    "agreement": "Spearman and top-fraction IoU over the voxels the cube covers",
}


def lesion_on_cube(mask: np.ndarray | None, window: CubeWindow) -> np.ndarray | None:
    """A 3D lesion mask ``[z, y, x]`` on the cube's grid (nearest voxel; outside the volume: not lesion);
    None without a lesion.

    >>> from Rad4XCNNLogic.features.cubes import cube_window
    >>> m = np.zeros((4, 10, 10), bool); m[1:3, 2:8, 3:5] = True
    >>> cube = lesion_on_cube(m, cube_window(m, (3.0, 1.0, 1.0), 0.0, 6))
    >>> cube.shape, int(cube.sum())
    ((6, 6, 6), 72)
    """
    from scipy.ndimage import map_coordinates

    if mask is None or not np.any(mask):
        return None
    values = np.asarray(mask, np.float32)
    return map_coordinates(values, window.coordinates(), order=0, mode="constant", cval=0.0) > 0.5


def cube_maps_to_volume(maps: dict[str, np.ndarray], window: CubeWindow, shape: Sequence[int]):
    """Each method's map on the cube put back onto the volume's voxels (in [0, 1]: the library's cubic 3D
    zoom overshoots a little), and the voxels the cube covers: ``({method: volume}, covered)``."""
    volumes = {m: np.clip(cube_to_volume(v, window, shape), 0.0, 1.0) for m, v in maps.items()}
    covered = cube_to_volume(np.ones((window.size,) * 3, np.float32), window, shape) > 0
    return volumes, covered


@dataclass
class _Gathered:
    """What the batches give: metric, agreement and randomisation rows, files and timings."""

    failures: list
    method_seconds: dict
    check_seconds: dict = field(default_factory=lambda: {"faithfulness": 0.0, "randomisation": 0.0})
    metric_rows: list = field(default_factory=list)
    agreement: list = field(default_factory=list)
    random_rows: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    mapped: int = 0


def _load_cubes(chunk: Sequence[Case], config, failures: list) -> list[tuple[Any, np.ndarray, CubeWindow]]:
    """The cases of a batch as ``(loaded, cube, window)``; a case that cannot be read is recorded in
    ``failures`` and the others go on."""
    done = load_prepared(chunk, lambda loaded: volume_cube(loaded, config), failures)
    return [(loaded, cube, window) for loaded, (cube, window) in done]


def _checks(plan: ModelPlan, section: CamConfig, x, chosen, targets, input_maps, items, mapper, options):
    """The faithfulness scores (``{method: {column: (B,)}}``) and randomisation rows of a batch of cubes."""
    from Rad4XCNNLogic.cam.faithfulness import faithfulness_scores, randomisation_rows

    scores, rows = {}, []
    if section.faithfulness and chosen is not None:
        masks = [lesion_on_cube(lc.mask if lc.case.has_lesion else None, window) for lc, _, window in items]
        scores = faithfulness_scores(
            plan.net, x, chosen, input_maps, masks, options["road_percentiles"], section.deletion_steps,
            batch_size=mapper.batch_size, seed=options["seed"],
        )  # fmt: skip
    t0 = time.perf_counter()
    if section.randomisation != "none":
        rows = randomisation_rows(
            plan.net, plan.layer, list(input_maps), x, targets, input_maps, steps=section.randomisation,
            seed=options["seed"], input_size=plan.config.input_size, compute=mapper.scaled,
        )  # fmt: skip
    return scores, rows, time.perf_counter() - t0


def _run_cubes(plan: ModelPlan, section: CamConfig, mapper, chunk, out: _Gathered, options: dict) -> None:
    """Maps of one batch of cubes by every method, their checks, and each case's row, agreement and map
    volumes into ``out``."""
    import torch

    from Rad4XCNNLogic.features.preprocessing import normalize_batch

    items = _load_cubes(chunk, plan.config, out.failures)
    if not items:
        return
    ids = [lc.case_id for lc, _, _ in items]
    grey = torch.from_numpy(np.stack([cube for _, cube, _ in items]))[:, None]
    x = normalize_batch(grey, plan.config).to(plan.device)
    probs, predicted, chosen, targets = predict_batch(plan, x, len(ids))
    input_maps, input_raw = batch_maps(
        mapper, section.methods, plan.net, plan.layer, x, targets, ids, out.failures, out.method_seconds
    )
    t0 = time.perf_counter()
    scores, rows, random_seconds = _checks(
        plan, section, x, chosen, targets, input_maps, items, mapper, options
    )
    out.check_seconds["faithfulness"] += time.perf_counter() - t0 - random_seconds
    out.check_seconds["randomisation"] += random_seconds
    final_step: dict[tuple[int, str], float] = {}
    for r in rows:
        out.random_rows.append({"case_id": ids[r["index"]], **{k: r[k] for k in RANDOMISATION_COLUMNS[1:]}})
        if r["step"] == "all":
            final_step[(r["index"], r["method"])] = r["spearman"]
    for row, (loaded, _, window) in enumerate(items):
        maps = {m: v[row] for m, v in input_maps.items()}
        raw = {m: v[row] for m, v in input_raw.items()}
        faithful = {m: {k: float(v[row]) for k, v in s.items()} for m, s in scores.items()}
        similarity = {m: final_step.get((row, m), float("nan")) for m in maps}
        fields = class_fields(plan.loaded.class_names, probs, predicted, chosen, row)
        _record_case(loaded, window, maps, raw, faithful, similarity, fields, out, options)


def _record_case(loaded, window, maps, raw, faithful, similarity, fields, out: _Gathered, options) -> None:
    """One case's maps put back into its volume: their flags and lesion measures, the agreement of the
    unflagged ones, and the map volumes written."""
    case = loaded.case
    volumes, covered = cube_maps_to_volume(maps, window, loaded.image.shape)
    mask = np.asarray(loaded.mask, bool) if case.has_lesion else None
    flagged = set()
    for method, cam in volumes.items():
        flags = map_flags(raw[method], cam, mask, region=covered)
        if flags:
            flagged.add(method)
        out.metric_rows.append(
            {
                "case_id": case.case_id,
                "method": method,
                "label": case.label,
                "has_lesion": bool(case.has_lesion),
                **fields,
                **lesion_measures(cam, mask, covered),
                "peak_row": None,
                "peak_col": None,
                "max_value": float(cam.max()) if cam.size else float("nan"),
                "empty": bool(cam.max() <= 0) if cam.size else True,
                "flags": ";".join(flags),
                **faithful.get(method, {}),
                "randomisation_similarity": similarity[method],
            }
        )
        out.mapped += 1
    clean = {m: v[covered] for m, v in volumes.items() if m not in flagged}
    out.agreement.extend(
        {"case_id": case.case_id, **r} for r in agreement_rows(clean, None, options["top_fraction"])
    )
    if options["out_dir"] is not None:
        for method, cam in volumes.items():
            path = write_volume(
                cam_paths(options["out_dir"], case.case_id, method)["nrrd"], cam, loaded.image
            )
            out.files[(case.case_id, method)] = {"nrrd": path}


def compute_cube_cams(
    cases: Sequence[Case],
    checkpoint,
    settings: CamConfig | None = None,
    *,
    model: str | None = None,
    device: str = "auto",
    top_fraction: float = 0.2,
    out_dir: str | os.PathLike | None = None,
    road_percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    randomisation_threshold: float = RANDOMISATION_THRESHOLD,
    seed: int = 0,
    progress: bool = True,
    failures: list[CaseFailure] | None = None,
) -> CamResult:
    """Saliency map volumes of a native 3D network over volume cases, with the checks of the 2D maps (see
    the module's text).

    The arguments as :func:`~Rad4XCNNLogic.cam.maps.compute_cams` (``checkpoint``: a checkpoint of
    ``rad4xcnn train`` of a ``monai_*`` network, or weights with ``model``); ``failures`` holds the cases
    already left out. Usually reached through :func:`~Rad4XCNNLogic.cam.volumes.compute_cam_volumes`, which
    sends a 3D network's checkpoint here. Returns a :class:`~Rad4XCNNLogic.cam.maps.CamResult` with one row
    per case and method, ``maps`` empty and ``files`` the map volumes; with ``out_dir`` they and the tables
    are in ``<out_dir>/cam/``.

    Examples
    --------
    >>> section = CamConfig(methods=["gradcam", "eigencam"])
    >>> result = compute_cube_cams(cohort.cases, "model3d.pt", section)  # doctest: +SKIP
    >>> result.summary()["verdict"]  # doctest: +SKIP
    """
    import pandas as pd

    started = time.perf_counter()
    failures = [] if failures is None else failures
    section = checked_section(settings, top_fraction)
    names = section.methods
    cases = list(cases)
    if not cases:
        raise Rad4XCNNError("no case to compute saliency maps for")
    plan = plan_model(
        checkpoint, model, seed, device, names, section.target_class, section.target_layer,
        section.batch_size, volume=True,
    )  # fmt: skip
    mapper = MapComputer(int(section.batch_size), progress, plan.device)
    out = _Gathered(failures, method_seconds=dict.fromkeys(names, 0.0))
    options = {
        "road_percentiles": [int(p) for p in road_percentiles],
        "seed": int(seed),
        "top_fraction": float(top_fraction),
        "out_dir": out_dir,
    }
    step = int(section.batch_size)
    chunks = [cases[i : i + step] for i in range(0, len(cases), step)]
    for chunk in track(
        chunks, desc=f"3D CAMs ({', '.join(names)})", stage=STAGE, enabled=progress, unit="batch"
    ):
        _run_cubes(plan, section, mapper, chunk, out, options)
    if not out.metric_rows:
        first = f" (first: {failures[0]})" if failures else ""
        raise Rad4XCNNError(f"no saliency map: all {len(cases)} volume cases failed{first}")
    metrics = metrics_table(out.metric_rows)
    agreement = pd.DataFrame(
        out.agreement, columns=["case_id", "method_a", "method_b", "spearman", iou_column(top_fraction)]
    )
    randomisation = pd.DataFrame(out.random_rows, columns=RANDOMISATION_COLUMNS)
    n_cases = int(metrics["case_id"].nunique())
    settings_out = run_settings(
        plan.loaded, plan.layer, names, plan.target_index, plan.channels, plan.feature_grid, plan.device,
        plan.config, batch_size=int(section.batch_size), pointing_tolerance=None,
        top_fraction=float(top_fraction),
        faithfulness=bool(section.faithfulness) and plan.n_out > 0, randomisation=section.randomisation,
        road_percentiles=options["road_percentiles"], deletion_steps=int(section.deletion_steps),
        randomisation_threshold=float(randomisation_threshold), seed=int(seed), cases=n_cases,
        maps=out.mapped, failed=len(failures), seconds=round(time.perf_counter() - started, 3),
        seconds_per_case={m: round(s / n_cases, 4) for m, s in out.method_seconds.items()},
        check_seconds_per_case={k: round(s / n_cases, 4) for k, s in out.check_seconds.items()},
        map_scale=CHECKS["maps"], volumes=_volume_settings(plan),
    )  # fmt: skip
    log.info(
        "3D CAMs: %d cases x %d methods (%s, layer %s, grid %s, %s), %d failed, %.1f s",
        n_cases, len(names), plan.loaded.name, plan.layer.name, plan.feature_grid, plan.device,
        len(failures), settings_out["seconds"],
    )  # fmt: skip
    result = CamResult(
        metrics, agreement, {}, out.files, failures, settings_out, {c.case_id: c for c in cases}, {}, {},
        randomisation,
    )  # fmt: skip
    if out_dir is not None:
        write_cams(result, out_dir, maps=False)
    return result


def _volume_settings(plan: ModelPlan) -> dict[str, Any]:
    """The ``volumes`` entry of the settings: a native 3D network, the cube it sees, and the checks."""
    import monai

    side = plan.config.input_size
    return {
        "network": "3d",
        "input": f"one cube of {side} x {side} x {side} voxels around the lesion, isotropic in mm",
        "checks": dict(CHECKS),
        "monai": monai.__version__,
    }
