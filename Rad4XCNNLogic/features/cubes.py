"""3D inputs of a volume for a native 3D network: the lesion in a cube, cut in physical units.

A volume case goes through a 3D network (:mod:`~Rad4XCNNLogic.features.volume_nets`) as one cube: around
the lesion's bounding box in millimetres, grown by ``margin`` as a fraction of the box's longest side in mm
(the 2D rule of ``deep.margin``, in three dimensions), sampled on an isotropic grid of ``input_size``
points a side straight from the voxels (linear interpolation; 0 outside the volume). So an anisotropic
volume (3 mm between slices, 0.7 mm in plane) reaches the network without stretching: one input voxel is
the same length along every axis. A case without lesion gives the whole volume in its cube. The grey
values are scaled over the whole volume with the 2D rule
(:func:`~Rad4XCNNLogic.features.preprocessing.scale_intensity`).

:func:`cube_to_volume` puts a map on the cube (a CAM) back onto the volume's voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from Rad4XCNNLogic.cohort.manifest import LoadedCase
from Rad4XCNNLogic.errors import CaseError, first_line
from Rad4XCNNLogic.features.backbones import PreprocessConfig
from Rad4XCNNLogic.features.preprocessing import scale_intensity


@dataclass(frozen=True)
class CubeWindow:
    """Where a cube lies in its volume: ``start`` is its first sample in voxel coordinates ``(z, y, x)``,
    ``step`` the distance between two samples in voxels along each axis, ``size`` the samples a side."""

    start: tuple[float, float, float]
    step: tuple[float, float, float]
    size: int

    def coordinates(self) -> list[np.ndarray]:
        """The voxel coordinates ``[z, y, x]`` of the ``size**3`` samples, each ``(size, size, size)``."""
        grid = np.arange(self.size, dtype=np.float64)
        axes = [s + grid * d for s, d in zip(self.start, self.step, strict=True)]
        return np.meshgrid(*axes, indexing="ij")


def cube_window(mask: np.ndarray, spacing_zyx: Sequence[float], margin: float, size: int) -> CubeWindow:
    """The cube (isotropic samples, in mm) around the lesion's 3D box, grown by ``margin``; without lesion,
    around the whole volume.

    >>> m = np.zeros((4, 10, 10), bool); m[1:3, 2:8, 3:5] = True
    >>> w = cube_window(m, (3.0, 1.0, 1.0), 0.0, 6)
    >>> [round(v, 4) for v in w.step], [round(v, 4) for v in w.start]
    ([0.3333, 1.0, 1.0], [0.6667, 2.0, 1.0])
    """
    mask = np.asarray(mask, bool)
    lo, hi = [], []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            present = np.array([0, mask.shape[axis] - 1])
        lo.append((int(present[0]) - 0.5) * float(spacing_zyx[axis]))
        hi.append((int(present[-1]) + 0.5) * float(spacing_zyx[axis]))
    side = max(h - low for low, h in zip(lo, hi, strict=True)) * (1.0 + 2.0 * float(margin))
    sample = side / size  # mm per input voxel, the same along every axis
    centres = [(low + h) / 2.0 for low, h in zip(lo, hi, strict=True)]
    first = [c - side / 2.0 + 0.5 * sample for c in centres]  # the first sample's centre, in mm
    start = tuple(f / float(s) for f, s in zip(first, spacing_zyx, strict=True))
    step = tuple(sample / float(s) for s in spacing_zyx)
    return CubeWindow(start, step, int(size))  # type: ignore[arg-type]


def volume_cube(loaded: LoadedCase, config: PreprocessConfig) -> tuple[np.ndarray, CubeWindow]:
    """A volume case as a grey ``(size, size, size)`` float32 cube in [0, 1], and where it lies."""
    from scipy.ndimage import map_coordinates

    volume = loaded.image
    if getattr(volume, "ndim", 2) != 3:
        raise CaseError(loaded.case_id, "a 3D network needs a volume, not a 2D image")
    spacing_zyx = tuple(reversed(volume.spacing))
    mask = loaded.mask if loaded.case.has_lesion and loaded.mask.any() else np.zeros(volume.shape, bool)
    window = cube_window(mask, spacing_zyx, config.margin, config.input_size)
    scaled = scale_intensity(volume.array, config.intensity)
    cube = map_coordinates(scaled, window.coordinates(), order=1, mode="constant", cval=0.0)
    return cube.astype(np.float32, copy=False), window


def cube_to_volume(values: np.ndarray, window: CubeWindow, shape: Sequence[int]) -> np.ndarray:
    """A map on a cube back onto the volume's voxels (linear; 0 outside the cube), ``shape`` ``[z, y, x]``.

    >>> m = np.zeros((4, 10, 10), bool); m[1:3, 2:8, 3:5] = True
    >>> w = cube_window(m, (3.0, 1.0, 1.0), 0.0, 6)
    >>> back = cube_to_volume(np.ones((6, 6, 6)), w, m.shape)
    >>> bool(back[m].min() == 1.0), float(back[0, 0, 0])
    (True, 0.0)
    """
    from scipy.ndimage import map_coordinates

    grids = np.meshgrid(*[np.arange(int(n), dtype=np.float64) for n in shape], indexing="ij")
    where = [(g - s) / d for g, s, d in zip(grids, window.start, window.step, strict=True)]
    out = map_coordinates(np.asarray(values, np.float64), where, order=1, mode="nearest")
    inside = np.ones(out.shape, bool)
    for w in where:
        inside &= (w >= -0.5) & (w <= window.size - 0.5)
    return np.where(inside, out, 0.0).astype(np.float32)


class CubeDataset:
    """A map-style dataset of volume cases as grey cubes, for extraction and fine-tuning of 3D networks.

    The item protocol of :class:`~Rad4XCNNLogic.features.preprocessing.CaseDataset`: ``(index, cube, None)``
    or ``(index, None, problem)`` for a case that cannot be read. With ``augment`` (any truthy value) each
    axis is flipped half the time, from an RNG seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, cases: Sequence, config: PreprocessConfig, augment=None, seed: int = 0):
        self.cases, self.config = list(cases), config
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            cube, _ = volume_cube(self.cases[index].load(), self.config)
        except CaseError as exc:
            return index, None, exc.problem
        except (ValueError, RuntimeError, MemoryError) as exc:
            return index, None, f"preprocessing failed: {type(exc).__name__}: {first_line(exc, 200)}"
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            flips = tuple(axis for axis in range(3) if rng.random() < 0.5)
            if flips:
                cube = np.flip(cube, axis=flips)
        return index, np.ascontiguousarray(cube, dtype=np.float32), None


def network_input(loaded: LoadedCase, config: PreprocessConfig, model_name: str):
    """One case as a network's single input, normalised: the cube ``(1, S, S, S)`` of a 3D network, the
    crop ``(3, H, W)`` of a 2D network on a 2D image. A volume through a 2D network is several slices
    (2.5D), not one input: a :class:`CaseError` says so."""
    import torch

    from Rad4XCNNLogic.features.preprocessing import normalize_batch, preprocess_case
    from Rad4XCNNLogic.features.volume_nets import is_volume_net

    if is_volume_net(model_name):
        cube, _ = volume_cube(loaded, config)
        return normalize_batch(torch.from_numpy(cube)[None, None], config)[0]
    if getattr(loaded.image, "ndim", 2) == 3:
        raise CaseError(
            loaded.case_id, f"{model_name} sees a volume as several slices (2.5D), not as one input"
        )
    return preprocess_case(loaded, config)[0]
