"""Reading 3D volumes and their lesion masks through SimpleITK, keeping and checking their geometry.

Supported: NRRD, NIfTI (``.nii``, ``.nii.gz``), MHA/MHD and a DICOM series given as a folder (read with
GDCM's series ids; the folder must hold one series, and a missing slice, seen as non-uniform spacing along
the slice normal, is an error). A volume is a file whose three axes all hold more than one voxel (a
one-slice volume is a 2D image, read by :mod:`~Rad4XCNNLogic.cohort.imageio`; so is a multi-frame DICOM
file, a clip in time that the 2D reader refuses). The mask must lie on the
image's grid: same size, spacing, origin and direction (up to a small tolerance); any difference is a
one-line error naming the case and the difference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from Rad4XCNNLogic.errors import CaseError

#: Relative tolerance of the geometry comparison of an image and its mask (spacing, origin, direction).
GEOMETRY_TOLERANCE = 1e-4
#: How far (relative to the median) one slice gap of a DICOM series may differ before a slice is missing.
SLICE_GAP_TOLERANCE = 0.1


@dataclass(frozen=True)
class Volume:
    """A 3D grey volume and its physical geometry.

    ``array`` is indexed ``[slice, row, column]`` (numpy order, z then y then x); ``spacing`` and
    ``origin`` are in SimpleITK's (x, y, z) order, in millimetres; ``direction`` is the row-major 3x3
    direction matrix.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    meta: dict = field(default_factory=dict, compare=False)

    ndim = 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def voxel_volume(self) -> float:
        """The volume of one voxel in cubic millimetres."""
        return float(np.prod(self.spacing))

    def to_sitk(self, array: np.ndarray | None = None):
        """This volume (or ``array`` in its geometry) as a 3D ``SimpleITK.Image``."""
        import SimpleITK as sitk

        data = self.array if array is None else np.asarray(array)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        img = sitk.GetImageFromArray(data)
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction))
        return img


def _detail(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown reason")[:200]


def image_info(path: str | os.PathLike) -> tuple[int, tuple[float, ...]] | None:
    """``(dimensions, spacing)`` of an image file or DICOM folder from its header, without its pixels.

    A one-slice 3D file counts as 2D (it is read as a 2D image). None when the header cannot be read (the
    case then fails later, when it is loaded, with the reader's own message).
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        files = _series_files(path)
        if not files:
            return None
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
        return 3, tuple(float(s) for s in reader.GetSpacing())
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    # a multi-frame DICOM file is a cine clip (frames in time), not a volume: the 2D reader refuses it
    if len(size) == 3 and min(size) > 1 and path.suffix.lower() != ".dcm":
        return 3, tuple(float(s) for s in reader.GetSpacing())
    return 2, tuple(float(s) for s in reader.GetSpacing())[:2]


def _series_files(folder: Path) -> list[str]:
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(os.fspath(folder)) or ()
    if not ids:
        return []
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(os.fspath(folder), ids[0]))


def _read_series(folder: Path, case_id: str | None, what: str):
    """A DICOM series folder as one 3D image; a folder of several series or a missing slice is refused."""
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(os.fspath(folder)) or ()
    if not ids:
        raise CaseError(case_id, f"{what} folder {folder.name} holds no DICOM series")
    if len(ids) > 1:
        raise CaseError(
            case_id, f"{what} folder {folder.name} holds {len(ids)} DICOM series; give one series per folder"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(os.fspath(folder), ids[0])
    if len(files) < 2:
        raise CaseError(case_id, f"{what} folder {folder.name} holds a one-slice DICOM series, not a volume")
    positions = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise CaseError(case_id, f"cannot read {what} slice {Path(name).name}: {_detail(exc)}") from None
        positions.append(reader.GetOrigin())
        if len(positions) == 1:
            normal = np.asarray(reader.GetDirection()).reshape(3, 3)[:, 2]
    heights = np.asarray(positions, dtype=float) @ normal
    check_slice_gaps(np.sort(heights), case_id, f"{what} series {folder.name}")
    series = sitk.ImageSeriesReader()
    series.SetFileNames(files)
    try:
        return series.Execute()
    except RuntimeError as exc:
        raise CaseError(case_id, f"cannot read {what} series {folder.name}: {_detail(exc)}") from None


def check_slice_gaps(heights: Sequence[float], case_id: str | None, what: str) -> None:
    """Refuse slices whose positions along the normal are not evenly spaced (a slice missing or doubled).

    >>> try:
    ...     check_slice_gaps([0.0, 2.0, 4.0, 8.0], "ct01", "image series s1")
    ... except Exception as exc:
    ...     print(exc)
    case ct01: image series s1 has uneven slice gaps (2 to 4 mm): a slice is missing
    """
    gaps = np.diff(np.asarray(heights, dtype=float))
    if gaps.size == 0:
        return
    if np.any(np.abs(gaps) < 1e-6):
        raise CaseError(case_id, f"{what} has two slices at the same position")
    median = float(np.median(gaps))
    if np.any(np.abs(gaps - median) > SLICE_GAP_TOLERANCE * abs(median)):
        raise CaseError(
            case_id,
            f"{what} has uneven slice gaps ({gaps.min():.3g} to {gaps.max():.3g} mm): a slice is missing",
        )


def _read(path: Path, case_id: str | None, what: str):
    import SimpleITK as sitk

    if not path.exists():
        raise CaseError(case_id, f"{what} file not found: {path}")
    if path.is_dir():
        return _read_series(path, case_id, what)
    try:
        return sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        raise CaseError(case_id, f"cannot read {what} {path.name}: {_detail(exc)}") from None


def read_volume(path: str | os.PathLike, case_id: str | None = None) -> Volume:
    """Read a 3D volume (a file or a DICOM series folder) as float32 grey with its geometry.

    Examples
    --------
    >>> vol = read_volume("ct01.nrrd")  # doctest: +SKIP
    >>> vol.array.shape, vol.spacing  # doctest: +SKIP
    ((64, 128, 128), (0.8, 0.8, 2.0))
    """
    import SimpleITK as sitk

    path = Path(path)
    img = _read(path, case_id, "image")
    if img.GetDimension() != 3 or min(img.GetSize()) < 2:
        raise CaseError(case_id, f"image {path.name} of size {img.GetSize()} is not a 3D volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            case_id,
            f"image {path.name} has {img.GetNumberOfComponentsPerPixel()} components; "
            "a grey volume is expected",
        )
    array = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise CaseError(case_id, f"image {path.name} holds NaN or infinite voxels")
    meta = {"path": os.fspath(path), "components": 1}
    return Volume(
        array,
        tuple(float(s) for s in img.GetSpacing()),  # type: ignore[arg-type]
        tuple(float(o) for o in img.GetOrigin()),  # type: ignore[arg-type]
        tuple(float(d) for d in img.GetDirection()),
        meta,
    )


def _numbers(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def geometry_difference(img, like: Volume, what: str) -> str | None:
    """How ``img``'s grid differs from ``like``'s (size, spacing, origin, direction), or None."""
    size = tuple(int(s) for s in img.GetSize())
    want = tuple(reversed(like.shape))
    if size != want:
        return f"{what} size {_numbers(size)} differs from the image's {_numbers(want)}"
    scale = max(1.0, float(np.max(np.abs(like.spacing))))
    checks = (
        ("spacing", img.GetSpacing(), like.spacing, GEOMETRY_TOLERANCE * scale),
        ("origin", img.GetOrigin(), like.origin, GEOMETRY_TOLERANCE * scale * 10),
        ("direction", img.GetDirection(), like.direction, GEOMETRY_TOLERANCE * 10),
    )
    for name, got, expected, tol in checks:
        if np.max(np.abs(np.subtract(got, expected))) > tol:
            return f"{what} {name} {_numbers(got)} differs from the image's {_numbers(expected)}"
    return None


def read_volume_mask(
    paths: str | os.PathLike | Sequence[str | os.PathLike], like: Volume, case_id: str | None = None
) -> np.ndarray:
    """Read one or several binary 3D mask files on ``like``'s grid and merge them (logical OR).

    Each file must hold at most two distinct values (0 and one lesion value) and have the image's size,
    spacing, origin and direction.
    """
    import SimpleITK as sitk

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise CaseError(case_id, "no mask file given")
    merged = np.zeros(like.shape, dtype=bool)
    for p in paths:
        p = Path(p)
        img = _read(p, case_id, "mask")
        if img.GetDimension() != 3:
            raise CaseError(case_id, f"mask {p.name} is {img.GetDimension()}D but the image is a 3D volume")
        difference = geometry_difference(img, like, f"mask {p.name}")
        if difference:
            raise CaseError(case_id, difference)
        array = sitk.GetArrayFromImage(img)
        values = np.unique(array)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
            raise CaseError(
                case_id,
                f"mask {p.name} is not binary: {values.size} distinct values ({shown}); "
                "expected 0 for background and one lesion value",
            )
        merged |= array != 0
    return merged
