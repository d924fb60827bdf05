"""The CAM methods: one record per method that carries its own factory, as timm's registry does, over
pytorch-grad-cam's classes. Every CAM made here keeps its raw (unnormalised) maps, ScoreCAM runs in bounded
memory, and EigenCAM's principal component is oriented so that its sign is not an accident of the SVD.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cam.settings import DEFAULT_METHODS, METHOD_NAMES
from Rad4XCNNLogic.infra.progress import track

if TYPE_CHECKING:  # pragma: no cover - typing only
    from Rad4XCNNLogic.cam.layers import TargetLayer

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "CamMethod",
    "MapComputer",
    "first_component_projection",
    "make_cam",
    "orient_component",
]


@dataclass(frozen=True)
class CamMethod:
    """A CAM method: its name here, pytorch-grad-cam's class, what it needs, and its factory.

    ``factory(model, target_modules, reshape_transform, batch_size, progress)`` returns a ready CAM object
    (a pytorch-grad-cam ``BaseCAM``) whose ``raw_maps`` holds, after each call, the maps before the
    library's ReLU and min-max scaling, on the target layer's grid.
    """

    name: str
    library_class: str
    uses_gradients: bool
    class_specific: bool
    description: str
    factory: Callable[..., Any]

    @property
    def file_tag(self) -> str:
        """The name used in file names (``gradcam++`` -> ``gradcampp``)."""
        return self.name.replace("+", "p")

    def make(self, model, target_modules: list, reshape_transform=None, *, batch_size: int, progress=False):
        """The CAM object for ``model`` at ``target_modules`` (see the class docstring)."""
        return self.factory(model, target_modules, reshape_transform, batch_size, progress)


# ------------------------------------------------------------------------------------------ raw maps
_RAW_CLASSES: dict[str, type] = {}


class _RawMaps:
    """Mixin: keep the last call's maps as the method computed them, before ReLU and scaling.

    pytorch-grad-cam returns each map min-max scaled to [0, 1], so an all-negative, a constant and a NaN map
    cannot be told apart from its output; the sanity flags need the raw values.
    """

    raw_maps: np.ndarray | None = None

    def get_cam_image(self, *args, **kwargs):
        cam = super().get_cam_image(*args, **kwargs)
        self.raw_maps = np.array(cam, dtype=np.float32, copy=True)
        return cam


def _with_raw_maps(cls: type) -> type:
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _RAW_CLASSES:
        _RAW_CLASSES[key] = type(f"Raw{cls.__name__}", (_RawMaps, cls), {})
    return _RAW_CLASSES[key]


def _library_factory(class_name: str) -> Callable[..., Any]:
    def factory(model, target_modules, reshape_transform, batch_size, progress):
        import pytorch_grad_cam

        cls = _with_raw_maps(getattr(pytorch_grad_cam, class_name))
        return cls(model, target_modules, reshape_transform=reshape_transform)

    return factory


# ------------------------------------------------------------------------------------------ EigenCAM
def orient_component(projection: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """A first-component projection ``(h, w)`` given the sign that agrees with the mean activation.

    The SVD fixes a singular vector only up to its sign; after the ReLU a flipped component highlights the
    complement of what the layer responds to. The projection is flipped when it correlates negatively with
    the channel mean of ``activations`` ``(C, h, w)`` (where the layer is active). When that mean is flat,
    the rule of pytorch-grad-cam's sign-corrected projection decides: the larger extreme is positive.

    Examples
    --------
    >>> acts = np.zeros((2, 3, 3), np.float32); acts[:, 1, 1] = 5.0
    >>> p = np.full((3, 3), 1.0, np.float32); p[1, 1] = -8.0
    >>> float(orient_component(p, acts)[1, 1])
    8.0
    """
    projection = np.asarray(projection, dtype=np.float32)
    mean = np.asarray(activations, dtype=np.float64).mean(axis=0).ravel()
    flat = projection.astype(np.float64).ravel()
    agreement = 0.0
    if np.ptp(mean) > 0 and np.ptp(flat) > 0:
        agreement = float(np.corrcoef(flat, mean)[0, 1])
    if agreement < 0 or (agreement == 0 and abs(float(flat.min())) > abs(float(flat.max()))):
        return -projection
    return projection


def first_component_projection(activations: np.ndarray, orient: bool = True) -> np.ndarray:
    """Each image's activations ``(C, h, w)`` projected on their first principal component: ``(B, h, w)``.

    The computation of pytorch-grad-cam's ``get_2d_projection`` (centred over positions, SVD, projection
    on the first right singular vector), with the economy SVD: the library asks for the full ``C x C``
    matrix of right singular vectors and uses its first row, which costs 1.3 s per image for ResNet50's
    2048 channels on a CPU against 8 ms. With ``orient`` (the default) each projection's sign is set by
    :func:`orient_component`; without it the sign is the SVD's, as in the library.

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
        projection = (flat @ vt[0]).reshape(image.shape[1:])
        projections.append(orient_component(projection, image) if orient else projection)
    return np.float32(projections)


def _eigen_factory(name: str) -> Callable[..., Any]:
    def factory(model, target_modules, reshape_transform, batch_size, progress):
        return _eigen_class(name)(model, target_modules, reshape_transform=reshape_transform)

    return factory


_EIGEN_CLASSES: dict[str, type] = {}


def _eigen_class(name: str):
    """pytorch-grad-cam's EigenCAM / EigenGradCAM with one override, ``get_cam_image``: the economy,
    oriented SVD of :func:`first_component_projection` (raw maps kept)."""
    if name in _EIGEN_CLASSES:
        return _EIGEN_CLASSES[name]
    from pytorch_grad_cam import EigenCAM, EigenGradCAM

    class OrientedEigenCAM(EigenCAM):
        def get_cam_image(
            self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth
        ):
            return first_component_projection(activations)

    class OrientedEigenGradCAM(EigenGradCAM):
        def get_cam_image(
            self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth
        ):
            return first_component_projection(grads * activations)

    _EIGEN_CLASSES.update(
        eigencam=_with_raw_maps(OrientedEigenCAM), eigengradcam=_with_raw_maps(OrientedEigenGradCAM)
    )
    return _EIGEN_CLASSES[name]


# ------------------------------------------------------------------------------------------ ScoreCAM
_SCORECAM_CLASS = None


def _scorecam_factory(model, target_modules, reshape_transform, batch_size, progress):
    return _scorecam_class()(
        model, target_modules, reshape_transform, batch_size=batch_size, progress=progress
    )


def _scorecam_class():
    """pytorch-grad-cam's ScoreCAM with one override, ``get_cam_weights``, for bounded memory.

    The library builds every masked input of a batch at once (``images x channels x 3 x H x W``: 1.2 GB
    per image for ResNet50 at 224 px), records the target layer's activations of every masked forward
    pass, draws a tqdm bar per image, and upsamples in 2D only. Here the masked inputs are built
    ``batch_size`` channels at a time, the activation hooks are paused while scoring, progress goes through
    :func:`Rad4XCNNLogic.infra.progress.track`, and a 3D network's activations are upsampled trilinearly
    onto its cube. The weights are the same: the softmax over channels of the target score of the input
    multiplied by each channel's upsampled, min-max normalised activation.
    """
    global _SCORECAM_CLASS
    if _SCORECAM_CLASS is not None:
        return _SCORECAM_CLASS
    import torch
    from pytorch_grad_cam import ScoreCAM

    class BatchedScoreCAM(_RawMaps, ScoreCAM):
        def __init__(self, model, target_layers, reshape_transform=None, *, batch_size, progress=False):
            super().__init__(model, target_layers, reshape_transform=reshape_transform)
            self.batch_size = max(1, int(batch_size))
            self.progress = bool(progress)
            self.case_ids: list[str] = []

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            activations_t = torch.as_tensor(activations, device=self.device)
            n_images, n_channels = activations_t.shape[:2]
            size = input_tensor.shape[2:]  # (H, W), or (D, H, W) for a 3D network's cubes
            mode = "trilinear" if len(size) == 3 else "bilinear"
            spread = (slice(None),) + (None,) * len(size)  # a value per channel over its grid
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
                        up = torch.nn.functional.interpolate(chunk, size=size, mode=mode, align_corners=True)
                        up = up[0]
                        flat = up.reshape(up.shape[0], -1)
                        low, high = flat.min(dim=1).values, flat.max(dim=1).values
                        up = (up - low[spread]) / (high - low + 1e-8)[spread]
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


# ------------------------------------------------------------------------------------------ registry
def _method(name, library_class, uses_gradients, class_specific, description, factory=None) -> CamMethod:
    return CamMethod(
        name,
        library_class,
        uses_gradients,
        class_specific,
        description,
        factory or _library_factory(library_class),
    )


_IMPLEMENTATIONS = {
    m.name: m
    for m in (
        _method(
            "gradcam", "GradCAM", True, True, "channels weighted by their mean gradient (Selvaraju 2017)"
        ),
        _method(
            "gradcam++", "GradCAMPlusPlus", True, True, "higher-order gradient weights (Chattopadhay 2018)"
        ),
        _method("xgradcam", "XGradCAM", True, True, "axiom-based gradient weights (Fu 2020)"),
        _method("hirescam", "HiResCAM", True, True, "gradient times activation, element-wise (Draelos 2020)"),
        _method("layercam", "LayerCAM", True, True, "positive gradients times activations (Jiang 2021)"),
        _method(
            "eigencam",
            "EigenCAM",
            False,
            False,
            "first principal component of the activations, oriented to agree with the mean activation; "
            "ignores the class (Muhammad 2020)",
            _eigen_factory("eigencam"),
        ),
        _method(
            "eigengradcam",
            "EigenGradCAM",
            True,
            True,
            "first principal component of gradient x activation, oriented likewise",
            _eigen_factory("eigengradcam"),
        ),
        _method(
            "scorecam",
            "ScoreCAM",
            False,
            True,
            "channels weighted by the class score of the input masked by each channel (Wang 2020); one "
            "forward pass per channel",
            _scorecam_factory,
        ),
    )
}
#: The methods, in the order of :data:`~Rad4XCNNLogic.cam.settings.METHOD_NAMES` (which owns their names).
METHODS: dict[str, CamMethod] = {name: _IMPLEMENTATIONS[name] for name in METHOD_NAMES}


def make_cam(method: str, model, layer, *, batch_size: int, progress: bool = False):
    """The CAM object of ``method`` for ``model`` at ``layer``, with the layer's token reshape.

    ``layer`` is a :class:`~Rad4XCNNLogic.cam.layers.TargetLayer`.
    """
    from Rad4XCNNLogic.cam.layers import ActivationTransform

    transform = ActivationTransform(layer.prefix_tokens, layer.grid)
    return METHODS[method].make(model, [layer.module], transform, batch_size=batch_size, progress=progress)


@dataclass
class MapComputer:
    """Computes one method's maps of a batch: ``(scaled (B, H, W), raw (B, h, w))``.

    ``computer(method, net, layer, x, targets, ids)``: gradient methods run with gradients enabled on a copy
    of ``x``, the others without; on out-of-memory the batch is halved and retried. ``batch_size`` and
    ``progress`` go to ScoreCAM.
    """

    batch_size: int
    progress: bool
    device: Any

    def __call__(self, method: str, net, layer: TargetLayer, x, targets, ids=None):
        import torch

        from Rad4XCNNLogic.features.preprocessing import is_out_of_memory

        ids = list(ids) if ids is not None else [str(i) for i in range(len(x))]
        try:
            cam = make_cam(method, net, layer, batch_size=self.batch_size, progress=self.progress)
            try:
                if method == "scorecam":
                    cam.case_ids = ids
                if METHODS[method].uses_gradients:
                    with torch.enable_grad():
                        scaled = cam(x.clone().requires_grad_(True), targets)
                else:
                    with torch.no_grad():
                        scaled = cam(x, targets)
                raw = cam.raw_maps if cam.raw_maps is not None else scaled
                return np.asarray(scaled, np.float32), np.asarray(raw, np.float32)
            finally:
                cam.activations_and_grads.release()
        except Exception as exc:
            if not is_out_of_memory(exc) or len(x) == 1:
                raise
            del exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(x) // 2
            log.warning(
                "%s: out of memory on %s with %d images; retrying by halves", method, self.device, len(x)
            )
            first = self(method, net, layer, x[:half], targets[:half], ids[:half])
            second = self(method, net, layer, x[half:], targets[half:], ids[half:])
            return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])

    def scaled(self, method: str, net, layer: TargetLayer, x, targets) -> np.ndarray:
        """Only the scaled maps (the randomisation test compares those)."""
        return self(method, net, layer, x, targets)[0]
