"""Saliency maps of a trained backbone (Grad-CAM, Grad-CAM++, EigenCAM, ScoreCAM, LayerCAM, ...).

pytorch-grad-cam computes each map on the model's input crop. This module adds what the library lacks: a
target layer per architecture family (or any named module), batching, ScoreCAM with bounded memory, the
map carried back onto the original image through the crop (undoing resize, crop and padding), NRRD files in
the image's geometry and PNG overlays, and measurements of each map (CAM energy inside the lesion, the
pointing game) and of the agreement between methods on the same case (Spearman, top-20% IoU).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cam.measures import (
    agreement_rows,
    energy_inside,
    iou_column,
    map_metrics,
    map_peak,
    pointing_game,
    spearman_agreement,
    top_fraction_iou,
    top_region,
)
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, LoadedCase
from Rad4XCNNLogic.cohort.roi import SquareCrop
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError, first_line
from Rad4XCNNLogic.infra.progress import track

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    import torch

    from Rad4XCNNLogic.features.backbones import Backbone, LoadedCheckpoint, PreprocessConfig

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "ActivationTransform",
    "CamMethod",
    "CamResult",
    "TargetLayer",
    "agreement_rows",
    "cam_paths",
    "check_methods",
    "compute_cams",
    "default_target_layer",
    "energy_inside",
    "first_component_projection",
    "heat_colours",
    "layer_candidates",
    "map_metrics",
    "map_peak",
    "map_to_image",
    "overlay_image",
    "pointing_game",
    "resolve_target_layer",
    "spearman_agreement",
    "top_fraction_iou",
    "top_region",
    "write_cams",
    "write_case_maps",
]

STAGE = "cam"
DEFAULT_METHODS = ("gradcam", "eigencam", "scorecam")
CAM_SUBDIR = "cam"
METRICS_CSV = "cam_metrics.csv"
AGREEMENT_CSV = "cam_agreement.csv"
SETTINGS_JSON = "cam_run.json"


# ------------------------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class CamMethod:
    """A CAM method of pytorch-grad-cam: its name here, the library's class and what it needs."""

    name: str
    library_class: str
    uses_gradients: bool
    class_specific: bool
    description: str

    @property
    def file_tag(self) -> str:
        """The name used in file names (``gradcam++`` -> ``gradcampp``)."""
        return self.name.replace("+", "p")


METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod(
            "gradcam", "GradCAM", True, True, "channels weighted by their mean gradient (Selvaraju 2017)"
        ),
        CamMethod(
            "gradcam++", "GradCAMPlusPlus", True, True, "higher-order gradient weights (Chattopadhay 2018)"
        ),
        CamMethod("xgradcam", "XGradCAM", True, True, "axiom-based gradient weights (Fu 2020)"),
        CamMethod(
            "hirescam", "HiResCAM", True, True, "gradient times activation, element-wise (Draelos 2020)"
        ),
        CamMethod("layercam", "LayerCAM", True, True, "positive gradients times activations (Jiang 2021)"),
        CamMethod(
            "eigencam",
            "EigenCAM",
            False,
            False,
            "first principal component of the activations; ignores the class (Muhammad 2020)",
        ),
        CamMethod(
            "eigengradcam", "EigenGradCAM", True, True, "first principal component of gradient x activation"
        ),
        CamMethod(
            "scorecam",
            "ScoreCAM",
            False,
            True,
            "channels weighted by the class score of the input masked by each channel (Wang 2020); one "
            "forward pass per channel",
        ),
    )
}
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "gradcam++": "gradcam++"}


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """Validate CAM method names (a list, or one comma-separated string) and return them canonical.

    Case, ``-`` and ``_`` are ignored (``Grad-CAM`` is ``gradcam``; ``gradcampp`` is ``gradcam++``);
    duplicates are dropped, the order is kept.

    Examples
    --------
    >>> check_methods("Grad-CAM, eigencam,score_cam")
    ['gradcam', 'eigencam', 'scorecam']
    """
    if isinstance(methods, str):
        methods = methods.split(",")
    names: list[str] = []
    for raw in methods:
        key = re.sub(r"[\s_\-]", "", str(raw).lower())
        if not key:
            continue
        key = _ALIASES.get(key, key)
        if key not in METHODS:
            close = difflib.get_close_matches(key, list(METHODS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise Rad4XCNNError(
                f"unknown CAM method {str(raw).strip()!r}{hint}; known methods: {', '.join(METHODS)}"
            )
        if key not in names:
            names.append(key)
    if not names:
        raise Rad4XCNNError(f"no CAM method given; known methods: {', '.join(METHODS)}")
    return names


# ------------------------------------------------------------------------------------------ target layers
@dataclass(frozen=True)
class TargetLayer:
    """The module whose activations a CAM explains.

    ``family`` says how it was chosen (``resnet``, ``densenet``, ``vit``, ``efficientnet``, ``convnext``,
    ``feature_info`` for timm's last feature stage, or ``named`` when the user named it). ``tokens`` is
    True for a transformer's token sequence, which is reshaped to the patch grid after dropping the
    ``prefix_tokens`` (class and register tokens).
    """

    name: str
    module: Any
    family: str
    tokens: bool = False
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None


def _is_token_model(model) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens")


def default_target_layer(model) -> tuple[str, str]:
    """The default target layer of a timm model: ``(dotted module name, family)``.

    The rule is the layer whose output the classifier pools, the convention of Grad-CAM:

    * ResNet family (``layer4``): the last block of the last stage, ``layer4.<last>``.
    * DenseNet: ``features.norm5``, the final batch norm + ReLU over the last dense block's concatenated
      features: exactly what the classifier pools, so Grad-CAM's channel weights are the classifier's own
      (as for the last stage of a ResNet). The raw ``denseblock4`` output would be the same channels
      before that normalisation, each on its own scale (the block's input and every layer's new
      features), which skews the channel sums of EigenCAM and ScoreCAM's normalisation.
    * ViT and other token models (``blocks`` + ``patch_embed``): ``blocks.<last>.norm1``, reshaped from
      tokens to the patch grid (the class token attends to it in the last block).
    * EfficientNet / MobileNetV2 (``bn2``), ConvNeXt (``stages.<last>``); otherwise timm's last feature
      stage (``feature_info``).

    Examples
    --------
    >>> default_target_layer(timm.create_model("resnet18"))  # doctest: +SKIP
    ('layer4.1', 'resnet')
    """
    import torch

    if _is_token_model(model):
        last = len(model.blocks) - 1
        return (f"blocks.{last}.norm1" if hasattr(model.blocks[last], "norm1") else f"blocks.{last}"), "vit"
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, torch.nn.Sequential) and len(layer4) > 0:
        return f"layer4.{len(layer4) - 1}", "resnet"
    features = getattr(model, "features", None)
    if features is not None and hasattr(features, "norm5"):
        return "features.norm5", "densenet"
    if hasattr(model, "conv_head") and isinstance(getattr(model, "bn2", None), torch.nn.BatchNorm2d):
        return "bn2", "efficientnet"
    stages = getattr(model, "stages", None)
    if isinstance(stages, torch.nn.Sequential) and len(stages) > 0:
        return f"stages.{len(stages) - 1}", "convnext"
    info = getattr(model, "feature_info", None)
    if info:
        module = info[-1].get("module") if isinstance(info[-1], dict) else None
        for candidate in (module, str(module).replace("_", ".")) if module else ():
            if _has_module(model, candidate):
                return candidate, "feature_info"
    raise Rad4XCNNError(
        f"no default CAM target layer for {type(model).__name__}; name one (--target-layer), e.g. "
        + ", ".join(_last_conv_names(model)[-3:])
    )


def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _last_conv_names(model) -> list[str]:
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)] or ["<none>"]


def _walk(model, name: str) -> tuple[str, Any] | None:
    """Find a module by dotted name; ``[i]`` and negative indices into sequences are accepted."""
    import torch

    parts = [p for p in re.sub(r"\[(-?\d+)\]", r".\1", name.strip()).split(".") if p]
    if not parts:
        return None
    module, resolved = model, []
    for part in parts:
        children = dict(module.named_children())
        if part in children:
            module = children[part]
            resolved.append(part)
        elif re.fullmatch(r"-?\d+", part) and isinstance(module, (torch.nn.Sequential, torch.nn.ModuleList)):
            index = int(part)
            if not -len(module) <= index < len(module):
                return None
            index %= len(module)
            module = module[index]
            resolved.append(str(index))
        else:
            return None
    return ".".join(resolved), module


def layer_candidates(model, name: str, n: int = 8) -> list[str]:
    """Module names of ``model`` close to ``name`` (for an error message)."""
    names = [m for m, _ in model.named_modules() if m]
    close = difflib.get_close_matches(str(name), names, n=n, cutoff=0.5)
    if len(close) < n:  # names that share the typed prefix
        prefix = str(name).split(".")[0].split("[")[0]
        close += [m for m in names if prefix and m.startswith(prefix) and m not in close][: n - len(close)]
    return close or [m for m, _ in model.named_children()][:n]


def resolve_target_layer(model, name: str | None = None, input_size: int = 224) -> TargetLayer:
    """The target layer: the default for the model's family, or the module named (dotted, e.g.
    ``layer4.1``, ``layer4[-1]``, ``blocks.-1.norm1``, ``features.denseblock4``).

    A name that does not exist raises :class:`Rad4XCNNError` listing the closest module names.

    Examples
    --------
    >>> resolve_target_layer(model, "layer4[-1]").name  # doctest: +SKIP
    'layer4.1'
    """
    token_model = _is_token_model(model)
    if name is None or not str(name).strip():
        layer_name, family = default_target_layer(model)
        found = _walk(model, layer_name)
        assert found is not None, layer_name
    else:
        found = _walk(model, str(name))
        if found is None:
            close = layer_candidates(model, str(name))
            raise Rad4XCNNError(
                f"target layer {str(name).strip()!r} does not exist in {type(model).__name__}; "
                f"closest module names: {', '.join(close)}"
            )
        family = "named"
    resolved, module = found
    grid = None
    prefix = 0
    if token_model:
        prefix = int(getattr(model, "num_prefix_tokens", 1) or 0)
        patch = getattr(model.patch_embed, "patch_size", (16, 16))
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        grid = (int(input_size) // int(patch[0]), int(input_size) // int(patch[1]))
    return TargetLayer(resolved, module, family, token_model, prefix, grid)


class ActivationTransform:
    """The ``reshape_transform`` given to pytorch-grad-cam, applied to activations and gradients.

    A token sequence ``(B, prefix + h*w, C)`` loses its prefix (class, register) tokens and becomes a
    ``(B, C, h, w)`` grid. Every tensor is copied, so that an in-place operation after the target layer
    (an in-place ReLU, a residual ``+=``) cannot change the stored activation.
    """

    def __init__(self, prefix_tokens: int = 0, grid: tuple[int, int] | None = None):
        self.prefix_tokens = int(prefix_tokens)
        self.grid = grid

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            tokens = x[:, self.prefix_tokens :, :]
            n = tokens.shape[1]
            h, w = self.grid if self.grid and self.grid[0] * self.grid[1] == n else (math.isqrt(n),) * 2
            if h * w != n:
                raise Rad4XCNNError(
                    f"cannot reshape {n} tokens (after {self.prefix_tokens} prefix tokens) to a patch grid"
                )
            return tokens.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2).contiguous()
        return x.clone()


# ------------------------------------------------------------------------------------------------ ScoreCAM
_SCORECAM_CLASS = None


def _scorecam_class():
    """pytorch-grad-cam's ScoreCAM with one override, ``get_cam_weights``, for bounded memory.

    The library builds every masked input of a batch at once (``images x channels x 3 x H x W``: 1.2 GB
    per image for ResNet50 at 224 px), records the target layer's activations of every masked forward
    pass, and draws a tqdm bar per image. Here the masked inputs are built ``batch_size`` channels at a
    time, the activation hooks are paused while scoring, and progress goes through
    :func:`Rad4XCNNLogic.infra.progress.track`. The weights are the same: the softmax over channels of the
    target
    score of the input multiplied by each channel's upsampled, min-max normalised activation.
    """
    global _SCORECAM_CLASS
    if _SCORECAM_CLASS is not None:
        return _SCORECAM_CLASS
    import torch
    from pytorch_grad_cam import ScoreCAM

    class BatchedScoreCAM(ScoreCAM):
        def __init__(self, model, target_layers, reshape_transform=None, batch_size=32, progress=False):
            super().__init__(model, target_layers, reshape_transform=reshape_transform)
            self.batch_size = max(1, int(batch_size))
            self.progress = bool(progress)
            self.case_ids: list[str] = []

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            activations_t = torch.as_tensor(activations, device=self.device)
            n_images, n_channels = activations_t.shape[:2]
            size = input_tensor.shape[-2:]
            weights = np.zeros((n_images, n_channels), dtype=np.float32)
            with torch.no_grad(), _hooks_paused(self):
                for b in range(n_images):
                    image = input_tensor[b : b + 1]
                    label = self.case_ids[b] if b < len(self.case_ids) else str(b)
                    scores = []
                    starts = range(0, n_channels, self.batch_size)
                    for start in track(
                        starts,
                        desc=f"ScoreCAM {label}",
                        stage="cam-scorecam",
                        enabled=self.progress,
                        unit="batch",
                    ):
                        chunk = activations_t[b : b + 1, start : start + self.batch_size]
                        up = torch.nn.functional.interpolate(
                            chunk, size=size, mode="bilinear", align_corners=True
                        )
                        up = up[0]
                        flat = up.reshape(up.shape[0], -1)
                        low, high = flat.min(dim=1).values, flat.max(dim=1).values
                        up = (up - low[:, None, None]) / (high - low + 1e-8)[:, None, None]
                        outputs = self.model(image * up[:, None])
                        scores.append(torch.stack([targets[b](o) for o in outputs]).float().cpu())
                    weights[b] = torch.softmax(torch.cat(scores), dim=0).numpy()
            return weights

    _SCORECAM_CLASS = BatchedScoreCAM
    return BatchedScoreCAM


@contextmanager
def _hooks_paused(cam) -> Iterator[None]:
    """Remove the CAM's activation hooks for the duration (ScoreCAM's scoring passes need none)."""
    holder = getattr(cam, "activations_and_grads", None)
    handles = getattr(holder, "handles", None)
    if handles is None:  # another library version: scoring still works, the hooks just record more
        yield
        return
    for handle in handles:
        handle.remove()
    handles.clear()
    try:
        yield
    finally:
        for layer in cam.target_layers:
            handles.append(layer.register_forward_hook(holder.save_activation))
            handles.append(layer.register_forward_hook(holder.save_gradient))


# ------------------------------------------------------------------------------------------------ EigenCAM
def first_component_projection(activations: np.ndarray) -> np.ndarray:
    """Each image's activations ``(C, h, w)`` projected on their first principal component: ``(B, h, w)``.

    The computation of pytorch-grad-cam's ``get_2d_projection`` (centred over positions, SVD, projection
    on the first right singular vector), with the economy SVD: the library asks for the full ``C x C``
    matrix of right singular vectors and uses its first row, which costs 1.3 s per image for ResNet50's
    2048 channels on a CPU against 8 ms. The first singular vector, sign included, is the same.

    Examples
    --------
    >>> a = np.random.default_rng(0).random((1, 8, 3, 3)).astype(np.float32)
    >>> first_component_projection(a).shape
    (1, 3, 3)
    """
    activations = np.array(activations, dtype=np.float32)  # a copy, as the library makes
    activations[np.isnan(activations)] = 0.0
    projections = []
    for image in activations:
        flat = image.reshape(image.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        vt = np.linalg.svd(flat, full_matrices=False)[2]
        projections.append((flat @ vt[0]).reshape(image.shape[1:]))
    return np.float32(projections)


_EIGEN_CLASSES: dict[str, type] = {}


def _eigen_class(name: str):
    """pytorch-grad-cam's EigenCAM / EigenGradCAM with one override, ``get_cam_image``: the economy SVD
    of :func:`first_component_projection`."""
    if name in _EIGEN_CLASSES:
        return _EIGEN_CLASSES[name]
    from pytorch_grad_cam import EigenCAM, EigenGradCAM

    class FastEigenCAM(EigenCAM):
        def get_cam_image(
            self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth
        ):
            return first_component_projection(activations)

    class FastEigenGradCAM(EigenGradCAM):
        def get_cam_image(
            self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth
        ):
            return first_component_projection(grads * activations)

    _EIGEN_CLASSES.update(eigencam=FastEigenCAM, eigengradcam=FastEigenGradCAM)
    return _EIGEN_CLASSES[name]


def _make_cam(method: str, model, layer: TargetLayer, batch_size: int, progress: bool):
    import pytorch_grad_cam

    transform = ActivationTransform(layer.prefix_tokens, layer.grid)
    if method == "scorecam":
        return _scorecam_class()(model, [layer.module], transform, batch_size=batch_size, progress=progress)
    if method in ("eigencam", "eigengradcam"):
        return _eigen_class(method)(model, [layer.module], reshape_transform=transform)
    cls = getattr(pytorch_grad_cam, METHODS[method].library_class)
    return cls(model, [layer.module], reshape_transform=transform)


# --------------------------------------------------------------------------------------------- geometry
def map_to_image(cam: np.ndarray, crop: SquareCrop) -> np.ndarray:
    """A map on the model input (square, any size) carried back onto the image's pixel grid.

    Undoes the resize (bilinear), the crop and the padding with :meth:`SquareCrop.from_input`: the result
    has the image's shape, the map's values inside the crop's part of the image, and 0 outside the crop
    (the model did not see those pixels).

    Examples
    --------
    >>> crop = SquareCrop(top=-10, left=20, side=60, image_shape=(80, 120))
    >>> back = map_to_image(np.ones((32, 32), np.float32), crop)
    >>> back.shape, float(back[0:50, 20:80].min()), float(back.sum())
    ((80, 120), 1.0, 3000.0)
    """
    back = crop.from_input(np.asarray(cam, dtype=np.float32), interpolation="bilinear", fill=0.0)
    return np.clip(back, 0.0, None, out=back)


# ----------------------------------------------------------------------------------------------- overlay
def heat_colours(values: np.ndarray) -> np.ndarray:
    """The ``jet`` colour map of values in [0, 1], as float RGB: blue - cyan - yellow - red.

    Written out (three clipped ramps) so that the CAM stage needs no matplotlib. Jet's dark ends are left
    out (0 is pure blue, 1 pure red) so that the maximum stands out on a grey image.
    """
    v = 0.125 + 0.75 * np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # red, green, blue
    return np.clip(1.5 - np.abs(4.0 * v - 4.0 * centres), 0.0, 1.0)


def overlay_image(
    grey: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None = None,
    box: tuple[int, int, int, int] | None = None,
    opacity: float = 0.6,
) -> np.ndarray:
    """An RGB ``uint8`` picture: the grey image under the heat-coloured map, with the lesion contour.

    The map's colour is blended in proportion to its value (``opacity * cam``), so the image shows through
    where the map is low. The lesion contour is green; the crop the model saw (``box``, row0, col0, row1,
    col1) is outlined with a dotted white line.
    """
    grey = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 1.0)
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    alpha = (float(opacity) * cam)[..., None]
    rgb = (1.0 - alpha) * grey[..., None] + alpha * heat_colours(cam)
    out = np.round(rgb * 255.0).astype(np.uint8)
    if box is not None:
        r0, c0, r1, c1 = box
        dots = np.zeros(grey.shape, bool)
        for r in (r0, r1 - 1):
            if 0 <= r < grey.shape[0]:
                dots[r, c0:c1:2] = True
        for c in (c0, c1 - 1):
            if 0 <= c < grey.shape[1]:
                dots[r0:r1:2, c] = True
        out[dots] = (255, 255, 255)
    if mask is not None and np.any(mask):
        from scipy.ndimage import binary_erosion

        mask = np.asarray(mask, bool)
        contour = mask & ~binary_erosion(mask, border_value=0)
        out[contour] = (0, 255, 0)
    return out


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    from Rad4XCNNLogic.infra.storage import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    return path


def _file_stem(case_id: str) -> str:
    """A file-system safe form of a case id (a short hash keeps two ids apart once sanitised)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"
    if safe != case_id:
        safe += "_" + hashlib.sha1(case_id.encode("utf-8")).hexdigest()[:6]
    return safe


def cam_paths(out_dir: str | os.PathLike, case_id: str, method: str) -> dict[str, Path]:
    """Where a case's map goes: ``{"nrrd": <out>/cam/<case>_<method>.nrrd, "png": ....png}``."""
    stem = f"{_file_stem(case_id)}_{METHODS[method].file_tag}"
    folder = Path(out_dir) / CAM_SUBDIR
    return {"nrrd": folder / f"{stem}.nrrd", "png": folder / f"{stem}.png"}


def write_case_maps(
    out_dir: str | os.PathLike,
    loaded: LoadedCase,
    maps: dict[str, np.ndarray],
    crop: SquareCrop | None = None,
    intensity: str = "auto",
) -> dict[str, dict[str, Path]]:
    """Write one case's maps (in image geometry) as NRRD, in the image's size, spacing, origin and
    direction, and as PNG overlays; returns ``{method: {"nrrd": path, "png": path}}``."""
    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.features.preprocessing import scale_intensity

    grey = scale_intensity(loaded.image.array, intensity)
    mask = loaded.mask if loaded.case.has_lesion else None
    box = crop.box_in_image if crop is not None else None
    written = {}
    for method, cam in maps.items():
        paths = cam_paths(out_dir, loaded.case_id, method)
        write_image(paths["nrrd"], np.asarray(cam, dtype=np.float32), like=loaded.image)
        _write_png(paths["png"], overlay_image(grey, cam, mask, box))
        written[method] = paths
    return written


# ------------------------------------------------------------------------------------------------ results
@dataclass
class CamResult:
    """Saliency maps of a cohort and their measurements.

    ``metrics``: one row per (case, method): case_id, method, label, has_lesion, target_class,
    predicted_class, target_probability, energy_inside, energy_chance, pointing_hit, peak_row, peak_col,
    max_value, empty (see :func:`map_metrics`). ``agreement``: one row per case and pair of methods:
    case_id, method_a, method_b, spearman, top20_iou. ``maps``: ``{(case_id, method): map}`` in image
    geometry, values in [0, 1], when kept. ``files``: ``{(case_id, method): {"nrrd": path, "png": path}}``.
    ``failures``: cases (or case and method) left out. ``settings``: model, weights, target layer,
    methods, device, timings.
    """

    metrics: pd.DataFrame
    agreement: pd.DataFrame
    maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    files: dict[tuple[str, str], dict[str, Path]] = field(default_factory=dict)
    failures: list[CaseFailure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)
    crops: dict[str, SquareCrop] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Per method: cases, pointing-game accuracy, mean energy inside the lesion and its chance level,
        and the number of empty maps."""
        import pandas as pd

        if self.metrics.empty:
            return pd.DataFrame(
                columns=["cases", "pointing_game", "energy_inside", "energy_chance", "empty_maps"]
            )
        grouped = self.metrics.groupby("method", sort=False)
        return pd.DataFrame(
            {
                "cases": grouped["case_id"].count(),
                "pointing_game": grouped["pointing_hit"].mean(),
                "energy_inside": grouped["energy_inside"].mean(),
                "energy_chance": grouped["energy_chance"].mean(),
                "empty_maps": grouped["empty"].sum().astype(int),
            }
        )

    def agreement_summary(self) -> pd.DataFrame:
        """Per pair of methods: cases and the mean Spearman correlation and top-fraction IoU."""
        if self.agreement.empty:
            return self.agreement
        numeric = [c for c in self.agreement.columns if c not in ("case_id", "method_a", "method_b")]
        grouped = self.agreement.groupby(["method_a", "method_b"], sort=False)
        out = grouped[numeric].mean()
        out.insert(0, "cases", grouped["case_id"].count())
        return out


METRIC_COLUMNS = [
    "case_id",
    "method",
    "label",
    "has_lesion",
    "target_class",
    "predicted_class",
    "target_probability",
    "energy_inside",
    "energy_chance",
    "pointing_hit",
    "peak_row",
    "peak_col",
    "max_value",
    "empty",
]


# ------------------------------------------------------------------------------------------------- model
@dataclass
class _Model:
    net: Any
    name: str
    preprocess: PreprocessConfig
    class_names: list[str]
    task_classifier: bool
    weights: dict


def _load_model(checkpoint, model: str | None, seed: int) -> _Model:
    from Rad4XCNNLogic.features.backbones import Backbone, LoadedCheckpoint, build_backbone, model_default_cfg

    if isinstance(checkpoint, LoadedCheckpoint):
        meta = checkpoint.metadata
        names = [str(c) for c in meta.get("class_names") or []]
        return _Model(
            checkpoint.model,
            str(meta.get("model_name")),
            checkpoint.preprocess,
            names,
            bool(names),
            {"source": "checkpoint"},
        )
    if isinstance(checkpoint, Backbone):
        backbone = checkpoint
    else:
        if checkpoint is None and model is None:
            raise Rad4XCNNError(
                "give a checkpoint of 'rad4xcnn train' (--weights model.pt), or a timm model name (--model)"
            )
        if checkpoint is not None and str(checkpoint).strip().lower() != "imagenet":
            path = Path(checkpoint)
            if not path.is_file():
                raise Rad4XCNNError(f"checkpoint not found: {path}")
        n_classes = 1000
        if model is not None:
            from Rad4XCNNLogic.features.backbones import check_model_name

            n_classes = int(model_default_cfg(check_model_name(model)).get("num_classes") or 1000)
        backbone = build_backbone(model, checkpoint, num_classes=n_classes, seed=seed)
    net = backbone.model
    n_out = int(getattr(net, "num_classes", backbone.num_classes) or 0)
    names = list(backbone.class_names or [])
    task = bool(names)
    if not names:
        names = [str(i) for i in range(n_out)]
    return _Model(net, backbone.name, backbone.preprocess, names, task, backbone.weights.to_dict())


def _target_index(target_class: str | int | None, class_names: list[str]) -> int | None:
    if target_class is None:
        return None
    text = str(target_class).strip()
    if text in class_names:
        return class_names.index(text)
    if re.fullmatch(r"\d+", text) and int(text) < len(class_names):
        return int(text)
    shown = ", ".join(class_names[:10]) + (
        f", ... ({len(class_names)} in all)" if len(class_names) > 10 else ""
    )
    raise Rad4XCNNError(f"unknown target class {text!r}; the model's classes are: {shown}")


def _class_fields(class_names, probs, predicted, chosen, row: int) -> dict[str, Any]:
    if probs is None:
        return {"target_class": None, "predicted_class": None, "target_probability": float("nan")}
    return {
        "target_class": class_names[int(chosen[row])],
        "predicted_class": class_names[int(predicted[row])],
        "target_probability": float(probs[row, int(chosen[row])]),
    }


def _probe_layer(net, layer: TargetLayer, size: int, device) -> tuple[int, tuple[int, int]]:
    """Run one blank input and check the target layer gives a feature map: ``(channels, (h, w))``."""
    import torch

    seen: list[Any] = []
    handle = layer.module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size, device=device))
    finally:
        handle.remove()
    if not seen:
        raise Rad4XCNNError(
            f"target layer {layer.name} is not used in the model's forward pass; "
            "name another (--target-layer)"
        )
    out = seen[0]
    if not torch.is_tensor(out):
        raise Rad4XCNNError(
            f"target layer {layer.name} returns a {type(out).__name__}, not a tensor; "
            "name one of its sub-modules"
        )
    shaped = ActivationTransform(layer.prefix_tokens, layer.grid)(out)
    if shaped.ndim != 4:
        raise Rad4XCNNError(
            f"target layer {layer.name} gives outputs of shape {tuple(out.shape)}, not a feature map "
            "(batch, channels, height, width); name a convolutional stage or a transformer block"
        )
    return int(shaped.shape[1]), (int(shaped.shape[2]), int(shaped.shape[3]))


# ---------------------------------------------------------------------------------------------- compute
def compute_cams(
    cohort: Cohort | Sequence[Case],
    checkpoint: str | os.PathLike | Backbone | LoadedCheckpoint | None = None,
    *,
    model: str | None = None,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    cases: str | Sequence[str] | None = None,
    target_class: str | int | None = None,
    target_layer: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    pointing_tolerance: float = 0.0,
    top_fraction: float = 0.2,
    out_dir: str | os.PathLike | None = None,
    keep_maps: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CamResult:
    """Saliency maps of each case, in the image's geometry, with their measurements.

    Parameters
    ----------
    cohort : the cases (a :class:`Cohort` or a list). Cases with ``has_lesion=false`` get maps over their
        whole image; their lesion measurements are NaN.
    checkpoint : a checkpoint of ``rad4xcnn train`` (path), a
    :class:`~Rad4XCNNLogic.features.backbones.Backbone`
        (e.g. ``train_model(...).backbone``) or a
        :class:`~Rad4XCNNLogic.features.backbones.LoadedCheckpoint`. A plain
        state dict or ``"imagenet"`` with ``model`` also works, and None with ``model`` gives random
        weights: the maps are then computed for the model's own (ImageNet or random) classifier and are
        not meaningful for the task; a warning says so.
    model : timm model name, for weights that are not a rad4xcnn checkpoint.
    methods : names from :data:`METHODS` (``gradcam``, ``gradcam++``, ``eigencam``, ``scorecam``,
        ``layercam``, ...), a list or a comma-separated string.
    cases : case ids to map (default: every case).
    target_class : the class explained, by name (or index); None: each case's predicted class. Every
        method of a case explains the same class. EigenCAM ignores it (it is class-agnostic).
    target_layer : a dotted module name (``layer4.1``, ``layer4[-1]``, ``features.denseblock4``); None:
        the default of the model's family (:func:`default_target_layer`).
    device : ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
    batch_size : images per forward pass: cases per batch for the gradient methods and EigenCAM, and
        masked inputs per forward pass for ScoreCAM, which needs one forward pass per channel of the target
        layer for every case (2048 for ResNet50's last stage, 1024 for DenseNet121, 512 for ResNet18, 768
        for ViT-B).
    pointing_tolerance : pixels around the lesion that still count as a pointing-game hit (default 0).
    top_fraction : the share of each map's pixels compared by the IoU agreement (0.2: top-20%).
    out_dir : when given, each case's NRRD and PNG files are written to ``<out_dir>/cam/`` as soon as it is
        done, and the CSV tables at the end (see :func:`write_cams`).
    keep_maps : keep the maps in memory (``result.maps``); default: only when ``out_dir`` is None.

    Examples
    --------
    >>> cohort = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> result = compute_cams(cohort, "model.pt", methods="gradcam,eigencam", device="cpu")  # doctest: +SKIP
    >>> result.summary()  # doctest: +SKIP
              cases  pointing_game  energy_inside  energy_chance  empty_maps
    method
    gradcam      40          0.925          0.612          0.401           0
    eigencam     40          0.875          0.588          0.401           0
    >>> write_cams(result, "run")  # doctest: +SKIP
    """
    import pandas as pd
    import torch

    from Rad4XCNNLogic.features.backbones import resolve_device
    from Rad4XCNNLogic.features.preprocessing import is_out_of_memory, preprocess_case

    started = time.perf_counter()
    names = check_methods(methods)
    if int(batch_size) < 1:
        raise Rad4XCNNError(f"batch size must be at least 1, got {batch_size}")
    if not 0.0 < float(top_fraction) < 1.0:
        raise Rad4XCNNError(f"top fraction must be between 0 and 1, got {top_fraction}")
    if float(pointing_tolerance) < 0:
        raise Rad4XCNNError(f"pointing tolerance must be non-negative, got {pointing_tolerance}")
    all_cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
    failures: list[CaseFailure] = []
    if cases is not None:
        wanted = [
            c.strip() for c in (cases.split(",") if isinstance(cases, str) else cases) if str(c).strip()
        ]
        by_id = {c.case_id: c for c in all_cases}
        known_failed = {f.case_id for f in (cohort.failures if isinstance(cohort, Cohort) else [])}
        unknown = [c for c in wanted if c not in by_id and c not in known_failed]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(by_id), n=3)
            hint = f" (closest ids: {', '.join(close)})" if close else ""
            raise Rad4XCNNError(f"case id(s) not in the manifest: {', '.join(unknown[:5])}{hint}")
        for c in wanted:
            if c in known_failed and c not in by_id:
                failures.append(CaseFailure(c, STAGE, "left out when the manifest was read"))
        all_cases = [by_id[c] for c in dict.fromkeys(wanted) if c in by_id]
    if not all_cases:
        raise Rad4XCNNError("no case to compute saliency maps for")

    loaded_model = _load_model(checkpoint, model, seed)
    config = loaded_model.preprocess
    dev = resolve_device(device)
    net = loaded_model.net.eval().to(dev)
    n_out = int(getattr(net, "num_classes", len(loaded_model.class_names)) or 0)
    needs_head = [m for m in names if METHODS[m].class_specific]
    if n_out == 0 and needs_head:
        raise Rad4XCNNError(
            f"{loaded_model.name} has no classifier head, so {', '.join(needs_head)} have no class to "
            "explain; give a checkpoint of 'rad4xcnn train', or use eigencam only"
        )
    if not loaded_model.task_classifier:
        log.warning(
            "%s has no classifier trained for the task (not a checkpoint of 'rad4xcnn train'): the maps "
            "explain its %s classifier and are not meaningful for the task",
            loaded_model.name,
            {"imagenet": "ImageNet", "random": "randomly initialised"}.get(
                str(loaded_model.weights.get("source")), "own"
            ),
        )
    target_index = _target_index(target_class, loaded_model.class_names)
    layer = resolve_target_layer(net, target_layer, config.input_size)
    channels, feature_grid = _probe_layer(net, layer, config.input_size, dev)
    if "scorecam" in names:
        log.info(
            "ScoreCAM: %d forward passes per case (one per channel of %s), %d at a time",
            channels,
            layer.name,
            batch_size,
        )
    keep = (out_dir is None) if keep_maps is None else bool(keep_maps)

    metric_rows: list[dict] = []
    agreement: list[dict] = []
    maps_kept: dict[tuple[str, str], np.ndarray] = {}
    files: dict[tuple[str, str], dict[str, Path]] = {}
    case_map = {c.case_id: c for c in all_cases}
    crops: dict[str, SquareCrop] = {}
    method_seconds = dict.fromkeys(names, 0.0)
    mapped = 0

    def run_method(method: str, x: torch.Tensor, targets: list, ids: list[str]) -> np.ndarray:
        """Maps on the model input, ``(B, H, W)``; halves the batch on out-of-memory."""
        try:
            cam = _make_cam(method, net, layer, batch_size, progress)
            try:
                if method == "scorecam":
                    cam.case_ids = list(ids)
                if METHODS[method].uses_gradients:
                    with torch.enable_grad():
                        return cam(x.clone().requires_grad_(True), targets)
                with torch.no_grad():
                    return cam(x, targets)
            finally:
                cam.activations_and_grads.release()
        except Exception as exc:
            if not is_out_of_memory(exc) or len(x) == 1:
                raise
            del exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(x) // 2
            log.warning("%s: out of memory on %s with %d images; retrying by halves", method, dev, len(x))
            return np.concatenate(
                [
                    run_method(method, x[:half], targets[:half], ids[:half]),
                    run_method(method, x[half:], targets[half:], ids[half:]),
                ]
            )

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    chunks = [all_cases[i : i + batch_size] for i in range(0, len(all_cases), batch_size)]
    desc = f"CAMs ({', '.join(names)})"
    for chunk in track(chunks, desc=desc, stage=STAGE, enabled=progress, unit="batch"):
        batch_loaded: list[LoadedCase] = []
        inputs = []
        for case in chunk:
            try:
                loaded = case.load()
                x, crop = preprocess_case(loaded, config)
            except CaseError as exc:
                failures.append(CaseFailure(case.case_id, STAGE, exc.problem))
                log.warning("%s", exc)
                continue
            except (ValueError, OSError, RuntimeError, MemoryError) as exc:
                problem = f"preprocessing failed: {type(exc).__name__}: {first_line(exc, 200)}"
                failures.append(CaseFailure(case.case_id, STAGE, problem))
                log.warning("case %s: %s", case.case_id, problem)
                continue
            batch_loaded.append(loaded)
            inputs.append(x)
            crops[case.case_id] = crop
        if not batch_loaded:
            continue
        ids = [lc.case_id for lc in batch_loaded]
        x = torch.stack(inputs).to(dev)
        if n_out > 0:
            with torch.no_grad():
                probs = torch.softmax(net(x).float(), dim=1).cpu().numpy()
            predicted = probs.argmax(axis=1)
            chosen = predicted if target_index is None else np.full(len(ids), target_index)
            targets = [ClassifierOutputTarget(int(i)) for i in chosen]
        else:  # a feature extractor: only class-agnostic methods (EigenCAM) got this far
            probs = predicted = chosen = None
            targets = [None] * len(ids)

        input_maps: dict[str, np.ndarray] = {}
        bad_methods: dict[str, str] = {}
        for method in names:
            t0 = time.perf_counter()
            try:
                input_maps[method] = np.asarray(run_method(method, x, targets, ids), dtype=np.float32)
            except Rad4XCNNError:
                raise
            except Exception as exc:  # one method failing on a batch must not lose the others
                bad_methods[method] = f"{method} failed: {type(exc).__name__}: {first_line(exc, 200)}"
                log.warning("%s on cases %s: %s", method, ", ".join(ids), bad_methods[method])
            method_seconds[method] += time.perf_counter() - t0
        for problem in bad_methods.values():
            failures.extend(CaseFailure(case_id, STAGE, problem) for case_id in ids)

        for row, loaded in enumerate(batch_loaded):
            case = loaded.case
            crop = crops[case.case_id]
            image_maps = {m: map_to_image(v[row], crop) for m, v in input_maps.items()}
            mask = loaded.mask if case.has_lesion else None
            for method, cam in image_maps.items():
                metric_rows.append(
                    {
                        "case_id": case.case_id,
                        "method": method,
                        "label": case.label,
                        "has_lesion": bool(case.has_lesion),
                        **_class_fields(loaded_model.class_names, probs, predicted, chosen, row),
                        **map_metrics(cam, mask, crop, pointing_tolerance),
                    }
                )
                mapped += 1
            agreement.extend(
                {"case_id": case.case_id, **r} for r in agreement_rows(image_maps, crop, top_fraction)
            )
            if out_dir is not None and image_maps:
                written = write_case_maps(out_dir, loaded, image_maps, crop, config.intensity)
                files.update({(case.case_id, m): p for m, p in written.items()})
            if keep:
                maps_kept.update({(case.case_id, m): v for m, v in image_maps.items()})

    if not metric_rows and failures:
        raise Rad4XCNNError(f"no saliency map: all {len(all_cases)} cases failed (first: {failures[0]})")
    metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    metrics["pointing_hit"] = metrics["pointing_hit"].astype("Float64").round().astype("Int8")
    metrics["peak_row"] = metrics["peak_row"].astype("Int64")
    metrics["peak_col"] = metrics["peak_col"].astype("Int64")
    agreement_frame = pd.DataFrame(
        agreement, columns=["case_id", "method_a", "method_b", "spearman", iou_column(top_fraction)]
    )
    n_cases = metrics["case_id"].nunique()
    from importlib.metadata import PackageNotFoundError, version

    import timm

    try:
        grad_cam_version = version("grad-cam")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        grad_cam_version = None
    settings = {
        "model": loaded_model.name,
        "weights": loaded_model.weights,
        "task_classifier": loaded_model.task_classifier,
        "class_names": loaded_model.class_names if len(loaded_model.class_names) <= 50 else None,
        "target_class": None if target_index is None else loaded_model.class_names[target_index],
        "target_layer": layer.name,
        "target_layer_family": layer.family,
        "target_layer_channels": channels,
        "target_layer_grid": list(feature_grid),
        "token_reshape": {"prefix_tokens": layer.prefix_tokens, "grid": list(layer.grid)}
        if layer.tokens
        else None,
        "methods": {m: METHODS[m].description for m in names},
        "scorecam_forward_passes_per_case": channels if "scorecam" in names else None,
        "map_scale": "each map is min-max scaled to [0, 1] on the model input by pytorch-grad-cam, then "
        "mapped back onto the image (bilinear), 0 outside the crop",
        "device": str(dev),
        "batch_size": int(batch_size),
        "pointing_tolerance": float(pointing_tolerance),
        "top_fraction": float(top_fraction),
        "preprocess": config.to_dict(),
        "cases": n_cases,
        "maps": mapped,
        "failed": len(failures),
        "seconds": round(time.perf_counter() - started, 3),
        "seconds_per_case": {
            m: (round(s / n_cases, 4) if n_cases else None) for m, s in method_seconds.items()
        },
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "grad-cam": grad_cam_version},
    }
    log.info(
        "CAMs: %d cases x %d methods (%s, layer %s, %s), %d failed, %.1f s",
        n_cases,
        len(names),
        loaded_model.name,
        layer.name,
        dev,
        len(failures),
        settings["seconds"],
    )
    result = CamResult(metrics, agreement_frame, maps_kept, files, failures, settings, case_map, crops)
    if out_dir is not None:
        write_cams(result, out_dir, maps=False)
    return result


def write_cams(result: CamResult, out_dir: str | os.PathLike, *, maps: bool = True) -> dict[str, Path]:
    """Write a :class:`CamResult` into ``<out_dir>/cam/``, atomically.

    ``cam_metrics.csv`` and ``cam_agreement.csv`` (first column case_id; read them with
    ``pandas.read_csv(path, index_col=0)``), ``cam_run.json`` (settings and failures) and, with ``maps``,
    every map held in ``result.maps`` as ``<case_id>_<method>.nrrd`` (the image's size, spacing, origin)
    and ``<case_id>_<method>.png`` (overlay). Returns the paths of the tables.

    Examples
    --------
    >>> paths = write_cams(result, "run")  # doctest: +SKIP
    >>> pd.read_csv(paths["metrics"], index_col=0).groupby("method").pointing_hit.mean()  # doctest: +SKIP
    """
    from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic

    folder = Path(out_dir) / CAM_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    if maps and result.maps:
        by_case: dict[str, dict[str, np.ndarray]] = {}
        for (case_id, method), cam in result.maps.items():
            by_case.setdefault(case_id, {})[method] = cam
        intensity = (result.settings.get("preprocess") or {}).get("intensity", "auto")
        for case_id, case_maps in by_case.items():
            case = result.cases.get(case_id)
            if case is None:
                log.warning("case %s: its image is not known to the result; maps not written", case_id)
                continue
            written = write_case_maps(out_dir, case.load(), case_maps, result.crops.get(case_id), intensity)
            result.files.update({(case_id, m): p for m, p in written.items()})
    paths = {
        "metrics": write_csv_atomic(folder / METRICS_CSV, result.metrics, index=False),
        "agreement": write_csv_atomic(folder / AGREEMENT_CSV, result.agreement, index=False),
        "settings": write_json_atomic(
            folder / SETTINGS_JSON,
            {"settings": result.settings, "failures": [f.to_dict() for f in result.failures]},
        ),
    }
    return paths
