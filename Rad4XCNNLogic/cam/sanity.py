"""Which saliency map to trust: sanity flags of each map (empty, constant, non-finite, saturated, outside
the lesion) and, per method over a cohort, a one-line verdict from the flags, the faithfulness scores paired
against baseline maps on the same cases, and the randomisation test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

__all__ = [
    "BASELINES",
    "FLAGS",
    "GAINS",
    "PAIRED_LEVEL",
    "RANDOMISATION_THRESHOLD",
    "SATURATION_LEVEL",
    "SATURATION_SHARE",
    "map_flags",
    "method_verdicts",
    "paired_interval",
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
#: The confidence level of the intervals of a method's paired gains over its baseline maps.
PAIRED_LEVEL = 0.95
#: The baseline maps a method is compared with, on the same images (see
#: :func:`Rad4XCNNLogic.cam.faithfulness.faithfulness_scores`).
BASELINES = ("random", "shuffled")
#: The paired gains over a baseline: ROAD combined, and insertion minus deletion AUC (higher is better).
GAINS = {"road": ("road_combined", None), "insdel": ("insertion_auc", "deletion_auc")}


def map_flags(
    raw: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None = None,
    box: tuple[int, int, int, int] | None = None,
    *,
    region: np.ndarray | None = None,
    saturation_level: float = SATURATION_LEVEL,
    saturation_share: float = SATURATION_SHARE,
) -> list[str]:
    """The sanity flags of one map (an empty list for a clean map).

    ``raw`` is the method's map before ReLU and scaling (on the target layer's grid), ``cam`` the scaled map
    in image geometry, ``mask`` the lesion, ``box`` the crop's part of the image ``(row0, col0, row1, col1)``.
    A map volume of a 3D network gives instead its ``region``, the voxels its cube covers (boolean, the
    map's shape): any number of dimensions works.

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
    if region is not None:
        window = cam[np.asarray(region, bool)]
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


def paired_interval(differences, level: float = PAIRED_LEVEL) -> tuple[float, float, float, int]:
    """The mean of paired differences (a method's score minus its baseline's, per case), its Student-t
    interval at ``level`` over the cases, and the number of cases: ``(mean, low, high, n)``; non-finite
    differences are left out, and the interval is NaN with fewer than 2 cases.

    Examples
    --------
    >>> mean, low, high, n = paired_interval([0.1, 0.2, 0.3])
    >>> round(mean, 3), round(low, 3), round(high, 3), n
    (0.2, -0.048, 0.448, 3)
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(d.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2.0, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def _paired_gains(group: pd.DataFrame) -> dict[str, float]:
    """A method's paired gains over each baseline (:data:`GAINS` x :data:`BASELINES`): per gain its mean,
    ``_low`` and ``_high`` (the interval) and per baseline ``cases_<baseline>`` (cases paired)."""

    def column(name: str) -> np.ndarray:
        return group[name].astype(float).to_numpy() if name in group else np.full(len(group), np.nan)

    out: dict[str, float] = {}
    for baseline in BASELINES:
        cases = 0
        for gain, (plus, minus) in GAINS.items():
            method = column(plus) - (column(minus) if minus else 0.0)
            other = column(f"{plus}_{baseline}") - (column(f"{minus}_{baseline}") if minus else 0.0)
            mean, low, high, n = paired_interval(method - other)
            key = f"{gain}_gain_{baseline}"
            out.update({key: mean, f"{key}_low": low, f"{key}_high": high})
            cases = max(cases, n)
        out[f"cases_{baseline}"] = cases
    return out


def _beats(gains: dict[str, float], baseline: str) -> bool | None:
    """Whether every paired interval over ``baseline`` lies above 0 (None: no interval to judge)."""
    lows = [gains[f"{gain}_gain_{baseline}_low"] for gain in GAINS]
    if not any(np.isfinite(low) for low in lows):
        return None
    return all(np.isfinite(low) and low > 0 for low in lows)


def _gain_text(gains: dict[str, float], baseline: str) -> str:
    parts = []
    for gain, label in (("road", "ROAD"), ("insdel", "insertion - deletion AUC")):
        key = f"{gain}_gain_{baseline}"
        parts.append(
            f"{label} {_number(gains[key], True)} [{_number(gains[key + '_low'], True)}, "
            f"{_number(gains[key + '_high'], True)}]"
        )
    return f"paired gain {', '.join(parts)} over {gains[f'cases_{baseline}']} cases"


def _faithfulness_verdict(gains: dict[str, float], road: float, similarity: float) -> str:
    """The verdict of a method that passed the randomisation test and the flags: by its gains over the
    baselines (see :func:`method_verdicts`)."""
    spearman = f"randomised-weights Spearman {_number(similarity)}"
    if np.isfinite(road) and road <= 0:
        return (
            "unfaithful: removing its most relevant pixels hurts the prediction no more than removing its "
            f"least relevant (ROAD {_number(road, True)})"
        )
    random, shuffled = _beats(gains, "random"), _beats(gains, "shuffled")
    if random is None:
        return (
            "unconfirmed: not compared with a random map (faithfulness not measured, or fewer than 2 cases "
            f"with scores); {spearman}"
        )
    if not random:
        return f"no better than a random map: {_gain_text(gains, 'random')}"
    if shuffled is None:
        return (
            f"unconfirmed: beats a random map ({_gain_text(gains, 'random')}), but fewer than 2 cases have a "
            "lesion to shuffle its map within"
        )
    if not shuffled:
        return (
            "no better than its own map shuffled within the lesion: "
            f"{_gain_text(gains, 'shuffled')} (it beats a random map: {_gain_text(gains, 'random')})"
        )
    return (
        f"supported: beats a random map ({_gain_text(gains, 'random')}) and its own map shuffled within the "
        f"lesion ({_gain_text(gains, 'shuffled')}); ROAD {_number(road, True)}, {spearman}"
    )


def method_verdicts(
    metrics: pd.DataFrame, randomisation_threshold: float = RANDOMISATION_THRESHOLD
) -> pd.DataFrame:
    """Per method over a cohort: maps, flagged maps, mean faithfulness, its paired gains over the baseline
    maps, median randomisation similarity, whether the method fails the randomisation test, and a one-line
    verdict.

    ``metrics`` is the CAM metrics table (one row per case and method, with ``flags``, ``road_combined``,
    ``deletion_auc``, ``insertion_auc``, their baseline columns ``<score>_random`` and ``<score>_shuffled``
    and ``randomisation_similarity``). The gains: per case, the method's ROAD combined and its insertion
    minus deletion AUC minus the same score of a baseline map on the same image (a random map; the method's
    own map shuffled within the lesion), their mean and 95% Student-t interval over the cases
    (:func:`paired_interval`). The verdict, in order:

    1. *not trustworthy* when the maps barely change with randomised weights (median Spearman at least
       ``randomisation_threshold``): they show the image or the architecture, not what the model learnt;
    2. *not trustworthy* when half the maps or more are flagged;
    3. *unfaithful* when removing its most relevant pixels first hurts the model no more than removing its
       least relevant first (mean ROAD combined at most 0);
    4. *unconfirmed* without baseline scores on at least 2 cases (faithfulness not measured);
    5. *no better than a random map* when an interval of its gains over the random map reaches 0 or below;
       *no better than its own map shuffled within the lesion* likewise for the shuffled map: what it
       adds to "the lesion" is not shown;
    6. otherwise *supported*; among two or more supported methods, the one with the largest paired gain
       (``paired_gain``: the smallest of its four mean gains) is *the map to trust first*.

    Examples
    --------
    >>> method_verdicts(result.metrics)[["verdict"]]  # doctest: +SKIP
    """
    import pandas as pd

    gain_columns = list(_paired_gains(pd.DataFrame()))
    columns = [
        "maps",
        "flagged_maps",
        "road_combined",
        "deletion_auc",
        "insertion_auc",
        *gain_columns,
        "paired_gain",
        "beats_baselines",
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
        gains = _paired_gains(group)
        means = [gains[f"{g}_gain_{b}"] for g in GAINS for b in BASELINES]
        paired_gain = float(np.min(means)) if all(np.isfinite(means)) else float("nan")
        beats = bool(_beats(gains, "random") and _beats(gains, "shuffled"))
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
        else:
            verdict = _faithfulness_verdict(gains, road, similarity)
            if verdict.startswith("supported") and flagged:
                verdict += f"; {flagged} of {n} maps flagged ({flag_text})"
        rows[method] = [
            n, flagged, road, deletion, insertion, *(gains[c] for c in gain_columns), paired_gain, beats,
            similarity, fails, verdict,
        ]  # fmt: skip
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "method"
    supported = table[table["verdict"].str.startswith("supported")]
    if len(supported) > 1 and supported["paired_gain"].notna().any():
        best = supported["paired_gain"].astype(float).idxmax()
        table.loc[best, "verdict"] = "the map to trust first (" + table.loc[best, "verdict"] + ")"
    return table
