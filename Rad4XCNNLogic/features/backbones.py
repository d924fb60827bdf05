"""Backbones by timm name: creation, weights, the checkpoint format, preprocessing settings and devices.

Every architecture is reached through timm's uniform API (``create_model``, ``forward_features``,
``forward_head(pre_logits=True)``, ``forward_intermediates``), never through per-architecture code. A
backbone's weights come from timm's ImageNet release, from a local file (a timm or torchvision state dict,
or a checkpoint written by ``rad4xcnn train``), or from a seeded random initialisation that the run reports.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from Rad4XCNNLogic.errors import Rad4XCNNError, first_line
from Rad4XCNNLogic.features.settings import DTYPES, IMAGENET, check_device_name

#: torch's weights-only refusal puts its reason on a later line of its message
_WEIGHTS_ONLY_REASON = "WeightsUnpickler error"

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rad4xcnn-checkpoint"
CHECKPOINT_VERSION = 1
INTENSITY_MODES = ("auto", "uint8", "minmax", "unit")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


# ------------------------------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class PreprocessConfig:
    """How a case becomes a model input; stored in every checkpoint so extraction and CAMs reuse it.

    The steps: grey intensities scaled to [0, 1] (``intensity``), a square crop around the lesion grown by
    ``margin`` of its longer side on each side (padded with 0 past the image border), resized to
    ``input_size`` with ``interpolation``, copied to 3 channels and normalised with ``mean`` / ``std``.

    ``intensity``: ``auto`` divides by 255 when the image's values lie in [0, 255] (8-bit images such as
    BUSI's PNGs), keeps images already in [0, 1], and otherwise scales each image's min..max to [0, 1];
    ``uint8`` always divides by 255; ``minmax`` always scales min..max; ``unit`` keeps the values.
    A crop with fewer than ``min_crop`` pixels inside the image on either side is refused as too small.

    Examples
    --------
    >>> cfg = PreprocessConfig.for_model("resnet50", margin=0.2)  # doctest: +SKIP
    >>> cfg.input_size, cfg.mean  # doctest: +SKIP
    (224, (0.485, 0.456, 0.406))
    """

    model_name: str
    input_size: int = 224
    margin: float = 0.1
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    intensity: str = "auto"
    min_crop: int = 8

    def __post_init__(self) -> None:
        if int(self.input_size) < 8:
            raise Rad4XCNNError(f"input size must be at least 8 pixels, got {self.input_size}")
        if not (0.0 <= float(self.margin) <= 5.0):
            raise Rad4XCNNError(f"margin must be between 0 and 5 (of the lesion size), got {self.margin}")
        if self.interpolation not in _INTERPOLATIONS:
            raise Rad4XCNNError(
                f"unknown interpolation {self.interpolation!r}; expected one of {', '.join(_INTERPOLATIONS)}"
            )
        if self.intensity not in INTENSITY_MODES:
            raise Rad4XCNNError(
                f"unknown intensity mode {self.intensity!r}; expected one of {', '.join(INTENSITY_MODES)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise Rad4XCNNError(f"mean and std must be 3 numbers (std > 0), got {self.mean} and {self.std}")

    @classmethod
    def for_model(
        cls,
        model_name: str,
        *,
        input_size: int | None = None,
        margin: float = 0.1,
        pretrained_cfg: dict | None = None,
    ) -> PreprocessConfig:
        """The model's own input size, normalisation and interpolation (timm's ``pretrained_cfg``)."""
        if pretrained_cfg is None:
            pretrained_cfg = model_default_cfg(model_name)
        size = pretrained_cfg.get("input_size") or (3, 224, 224)
        interp = pretrained_cfg.get("interpolation") or "bicubic"
        return cls(
            model_name=model_name,
            input_size=int(input_size or size[-1]),
            margin=float(margin),
            mean=_three(pretrained_cfg.get("mean") or (0.485, 0.456, 0.406)),
            std=_three(pretrained_cfg.get("std") or (0.229, 0.224, 0.225)),
            interpolation=interp if interp in _INTERPOLATIONS else "bilinear",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (a checkpoint must load with ``torch.load(weights_only=True)``)."""
        d = asdict(self)
        d["mean"], d["std"] = [float(v) for v in self.mean], [float(v) for v in self.std]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mean", "std"):
            if key in known:
                known[key] = _three(known[key])
        return cls(**known)


def _three(values) -> tuple[float, float, float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * 3
    return (values[0], values[1], values[2])


# ------------------------------------------------------------------------------------------------ devices
def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for ``auto`` (CUDA, else Apple MPS, else CPU), ``cpu``, ``cuda[:N]`` or ``mps``.

    Raises :class:`Rad4XCNNError` when the device asked for is not available on this machine.

    Examples
    --------
    >>> resolve_device("cpu")  # doctest: +SKIP
    device(type='cpu')
    """
    import torch

    text = str(device or "auto").strip().lower()
    kind = text.split(":")[0]
    problem = check_device_name(text)
    if problem:
        raise Rad4XCNNError(problem)
    mps_ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
            raise Rad4XCNNError(
                f"device {text} was asked for but CUDA is not available on this machine ({build}); "
                "use --device auto or --device cpu"
            )
        if ":" in text:
            index = int(text.split(":")[1])
            if index >= torch.cuda.device_count():
                count = torch.cuda.device_count()
                raise Rad4XCNNError(f"device {text} does not exist: this machine has {count} CUDA device(s)")
        return torch.device(text)
    if kind == "mps" and not mps_ok:
        raise Rad4XCNNError("device mps was asked for but Apple MPS is not available here; use --device auto")
    return torch.device(text)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The compute dtype: ``auto`` is bfloat16 autocast on CUDA (where supported) and float32 elsewhere."""
    import torch

    if dtype not in DTYPES:
        raise Rad4XCNNError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype != "float32" and device.type == "cpu":
        log.warning("%s on the CPU is slow and differs across machines; float32 is the default", dtype)
    return getattr(torch, dtype)


# ------------------------------------------------------------------------------------------ model names
def check_model_name(name: str) -> str:
    """Return ``name`` if timm knows it (a ``name.tag`` form is accepted), else raise with close names.

    Examples
    --------
    >>> check_model_name("resnet5O")  # doctest: +SKIP
    Rad4XCNNError: unknown model 'resnet5O'; closest timm names: resnet50, resnet50d, ...
    """
    import timm

    from Rad4XCNNLogic.features import volume_nets

    name = str(name).strip()
    if volume_nets.is_volume_net(name) or name.startswith("monai_"):
        return volume_nets.check_volume_net(name)
    if name and timm.is_model(name):
        if "." in name:  # a pretrained tag: check it exists, and name the ones that do
            try:
                timm.models.get_pretrained_cfg(name)
            except RuntimeError:
                tags = timm.list_pretrained(f"{architecture(name)}.*")
                shown = ", ".join(tags[:6]) or "none"
                raise Rad4XCNNError(f"unknown pretrained tag in {name!r}; timm has: {shown}") from None
        return name
    candidates = timm.list_models()
    base = name.split(".")[0].lower()
    close = difflib.get_close_matches(base, candidates, n=6, cutoff=0.6)
    prefixed = [c for c in candidates if base and c.startswith(base) and c not in close]
    close += prefixed[: max(0, 6 - len(close))]
    hint = f"closest timm names: {', '.join(close)}" if close else "see timm.list_models() for the names"
    raise Rad4XCNNError(f"unknown model {name!r}; {hint}")


def model_default_cfg(name: str) -> dict[str, Any]:
    """timm's default configuration of a model name (input size, mean, std, classifier...), or {}."""
    import timm

    from Rad4XCNNLogic.features import volume_nets

    if volume_nets.is_volume_net(name):
        return volume_nets.default_cfg(name)
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        return {}
    return cfg.to_dict() if cfg is not None else {}


def architecture(name: str) -> str:
    """The architecture part of a timm name (``resnet50.a1_in1k`` -> ``resnet50``), used in column names."""
    return str(name).split(".")[0]


# ------------------------------------------------------------------------------------------------ weights
@dataclass
class WeightsInfo:
    """Where a backbone's weights came from, for run.json: ``random``, ``imagenet`` or ``file``."""

    source: str
    path: str | None = None
    sha256: str | None = None
    tag: str | None = None
    seed: int | None = None
    checkpoint: bool = False

    @property
    def random_init(self) -> bool:
        return self.source == "random"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "random_init": self.random_init}


@dataclass
class Backbone:
    """A model with its preprocessing and the provenance of its weights.

    ``model`` is a timm model in eval mode on the CPU; ``class_names`` is set when it has a trained head.
    """

    model: Any
    name: str
    preprocess: PreprocessConfig
    weights: WeightsInfo
    num_classes: int = 0
    class_names: list[str] | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return architecture(self.name)


def _create(name: str, num_classes: int, input_size: int | None, seed: int, pretrained: bool = False):
    """``timm.create_model`` with a fixed seed (the caller's RNG state is left as it was)."""
    import timm
    import torch

    from Rad4XCNNLogic.features import volume_nets

    if volume_nets.is_volume_net(name):
        if pretrained:
            raise Rad4XCNNError(
                f"{name} is a 3D network without ImageNet weights: give a weights file (a MONAI or "
                "MedicalNet state dict, or a checkpoint of 'rad4xcnn train'), or fine-tune it from random "
                "weights (weights: trained)"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return volume_nets.create(name, num_classes)
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    cfg_d = model_default_cfg(name)
    default = (cfg_d.get("input_size") or (3, 224, 224))[-1]
    if input_size and int(input_size) != int(default) and cfg_d.get("fixed_input_size"):
        kwargs["img_size"] = int(input_size)  # ViTs and the like build their position embedding for a size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return model.eval()


def _head_names(model) -> tuple[str, ...]:
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (head,) if isinstance(head, str) else tuple(head)


def _is_head_key(key: str, heads: tuple[str, ...]) -> bool:
    return any(key == h or key.startswith(h + ".") for h in heads)


def _short_list(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def read_weights_file(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """Read a weights file safely: ``(state_dict, checkpoint metadata or None)``.

    Accepted: ``.safetensors``; a ``torch.save``-d state dict (also wrapped as ``{"state_dict": ...}``,
    ``{"model": ...}`` or ``{"model_state_dict": ...}``, with or without DataParallel's ``module.`` prefix);
    a checkpoint written by ``rad4xcnn train``. Files are read with ``weights_only=True``: pickled code is
    refused.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise Rad4XCNNError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip_prefix(load_file(os.fspath(path), device="cpu")), None
        except Exception as exc:
            raise Rad4XCNNError(f"cannot read weights file {path.name}: {first_line(exc)}") from None
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Rad4XCNNError(
            f"cannot read weights file {path.name} safely (only tensors and plain data are loaded, "
            f"never pickled code): {first_line(exc, prefer=_WEIGHTS_ONLY_REASON)}; "
            "save the model's state_dict() instead"
        ) from None
    meta = None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        if int(obj.get("version", 0)) > CHECKPOINT_VERSION:
            raise Rad4XCNNError(
                f"checkpoint {path.name} has format version {obj.get('version')}; this rad4xcnn reads "
                f"version {CHECKPOINT_VERSION} or older: update rad4xcnn"
            )
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj.get("state_dict")
    elif isinstance(obj, dict):
        for wrapper in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise Rad4XCNNError(
            f"weights file {path.name} does not hold a state dict (a mapping of parameter names to tensors)"
        )
    return _strip_prefix(obj), meta


def _strip_prefix(state_dict: dict) -> dict:
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_state_dict_checked(model, state_dict: dict, source: str, model_name: str) -> list[str]:
    """Load weights into ``model``, refusing a file made for another architecture.

    A classifier head whose shape differs from the model's (ImageNet's 1000 classes on a 2-class model) or
    that the model lacks (a feature extractor) is left out; any other missing, unexpected or mis-shaped key
    raises :class:`Rad4XCNNError` naming them. Returns the head keys left out.
    """
    import importlib

    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:  # timm's own converter for original-format (e.g. non-timm) weights
        try:
            state_dict = filter_fn(state_dict, model)
        except Exception as exc:
            log.debug("timm's checkpoint filter for %s did not apply: %s", model_name, exc)
    own = model.state_dict()
    heads = _head_names(model)
    dropped = [
        k
        for k, v in state_dict.items()
        if _is_head_key(k, heads) and (k not in own or tuple(own[k].shape) != tuple(v.shape))
    ]
    kept = {k: v for k, v in state_dict.items() if k not in dropped}
    missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    missing_body = [k for k in missing if not _is_head_key(k, heads)]
    unexpected = [k for k in kept if k not in own]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in kept.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing_body or unexpected or mismatched:
        parts = []
        if missing_body:
            parts.append(f"missing keys: {_short_list(missing_body)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short_list(unexpected)}")
        if mismatched:
            parts.append(f"keys of another shape: {_short_list(mismatched, 3)}")
        raise Rad4XCNNError(
            f"the weights in {source} do not fit {model_name} (saved from another architecture?); "
            + "; ".join(parts)
        )
    model.load_state_dict(kept, strict=False)
    if dropped:
        log.info("the classifier of %s (%s) is left out; %s has its own", source, dropped[0], model_name)
    return dropped


def build_backbone(
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    pretrained: bool = False,
    num_classes: int = 0,
    seed: int = 0,
    input_size: int | None = None,
    margin: float | None = None,
    to_be_trained: bool = False,
) -> Backbone:
    """Create a backbone by timm name and give it weights.

    Parameters
    ----------
    model : a timm model name (``resnet50``, ``densenet121``, ``vit_base_patch16_224``, ``name.tag``, ...).
        May be None when ``weights`` is a rad4xcnn checkpoint (its model is used); otherwise ``resnet50``.
    weights : None, ``"imagenet"`` (timm's pretrained weights, downloaded once when online), or a file: a
        timm/torchvision state dict (``.pth``/``.pt``/``.bin``/``.safetensors``) or a rad4xcnn checkpoint,
        whose head, class names and preprocessing are kept.
    pretrained : the same as ``weights="imagenet"``.
    num_classes : 0 for a feature extractor; otherwise the size of a new classifier head (ignored for a
        rad4xcnn checkpoint, which keeps its own head).
    seed : the seed of the random initialisation (of everything without weights: the whole model, or a
        new head).
    input_size, margin : override the model's (or the checkpoint's) preprocessing.
    to_be_trained : the backbone is about to be fine-tuned, so random weights are only its starting point
        (no warning that its features would be meaningless).

    Examples
    --------
    >>> bb = build_backbone("resnet18")  # random weights, seed 0, and a warning that says so
    >>> bb.preprocess.input_size, bb.weights.random_init
    (224, True)
    """
    from Rad4XCNNLogic.features import volume_nets
    from Rad4XCNNLogic.infra.storage import file_sha256

    if weights is not None and str(weights).strip().lower() == IMAGENET:
        pretrained, weights = True, None
    if pretrained and weights is not None:
        raise Rad4XCNNError("give either ImageNet weights (--weights imagenet) or a weights file, not both")
    meta = None
    state_dict = None
    if weights is not None:
        state_dict, meta = read_weights_file(weights)
    if meta is not None:
        ckpt_model = str(meta.get("model_name"))
        if model is not None and architecture(check_model_name(model)) != architecture(ckpt_model):
            raise Rad4XCNNError(
                f"checkpoint {Path(weights).name} holds a {ckpt_model}, not a {model}; "
                f"leave the model name out or give --model {ckpt_model}"
            )
        model = ckpt_model
    elif state_dict is not None and model is None:
        raise Rad4XCNNError(
            f"weights file {Path(weights).name} is a plain state dict: give the model it was saved from "
            "(--model NAME)"
        )
    name = check_model_name(model or "resnet50")

    if meta is not None:
        pre = PreprocessConfig.from_dict({**meta.get("preprocess", {}), "model_name": name})
        changes = {
            k: v
            for k, v in (("input_size", input_size), ("margin", margin))
            if v is not None and v != getattr(pre, k)
        }
        if changes:
            log.warning("preprocessing %s differs from the one the checkpoint was trained with", changes)
            pre = PreprocessConfig.from_dict({**pre.to_dict(), **changes})
        n_classes = int(meta.get("num_classes", 0))
        net = _create(name, n_classes, pre.input_size, seed)
        load_state_dict_checked(net, state_dict, f"checkpoint {Path(weights).name}", name)
        info = WeightsInfo("file", os.fspath(weights), file_sha256(weights), seed=None, checkpoint=True)
        return Backbone(
            net,
            name,
            pre,
            info,
            n_classes,
            list(meta.get("class_names") or []) or None,
            meta,
        )

    if pretrained:
        net = _create_pretrained(name, num_classes, input_size, seed)
        cfg = dict(net.pretrained_cfg)
        info = WeightsInfo("imagenet", tag=cfg.get("hf_hub_id") or cfg.get("tag") or name, seed=seed)
    else:
        net = _create(name, num_classes, input_size, seed)
        cfg = dict(net.pretrained_cfg)
        if state_dict is not None:
            load_state_dict_checked(net, state_dict, f"file {Path(weights).name}", name)
            info = WeightsInfo("file", os.fspath(weights), file_sha256(weights), seed=seed)
        elif to_be_trained:
            info = WeightsInfo("random", seed=seed)
            log.info("%s starts from random weights (seed %d) and is fine-tuned", name, seed)
        else:
            info = WeightsInfo("random", seed=seed)
            log.warning(
                "%s has random weights (seed %d): no weights were given, so its features come from an "
                "untrained network (fine for testing the pipeline, meaningless to explain); use %sa weights "
                "file or a checkpoint from 'rad4xcnn train'",
                name,
                seed,
                "" if volume_nets.is_volume_net(name) else "--weights imagenet, ",
            )
    pre = PreprocessConfig.for_model(
        name, input_size=input_size, margin=0.1 if margin is None else margin, pretrained_cfg=cfg
    )
    return Backbone(net, name, pre, info, num_classes)


def _create_pretrained(name: str, num_classes: int, input_size: int | None, seed: int):
    """timm's ImageNet weights; offline or failing, a message saying how to give a local file instead."""
    import timm

    try:
        return _create(name, num_classes, input_size, seed, pretrained=True)
    except (OSError, RuntimeError, ValueError) as exc:  # huggingface_hub and urllib errors are OSErrors
        cfg = timm.models.get_pretrained_cfg(name)
        where = ""
        if cfg is not None and cfg.hf_hub_id:
            where = f" (https://huggingface.co/{cfg.hf_hub_id}, file model.safetensors)"
        elif cfg is not None and cfg.url:
            where = f" ({cfg.url})"
        raise Rad4XCNNError(
            f"ImageNet weights for {name} could not be obtained ({first_line(exc, 160)}); this machine may "
            f"be offline. Download them on a machine with network access{where} and give the file with "
            "--weights PATH (Python: weights=PATH)"
        ) from None


# ---------------------------------------------------------------------------------------------- features
def feature_stages(model) -> list[dict]:
    """The stages a feature can be taken from: ``[{"index", "module", "channels", "reduction"}, ...]``."""
    info = getattr(model, "feature_info", None) or []
    return [
        {"index": i, "module": f.get("module"), "channels": f.get("num_chs"), "reduction": f.get("reduction")}
        for i, f in enumerate(info)
    ]


def check_stage(model, name: str, stage: int | None) -> int | None:
    """Validate an intermediate stage index (negative counts from the end); None is the final features."""
    if stage is None:
        return None
    stages = feature_stages(model)
    if not hasattr(model, "forward_intermediates") or not stages:
        raise Rad4XCNNError(f"{name} does not expose intermediate stages through timm; leave --stage out")
    n = len(stages)
    if not -n <= int(stage) < n:
        described = ", ".join(f"{s['index']}: {s['channels']} ch" for s in stages)
        raise Rad4XCNNError(f"stage {stage} does not exist in {name}; its stages are {described}")
    return int(stage) % n


def pooled_features(model, x: torch.Tensor, stage: int | None = None) -> torch.Tensor:
    """The feature vector of each image in ``x``: ``(batch, features)``.

    With ``stage=None`` it is timm's pre-logits output, ``forward_head(forward_features(x),
    pre_logits=True)``: global average pooling for CNNs, the CLS token for ViTs (whatever the model's own
    pooling is). With a stage index it is that intermediate stage, globally average pooled.
    """
    if stage is None:
        out = model.forward_head(model.forward_features(x), pre_logits=True)
    else:
        out = model.forward_intermediates(x, indices=[stage], intermediates_only=True, stop_early=True)[0]
    if out.ndim >= 4:  # feature maps (B, C, H, W), or (B, C, D, H, W) of a 3D network
        out = out.mean(dim=tuple(range(2, out.ndim)))
    elif out.ndim == 3:  # tokens (B, N, C) from a model without NCHW intermediates
        out = out.mean(dim=1)
    return out.flatten(1)


# ------------------------------------------------------------------------------------------- checkpoints
class LoadedCheckpoint(NamedTuple):
    """What :func:`load_checkpoint` returns: unpack as ``model, preprocess, metadata = ...``."""

    model: Any
    preprocess: PreprocessConfig
    metadata: dict


def save_checkpoint(
    path: str | os.PathLike,
    model_or_state,
    name: str,
    preprocess: PreprocessConfig,
    *,
    class_names: list[str],
    history: list[dict] | None = None,
    best_metric: dict | None = None,
    seed: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint that loads with ``torch.load(path, weights_only=True)``, atomically.

    ``model_or_state`` is the model or its state dict (it may hold its classifier head).

    The file is a dict of plain Python values and one state dict of CPU float tensors::

        {"format": "rad4xcnn-checkpoint", "version": 1, "model_name", "num_classes", "class_names",
         "state_dict", "preprocess": {...PreprocessConfig...}, "history": [per-epoch dicts],
         "best_metric": {"name", "value", "epoch"}, "seed", "versions": {...}, **extra}
    """
    import timm
    import torch

    from Rad4XCNNLogic import __version__
    from Rad4XCNNLogic.infra.storage import atomic_path

    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": str(name),
        "num_classes": len(class_names),
        "class_names": [str(c) for c in class_names],
        "state_dict": state,
        "preprocess": preprocess.to_dict(),
        "history": [dict(h) for h in (history or [])],
        "best_metric": dict(best_metric or {}),
        "seed": int(seed),
        "versions": {"rad4xcnn": __version__, "torch": torch.__version__, "timm": timm.__version__},
        **(extra or {}),
    }
    from Rad4XCNNLogic.features.volume_nets import is_volume_net

    if is_volume_net(name):
        import monai

        payload["versions"]["monai"] = monai.__version__
    payload = {k: (v if k == "state_dict" else _plain(v)) for k, v in payload.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _plain(obj: Any) -> Any:
    """Plain Python values only, so that ``torch.load(weights_only=True)`` accepts the file: ``str``
    subclasses (``torch.__version__``), numpy scalars and paths become str, int, float; tuples lists."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return str(obj)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint of ``rad4xcnn train``: the model WITH its classifier head, in eval mode.

    Returns ``(model, PreprocessConfig, metadata)``; the metadata holds ``model_name``, ``class_names``,
    ``history``, ``best_metric``, ``seed`` and the rest of the file but the state dict. Map CAMs back to
    the image with :func:`Rad4XCNNLogic.features.preprocessing.preprocess_case` (the same preprocessing).

    Examples
    --------
    >>> model, pre, meta = load_checkpoint("model.pt")  # doctest: +SKIP
    >>> x, crop = preprocess_case(case.load(), pre)  # doctest: +SKIP
    >>> logits = model(x[None])  # doctest: +SKIP
    """
    _, meta = read_weights_file(path)
    if meta is None:
        raise Rad4XCNNError(
            f"{Path(path).name} is a plain state dict, not a rad4xcnn checkpoint; give it as --weights with "
            "--model to extract features, or train a model with 'rad4xcnn train'"
        )
    backbone = build_backbone(None, path)
    model = backbone.model.to(resolve_device(device)).eval()
    return LoadedCheckpoint(model, backbone.preprocess, backbone.metadata)
