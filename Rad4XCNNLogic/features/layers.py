"""Intermediate layers of a timm backbone as deep features: the layers a model offers (timm's
``feature_info``), their names checked, and one forward pass (``forward_intermediates``) that pools each.

A CNN layer's feature map is globally average pooled. A ViT block gives its CLS token where the model has
one (as the paper's pre-logits ViT features do), else the mean of its patch tokens. The pseudo-layer
``pre_logits`` is the backbone's usual feature vector (``forward_head(..., pre_logits=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.names import FINAL_LAYER

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch


@dataclass(frozen=True)
class Layer:
    """One layer to pool: its name, its index in ``feature_info`` (None: pre-logits) and its width."""

    name: str
    index: int | None
    channels: int


def model_layers(model) -> list[str]:
    """The names of the layers a timm model gives features from (``feature_info`` modules), then
    ``pre_logits``.

    Examples
    --------
    >>> import timm  # doctest: +SKIP
    >>> model_layers(timm.create_model("resnet18", num_classes=0))  # doctest: +SKIP
    ['act1', 'layer1', 'layer2', 'layer3', 'layer4', 'pre_logits']
    """
    info = getattr(model, "feature_info", None) or []
    return [str(f["module"]) for f in info] + [FINAL_LAYER]


def _pre_logits_width(model) -> int:
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def resolve_layers(model, name: str, layers: Sequence[str]) -> list[Layer]:
    """The layers ``layers`` of ``model`` (named ``name`` in messages), in the order given; an unknown or
    repeated name fails with one line that lists the model's layers.

    Examples
    --------
    >>> [l.index for l in resolve_layers(resnet18, "resnet18", ["layer2", "pre_logits"])]  # doctest: +SKIP
    [2, None]
    """
    layers = [str(layer).strip() for layer in layers]
    if not layers:
        raise Rad4XCNNError(f"no layer named for {name}; its layers are {', '.join(model_layers(model))}")
    info = list(getattr(model, "feature_info", None) or [])
    by_name = {str(f["module"]): i for i, f in enumerate(info)}
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise Rad4XCNNError(f"layer {repeated[0]!r} of {name} is named twice")
    unknown = [layer for layer in layers if layer not in by_name and layer != FINAL_LAYER]
    if unknown:
        raise Rad4XCNNError(
            f"{name} has no layer {unknown[0]!r}; its layers are {', '.join(model_layers(model))}"
        )
    if any(layer != FINAL_LAYER for layer in layers) and not hasattr(model, "forward_intermediates"):
        raise Rad4XCNNError(
            f"{name} does not expose intermediate layers through timm (forward_intermediates)"
        )
    out = []
    for layer in layers:
        if layer == FINAL_LAYER:
            out.append(Layer(layer, None, _pre_logits_width(model)))
        else:
            out.append(Layer(layer, by_name[layer], int(info[by_name[layer]]["num_chs"])))
    return out


def _has_cls_token(model) -> bool:
    return getattr(model, "cls_token", None) is not None and int(getattr(model, "num_prefix_tokens", 0)) > 0


def pooled_layers(model, x: torch.Tensor, layers: Sequence[Layer]) -> torch.Tensor:
    """The pooled features of every layer of ``layers`` for the batch ``x``, side by side in their order:
    ``(batch, sum of the layers' widths)``, from one forward pass.

    Feature maps ``(B, C, H, W)`` are averaged over H and W; a ViT block gives its CLS token when the
    model has one (``return_prefix_tokens``), else the mean of its patch tokens.
    """
    indices = sorted({layer.index for layer in layers if layer.index is not None})
    final = any(layer.index is None for layer in layers)
    by_index: dict[int, torch.Tensor] = {}
    pre_logits = None
    if indices:
        cls = _has_cls_token(model)
        kwargs = {"return_prefix_tokens": True} if cls else {}
        if final:
            last, inter = model.forward_intermediates(x, indices=indices, **kwargs)
            pre_logits = model.forward_head(last, pre_logits=True)
        else:
            inter = model.forward_intermediates(
                x, indices=indices, intermediates_only=True, stop_early=True, **kwargs
            )
        for index, out in zip(indices, inter, strict=True):
            by_index[index] = out[1][:, 0] if cls else _pool(out)
    elif final:
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    parts = [pre_logits.flatten(1) if layer.index is None else by_index[layer.index] for layer in layers]
    import torch

    return torch.cat(parts, dim=1)


def _pool(out: torch.Tensor) -> torch.Tensor:
    if out.ndim >= 4:  # (B, C, H, W), or (B, C, D, H, W) of a 3D network
        return out.mean(dim=tuple(range(2, out.ndim)))
    if out.ndim == 3:  # tokens (B, N, C) from a model without NCHW intermediates
        return out.mean(dim=1)
    return out.flatten(1)
