"""Concept directions: a radiomic concept's direction in a layer's pooled feature space (its probe's ridge
weights), and a classifier's sensitivity to it, TCAV-style (Kim et al., 2018): the fraction of cases whose
class logit increases along the direction, against random directions as the null.

The directional derivative of the logit along a pooled-space direction ``v`` is the gradient of the logit
with respect to the layer's output, summed over positions, dotted with ``v`` (adding ``v`` at every position
shifts the pooled vector by ``v``). One backward pass gives it for every direction at once. Where the rest of
the network is linear in the layer (pre-logits features under a linear head) the derivative is the same
for every case, so the fraction is 0 or 1: take an earlier layer for a graded score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.probes import rank_concepts, rank_transform
from Rad4XCNNLogic.names import FINAL_LAYER

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

#: The columns of ``concepts.csv``, in order.
CONCEPT_COLUMNS = (
    "model",
    "layer",
    "radiomic_feature",
    "target_class",
    "tcav",
    "tcav_random_mean",
    "p",
    "derivative_mean",
    "derivative_z",
    "n_cases",
    "cv_selectivity",
    "selectivity",
    "selectivity_ci_low",
    "selectivity_ci_high",
    "n_searched",
)


def concept_directions(
    x_train: np.ndarray, y_train: np.ndarray, penalties: Sequence[float] | float
) -> np.ndarray:
    """Unit directions, in the layer's raw pooled feature space, along which each target's ridge probe
    increases: ``w / scale`` for the weights ``w`` on standardised features (one row per target column).

    ``y_train`` holds the targets (raw radiomic values are rank-transformed here, as the probes do);
    ``penalties`` is one penalty per target (the probes' chosen ``penalty``) or one for all.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 6))
    >>> d = concept_directions(x, np.exp(x[:, [2]]), 1.0)
    >>> int(np.argmax(np.abs(d[0]))), bool(d[0, 2] > 0.9)
    (2, True)
    """
    x = np.asarray(x_train, np.float64)
    y = rank_transform(np.asarray(y_train, np.float64), np.asarray(y_train, np.float64))
    scale = x.std(axis=0)
    scale[scale <= 0] = 1.0
    xs = (x - x.mean(axis=0)) / scale
    yc = y - y.mean(axis=0)
    lam = np.broadcast_to(np.asarray(penalties, np.float64), (y.shape[1],))
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ yc
    out = np.empty((y.shape[1], x.shape[1]))
    for j in range(y.shape[1]):
        w = vt.T @ (s / (s * s + lam[j]) * uty[:, j])
        raw = w / scale
        norm = np.linalg.norm(raw)
        out[j] = raw / norm if norm > 0 else raw
    return out


def _layer_gradients(model, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """Gradient of the ``target`` logit with respect to ``layer``'s pooled features, per case: ``(B, C)``."""
    import torch

    captured: dict[str, torch.Tensor] = {}
    if layer == FINAL_LAYER:
        head = model.get_classifier()
        if not isinstance(head, torch.nn.Module) or isinstance(head, torch.nn.Identity):
            raise Rad4XCNNError("the model has no classifier head: give a fine-tuned checkpoint")

        def pre_hook(_module, inputs):
            inputs[0].retain_grad()
            captured["a"] = inputs[0]

        handle = head.register_forward_pre_hook(pre_hook)
    else:
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise Rad4XCNNError(f"the model has no layer {layer!r}") from None

        def hook(_module, _inputs, output):
            output.retain_grad()
            captured["a"] = output

        handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            if logits.ndim != 2 or not 0 <= target < logits.shape[1]:
                raise Rad4XCNNError(f"class {target} is not an output of the model ({tuple(logits.shape)})")
            logits[:, target].sum().backward()
    finally:
        handle.remove()
    grad = captured["a"].grad
    if grad.ndim >= 4:  # (B, C, H, W), or (B, C, D, H, W) of a 3D network: v added at every position
        return grad.sum(dim=tuple(range(2, grad.ndim)))
    if grad.ndim == 3:  # ViT tokens: the pooled feature is the CLS token where there is one
        cls = (
            getattr(model, "cls_token", None) is not None and int(getattr(model, "num_prefix_tokens", 0)) > 0
        )
        return grad[:, 0] if cls else grad.sum(dim=1)
    return grad.flatten(1)


def directional_derivatives(model, layer: str, x, directions: np.ndarray, target: int) -> np.ndarray:
    """``(cases, directions)``: the derivative of the ``target`` logit of each case along each direction
    (rows of ``directions``) of ``layer``'s pooled feature space, from one backward pass per batch.

    ``x`` is a batch of model inputs, or an iterable of batches (their results are stacked)."""
    batches = [x] if hasattr(x, "ndim") else list(x)
    if not batches:
        raise Rad4XCNNError("no case to measure the concepts' sensitivity on")
    grad = np.vstack(
        [_layer_gradients(model, layer, b, target).detach().double().cpu().numpy() for b in batches]
    )
    directions = np.atleast_2d(np.asarray(directions, np.float64))
    if directions.shape[1] != grad.shape[1]:
        raise Rad4XCNNError(
            f"directions have {directions.shape[1]} values, layer {layer} has {grad.shape[1]} features"
        )
    return grad @ directions.T


def tcav_scores(
    model,
    layer: str,
    x,
    directions: Mapping[str, np.ndarray],
    target: int,
    *,
    random: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """TCAV-style sensitivity of class ``target`` to each concept direction at ``layer``, on the cases ``x``
    (a batch of model inputs or an iterable of batches).

    ``tcav``: the fraction of cases whose logit increases along the direction; ``tcav_random_mean``: its
    mean over ``random`` random unit directions; ``p``: the share of random directions whose score is at
    least as far from 0.5 (two-sided, ``(1 + k) / (1 + random)``); ``derivative_mean`` and ``derivative_z``:
    the mean derivative, and its distance from the random directions' mean in their standard deviations.

    Examples
    --------
    >>> table = tcav_scores(model, "layer3", x_test, {"original_glcm_Contrast": v}, 1)  # doctest: +SKIP
    """
    names = list(directions)
    concept = np.stack([np.asarray(directions[n], np.float64) for n in names])
    rng = np.random.default_rng(seed)
    rand = rng.standard_normal((max(int(random), 0), concept.shape[1]))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    deriv = directional_derivatives(model, layer, x, np.vstack([concept, rand]), target)
    scores = (deriv > 0).mean(axis=0)
    means = deriv.mean(axis=0)
    k = len(names)
    rand_scores, rand_means = scores[k:], means[k:]
    rows = []
    for j, name in enumerate(names):
        if random > 0:
            far = np.sum(np.abs(rand_scores - 0.5) >= abs(scores[j] - 0.5) - 1e-12)
            p = (1.0 + far) / (1.0 + random)
            sd = rand_means.std()
            z = (means[j] - rand_means.mean()) / sd if sd > 0 else float("nan")
            null = float(rand_scores.mean())
        else:
            p, z, null = float("nan"), float("nan"), float("nan")
        rows.append(
            {
                "radiomic_feature": name,
                "tcav": float(scores[j]),
                "tcav_random_mean": null,
                "p": float(p),
                "derivative_mean": float(means[j]),
                "derivative_z": float(z),
                "n_cases": len(deriv),
            }
        )
    return pd.DataFrame(rows)


def concept_sensitivity(
    probes: pd.DataFrame,
    deep: pd.DataFrame,
    radiomics: pd.DataFrame,
    train_ids: Sequence[str],
    cases: Sequence,
    checkpoint,
    *,
    model: str,
    layer: str,
    concepts: int,
    target_class: str | None = None,
    random: int,
    seed: int = 0,
    batch_size: int = 16,
) -> pd.DataFrame:
    """The sensitivity of a fine-tuned classifier to the ``concepts`` most selective radiomic concepts of
    its layer ``layer`` (rows :data:`CONCEPT_COLUMNS`): most selective by the training folds' CV error
    (:func:`~Rad4XCNNLogic.explain.probes.rank_concepts`), measured on the held-out cases, with their
    held-out selectivity (and its paired interval) and the number of concepts searched, ``n_searched``.

    ``probes`` is :attr:`~Rad4XCNNLogic.explain.probes.ProbeResult.probes` (with the chosen ``penalty``);
    ``model`` the backbone's label in ``deep``, whose features at ``layer`` must be the checkpoint's;
    ``cases`` the held-out :class:`~Rad4XCNNLogic.cohort.manifest.Case` objects, read and preprocessed as
    the checkpoint says (a case that cannot be read is left out with a warning). ``target_class``: a class
    name of the checkpoint (default: ``malignant`` if it has it, else its last class).

    Examples
    --------
    >>> concept_sensitivity(result.probes, deep, rad, train, held_cases, "model.pt",
    ...                     model="resnet50", layer="layer3", concepts=5, random=100)  # doctest: +SKIP
    """
    import logging

    import torch

    from Rad4XCNNLogic.errors import CaseError
    from Rad4XCNNLogic.explain.probes import layer_groups
    from Rad4XCNNLogic.features.backbones import load_checkpoint
    from Rad4XCNNLogic.features.cubes import network_input

    log = logging.getLogger(__name__)
    columns = layer_groups(deep.columns).get((model, layer))
    if not columns:
        raise Rad4XCNNError(f"the deep table has no features of {model}.{layer}")
    rows = probes[(probes["model"] == model) & (probes["layer"] == layer)]
    if rows.empty:
        raise Rad4XCNNError(f"no probe of {model}.{layer}")
    net, preprocess, meta = load_checkpoint(checkpoint)
    classes = list(meta.get("class_names") or [])
    if target_class is None:
        target_class = "malignant" if "malignant" in classes else (classes[-1] if classes else None)
    if target_class not in classes:
        raise Rad4XCNNError(f"class {target_class!r} is not a class of the checkpoint ({', '.join(classes)})")
    # chosen on the training folds' CV error: the held-out cases then measure them without the choice's bias
    top = rank_concepts(rows).head(int(concepts))
    train = [c for c in train_ids if c in deep.index and c in radiomics.index]
    directions = concept_directions(
        deep.loc[train, columns].to_numpy(np.float64),
        radiomics.loc[train, list(top["radiomic_feature"])].to_numpy(np.float64),
        top["penalty"].to_numpy(np.float64),
    )
    inputs = []
    for case in cases:
        try:
            inputs.append(network_input(case.load(), preprocess, str(meta.get("model_name"))))
        except CaseError as exc:
            log.warning("%s: left out of the concept sensitivity", exc)
    batches = [torch.stack(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    table = tcav_scores(
        net,
        layer,
        batches,
        dict(zip(top["radiomic_feature"], directions, strict=True)),
        classes.index(target_class),
        random=random,
        seed=seed,
    )
    table.insert(0, "model", model)
    table.insert(1, "layer", layer)
    table.insert(3, "target_class", target_class)
    chosen = top.set_index("radiomic_feature")
    for column in ("cv_selectivity", "selectivity", "selectivity_ci_low", "selectivity_ci_high"):
        values = chosen[column] if column in chosen else pd.Series(np.nan, index=chosen.index)
        table[column] = table["radiomic_feature"].map(values).to_numpy(float)
    table["n_searched"] = len(rows)  # the concepts were the best of this many radiomic features
    return table[list(CONCEPT_COLUMNS)]
