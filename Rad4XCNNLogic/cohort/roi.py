"""Lesion regions of interest shared by the deep-feature and CAM stages.

A lesion's bounding box is grown by a margin and made square around the lesion's centre; the square may
reach past the image border, where it is padded. The crop is resized to the model's input size, and
:meth:`SquareCrop.from_input` maps anything computed on the model input (a CAM, say) back into the original
image's pixel grid, so it overlays the image exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


def lesion_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box ``(row0, col0, row1, col1)`` (end exclusive) of the non-zero pixels of a 2D mask.

    Examples
    --------
    >>> m = np.zeros((5, 6), bool); m[1:3, 2:5] = True
    >>> lesion_bbox(m)
    (1, 2, 3, 5)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask is empty: no lesion to crop around")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def resize(array: np.ndarray, shape: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize a 2D (or ``(H, W, C)``) float array to ``shape`` = (rows, cols), pixel-centre aligned.

    Uses Pillow's resampling, which low-pass filters when shrinking (no aliasing of speckle), on float32
    data. ``interpolation`` is ``nearest`` (for masks), ``bilinear`` or ``bicubic``.
    """
    from PIL import Image

    if interpolation not in _RESAMPLE:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(_RESAMPLE)}")
    array = np.asarray(array)
    rows, cols = int(shape[0]), int(shape[1])
    if array.ndim == 3:
        return np.stack([resize(array[..., c], shape, interpolation) for c in range(array.shape[2])], axis=-1)
    if array.ndim != 2:
        raise ValueError(f"expected a 2D array, got shape {array.shape}")
    if array.shape == (rows, cols):
        return array.astype(np.float32, copy=True)
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    out = img.resize((cols, rows), resample=_RESAMPLE[interpolation])
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class SquareCrop:
    """A square window ``[top, top+side) x [left, left+side)`` on an image of ``image_shape`` (rows, cols).

    The window may extend beyond the image; those pixels are padded with a fill value when cropping and
    are dropped when mapping back.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((60, 80), bool); mask[20:40, 30:50] = True
    >>> crop = SquareCrop.around_mask(mask, margin=0.1); crop
    SquareCrop(top=18, left=28, side=24, image_shape=(60, 80))
    >>> crop.to_input(np.ones((60, 80)), 224).shape     # the model input
    (224, 224)
    >>> crop.from_input(np.ones((224, 224))).shape      # back in the image, 0 outside the crop
    (60, 80)
    """

    top: int
    left: int
    side: int
    image_shape: tuple[int, int]

    def __post_init__(self) -> None:
        if self.side < 1:
            raise ValueError(f"the crop side must be at least 1 pixel, got {self.side}")

    @classmethod
    def around_box(
        cls,
        box: tuple[int, int, int, int],
        image_shape: tuple[int, int],
        margin: float = 0.1,
        min_side: int = 1,
    ) -> SquareCrop:
        """The square centred on ``box`` whose side is its longer side plus ``margin`` of it on each side."""
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        r0, c0, r1, c1 = box
        height, width = r1 - r0, c1 - c0
        side = max(math.ceil(max(height, width) * (1.0 + 2.0 * margin)), int(min_side), 1)
        top = r0 - (side - height) // 2
        left = c0 - (side - width) // 2
        return cls(int(top), int(left), int(side), (int(image_shape[0]), int(image_shape[1])))

    @classmethod
    def around_mask(cls, mask: np.ndarray, margin: float = 0.1, min_side: int = 1) -> SquareCrop:
        """The square crop around a lesion mask (see :meth:`around_box`)."""
        return cls.around_box(lesion_bbox(mask), np.asarray(mask).shape, margin, min_side)

    @classmethod
    def whole_image(cls, image_shape: tuple[int, int]) -> SquareCrop:
        """The smallest square holding the whole image, centred (for cases without a lesion)."""
        rows, cols = int(image_shape[0]), int(image_shape[1])
        side = max(rows, cols)
        return cls(-((side - rows) // 2), -((side - cols) // 2), side, (rows, cols))

    @property
    def box_in_image(self) -> tuple[int, int, int, int]:
        """The part of the square inside the image, ``(row0, col0, row1, col1)`` end exclusive."""
        rows, cols = self.image_shape
        return (
            max(self.top, 0),
            max(self.left, 0),
            min(self.top + self.side, rows),
            min(self.left + self.side, cols),
        )

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """Pixels of padding needed (top, left, bottom, right)."""
        rows, cols = self.image_shape
        return (
            max(-self.top, 0),
            max(-self.left, 0),
            max(self.top + self.side - rows, 0),
            max(self.left + self.side - cols, 0),
        )

    def crop(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """The ``(side, side[, C])`` window of ``array``, padded with ``fill`` outside the image."""
        array = np.asarray(array)
        if tuple(array.shape[:2]) != self.image_shape:
            raise ValueError(f"expected an array of shape {self.image_shape}, got {array.shape[:2]}")
        out = np.full((self.side, self.side, *array.shape[2:]), fill, dtype=np.result_type(array, np.float32))
        r0, c0, r1, c1 = self.box_in_image
        if r1 > r0 and c1 > c0:
            out[r0 - self.top : r1 - self.top, c0 - self.left : c1 - self.left] = array[r0:r1, c0:c1]
        return out

    def to_input(
        self,
        array: np.ndarray,
        size: int | tuple[int, int],
        interpolation: str = "bilinear",
        fill: float = 0.0,
    ) -> np.ndarray:
        """Crop ``array`` and resize the window to the model input ``size`` (an int or (rows, cols))."""
        shape = (size, size) if isinstance(size, int) else tuple(size)
        return resize(self.crop(array, fill), shape, interpolation)

    def from_input(self, array: np.ndarray, interpolation: str = "bilinear", fill: float = 0.0) -> np.ndarray:
        """Map a model-input map back to the image's pixel grid (``fill`` outside the crop)."""
        array = np.asarray(array, dtype=np.float32)
        window = resize(array, (self.side, self.side), interpolation)
        out = np.full((*self.image_shape, *array.shape[2:]), fill, dtype=np.float32)
        r0, c0, r1, c1 = self.box_in_image
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] = window[r0 - self.top : r1 - self.top, c0 - self.left : c1 - self.left]
        return out

    def input_to_image(
        self, rows: np.ndarray, cols: np.ndarray, size: int | tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Map (fractional) pixel coordinates on the model input to image pixel coordinates."""
        shape = (size, size) if isinstance(size, int) else tuple(size)
        scale_r, scale_c = self.side / shape[0], self.side / shape[1]
        r = self.top + (np.asarray(rows, dtype=float) + 0.5) * scale_r - 0.5
        c = self.left + (np.asarray(cols, dtype=float) + 0.5) * scale_c - 0.5
        return r, c
