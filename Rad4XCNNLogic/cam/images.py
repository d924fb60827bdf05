"""Saliency maps in the image: a map on the model input carried back through the crop onto the image's
pixel grid, heat-coloured overlays, and the NRRD and PNG files of a case's maps (normalised and raw).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from Rad4XCNNLogic.cohort.manifest import LoadedCase
from Rad4XCNNLogic.cohort.roi import SquareCrop, resize

__all__ = [
    "CAM_SUBDIR",
    "cam_paths",
    "file_stem",
    "heat_colours",
    "map_to_image",
    "overlay_image",
    "raw_map_to_image",
    "write_case_maps",
    "write_volume",
]

CAM_SUBDIR = "cam"


# --------------------------------------------------------------------------------------------- geometry
def map_to_image(cam: np.ndarray, crop: SquareCrop) -> np.ndarray:
    """A map on the model input (square, any size) carried back onto the image's pixel grid.

    Undoes the resize (bilinear), the crop and the padding with :meth:`SquareCrop.from_input`: the result
    has the image's shape, the map's values inside the crop's part of the image, and 0 outside the crop
    (the model did not see those pixels).

    Examples
    --------
    >>> crop = SquareCrop(top=-10, left=20, side=60, image_shape=(80, 120))
    >>> back = map_to_image(np.ones((32, 32), np.float32), crop)
    >>> back.shape, float(back[0:50, 20:80].min()), float(back.sum())
    ((80, 120), 1.0, 3000.0)
    """
    back = crop.from_input(np.asarray(cam, dtype=np.float32), interpolation="bilinear", fill=0.0)
    return np.clip(back, 0.0, None, out=back)


# ----------------------------------------------------------------------------------------------- overlay
def heat_colours(values: np.ndarray) -> np.ndarray:
    """The ``jet`` colour map of values in [0, 1], as float RGB: blue - cyan - yellow - red.

    Written out (three clipped ramps) so that the CAM stage needs no matplotlib. Jet's dark ends are left
    out (0 is pure blue, 1 pure red) so that the maximum stands out on a grey image.
    """
    v = 0.125 + 0.75 * np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # red, green, blue
    return np.clip(1.5 - np.abs(4.0 * v - 4.0 * centres), 0.0, 1.0)


def overlay_image(
    grey: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None = None,
    box: tuple[int, int, int, int] | None = None,
    opacity: float = 0.6,
) -> np.ndarray:
    """An RGB ``uint8`` picture: the grey image under the heat-coloured map, with the lesion contour.

    The map's colour is blended in proportion to its value (``opacity * cam``), so the image shows through
    where the map is low. The lesion contour is green; the crop the model saw (``box``, row0, col0, row1,
    col1) is outlined with a dotted white line.
    """
    grey = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 1.0)
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    alpha = (float(opacity) * cam)[..., None]
    rgb = (1.0 - alpha) * grey[..., None] + alpha * heat_colours(cam)
    out = np.round(rgb * 255.0).astype(np.uint8)
    if box is not None:
        r0, c0, r1, c1 = box
        dots = np.zeros(grey.shape, bool)
        for r in (r0, r1 - 1):
            if 0 <= r < grey.shape[0]:
                dots[r, c0:c1:2] = True
        for c in (c0, c1 - 1):
            if 0 <= c < grey.shape[1]:
                dots[r0:r1:2, c] = True
        out[dots] = (255, 255, 255)
    if mask is not None and np.any(mask):
        from scipy.ndimage import binary_erosion

        mask = np.asarray(mask, bool)
        contour = mask & ~binary_erosion(mask, border_value=0)
        out[contour] = (0, 255, 0)
    return out


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    from Rad4XCNNLogic.infra.storage import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    return path


def raw_map_to_image(raw: np.ndarray, crop: SquareCrop, input_size: int) -> np.ndarray:
    """A raw map on the target layer's grid ``(h, w)`` carried onto the image's pixel grid, values kept.

    Resized to the model input (bilinear, as pytorch-grad-cam resizes its maps), then through the crop as
    :func:`map_to_image`, but neither clipped nor scaled: negative values, constants and NaN stay visible.
    Outside the crop it is 0.

    Examples
    --------
    >>> crop = SquareCrop(top=0, left=0, side=8, image_shape=(8, 8))
    >>> float(raw_map_to_image(np.full((2, 2), -3.0), crop, 16).min())
    -3.0
    """
    raw = np.asarray(raw, dtype=np.float32)
    up = (
        resize(raw, (int(input_size), int(input_size)), "bilinear") if raw.shape != (input_size,) * 2 else raw
    )
    return crop.from_input(up, interpolation="bilinear", fill=0.0)


def file_stem(case_id: str) -> str:
    """A file-system safe form of a case id (a short hash keeps two ids apart once sanitised)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"
    if safe != case_id:
        safe += "_" + hashlib.sha1(case_id.encode("utf-8")).hexdigest()[:6]
    return safe


def cam_paths(out_dir: str | os.PathLike, case_id: str, method: str) -> dict[str, Path]:
    """Where a case's map goes: ``{"nrrd": <out>/cam/<case>_<method>.nrrd, "raw": ..._raw.nrrd,
    "png": ....png}``."""
    from Rad4XCNNLogic.cam.methods import METHODS

    stem = f"{file_stem(case_id)}_{METHODS[method].file_tag}"
    folder = Path(out_dir) / CAM_SUBDIR
    return {
        "nrrd": folder / f"{stem}.nrrd",
        "raw": folder / f"{stem}_raw.nrrd",
        "png": folder / f"{stem}.png",
    }


def write_case_maps(
    out_dir: str | os.PathLike,
    loaded: LoadedCase,
    maps: dict[str, np.ndarray],
    crop: SquareCrop | None = None,
    intensity: str = "auto",
    raw_maps: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Path]]:
    """Write one case's maps (in image geometry) as NRRD, in the image's size, spacing, origin and
    direction, and as PNG overlays, with each raw map (``raw_maps``, see :func:`raw_map_to_image`) beside
    its normalised one; returns ``{method: {"nrrd": path, "png": path[, "raw": path]}}``."""
    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.features.preprocessing import scale_intensity

    grey = scale_intensity(loaded.image.array, intensity)
    mask = loaded.mask if loaded.case.has_lesion else None
    box = crop.box_in_image if crop is not None else None
    written = {}
    for method, cam in maps.items():
        paths = cam_paths(out_dir, loaded.case_id, method)
        write_image(paths["nrrd"], np.asarray(cam, dtype=np.float32), like=loaded.image)
        _write_png(paths["png"], overlay_image(grey, cam, mask, box))
        raw = (raw_maps or {}).get(method)
        if raw is not None:
            write_image(paths["raw"], np.asarray(raw, dtype=np.float32), like=loaded.image)
        else:
            del paths["raw"]
        written[method] = paths
    return written


def write_volume(path: str | os.PathLike, array: np.ndarray, like) -> Path:
    """Write ``array`` (``[z, y, x]``) as an NRRD in ``like``'s geometry (a :class:`Volume`), atomically."""
    import SimpleITK as sitk

    from Rad4XCNNLogic.infra.storage import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        target = tmp.with_name(tmp.name + ".nrrd")
        sitk.WriteImage(like.to_sitk(np.asarray(array, np.float32)), os.fspath(target), True)
        os.replace(target, tmp)
    return path
