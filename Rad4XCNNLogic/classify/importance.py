"""Which features a fitted classifier relies on: permutation importance (batched, with exact shortcuts for
random forests and RBF SVMs) and the models' own importances, and the score that ranks cases for AUCs.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from Rad4XCNNLogic.classify.metrics import auc_score


def _used_features(classifier: str, estimator, n_features: int) -> np.ndarray:
    """Columns a fitted model can react to (trees: those used in a split); the others have importance 0."""
    if classifier == "rf":
        used = np.zeros(n_features, dtype=bool)
        for tree in estimator.estimators_:
            nodes = tree.tree_.feature
            used[nodes[nodes >= 0]] = True
        return used
    if classifier == "xgb":
        used = np.zeros(n_features, dtype=bool)
        for key in estimator.get_booster().get_score(importance_type="weight"):
            used[int(key.lstrip("f"))] = True
        return used
    return np.ones(n_features, dtype=bool)


def ranking_model(pipeline) -> tuple[Any, str]:
    """The estimator and method whose output ranks cases for AUCs, ROC curves and permutation importance.

    For a two-class SVM, its own decision function: Platt's sigmoid is fitted on cross-validated decision
    values, and when those happen to anti-correlate with the label (a weak, unstable SVM) the sigmoid
    comes out decreasing and would reverse the ranking of the SVM fitted on all the training data. When
    it does not, the two rank alike and give the same AUC. For every other model, ``predict_proba``.
    Its input is the pipeline's transformed features (``pipeline[:-1].transform(X)``).
    """
    clf = pipeline.steps[-1][1]
    if hasattr(clf, "calibrated_classifiers_") and len(clf.classes_) == 2:
        return clf.calibrated_classifiers_[0].estimator, "decision_function"
    return clf, "predict_proba"


def ranking_score(pipeline, X: np.ndarray) -> np.ndarray:
    """The AUC's score of each case: (n,) for a two-class SVM's decision function, else (n, K)."""
    model, method = ranking_model(pipeline)
    return getattr(model, method)(pipeline[:-1].transform(X))


def permutation_importance_batched(
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_repeats: int = 5,
    rng: np.random.Generator | int | None = 0,
    columns: np.ndarray | None = None,
    method: str = "predict_proba",
    batch_bytes: int = 64 * 2**20,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop in AUC when each column of ``X`` is permuted: (mean, std) over ``n_repeats`` permutations.

    The same quantity as :func:`sklearn.inspection.permutation_importance` with AUC scoring, computed
    with many permuted copies of ``X`` stacked into one ``predict_proba`` call: with thousands of deep
    features, one call per feature and repeat spends most of its time in per-call overhead. Columns not
    in ``columns`` (a boolean mask) are not permuted and get 0. ``method`` names the estimator's scoring
    method (``predict_proba``, or ``decision_function`` for a two-class SVM).

    Examples
    --------
    >>> mean, std = permutation_importance_batched(model, X_test, y_test, n_repeats=5)  # doctest: +SKIP
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    X = np.asarray(X)
    n, p = X.shape
    respond = getattr(estimator, method)
    base = auc_score(y, respond(X))
    perms = rng.permuted(np.broadcast_to(np.arange(n), (p, n_repeats, n)), axis=-1)
    todo = np.flatnonzero(np.ones(p, dtype=bool) if columns is None else columns)
    drops = np.zeros((p, n_repeats))
    rbf = _rbf_decision_terms(estimator, X) if method == "decision_function" else None
    if rbf is not None:
        # an RBF SVM's squared distances change in one coordinate only: an O(n x support vectors) update
        # per permuted copy instead of the whole kernel, thousands of times fewer operations
        distances, support, coef, intercept, gamma = rbf
        for j in todo:
            before = (X[:, j, None] - support[None, :, j]) ** 2
            after = (X[perms[j], j][:, :, None] - support[None, None, :, j]) ** 2  # (repeats, n, n_sv)
            changed = np.maximum(distances[None] - before[None] + after, 0.0)
            decision = np.exp(-gamma * changed) @ coef + intercept
            drops[j] = base - _auc_rows(y, decision)
        return drops.mean(axis=1), drops.std(axis=1)
    forest = _forest_terms(estimator, X) if method == "predict_proba" else None
    if forest is not None:
        # a random forest averages its trees, and permuting one column changes only the trees that split on
        # it (a few percent of them with thousands of features): re-predict those, keep the others' sum
        trees, per_tree, total, users = forest
        buffer = np.tile(X.astype(np.float32), (n_repeats, 1))
        for j in todo:
            original = buffer[:, j].copy()
            buffer[:, j] = X[perms[j].ravel(), j]
            proba = np.repeat(total[None], n_repeats, axis=0)
            for t in users[j]:
                change = trees[t].predict_proba(buffer, check_input=False).reshape(n_repeats, n, -1)
                proba += change - per_tree[t][None]
            buffer[:, j] = original
            drops[j] = base - _auc_rows(y, proba / len(trees))
        return drops.mean(axis=1), drops.std(axis=1)
    per_feature = max(1, n_repeats * n * p * X.itemsize)
    chunk = max(1, batch_bytes // per_feature)
    for start in range(0, len(todo), chunk):
        cols = todo[start : start + chunk]
        block = np.tile(X, (len(cols) * n_repeats, 1))
        for a, j in enumerate(cols):
            for r in range(n_repeats):
                offset = (a * n_repeats + r) * n
                block[offset : offset + n, j] = X[perms[j, r], j]
        scores = np.asarray(respond(block))
        scores = scores.reshape(len(cols), n_repeats, n, *scores.shape[1:])
        for a, j in enumerate(cols):
            drops[j] = base - _auc_rows(y, scores[a])
    return drops.mean(axis=1), drops.std(axis=1)


def _auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each row of scores: (R, n) positive-class scores or (R, n, K) class scores or probabilities."""
    from scipy.stats import rankdata

    if scores.ndim == 3 and scores.shape[2] == 2:
        scores = scores[..., 1]
    if scores.ndim == 3:
        return np.array([auc_score(y, s) for s in scores])
    positive = np.asarray(y) == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    ranks = rankdata(scores, axis=1)  # ties get their average rank: they count one half, as in the AUC
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _forest_terms(estimator, X: np.ndarray):
    """(trees, per-tree probabilities, their sum, trees using each column) of a fitted scikit-learn forest
    whose predict_proba is the mean of its trees' on ``X``; otherwise None."""
    trees = getattr(estimator, "estimators_", None)
    if not isinstance(trees, list) or not trees or not all(hasattr(t, "tree_") for t in trees):
        return None
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    per_tree = np.stack([t.predict_proba(X32, check_input=False) for t in trees])
    total = per_tree.sum(axis=0)
    if not np.allclose(total / len(trees), estimator.predict_proba(X), atol=1e-9):
        return None
    users: list[list[int]] = [[] for _ in range(X.shape[1])]
    for t, tree in enumerate(trees):
        for j in np.unique(tree.tree_.feature[tree.tree_.feature >= 0]):
            users[j].append(t)
    return trees, per_tree, total, users


def _rbf_decision_terms(estimator, X: np.ndarray):
    """(squared distances to the support vectors, support vectors, dual coefficients, intercept, gamma) of a
    fitted two-class RBF SVC, when they reproduce its decision function on ``X``; otherwise None."""
    if (
        getattr(estimator, "kernel", None) != "rbf"
        or getattr(estimator, "dual_coef_", np.empty((2, 0))).shape[0] != 1
    ):
        return None
    gamma = getattr(estimator, "_gamma", None)  # the number gamma="scale" resolved to at fit time
    if gamma is None:
        return None
    support = np.asarray(estimator.support_vectors_, dtype=float)
    coef = np.asarray(estimator.dual_coef_[0], dtype=float)
    intercept = float(estimator.intercept_[0])
    distances = ((X**2).sum(axis=1)[:, None] + (support**2).sum(axis=1)[None, :] - 2.0 * X @ support.T).clip(
        min=0.0
    )
    if not np.allclose(
        np.exp(-gamma * distances) @ coef + intercept, estimator.decision_function(X), atol=1e-6
    ):
        return None
    return distances, support, coef, intercept, gamma


def compute_importances(fitted, clf_name, set_name, columns, X_eval, y_eval, eval_name, repeats, seed):
    """Permutation and model importances of one fitted pipeline on one evaluation set, mapped back to the
    input columns."""
    import pandas as pd

    support = fitted.named_steps["filter"].support_
    estimator = fitted.steps[-1][1]
    ranker, method = ranking_model(fitted)
    Z = fitted[:-1].transform(X_eval)
    kept = np.asarray(columns, dtype=object)[support]
    frames = []

    def frame(values_mean, values_std, method, where):
        mean = np.zeros(len(columns))
        std = np.zeros(len(columns))
        mean[support] = values_mean
        std[support] = values_std
        return pd.DataFrame(
            {
                "feature_set": set_name,
                "classifier": clf_name,
                "feature": list(columns),
                "importance_mean": mean,
                "importance_std": std,
                "method": method,
                "selected": support,
                "evaluated_on": where,
            }
        ).sort_values("importance_mean", ascending=False, kind="stable")

    if repeats > 0:
        mean, std = permutation_importance_batched(
            ranker,
            Z,
            y_eval,
            n_repeats=repeats,
            rng=np.random.default_rng([seed, zlib.crc32(f"{set_name}/{clf_name}".encode())]),
            columns=_used_features(clf_name, estimator, len(kept)),
            method=method,
        )
        frames.append(frame(mean, std, "permutation", eval_name))
    if hasattr(estimator, "feature_importances_"):
        own = np.asarray(estimator.feature_importances_, dtype=float)
        frames.append(frame(own, np.zeros_like(own), "model", "training"))
    return pd.concat(frames, ignore_index=True) if frames else None
