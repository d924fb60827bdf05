"""Shared fixtures: a small synthetic cohort and helpers that write test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """A 24-case internal + 6-case external synthetic cohort, written once per test session."""
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_cohort(out, n=24, n_external=6, seed=3, shape=(128, 160))


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def blob_image_and_mask(shape=(60, 80), box=(20, 30, 40, 60), seed=0):
    """A noisy grey image with a dark rectangle, and the rectangle's 0/255 mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 200, size=shape).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    r0, c0, r1, c1 = box
    image[r0:r1, c0:c1] //= 3
    mask[r0:r1, c0:c1] = 255
    return image, mask


@pytest.fixture
def make_case(tmp_path):
    """Write one PNG case (image and mask) and return a manifest row for it."""

    def _make(case_id: str, label: str = "benign", shape=(60, 80), box=(20, 30, 40, 60), seed=0, **extra):
        image, mask = blob_image_and_mask(shape, box, seed)
        write_png(tmp_path / "img" / f"{case_id}.png", image)
        write_png(tmp_path / "msk" / f"{case_id}_mask.png", mask)
        return {
            "case_id": case_id,
            "image": f"img/{case_id}.png",
            "mask": f"msk/{case_id}_mask.png",
            "label": label,
            **extra,
        }

    return _make


def write_manifest_rows(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path
