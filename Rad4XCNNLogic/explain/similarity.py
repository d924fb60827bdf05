"""Representation similarity: linear CKA (Kornblith et al., 2019) between each layer's deep features and
the radiomic table, between layers and backbones, and between a trained backbone and its control, each
with a permutation baseline (the cases of one table shuffled) giving a null mean and a p-value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

#: The columns of ``cka.csv``, in order.
CKA_COLUMNS = ("kind", "model_a", "layer_a", "model_b", "layer_b", "cka", "null_mean", "p", "n_cases")
#: The name of the radiomic table in ``cka.csv`` (``model_b``).
RADIOMICS = "radiomics"
# Permutations are applied in batches of this many, so that the gathered Gram matrices stay small.
_BATCH = 8


def centred_gram(x: np.ndarray) -> np.ndarray:
    """The linear Gram matrix of the column-centred cases x features array ``x``: ``Xc Xc'`` (cases x cases).

    Examples
    --------
    >>> centred_gram(np.array([[1.0], [3.0]]))
    array([[ 1., -1.],
           [-1.,  1.]])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2D array (cases x features), got shape {x.shape}")
    xc = x - x.mean(axis=0)
    return xc @ xc.T


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same cases (rows): ``||Yc'Xc||²_F / (||Xc'Xc||_F
    ||Yc'Yc||_F)``, computed through the cases x cases Gram matrices. 1 for the same table (and for any
    orthogonal transform or isotropic scaling of it), near 0 for unrelated tables of many cases; NaN when
    one table is constant.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(linear_cka(x, 3 * x), 12)
    1.0
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y):
        raise ValueError(f"the two tables must have the same cases, got {len(x)} and {len(y)} rows")
    return _cka_from_grams(centred_gram(x), centred_gram(y))


def _cka_from_grams(k: np.ndarray, l_: np.ndarray) -> float:
    norm = np.sqrt(np.vdot(k, k) * np.vdot(l_, l_))
    return float(np.vdot(k, l_) / norm) if norm > 0 else float("nan")


def cka_permutation(
    x: np.ndarray, y: np.ndarray, permutations: int, seed: int = 0
) -> tuple[float, float, float]:
    """``(cka, null_mean, p)``: linear CKA of ``x`` and ``y``, the mean of its permutation null (the cases
    of ``y`` shuffled, which breaks the pairing and keeps each table's structure) and the one-sided
    permutation p-value ``(1 + #{null >= cka}) / (1 + permutations)``. With 0 permutations the null mean
    and p are NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=(60, 5))
    >>> cka, null, p = cka_permutation(x, x @ rng.normal(size=(5, 5)), 99)
    >>> bool(cka > null), p
    (True, 0.01)
    """
    k, l_ = centred_gram(x), centred_gram(y)
    return _permutation(k, l_, permutations, seed)


def _permutation(k: np.ndarray, l_: np.ndarray, permutations: int, seed: int) -> tuple[float, float, float]:
    observed = _cka_from_grams(k, l_)
    if permutations <= 0 or not np.isfinite(observed):
        return observed, float("nan"), float("nan")
    n = len(k)
    norm = np.sqrt(np.vdot(k, k) * np.vdot(l_, l_))
    flat_k, flat_l = k.ravel(), l_.ravel()
    rng = np.random.default_rng(seed)
    null = np.empty(permutations)
    done = 0
    while done < permutations:
        b = min(_BATCH, permutations - done)
        perms = np.stack([rng.permutation(n) for _ in range(b)])
        # L permuted on both sides: entry (i, j) of P L P' is L[pi(i), pi(j)], one gather of the flat matrix
        gathered = flat_l[(perms[:, :, None] * n + perms[:, None, :]).reshape(b, -1)]
        null[done : done + b] = gathered @ flat_k / norm
        done += b
    p = (1.0 + np.sum(null >= observed - 1e-12)) / (1.0 + permutations)
    return observed, float(null.mean()), float(p)


def standardise_columns(frame: pd.DataFrame) -> np.ndarray:
    """Each column z-scored over the cases (a constant column becomes 0): radiomic features have units and
    ranges that differ by orders of magnitude, and linear CKA would otherwise follow the largest ones."""
    values = frame.to_numpy(np.float64)
    sd = values.std(axis=0)
    sd[sd == 0] = 1.0
    return (values - values.mean(axis=0)) / sd


@dataclass
class _Table:
    model: str
    layer: str
    gram: np.ndarray


def cka_table(
    deep: pd.DataFrame,
    radiomics: pd.DataFrame | None,
    groups: Mapping[tuple[str, str], Sequence[str]],
    *,
    control: pd.DataFrame | None = None,
    control_pairs: Mapping[tuple[str, str], tuple[str, str] | None] | None = None,
    control_groups: Mapping[tuple[str, str], Sequence[str]] | None = None,
    permutations: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Linear CKA with its permutation baseline, one row per pair (:data:`CKA_COLUMNS`):

    * ``radiomics``: each (backbone, layer) of ``groups`` against the radiomic table (its columns
      z-scored, see :func:`standardise_columns`);
    * ``layers`` / ``backbones``: every pair of groups of the same / of different backbones;
    * ``control``: each group against its control layer (``control_pairs``, groups of ``control``).

    Deep features enter as they are (centred): CKA is meant for raw activations. The cases are those of
    ``deep`` present in every table used.

    Examples
    --------
    >>> table = cka_table(deep, radiomics, layer_groups(deep.columns), permutations=200)  # doctest: +SKIP
    """
    cases = list(deep.index)
    if radiomics is not None:
        cases = [c for c in cases if c in set(radiomics.index)]
    if control is not None:
        cases = [c for c in cases if c in set(control.index)]
    if len(cases) < 3:
        raise Rad4XCNNError(f"CKA needs at least 3 cases in every table, found {len(cases)}")

    def gram(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
        values = frame.loc[cases, list(columns)].to_numpy(np.float64)
        values = values[:, np.isfinite(values).all(axis=0)]
        return centred_gram(values)

    tables = [_Table(m, layer, gram(deep, cols)) for (m, layer), cols in groups.items()]
    rows = []

    def add(kind: str, a: _Table, model_b: str, layer_b: str, g_b: np.ndarray, salt: int) -> None:
        cka, null, p = _permutation(a.gram, g_b, permutations, seed + salt)
        rows.append((kind, a.model, a.layer, model_b, layer_b, cka, null, p, len(cases)))

    if radiomics is not None:
        rad = radiomics.loc[cases]
        rad = rad.loc[:, np.isfinite(rad.to_numpy(np.float64)).all(axis=0)]
        g_rad = centred_gram(standardise_columns(rad))
        for i, t in enumerate(tables):
            add(RADIOMICS, t, RADIOMICS, "", g_rad, i)
    for i, a in enumerate(tables):
        for j in range(i + 1, len(tables)):
            b = tables[j]
            kind = "layers" if a.model == b.model else "backbones"
            add(kind, a, b.model, b.layer, b.gram, 1000 + i * 97 + j)
    if control is not None and control_pairs and control_groups:
        for i, t in enumerate(tables):
            pair = control_pairs.get((t.model, t.layer))
            if pair is not None:
                add("control", t, pair[0], pair[1], gram(control, control_groups[pair]), 5000 + i)
    frame = pd.DataFrame(rows, columns=list(CKA_COLUMNS))
    log.info("CKA: %d pairs over %d cases, %d permutations each", len(frame), len(cases), permutations)
    return frame
