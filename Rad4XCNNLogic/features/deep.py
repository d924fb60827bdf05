"""Deep features of a cohort: each lesion's crop through a backbone, pooled to one vector per case.

Worker processes of a torch DataLoader read and crop the images (grey, one channel, already at the model's
input size); the device copies them to 3 channels, normalises them and runs the model in batches. Results
go to ``deep_features.csv`` (docs/ARCHITECTURE.md) and to an on-disk cache keyed by the input files'
content and every setting that changes a feature, so a rerun computes only what is new.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cohort.manifest import Case, Cohort
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError
from Rad4XCNNLogic.features.backbones import Backbone, PreprocessConfig
from Rad4XCNNLogic.features.cubes import CubeDataset
from Rad4XCNNLogic.features.preprocessing import (
    CaseDataset,
    default_workers,
    forward_with_backoff,
    make_loader,
    normalize_batch,
)
from Rad4XCNNLogic.features.settings import DEEP
from Rad4XCNNLogic.infra.progress import ProgressBar
from Rad4XCNNLogic.names import (
    FINAL_LAYER,
    SLICE_POOLINGS,
    deep_columns,
    layer_columns,
    slice_pooled_widths,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

STAGE = "deep"
#: Bumped when a change here alters the features, so that old cache entries are not reused.
FEATURE_CODE_VERSION = 1


# ---------------------------------------------------------------------------------------------- extraction
@dataclass
class DeepFeaturesResult:
    """Deep features of a cohort.

    ``features``: DataFrame indexed by ``case_id``, columns ``<model>_<index>`` (``<model>_stage<k>_<index>``
    for an intermediate stage), in the cohort's case order. ``failures``: cases left out (stage ``deep``).
    ``settings``: model, weights source and hash, random-init flag, device, dtype, preprocessing, timings.
    """

    features: pd.DataFrame
    failures: list[CaseFailure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    cache_hits: int = 0
    computed: int = 0


def _case_key(case: Case) -> list:
    from Rad4XCNNLogic.infra.storage import file_sha256

    return [file_sha256(case.image), [file_sha256(m) for m in case.masks], bool(case.has_lesion)]


def _backbone(model, weights, pretrained: bool, seed: int, input_size, margin) -> Backbone:
    """The backbone to run: the caller's (a copy, with ``margin`` / ``input_size`` changed), or built."""
    from Rad4XCNNLogic.features.backbones import build_backbone

    if not isinstance(model, Backbone):
        return build_backbone(
            model, weights, pretrained=pretrained, seed=seed, input_size=input_size, margin=margin
        )
    if margin is None and input_size is None:
        return model
    changes = {k: v for k, v in (("margin", margin), ("input_size", input_size)) if v is not None}
    return replace(model, preprocess=PreprocessConfig.from_dict({**model.preprocess.to_dict(), **changes}))


def _from_cache(cases, cache, settings_key: str) -> tuple[dict[str, np.ndarray], dict[str, str], list[Case]]:
    """(vectors found in the cache, each case's cache key, the cases still to compute)."""
    vectors: dict[str, np.ndarray] = {}
    keys: dict[str, str] = {}
    pending: list[Case] = []
    for case in cases:
        if cache is not None:
            try:
                keys[case.case_id] = cache.key(*_case_key(case), settings_key)
            except OSError as exc:  # unreadable file: the loader reports it with the case's name
                log.debug("case %s: not hashed for the cache: %s", case.case_id, exc)
            else:
                hit = cache.get_array(keys[case.case_id])
                if hit is not None:
                    vectors[case.case_id] = hit
                    continue
        pending.append(case)
    return vectors, keys, pending


@dataclass
class _Store:
    """Where computed vectors go: the results, the failures, and the cache under each case's key."""

    vectors: dict
    failures: list
    cache: Any
    keys: dict

    def put(self, case_id: str, vector: np.ndarray) -> None:
        self.vectors[case_id] = vector
        if self.cache is not None and case_id in self.keys:
            self.cache.put_array(self.keys[case_id], vector)


def _forward(net, plan, stage, device_type: str, compute_dtype):
    """The pooled features of a batch: the planned layers side by side, or the stage's (final) features."""
    import torch

    from Rad4XCNNLogic.features.backbones import pooled_features
    from Rad4XCNNLogic.features.layers import pooled_layers

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            device_type=device_type, dtype=compute_dtype, enabled=compute_dtype != torch.float32
        ):
            if plan is not None:
                return pooled_layers(net, x, plan).float()
            return pooled_features(net, x, stage).float()

    return forward


def _run_batches(loader, forward, pending, config, dev, channels_last: bool, chunk: int, bar, store: _Store):
    """Run ``forward`` over the loader's batches: each case's vector into ``store``, each unreadable case
    into its failures. Returns (the batch size that fitted, seconds spent forward)."""
    import torch

    forward_seconds = 0.0
    with torch.inference_mode():
        for indices, grey, bad in loader:
            for index, problem in bad:
                store.failures.append(CaseFailure(pending[index].case_id, STAGE, problem))
                log.warning("case %s: %s", pending[index].case_id, problem)
            if grey is not None:
                t0 = time.perf_counter()
                x = normalize_batch(grey.to(dev, non_blocking=True), config)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out, chunk = forward_with_backoff(forward, x, chunk)
                feats = out.cpu().numpy()
                forward_seconds += time.perf_counter() - t0
                for row, index in enumerate(indices):
                    store.put(pending[index].case_id, feats[row])
            bar.update(len(indices) + len(bad))
    return chunk, forward_seconds


def _pool_slices(feats: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """One case's slice features ``(slices, n)`` pooled over slices: per block of ``widths`` (one per layer),
    its mean then its max (the order :func:`~Rad4XCNNLogic.names.slice_pooled_widths` names)."""
    parts, start = [], 0
    for width in widths:
        block = feats[:, start : start + width]
        parts += [block.mean(axis=0), block.max(axis=0)]
        start += width
    return np.concatenate(parts).astype(np.float32, copy=False)


def _run_volumes(pending, forward, config, dev, chunk: int, bar, store: _Store, volumes: dict):
    """The 2.5D path: each volume case's lesion slices (:mod:`~Rad4XCNNLogic.features.slices`) through
    ``forward`` in batches of ``chunk`` slices, pooled per case by mean and max. Returns (the batch size
    that fitted, seconds spent forward, slices run)."""
    import torch

    from Rad4XCNNLogic.features.slices import volume_inputs

    forward_seconds, n_slices = 0.0, 0
    with torch.inference_mode():
        for case in pending:
            try:
                grey, _ = volume_inputs(case.load(), config, volumes["planes"], volumes["max_slices"])
            except CaseError as exc:
                store.failures.append(CaseFailure(case.case_id, STAGE, exc.problem))
                log.warning("case %s: %s", case.case_id, exc.problem)
                bar.update(1)
                continue
            t0 = time.perf_counter()
            x = normalize_batch(torch.from_numpy(grey)[:, None].to(dev), config)
            out, chunk = forward_with_backoff(forward, x, chunk)
            feats = out.cpu().numpy()
            forward_seconds += time.perf_counter() - t0
            n_slices += len(grey)
            store.put(case.case_id, _pool_slices(feats, volumes["widths"] or [feats.shape[1]]))
            bar.update(1)
    return chunk, forward_seconds, n_slices


def _compute(pending, forward, config, dev, channels_last: bool, bar, store, volumes, plan, loading: dict):
    """The pending cases' vectors into ``store``: images in batches, a 3D network's cubes in batches, or
    each volume's slices (2.5D, whose count goes into ``volumes``). Returns (the batch size that fitted,
    seconds spent forward)."""
    batch_size = loading["batch_size"]
    if volumes is not None and volumes.get("network") != "3d":
        widths = None if plan is None else [layer.channels for layer in plan]
        chunk, forward_seconds, volumes["slices_computed"] = _run_volumes(
            pending, forward, config, dev, batch_size, bar, store, {**volumes, "widths": widths}
        )
        return chunk, forward_seconds
    dataset = CaseDataset(pending, config) if volumes is None else CubeDataset(pending, config)
    loader = make_loader(dataset, **loading)
    return _run_batches(loader, forward, pending, config, dev, channels_last, batch_size, bar, store)


def _feature_frame(vectors, cases, failures, architecture: str, stage, plan, pooled: bool = False):
    """The cases x features table, in the cases' order; refuses no vector at all, or vectors of two sizes."""
    import pandas as pd

    if not vectors:
        first = f" (first: {failures[0]})" if failures else ""
        raise Rad4XCNNError(f"no deep features: all {len(cases)} cases failed{first}")
    dims = {v.shape[0] for v in vectors.values()}
    if len(dims) != 1:
        raise Rad4XCNNError(f"cached deep features have differing sizes {sorted(dims)}; clear the cache")
    order = [c.case_id for c in cases if c.case_id in vectors]
    matrix = np.stack([vectors[c] for c in order]).astype(np.float32, copy=False)
    return pd.DataFrame(
        matrix,
        index=pd.Index(order, name="case_id"),
        columns=_columns(architecture, matrix.shape[1], stage, plan, pooled),
    )


def _on_device(backbone: Backbone, dev) -> tuple[Any, bool]:
    """The network in eval mode on ``dev`` (channels-last on CUDA for a 2D network), and whether it is
    channels-last."""
    import torch

    from Rad4XCNNLogic.features.volume_nets import is_volume_net

    channels_last = dev.type == "cuda" and not is_volume_net(backbone.name)
    net = backbone.model.eval().to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # every batch has the same shape: let cuDNN pick its fastest
    return net, channels_last


def _stage_and_plan(backbone: Backbone, stage: int | None, layers):
    """The checked stage, and the plan of the listed layers (None without layers)."""
    from Rad4XCNNLogic.features.backbones import check_stage
    from Rad4XCNNLogic.features.layers import resolve_layers

    stage = check_stage(backbone.model, backbone.name, stage)
    if layers is None:
        return stage, None
    if stage is not None:
        raise Rad4XCNNError("give either an intermediate stage or layers, not both")
    return stage, resolve_layers(backbone.model, backbone.name, layers)


def _volume_settings(cases: Sequence[Case], planes: str, max_slices: int, backbone: Backbone) -> dict | None:
    """The settings of a cohort of volumes, None for 2D images: for a 2D network (2.5D) the planes, slices
    per plane and pooling; for a 3D network the cube it sees."""
    from Rad4XCNNLogic.features.volume_nets import check_images, is_volume_net

    native = is_volume_net(backbone.name)
    check_images(backbone.name, any(case.dims == 3 for case in cases))
    if not any(case.dims == 3 for case in cases):
        return None
    if any(case.dims != 3 for case in cases):
        raise Rad4XCNNError("the cohort mixes 2D images and volumes; give one kind per run")
    if native:
        import monai

        side = backbone.preprocess.input_size
        return {
            "network": "3d",
            "input": f"one cube of {side} x {side} x {side} voxels around the lesion, isotropic in mm",
            "monai": monai.__version__,
        }
    from Rad4XCNNLogic.features.slices import planes_of

    planes_of(planes)
    if max_slices < 1:
        raise Rad4XCNNError(f"max_slices must be at least 1, got {max_slices}")
    return {"planes": planes, "max_slices": int(max_slices), "pooling": list(SLICE_POOLINGS)}


def _cases_of(cohort, include_normal: bool) -> list[Case]:
    """The cases to extract: every case with a lesion (and the others with ``include_normal``)."""
    cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
    n_normal = sum(not c.has_lesion for c in cases)
    if not include_normal:
        cases = [c for c in cases if c.has_lesion]
    if not cases:
        raise Rad4XCNNError(
            "no case to extract deep features from"
            + (f": all {n_normal} cases have no lesion (include_normal=True keeps them)" if n_normal else "")
        )
    return cases


def _cache_settings(backbone: Backbone, stage, plan, device_type: str, compute_dtype) -> dict:
    """Everything a cached vector depends on besides the case: the network, its weights, the
    preprocessing, the layers, the device kind, the compute type and the library versions."""
    import timm
    import torch

    weights_id = {
        "source": backbone.weights.source,
        "sha256": backbone.weights.sha256,
        "tag": backbone.weights.tag,
        "seed": backbone.weights.seed if backbone.weights.random_init else None,
    }
    return {
        "model": backbone.name,
        "weights": weights_id,
        "preprocess": backbone.preprocess.to_dict(),
        "stage": stage,
        **({"layers": [layer.name for layer in plan]} if plan is not None else {}),
        "device": device_type,
        "dtype": str(compute_dtype).replace("torch.", ""),
        "versions": [torch.__version__, timm.__version__, FEATURE_CODE_VERSION],
    }


def extract_deep_features(
    cohort: Cohort | Sequence[Case],
    model: str | Backbone | None = None,
    weights: str | os.PathLike | None = None,
    *,
    pretrained: bool = False,
    device: str = "auto",
    batch_size: int = DEEP.batch_size,
    num_workers: int | None = None,
    margin: float | None = None,
    input_size: int | None = None,
    stage: int | None = None,
    layers: Sequence[str] | None = None,
    dtype: str = DEEP.dtype,
    include_normal: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    seed: int = 0,
    planes: str = DEEP.planes,
    max_slices: int = DEEP.max_slices,
) -> DeepFeaturesResult:
    """Deep features of every lesion case of a cohort.

    Parameters
    ----------
    cohort : a :class:`Cohort` (or a list of cases). Cases with ``has_lesion=false`` are left out unless
        ``include_normal`` (then their whole image is the crop).
    model : a timm name, a 3D network's name (``monai_resnet18``, ...; volumes only, see
        :mod:`~Rad4XCNNLogic.features.volume_nets` and :mod:`~Rad4XCNNLogic.features.cubes`), or a
        :class:`~Rad4XCNNLogic.features.backbones.Backbone` already built. None: the checkpoint's model when
        ``weights`` is a rad4xcnn checkpoint, else ``resnet50``.
    weights, pretrained, seed : see :func:`~Rad4XCNNLogic.features.backbones.build_backbone` (no weights:
        random initialisation from ``seed``, and the settings say so).
    device : ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda`` or ``mps``.
    batch_size : images per forward pass; on CUDA out-of-memory it is halved and the run goes on.
    num_workers : decoding processes (None: see :func:`default_workers`).
    margin, input_size : override the model's (or checkpoint's) preprocessing.
    stage : an intermediate stage (index into ``model.feature_info``) to pool instead of the final features.
    layers : names of layers to pool instead, side by side (``feature_info`` modules such as ``layer3`` or
        ``blocks.11``, and ``pre_logits`` for the final features; see :mod:`Rad4XCNNLogic.features.layers`);
        columns ``<model>.<layer>_<index>`` (``<model>_<index>`` for ``pre_logits``).
    dtype : ``float32`` (default: the same features on every device), or ``bfloat16`` / ``auto`` (bfloat16
        autocast with channels-last on CUDA: faster, but about 3 significant digits, extra rank ties and
        a rho that depends on the device).
    cache_dir : folder of the on-disk cache; None for no cache.
    planes, max_slices : volumes through a 2D network (2.5D, :mod:`~Rad4XCNNLogic.features.slices`): slice
        features pooled by mean and max per case (:func:`~Rad4XCNNLogic.names.slice_pooled_widths`); the
        settings' ``volumes`` say so. A 3D network sees one cube per case instead and ignores them.

    Examples
    --------
    >>> cohort = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> result = extract_deep_features(cohort, "resnet18", device="cpu", progress=False)  # doctest: +SKIP
    >>> result.features.shape  # doctest: +SKIP
    (160, 512)
    >>> write_deep_features(result, "deep_features.csv")  # doctest: +SKIP
    """
    import timm
    import torch

    from Rad4XCNNLogic.features.backbones import resolve_device, resolve_dtype
    from Rad4XCNNLogic.infra.storage import ResultCache, settings_hash

    started = time.perf_counter()
    if batch_size < 1:
        raise Rad4XCNNError(f"batch size must be at least 1, got {batch_size}")
    cases = _cases_of(cohort, include_normal)
    dev = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, dev)
    backbone = _backbone(model, weights, pretrained, seed, input_size, margin)
    config = backbone.preprocess
    stage, plan = _stage_and_plan(backbone, stage, layers)
    net, channels_last = _on_device(backbone, dev)

    cache_settings = _cache_settings(backbone, stage, plan, dev.type, compute_dtype)
    volumes = _volume_settings(cases, planes, max_slices, backbone)
    native = volumes is not None and volumes.get("network") == "3d"
    if volumes is not None:
        cache_settings["volumes"] = dict(volumes)
    cache = ResultCache(cache_dir, "deep") if cache_dir is not None else None
    settings_key = settings_hash(cache_settings)

    vectors, keys, pending = _from_cache(cases, cache, settings_key)
    failures: list[CaseFailure] = []
    cache_hits = len(vectors)
    if cache is not None:
        log.info("deep features: %d of %d cases from the cache %s", cache_hits, len(cases), cache.root)

    workers = default_workers(dev.type, len(pending), batch_size) if num_workers is None else int(num_workers)
    loading = {"batch_size": batch_size, "num_workers": workers, "device_type": dev.type, "seed": seed}
    chunk, forward_seconds = batch_size, 0.0
    if pending:
        forward = _forward(net, plan, stage, dev.type, compute_dtype)
        desc = f"deep features ({backbone.architecture})"
        bar = ProgressBar(len(pending), desc=desc, stage=STAGE, unit="img", enabled=progress)
        store = _Store(vectors, failures, cache, keys)
        with bar:
            chunk, forward_seconds = _compute(
                pending, forward, config, dev, channels_last, bar, store, volumes, plan, loading
            )

    pooled = volumes is not None and not native  # 2.5D: slice features pooled by mean and max
    frame = _feature_frame(vectors, cases, failures, backbone.architecture, stage, plan, pooled)
    seconds = time.perf_counter() - started
    computed = len(frame) - cache_hits
    settings = {
        "model": backbone.name,
        "stage": stage,
        "layers": None if plan is None else {layer.name: layer.channels for layer in plan},
        "feature_dim": int(frame.shape[1]),
        "weights": backbone.weights.to_dict(),
        "random_init": backbone.weights.random_init,
        "class_names": backbone.class_names,
        "device": str(dev),
        "dtype": cache_settings["dtype"],
        "channels_last": channels_last,
        "batch_size": int(batch_size),
        "batch_size_used": int(chunk),
        "num_workers": workers,
        "preprocess": config.to_dict(),
        "include_normal": bool(include_normal),
        "cases": len(cases),
        "failed": len(failures),
        "cache": {
            "dir": None if cache is None else os.fspath(cache.root),
            "hits": cache_hits,
            "computed": computed,
        },
        "seconds": round(seconds, 3),
        "forward_seconds": round(forward_seconds, 3),
        "images_per_second": round(computed / seconds, 2) if computed and seconds > 0 else None,
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
        **({"volumes": volumes} if volumes is not None else {}),
    }
    log.info(
        "deep features: %d cases x %d features (%s, %s on %s), %d failed, %.1f s",
        len(frame),
        frame.shape[1],
        backbone.name,
        settings["dtype"],
        dev,
        len(failures),
        seconds,
    )
    return DeepFeaturesResult(frame, failures, settings, cache_hits, computed)


def _columns(model: str, n: int, stage: int | None, plan, pooled: bool = False) -> list[str]:
    """The column names of ``n`` features: the stage's, or each planned layer's block in turn (each block
    twice as wide when slices were pooled by mean and max)."""
    if plan is None:
        return deep_columns(model, n, stage)
    if pooled:
        plan = [
            replace(layer, channels=w)
            for layer, w in zip(plan, slice_pooled_widths([x.channels for x in plan]), strict=True)
        ]
    if sum(layer.channels for layer in plan) != n:
        raise Rad4XCNNError(
            f"{model}: the layers give {n} features, not the {sum(layer.channels for layer in plan)} their "
            "widths add up to; clear the cache"
        )
    columns: list[str] = []
    for layer in plan:
        if layer.name == FINAL_LAYER:
            columns += deep_columns(model, layer.channels)
        else:
            columns += layer_columns(model, layer.name, layer.channels)
    return columns


def write_deep_features(result: DeepFeaturesResult, out_csv: str | os.PathLike) -> Path:
    """Write ``deep_features.csv`` (case_id x ``<model>_<index>``) atomically; returns the path.

    Read it back with ``pandas.read_csv(path, index_col=0)``.
    """
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    return write_csv_atomic(out_csv, result.features, index_label="case_id")
