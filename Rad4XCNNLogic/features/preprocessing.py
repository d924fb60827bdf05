"""The image pipeline that deep features, fine-tuning and CAMs share: the lesion crop, grey-value scaling,
normalisation to the model's statistics, the DataLoader of cases, and out-of-memory back-off on a device.

One implementation, so that a checkpoint's features, its training inputs and its saliency maps see the same
pixels (docs/ARCHITECTURE.md, "Preprocessing").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from Rad4XCNNLogic.cohort.manifest import Case, LoadedCase
from Rad4XCNNLogic.cohort.roi import SquareCrop
from Rad4XCNNLogic.errors import CaseError, Rad4XCNNError, first_line
from Rad4XCNNLogic.features.backbones import PreprocessConfig
from Rad4XCNNLogic.infra.environment import available_cpus

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)


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

    Done on the device, so that workers move one channel instead of three. Cubes ``(B, 1, D, H, W)`` of a
    3D network stay one channel, normalised with the first mean and std.
    """
    import torch

    if grey.ndim == 5:
        return (grey - float(config.mean[0])) * (1.0 / float(config.std[0]))
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
            return index, None, f"preprocessing failed: {type(exc).__name__}: {first_line(exc, 200)}"
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
