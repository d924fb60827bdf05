"""The model a saliency map explains: loaded from a checkpoint of ``rad4xcnn train``, a backbone, or a timm
name, with its class names; and the class each case's maps explain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features.settings import IMAGENET, weights_kind

if TYPE_CHECKING:  # pragma: no cover - typing only
    from Rad4XCNNLogic.features.backbones import PreprocessConfig

__all__ = ["CamModel", "class_fields", "load_cam_model", "target_index_of"]


@dataclass
class CamModel:
    """The network a CAM explains, with its preprocessing, class names and where its weights came from."""

    net: Any
    name: str
    preprocess: PreprocessConfig
    class_names: list[str]
    task_classifier: bool
    weights: dict


def load_cam_model(checkpoint, model: str | None, seed: int) -> CamModel:
    """The network of a checkpoint (path, :class:`Backbone`, :class:`LoadedCheckpoint`) or of a timm name
    (random or ImageNet weights); bad input is a one-line :class:`Rad4XCNNError`."""
    from Rad4XCNNLogic.features.backbones import Backbone, LoadedCheckpoint, build_backbone, model_default_cfg

    if isinstance(checkpoint, LoadedCheckpoint):
        meta = checkpoint.metadata
        names = [str(c) for c in meta.get("class_names") or []]
        return CamModel(
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
        if checkpoint is not None and weights_kind(str(checkpoint)) != IMAGENET:
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
    return CamModel(net, backbone.name, backbone.preprocess, names, task, backbone.weights.to_dict())


def target_index_of(target_class: str | int | None, class_names: list[str]) -> int | None:
    """The index of a class given by name or index (None stays None: each case's predicted class)."""
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


def class_fields(class_names, probs, predicted, chosen, row: int) -> dict[str, Any]:
    """The target class, predicted class and target probability of one row of a batch."""
    if probs is None:
        return {"target_class": None, "predicted_class": None, "target_probability": float("nan")}
    return {
        "target_class": class_names[int(chosen[row])],
        "predicted_class": class_names[int(predicted[row])],
        "target_probability": float(probs[row, int(chosen[row])]),
    }
