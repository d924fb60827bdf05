"""Deep features of a cohort: each lesion's crop through a backbone, pooled to one vector per case.

Worker processes of a torch DataLoader read and crop the images (grey, one channel, already at the model's
input size); the device copies them to 3 channels, normalises them and runs the model in batches. Results
go to ``deep_features.csv`` (DESIGN.md §4) and to an on-disk cache keyed by the input files' content and
every setting that changes a feature, so a rerun computes only what is new.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cohort.manifest import Case, Cohort, LoadedCase
from Rad4XCNNLogic.cohort.roi import SquareCrop
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError
from Rad4XCNNLogic.features.backbones import Backbone, PreprocessConfig
from Rad4XCNNLogic.infra.environment import available_cpus
from Rad4XCNNLogic.infra.progress import ProgressBar

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

STAGE = "deep"
#: Bumped when a change here alters the features, so that old cache entries are not reused.
FEATURE_CODE_VERSION = 1


# ------------------------------------------------------------------------------------------ preprocessing
def scale_intensity(array: np.ndarray, mode: str = "auto") -> np.ndarray:
    """Grey values to [0, 1] by the rule of :class:`~Rad4XCNNLogic.features.backbones.PreprocessConfig`
    ``intensity``.

    Examples
    --------
    >>> scale_intensity(np.array([[0, 255]], np.float32))
    array([[0., 1.]], dtype=float32)
    """
    array = np.asarray(array, dtype=np.float32)
    lo, hi = float(array.min()), float(array.max())
    if mode == "auto":
        mode = "unit" if lo >= 0.0 and hi <= 1.0 else ("uint8" if lo >= 0.0 and hi <= 255.0 else "minmax")
    if mode == "uint8":
        return array * np.float32(1.0 / 255.0)
    if mode == "minmax":
        return (array - np.float32(lo)) * np.float32(1.0 / (hi - lo)) if hi > lo else np.zeros_like(array)
    return array.copy()


def case_crop(loaded: LoadedCase, config: PreprocessConfig) -> SquareCrop:
    """The square crop of a case: around its lesion grown by ``margin``, or the whole image without one.

    A crop may reach past the image (the image is smaller than the crop, or the lesion touches the border):
    the outside is padded with 0. A crop with fewer than ``config.min_crop`` image pixels on a side raises
    :class:`CaseError`: too few pixels to resample into a model input.
    """
    shape = loaded.image.shape
    if loaded.case.has_lesion and loaded.mask.any():
        crop = SquareCrop.around_mask(loaded.mask, config.margin)
    else:
        crop = SquareCrop.whole_image(shape)
    r0, c0, r1, c1 = crop.box_in_image
    if min(r1 - r0, c1 - c0) < config.min_crop:
        what = "lesion crop" if loaded.case.has_lesion else "image"
        raise CaseError(
            loaded.case_id,
            f"the {what} holds only {c1 - c0}x{r1 - r0} image pixels (image {shape[1]}x{shape[0]}); at least "
            f"{config.min_crop}x{config.min_crop} are needed to make a {config.input_size}-pixel model input",
        )
    if any(crop.padding):
        log.debug("case %s: the crop reaches past the image border: padded %s", loaded.case_id, crop.padding)
    return crop


def grey_input(loaded: LoadedCase, config: PreprocessConfig) -> tuple[np.ndarray, SquareCrop]:
    """The case's crop as a grey ``(input_size, input_size)`` float32 array in [0, 1], and the crop."""
    crop = case_crop(loaded, config)
    scaled = scale_intensity(loaded.image.array, config.intensity)
    array = crop.to_input(scaled, config.input_size, config.interpolation)
    return np.require(array, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]), crop  # Pillow's arrays are read-only


def normalize_batch(grey: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """``(B, 1, H, W)`` grey inputs to ``(B, 3, H, W)`` normalised with the model's mean and std.

    Done on the device, so that workers move one channel instead of three.
    """
    import torch

    mean = torch.tensor(config.mean, dtype=grey.dtype, device=grey.device).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(config.std, dtype=grey.dtype, device=grey.device).view(1, 3, 1, 1)
    return (grey.expand(-1, 3, -1, -1) - mean) * inv_std


def preprocess_case(loaded: LoadedCase, config: PreprocessConfig) -> tuple[torch.Tensor, SquareCrop]:
    """One case as the model sees it: a ``(3, H, W)`` float32 tensor, and the crop it came from.

    The CAM stage uses the crop to map a map on the model input back onto the image
    (:meth:`SquareCrop.from_input`).

    Examples
    --------
    >>> model, pre, meta = load_checkpoint("model.pt")  # doctest: +SKIP
    >>> x, crop = preprocess_case(cohort.cases[0].load(), pre)  # doctest: +SKIP
    >>> x.shape, crop.side  # doctest: +SKIP
    (torch.Size([3, 224, 224]), 141)
    """
    import torch

    grey, crop = grey_input(loaded, config)
    x = normalize_batch(torch.from_numpy(grey)[None, None], config)[0]
    return x.contiguous(), crop


# ------------------------------------------------------------------------------------ dataset and loader
class CaseDataset:
    """A map-style dataset (torch DataLoader protocol) of cases as grey model inputs.

    Item ``i`` is ``(i, array or None, problem or None)``: a case that cannot be read or cropped gives its
    problem instead of raising, so one bad file does not stop a worker. ``augment``, when given, is a
    callable ``(loaded, config, rng) -> array`` used instead of :func:`grey_input` (training), with an RNG
    seeded by ``(seed, epoch, i)`` so that augmentation does not depend on the number of workers.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        config: PreprocessConfig,
        augment: Callable[..., np.ndarray] | None = None,
        seed: int = 0,
    ):
        self.cases = list(cases)
        self.config = config
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        case = self.cases[index]
        try:
            loaded = case.load()
            if self.augment is not None:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                array = self.augment(loaded, self.config, rng)
            else:
                array, _ = grey_input(loaded, self.config)
        except CaseError as exc:
            return index, None, exc.problem
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:
            return index, None, f"preprocessing failed: {type(exc).__name__}: {str(exc)[:200]}"
        return index, np.ascontiguousarray(array, dtype=np.float32), None


def collate_cases(items):
    """Batch dataset items: ``(indices of good items, (n, 1, H, W) tensor or None, [(index, problem)])``."""
    import torch

    good = [(i, a) for i, a, _ in items if a is not None]
    bad = [(i, p) for i, a, p in items if a is None]
    if not good:
        return [], None, bad
    batch = torch.from_numpy(np.stack([a for _, a in good])[:, None])
    return [i for i, _ in good], batch, bad


def default_workers(device_type: str, n_items: int, batch_size: int) -> int:
    """Decoding processes: on a GPU one per spare core, up to 16, so that decoding keeps up with the model;
    none on a CPU run or for a single batch.

    On a CPU the model already uses every core, and reading and cropping a case costs a few per cent of a
    ResNet50 forward pass: a worker would only compete with the model's threads (measured in
    BENCHMARKS.md: 0 workers gave a higher share of the raw forward rate than 1 on 2 cores).
    """
    cpus = available_cpus()
    if device_type == "cpu" or n_items <= batch_size or cpus < 2:
        return 0
    return max(1, min(16, cpus - 1))


def make_loader(
    dataset: CaseDataset,
    *,
    batch_size: int,
    num_workers: int,
    device_type: str,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 0,
):
    """A DataLoader over ``dataset`` with :func:`collate_cases`, pinned memory for CUDA and prefetching."""
    import torch

    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["prefetch_factor"] = 4
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_cases,
        pin_memory=device_type == "cuda",
        generator=generator,
        **kwargs,
    )


# --------------------------------------------------------------------------------------- out of memory
def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA (or MPS) out-of-memory error."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def forward_with_backoff(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, int]:
    """Run ``forward`` over ``x`` in chunks of ``chunk`` images, halving the chunk on out-of-memory.

    Returns the outputs, concatenated, and the chunk size that worked (use it for the next batches).
    Outputs of chunks already done are kept. Raises :class:`Rad4XCNNError` when even one image does
    not fit.

    Examples
    --------
    >>> out, chunk = forward_with_backoff(model, batch, 256)  # doctest: +SKIP
    """
    import torch

    outputs = []
    start, chunk = 0, max(1, int(chunk))
    while start < len(x):
        try:
            outputs.append(forward(x[start : start + chunk]))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if chunk == 1:
                raise Rad4XCNNError(
                    f"out of memory on {x.device} even with a batch of 1 image; use a smaller model, a "
                    "smaller input size or --device cpu"
                ) from None
            smaller = max(1, chunk // 2)
            log.warning("out of memory on %s with a batch of %d; retrying with %d", x.device, chunk, smaller)
            chunk = smaller
            continue
        start += chunk
    return (torch.cat(outputs) if outputs else x.new_zeros((0, 0))), chunk


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


def feature_columns(arch: str, n: int, stage: int | None = None) -> list[str]:
    prefix = arch if stage is None else f"{arch}_stage{stage}"
    return [f"{prefix}_{i}" for i in range(n)]


def _case_key(case: Case) -> list:
    from Rad4XCNNLogic.infra.storage import file_sha256

    return [file_sha256(case.image), [file_sha256(m) for m in case.masks], bool(case.has_lesion)]


def extract_deep_features(
    cohort: Cohort | Sequence[Case],
    model: str | Backbone | None = None,
    weights: str | os.PathLike | None = None,
    *,
    pretrained: bool = False,
    device: str = "auto",
    batch_size: int = 32,
    num_workers: int | None = None,
    margin: float | None = None,
    input_size: int | None = None,
    stage: int | None = None,
    dtype: str = "auto",
    include_normal: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    seed: int = 0,
) -> DeepFeaturesResult:
    """Deep features of every lesion case of a cohort.

    Parameters
    ----------
    cohort : a :class:`Cohort` (or a list of cases). Cases with ``has_lesion=false`` are left out unless
        ``include_normal`` (then their whole image is the crop).
    model : a timm name, or a :class:`~Rad4XCNNLogic.features.backbones.Backbone` already built. None: the
    checkpoint's
        model when ``weights`` is a rad4xcnn checkpoint, else ``resnet50``.
    weights, pretrained, seed : see :func:`~Rad4XCNNLogic.features.backbones.build_backbone` (no weights:
    random
        initialisation from ``seed``, and the settings say so).
    device : ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda`` or ``mps``.
    batch_size : images per forward pass; on CUDA out-of-memory it is halved and the run goes on.
    num_workers : decoding processes (None: see :func:`default_workers`).
    margin, input_size : override the model's (or checkpoint's) preprocessing.
    stage : an intermediate stage (index into ``model.feature_info``) to pool instead of the final features.
    dtype : ``auto`` = bfloat16 autocast with channels-last on CUDA, float32 on CPU (deterministic).
    cache_dir : folder of the on-disk cache; None for no cache.

    Examples
    --------
    >>> cohort = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> result = extract_deep_features(cohort, "resnet18", device="cpu", progress=False)  # doctest: +SKIP
    >>> result.features.shape  # doctest: +SKIP
    (160, 512)
    >>> write_deep_features(result, "deep_features.csv")  # doctest: +SKIP
    """
    import pandas as pd
    import timm
    import torch

    from Rad4XCNNLogic.features.backbones import (
        build_backbone,
        check_stage,
        pooled_features,
        resolve_device,
        resolve_dtype,
    )
    from Rad4XCNNLogic.infra.storage import ResultCache, settings_hash

    started = time.perf_counter()
    if batch_size < 1:
        raise Rad4XCNNError(f"batch size must be at least 1, got {batch_size}")
    cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
    n_normal = sum(not c.has_lesion for c in cases)
    if not include_normal:
        cases = [c for c in cases if c.has_lesion]
    if not cases:
        raise Rad4XCNNError(
            "no case to extract deep features from"
            + (f": all {n_normal} cases have no lesion (include_normal=True keeps them)" if n_normal else "")
        )
    dev = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, dev)
    if isinstance(model, Backbone):
        backbone = model
        if margin is not None or input_size is not None:  # the caller's backbone is left as it was
            changes = {k: v for k, v in (("margin", margin), ("input_size", input_size)) if v is not None}
            preprocess = PreprocessConfig.from_dict({**backbone.preprocess.to_dict(), **changes})
            backbone = replace(backbone, preprocess=preprocess)
    else:
        backbone = build_backbone(
            model, weights, pretrained=pretrained, seed=seed, input_size=input_size, margin=margin
        )
    config = backbone.preprocess
    stage = check_stage(backbone.model, backbone.name, stage)
    channels_last = dev.type == "cuda"
    net = backbone.model.eval().to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # every batch has the same shape: let cuDNN pick its fastest

    weights_id = {
        "source": backbone.weights.source,
        "sha256": backbone.weights.sha256,
        "tag": backbone.weights.tag,
        "seed": backbone.weights.seed if backbone.weights.random_init else None,
    }
    cache_settings = {
        "model": backbone.name,
        "weights": weights_id,
        "preprocess": config.to_dict(),
        "stage": stage,
        "device": dev.type,
        "dtype": str(compute_dtype).replace("torch.", ""),
        "versions": [torch.__version__, timm.__version__, FEATURE_CODE_VERSION],
    }
    cache = ResultCache(cache_dir, "deep") if cache_dir is not None else None
    settings_key = settings_hash(cache_settings)

    vectors: dict[str, np.ndarray] = {}
    failures: list[CaseFailure] = []
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
    cache_hits = len(vectors)
    if cache is not None:
        log.info("deep features: %d of %d cases from the cache %s", cache_hits, len(cases), cache.root)

    workers = default_workers(dev.type, len(pending), batch_size) if num_workers is None else int(num_workers)
    chunk = batch_size
    forward_seconds = 0.0
    if pending:
        loader = make_loader(
            CaseDataset(pending, config),
            batch_size=batch_size,
            num_workers=workers,
            device_type=dev.type,
            seed=seed,
        )
        autocast = compute_dtype != torch.float32

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type=dev.type, dtype=compute_dtype, enabled=autocast):
                return pooled_features(net, x, stage).float()

        bar = ProgressBar(
            len(pending),
            desc=f"deep features ({backbone.architecture})",
            stage=STAGE,
            unit="img",
            enabled=progress,
        )
        with torch.inference_mode(), bar:
            for indices, grey, bad in loader:
                for index, problem in bad:
                    failures.append(CaseFailure(pending[index].case_id, STAGE, problem))
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
                        case_id = pending[index].case_id
                        vectors[case_id] = feats[row]
                        if cache is not None and case_id in keys:
                            cache.put_array(keys[case_id], feats[row])
                bar.update(len(indices) + len(bad))

    if not vectors:
        first = f" (first: {failures[0]})" if failures else ""
        raise Rad4XCNNError(f"no deep features: all {len(cases)} cases failed{first}")
    dims = {v.shape[0] for v in vectors.values()}
    if len(dims) != 1:
        raise Rad4XCNNError(f"cached deep features have differing sizes {sorted(dims)}; clear the cache")
    order = [c.case_id for c in cases if c.case_id in vectors]
    matrix = np.stack([vectors[c] for c in order]).astype(np.float32, copy=False)
    frame = pd.DataFrame(
        matrix,
        index=pd.Index(order, name="case_id"),
        columns=feature_columns(backbone.architecture, matrix.shape[1], stage),
    )
    seconds = time.perf_counter() - started
    computed = len(order) - cache_hits
    settings = {
        "model": backbone.name,
        "stage": stage,
        "feature_dim": int(matrix.shape[1]),
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
    }
    log.info(
        "deep features: %d cases x %d features (%s, %s on %s), %d failed, %.1f s",
        len(order),
        matrix.shape[1],
        backbone.name,
        settings["dtype"],
        dev,
        len(failures),
        seconds,
    )
    return DeepFeaturesResult(frame, failures, settings, cache_hits, computed)


def write_deep_features(result: DeepFeaturesResult, out_csv: str | os.PathLike) -> Path:
    """Write ``deep_features.csv`` (case_id x ``<model>_<index>``) atomically; returns the path.

    Read it back with ``pandas.read_csv(path, index_col=0)``.
    """
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    return write_csv_atomic(out_csv, result.features, index_label="case_id")
