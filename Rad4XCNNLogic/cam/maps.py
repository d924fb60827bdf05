"""Saliency maps of a trained backbone over a cohort, checked: each case's maps (Grad-CAM, EigenCAM,
ScoreCAM, ...) in the image's geometry with their raw values, their measurements against the lesion, sanity
flags, faithfulness (ROAD, deletion, insertion), the randomisation test, and agreement between methods.

The methods live in :mod:`.methods`, the target layer in :mod:`.layers`, geometry and files in
:mod:`.images`, measurements in :mod:`.measures`, flags and verdicts in :mod:`.sanity`, faithfulness and
randomisation in :mod:`.faithfulness`; this module runs them over a cohort and writes the tables.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cam.faithfulness import BASELINE_COLUMNS, DEFAULT_PERCENTILES
from Rad4XCNNLogic.cam.images import (
    CAM_SUBDIR,
    cam_paths,
    heat_colours,
    map_to_image,
    overlay_image,
    raw_map_to_image,
    write_case_maps,
)
from Rad4XCNNLogic.cam.layers import (
    ActivationTransform,
    TargetLayer,
    default_target_layer,
    layer_candidates,
    probe_layer,
    resolve_target_layer,
)
from Rad4XCNNLogic.cam.measures import (
    agreement_rows,
    energy_inside,
    iou_column,
    map_metrics,
    map_peak,
    pointing_game,
    spearman_agreement,
    top_fraction_iou,
    top_region,
)
from Rad4XCNNLogic.cam.methods import (
    METHODS,
    CamMethod,
    MapComputer,
    first_component_projection,
)
from Rad4XCNNLogic.cam.model import class_fields, load_cam_model, target_index_of
from Rad4XCNNLogic.cam.sanity import RANDOMISATION_THRESHOLD, map_flags, method_verdicts
from Rad4XCNNLogic.cam.settings import CamConfig, check_methods
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, LoadedCase
from Rad4XCNNLogic.cohort.roi import SquareCrop
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError, first_line
from Rad4XCNNLogic.infra.progress import track
from Rad4XCNNLogic.infra.settings import check_section

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from Rad4XCNNLogic.features.backbones import Backbone, LoadedCheckpoint

log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "ActivationTransform",
    "CamMethod",
    "CamResult",
    "TargetLayer",
    "agreement_rows",
    "cam_paths",
    "check_methods",
    "compute_cams",
    "default_target_layer",
    "energy_inside",
    "first_component_projection",
    "heat_colours",
    "layer_candidates",
    "map_metrics",
    "map_peak",
    "map_to_image",
    "overlay_image",
    "pointing_game",
    "resolve_target_layer",
    "select_cases",
    "spearman_agreement",
    "top_fraction_iou",
    "top_region",
    "write_cams",
    "write_case_maps",
]

STAGE = "cam"
METRICS_CSV = "cam_metrics.csv"
AGREEMENT_CSV = "cam_agreement.csv"
RANDOMISATION_CSV = "cam_randomisation.csv"
SUMMARY_CSV = "cam_summary.csv"
SETTINGS_JSON = "cam_run.json"


# ------------------------------------------------------------------------------------------------ results
@dataclass
class CamResult:
    """Saliency maps of a cohort, their measurements and their checks.

    ``metrics``: one row per (case, method): case_id, method, label, has_lesion, target_class,
    predicted_class, target_probability, energy_inside, energy_chance, pointing_hit, peak_row, peak_col,
    max_value, empty (see :func:`map_metrics`), flags (``;``-joined, see
    :func:`~Rad4XCNNLogic.cam.sanity.map_flags`), road_morf, road_lerf, road_combined, deletion_auc,
    insertion_auc, the same scores of the baseline maps (``road_combined_random``, ...,
    ``insertion_auc_shuffled``; see :mod:`~Rad4XCNNLogic.cam.faithfulness`) and randomisation_similarity
    (Spearman with the fully randomised model's map). ``agreement``: one row per case and pair of unflagged
    maps: case_id, method_a, method_b, spearman, top20_iou. ``randomisation``: one row per case, method and
    cascade step. ``maps`` / ``raw_maps``: ``{(case_id, method): map}`` in image geometry (scaled to [0, 1] /
    as the method computed it), when kept. ``files``: ``{(case_id, method): {"nrrd", "raw", "png"}}``.
    ``failures``: cases (or case and method) left out. ``settings``: model, weights, target layer, methods,
    device, timings.
    """

    metrics: pd.DataFrame
    agreement: pd.DataFrame
    maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    files: dict[tuple[str, str], dict[str, Path]] = field(default_factory=dict)
    failures: list[CaseFailure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)
    crops: dict[str, SquareCrop] = field(default_factory=dict)
    raw_maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    randomisation: pd.DataFrame | None = None

    def summary(self) -> pd.DataFrame:
        """Per method: cases, pointing-game accuracy, mean energy inside the lesion and its chance level,
        empty and flagged maps, mean faithfulness, median randomisation similarity and the one-line
        verdict of :func:`~Rad4XCNNLogic.cam.sanity.method_verdicts`."""
        import pandas as pd

        columns = ["cases", "pointing_game", "energy_inside", "energy_chance", "empty_maps"]
        if self.metrics.empty:
            return pd.DataFrame(columns=columns + list(method_verdicts(None).columns[1:]))
        grouped = self.metrics.groupby("method", sort=False)
        table = pd.DataFrame(
            {
                "cases": grouped["case_id"].count(),
                "pointing_game": grouped["pointing_hit"].mean(),
                "energy_inside": grouped["energy_inside"].mean(),
                "energy_chance": grouped["energy_chance"].mean(),
                "empty_maps": grouped["empty"].sum().astype(int),
            }
        )
        threshold = self.settings.get("randomisation_threshold", RANDOMISATION_THRESHOLD)
        verdicts = method_verdicts(self.metrics, threshold).drop(columns=["maps"])
        return table.join(verdicts)

    @property
    def flagged(self) -> pd.DataFrame:
        """The flagged maps: case_id, method, flags (they are left out of the agreement figures)."""
        if self.metrics.empty or "flags" not in self.metrics:
            return self.metrics.reindex(columns=["case_id", "method", "flags"]).iloc[:0]
        chosen = self.metrics[self.metrics["flags"].astype("string").fillna("") != ""]
        return chosen[["case_id", "method", "flags"]].reset_index(drop=True)

    def agreement_summary(self) -> pd.DataFrame:
        """Per pair of methods: cases and the mean Spearman correlation and top-fraction IoU."""
        if self.agreement.empty:
            return self.agreement
        numeric = [c for c in self.agreement.columns if c not in ("case_id", "method_a", "method_b")]
        grouped = self.agreement.groupby(["method_a", "method_b"], sort=False)
        out = grouped[numeric].mean()
        out.insert(0, "cases", grouped["case_id"].count())
        return out


METRIC_COLUMNS = [
    "case_id",
    "method",
    "label",
    "has_lesion",
    "target_class",
    "predicted_class",
    "target_probability",
    "energy_inside",
    "energy_chance",
    "pointing_hit",
    "peak_row",
    "peak_col",
    "max_value",
    "empty",
    "flags",
    "road_morf",
    "road_lerf",
    "road_combined",
    "deletion_auc",
    "insertion_auc",
    *BASELINE_COLUMNS,
    "randomisation_similarity",
]
RANDOMISATION_COLUMNS = ["case_id", "method", "step", "order", "spearman"]


# ---------------------------------------------------------------------------------------------- compute
def select_cases(cohort, cases, failures: list[CaseFailure]) -> list[Case]:
    """The cases of ``cohort`` named by ``cases`` (ids, a list or comma-separated; None: all), in that order.

    An unknown id raises :class:`Rad4XCNNError` with the closest ids; an id left out when the manifest was
    read is appended to ``failures``.
    """
    all_cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
    if cases is not None:
        wanted = [
            c.strip() for c in (cases.split(",") if isinstance(cases, str) else cases) if str(c).strip()
        ]
        by_id = {c.case_id: c for c in all_cases}
        known_failed = {f.case_id for f in (cohort.failures if isinstance(cohort, Cohort) else [])}
        unknown = [c for c in wanted if c not in by_id and c not in known_failed]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(by_id), n=3)
            hint = f" (closest ids: {', '.join(close)})" if close else ""
            raise Rad4XCNNError(f"case id(s) not in the manifest: {', '.join(unknown[:5])}{hint}")
        for c in wanted:
            if c in known_failed and c not in by_id:
                failures.append(CaseFailure(c, STAGE, "left out when the manifest was read"))
        all_cases = [by_id[c] for c in dict.fromkeys(wanted) if c in by_id]
    if not all_cases:
        raise Rad4XCNNError("no case to compute saliency maps for")
    return all_cases


def checked_section(settings: CamConfig | None, top_fraction: float) -> CamConfig:
    """The cam section (None: its defaults) with its methods' names: the methods checked against the
    registry (other spellings, a hint for a misspelt name), the rest once by the section's options."""
    section = CamConfig() if settings is None else settings
    names = check_methods(section.methods, METHODS)
    section = check_section(dataclasses.replace(section, methods=names), "cam", checked=("methods",))
    if not 0.0 < float(top_fraction) < 1.0:
        raise Rad4XCNNError(f"top fraction must be between 0 and 1, got {top_fraction}")
    return section


def load_prepared(chunk, prepare, failures: list) -> list[tuple[LoadedCase, Any]]:
    """``(loaded case, prepare(loaded case))`` for each case of a batch; a case that cannot be read or
    prepared is recorded in ``failures`` (one line naming it) and the others go on."""
    done = []
    for case in chunk:
        try:
            loaded = case.load()
            done.append((loaded, prepare(loaded)))
        except CaseError as exc:
            failures.append(CaseFailure(case.case_id, STAGE, exc.problem))
            log.warning("%s", exc)
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:
            problem = f"preprocessing failed: {type(exc).__name__}: {first_line(exc, 200)}"
            failures.append(CaseFailure(case.case_id, STAGE, problem))
            log.warning("case %s: %s", case.case_id, problem)
    return done


def _load_batch(chunk, config, failures: list, crops: dict) -> tuple[list[LoadedCase], list]:
    """The cases of a batch loaded and preprocessed (their crops into ``crops``); a case that cannot be is
    recorded in ``failures`` and the others go on."""
    from Rad4XCNNLogic.features.preprocessing import preprocess_case

    done = load_prepared(chunk, lambda loaded: preprocess_case(loaded, config), failures)
    for loaded, (_, crop) in done:
        crops[loaded.case_id] = crop
    return [loaded for loaded, _ in done], [x for _, (x, _) in done]


def batch_maps(mapper, names, net, layer, x, targets, ids, failures: list, seconds: dict):
    """(maps, raw maps) of a batch by each method, on the input grid; a method failing on the batch is
    recorded for its cases and the other methods go on. Adds each method's time to ``seconds``."""
    input_maps: dict[str, np.ndarray] = {}
    input_raw: dict[str, np.ndarray] = {}
    bad_methods: dict[str, str] = {}
    for method in names:
        t0 = time.perf_counter()
        try:
            input_maps[method], input_raw[method] = mapper(method, net, layer, x, targets, ids)
        except Rad4XCNNError:
            raise
        except Exception as exc:  # one method failing on a batch must not lose the others
            bad_methods[method] = f"{method} failed: {type(exc).__name__}: {first_line(exc, 200)}"
            log.warning("%s on cases %s: %s", method, ", ".join(ids), bad_methods[method])
        seconds[method] += time.perf_counter() - t0
    for problem in bad_methods.values():
        failures.extend(CaseFailure(case_id, STAGE, problem) for case_id in ids)
    # Non-finite values would poison every measure downstream; the flag keeps the fact.
    input_maps = {m: np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for m, v in input_maps.items()}
    return input_maps, input_raw


def metrics_table(metric_rows: list[dict]):
    """The per-(case, method) metrics with their documented columns and types."""
    import pandas as pd

    metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    metrics["pointing_hit"] = metrics["pointing_hit"].astype("Float64").round().astype("Int8")
    metrics["peak_row"] = metrics["peak_row"].astype("Int64")
    metrics["peak_col"] = metrics["peak_col"].astype("Int64")
    metrics["flags"] = metrics["flags"].fillna("")
    return metrics


@dataclass
class ModelPlan:
    """The network the maps are computed on, where, at which layer and for which class."""

    loaded: Any
    config: Any
    device: Any
    net: Any
    n_out: int
    target_index: int | None
    layer: Any
    channels: int
    feature_grid: Any


def plan_model(
    checkpoint, model, seed, device, names, target_class, target_layer, batch_size, *, volume: bool = False
) -> ModelPlan:
    """Load the model, refuse class-specific methods without a classifier head, warn about a classifier
    not trained for the task, and find the target layer (its channels and grid). ``volume``: the maps are
    of cubes through a native 3D network (:mod:`~Rad4XCNNLogic.cam.volumes3d`); a 3D network is refused
    otherwise, in one line."""
    from Rad4XCNNLogic.features.backbones import resolve_device
    from Rad4XCNNLogic.features.volume_nets import check_images, is_volume_net

    loaded_model = load_cam_model(checkpoint, model, seed)
    check_images(loaded_model.name, bool(volume))
    if volume and not is_volume_net(loaded_model.name):
        raise Rad4XCNNError(
            f"{loaded_model.name} is not a 3D network; its volume maps are the 2.5D ones (cam.volumes)"
        )
    config = loaded_model.preprocess
    dev = resolve_device(device)
    net = loaded_model.net.eval().to(dev)
    n_out = int(getattr(net, "num_classes", len(loaded_model.class_names)) or 0)
    needs_head = [m for m in names if METHODS[m].class_specific]
    if n_out == 0 and needs_head:
        raise Rad4XCNNError(
            f"{loaded_model.name} has no classifier head, so {', '.join(needs_head)} have no class to "
            "explain; give a checkpoint of 'rad4xcnn train', or use eigencam only"
        )
    if not loaded_model.task_classifier:
        log.warning(
            "%s has no classifier trained for the task (not a checkpoint of 'rad4xcnn train'): the maps "
            "explain its %s classifier and are not meaningful for the task",
            loaded_model.name,
            {"imagenet": "ImageNet", "random": "randomly initialised"}.get(
                str(loaded_model.weights.get("source")), "own"
            ),
        )
    target_index = target_index_of(target_class, loaded_model.class_names)
    layer = resolve_target_layer(net, target_layer, config.input_size)
    channels, feature_grid = probe_layer(net, layer, config.input_size, dev, volume=volume)
    if all(n == 1 for n in feature_grid):
        log.warning(
            "target layer %s has a 1-cell grid at input size %d: every map is constant; name an earlier "
            "layer (target_layer) or use a larger input",
            layer.name,
            config.input_size,
        )
    if "scorecam" in names:
        log.info(
            "ScoreCAM: %d forward passes per case (one per channel of %s), %d at a time",
            channels,
            layer.name,
            batch_size,
        )
    return ModelPlan(loaded_model, config, dev, net, n_out, target_index, layer, channels, feature_grid)


@dataclass(frozen=True)
class _Checks:
    """How each batch's maps are computed, checked, measured and kept."""

    mapper: Any
    names: list
    faithfulness: bool
    road_percentiles: list
    deletion_steps: int
    randomisation: str
    seed: int
    pointing_tolerance: float
    top_fraction: float
    keep: bool
    out_dir: Any
    lesions: Mapping = field(default_factory=dict)


@dataclass
class _Collected:
    """What the batches give: metric, agreement and randomisation rows, maps, files, crops and timings."""

    failures: list
    method_seconds: dict
    check_seconds: dict = field(default_factory=lambda: {"faithfulness": 0.0, "randomisation": 0.0})
    metric_rows: list = field(default_factory=list)
    agreement: list = field(default_factory=list)
    random_rows: list = field(default_factory=list)
    maps_kept: dict = field(default_factory=dict)
    raw_kept: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    crops: dict = field(default_factory=dict)
    mapped: int = 0


def predict_batch(plan: ModelPlan, x, n_cases: int):
    """(probabilities, predicted, explained class indices, CAM targets) of a batch; all None (and no target)
    for a network without a classifier head, where only class-agnostic methods run."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if plan.n_out == 0:
        return None, None, None, [None] * n_cases
    with torch.no_grad():
        probs = torch.softmax(plan.net(x).float(), dim=1).cpu().numpy()
    predicted = probs.argmax(axis=1)
    chosen = predicted if plan.target_index is None else np.full(n_cases, plan.target_index)
    return probs, predicted, chosen, [ClassifierOutputTarget(int(i)) for i in chosen]


def _run_batch(plan: ModelPlan, checks: _Checks, chunk, out: _Collected) -> None:
    """Maps of one batch of cases by every method, their checks (faithfulness, randomisation), and each
    case's measures, agreement, files and kept maps into ``out``."""
    import torch

    from Rad4XCNNLogic.cam.faithfulness import faithfulness_scores, lesion_on_input, randomisation_rows

    batch_loaded, inputs = _load_batch(chunk, plan.config, out.failures, out.crops)
    if not batch_loaded:
        return
    ids = [lc.case_id for lc in batch_loaded]
    x = torch.stack(inputs).to(plan.device)
    probs, predicted, chosen, targets = predict_batch(plan, x, len(ids))
    net, layer, mapper = plan.net, plan.layer, checks.mapper
    input_maps, input_raw = batch_maps(
        mapper, checks.names, net, layer, x, targets, ids, out.failures, out.method_seconds
    )
    t0 = time.perf_counter()
    scores = {}
    if checks.faithfulness and chosen is not None:
        size = plan.config.input_size
        masks = [checks.lesions[lc.case_id] if lc.case_id in checks.lesions
                 else lesion_on_input(lc.mask if lc.case.has_lesion else None, out.crops[lc.case_id], size)
                 for lc in batch_loaded]  # fmt: skip
        scores = faithfulness_scores(
            net, x, chosen, input_maps, masks, checks.road_percentiles, checks.deletion_steps,
            batch_size=mapper.batch_size, seed=checks.seed,
        )  # fmt: skip
    out.check_seconds["faithfulness"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = []
    if checks.randomisation != "none":
        size = plan.config.input_size
        rows = randomisation_rows(
            net, layer, list(input_maps), x, targets, input_maps,
            steps=checks.randomisation, seed=checks.seed, input_size=size, compute=mapper.scaled,
        )  # fmt: skip
    out.check_seconds["randomisation"] += time.perf_counter() - t0
    final_step: dict[tuple[int, str], float] = {}
    for r in rows:
        out.random_rows.append({"case_id": ids[r["index"]], **{k: r[k] for k in RANDOMISATION_COLUMNS[1:]}})
        if r["step"] == "all":
            final_step[(r["index"], r["method"])] = r["spearman"]
    predictions = (probs, predicted, chosen)
    for row, loaded in enumerate(batch_loaded):
        _record_case(plan, checks, loaded, row, input_maps, input_raw, scores, final_step, predictions, out)


def _record_case(
    plan, checks, loaded, row, input_maps, input_raw, scores, final_step, predictions, out
) -> None:
    """One case's maps on its image: their flags and measures, the agreement of the unflagged ones, the
    files written and the maps kept."""
    case = loaded.case
    crop = out.crops[case.case_id]
    config = plan.config
    image_maps = {m: map_to_image(v[row], crop) for m, v in input_maps.items()}
    raw_maps = {m: raw_map_to_image(v[row], crop, config.input_size) for m, v in input_raw.items()}
    mask = loaded.mask if case.has_lesion else None
    if case.case_id in checks.lesions:  # the caller's lesion on the model input, carried onto the image
        lesion = checks.lesions[case.case_id]
        mask = None if lesion is None else map_to_image(lesion.astype(np.float32), crop) >= 0.5
    flagged: set[str] = set()
    for method, cam in image_maps.items():
        flags = map_flags(input_raw[method][row], cam, mask, crop.box_in_image)
        if flags:
            flagged.add(method)
        faithful = {k: float(v[row]) for k, v in scores.get(method, {}).items()}
        out.metric_rows.append(
            {
                "case_id": case.case_id,
                "method": method,
                "label": case.label,
                "has_lesion": bool(case.has_lesion),
                **class_fields(plan.loaded.class_names, *predictions, row),
                **map_metrics(cam, mask, crop, tolerance=checks.pointing_tolerance),
                "flags": ";".join(flags),
                **faithful,
                "randomisation_similarity": final_step.get((row, method), float("nan")),
            }
        )
        out.mapped += 1
    clean = {m: v for m, v in image_maps.items() if m not in flagged}
    out.agreement.extend(
        {"case_id": case.case_id, **r} for r in agreement_rows(clean, crop, checks.top_fraction)
    )
    if checks.out_dir is not None and image_maps:
        written = write_case_maps(checks.out_dir, loaded, image_maps, crop, config.intensity, raw_maps)
        out.files.update({(case.case_id, m): p for m, p in written.items()})
    if checks.keep:
        out.maps_kept.update({(case.case_id, m): v for m, v in image_maps.items()})
        out.raw_kept.update({(case.case_id, m): v for m, v in raw_maps.items()})


def compute_cams(
    cohort: Cohort | Sequence[Case],
    checkpoint: str | os.PathLike | Backbone | LoadedCheckpoint | None = None,
    settings: CamConfig | None = None,
    *,
    model: str | None = None,
    cases: str | Sequence[str] | None = None,
    device: str = "auto",
    top_fraction: float = 0.2,
    out_dir: str | os.PathLike | None = None,
    keep_maps: bool | None = None,
    road_percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    randomisation_threshold: float = RANDOMISATION_THRESHOLD,
    seed: int = 0,
    progress: bool = True,
    input_lesions: Mapping[str, np.ndarray | None] | None = None,
) -> CamResult:
    """Saliency maps of each case, in the image's geometry, with their measurements and checks.

    Parameters
    ----------
    cohort : the cases (a :class:`Cohort` or a list). Cases with ``has_lesion=false`` get maps over their
        whole image; their lesion measurements are NaN.
    checkpoint : a checkpoint of ``rad4xcnn train`` (path), a
        :class:`~Rad4XCNNLogic.features.backbones.Backbone` (e.g. ``train_model(...).backbone``) or a
        :class:`~Rad4XCNNLogic.features.backbones.LoadedCheckpoint`. A plain state dict or ``"imagenet"``
        with ``model`` also works, and None with ``model`` gives random weights: the maps are then computed
        for the model's own (ImageNet or random) classifier and are not meaningful for the task; a warning
        says so.
    settings : the ``cam`` section (:class:`~Rad4XCNNLogic.cam.settings.CamConfig`; None: its defaults),
        the one statement of the values below (``methods`` ... ``randomisation``). Its ``enabled``,
        ``model``, ``gallery`` and ``cases`` are the caller's: they choose the checkpoint and ``cases``
        (:func:`~Rad4XCNNLogic.run.stages.plan_cam`).
    model : timm model name, for weights that are not a rad4xcnn checkpoint.
    cases : case ids to map (default: every case).
    methods : names from :data:`METHODS` (``gradcam``, ``gradcam++``, ``eigencam``, ``scorecam``,
        ``layercam``, ...), a list or a comma-separated string.
    target_class : the class explained, by name (or index); None: each case's predicted class. Every
        method of a case explains the same class. EigenCAM ignores it (it is class-agnostic).
    target_layer : a dotted module name (``layer4.1``, ``layer4[-1]``, ``features.denseblock4``); None:
        the default of the model's family (:func:`default_target_layer`).
    device : ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
    batch_size : images per forward pass: cases for the gradient methods and EigenCAM, masked inputs for
        ScoreCAM (one forward pass per channel of the target layer for every case: 2048 for ResNet50).
    tolerance : pixels around the lesion that still count as a pointing-game hit.
    top_fraction : the share of each map's pixels compared by the IoU agreement (0.2: top-20%).
    out_dir : when given, each case's NRRD (scaled and raw) and PNG files are written to ``<out_dir>/cam/``
        as soon as it is done, and the CSV tables at the end (see :func:`write_cams`).
    keep_maps : keep the maps in memory (``result.maps``, ``result.raw_maps``); default: only when
        ``out_dir`` is None.
    faithfulness : measure ROAD and deletion / insertion AUC of every map against the class explained,
        and of its baselines (a random map per case, the map shuffled within the lesion; models with a
        classifier head only; 18 imputations and ``2 * (deletion_steps + 1)`` forward passes per scored map,
        ``1 + 2 * methods`` scored maps per case).
    randomisation : the model-randomisation test: ``cascade`` (top layers first, then all), ``all``
        (only the fully randomised model) or ``none``; each step recomputes every method's maps.
    road_percentiles, deletion_steps : the removal levels of ROAD and of the deletion / insertion curves.
    randomisation_threshold : the median Spearman at or above which a method fails the randomisation test.
    seed : seeds random weights (a model name without checkpoint), ROAD's noise, the tie order of deletion
        and insertion, and the randomised weights.
    input_lesions : for callers whose cases' mask is not their lesion (the slices of a volume,
        :mod:`.volumes`): ``{case_id: boolean lesion on the model input's grid, or None}``, the lesion the
        baseline "shuffled within the lesion" and the sanity flags and measures use for those cases (None or
        empty: no such baseline, NaN) instead of the case's mask through its crop.

    Examples
    --------
    >>> cohort = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> section = CamConfig(methods=["gradcam", "eigencam"])
    >>> result = compute_cams(cohort, "model.pt", section, device="cpu")  # doctest: +SKIP
    >>> result.summary()[["flagged_maps", "road_combined", "verdict"]]  # doctest: +SKIP
    >>> write_cams(result, "run")  # doctest: +SKIP
    """
    import pandas as pd

    started = time.perf_counter()
    section = checked_section(settings, top_fraction)
    names, target_class, target_layer = section.methods, section.target_class, section.target_layer
    batch_size, pointing_tolerance, faithfulness = section.batch_size, section.tolerance, section.faithfulness
    deletion_steps, randomisation = section.deletion_steps, section.randomisation
    failures: list[CaseFailure] = []
    all_cases = select_cases(cohort, cases, failures)

    plan = plan_model(checkpoint, model, seed, device, names, target_class, target_layer, batch_size)
    loaded_model, config, dev, layer = plan.loaded, plan.config, plan.device, plan.layer
    keep = (out_dir is None) if keep_maps is None else bool(keep_maps)
    checks = _Checks(
        MapComputer(int(batch_size), progress, dev), names, faithfulness, list(road_percentiles),
        deletion_steps, randomisation, seed, pointing_tolerance, top_fraction, keep, out_dir,
        _input_lesions(input_lesions, config.input_size),
    )  # fmt: skip
    out = _Collected(failures, method_seconds=dict.fromkeys(names, 0.0))
    case_map = {c.case_id: c for c in all_cases}
    chunks = [all_cases[i : i + batch_size] for i in range(0, len(all_cases), batch_size)]
    for chunk in track(
        chunks, desc=f"CAMs ({', '.join(names)})", stage=STAGE, enabled=progress, unit="batch"
    ):
        _run_batch(plan, checks, chunk, out)

    if not out.metric_rows and failures:
        raise Rad4XCNNError(f"no saliency map: all {len(all_cases)} cases failed (first: {failures[0]})")
    metrics = metrics_table(out.metric_rows)
    agreement_frame = pd.DataFrame(
        out.agreement, columns=["case_id", "method_a", "method_b", "spearman", iou_column(top_fraction)]
    )
    randomisation_frame = pd.DataFrame(out.random_rows, columns=RANDOMISATION_COLUMNS)
    n_cases = metrics["case_id"].nunique()
    settings = run_settings(
        loaded_model,
        layer,
        names,
        plan.target_index,
        plan.channels,
        plan.feature_grid,
        dev,
        config,
        batch_size=int(batch_size),
        pointing_tolerance=float(pointing_tolerance),
        top_fraction=float(top_fraction),
        faithfulness=bool(faithfulness) and plan.n_out > 0,
        randomisation=randomisation,
        road_percentiles=[int(p) for p in road_percentiles],
        deletion_steps=int(deletion_steps),
        randomisation_threshold=float(randomisation_threshold),
        seed=int(seed),
        cases=n_cases,
        maps=out.mapped,
        failed=len(failures),
        seconds=round(time.perf_counter() - started, 3),
        seconds_per_case={
            m: (round(s / n_cases, 4) if n_cases else None) for m, s in out.method_seconds.items()
        },
        check_seconds_per_case={
            k: (round(s / n_cases, 4) if n_cases else None) for k, s in out.check_seconds.items()
        },
    )
    log.info(
        "CAMs: %d cases x %d methods (%s, layer %s, %s), %d failed, %.1f s",
        n_cases, len(names), loaded_model.name, layer.name, dev, len(failures), settings["seconds"],
    )  # fmt: skip
    result = CamResult(
        metrics, agreement_frame, out.maps_kept, out.files, failures, settings, case_map, out.crops,
        out.raw_kept, randomisation_frame,
    )  # fmt: skip
    if out_dir is not None:
        write_cams(result, out_dir, maps=False)
    return result


def _input_lesions(lesions, size: int) -> dict[str, np.ndarray | None]:
    """The lesions given on the model input's grid, checked: boolean, ``size`` x ``size``; empty: None."""
    out: dict[str, np.ndarray | None] = {}
    for case_id, mask in (lesions or {}).items():
        if mask is not None and np.shape(mask) != (size, size):
            raise Rad4XCNNError(
                f"case {case_id}: its lesion on the input is {np.shape(mask)}, the model input {size}x{size}"
            )
        out[case_id] = None if mask is None or not np.any(mask) else np.asarray(mask, bool)
    return out


def run_settings(
    loaded_model, layer, names, target_index, channels, feature_grid, dev, config, **extra
) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import timm
    import torch

    try:
        grad_cam_version = version("grad-cam")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        grad_cam_version = None
    return {
        "model": loaded_model.name,
        "weights": loaded_model.weights,
        "task_classifier": loaded_model.task_classifier,
        "class_names": loaded_model.class_names if len(loaded_model.class_names) <= 50 else None,
        "target_class": None if target_index is None else loaded_model.class_names[target_index],
        "target_layer": layer.name,
        "target_layer_family": layer.family,
        "target_layer_channels": channels,
        "target_layer_grid": list(feature_grid),
        "token_reshape": {"prefix_tokens": layer.prefix_tokens, "grid": list(layer.grid)}
        if layer.tokens
        else None,
        "methods": {m: METHODS[m].description for m in names},
        "scorecam_forward_passes_per_case": channels if "scorecam" in names else None,
        "map_scale": "each map is min-max scaled to [0, 1] on the model input by pytorch-grad-cam, then "
        "mapped back onto the image (bilinear), 0 outside the crop; the raw maps (*_raw.nrrd) are the "
        "method's values before ReLU and scaling",
        "faithfulness_target": "the softmax probability of the class explained",
        "device": str(dev),
        "preprocess": config.to_dict(),
        **extra,
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "grad-cam": grad_cam_version},
    }


def write_cams(result: CamResult, out_dir: str | os.PathLike, *, maps: bool = True) -> dict[str, Path]:
    """Write a :class:`CamResult` into ``<out_dir>/cam/``, atomically.

    ``cam_metrics.csv`` (with the flags, faithfulness and randomisation columns), ``cam_agreement.csv``
    (unflagged maps only), ``cam_randomisation.csv`` (every cascade step), ``cam_summary.csv`` (per method,
    with the verdict); first column case_id or method, read them with ``pandas.read_csv(path,
    index_col=0)``. ``cam_run.json`` holds the settings, the failures and the list of flagged maps. With
    ``maps``, every map held in ``result.maps`` is written as ``<case_id>_<method>.nrrd`` (the image's size,
    spacing, origin, direction), ``<case_id>_<method>_raw.nrrd`` (its raw values) and
    ``<case_id>_<method>.png`` (overlay). Returns the paths of the tables.

    Examples
    --------
    >>> paths = write_cams(result, "run")  # doctest: +SKIP
    >>> pd.read_csv(paths["summary"], index_col=0)["verdict"]  # doctest: +SKIP
    """
    import pandas as pd

    from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic

    folder = Path(out_dir) / CAM_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    if maps and result.maps:
        by_case: dict[str, dict[str, np.ndarray]] = {}
        for (case_id, method), cam in result.maps.items():
            by_case.setdefault(case_id, {})[method] = cam
        intensity = (result.settings.get("preprocess") or {}).get("intensity", "auto")
        for case_id, case_maps in by_case.items():
            case = result.cases.get(case_id)
            if case is None:
                log.warning("case %s: its image is not known to the result; maps not written", case_id)
                continue
            raw = {m: result.raw_maps[(case_id, m)] for m in case_maps if (case_id, m) in result.raw_maps}
            written = write_case_maps(
                out_dir, case.load(), case_maps, result.crops.get(case_id), intensity, raw
            )
            result.files.update({(case_id, m): p for m, p in written.items()})
    randomisation = (
        result.randomisation
        if result.randomisation is not None
        else pd.DataFrame(columns=RANDOMISATION_COLUMNS)
    )
    flagged = result.flagged
    paths = {
        "metrics": write_csv_atomic(folder / METRICS_CSV, result.metrics, index=False),
        "agreement": write_csv_atomic(folder / AGREEMENT_CSV, result.agreement, index=False),
        "randomisation": write_csv_atomic(folder / RANDOMISATION_CSV, randomisation, index=False),
        "summary": write_csv_atomic(folder / SUMMARY_CSV, result.summary()),
        "settings": write_json_atomic(
            folder / SETTINGS_JSON,
            {
                "settings": result.settings,
                "failures": [f.to_dict() for f in result.failures],
                "flagged_maps": flagged.to_dict(orient="records"),
            },
        ),
    }
    return paths
