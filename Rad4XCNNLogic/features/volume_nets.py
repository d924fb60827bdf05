"""Native 3D backbones for volumes: MONAI's 3D ResNets and DenseNet121 behind timm's interface.

The 2D backbones come from timm; timm has no 3D network. MONAI (Project MONAI, Apache-2.0) is the
PyTorch toolkit of medical imaging: its wheel is pure Python and needs only torch and numpy, its 3D ResNets
are MedicalNet's (Chen et al. 2019, pre-trained on 23 CT and MR segmentation sets), so MedicalNet's weight
files load into them, and Slicer's MONAI extensions use it already. It is an optional extra
(``pip install 'rad4xcnn[volumes3d]'``): nothing else of Rad4XCNN needs it.

A network named ``monai_<name>`` (:data:`VOLUME_NETS`) is built with one input channel (grey) and wrapped in
the few methods the engine calls on a timm model: ``forward_features`` (the last feature map),
``forward_head(..., pre_logits=True)`` (its global average), ``forward_intermediates`` and ``feature_info``
(layer-wise features, probes), ``reset_classifier`` (fine-tuning) and ``pretrained_cfg`` (the classifier's
name and the default input: a cube of 64 voxels a side, grey values in [0, 1] as they are, mean 0 and
std 1). The parameter names are MONAI's own, so a MONAI or MedicalNet state dict loads as it is
(MedicalNet's segmentation decoder, ``conv_seg``, is left out). The ResNets take MedicalNet's shortcut and
down-sampling choices for their depth and a first convolution of stride 2, as MedicalNet does.
"""

from __future__ import annotations

import functools
from typing import Any

from Rad4XCNNLogic.errors import Rad4XCNNError

#: The 3D networks by name: MONAI's builder and its arguments besides the channels and classes.
VOLUME_NETS: dict[str, tuple[str, int | None]] = {
    "monai_resnet10": ("resnet", 10),
    "monai_resnet18": ("resnet", 18),
    "monai_resnet34": ("resnet", 34),
    "monai_resnet50": ("resnet", 50),
    "monai_densenet121": ("densenet", None),
}
#: The default input of a 3D network: a cube of this many voxels a side.
CUBE_SIZE = 64
#: Keys of a MedicalNet file that belong to its segmentation decoder, not to the encoder.
_DECODER_PREFIXES = ("conv_seg.",)


def is_volume_net(name: str | None) -> bool:
    """Whether ``name`` (a ``.tag`` part aside) names a native 3D network; reads no library.

    >>> is_volume_net("monai_resnet18"), is_volume_net("resnet18")
    (True, False)
    """
    return str(name or "").split(".")[0] in VOLUME_NETS


def check_images(name: str, volumes: bool) -> None:
    """Refuse, in one line, a native 3D network given 2D images (``volumes`` false); the rule of every stage.

    >>> check_images("resnet18", volumes=False)  # a 2D network runs on either
    >>> check_images("monai_resnet18", volumes=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    Rad4XCNNLogic.errors.Rad4XCNNError: monai_resnet18 is a 3D network and the cohort holds 2D images; ...
    """
    if is_volume_net(name) and not volumes:
        raise Rad4XCNNError(f"{name} is a 3D network and the cohort holds 2D images; give a 2D (timm) model")


def check_volume_net(name: str) -> str:
    """``name`` if it is a 3D network and MONAI is installed; else a one-line error that says what to do."""
    import difflib

    base = str(name).strip()
    if "." in base:
        raise Rad4XCNNError(f"{base!r}: a 3D network has no pretrained tags; give {base.split('.')[0]}")
    if base not in VOLUME_NETS:
        close = difflib.get_close_matches(base, list(VOLUME_NETS), n=3, cutoff=0.5)
        hint = ", ".join(close or VOLUME_NETS)
        raise Rad4XCNNError(f"unknown 3D network {base!r}; the 3D networks are: {hint}")
    try:
        import monai  # noqa: F401
    except ImportError:
        raise Rad4XCNNError(
            f"{base} is a MONAI network: install it with pip install 'rad4xcnn[volumes3d]' (monai)"
        ) from None
    return base


def default_cfg(name: str, num_classes: int = 0) -> dict[str, Any]:
    """What timm's ``pretrained_cfg`` says of a model, for a 3D network: the input and the classifier."""
    kind, _ = VOLUME_NETS[str(name).split(".")[0]]
    return {
        "input_size": (1, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE),
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "interpolation": "bilinear",
        "classifier": "fc" if kind == "resnet" else "class_layers.out",
        "num_classes": int(num_classes),
        "fixed_input_size": False,
    }


def create(name: str, num_classes: int):
    """A 3D network (random weights from torch's current RNG), in eval mode."""
    name = check_volume_net(name)
    kind, depth = VOLUME_NETS[name]
    resnet_class, densenet_class = _classes()
    net = resnet_class(name, depth, num_classes) if kind == "resnet" else densenet_class(name, num_classes)
    return net.eval()


def checkpoint_filter_fn(state_dict: dict, model) -> dict:
    """A MedicalNet file as an encoder's state dict: its segmentation decoder left out."""
    return {k: v for k, v in state_dict.items() if not k.startswith(_DECODER_PREFIXES)}


def _last_norm_width(module) -> int:
    """The channels a block gives: the width of its last normalisation layer."""
    widths = [m.num_features for m in module.modules() if hasattr(m, "num_features")]
    return int(widths[-1])


class _TimmFace:
    """timm's interface over a 3D network's stem, its stages and its classifier (see the module's text)."""

    def _init_face(self, name: str, num_classes: int, stages: list[tuple[str, int, int]]) -> None:
        self.model_name = name
        self.feature_info = [
            {"module": module, "num_chs": channels, "reduction": reduction}
            for module, channels, reduction in stages
        ]
        self.num_features = int(stages[-1][1])
        self.num_classes = int(num_classes)
        self.pretrained_cfg = default_cfg(name, num_classes)
        self.default_cfg = self.pretrained_cfg
        self.reset_classifier(num_classes)

    def _classifier(self, num_classes: int):
        import torch

        return torch.nn.Linear(self.num_features, num_classes) if num_classes else torch.nn.Identity()

    def forward_intermediates(
        self, x, indices=None, intermediates_only: bool = False, stop_early: bool = False
    ):
        """The feature maps of the stages ``indices`` (all: None) and, unless ``intermediates_only``, the
        last feature map too, as timm returns them."""
        n = len(self.feature_info)
        wanted = set(range(n)) if indices is None else {int(i) % n for i in indices}
        out = []
        last = max(wanted) if stop_early and intermediates_only else n - 1
        for index, maps in enumerate(self._stages(x)):
            if index in wanted:
                out.append(maps)
            if index == last:
                break
        if intermediates_only:
            return out
        return self._finish(maps), out

    def forward_features(self, x):
        maps = x
        for maps in self._stages(x):  # noqa: B007 - the last stage's maps are the features
            pass
        return self._finish(maps)

    def forward_head(self, x, pre_logits: bool = False):
        pooled = x.mean(dim=tuple(range(2, x.ndim)))
        return pooled if pre_logits else self.get_classifier()(pooled)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@functools.cache
def _classes():
    """The two network classes, made on first use: the module itself imports no MONAI."""
    import torch
    from monai.networks.nets import densenet, resnet

    class ResNet3D(_TimmFace, resnet.ResNet):
        def __init__(self, name: str, depth: int, num_classes: int):
            layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
            block = "bottleneck" if depth >= 50 else "basic"
            bias_downsample, shortcut = resnet.get_medicalnet_pretrained_resnet_args(depth)
            resnet.ResNet.__init__(
                self,
                block,
                layers,
                [64, 128, 256, 512],
                spatial_dims=3,
                n_input_channels=1,
                conv1_t_size=7,
                conv1_t_stride=2,
                shortcut_type=shortcut,
                bias_downsample=bias_downsample,
                feed_forward=False,
            )
            stages = [
                (f"layer{k}", _last_norm_width(getattr(self, f"layer{k}")), 2 ** (k + 1)) for k in range(1, 5)
            ]
            self._init_face(name, num_classes, stages)

        def _stages(self, x):
            x = self.act(self.bn1(self.conv1(x)))
            if not self.no_max_pool:
                x = self.maxpool(x)
            for k in range(1, 5):
                x = getattr(self, f"layer{k}")(x)
                yield x

        def _finish(self, maps):
            return maps

        def get_classifier(self):
            return self.fc

        def reset_classifier(self, num_classes: int) -> None:
            self.fc = self._classifier(int(num_classes))
            self.num_classes = int(num_classes)
            self.pretrained_cfg = self.default_cfg = {**self.pretrained_cfg, "num_classes": int(num_classes)}

    class DenseNet3D(_TimmFace, densenet.DenseNet121):
        _POINTS = ("denseblock1", "denseblock2", "denseblock3", "norm5")

        def __init__(self, name: str, num_classes: int):
            densenet.DenseNet121.__init__(self, spatial_dims=3, in_channels=1, out_channels=1)
            # a dense block's output width is the input width of the transition after it (norm5's last)
            after = {"denseblock1": "transition1", "denseblock2": "transition2", "denseblock3": "transition3"}
            stages = []
            for k, point in enumerate(self._POINTS):
                module = getattr(self.features, after.get(point, point))
                width = int(module.norm.num_features if point in after else module.num_features)
                stages.append((f"features.{point}", width, 2 ** (k + 2)))
            self.class_layers = torch.nn.Sequential()
            self._init_face(name, num_classes, stages)

        def _stages(self, x):
            for child_name, child in self.features.named_children():
                x = child(x)
                if child_name in self._POINTS:
                    yield x

        def _finish(self, maps):
            return torch.nn.functional.relu(maps)

        def get_classifier(self):
            return self.class_layers.out

        def reset_classifier(self, num_classes: int) -> None:
            self.class_layers = torch.nn.Sequential()
            self.class_layers.add_module("out", self._classifier(int(num_classes)))
            self.num_classes = int(num_classes)
            self.pretrained_cfg = self.default_cfg = {**self.pretrained_cfg, "num_classes": int(num_classes)}

    return ResNet3D, DenseNet3D
