"""A tiny folder shaped like the real BUSI data set, made at test time: RGB PNGs of varied sizes, masks in
the three PNG modes BUSI mixes (1-bit, RGB, RGBA with 0/255), extra ``_mask_1`` files, empty ``normal``
masks, and planted near-duplicates (one synthetic scan cropped and shifted) including one across labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: (label, number) of each case; sizes vary like BUSI's (here 70-96 wide, 58-76 high)
CASES = (
    [("benign", n) for n in range(1, 8)]
    + [("malignant", n) for n in range(1, 7)]
    + [("normal", 1), ("normal", 2)]
)
#: planted near-duplicates: (copy, original); malignant (6) copies benign (3): a label conflict
DUPLICATES = {("benign", 7): ("benign", 1), ("malignant", 6): ("benign", 3)}
#: cases with a second mask file (``_mask_1``), merged as the union
EXTRA_MASKS = [("benign", 2)]
MASK_MODES = ("1", "RGB", "RGBA", "L")


def case_id(label: str, number: int) -> str:
    return f"{label}_{number:03d}"


def _scan(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """A smooth speckled grey scan with a dark oval lesion, 8-bit."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    h, w = shape
    field = gaussian_filter(rng.normal(size=(h, w)), 6) * 12
    field += np.linspace(0, 1, h)[:, None] * rng.uniform(-1, 1) + np.linspace(0, 1, w)[None, :] * rng.uniform(
        -1, 1
    )
    img = 110 + 60 * field / (np.abs(field).max() + 1e-9) + rng.normal(0, 6, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def _lesion(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    h, w = shape
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / (0.18 * h)) ** 2 + ((xx - cx) / (0.22 * w)) ** 2 <= 1


def _save(path: Path, array: np.ndarray, mode: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "1":
        Image.fromarray(array.astype(bool)).convert("1").save(path)
    elif mode == "L":
        Image.fromarray((array != 0).astype(np.uint8) * 255, "L").save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([(array != 0).astype(np.uint8) * 255] * 3, -1), "RGB").save(path)
    elif mode == "RGBA":
        rgba = np.zeros((*array.shape, 4), np.uint8)
        rgba[..., :3] = (array != 0)[..., None] * 255
        rgba[..., 3] = 255  # opaque everywhere, as BUSI's RGBA masks
        Image.fromarray(rgba, "RGBA").save(path)
    elif mode == "image":
        Image.fromarray(np.stack([array] * 3, -1), "RGB").save(path)  # grey stored as RGB, like BUSI
    else:  # pragma: no cover - a typo in a test
        raise ValueError(mode)


def make_busi_like(root: Path, layout: str = "busi") -> Path:
    """Write the folder; ``layout``: ``busi`` (images and masks side by side), ``masks`` or ``mask``
    (``<class>/images`` and ``<class>/masks`` or ``<class>/mask``, mask names keeping ``_mask``)."""
    root = Path(root)
    originals: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for i, (label, number) in enumerate(CASES):
        shape = (58 + 3 * (i % 7), 70 + 2 * ((i * 5) % 14))
        if (label, number) in DUPLICATES:
            image, lesion = originals[DUPLICATES[(label, number)]]
            image, lesion = image[2:-1, 3:-2], lesion[2:-1, 3:-2]  # the same scan, cropped and shifted
        else:
            image, lesion = _scan(i, shape), _lesion(shape, i)
        originals[(label, number)] = (image, lesion)
        if label == "normal":
            lesion = np.zeros_like(lesion)
        folder = root / label
        image_dir, mask_dir = (folder, folder) if layout == "busi" else (folder / "images", folder / layout)
        name = f"{label} ({number})"
        _save(image_dir / f"{name}.png", image, "image")
        _save(mask_dir / f"{name}_mask.png", lesion, MASK_MODES[i % len(MASK_MODES)])
        if (label, number) in EXTRA_MASKS:
            extra = np.zeros_like(lesion)
            extra[1:5, 1:5] = True
            _save(mask_dir / f"{name}_mask_1.png", extra, "RGBA")
    return root
