"""Measurements of saliency maps: how much of a map lies in the lesion, and how far two maps agree.

Every function takes maps in the image's geometry (see :func:`Rad4XCNNLogic.cam.maps.map_to_image`) and plain
boolean masks: the fraction of CAM energy inside the lesion and its chance level, the pointing game, and,
between two methods' maps of one case, Spearman's rank correlation and the IoU of their top-20% regions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from Rad4XCNNLogic.cohort.roi import SquareCrop


def energy_inside(cam: np.ndarray, mask: np.ndarray | None) -> float:
    """The fraction of the map's total (non-negative) value that lies inside the mask.

    NaN without a mask (no lesion) or for an all-zero map.

    Examples
    --------
    >>> cam = np.zeros((4, 4)); cam[0, 0], cam[3, 3] = 3.0, 1.0
    >>> mask = np.zeros((4, 4), bool); mask[:2, :2] = True
    >>> energy_inside(cam, mask)
    0.75
    """
    if mask is None or not np.any(mask):
        return float("nan")
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    total = float(cam.sum())
    if total <= 0.0:
        return float("nan")
    return float(cam[np.asarray(mask, bool)].sum() / total)


def map_peak(cam: np.ndarray) -> tuple[int, int] | None:
    """The pixel ``(row, col)`` of the map's maximum; among tied maxima, the one nearest to their centroid.

    None for an all-zero (or non-finite) map.
    """
    cam = np.asarray(cam, dtype=np.float64)
    top = float(np.nanmax(cam)) if cam.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        return None
    rows, cols = np.nonzero(cam >= top * (1.0 - 1e-6))
    if len(rows) == 1:
        return int(rows[0]), int(cols[0])
    r, c = rows.mean(), cols.mean()
    i = int(np.argmin((rows - r) ** 2 + (cols - c) ** 2))
    return int(rows[i]), int(cols[i])


def pointing_game(cam: np.ndarray, mask: np.ndarray | None, *, tolerance: float) -> float:
    """1.0 if the map's maximum lies inside the mask (within ``tolerance`` pixels), else 0.0.

    Where several pixels share the maximum, it is a hit if at least half of them are inside. NaN without a
    mask or for an all-zero map. (Zhang et al.'s pointing game uses a 15-pixel tolerance on natural
    images; 0, the CAM settings' default, asks for the maximum to be inside the lesion itself.)

    Examples
    --------
    >>> cam = np.zeros((5, 5)); cam[1, 1] = 1.0
    >>> mask = np.zeros((5, 5), bool); mask[0:2, 0:2] = True
    >>> pointing_game(cam, mask, tolerance=0), pointing_game(cam, ~mask, tolerance=0)
    (1.0, 0.0)
    """
    if mask is None or not np.any(mask):
        return float("nan")
    cam = np.asarray(cam, dtype=np.float64)
    top = float(np.nanmax(cam)) if cam.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        return float("nan")
    region = np.asarray(mask, bool)
    if tolerance > 0:
        from scipy.ndimage import distance_transform_edt

        region = distance_transform_edt(~region) <= float(tolerance)
    peaks = cam >= top * (1.0 - 1e-6)
    return 1.0 if region[peaks].mean() >= 0.5 else 0.0


def top_region(cam: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """The map's top ``fraction`` of pixels: those at or above its ``1 - fraction`` quantile.

    Pixels at the map's minimum are never included, so a map that is 0 on most of its area gives only its
    positive part (not an arbitrary share of the zeros).
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.size == 0:
        return np.zeros(cam.shape, bool)
    threshold = np.quantile(cam, 1.0 - float(fraction))
    return (cam >= threshold) & (cam > cam.min())


def top_fraction_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.2) -> float:
    """Intersection over union of the top-``fraction`` regions of two maps (NaN if both are empty).

    Examples
    --------
    >>> a = np.arange(10.0); b = a[::-1].copy()
    >>> top_fraction_iou(a, a), top_fraction_iou(a, b)
    (1.0, 0.0)
    """
    ra, rb = top_region(a, fraction), top_region(b, fraction)
    union = int((ra | rb).sum())
    return float((ra & rb).sum() / union) if union else float("nan")


def spearman_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps over their pixels (NaN if either is constant).

    Examples
    --------
    >>> a = np.arange(12.0).reshape(3, 4)
    >>> spearman_agreement(a, a ** 2), spearman_agreement(a, -a)
    (1.0, -1.0)
    """
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    return float(np.clip(np.corrcoef(ra, rb)[0, 1], -1.0, 1.0))


def map_metrics(
    cam: np.ndarray, mask: np.ndarray | None, crop: SquareCrop | None = None, *, tolerance: float
) -> dict[str, Any]:
    """The per-map measurements, for a map in image geometry.

    ``energy_inside``: share of the map's sum inside the lesion; ``energy_chance``: the same for a uniform
    map over the crop (the lesion's share of the crop's image pixels), the level to beat;
    ``pointing_hit``: 1/0, is the maximum inside the lesion; ``peak_row``, ``peak_col``: where the maximum
    is; ``max_value``: the map's maximum on the image (below 1 when the peak fell into the padding);
    ``empty``: the map is zero everywhere (e.g. Grad-CAM with no positive evidence for the class). Lesion
    measurements are NaN for a case without lesion.
    """
    has_mask = mask is not None and bool(np.any(mask))
    peak = map_peak(cam)
    chance = float("nan")
    if has_mask and crop is not None:
        r0, c0, r1, c1 = crop.box_in_image
        window = np.asarray(mask, bool)[r0:r1, c0:c1]
        chance = float(window.mean()) if window.size else float("nan")
    return {
        "energy_inside": energy_inside(cam, mask if has_mask else None),
        "energy_chance": chance,
        "pointing_hit": pointing_game(cam, mask if has_mask else None, tolerance=tolerance),
        "peak_row": peak[0] if peak else None,
        "peak_col": peak[1] if peak else None,
        "max_value": float(np.max(cam)) if np.size(cam) else float("nan"),
        "empty": peak is None,
    }


def agreement_rows(
    maps: dict[str, np.ndarray], crop: SquareCrop | None = None, fraction: float = 0.2
) -> list[dict[str, Any]]:
    """Spearman correlation and top-``fraction`` IoU for every pair of methods' maps of one case.

    Measured on the crop's part of the image (the pixels the model saw; outside it every map is 0, which
    would inflate the agreement).
    """
    names = list(maps)
    column = iou_column(fraction)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ma, mb = maps[a], maps[b]
            if crop is not None:
                r0, c0, r1, c1 = crop.box_in_image
                ma, mb = ma[r0:r1, c0:c1], mb[r0:r1, c0:c1]
            rows.append(
                {
                    "method_a": a,
                    "method_b": b,
                    "spearman": spearman_agreement(ma, mb),
                    column: top_fraction_iou(ma, mb, fraction),
                }
            )
    return rows


def iou_column(fraction: float) -> str:
    return f"top{round(100 * float(fraction))}_iou"


def lesion_measures(cam: np.ndarray, mask: np.ndarray | None, covered: np.ndarray) -> dict:
    """``energy_inside``, ``energy_chance`` and ``pointing_hit`` of a map volume inside the 3D lesion;
    ``covered``: the voxels the model saw (the chance level is the lesion's share of them).

    >>> cam = np.zeros((2, 3, 3)); cam[1, 1, 1] = 3.0; cam[0, 0, 0] = 1.0
    >>> mask = np.zeros((2, 3, 3), bool); mask[1, 1, :] = True
    >>> lesion_measures(cam, mask, np.ones_like(mask))
    {'energy_inside': 0.75, 'energy_chance': 0.16666666666666666, 'pointing_hit': 1.0}
    """
    nan = float("nan")
    total = float(cam.sum())
    if mask is None or not mask.any() or total <= 0:
        return {"energy_inside": nan, "energy_chance": nan, "pointing_hit": nan}
    chance = float(mask[covered].mean()) if covered.any() else nan
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {
        "energy_inside": float(cam[mask].sum()) / total,
        "energy_chance": chance,
        "pointing_hit": float(mask[peak]),
    }
