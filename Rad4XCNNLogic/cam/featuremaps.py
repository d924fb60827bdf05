"""Voxel-based radiomic feature maps: PyRadiomics' voxel-based extraction of named features (or of those
that explain a run's most important deep features), one NRRD per case and feature in the image's geometry,
and the spatial agreement (Spearman, inside the lesion) of each feature map with each saliency map.

It lives beside the CAMs (not in ``features/``) because its output is a map to read against the CAMs: the
same image geometry, file naming and agreement measure; it takes its parameters from ``features.radiomics``.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cam.images import file_stem
from Rad4XCNNLogic.cam.measures import spearman_agreement
from Rad4XCNNLogic.cam.settings import DEFAULT_KERNEL_RADIUS
from Rad4XCNNLogic.cohort.manifest import Case, Cohort
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError, first_line

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from Rad4XCNNLogic.features.radiomics_params import RadiomicsParams

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KERNEL_RADIUS",
    "FeatureMapResult",
    "check_feature_names",
    "compute_feature_maps",
    "map_agreement",
    "read_cam_maps",
    "write_feature_maps",
]

STAGE = "featuremaps"
TABLE_CSV = "featuremaps.csv"
AGREEMENT_CSV = "featuremap_agreement.csv"
SETTINGS_JSON = "featuremaps.json"
#: Feature classes that describe the whole lesion's outline and have no value per pixel.
SHAPE_CLASSES = ("shape", "shape2D")


# ------------------------------------------------------------------------------------------------ names
def _feature_vocabulary() -> dict[str, list[str]]:
    """PyRadiomics' feature classes and their non-deprecated features."""
    import radiomics

    return {
        name: sorted(f for f, deprecated in cls.getFeatureNames().items() if not deprecated)
        for name, cls in radiomics.getFeatureClasses().items()
    }


def _image_type_of(prefix: str) -> str | None:
    """PyRadiomics' image type (``Wavelet``) of a feature-name prefix (``wavelet-LH``), or None."""
    import radiomics

    head = prefix.split("-")[0].lower()
    for name in radiomics.getImageTypes():
        if name.lower() == head or (head == "lbp" and name == "LBP2D"):
            return name
    return None


def _known_names(vocabulary: dict[str, list[str]], prefixes: Sequence[str]) -> list[str]:
    return [f"{p}_{c}_{f}" for p in prefixes for c, names in vocabulary.items() for f in names]


def check_feature_names(names: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """Validate PyRadiomics feature names: ``(with a voxel-based form, shape features skipped)``.

    A name is ``<image type>_<class>_<feature>`` (``original_glcm_Contrast``, ``wavelet-LH_firstorder_Mean``).
    An unknown name raises :class:`Rad4XCNNError` listing the closest known names; shape features
    (``shape2D``) describe the whole outline and have no voxel-based form: they are returned apart, to be
    reported as skipped.

    Examples
    --------
    >>> check_feature_names("original_glcm_Contrast, original_shape2D_Elongation")
    (['original_glcm_Contrast'], ['original_shape2D_Elongation'])
    """
    from Rad4XCNNLogic.names import parse_radiomic_name

    if isinstance(names, str):
        names = names.split(",")
    wanted = list(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
    if not wanted:
        raise Rad4XCNNError("no radiomic feature named; give names such as original_glcm_Contrast")
    vocabulary = _feature_vocabulary()
    usable, skipped = [], []
    for name in wanted:
        parsed = parse_radiomic_name(name)
        prefix, feature_class, feature = parsed.image_type, parsed.feature_class, parsed.feature
        known = (
            _image_type_of(prefix) is not None
            and feature_class in vocabulary
            and feature in vocabulary[feature_class]
        )
        if not known:
            prefixes = ["original", "wavelet-LL", "wavelet-LH", "wavelet-HL", "wavelet-HH"]
            if prefix and _image_type_of(prefix) is not None and prefix not in prefixes:
                prefixes.insert(0, prefix)
            close = difflib.get_close_matches(name, _known_names(vocabulary, prefixes), n=5, cutoff=0.6)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise Rad4XCNNError(
                f"unknown radiomic feature {name!r} (expected <image type>_<class>_<feature>, e.g. "
                f"original_glcm_Contrast){hint}"
            )
        (skipped if feature_class in SHAPE_CLASSES else usable).append(name)
    for name in skipped:
        log.warning("%s is a shape feature: it has no voxel-based form and is skipped", name)
    return usable, skipped


# ------------------------------------------------------------------------------------------- one map
#: PyRadiomics' voxel-based settings (its ``voxelSetting`` section); the kernel radius is set per call.
_VOXEL_SETTING = {"maskedKernel": True, "initValue": 0}


def _settings_for(params: RadiomicsParams) -> dict:
    """The run's settings, changed only where a map on the image's own grid needs it."""
    setting = dict(params.setting)
    # maps must stay on the image's grid: no resampling; filters see the whole image, as in the run
    setting.update(label=1, resampledPixelSpacing=None, preCrop=False)
    return setting


def _filtered_image(image, mask, prefix: str, image_type: str, params: RadiomicsParams, settings: dict):
    """The 2D image of ``prefix`` (``original``, ``wavelet-LH``, ...), as PyRadiomics' extractor derives it
    from the 2D image in the run."""
    from radiomics import imageoperations

    if settings.get("normalize"):
        image = imageoperations.normalizeImage(image, **settings)
    custom = dict((params.config.get("imageType") or {}).get(image_type) or {})
    generator = getattr(imageoperations, f"get{image_type}Image")(image, mask, **{**settings, **custom})
    for filtered, name, _ in generator:
        if name.lower() == prefix.lower():
            return filtered
    raise Rad4XCNNError(
        f"image type {prefix!r} is not produced by the {image_type} filter with these parameters"
    )


def feature_map(loaded, name: str, params: RadiomicsParams, kernel_radius: int = DEFAULT_KERNEL_RADIUS):
    """One voxel-based feature map of one case, on the image's pixel grid (float32, 0 outside the lesion;
    NaN where the feature is undefined for a pixel's kernel). For a 3D volume, a (slices, rows, columns)
    map with a 3D kernel (a cube of ``2 * kernel_radius + 1`` voxels) on the volume's own grid.

    Raises :class:`CaseError` when the kernel is larger than the lesion (a map of one value would say
    nothing) or when PyRadiomics refuses the case.
    """
    import SimpleITK as sitk

    from Rad4XCNNLogic.features.radiomics import pixels_for_pyradiomics
    from Rad4XCNNLogic.names import parse_radiomic_name

    mask = np.asarray(loaded.mask, bool)
    volume = mask.ndim == 3
    extent = [int(axis.max() - axis.min() + 1) for axis in np.nonzero(mask)]
    side = 2 * int(kernel_radius) + 1
    if side > min(extent):
        unit = "voxels" if volume else "pixels"
        kernel = " x ".join([str(side)] * len(extent))
        raise CaseError(
            loaded.case_id,
            f"the kernel of radius {kernel_radius} ({kernel} {unit}) is larger than the lesion "
            f"({' x '.join(map(str, extent))} {unit}); choose a kernel radius of at most "
            f"{(min(extent) - 1) // 2}",
        )
    prefix = parse_radiomic_name(name).image_type
    settings = _settings_for(params)
    image_sitk = loaded.image.to_sitk(pixels_for_pyradiomics(loaded.image.array))
    mask_sitk = loaded.image.to_sitk(mask.astype(np.uint8))
    filtered = _filtered_image(image_sitk, mask_sitk, prefix, _image_type_of(prefix), params, settings)
    if volume:  # a 3D kernel on the volume's own grid
        inner = {**settings, "normalize": False, "force2D": False}
        return _voxel_map(loaded.case_id, filtered, mask_sitk, mask, inner, name, kernel_radius)
    # Voxel-based firstorder fails on a true 2D image in PyRadiomics 3.1 (2-column kernel offsets get a
    # 3-column centre appended); the filtered image as one slice of a 3D image, with force2D, gives the
    # same in-plane kernel. Normalisation was applied before the filter, as the extractor does.
    inner = {**settings, "normalize": False, "force2D": True, "force2Ddimension": 0}
    image3d, mask3d = sitk.JoinSeries(filtered), sitk.JoinSeries(mask_sitk)
    return _voxel_map(loaded.case_id, image3d, mask3d, mask[np.newaxis], inner, name, kernel_radius)[0]


def _voxel_map(case_id, image, mask_image, mask: np.ndarray, setting: dict, name: str, kernel_radius: int):
    """PyRadiomics' voxel-based map of ``name``'s feature on the 3D ``image`` (already filtered), placed on
    the image's whole (slices, rows, columns) grid, 0 outside ``mask``."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    from Rad4XCNNLogic.names import parse_radiomic_name

    parsed = parse_radiomic_name(name)
    extractor = featureextractor.RadiomicsFeatureExtractor(
        {"setting": setting, "voxelSetting": {**_VOXEL_SETTING, "kernelRadius": int(kernel_radius)}}
    )
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName("Original")
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(**{parsed.feature_class: [parsed.feature]})
    try:
        result = extractor.execute(image, mask_image, label=1, voxelBased=True)
    except ValueError as exc:
        problem = f"{name}: PyRadiomics refused the case: {first_line(exc)}"
        raise CaseError(case_id, problem) from None
    key = f"original_{parsed.feature_class}_{parsed.feature}"
    if key not in result:
        raise CaseError(case_id, f"PyRadiomics gave no voxel-based map of {name}")
    out = result[key]
    values = sitk.GetArrayFromImage(out).astype(np.float32)
    x0, y0, z0 = image.TransformPhysicalPointToIndex(out.GetOrigin())
    full = np.zeros(mask.shape, np.float32)
    depth, height, width = values.shape
    full[z0 : z0 + depth, y0 : y0 + height, x0 : x0 + width] = values
    full[~mask] = 0.0
    return full


# ----------------------------------------------------------------------------------------- agreement
def read_cam_maps(cam_dir: str | os.PathLike, case_id: str) -> dict[str, np.ndarray]:
    """The scaled CAMs of one case in a CAM folder (``<case>_<method>.nrrd``; raw maps are left out); a
    CAM volume of a 3D case as a (slices, rows, columns) array."""
    from Rad4XCNNLogic.cam.methods import METHODS
    from Rad4XCNNLogic.cohort.imageio import read_image
    from Rad4XCNNLogic.cohort.volumes import image_info, read_volume

    folder = Path(cam_dir)
    maps = {}
    for method, record in METHODS.items():
        path = folder / f"{file_stem(case_id)}_{record.file_tag}.nrrd"
        if path.is_file():
            three_d = (image_info(path) or (2,))[0] == 3
            image = read_volume(path, case_id) if three_d else read_image(path, case_id)
            maps[method] = image.array.astype(np.float32)
    return maps


def map_agreement(feature: np.ndarray, cam: np.ndarray, mask: np.ndarray) -> float:
    """Spearman's rho between a feature map and a CAM over the lesion's pixels where the feature is defined.

    Examples
    --------
    >>> mask = np.ones((3, 3), bool)
    >>> a = np.arange(9.0).reshape(3, 3)
    >>> map_agreement(a, a**2, mask), map_agreement(a, -a, mask)
    (1.0, -1.0)
    """
    inside = np.asarray(mask, bool) & np.isfinite(feature) & np.isfinite(cam)
    return spearman_agreement(np.asarray(feature)[inside], np.asarray(cam)[inside])


# ----------------------------------------------------------------------------------------------- cohort
@dataclass
class FeatureMapResult:
    """Voxel-based feature maps of some cases.

    ``table``: one row per case and feature (case_id, feature, pixels, nan_pixels, min, max, mean,
    seconds, file). ``agreement``: one row per case, feature and CAM method (spearman inside the lesion).
    ``maps``: ``{(case_id, feature): map}`` when kept. ``skipped``: features without a voxel-based form.
    ``failures``: cases (or case and feature) left out, with why.
    """

    table: pd.DataFrame
    agreement: pd.DataFrame
    maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _task(case: Case, name: str, params, kernel_radius: int) -> tuple[str, str, Any, float]:
    """One (case, feature) map in a worker: ``(case_id, feature, map or problem text, seconds)``."""
    from Rad4XCNNLogic.features.radiomics import prepare_process

    prepare_process(limit_threads=False)
    start = time.perf_counter()
    try:
        loaded = case.load()
        if not loaded.mask.any():
            raise CaseError(case.case_id, "mask is empty (no lesion pixel): no feature map")
        return (
            case.case_id,
            name,
            feature_map(loaded, name, params, kernel_radius),
            time.perf_counter() - start,
        )
    except CaseError as exc:
        return case.case_id, name, exc.problem, time.perf_counter() - start
    except Exception as exc:  # PyRadiomics' own failures: one case and feature, not the batch
        problem = f"{name}: {type(exc).__name__}: {first_line(exc, 200)}"
        return case.case_id, name, problem, time.perf_counter() - start


def _run(tasks: list[tuple[Case, str]], params, kernel_radius: int, jobs: int):
    if jobs <= 1 or len(tasks) <= 1:
        for case, name in tasks:
            yield _task(case, name, params, kernel_radius)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from Rad4XCNNLogic.features.radiomics import init_worker, worker_context

    with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(), initializer=init_worker) as pool:
        futures = [pool.submit(_task, case, name, params, kernel_radius) for case, name in tasks]
        for future in as_completed(futures):
            yield future.result()


def compute_feature_maps(
    cohort: Cohort | Sequence[Case],
    features: str | Sequence[str] | None = None,
    *,
    cases: str | Sequence[str] | None = None,
    from_run: str | os.PathLike | None = None,
    top: int | None = None,
    pairs: pd.DataFrame | None = None,
    params: str | os.PathLike | RadiomicsParams,
    kernel_radius: int = DEFAULT_KERNEL_RADIUS,
    cam_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    keep_maps: bool | None = None,
    jobs: int = 1,
) -> FeatureMapResult:
    """Voxel-based radiomic feature maps of each case, with their agreement with the case's CAMs.

    Parameters
    ----------
    cohort : the cases (a :class:`Cohort` or a list); ``cases`` picks ids (a list or comma-separated).
    features : PyRadiomics feature names (``original_glcm_Contrast``); for the radiomic features that
        explain a run's ``top`` most important deep features, see
        :func:`Rad4XCNNLogic.run.results.features_from_run` (its ``pairs`` are recorded with the maps).
        Shape features are skipped (no voxel-based form).
    from_run, top, pairs : where the features came from, recorded in the settings; ``from_run`` also
        gives the default ``cam_dir``.
    params : the radiomics preset or parameter file (discretisation, filters), as in the run.
    kernel_radius : see :data:`DEFAULT_KERNEL_RADIUS`; a kernel larger than a case's lesion fails that case.
    cam_dir : a CAM folder (``<run>/cam``) whose maps are compared with each feature map; default: the
        run's ``cam/`` with ``from_run``, else none.
    out_dir : where ``<case>_<feature>.nrrd`` (in the image's size, spacing, origin and direction) and the
        tables go (see :func:`write_feature_maps`).
    jobs : worker processes, one (case, feature) map per task.

    Examples
    --------
    >>> maps = compute_feature_maps(
    ...     cohort, "original_glcm_Contrast", params="paper", out_dir="fm"
    ... )  # doctest: +SKIP
    """
    import pandas as pd

    from Rad4XCNNLogic.cam.maps import select_cases
    from Rad4XCNNLogic.features.radiomics_params import for_volumes, resolve_params

    started = time.perf_counter()
    if int(kernel_radius) < 1:
        raise Rad4XCNNError(f"kernel radius must be at least 1 pixel, got {kernel_radius}")
    if int(jobs) < 1:
        raise Rad4XCNNError(f"jobs must be at least 1, got {jobs}")
    if features is None or (isinstance(features, str) and not features.strip()):
        raise Rad4XCNNError("name the radiomic features (--features), or give a run (--from-run RUN --top K)")
    usable, skipped = check_feature_names(features)
    if not usable:
        raise Rad4XCNNError(f"no feature with a voxel-based form among {', '.join(skipped)} (shape features)")
    params = resolve_params(params)
    if getattr(cohort, "dims", None) == 3:  # volumes: the 3D counterpart of a 2D preset (paper -> paper3d)
        params = for_volumes(params)
    failures: list[CaseFailure] = []
    chosen = select_cases(cohort, cases, failures)
    if cam_dir is None and from_run is not None and (Path(from_run) / "cam").is_dir():
        cam_dir = Path(from_run) / "cam"
    keep = (out_dir is None) if keep_maps is None else bool(keep_maps)
    by_id = {c.case_id: c for c in chosen}
    masks: dict[str, np.ndarray] = {}
    rows, agreement, kept = [], [], {}
    tasks = [(case, name) for case in chosen for name in usable]
    reported: set[tuple[str, str]] = set()
    for case_id, name, value, seconds in _run(tasks, params, int(kernel_radius), int(jobs)):
        if isinstance(value, str):
            if (case_id, value) not in reported:  # a kernel too large for the lesion: once per case
                reported.add((case_id, value))
                failures.append(CaseFailure(case_id, STAGE, value))
                log.warning("case %s: %s", case_id, value)
            continue
        if case_id not in masks:
            masks[case_id] = by_id[case_id].load().mask.astype(bool)
        mask = masks[case_id]
        inside = value[mask]
        finite = inside[np.isfinite(inside)]
        row = {
            "case_id": case_id,
            "feature": name,
            "pixels": int(mask.sum()),
            "nan_pixels": int((~np.isfinite(inside)).sum()),
            "min": float(finite.min()) if finite.size else float("nan"),
            "max": float(finite.max()) if finite.size else float("nan"),
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "seconds": round(seconds, 4),
            "file": "",
        }
        if out_dir is not None:
            row["file"] = _write_map(out_dir, by_id[case_id], name, value).name
        if cam_dir is not None:
            for method, cam in read_cam_maps(cam_dir, case_id).items():
                if cam.shape == value.shape:
                    rho = map_agreement(value, cam, mask)
                    agreement.append({"case_id": case_id, "feature": name, "method": method, "spearman": rho})
        rows.append(row)
        if keep:
            kept[(case_id, name)] = value
    if not rows and failures:
        raise Rad4XCNNError(f"no feature map: every case failed (first: {failures[0]})")
    order = {(c.case_id, n): i for i, (c, n) in enumerate(tasks)}
    table = pd.DataFrame(
        rows, columns=["case_id", "feature", "pixels", "nan_pixels", "min", "max", "mean", "seconds", "file"]
    )
    table = table.iloc[sorted(range(len(table)), key=lambda i: order[(table.case_id[i], table.feature[i])])]
    agreement_frame = pd.DataFrame(agreement, columns=["case_id", "feature", "method", "spearman"])
    settings = {
        "params": params.name,
        "params_sha256": params.sha256,
        "kernel_radius": int(kernel_radius),
        "kernel": f"{2 * int(kernel_radius) + 1} x {2 * int(kernel_radius) + 1} pixels, lesion pixels only",
        "features": usable,
        "skipped": {name: "shape feature: no voxel-based form" for name in skipped},
        "from_run": None if from_run is None else str(from_run),
        "top": int(top) if top is not None and pairs is not None else None,
        "pairs": None if pairs is None else pairs.to_dict(orient="records"),
        "cam_dir": None if cam_dir is None else str(cam_dir),
        "values": "the feature of each lesion pixel's kernel; 0 outside the lesion and, in the files, where "
        "the feature is undefined for a pixel's kernel (nan_pixels in the table)",
        "jobs": int(jobs),
        "seconds": round(time.perf_counter() - started, 3),
    }
    result = FeatureMapResult(
        table.reset_index(drop=True), agreement_frame, kept, skipped, failures, settings
    )
    if out_dir is not None:
        write_feature_maps(result, out_dir)
    return result


def _write_map(out_dir, case: Case, name: str, value: np.ndarray) -> Path:
    from Rad4XCNNLogic.cohort.imageio import read_image, write_image
    from Rad4XCNNLogic.cohort.volumes import read_volume

    path = Path(out_dir) / f"{file_stem(case.case_id)}_{file_stem(name)}.nrrd"
    path.parent.mkdir(parents=True, exist_ok=True)
    # undefined pixels (NaN, counted in the table) are written as 0: image readers, ours included, refuse
    # NaN pixels as a sign of a broken file
    value = np.nan_to_num(value.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    like = read_volume(case.image, case.case_id) if value.ndim == 3 else read_image(case.image, case.case_id)
    return write_image(path, value, like=like)


def write_feature_maps(result: FeatureMapResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``featuremaps.csv``, ``featuremap_agreement.csv`` and ``featuremaps.json`` (settings, skipped
    features, failures) into ``out_dir``, atomically; returns their paths. The NRRD maps are written while
    they are computed (with ``out_dir``)."""
    from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "table": write_csv_atomic(out / TABLE_CSV, result.table, index=False),
        "agreement": write_csv_atomic(out / AGREEMENT_CSV, result.agreement, index=False),
        "settings": write_json_atomic(
            out / SETTINGS_JSON,
            {
                "settings": result.settings,
                "skipped": result.skipped,
                "failures": [f.to_dict() for f in result.failures],
            },
        ),
    }
