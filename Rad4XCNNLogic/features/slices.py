"""2.5D inputs of a volume: the lesion's slices, each cropped in physical units, as 2D model inputs.

A volume case goes through the 2D backbone slice by slice (docs/ARCHITECTURE.md, "3D volumes"). The slices
are those that cut the lesion (the mask is non-empty on them), along the axial axis or, with
``planes="triplanar"``, along the axial, coronal and sagittal axes; at most ``max_slices`` per axis, sampled
evenly when the lesion has more.

The crop is one square per axis and case, in millimetres: around the lesion's in-plane bounding box (its
union over the lesion's slices, so every slice of a case shows the same window), grown by ``margin`` as a
fraction of the box's longer side in mm (the 2D rule of ``deep.margin``, applied to millimetres instead of
pixels). The square is sampled on an isotropic grid of ``input_size`` points per side straight from the
slice's voxels (linear interpolation), so an anisotropic in-plane spacing (or a coronal slice with 3 mm
between slices) does not stretch the lesion; outside the volume is 0. The grey values are scaled over the
whole volume with the 2D rule (:func:`~Rad4XCNNLogic.features.preprocessing.scale_intensity`), so slices of
one case keep their relative brightness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from Rad4XCNNLogic.cohort.manifest import LoadedCase
from Rad4XCNNLogic.errors import CaseError, Rad4XCNNError
from Rad4XCNNLogic.features.backbones import PreprocessConfig
from Rad4XCNNLogic.features.preprocessing import scale_intensity
from Rad4XCNNLogic.features.settings import PLANES

#: Array axis (of ``[z, y, x]``) along which each plane's slices are taken.
PLANE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass(frozen=True)
class SliceWindow:
    """Where one model input lies in its volume: the slice (``axis``, ``index``) and the square window.

    ``start`` is the window's first sample position in voxel coordinates of the slice's two in-plane axes
    (in array order), ``step`` the distance between two samples in voxels along each of them.
    """

    axis: int
    index: int
    start: tuple[float, float]
    step: tuple[float, float]
    size: int

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """The voxel coordinates (first, second in-plane axis) of the ``size x size`` samples."""
        grid = np.arange(self.size, dtype=np.float64)
        rows = self.start[0] + grid * self.step[0]
        cols = self.start[1] + grid * self.step[1]
        return np.meshgrid(rows, cols, indexing="ij")


def planes_of(planes: str) -> tuple[str, ...]:
    """The planes a ``deep.planes`` value names."""
    if planes not in PLANES:
        raise Rad4XCNNError(f"unknown planes {planes!r}; expected one of {', '.join(PLANES)}")
    return ("axial",) if planes == "axial" else ("axial", "coronal", "sagittal")


def lesion_slices(mask: np.ndarray, axis: int, max_slices: int | None) -> list[int]:
    """The indices along ``axis`` of the slices that cut the lesion, at most ``max_slices`` evenly spread.

    >>> m = np.zeros((10, 4, 4), bool); m[2:9, 1:3, 1:3] = True
    >>> lesion_slices(m, 0, None), lesion_slices(m, 0, 3)
    ([2, 3, 4, 5, 6, 7, 8], [2, 5, 8])
    """
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(np.asarray(mask).any(axis=other))
    if max_slices is not None and present.size > max_slices:
        picks = np.unique(np.round(np.linspace(0, present.size - 1, int(max_slices))).astype(int))
        present = present[picks]
    return [int(i) for i in present]


def slice_window(
    mask: np.ndarray, spacing_zyx: Sequence[float], axis: int, index: int, margin: float, size: int
) -> SliceWindow:
    """The square window (in mm, sampled isotropically) around the lesion's in-plane box along ``axis``."""
    inplane = [a for a in range(3) if a != axis]
    box_mask = np.asarray(mask).any(axis=axis)
    lo, hi, sp = [], [], []
    for k, a in enumerate(inplane):
        present = np.flatnonzero(box_mask.any(axis=1 - k))
        if present.size == 0:  # no lesion: the whole slice
            present = np.array([0, mask.shape[a] - 1])
        spacing = float(spacing_zyx[a])
        lo.append((present[0] - 0.5) * spacing)
        hi.append((present[-1] + 0.5) * spacing)
        sp.append(spacing)
    side = max(h - low for low, h in zip(lo, hi, strict=True)) * (1.0 + 2.0 * float(margin))
    pixel = side / size  # mm per model-input pixel, the same on both in-plane axes
    centres = [(low + h) / 2.0 for low, h in zip(lo, hi, strict=True)]
    # sample centres of pixel j: centre - side/2 + (j + 0.5) * pixel, in mm; / spacing gives voxel units
    start = tuple((c - side / 2.0 + 0.5 * pixel) / s for c, s in zip(centres, sp, strict=True))
    step = tuple(pixel / s for s in sp)
    return SliceWindow(axis, int(index), start, step, int(size))  # type: ignore[arg-type]


def sample_window(volume: np.ndarray, window: SliceWindow) -> np.ndarray:
    """The window's ``size x size`` samples of one slice of ``volume`` (linear, 0 outside)."""
    from scipy.ndimage import map_coordinates

    plane = np.take(volume, window.index, axis=window.axis)
    rows, cols = window.coordinates()
    return map_coordinates(plane, [rows, cols], order=1, mode="constant", cval=0.0).astype(np.float32)


def volume_inputs(
    loaded: LoadedCase, config: PreprocessConfig, planes: str = "axial", max_slices: int | None = None
) -> tuple[np.ndarray, list[SliceWindow]]:
    """A volume case's slices as grey ``(n, input_size, input_size)`` float32 inputs in [0, 1], and where
    each one lies (see the module's text). A case without lesion gives its middle slice per plane, whole."""
    volume = loaded.image
    if getattr(volume, "ndim", 2) != 3:
        raise CaseError(loaded.case_id, "a 2.5D input needs a volume, not a 2D image")
    spacing_zyx = tuple(reversed(volume.spacing))
    scaled = scale_intensity(volume.array, config.intensity)
    mask = loaded.mask if loaded.case.has_lesion and loaded.mask.any() else np.zeros(volume.shape, bool)
    inputs, windows = [], []
    for plane in planes_of(planes):
        axis = PLANE_AXES[plane]
        indices = lesion_slices(mask, axis, max_slices) if mask.any() else [volume.shape[axis] // 2]
        for index in indices:
            window = slice_window(mask, spacing_zyx, axis, index, config.margin, config.input_size)
            inputs.append(sample_window(scaled, window))
            windows.append(window)
    return np.stack(inputs).astype(np.float32, copy=False), windows


def window_to_volume(values: np.ndarray, window: SliceWindow, shape: Sequence[int]) -> np.ndarray:
    """A map on a window's model input back onto its slice's voxels: ``(rows, cols)`` of the slice plane,
    linear, 0 outside the window."""
    from scipy.ndimage import map_coordinates

    plane_shape = [int(shape[a]) for a in range(3) if a != window.axis]
    rows, cols = np.meshgrid(
        np.arange(plane_shape[0], dtype=np.float64),
        np.arange(plane_shape[1], dtype=np.float64),
        indexing="ij",
    )
    u = (rows - window.start[0]) / window.step[0]
    v = (cols - window.start[1]) / window.step[1]
    out = map_coordinates(np.asarray(values, np.float64), [u, v], order=1, mode="constant", cval=0.0)
    inside = (u >= -0.5) & (u <= window.size - 0.5) & (v >= -0.5) & (v <= window.size - 0.5)
    return np.where(inside, out, 0.0).astype(np.float32)


class SliceDataset:
    """A map-style dataset of volumes' lesion slices as grey model inputs, for fine-tuning in 2.5D.

    The same item protocol as :class:`~Rad4XCNNLogic.features.preprocessing.CaseDataset`, one item per
    slice: ``cases[i]`` is item ``i``'s case (so a slice carries its case's label), ``case_index[i]`` the
    position of that case in the cases given, for pooling slice predictions per case. Building it reads
    each volume once and keeps its slices' inputs (float16: 100 kB a slice at 224 pixels), so that epochs
    do not read the volumes again; a case that cannot be read gives one item whose problem is the reader's.
    With ``augment`` (any truthy value) a slice is flipped left-right half the time, from an RNG seeded by
    ``(seed, epoch, i)``; the 2D ultrasound augmentation does not apply to volume slices.
    """

    def __init__(
        self,
        cases: Sequence,
        config: PreprocessConfig,
        planes: str = "axial",
        max_slices: int | None = None,
        augment=None,
        seed: int = 0,
    ):
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self.cases, self.case_index, self.items = [], [], []
        for k, case in enumerate(cases):
            try:
                grey, _ = volume_inputs(case.load(), config, planes, max_slices)
            except CaseError as exc:
                items = [exc.problem]
            else:
                items = list(grey.astype(np.float16))
            self.items += items
            self.cases += [case] * len(items)
            self.case_index += [k] * len(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        item = self.items[index]
        if isinstance(item, str):
            return index, None, item
        array = item.astype(np.float32)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < 0.5:
                array = array[:, ::-1]
        return index, np.ascontiguousarray(array), None


def per_case(case_index: Sequence[int], items: Sequence[int], proba: np.ndarray, labels: Sequence[int]):
    """Slice predictions averaged per case: (the cases' mean class probabilities, their labels)."""
    groups: dict[int, list[int]] = {}
    for row, item in enumerate(items):
        groups.setdefault(int(case_index[item]), []).append(row)
    order = sorted(groups)
    mean = np.stack([proba[groups[k]].mean(axis=0) for k in order])
    return mean, [labels[groups[k][0]] for k in order]
