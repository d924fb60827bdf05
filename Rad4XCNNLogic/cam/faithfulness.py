"""Does the model's output depend on what a saliency map highlights? ROAD (pytorch-grad-cam's metrics),
deletion and insertion AUC (Petsiuk et al. 2018), and the model-randomisation test of Adebayo et al. (2018):
the same method's maps for the trained model and for the same architecture with randomised weights.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cam.settings import DEFAULT_STEPS

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PERCENTILES",
    "DEFAULT_STEPS",
    "cascade_steps",
    "deletion_insertion_auc",
    "randomised_copy",
    "road_scores",
    "spearman_per_image",
]

#: ROAD's removal levels: the percentiles of each map below which pixels are kept (pytorch-grad-cam's).
DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _softmax_targets(categories: Sequence[int]) -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    return [ClassifierOutputSoftmaxTarget(int(c)) for c in categories]


def road_scores(
    model,
    x: torch.Tensor,
    cams: np.ndarray,
    categories: Sequence[int],
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """ROAD (Rong et al. 2022) of each image's map, with pytorch-grad-cam's imputer and averagers.

    Pixels are removed (replaced by a noisy linear imputation from their neighbours) most relevant first
    (``morf``: the drop of the class probability, averaged over ``percentiles``) and least relevant first
    (``lerf``); ``combined`` is ``(lerf - morf) / 2``: positive when removing what the map highlights hurts
    the prediction more than removing what it leaves out. The imputer's noise is drawn from a seeded
    generator, so the scores are reproducible. Returns ``{"morf", "lerf", "combined"}``, each ``(B,)``.

    Examples
    --------
    >>> road_scores(net, x, cams, [1, 0])["combined"]  # doctest: +SKIP
    array([0.21, 0.05], dtype=float32)
    """
    import torch
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage

    targets = _softmax_targets(categories)
    cams = np.ascontiguousarray(np.nan_to_num(np.asarray(cams, dtype=np.float32)))
    devices = [x.device] if x.device.type == "cuda" else []
    # the library thresholds torch tensors with numpy, which numpy 2 warns about on every call
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(int(seed))
        morf = ROADMostRelevantFirstAverage(list(percentiles))(x, cams, targets, model)
        lerf = ROADLeastRelevantFirstAverage(list(percentiles))(x, cams, targets, model)
    morf, lerf = np.asarray(morf, np.float32).reshape(-1), np.asarray(lerf, np.float32).reshape(-1)
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2.0}


def _order(cam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices, most relevant first; ties (flat zero regions) in a seeded random order, not raster."""
    flat = np.nan_to_num(np.asarray(cam, dtype=np.float64)).ravel()
    return np.lexsort((rng.permutation(flat.size), -flat))


def deletion_insertion_auc(
    model,
    x: torch.Tensor,
    cams: np.ndarray,
    categories: Sequence[int],
    steps: int = DEFAULT_STEPS,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC (Petsiuk et al. 2018) of each image's map: ``(deletion, insertion)``.

    *Deletion*: the map's pixels, most relevant first, are set to 0 in the normalised input (the
    training mean colour) in ``steps`` equal parts; the class probability is measured after each, and the
    area under that curve over the removed fraction [0, 1] is the score (lower: the map found what the
    prediction rests on). *Insertion*: from a blurred copy of the input (Gaussian, sigma 5 pixels at 224 px
    as in RISE, scaled with the input size), the original pixels come back most relevant first (higher is
    better). Ties between equal map values are broken in a seeded random order.

    Examples
    --------
    >>> deletion, insertion = deletion_insertion_auc(net, x, cams, [1, 1])  # doctest: +SKIP
    """
    import torch
    from scipy.ndimage import gaussian_filter

    steps = max(1, int(steps))
    n, _, height, width = x.shape
    rng = np.random.default_rng(int(seed))
    sigma = max(1.0, 5.0 * height / 224.0)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    deletion = np.full(n, np.nan, np.float32)
    insertion = np.full(n, np.nan, np.float32)
    for i in range(n):
        image = x[i].detach()
        blurred = torch.as_tensor(
            gaussian_filter(image.float().cpu().numpy(), sigma=(0, sigma, sigma)), dtype=image.dtype
        ).to(image.device)
        order = torch.as_tensor(_order(cams[i], rng), device=image.device)
        counts = np.round(fractions * height * width).astype(int)
        curves = {}
        for name, start, end in (("deletion", image, torch.zeros_like(image)), ("insertion", blurred, image)):
            probs = []
            for lo in range(0, len(counts), max(1, int(batch_size))):
                batch = []
                for count in counts[lo : lo + batch_size]:
                    keep = torch.zeros(height * width, dtype=torch.bool, device=image.device)
                    keep[order[:count]] = True
                    keep = keep.reshape(1, height, width)
                    batch.append(torch.where(keep, end, start))
                with torch.no_grad():
                    out = torch.softmax(model(torch.stack(batch)).float(), dim=1)
                probs.append(out[:, int(categories[i])].cpu().numpy())
            curves[name] = np.concatenate(probs)
        deletion[i] = float(np.trapezoid(curves["deletion"], fractions))
        insertion[i] = float(np.trapezoid(curves["insertion"], fractions))
    return deletion, insertion


# ------------------------------------------------------------------------------------------ randomisation
def cascade_steps(model) -> list[tuple[str, list[str]]]:
    """The cascading randomisation of Adebayo et al.: ``[(label, module names randomised), ...]``.

    The model's top-level modules with weights, from the output backwards (``fc``, then ``fc`` and
    ``layer4``, ...); the last step randomises every weight and is labelled ``all``.

    Examples
    --------
    >>> [label for label, _ in cascade_steps(timm.create_model("resnet18"))]  # doctest: +SKIP
    ['fc', 'fc+layer4', 'fc+layer4+layer3', 'fc+layer4+layer3+layer2', ..., 'all']
    """
    with_weights = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
    steps = []
    chosen: list[str] = []
    for name in reversed(with_weights):
        chosen = [*chosen, name]
        steps.append(("+".join(chosen), list(chosen)))
    if steps:
        steps[-1] = ("all", steps[-1][1])
    else:
        steps = [("all", [])]
    return steps


def randomised_copy(model, modules: Sequence[str] | None = None, seed: int = 0):
    """A copy of ``model`` whose ``modules`` (top-level names; None: all) have fresh random weights.

    Each layer is re-initialised by its own ``reset_parameters`` (PyTorch's default initialisation; batch
    norms back to identity with fresh running statistics); a weight that no layer owns (a ViT's class
    token, position embedding) is drawn from N(0, 0.02). With ``modules`` None, or the last cascade step,
    every weight of the model is random. The original is not touched.
    """
    import torch

    twin = copy.deepcopy(model)
    targets = [twin] if modules is None else [twin.get_submodule(m) for m in modules]
    last_step = modules is not None and set(modules) >= {
        n for n, c in twin.named_children() if any(True for _ in c.parameters())
    }
    if last_step:
        targets = [twin]
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        with torch.no_grad():
            for root in targets:
                owned: set[int] = set()
                for module in root.modules():
                    if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                        module.reset_parameters()
                        owned.update(id(p) for p in module.parameters(recurse=False))
                for parameter in root.parameters():
                    if id(parameter) not in owned:
                        parameter.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(generator_state)
    return twin.eval()


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``a[i]`` and ``b[i]`` over their pixels, for each image (NaN if either is
    constant).

    Examples
    --------
    >>> a = np.arange(8.0).reshape(2, 2, 2)
    >>> spearman_per_image(a, -a).tolist()
    [-1.0, -1.0]
    """
    from Rad4XCNNLogic.cam.measures import spearman_agreement

    return np.array([spearman_agreement(p, q) for p, q in zip(a, b, strict=True)], dtype=np.float64)


def randomisation_rows(
    model,
    layer,
    methods: Sequence[str],
    x: torch.Tensor,
    targets: list,
    trained: dict[str, np.ndarray],
    *,
    steps: str = "cascade",
    seed: int = 0,
    batch_size: int = 32,
    input_size: int = 224,
    compute: Any = None,
) -> list[dict[str, Any]]:
    """Spearman similarity between each method's trained maps and its maps of randomised copies.

    ``trained`` holds the trained model's scaled maps on the model input ``(B, H, W)`` per method;
    ``steps`` is ``cascade`` (:func:`cascade_steps`) or ``all`` (the last step only); ``compute(method,
    net, layer, x, targets)`` computes maps (the CAM stage's own function). Returns one row per image,
    method and step: ``index``, ``method``, ``step``, ``order``, ``spearman``.
    """
    from Rad4XCNNLogic.cam.layers import resolve_target_layer

    plan = cascade_steps(model)
    if steps == "all":
        plan = plan[-1:]
    rows: list[dict[str, Any]] = []
    for order, (label, modules) in enumerate(plan):
        twin = randomised_copy(model, modules, seed=seed + order)
        twin_layer = resolve_target_layer(twin, layer.name, input_size)
        for method in methods:
            if method not in trained:
                continue
            maps = compute(method, twin, twin_layer, x, targets)
            similarity = spearman_per_image(trained[method], maps)
            rows.extend(
                {"index": i, "method": method, "step": label, "order": order, "spearman": float(s)}
                for i, s in enumerate(similarity)
            )
        del twin
    return rows
