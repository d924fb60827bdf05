"""The explanation rule on a matrix of correlations: which pairs it keeps. Its range checks and its words
are in :mod:`Rad4XCNNLogic.explain.settings`."""

from __future__ import annotations

import numpy as np

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.settings import check_threshold


def keep_mask(rho: np.ndarray, threshold: float, *, q: np.ndarray | None = None, fdr: float | None = None):
    """Pairs kept by the paper's rule ``|rho| >= M``, and ``q <= fdr`` when ``fdr`` is given."""
    check_threshold(threshold, fdr)
    with np.errstate(invalid="ignore"):
        keep = np.abs(rho) >= threshold - 1e-12  # an M typed as 0.6 must keep a rho of exactly 0.6
        if fdr is not None:
            if q is None:
                raise Rad4XCNNError("an FDR level needs the q-values")
            keep &= q <= fdr
    return keep
