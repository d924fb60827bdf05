"""Does the model's output depend on what a saliency map highlights? ROAD (Rong et al. 2022, exact removal
fractions, the ROAD authors' imputer), deletion and insertion AUC (Petsiuk et al. 2018), each also for two
baseline maps on the same images (a random map, the map shuffled within the lesion), and the
model-randomisation test of Adebayo et al. (2018): the same method's maps for the trained model and for the
same architecture with randomised weights.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cam.sanity import BASELINES
from Rad4XCNNLogic.cam.settings import DEFAULT_STEPS

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "BASELINE_COLUMNS",
    "DEFAULT_PERCENTILES",
    "DEFAULT_STEPS",
    "cascade_steps",
    "deletion_insertion_auc",
    "faithfulness_scores",
    "imputation_neighbours",
    "impute",
    "random_maps",
    "randomised_copy",
    "removal_masks",
    "rise_kernel",
    "road_scores",
    "shuffled_within",
    "spearman_per_image",
]

#: ROAD's removal levels: the percentiles of each map below which pixels are kept (pytorch-grad-cam's).
DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _softmax_probability(model, images, category: int, batch_size: int) -> np.ndarray:
    """The softmax probability of ``category`` for each of ``images`` ``(N, C, H, W)``, ``batch_size`` at a
    time."""
    import torch

    probs = []
    step = max(1, int(batch_size))
    with torch.no_grad():
        for lo in range(0, len(images), step):
            out = torch.softmax(model(images[lo : lo + step]).float(), dim=1)
            probs.append(out[:, int(category)].cpu().numpy())
    return np.concatenate(probs) if probs else np.zeros(0, np.float32)


def removal_fractions(percentiles: Sequence[int]) -> list[float]:
    """ROAD's removal levels as fractions of the pixels: at percentile ``p`` the ``1 - p/100`` most relevant
    (MoRF) or least relevant (LeRF) pixels are removed, as by pytorch-grad-cam's percentile masks."""
    return [1.0 - float(p) / 100.0 for p in percentiles]


def removal_masks(
    cam: np.ndarray, percentiles: Sequence[int] = DEFAULT_PERCENTILES, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """ROAD's removed pixels of one map at each level: ``(morf, lerf)``, each ``(levels, H, W)`` boolean.

    Each level removes exactly ``round(fraction * H * W)`` pixels (:func:`removal_fractions`), the most
    relevant first (MoRF) or the least relevant first (LeRF); pixels of equal value come in a seeded random
    order, as the ROAD authors break ties with noise. (pytorch-grad-cam keeps the pixels strictly below a
    percentile: where a map's zeros reach the percentile the whole image goes, so a sparse map had more
    removed than the level asked and scored as if it were faithful.)

    Examples
    --------
    >>> cam = np.zeros((10, 10)); cam[0, :5] = 1.0   # 95% zeros
    >>> morf, lerf = removal_masks(cam, [50])
    >>> int(morf.sum()), int(lerf.sum()), bool(morf[0, 0, :5].all()), bool(lerf[0, 0, :5].any())
    (50, 50, True, False)
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    cam = np.asarray(cam)
    order = _order(cam, rng)
    size = order.size
    morf = np.zeros((len(percentiles), size), bool)
    lerf = np.zeros((len(percentiles), size), bool)
    for level, fraction in enumerate(removal_fractions(percentiles)):
        count = min(size, max(0, round(fraction * size)))
        morf[level, order[:count]] = True
        lerf[level, order[size - count :]] = True
    return morf.reshape(-1, *cam.shape), lerf.reshape(-1, *cam.shape)


#: The noisy linear imputation's neighbours: (row offset, column offset, weight), as in the ROAD authors'
#: reference (direct neighbours 1/6, diagonal ones 1/12).
IMPUTATION_NEIGHBOURS = (
    (1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
    (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6),
)  # fmt: skip


def imputation_neighbours(ndim: int = 2) -> list[tuple[tuple[int, ...], float]]:
    """The imputation's neighbours in ``ndim`` dimensions: ``[(offset, weight), ...]``.

    In 2D the ROAD authors' table (:data:`IMPUTATION_NEIGHBOURS`). In 3D its rule carried over: every
    voxel of the 3 x 3 x 3 block around, a direct neighbour weighing 1/6 and each further non-zero offset
    halving the weight (edges 1/12, as the 2D diagonals, corners 1/24). Only the ratios matter: the
    imputed value is the weighted mean.

    >>> [len(imputation_neighbours(d)) for d in (2, 3)], sorted({w for _, w in imputation_neighbours(3)})
    ([8, 26], [0.041666666666666664, 0.08333333333333333, 0.16666666666666666])
    """
    import itertools

    if int(ndim) == 2:
        return [((dr, dc), weight) for dr, dc, weight in IMPUTATION_NEIGHBOURS]
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=int(ndim)) if any(o)]
    return [(o, (1 / 6) / 2 ** (sum(map(abs, o)) - 1)) for o in offsets]


def impute(image: torch.Tensor, removed: np.ndarray, noise: float = 0.01) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022) of the ``removed`` pixels ``(H, W)`` of ``image``
    ``(C, H, W)``: each removed pixel is the weighted mean of its 8 neighbours (:data:`IMPUTATION_NEIGHBOURS`,
    those inside the image), solved for all removed pixels at once as one sparse linear system per image,
    plus Gaussian noise of sd ``noise`` drawn from torch's generator. The same system and noise as
    pytorch-grad-cam's ``NoisyLinearImputer``, set up with vectorised sparse arrays (the library fills a
    list-of-lists matrix pixel by pixel, the larger part of its time at 112 px). A cube ``(C, D, H, W)``
    with its ``removed`` voxels ``(D, H, W)`` is imputed from its 26 neighbours
    (:func:`imputation_neighbours`). Returns a new tensor.
    """
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    channels, spatial = image.shape[0], tuple(image.shape[1:])
    gone = np.asarray(removed, bool).ravel()
    unknown = np.flatnonzero(gone)
    out = image.detach().reshape(channels, -1).float().cpu().clone()
    n = unknown.size
    if n == 0:
        return out.reshape(image.shape)
    values = out.numpy().astype(np.float64)
    slot = np.full(gone.size, -1)
    slot[unknown] = np.arange(n)
    where = np.unravel_index(unknown, spatial)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, channels))
    eq_rows, eq_cols, eq_values = [np.arange(n)], [np.arange(n)], []
    for offset, weight in imputation_neighbours(len(spatial)):
        moved = [w + o for w, o in zip(where, offset, strict=True)]
        inside = np.logical_and.reduce([(m >= 0) & (m < k) for m, k in zip(moved, spatial, strict=True)])
        diagonal[inside] += weight
        equation = np.flatnonzero(inside)
        neighbour = np.ravel_multi_index([m[inside] for m in moved], spatial)
        known = ~gone[neighbour]
        rhs[equation[known]] -= weight * values[:, neighbour[known]].T
        eq_rows.append(equation[~known])
        eq_cols.append(slot[neighbour[~known]])
        eq_values.append(np.full(int((~known).sum()), weight))
    eq_values.insert(0, -diagonal)
    system = coo_matrix(
        (np.concatenate(eq_values), (np.concatenate(eq_rows), np.concatenate(eq_cols))), shape=(n, n)
    ).tocsc()
    if len(spatial) == 2:
        solution = np.asarray(spsolve(system, rhs)).reshape(n, channels)
    else:
        solution = _conjugate_gradients(system, rhs, diagonal)
    out[:, unknown] = torch.as_tensor(solution.T, dtype=torch.float32) + noise * torch.randn(channels, n)
    return out.reshape(image.shape)


def _conjugate_gradients(system, rhs: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """The imputation's system of a cube, each channel by conjugate gradients (Jacobi-preconditioned, to
    a relative residual of 1e-6): an exact sparse solve fills in too much in three dimensions (3 s for a
    24-voxel cube and minutes for a 48-voxel one, against a fraction of a second and a few seconds)."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import cg

    negated, precondition = -system.tocsr(), diags(1.0 / diagonal)
    columns = []
    for k in range(rhs.shape[1]):
        try:
            solution, _ = cg(negated, -rhs[:, k], rtol=1e-6, M=precondition)
        except TypeError:  # scipy before 1.12 names the tolerance tol
            solution, _ = cg(negated, -rhs[:, k], tol=1e-6, M=precondition)
        columns.append(solution)
    return np.stack(columns, axis=1)


def road_scores(
    model,
    x: torch.Tensor,
    cams: np.ndarray,
    categories: Sequence[int],
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    seed: int = 0,
    *,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """ROAD (Rong et al. 2022) of each image's map, removing exact fractions of its pixels.

    At each level (:func:`removal_masks`: ``1 - p/100`` of the pixels for each percentile ``p``) pixels are
    removed, that is replaced by a noisy linear imputation from their neighbours (:func:`impute`, the ROAD
    authors' imputer), most relevant first (``morf``: the change of the class's softmax
    probability, averaged over the levels) and least relevant first (``lerf``); ``combined`` is
    ``(lerf - morf) / 2``: positive when removing what the map highlights hurts the prediction more than
    removing what it leaves out. Ties between equal map values are broken in a seeded random order and the
    imputer's noise is drawn from a seeded generator, so the scores are reproducible. Returns ``{"morf",
    "lerf", "combined"}``, each ``(B,)``.

    Examples
    --------
    >>> road_scores(net, x, cams, [1, 0], batch_size=32)["combined"]  # doctest: +SKIP
    array([0.21, 0.05], dtype=float32)
    """
    import torch

    cams = np.nan_to_num(np.asarray(cams, dtype=np.float32))
    rng = np.random.default_rng(int(seed))
    levels = len(percentiles)
    morf = np.full(len(x), np.nan, np.float32)
    lerf = np.full(len(x), np.nan, np.float32)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        for i in range(len(x)):
            image = x[i].detach().float().cpu()
            batch = [image]
            for gone in np.concatenate(removal_masks(cams[i], percentiles, rng)):
                batch.append(impute(image, gone))
            images = torch.stack(batch).to(device=x.device, dtype=x.dtype)
            probs = _softmax_probability(model, images, int(categories[i]), batch_size)
            morf[i] = float(np.mean(probs[1 : 1 + levels] - probs[0]))
            lerf[i] = float(np.mean(probs[1 + levels :] - probs[0]))
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2.0}


def _order(cam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices, most relevant first; ties (flat zero regions) in a seeded random order, not raster."""
    flat = np.nan_to_num(np.asarray(cam, dtype=np.float64)).ravel()
    return np.lexsort((rng.permutation(flat.size), -flat))


def rise_kernel(size: int, ndim: int = 2) -> np.ndarray:
    """The blur kernel insertion starts from, as in RISE (Petsiuk et al. 2018) scaled to the input's size.

    RISE blurs its 224-pixel inputs with an 11 x 11 kernel: a Gaussian of sigma 5 smoothing a centred unit
    impulse on the 11 x 11 grid (the grid's edges reflect the tails back in, so the kernel sums to 1). Here
    sigma is ``5 * size / 224`` and the kernel ``2r + 1`` pixels wide with ``r = max(1, round(5 * size /
    224))``: 11 x 11 and sigma 5 at 224 pixels, 5 x 5 and sigma 2.5 at 112. With ``ndim`` 3, the same
    Gaussian in three dimensions, for a 3D network's cube of ``size`` voxels a side.

    Examples
    --------
    >>> k = rise_kernel(224); k.shape, round(float(k.sum()), 6), bool(k[5, 5] == k.max())
    ((11, 11), 1.0, True)
    """
    from scipy.ndimage import gaussian_filter

    scale = float(size) / 224.0
    radius = max(1, round(5.0 * scale))
    impulse = np.zeros((2 * radius + 1,) * int(ndim))
    impulse[(radius,) * int(ndim)] = 1.0
    return gaussian_filter(impulse, sigma=5.0 * scale, mode="reflect")


def rise_blur(x: torch.Tensor) -> torch.Tensor:
    """Inputs ``(N, C, H, W)`` blurred channel by channel with :func:`rise_kernel` of ``H``, zero beyond the
    border (RISE's convolution padding; 0 is the mean colour of a normalised input); cubes ``(N, C, D, H,
    W)`` with its 3D kernel."""
    import torch

    ndim = x.ndim - 2
    kernel = torch.as_tensor(rise_kernel(x.shape[-2], ndim), dtype=x.dtype, device=x.device)
    channels = x.shape[1]
    weight = kernel.expand(channels, 1, *kernel.shape).contiguous()
    convolve = torch.nn.functional.conv3d if ndim == 3 else torch.nn.functional.conv2d
    return convolve(x, weight, padding=kernel.shape[-1] // 2, groups=channels)


def deletion_insertion_auc(
    model,
    x: torch.Tensor,
    cams: np.ndarray,
    categories: Sequence[int],
    steps: int = DEFAULT_STEPS,
    *,
    batch_size: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC (Petsiuk et al. 2018) of each image's map: ``(deletion, insertion)``.

    *Deletion*: the map's pixels, most relevant first, are set to 0 in the normalised input (the
    training mean colour) in ``steps`` equal parts; the class probability is measured after each, and the
    area under that curve over the removed fraction [0, 1] is the score (lower: the map found what the
    prediction rests on). *Insertion*: from a blurred copy of the input (RISE's kernel, see
    :func:`rise_kernel`), the original pixels come back most relevant first (higher is better). Ties
    between equal map values are broken in a seeded random order. Neither score alone says a map is
    faithful (insertion starts from a blur the model may still classify): compare them with baseline maps
    on the same images (:func:`faithfulness_scores`). Cubes ``(N, C, D, H, W)`` of a 3D network with their
    maps ``(N, D, H, W)`` are scored over their voxels, insertion from a 3D blur.

    Examples
    --------
    >>> deletion, insertion = deletion_insertion_auc(net, x, cams, [1, 1], batch_size=32)  # doctest: +SKIP
    """
    import torch

    steps = max(1, int(steps))
    n, spatial = x.shape[0], tuple(x.shape[2:])
    size = int(np.prod(spatial))
    rng = np.random.default_rng(int(seed))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * size).astype(int)
    deletion = np.full(n, np.nan, np.float32)
    insertion = np.full(n, np.nan, np.float32)
    with torch.no_grad():
        blurred_all = rise_blur(x.detach())
    for i in range(n):
        image, blurred = x[i].detach(), blurred_all[i]
        order = torch.as_tensor(_order(cams[i], rng), device=image.device)
        curves = {}
        for name, start, end in (("deletion", image, torch.zeros_like(image)), ("insertion", blurred, image)):
            batch = []
            for count in counts:
                keep = torch.zeros(size, dtype=torch.bool, device=image.device)
                keep[order[:count]] = True
                batch.append(torch.where(keep.reshape(1, *spatial), end, start))
            curves[name] = _softmax_probability(model, torch.stack(batch), int(categories[i]), batch_size)
        deletion[i] = float(np.trapezoid(curves["deletion"], fractions))
        insertion[i] = float(np.trapezoid(curves["insertion"], fractions))
    return deletion, insertion


# ------------------------------------------------------------------------------------------------ baselines
def random_maps(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Baseline maps that know nothing: ``shape`` ``(B, H, W)`` (or ``(B, D, H, W)``) of independent uniform
    values in [0, 1)."""
    return np.random.default_rng([int(seed), 1]).random(tuple(shape), dtype=np.float32)


def shuffled_within(cams: np.ndarray, masks: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    """Baseline maps that know the lesion but not where in it: each map's values inside its (boolean) lesion
    mask in a seeded random order, its values outside as they were.

    Examples
    --------
    >>> cam = np.arange(16.0).reshape(1, 4, 4); mask = np.zeros((4, 4), bool); mask[:2, :2] = True
    >>> out = shuffled_within(cam, [mask]); sorted(out[0][mask]) == sorted(cam[0][mask]), bool(
    ...     (out[0][~mask] == cam[0][~mask]).all())
    (True, True)
    """
    rng = np.random.default_rng([int(seed), 2])
    out = np.array(cams, dtype=np.float32, copy=True)
    for i, mask in enumerate(masks):
        inside = np.asarray(mask, bool)
        out[i][inside] = rng.permutation(out[i][inside])
    return out


def lesion_on_input(mask: np.ndarray | None, crop, size: int) -> np.ndarray | None:
    """A lesion mask (image geometry) on the model input's ``size`` x ``size`` grid through the case's
    crop (nearest neighbour); None without a lesion."""
    if mask is None or not np.any(mask):
        return None
    return crop.to_input(np.asarray(mask, np.float32), int(size), "nearest") > 0.5


#: The faithfulness scores measured for the baselines (:data:`BASELINES`: a random map, and the method's own
#: map shuffled within the lesion) too.
BASELINE_SCORES = ("road_combined", "deletion_auc", "insertion_auc")
#: The metrics table's baseline columns: ``<score>_<baseline>``.
BASELINE_COLUMNS = [f"{score}_{baseline}" for baseline in BASELINES for score in BASELINE_SCORES]


def _scores(net, x, cams, chosen, percentiles, steps: int, batch_size: int, seed: int) -> dict:
    road = road_scores(net, x, cams, chosen, percentiles, seed=seed, batch_size=batch_size)
    deletion, insertion = deletion_insertion_auc(
        net, x, cams, chosen, steps, batch_size=batch_size, seed=seed
    )
    return {
        "road_morf": road["morf"],
        "road_lerf": road["lerf"],
        "road_combined": road["combined"],
        "deletion_auc": deletion,
        "insertion_auc": insertion,
    }


def faithfulness_scores(
    net,
    x: torch.Tensor,
    chosen: Sequence[int],
    input_maps: dict[str, np.ndarray],
    masks: Sequence[np.ndarray | None],
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    steps: int = DEFAULT_STEPS,
    *,
    batch_size: int,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """ROAD and deletion / insertion AUC of each method's maps of a batch and of its baselines on the same
    images: ``{method: {column: (B,)}}`` with the columns of :data:`BASELINE_COLUMNS` beside
    ``road_morf``, ``road_lerf``, ``road_combined``, ``deletion_auc`` and ``insertion_auc``.

    The baselines (:data:`BASELINES`): a random map (:func:`random_maps`, one per image, shared by the
    methods) and the method's own map shuffled within the lesion (:func:`shuffled_within`; ``masks`` are
    the lesions on the input grid, NaN scores for an image without one). Every map of an image is scored
    with the same seeds (tie order, imputation noise), so that method and baseline differ only by the map.
    Cost per image: the maps of ``1 + 2 * methods`` instead of ``methods``.
    """
    if not input_maps:
        return {}
    chosen = np.asarray(chosen)
    n = len(x)
    args = (percentiles, int(steps), int(batch_size), int(seed))
    random_scores = _scores(net, x, random_maps((n, *x.shape[2:]), seed), chosen, *args)
    lesion = [i for i, m in enumerate(masks) if m is not None and np.any(m)]
    out: dict[str, dict[str, np.ndarray]] = {}
    for method, cams in input_maps.items():
        scores = _scores(net, x, cams, chosen, *args)
        for score in BASELINE_SCORES:
            scores[f"{score}_random"] = random_scores[score]
            scores[f"{score}_shuffled"] = np.full(n, np.nan, np.float32)
        if lesion:
            shuffled = shuffled_within(np.asarray(cams)[lesion], [masks[i] for i in lesion], seed)
            part = _scores(net, x[lesion], shuffled, chosen[lesion], *args)
            for score in BASELINE_SCORES:
                scores[f"{score}_shuffled"][lesion] = part[score]
        out[method] = scores
    return out


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
