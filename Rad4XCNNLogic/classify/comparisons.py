"""Paired comparisons between feature sets: the AUC difference of two feature sets scored on the same cases,
with a percentile interval from the very bootstrap draws of the per-set intervals, and DeLong's test.

Which sets are compared: the pairs a user names (``classification.compare``, :func:`named_pairs`), else
those that follow from the set names (:func:`comparison_pairs`), else every pair (:func:`all_pairs`). The
test is the fast DeLong algorithm of Sun & Xu (2014), written with numpy (:func:`delong_covariance`).

Many comparisons back one claim (every classifier, every CNN against every ViT), so each claim and evaluation
set is a *family*: its p-values are Holm-adjusted (:func:`holm`) and its intervals widened to a simultaneous
band (:func:`simultaneous_band`, max-|t| over the family on the same bootstrap draws).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from Rad4XCNNLogic.classify.metrics import evaluation_rng, stratified_bootstrap_weights, weighted_metrics
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.names import (
    RADIOMIC_SET,
    controlled_key,
    feature_set_kind,
    feature_set_model,
    feature_set_name,
)

log = logging.getLogger(__name__)

#: The columns of ``comparisons.csv``, in order.
COMPARISON_COLUMNS = (
    "evaluated_on",
    "classifier",
    "set_a",
    "set_b",
    "auc_a",
    "auc_b",
    "delta_auc",
    "ci_low",
    "ci_high",
    "p_delong",
    "p_holm",
    "sim_ci_low",
    "sim_ci_high",
    "family",
    "family_size",
)
#: The ``family`` (claim) of the pairs a user names, and of every pair when no other rule applies.
NAMED_FAMILY = "named"
ALL_PAIRS_FAMILY = "all-pairs"

# timm families built on self-attention over patches; every other backbone counts as a CNN.
_TRANSFORMER_RE = re.compile(
    r"^(vit|deit|beit|swin|cait|eva|xcit|pvt|twins|coat_|crossvit|mvit|convit|tnt|volo|flexivit|levit"
    r"|samvit|sam_vit|dinov2|pit_|gcvit|nest_|efficientformer|fastvit_ma|tiny_vit|hiera|davit|focalnet)",
    re.IGNORECASE,
)


# ------------------------------------------------------------------------------------------ DeLong
def _midranks(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties get the mean of their ranks) of each row of ``x`` (k, n)."""
    order = np.argsort(x, axis=1, kind="mergesort")
    ranks = np.empty_like(x, dtype=float)
    for row, (values, idx) in enumerate(zip(x, order, strict=True)):
        ordered = values[idx]
        # runs of equal values share the mean of the ranks they span
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(ordered)]
        mean_rank = (starts + ends + 1) / 2.0
        ranks[row, idx] = np.repeat(mean_rank, ends - starts)
    return ranks


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of ``k`` scores of the same cases and the DeLong covariance matrix of those AUCs.

    The fast algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389): mid-ranks within the
    positives, within the negatives and over all cases give the structural components
    ``V10`` (per positive) and ``V01`` (per negative) in O(n log n); the covariance is
    ``S10 / m + S01 / n`` (m positives, n negatives). Ties count one half, as in the AUC.

    Parameters
    ----------
    y : (N,) 1 for positive cases, 0 for negative ones.
    scores : (k, N) or (N,) scores, higher meaning more likely positive.

    Returns
    -------
    (aucs (k,), covariance (k, k))

    Examples
    --------
    >>> aucs, cov = delong_covariance(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    >>> float(aucs[0]), round(float(cov[0, 0]), 4)
    (0.75, 0.125)
    """
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape[1] != y.size:
        raise ValueError(f"expected scores with {y.size} cases, got shape {scores.shape}")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs positive and negative cases")
    pos, neg = scores[:, y], scores[:, ~y]
    tx, ty = _midranks(pos), _midranks(neg)
    tz = _midranks(np.concatenate([pos, neg], axis=1))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n  # per positive: the fraction of negatives it outranks
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: the fraction of positives that outrank it
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated AUCs: the AUCs, their difference, its standard error, z and p."""

    auc_a: float
    auc_b: float
    delta: float
    se: float
    z: float
    p: float


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """DeLong's two-sided test that two scores of the same cases have the same AUC.

    When the difference has no variance (identical rankings) the difference is 0 and p is 1.

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 1, 1]); a = np.array([1, 2, 3, 4, 5, 6.0])
    >>> r = delong_test(y, a, a[::-1]); r.auc_a, r.auc_b, r.p < 0.05
    (1.0, 0.0, True)
    """
    from scipy.stats import norm

    aucs, cov = delong_covariance(y, np.vstack([score_a, score_b]))
    delta = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z = 0.0 if abs(delta) < 1e-12 else float(np.sign(delta) * np.inf)
        p = 1.0 if abs(delta) < 1e-12 else 0.0
        return DeLongResult(float(aucs[0]), float(aucs[1]), delta, 0.0, z, p)
    se = float(np.sqrt(var))
    z = delta / se
    return DeLongResult(float(aucs[0]), float(aucs[1]), delta, se, z, float(2 * norm.sf(abs(z))))


# ------------------------------------------------------------------------------------------ which pairs
def backbone_family(model: str) -> str:
    """``"vit"`` for a vision transformer (by its timm name), ``"cnn"`` for every other backbone.

    A control label (``<name>-random``) has its backbone's family.

    Examples
    --------
    >>> backbone_family("vit_base_patch32_224"), backbone_family("densenet121-random")
    ('vit', 'cnn')
    """
    name = controlled_key(model) or str(model)
    return "vit" if _TRANSFORMER_RE.match(name) else "cnn"


@dataclass(frozen=True)
class ComparisonPair:
    """Two feature sets to compare (the difference is ``set_a - set_b``) and what the comparison asks."""

    set_a: str
    set_b: str
    kind: str


def _parse_set(name: str) -> tuple[str, str | None] | None:
    """(kind, model) of a deep, combined or explained feature set name; None for any other set."""
    kind = feature_set_kind(name)
    return (kind, feature_set_model(name)) if kind in ("deep", "combined", "explained") else None


def comparison_pairs(
    set_names: Iterable[str],
    controls: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
) -> list[ComparisonPair]:
    """The comparisons between feature sets that the paper's claims rest on, derived from the set names.

    Set names are those of :func:`~Rad4XCNNLogic.classify.classifiers.infer_feature_sets`: ``deep``,
    ``radiomic``, ``deep+radiomic``, ``explained-deep`` for one backbone; ``deep-<model>``,
    ``deep-<model>+radiomic``, ``explained-deep-<model>`` for several. The pairs, as ``set_a`` vs ``set_b``:

    * ``deep-vs-radiomic``: every deep set vs ``radiomic``;
    * ``cnn-vs-vit``: every CNN's deep set vs every ViT's (family from the timm name,
      :func:`backbone_family`, or from ``families``: model -> ``cnn`` / ``vit``);
    * ``explained-vs-deep``: ``explained-deep<-model>`` vs ``deep<-model>``;
    * ``combined-vs-deep``: ``deep<-model>+radiomic`` vs ``deep<-model>``;
    * ``trained-vs-control``: ``deep-<model>`` vs ``deep-<model>-random``, and every pair of ``controls``
      (trained model -> its control model, e.g. ``{"resnet50": "resnet50-imagenet"}``).

    Controls are left out of the CNN-vs-ViT and deep-vs-radiomic pairs: they are baselines, not
    contenders. Other sets (e.g. a clinical table's) take part in no default pair.

    Examples
    --------
    >>> [(p.set_a, p.set_b) for p in comparison_pairs(["deep", "radiomic", "explained-deep"])]
    [('deep', 'radiomic'), ('explained-deep', 'deep')]
    """
    names = list(dict.fromkeys(str(n) for n in set_names))
    present = set(names)
    parsed = {n: p for n in names if (p := _parse_set(n)) is not None}
    controls = dict(controls or {})
    control_models = set(controls.values()) | {
        model for kind, model in parsed.values() if model and controlled_key(model)
    }

    def family(model: str | None) -> str:
        return (families or {}).get(model or "", backbone_family(model or ""))

    def deep_set(model: str | None) -> str:
        return feature_set_name("deep", model)

    pairs: list[ComparisonPair] = []
    deep_sets = [(n, model) for n, (kind, model) in parsed.items() if kind == "deep"]
    contenders = [(n, model) for n, model in deep_sets if model not in control_models]
    if RADIOMIC_SET in present:
        pairs += [ComparisonPair(n, RADIOMIC_SET, "deep-vs-radiomic") for n, _ in contenders]
    cnns = [n for n, model in contenders if model is not None and family(model) == "cnn"]
    vits = [n for n, model in contenders if model is not None and family(model) == "vit"]
    pairs += [ComparisonPair(a, b, "cnn-vs-vit") for a in cnns for b in vits]
    for name, (kind, model) in parsed.items():
        base = deep_set(model)
        if kind == "explained" and base in present:
            pairs.append(ComparisonPair(name, base, "explained-vs-deep"))
        elif kind == "combined" and base in present:
            pairs.append(ComparisonPair(name, base, "combined-vs-deep"))
    trained_control = {
        (controlled_key(model), model)
        for _, model in deep_sets
        if model is not None and controlled_key(model)
    }
    trained_control |= set(controls.items())
    for trained, control in sorted(trained_control):
        a, b = deep_set(trained), deep_set(control)
        if a in present and b in present:
            pairs.append(ComparisonPair(a, b, "trained-vs-control"))
    return pairs


def named_pairs(compare: Iterable[str], set_names: Iterable[str]) -> list[ComparisonPair]:
    """The pairs a user names, ``"A:B"`` each (the difference is ``A - B``), checked against the sets.

    Raises :class:`Rad4XCNNError` (one line) for a text that is not ``A:B`` or a set that is not among
    ``set_names``.

    Examples
    --------
    >>> [(p.set_a, p.set_b, p.kind) for p in named_pairs(["worst:means"], ["means", "worst"])]
    [('worst', 'means', 'named')]
    """
    names = list(dict.fromkeys(str(n) for n in set_names))
    pairs = []
    for text in compare:
        a, sep, b = str(text).partition(":")
        a, b = a.strip(), b.strip()
        if not sep or not a or not b or ":" in b:
            raise Rad4XCNNError(f"classification.compare: {text!r} is not A:B (two feature set names)")
        for name in (a, b):
            if name not in names:
                raise Rad4XCNNError(
                    f"classification.compare: no feature set {name!r}; the sets are {', '.join(names)}"
                )
        if a == b:
            raise Rad4XCNNError(f"classification.compare: {text!r} compares a set with itself")
        pairs.append(ComparisonPair(a, b, NAMED_FAMILY))
    return list(dict.fromkeys(pairs))


def all_pairs(set_names: Iterable[str]) -> list[ComparisonPair]:
    """Every pair of sets, in the order given (earlier set first).

    Examples
    --------
    >>> [(p.set_a, p.set_b) for p in all_pairs(["a", "b", "c"])]
    [('a', 'b'), ('a', 'c'), ('b', 'c')]
    """
    names = list(dict.fromkeys(str(n) for n in set_names))
    return [ComparisonPair(a, b, ALL_PAIRS_FAMILY) for i, a in enumerate(names) for b in names[i + 1 :]]


def choose_pairs(
    set_names: Iterable[str],
    compare: Iterable[str] | None = None,
    controls: Mapping[str, str] | None = None,
) -> list[ComparisonPair]:
    """The comparisons of a classification: the pairs named in ``compare`` (:func:`named_pairs`) when
    given, else those the set names imply (:func:`comparison_pairs`), else - no rule applies, e.g. tables a
    user named ``means`` and ``worst`` - every pair (:func:`all_pairs`).

    Examples
    --------
    >>> [(p.set_a, p.set_b, p.kind) for p in choose_pairs(["means", "worst"])]
    [('means', 'worst', 'all-pairs')]
    """
    names = list(dict.fromkeys(str(n) for n in set_names))
    if compare:
        return named_pairs(compare, names)
    return comparison_pairs(names, controls) or all_pairs(names)


# ------------------------------------------------------------------------------------------ multiplicity
def holm(p) -> np.ndarray:
    """Holm's step-down adjustment of the p-values ``p`` (one family); NaN stays NaN and is not counted.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, float("nan")]).round(2).tolist()[:3]
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(stepped, 1.0)
    return out


def simultaneous_band(delta, boots, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """A simultaneous ``confidence`` band for the differences ``delta`` (k,) of one family, from their
    bootstrap differences ``boots`` (k, B) on the same draws: each bootstrap difference is studentised by its
    bootstrap standard deviation, ``t = (d_b - delta) / sd``; the band is ``delta +- c * sd``, ``c`` the
    ``confidence`` quantile of ``max |t|`` over the family. All k intervals hold together with probability
    about ``confidence`` (the max-|t| method), where each percentile interval alone holds with it.

    A difference with no bootstrap spread (a set against itself) gets the band ``[delta, delta]``; without
    draws the band is NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> low, high = simultaneous_band(np.zeros(2), rng.normal(size=(2, 2000)))
    >>> bool(2.0 < high[0] < 2.6 and np.allclose(low, -high))
    True
    """
    delta = np.asarray(delta, dtype=float)
    boots = np.atleast_2d(np.asarray(boots, dtype=float))
    low = np.full(delta.shape, np.nan)
    high = np.full(delta.shape, np.nan)
    if boots.shape[1] < 2:
        return low, high
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a finite draw
        sd = np.nanstd(boots, axis=1, ddof=1)
    flat = np.isfinite(delta) & (sd <= 1e-12)
    low[flat] = high[flat] = delta[flat]
    spread = np.isfinite(delta) & np.isfinite(sd) & (sd > 1e-12)
    if spread.any():
        t = np.abs(boots[spread] - delta[spread, None]) / sd[spread, None]
        most = np.nanmax(np.where(np.isfinite(t), t, -np.inf), axis=0)
        most = most[np.isfinite(most)]
        if most.size:
            c = float(np.quantile(most, confidence))
            low[spread] = delta[spread] - c * sd[spread]
            high[spread] = delta[spread] + c * sd[spread]
    return low, high


# ------------------------------------------------------------------------------------------ comparisons
def compare_feature_sets(
    predictions,
    *,
    classes: Sequence[str],
    pairs: Sequence[ComparisonPair] | None = None,
    controls: Mapping[str, str] | None = None,
    compare: Sequence[str] | None = None,
    n_bootstrap: int,
    confidence: float = 0.95,
    seed: int = 0,
):
    """Paired AUC differences between feature sets, per evaluation set and classifier, adjusted for the
    number of comparisons within each claim.

    Parameters
    ----------
    predictions : the ``predictions.csv`` table of
        :func:`~Rad4XCNNLogic.classify.classifiers.classify`: case_id, feature_set, classifier,
        evaluated_on, label, ``p_<class>``, and ``score`` (what the AUC ranks by) for two classes.
    classes : the class names, for two classes [negative, positive].
    pairs : the comparisons; default :func:`choose_pairs` of the feature sets present, ``compare`` and
        ``controls``.
    controls, compare : passed to :func:`choose_pairs` (the pairs a user names, ``"A:B"``).
    n_bootstrap, confidence, seed : the stratified bootstrap. The draws are those of the per-set intervals
        in ``classification.csv`` (:func:`~Rad4XCNNLogic.classify.metrics.evaluation_rng`), so the
        difference's interval is paired with them: both sets are scored on each resample.

    Returns
    -------
    pandas DataFrame with :data:`COMPARISON_COLUMNS`: the two AUCs, ``delta_auc = auc_a - auc_b``, its
    percentile interval (as computed, not widened) and DeLong's two-sided p (two classes only; NaN for a
    multi-class one-vs-rest AUC, which DeLong's test does not cover); then, per family - the comparisons
    of one claim (the pair's kind, e.g. ``cnn-vs-vit``) on one evaluation set, every classifier included
    - ``p_holm`` (:func:`holm`), the simultaneous band ``sim_ci_low`` / ``sim_ci_high``
    (:func:`simultaneous_band`), the claim as ``family`` and the number of comparisons ``family_size``.

    Examples
    --------
    >>> table = compare_feature_sets(  # doctest: +SKIP
    ...     result.predictions, classes=result.classes, n_bootstrap=1000
    ... )
    """
    import pandas as pd

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    empty = pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    if predictions is None or len(predictions) == 0:
        return empty
    set_names = list(dict.fromkeys(predictions["feature_set"]))
    pairs = list(pairs) if pairs is not None else choose_pairs(set_names, compare, controls)
    if not pairs:
        return empty
    binary = len(classes) == 2
    score_columns = ["score"] if binary and "score" in predictions else [f"p_{c}" for c in classes]
    alpha = (1 - confidence) / 2
    rows, boots = [], []
    case_order: dict[str, Any] = {}  # one case order, hence the same draws, for every classifier of a set
    for (where, clf), part in predictions.groupby(["evaluated_on", "classifier"], sort=False):
        by_set = {name: frame.set_index("case_id") for name, frame in part.groupby("feature_set", sort=False)}
        wanted = [p for p in pairs if p.set_a in by_set and p.set_b in by_set]
        if not wanted:
            continue
        order = case_order.setdefault(where, by_set[wanted[0].set_a].index)
        first = by_set[wanted[0].set_a].reindex(order)
        y = np.array([list(classes).index(label) for label in first["label"]])
        groups = first["split_group"].tolist() if "split_group" in first else None  # the per-set draws
        weights = stratified_bootstrap_weights(y, n_bootstrap, evaluation_rng(seed, str(where)), groups)
        needed = list(dict.fromkeys(name for p in wanted for name in (p.set_a, p.set_b)))
        scored = {
            name: _set_auc(by_set[name].reindex(order), y, weights, classes, score_columns, name, where)
            for name in needed
        }
        for pair in wanted:
            score_a, auc_a, boot_a = scored[pair.set_a]
            score_b, auc_b, boot_b = scored[pair.set_b]
            diff = boot_a - boot_b
            if n_bootstrap and np.isfinite(diff).any():
                low, high = (float(q) for q in np.nanquantile(diff, [alpha, 1 - alpha]))
            else:
                low = high = float("nan")
            p = float("nan")
            if binary and score_a.ndim == 1:
                p = delong_test(y == 1, score_a, score_b).p
            rows.append(
                (where, clf, pair.set_a, pair.set_b, auc_a, auc_b, auc_a - auc_b, low, high, p, pair.kind)
            )
            boots.append(diff)
    if not rows:
        return empty
    columns = [c for c in COMPARISON_COLUMNS if c not in _FAMILY_COLUMNS]
    table = pd.DataFrame(rows, columns=[*columns, "family"])
    table = _adjust_families(table, boots, confidence)
    log.info(
        "%d paired comparison(s) of feature sets in %d famil(ies) of claim x evaluation set",
        len(table),
        table.groupby(["family", "evaluated_on"]).ngroups,
    )
    return table[list(COMPARISON_COLUMNS)]


#: The columns :func:`_adjust_families` adds.
_FAMILY_COLUMNS = ("p_holm", "sim_ci_low", "sim_ci_high", "family", "family_size")


def _adjust_families(table, boots, confidence):
    """Holm p, simultaneous band and size of each family (claim x evaluation set) of ``table``'s rows."""
    table = table.assign(p_holm=np.nan, sim_ci_low=np.nan, sim_ci_high=np.nan, family_size=0)
    for _, rows in table.groupby(["family", "evaluated_on"], sort=False):
        idx = rows.index.to_numpy()
        table.loc[idx, "p_holm"] = holm(rows["p_delong"].to_numpy(dtype=float))
        draws = [boots[i] for i in idx]
        if len({len(d) for d in draws}) == 1 and len(draws[0]):
            low, high = simultaneous_band(
                rows["delta_auc"].to_numpy(dtype=float), np.vstack(draws), confidence
            )
            table.loc[idx, "sim_ci_low"], table.loc[idx, "sim_ci_high"] = low, high
        table.loc[idx, "family_size"] = len(idx)
    return table


def _set_auc(frame, y, weights, classes, score_columns, name, where):
    """(score, AUC, bootstrap AUCs) of one feature set's predictions, rows in the order of ``y``."""
    if frame[score_columns].isna().any().any():
        raise ValueError(f"feature set {name!r} lacks predictions for cases of {where}")
    score = frame[score_columns].to_numpy(dtype=float)
    score = score[:, 0] if score.shape[1] == 1 else score
    dummy = np.full((len(y), len(classes)), 1.0 / len(classes))
    point = float(weighted_metrics(y, dummy, np.ones((1, len(y))), score)["auc"][0])
    boot = weighted_metrics(y, dummy, weights, score)["auc"] if len(weights) else np.array([])
    return score, point, boot


def select_by_cv(metrics):
    """Per feature set, the classifier with the best cross-validated AUC on the training data.

    Choosing by a held-out AUC would make that AUC an optimistic estimate (the choice is fitted to the very
    cases it is judged on); the CV AUC uses the training data only. Ties keep the classifier listed first.

    Parameters
    ----------
    metrics : the ``classification.csv`` table (feature_set, classifier, cv_auc, ...).

    Returns
    -------
    pandas DataFrame with one row per feature set: feature_set, classifier, cv_auc.

    Examples
    --------
    >>> import pandas as pd
    >>> m = pd.DataFrame({"feature_set": ["deep", "deep"], "classifier": ["rf", "svm"],
    ...                   "evaluated_on": ["internal-test"] * 2, "cv_auc": [0.8, 0.9], "auc": [0.95, 0.7]})
    >>> select_by_cv(m)["classifier"].tolist()
    ['svm']
    """
    import pandas as pd

    columns = ["feature_set", "classifier", "cv_auc"]
    if metrics is None or len(metrics) == 0 or "cv_auc" not in metrics:
        return pd.DataFrame(columns=columns)
    models = metrics.drop_duplicates(["feature_set", "classifier"])[columns]
    ranked = models.assign(_order=np.arange(len(models))).sort_values(
        ["cv_auc", "_order"], ascending=[False, True], kind="stable", na_position="last"
    )
    best = ranked.drop_duplicates("feature_set")
    order = {name: i for i, name in enumerate(dict.fromkeys(metrics["feature_set"]))}
    best = best.sort_values("feature_set", key=lambda s: s.map(order), kind="stable")
    return best[columns].reset_index(drop=True)
