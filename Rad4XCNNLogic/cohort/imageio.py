"""Reading and writing 2D images and lesion masks through SimpleITK, keeping their geometry.

Supported: PNG, JPEG, BMP, TIFF, NRRD, NIfTI and single-frame DICOM. Colour images become grey by the rule
of :func:`to_grey`; a one-slice 3D volume becomes a 2D image. Spacing, origin and direction are kept where the
format stores them (PNG/JPEG/BMP carry none: unit spacing, zero origin).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: ITU-R BT.601 luma weights used to turn RGB into grey (the rule of most ultrasound and PACS viewers).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Image2D:
    """A 2D grey image and its physical geometry.

    ``array`` is indexed ``[row, column]`` (numpy order, y then x); ``spacing``, ``origin`` are in
    SimpleITK's (x, y) order, in millimetres; ``direction`` is the row-major 2x2 direction matrix.
    """

    array: np.ndarray
    spacing: tuple[float, float] = (1.0, 1.0)
    origin: tuple[float, float] = (0.0, 0.0)
    direction: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 1.0)
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    def with_array(self, array: np.ndarray) -> Image2D:
        """The same geometry with another pixel array of the same shape."""
        array = np.asarray(array)
        if array.shape[:2] != self.shape:
            raise ValueError(f"expected an array of shape {self.shape}, got {array.shape}")
        return Image2D(array, self.spacing, self.origin, self.direction, dict(self.meta))

    def to_sitk(self, array: np.ndarray | None = None):
        """This image (or ``array`` in its geometry) as a 2D ``SimpleITK.Image``."""
        import SimpleITK as sitk

        data = self.array if array is None else np.asarray(array)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        img = sitk.GetImageFromArray(data, isVector=data.ndim == 3)
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction))
        return img


def to_grey(array: np.ndarray) -> np.ndarray:
    """Turn an ``(H, W)`` or ``(H, W, C)`` array into a float32 grey ``(H, W)`` array.

    The rule: a grey image is kept as it is. For 2 or 4 components the last one (alpha) is dropped. When
    all colour channels are equal (grey stored as RGB, as most ultrasound exports do) the first channel is
    taken exactly; otherwise grey = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma).
    """
    array = np.asarray(array)
    if array.ndim == 2:
        return array.astype(np.float32, copy=False)
    if array.ndim != 3:
        raise ValueError(f"expected a 2D grey or colour image, got an array of shape {array.shape}")
    channels = array.shape[2]
    if channels in (2, 4):
        array = array[..., : channels - 1]
        channels -= 1
    if channels == 1 or all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, channels)):
        return array[..., 0].astype(np.float32)
    if channels != 3:
        raise ValueError(f"cannot turn an image with {channels} components into grey")
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float64)
    return (array.astype(np.float64) @ weights).astype(np.float32)


def _read_sitk(path: Path, case_id: str | None, what: str):
    import SimpleITK as sitk

    from Rad4XCNNLogic.errors import CaseError

    if not path.exists():
        raise CaseError(case_id, f"{what} file not found: {path}")
    if path.is_dir():
        raise CaseError(case_id, f"{what} path is a folder, not a file: {path}")
    try:
        return sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line for line in reversed(reason) if line.strip()), "unknown reason")
        raise CaseError(case_id, f"cannot read {what} {path.name}: {detail.strip()[:200]}") from None


def _as_2d(img, path: Path, case_id: str | None, what: str):
    """Return (array, spacing, origin, direction) of a 2D image, or of a one-slice 3D volume."""
    import SimpleITK as sitk

    from Rad4XCNNLogic.errors import CaseError

    dim = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(img)
    if dim == 2:
        return array, img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    if dim == 3:
        size = img.GetSize()
        thin = [axis for axis in range(3) if size[axis] == 1]
        if not thin:
            kind = "multi-frame DICOM" if path.suffix.lower() == ".dcm" else "3D volume"
            raise CaseError(
                case_id, f"{what} {path.name} is a {kind} of size {size}; a 2D image (one frame) is expected"
            )
        # keep the two in-plane axes; numpy axis = 2 - sitk axis
        axis = thin[-1] if 2 not in thin else 2
        keep = [a for a in range(3) if a != axis]
        array = np.take(array, 0, axis=2 - axis)
        spacing = tuple(img.GetSpacing()[a] for a in keep)
        origin = tuple(img.GetOrigin()[a] for a in keep)
        d = np.asarray(img.GetDirection()).reshape(3, 3)
        direction = tuple(d[np.ix_(keep, keep)].ravel())
        if ncomp > 1 and array.ndim != 3:
            raise CaseError(case_id, f"{what} {path.name} has an unexpected pixel layout")
        return array, spacing, origin, direction
    raise CaseError(case_id, f"{what} {path.name} has {dim} dimensions; a 2D image is expected")


def read_image(path: str | os.PathLike, case_id: str | None = None) -> Image2D:
    """Read a 2D image as float32 grey with its geometry.

    Parameters
    ----------
    path : path to a PNG/JPEG/BMP/TIFF/NRRD/NIfTI/DICOM (single frame) file.
    case_id : named in the error message when the file is missing or unreadable.

    Examples
    --------
    >>> img = read_image("case001.png")  # doctest: +SKIP
    >>> img.array.shape, img.spacing  # doctest: +SKIP
    ((480, 640), (1.0, 1.0))
    """
    from Rad4XCNNLogic.errors import CaseError

    path = Path(path)
    img = _read_sitk(path, case_id, "image")
    array, spacing, origin, direction = _as_2d(img, path, case_id, "image")
    try:
        grey = to_grey(array)
    except ValueError as exc:
        raise CaseError(case_id, f"image {path.name}: {exc}") from None
    if not np.isfinite(grey).all():
        raise CaseError(case_id, f"image {path.name} holds NaN or infinite pixels")
    meta = {"path": os.fspath(path), "components": img.GetNumberOfComponentsPerPixel()}
    return Image2D(
        grey,
        (float(spacing[0]), float(spacing[1])),
        (float(origin[0]), float(origin[1])),
        tuple(float(v) for v in direction),
        meta,
    )


def read_mask(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    shape: tuple[int, int] | None = None,
    case_id: str | None = None,
) -> np.ndarray:
    """Read one or several binary mask files and merge them (logical OR) into one boolean ``(H, W)`` mask.

    Each file must hold at most two distinct values (background 0 and one lesion value, e.g. 1 or 255).
    1-bit and grey (L) PNGs are read as they are; colour masks go through :func:`mask_plane` (the alpha
    channel of LA/RGBA is dropped unless it alone draws the lesion; colour channels that agree are read
    through the first, others as "nonzero in any"). With ``shape`` given, every mask must have that size.
    """
    from Rad4XCNNLogic.errors import CaseError

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise CaseError(case_id, "no mask file given")
    merged: np.ndarray | None = None
    for p in paths:
        p = Path(p)
        img = _read_sitk(p, case_id, "mask")
        array, *_ = _as_2d(img, p, case_id, "mask")
        array = mask_plane(array)
        values = _distinct_values(array)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            shown = ", ".join(str(v) for v in values[:5]) + (", ..." if values.size > 5 else "")
            raise CaseError(
                case_id,
                f"mask {p.name} is not binary: {values.size} distinct values ({shown}); "
                "expected 0 for background and one lesion value",
            )
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise CaseError(
                case_id,
                f"mask {p.name} has size {array.shape[1]}x{array.shape[0]} but the image is "
                f"{shape[1]}x{shape[0]} (width x height)",
            )
        current = array != 0
        if merged is not None and merged.shape != current.shape:
            raise CaseError(case_id, f"mask {p.name} has another size than the case's other mask files")
        merged = current if merged is None else (merged | current)
    assert merged is not None
    return merged


def mask_plane(array: np.ndarray) -> np.ndarray:
    """The one plane of a mask file's pixels that holds the lesion.

    A grey mask is kept. With 2 or 4 components (LA, RGBA) the last is alpha: it is dropped, unless the
    colour channels are constant and alpha varies (a mask drawn in the alpha channel only), when alpha is
    the mask. Colour channels that agree (BUSI's RGB and RGBA masks: 0/255 in R, G and B) are read through
    the first; channels that differ (a lesion drawn in one colour) count as "nonzero in any channel".

    Examples
    --------
    >>> rgba = np.zeros((2, 2, 4), np.uint8); rgba[..., 3] = 255; rgba[0, 0, :3] = 255
    >>> mask_plane(rgba).tolist()  # the opaque background is not lesion
    [[255, 0], [0, 0]]
    >>> alpha_only = np.zeros((2, 2, 4), np.uint8); alpha_only[1, 1, 3] = 255
    >>> mask_plane(alpha_only).tolist()
    [[0, 0], [0, 255]]
    """
    if array.ndim != 3:
        return array
    channels = array.shape[2]
    if channels in (2, 4):
        colour, alpha = array[..., : channels - 1], array[..., channels - 1]
        constant_colour = bool((colour == colour.flat[0]).all())
        if constant_colour and not bool((alpha == alpha.flat[0]).all()):
            return alpha
        array = colour
    if all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, array.shape[2])):
        return array[..., 0]
    return np.any(array != 0, axis=2).astype(np.uint8)


def _distinct_values(array: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an array; for 8-bit masks (the usual case) a histogram, not a sort."""
    if array.dtype == np.uint8:
        return np.flatnonzero(np.bincount(array.ravel(), minlength=256)).astype(np.uint8)
    return np.unique(array)


def write_image(path: str | os.PathLike, array: np.ndarray, like: Image2D | None = None) -> Path:
    """Write ``array`` to ``path`` (format from the suffix), in ``like``'s geometry when given, atomically."""
    array = np.asarray(array)
    ref = like if like is not None else Image2D(array if array.ndim == 2 else array[..., 0])
    return write_sitk(path, ref.to_sitk(array))


def write_sitk(path: str | os.PathLike, img) -> Path:
    """Write a ``SimpleITK.Image`` to ``path`` atomically, compressed, in the format of its suffix."""
    import SimpleITK as sitk

    from Rad4XCNNLogic.infra.storage import atomic_path

    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path) as tmp:
        target = tmp.with_name(tmp.name + suffix)
        try:
            sitk.WriteImage(img, os.fspath(target), True)
            os.replace(target, tmp)
        finally:
            if target.exists():
                target.unlink()
    return path


#: PNG colour types (the IHDR byte) by name; a 1-bit grey PNG is ``1``.
_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def image_info(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """(width, height, mode) of an image file without decoding it: the PNG header's size, and its colour
    type as a mode (``1`` for 1-bit grey, ``L``, ``RGB``, ``P``, ``LA``, ``RGBA``; ``L16`` etc. for 16 bits);
    other formats through SimpleITK's header (mode ``<n>-component``). None when the header is unreadable.

    Examples
    --------
    >>> image_info("benign (1).png")  # doctest: +SKIP
    (562, 471, 'RGB')
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        depth, colour = head[24], head[25]
        mode = _PNG_MODES.get(colour, f"colour type {colour}")
        if colour == 0 and depth == 1:
            mode = "1"
        elif depth == 16:
            mode += "16"
        return width, height, mode
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    return int(size[0]), int(size[1]), f"{reader.GetNumberOfComponents()}-component"
