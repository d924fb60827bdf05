"""The layer a saliency map explains: a default per architecture family or any named module, and the
reshape of a transformer's tokens to a patch grid that pytorch-grad-cam is given.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from Rad4XCNNLogic.errors import Rad4XCNNError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "ActivationTransform",
    "TargetLayer",
    "default_target_layer",
    "layer_candidates",
    "probe_layer",
    "resolve_target_layer",
]


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


def probe_layer(
    net, layer: TargetLayer, size: int, device, *, volume: bool = False
) -> tuple[int, tuple[int, ...]]:
    """Run one blank input and check the target layer gives a feature map: ``(channels, grid)``, the grid
    ``(h, w)``, or ``(d, h, w)`` for a 3D network (``volume``: a one-channel cube of ``size`` a side)."""
    import torch

    seen: list[Any] = []
    shape = (1, 1, size, size, size) if volume else (1, 3, size, size)
    handle = layer.module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            net(torch.zeros(*shape, device=device))
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
    if shaped.ndim != len(shape):
        what = "(batch, channels, depth, height, width)" if volume else "(batch, channels, height, width)"
        raise Rad4XCNNError(
            f"target layer {layer.name} gives outputs of shape {tuple(out.shape)}, not a feature map "
            f"{what}; name a convolutional stage or a transformer block"
        )
    return int(shaped.shape[1]), tuple(int(n) for n in shaped.shape[2:])
