"""Probes: how well each layer's deep features linearly encode each radiomic feature, against a control.

For every (backbone, layer) and radiomic feature, a ridge regression from the layer's standardised deep
features to the radiomic feature's ranks, its penalty chosen by K-fold cross-validation on the training
cases, scored by R² on held-out cases (bootstrap interval); the same probe on a control network's features
gives ``r2_control``, and ``selectivity = r2 - r2_control`` with a paired bootstrap interval.

"Selectivity" here is against a *random-weights network* of the same architecture (what any such network
encodes), not against Hewitt and Liang's (2019) control *task* (random labels for the same inputs).

Which concepts are "most selective" (:func:`rank_concepts`) is decided on the training folds' cross-validated
error alone (``cv_selectivity``), so that the held-out selectivity of the concepts chosen is not inflated by
the choice: among many targets x layers, the largest held-out value is large by chance.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.settings import ProbeConfig
from Rad4XCNNLogic.infra.settings import check_section
from Rad4XCNNLogic.names import control_label, deep_layer

log = logging.getLogger(__name__)

#: The columns of ``probes.csv``, in order.
PROBE_COLUMNS = (
    "model",
    "layer",
    "radiomic_feature",
    "r2",
    "r2_ci_low",
    "r2_ci_high",
    "r2_control",
    "selectivity",
    "selectivity_ci_low",
    "selectivity_ci_high",
    "cv_r2",
    "cv_r2_control",
    "cv_selectivity",
)
#: Each cross-validation fold must hold at least this many training cases.
MIN_CASES_PER_FOLD = 2
#: R² needs a few held-out cases to mean anything.
MIN_HELDOUT = 3
CONFIDENCE = 0.95
# Squared singular values below this fraction of the largest are numerical zeros (constant or collinear
# columns).
_RANK_TOL = 1e-10


# ----------------------------------------------------------------------------------------------- arrays
class _Xp:
    """The few array operations the probes need, on numpy (float64) or on torch (float64, any device)."""

    def __init__(self, backend: str = "numpy"):
        from Rad4XCNNLogic.explain.correlation import resolve_backend

        ops = resolve_backend(backend)
        self.name = ops.name
        self.device = ops.device
        if self.name == "torch":
            import torch

            self.torch = torch

    def asarray(self, a):
        if self.name == "numpy":
            return np.asarray(a, dtype=np.float64)
        return self.torch.as_tensor(np.asarray(a, dtype=np.float64), device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a) if self.name == "numpy" else a.detach().cpu().numpy()

    def eigh(self, a):
        return np.linalg.eigh(a) if self.name == "numpy" else self.torch.linalg.eigh(a)

    def thin_svd(self, a):
        """``U, s, V'`` of ``a`` without its numerically zero singular values, from the eigenvectors of the
        smaller Gram matrix: an order of magnitude faster than a direct SVD (12 s against 0.7 s for
        550 x 2048 on two cores), and accurate for every singular value the tolerance keeps."""
        n, p = a.shape
        gram = a @ a.T if n <= p else a.T @ a
        w, vec = self.eigh(gram)
        w_np = self.to_numpy(w)
        keep = np.flatnonzero(w_np > _RANK_TOL * max(float(w_np.max(initial=0.0)), 1e-300))[::-1]
        w, vec = w[self.index(keep)], vec[:, self.index(keep)]
        s = w**0.5
        if n <= p:
            return vec, s, (vec.T @ a) / s[:, None]
        return (a @ vec) / s[None, :], s, vec.T

    def solve(self, a, b):
        return np.linalg.solve(a, b) if self.name == "numpy" else self.torch.linalg.solve(a, b)

    def eye(self, n: int):
        if self.name == "numpy":
            return np.eye(n)
        return self.torch.eye(n, dtype=self.torch.float64, device=self.device)

    def index(self, idx):
        if self.name == "numpy":
            return np.asarray(idx, dtype=np.intp)
        return self.torch.as_tensor(np.ascontiguousarray(idx, dtype=np.int64), device=self.device)


# ---------------------------------------------------------------------------------------------- targets
def rank_transform(train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each column of ``values`` as ranks among the same column of ``train`` (ties averaged), divided by
    the number of training cases: a training case gets its average rank, a held-out case the rank it would
    have among the training cases, so that no held-out value shapes the transform.

    Examples
    --------
    >>> rank_transform(np.array([[1.0], [2.0], [2.0], [5.0]]), np.array([[2.0], [3.0], [9.0]])).ravel()
    array([0.625, 0.875, 1.125])
    """
    train = np.asarray(train, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if train.ndim != 2 or values.ndim != 2 or train.shape[1] != values.shape[1]:
        raise ValueError(f"expected two 2D arrays with as many columns, got {train.shape} and {values.shape}")
    ordered = np.sort(train, axis=0)
    out = np.empty_like(values)
    for j in range(values.shape[1]):
        left = np.searchsorted(ordered[:, j], values[:, j], side="left")
        right = np.searchsorted(ordered[:, j], values[:, j], side="right")
        out[:, j] = (left + right + 1) / 2.0
    return out / len(train)


def fold_labels(n: int, folds: int, seed: int = 0, groups: Sequence[str] | None = None) -> np.ndarray:
    """The cross-validation fold (0..folds-1) of each of ``n`` cases: a seeded shuffle cut in near-equal
    parts. With ``groups`` (one per case: a patient, or patients joined by near-duplicate images) a group's
    cases share a fold: the groups, shuffled, go largest first to the fold with the fewest cases.

    Examples
    --------
    >>> np.bincount(fold_labels(11, 3))
    array([4, 4, 3])
    >>> labels = fold_labels(4, 2, groups=["a", "a", "b", "c"])
    >>> bool(labels[0] == labels[1])
    True
    """
    if folds < 2:
        raise Rad4XCNNError(f"cross-validation needs at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    if groups is None or len(set(groups)) == n:
        labels = np.arange(n) % folds
        return labels[rng.permutation(n)]
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    names = sorted(members)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    labels = np.zeros(n, dtype=int)
    sizes = np.zeros(folds, dtype=int)
    for g in order:
        f = int(np.argmin(sizes))
        labels[members[g]] = f
        sizes[f] += len(members[g])
    return labels


# -------------------------------------------------------------------------------------------- the probe
@dataclass
class ProbeFit:
    """The probes of one layer: per radiomic feature the held-out ``r2`` with its bootstrap interval, the
    chosen ``penalty``, and the ``cv_error`` (mean squared, training folds) at every penalty of the grid."""

    r2: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    penalty: np.ndarray
    cv_error: np.ndarray
    predictions: np.ndarray


def _bootstrap_counts(n: int, n_boot: int, seed: int, groups: Sequence[str] | None = None) -> np.ndarray:
    """How often each of ``n`` held-out cases is drawn in each of ``n_boot`` resamples: (n_boot, n). With
    ``groups`` where a group holds several cases, whole groups are drawn (a group's cases together)."""
    rng = np.random.default_rng(seed)
    if groups is None or len(set(groups)) == n:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    names, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    drawn = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)
    return drawn[:, index].astype(np.float64)


def ridge_probe(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    penalties: Sequence[float],
    folds: int,
    bootstrap: int,
    seed: int = 0,
    backend: str = "numpy",
    groups: Sequence[str] | None = None,
    test_groups: Sequence[str] | None = None,
) -> ProbeFit:
    """Ridge probes from one layer's features to every target column at once.

    The deep features are standardised with the training cases' mean and deviation; targets are centred on
    their training mean (an unpenalised intercept). One SVD of the standardised training features,
    ``X = U S V'``, serves every penalty and target: the fitted values are ``U diag(s²/(s²+λ)) U'y``, and
    the residuals of the fit without fold ``f`` follow without refitting, ``e_f = (I - H_ff)⁻¹ r_f``, with
    ``H = 11'/n + U diag(s²/(s²+λ)) U'`` the hat matrix (exact for penalised least squares, the
    standardisation held at the training cases'). Each target takes the penalty of least cross-validated
    error. R² is measured on the test cases against the training mean, ``1 - Σ(y - ŷ)² / Σ(y - ȳ_train)²``
    (the intercept-only probe scores 0), with a percentile bootstrap interval over the test cases.

    Parameters
    ----------
    x_train, x_test : (cases, features) deep features of the training and held-out cases.
    y_train, y_test : (cases, targets) the targets (rank-transformed radiomic features).
    penalties : the grid of ridge penalties (positive).
    folds : cross-validation folds over the training cases.
    bootstrap : resamples of the held-out cases for the interval (0: none, the interval is NaN).
    seed : seed of the folds and of the bootstrap.
    backend : ``numpy``, or ``torch`` / ``torch:cpu`` / ``torch:cuda`` (same results to rounding).
    groups : one per training case; a group's cases share a fold (:func:`fold_labels`).
    test_groups : one per held-out case; the bootstrap draws a group's cases together.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(120, 30))
    >>> y = x[:, :1] + 0.1 * rng.normal(size=(120, 1))
    >>> fit = ridge_probe(x[:80], y[:80], x[80:], y[80:], penalties=[1.0, 10.0, 100.0], folds=4, bootstrap=0)
    >>> bool(fit.r2[0] > 0.9)
    True
    """
    xp = _Xp(backend)
    grid = np.asarray(sorted(float(p) for p in penalties), dtype=np.float64)
    if grid.size == 0 or not np.all(grid > 0) or not np.all(np.isfinite(grid)):
        raise Rad4XCNNError(f"ridge penalties must be positive numbers, got {list(penalties)}")
    x_train, y_train = np.asarray(x_train, float), np.asarray(y_train, float)
    x_test, y_test = np.asarray(x_test, float), np.asarray(y_test, float)
    n, m = len(x_train), len(x_test)
    if x_train.ndim != 2 or y_train.ndim != 2 or len(y_train) != n or x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"shapes do not fit: x_train {x_train.shape}, y_train {y_train.shape}, x_test {x_test.shape}"
        )
    if y_test.shape != (m, y_train.shape[1]):
        raise ValueError(f"y_test has shape {y_test.shape}, expected {(m, y_train.shape[1])}")
    if n < MIN_CASES_PER_FOLD * folds:
        raise Rad4XCNNError(
            f"too few training cases for {folds}-fold cross-validation of the probes: {n}, at least "
            f"{MIN_CASES_PER_FOLD * folds} are needed; lower the number of folds or add cases"
        )

    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0  # constant columns stay 0 after centring
    xs = xp.asarray((x_train - mean) / scale)
    xt = xp.asarray((x_test - mean) / scale)
    y_mean = y_train.mean(axis=0)
    yc = xp.asarray(y_train - y_mean)

    u, s, vt = xp.thin_svd(xs)
    s2 = s * s
    lam = xp.asarray(grid)
    shrink = s2[None, :] / (s2[None, :] + lam[:, None])  # (penalties, components)
    uty = u.T @ yc  # (components, targets)

    labels = fold_labels(n, folds, seed, groups)
    cv_error = xp.asarray(np.zeros((len(grid), y_train.shape[1])))
    for f in range(folds):
        idx = xp.index(np.flatnonzero(labels == f))
        u_f = u[idx]  # (m_f, components)
        scaled = u_f[None, :, :] * shrink[:, None, :]  # (penalties, m_f, components)
        hat = scaled @ u_f.T + 1.0 / n  # (penalties, m_f, m_f); the intercept adds 1/n everywhere
        resid = yc[idx][None] - scaled @ uty  # (penalties, m_f, targets)
        left_out = xp.solve(xp.eye(len(idx))[None] - hat, resid)
        cv_error = cv_error + (left_out * left_out).sum(1)
    cv_np = xp.to_numpy(cv_error) / n
    best = np.argmin(cv_np, axis=0)

    # Held-out predictions: y_mean + X_test V diag(s/(s²+λ)) U'y, the penalty chosen per target.
    z = xt @ vt.T  # (test cases, components)
    pred = np.empty_like(y_test)
    for k in np.unique(best):
        cols = np.flatnonzero(best == k)
        coef = (s / (s2 + float(grid[k])))[:, None] * uty[:, xp.index(cols)]
        pred[:, cols] = xp.to_numpy(z @ coef) + y_mean[cols]

    # R² against the training mean (out-of-sample R²): the intercept-only probe, which learns nothing from
    # the deep features, scores 0, so a feature encoded nowhere scores about 0 with an interval around it.
    resid = y_test - pred
    centred = y_test - y_mean
    ss_tot = (centred * centred).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - (resid * resid).sum(axis=0) / ss_tot, np.nan)
    ci_low = np.full_like(r2, np.nan)
    ci_high = np.full_like(r2, np.nan)
    if bootstrap > 0 and m >= MIN_HELDOUT:
        w = xp.asarray(_bootstrap_counts(m, bootstrap, seed + 1, test_groups))
        ss_res_b = xp.to_numpy(w @ xp.asarray(resid * resid))
        ss_tot_b = xp.to_numpy(w @ xp.asarray(centred * centred))
        with np.errstate(divide="ignore", invalid="ignore"):
            r2_b = np.where(ss_tot_b > 0, 1.0 - ss_res_b / ss_tot_b, np.nan)
        tail = 100 * (1 - CONFIDENCE) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (constant targets)
            ci_low, ci_high = np.nanpercentile(r2_b, [tail, 100 - tail], axis=0)
    return ProbeFit(r2, ci_low, ci_high, grid[best], cv_np, pred)


# ------------------------------------------------------------------------------------------- the tables
def cv_r2(fit: ProbeFit, y_train) -> np.ndarray:
    """Per target, the cross-validated R² on the training cases at the chosen penalty:
    ``1 - cv_error / variance`` (the folds' squared error against the training targets' variance).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(120, 10)); y = x[:, :1] + 0.3 * rng.normal(size=(120, 1))
    >>> fit = ridge_probe(x[:80], y[:80], x[80:], y[80:], penalties=[1.0, 10.0, 100.0], folds=4, bootstrap=0)
    >>> bool(0.8 < cv_r2(fit, y[:80])[0] < 1)
    True
    """
    y_train = np.asarray(y_train, float)
    variance = ((y_train - y_train.mean(axis=0)) ** 2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(variance > 0, 1.0 - fit.cv_error.min(axis=0) / variance, np.nan)


def selectivity_interval(
    y_test, y_mean, pred, pred_control, *, bootstrap: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Paired percentile bootstrap interval of ``r2 - r2_control`` per target over the held-out cases: both
    R² on each resample of the same cases (the draws of :func:`ridge_probe`'s interval for ``seed``).

    ``y_test`` (cases, targets); ``y_mean`` the training targets' mean; ``pred`` and ``pred_control`` the
    two probes' held-out predictions. NaN without resamples or with fewer than :data:`MIN_HELDOUT` cases.
    """
    y_test, pred, pred_control = (np.asarray(a, float) for a in (y_test, pred, pred_control))
    m = len(y_test)
    low = np.full(y_test.shape[1], np.nan)
    high = np.full(y_test.shape[1], np.nan)
    if bootstrap <= 0 or m < MIN_HELDOUT:
        return low, high
    w = _bootstrap_counts(m, bootstrap, seed + 1)
    centred = y_test - np.asarray(y_mean, float)
    ss_tot = w @ (centred * centred)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = (w @ ((y_test - pred_control) ** 2) - w @ ((y_test - pred) ** 2)) / ss_tot
    diff = np.where(ss_tot > 0, diff, np.nan)
    tail = 100 * (1 - CONFIDENCE) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (constant targets)
        low, high = np.nanpercentile(diff, [tail, 100 - tail], axis=0)
    return low, high


def rank_concepts(probes: pd.DataFrame) -> pd.DataFrame:
    """``probes`` ordered from the most selective concept down, by the training folds' cross-validated
    ``cv_selectivity`` (``cv_r2`` when no layer had a control) - never by a held-out value, which the
    choice would inflate. A table without the CV columns (written before them) is ordered by the held-out
    ``selectivity`` or ``r2`` as then.

    Examples
    --------
    >>> probes = pd.DataFrame({"radiomic_feature": ["a", "b"], "selectivity": [0.9, 0.1],
    ...                        "cv_selectivity": [0.0, 0.2], "cv_r2": [0.1, 0.3]})
    >>> rank_concepts(probes)["radiomic_feature"].tolist()
    ['b', 'a']
    """
    if "cv_selectivity" in probes and probes["cv_selectivity"].notna().any():
        key = "cv_selectivity"
    elif "cv_r2" in probes and probes["cv_r2"].notna().any():
        key = "cv_r2"
    else:
        key = "selectivity" if probes["selectivity"].notna().any() else "r2"
    return probes.sort_values(key, ascending=False, kind="stable", na_position="last")


def layer_groups(columns: Sequence[str]) -> dict[tuple[str, str], list[str]]:
    """The deep-feature columns of each (backbone, layer), in the table's order; other columns are left out.

    Examples
    --------
    >>> layer_groups(["r18.layer2_0", "r18.layer2_1", "r18_0", "age"])
    {('r18', 'layer2'): ['r18.layer2_0', 'r18.layer2_1'], ('r18', 'pre_logits'): ['r18_0']}
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for column in map(str, columns):
        key = deep_layer(column)
        if key is not None:
            groups.setdefault(key, []).append(column)
    return groups


def control_groups(
    trained: Mapping[tuple[str, str], list[str]],
    control: Mapping[tuple[str, str], list[str]],
) -> dict[tuple[str, str], tuple[str, str] | None]:
    """The control (backbone, layer) of each trained one: the same layer of the control table's backbone of
    the same label, else of ``<label>-random``, else of its only backbone; None when it has no such layer.

    Examples
    --------
    >>> control_groups({("r18", "layer2"): [], ("r18", "layer4"): []}, {("r18-random", "layer2"): []})
    {('r18', 'layer2'): ('r18-random', 'layer2'), ('r18', 'layer4'): None}
    """
    models = list(dict.fromkeys(model for model, _ in control))
    out: dict[tuple[str, str], tuple[str, str] | None] = {}
    for model, layer in trained:
        candidates = [c for c in (model, control_label(model)) if c in models]
        if not candidates and len(models) == 1:
            candidates = models
        match = next(((c, layer) for c in candidates if (c, layer) in control), None)
        out[(model, layer)] = match
    return out


def match_controls(
    deep: pd.DataFrame, control: pd.DataFrame | None
) -> tuple[pd.DataFrame, dict[tuple[str, str], list[str]], dict[tuple[str, str], tuple[str, str] | None]]:
    """``(control table, its layer groups, trained group -> control group or None)``.

    With a ``control`` table, every group of ``deep`` is probed and paired by :func:`control_groups`.
    Without one, a backbone ``<label>-random`` of ``deep`` itself is the control of ``<label>`` (the run's
    random-weights copies), and is not probed as a trained backbone.
    """
    deep_groups = layer_groups(deep.columns)
    if control is None:
        random_of = {k: (control_label(k[0]), k[1]) for k in deep_groups}
        used = {v for v in random_of.values() if v in deep_groups}
        pairs = {
            k: (random_of[k] if random_of[k] in deep_groups else None) for k in deep_groups if k not in used
        }
        return deep, deep_groups, pairs
    ctrl_groups = layer_groups(control.columns)
    if not ctrl_groups:
        raise Rad4XCNNError("the control table has no deep-feature column (<model>_<index>)")
    return control, ctrl_groups, control_groups(deep_groups, ctrl_groups)


def _finite_columns(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """The numeric columns of ``frame`` without a missing or infinite value (the others are logged)."""
    numeric = frame.select_dtypes("number")
    if numeric.shape[1] < frame.shape[1]:
        other = [c for c in frame.columns if c not in set(numeric.columns)]
        log.warning("%d non-numeric %s column(s) left out, e.g. %s", len(other), what, other[0])
    frame = numeric
    values = frame.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=0)
    if bad.any():
        names = list(frame.columns[bad])
        log.warning("%d %s(s) with missing or infinite values left out, e.g. %s", len(names), what, names[0])
    return frame.loc[:, ~bad]


def probe_cases(cohort, train_cohort: str | None = None) -> tuple[list[str], list[str]]:
    """(training, held-out) case ids of a cohort as the run splits it: the training cohort's train and val
    cases train; its test cases and every other cohort's test (or unsplit) cases are held out.

    Examples
    --------
    >>> train, held_out = probe_cases(read_manifest("manifest.csv"))  # doctest: +SKIP
    """
    from Rad4XCNNLogic.cohort.manifest import DEFAULT_COHORT

    cohorts = cohort.cohorts
    if train_cohort is None:
        train_cohort = DEFAULT_COHORT if DEFAULT_COHORT in cohorts or not cohorts else cohorts[0]
    if train_cohort not in cohorts:
        raise Rad4XCNNError(f"training cohort {train_cohort!r} is not in the manifest ({', '.join(cohorts)})")
    train, held_out = [], []
    for case in cohort.cases:
        if case.cohort == train_cohort:
            if case.split in ("train", "val"):
                train.append(case.case_id)
            elif case.split == "test":
                held_out.append(case.case_id)
        elif case.split in ("test", None):
            held_out.append(case.case_id)
    return train, held_out


@dataclass
class ProbeResult:
    """The probes of every (backbone, layer) and radiomic feature: ``probes`` has :data:`PROBE_COLUMNS`
    (plus ``penalty`` and ``penalty_control``, the chosen penalties); ``settings`` records how."""

    probes: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    #: the control (backbone, layer) of each probed one (None: no control layer)
    pairs: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict)


def _check_control_cases(control: pd.DataFrame, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in set(control.index)]
    if missing:
        raise Rad4XCNNError(
            f"the control table has other case ids: {len(missing)} of the {len(needed)} probed cases are "
            f"not in it (e.g. {', '.join(map(repr, missing[:3]))}); extract the control's features from "
            "the same cohort"
        )


def run_probes(
    deep: pd.DataFrame,
    radiomics: pd.DataFrame,
    train_ids: Sequence[str],
    heldout_ids: Sequence[str],
    settings: ProbeConfig | None = None,
    *,
    control: pd.DataFrame | None = None,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> ProbeResult:
    """Probe every radiomic feature from every (backbone, layer) of ``deep``, and from the matching layer of
    ``control`` (a random-weights network's table; when None, a backbone ``<label>-random`` of ``deep``
    itself is used where there is one, else ``r2_control`` is NaN).

    Cases are those of ``train_ids`` / ``heldout_ids`` present in both tables (and in ``control``, which
    must hold them all). Radiomic features are rank-transformed against the training cases
    (:func:`rank_transform`); features with missing values or constant on the training cases are left out.
    ``groups`` (case id -> group, :attr:`Case.group`) keeps a group's training cases in one fold and has
    the bootstrap of the held-out R² draw a group's held-out cases together. ``settings``: the ``probe``
    section (:class:`~Rad4XCNNLogic.explain.settings.ProbeConfig`; None: its defaults), the one statement
    of ``penalties``, ``folds``, ``bootstrap`` and ``backend``.

    Examples
    --------
    >>> result = run_probes(deep, radiomics, train_ids, heldout_ids, control=random_deep)  # doctest: +SKIP
    >>> rank_concepts(result.probes).head()  # chosen on CV error, measured held out  # doctest: +SKIP
    """
    section = check_section(settings or ProbeConfig(), "probe")
    folds = section.folds
    deep_groups = layer_groups(deep.columns)
    if not deep_groups:
        raise Rad4XCNNError(
            "the deep table has no deep-feature column (<model>_<index> or <model>.<layer>_<index>)"
        )
    in_both = set(deep.index) & set(radiomics.index)
    train = [c for c in dict.fromkeys(map(str, train_ids)) if c in in_both]
    train_set = set(train)
    held = [c for c in dict.fromkeys(map(str, heldout_ids)) if c in in_both and c not in train_set]
    if len(held) < MIN_HELDOUT:
        raise Rad4XCNNError(
            f"too few held-out cases for the probes' R²: {len(held)} with deep and radiomic features "
            f"(internal test split and other cohorts), at least {MIN_HELDOUT} are needed"
        )
    if len(train) < MIN_CASES_PER_FOLD * folds:
        raise Rad4XCNNError(
            f"too few training cases for {folds}-fold cross-validation of the probes: {len(train)} training "
            f"cases (train and val splits) have deep and radiomic features, at least "
            f"{MIN_CASES_PER_FOLD * folds} are needed; lower the number of folds or add cases"
        )
    rad = _finite_columns(radiomics.loc[train + held], "radiomic feature")
    rad_train = rad.loc[train].to_numpy(np.float64)
    varying = np.ptp(rad_train, axis=0) > 0
    if not varying.all():
        log.warning("%d radiomic feature(s) constant on the training cases left out", int((~varying).sum()))
    rad = rad.loc[:, varying]
    if rad.shape[1] == 0:
        raise Rad4XCNNError("no radiomic feature varies across the training cases: nothing to probe")
    targets = rank_transform(rad.loc[train].to_numpy(np.float64), rad.to_numpy(np.float64))
    y_train, y_test = targets[: len(train)], targets[len(train) :]
    y_mean = y_train.mean(axis=0)

    if control is not None:
        _check_control_cases(control, train + held)
    control_table, ctrl_groups, pairs = match_controls(deep, control)
    trained_keys = list(pairs)
    unmatched = [f"{m}.{layer}" for (m, layer), v in pairs.items() if v is None]
    if unmatched:
        log.warning("no control layer for %s: r2_control and selectivity are NaN there", ", ".join(unmatched))

    fold_groups = None if groups is None else [str(groups.get(c, c)) for c in train]
    held_groups = None if groups is None else [str(groups.get(c, c)) for c in held]
    common = dict(
        penalties=section.penalties,
        folds=folds,
        bootstrap=section.bootstrap,
        seed=seed,
        backend=section.backend,
        groups=fold_groups,
        test_groups=held_groups,
    )

    def fit(table: pd.DataFrame, columns: list[str]) -> ProbeFit:
        block = _finite_columns(table.loc[train + held, columns], "deep feature")
        if block.shape[1] == 0:
            raise Rad4XCNNError(f"deep features {columns[0]}...: no column without missing values")
        x = block.to_numpy(np.float64)
        return ridge_probe(x[: len(train)], y_train, x[len(train) :], y_test, **common)

    frames = []
    for key in trained_keys:
        model, layer = key
        log.info("probes: %s %s (%d features)", model, layer, len(deep_groups[key]))
        mine = fit(deep, deep_groups[key])
        nan = np.full(rad.shape[1], np.nan)
        theirs = None
        if pairs.get(key) is not None:
            theirs = fit(control_table, ctrl_groups[pairs[key]])
        sel_low, sel_high, cv_theirs = nan, nan, nan
        if theirs is not None:
            sel_low, sel_high = selectivity_interval(
                y_test, y_mean, mine.predictions, theirs.predictions, bootstrap=section.bootstrap, seed=seed
            )
            cv_theirs = cv_r2(theirs, y_train)
        cv_mine = cv_r2(mine, y_train)
        frame = pd.DataFrame(
            {
                "model": model,
                "layer": layer,
                "radiomic_feature": list(rad.columns),
                "r2": mine.r2,
                "r2_ci_low": mine.ci_low,
                "r2_ci_high": mine.ci_high,
                "r2_control": nan if theirs is None else theirs.r2,
                "selectivity": nan if theirs is None else mine.r2 - theirs.r2,
                "selectivity_ci_low": sel_low,
                "selectivity_ci_high": sel_high,
                "cv_r2": cv_mine,
                "cv_r2_control": cv_theirs,
                "cv_selectivity": cv_mine - cv_theirs,
                "penalty": mine.penalty,
                "penalty_control": nan if theirs is None else theirs.penalty,
            }
        )
        frames.append(frame)
    probes = pd.concat(frames, ignore_index=True)
    settings = {
        "penalties": sorted(float(p) for p in section.penalties),
        "folds": int(folds),
        "bootstrap": int(section.bootstrap),
        "confidence": CONFIDENCE,
        "seed": int(seed),
        "backend": _Xp(section.backend).name,
        "train_cases": len(train),
        "heldout_cases": len(held),
        "radiomic_features": int(rad.shape[1]),
        # the "most selective" concept is the best of this many (targets x layers), chosen on CV error
        "searched": int(rad.shape[1]) * len(trained_keys),
        "ranked_by": "cv_selectivity (training folds' CV error; cv_r2 without a control)",
        "layers": [f"{m}.{layer}" for m, layer in trained_keys],
        "controls": {f"{k[0]}.{k[1]}": (None if v is None else f"{v[0]}.{v[1]}") for k, v in pairs.items()},
        "target": "ranks among the training cases",
    }
    return ProbeResult(probes, settings, pairs)
