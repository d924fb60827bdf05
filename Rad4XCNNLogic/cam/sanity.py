"""Which saliency map to trust: sanity flags of each map (empty, constant, non-finite, saturated, outside
the lesion) and, per method over a cohort, a one-line verdict from the flags, the faithfulness scores and the
randomisation test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

__all__ = [
    "FLAGS",
    "RANDOMISATION_THRESHOLD",
    "SATURATION_LEVEL",
    "SATURATION_SHARE",
    "map_flags",
    "method_verdicts",
]

#: Every flag a map can carry, in the order they are listed.
FLAGS = ("non-finite", "constant", "empty", "saturated", "outside")
#: A pixel at or above this share of the map's maximum counts as saturated ...
SATURATION_LEVEL = 0.9
#: ... and a map with at least this share of its crop's pixels saturated highlights everything.
SATURATION_SHARE = 0.5
#: A method whose maps keep a median Spearman of at least this with the fully randomised model's maps
#: fails the randomisation test (Adebayo et al. 2018): its maps do not depend on what the model learnt.
RANDOMISATION_THRESHOLD = 0.5


def map_flags(
    raw: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None = None,
    box: tuple[int, int, int, int] | None = None,
    *,
    saturation_level: float = SATURATION_LEVEL,
    saturation_share: float = SATURATION_SHARE,
) -> list[str]:
    """The sanity flags of one map (an empty list for a clean map).

    ``raw`` is the method's map before ReLU and scaling (on the target layer's grid), ``cam`` the scaled map
    in image geometry, ``mask`` the lesion, ``box`` the crop's part of the image ``(row0, col0, row1, col1)``.

    * ``non-finite``: the raw map holds NaN or infinity;
    * ``constant``: the raw map has one value everywhere (scaled, it says nothing);
    * ``empty``: no positive value is left (the method found no evidence for the class, or all of it fell
      into the crop's padding outside the image);
    * ``saturated``: at least ``saturation_share`` of the crop's pixels are at ``saturation_level`` of the
      maximum or above: the map highlights everything;
    * ``outside``: the map has energy, none of it inside the lesion.

    Examples
    --------
    >>> mask = np.zeros((4, 4), bool); mask[:2, :2] = True
    >>> cam = np.zeros((4, 4)); cam[3, 3] = 1.0
    >>> map_flags(np.array([[0.0, 2.0]]), cam, mask)
    ['outside']
    >>> map_flags(np.full((2, 2), 3.0), np.zeros((4, 4)), mask)
    ['constant']
    """
    flags: list[str] = []
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size and not np.all(np.isfinite(raw)):
        flags.append("non-finite")
    finite = raw[np.isfinite(raw)]
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if finite.size > 1 and np.ptp(finite) <= 1e-7 * max(float(np.abs(finite).max()), 1e-30):
        flags.append("constant")
        return flags
    window = cam if box is None else cam[box[0] : box[2], box[1] : box[3]]
    top = float(window.max()) if window.size else 0.0
    if top <= 0.0:
        flags.append("empty")
        return flags
    if float((window >= saturation_level * top).mean()) >= saturation_share:
        flags.append("saturated")
    if mask is not None and np.any(mask):
        inside = float(np.clip(cam, 0.0, None)[np.asarray(mask, bool)].sum())
        if inside <= 1e-6 * float(np.clip(cam, 0.0, None).sum()):
            flags.append("outside")
    return flags


def _number(value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def method_verdicts(
    metrics: pd.DataFrame, randomisation_threshold: float = RANDOMISATION_THRESHOLD
) -> pd.DataFrame:
    """Per method over a cohort: maps, flagged maps, mean faithfulness, median randomisation similarity,
    whether the method fails the randomisation test, and a one-line verdict.

    ``metrics`` is the CAM metrics table (one row per case and method, with ``flags``, ``road_combined``,
    ``deletion_auc``, ``insertion_auc`` and ``randomisation_similarity``). The verdict, in order:

    1. *not trustworthy* when the maps barely change with randomised weights (median Spearman at least
       ``randomisation_threshold``): they show the image or the architecture, not what the model learnt;
    2. *not trustworthy* when half the maps or more are flagged;
    3. *unfaithful* when removing its most relevant pixels first hurts the model no more than removing its
       least relevant first (mean ROAD combined at most 0) or deletion does not beat insertion;
    4. otherwise *supported*, and the supported method with the highest ROAD is *the map to trust first*.

    Examples
    --------
    >>> method_verdicts(result.metrics)[["verdict"]]  # doctest: +SKIP
    """
    import pandas as pd

    columns = [
        "maps",
        "flagged_maps",
        "road_combined",
        "deletion_auc",
        "insertion_auc",
        "randomisation_similarity",
        "fails_randomisation",
        "verdict",
    ]
    if metrics is None or metrics.empty:
        return pd.DataFrame(columns=columns)
    rows = {}
    for method, group in metrics.groupby("method", sort=False):
        flags = group["flags"].astype("string").fillna("") if "flags" in group else pd.Series("", group.index)
        counts: dict[str, int] = {}
        for text in flags:
            for flag in filter(None, text.split(";")):
                counts[flag] = counts.get(flag, 0) + 1
        flagged = int((flags != "").sum())

        def mean(column: str, frame=group) -> float:
            return float(frame[column].astype(float).mean()) if column in frame else float("nan")

        similarity = (
            float(group["randomisation_similarity"].astype(float).median())
            if "randomisation_similarity" in group
            else float("nan")
        )
        fails = bool(np.isfinite(similarity) and similarity >= randomisation_threshold)
        road, deletion, insertion = mean("road_combined"), mean("deletion_auc"), mean("insertion_auc")
        n = len(group)
        flag_text = ", ".join(
            f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: FLAGS.index(kv[0]))
        )
        if fails:
            verdict = (
                "not trustworthy: its maps barely change when the model's weights are randomised "
                f"(median Spearman {_number(similarity)})"
            )
        elif flagged * 2 >= n:
            verdict = f"not trustworthy: {flagged} of {n} maps flagged ({flag_text})"
        elif (np.isfinite(road) and road <= 0) or (
            np.isfinite(deletion) and np.isfinite(insertion) and deletion >= insertion
        ):
            verdict = (
                "unfaithful: removing its most relevant pixels hurts the prediction no more than removing "
                f"its least relevant (ROAD {_number(road, True)}, deletion AUC {_number(deletion)}, "
                f"insertion AUC {_number(insertion)})"
            )
        else:
            verdict = (
                f"supported: ROAD {_number(road, True)}, deletion AUC {_number(deletion)} < insertion AUC "
                f"{_number(insertion)}, randomised-weights Spearman {_number(similarity)}"
                + (f"; {flagged} of {n} maps flagged ({flag_text})" if flagged else "")
            )
        rows[method] = [n, flagged, road, deletion, insertion, similarity, fails, verdict]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "method"
    supported = table[table["verdict"].str.startswith("supported")]
    if len(supported) > 1 and supported["road_combined"].notna().any():
        best = supported["road_combined"].astype(float).idxmax()
        table.loc[best, "verdict"] = "the map to trust first (" + table.loc[best, "verdict"] + ")"
    return table
