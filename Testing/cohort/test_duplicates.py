"""Near-duplicate images: the pHash against edits that keep an image and against different images, and the
pairs across splits found in a real (synthetic) cohort written to disk."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from conftest import write_png

from Rad4XCNNLogic.cohort.duplicates import (
    DEFAULT_MAX_DISTANCE,
    content_hash,
    find_near_duplicates,
    format_duplicates,
    hamming_distance,
    perceptual_hash,
)
from Rad4XCNNLogic.cohort.imageio import read_image
from Rad4XCNNLogic.cohort.manifest import read_manifest


def _smooth_image(seed, shape=(120, 160)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.random(shape), 6)
    return ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)


def test_phash_survives_edits_and_separates_images():
    img = _smooth_image(0).astype(float)
    base = perceptual_hash(img)
    from scipy.ndimage import zoom

    edits = {
        "brighter": img * 0.9 + 20,
        "noisy": img + np.random.default_rng(1).normal(0, 3, img.shape),
        "resized": zoom(img, 0.75, order=1),
        "rgb": np.repeat(img[..., None], 3, axis=2),
    }
    for name, edited in edits.items():
        assert hamming_distance(base, perceptual_hash(edited)) <= DEFAULT_MAX_DISTANCE, name
    others = [hamming_distance(base, perceptual_hash(_smooth_image(s))) for s in range(1, 8)]
    assert min(others) > 2 * DEFAULT_MAX_DISTANCE
    # the DCT of a flipped image differs in the sign of its odd frequencies: not a duplicate
    assert hamming_distance(base, perceptual_hash(img[:, ::-1])) > DEFAULT_MAX_DISTANCE
    assert content_hash(img) == content_hash(img.copy()) != content_hash(img + 1)


def test_duplicates_across_splits_are_listed(synthetic_manifest, tmp_path):
    folder = synthetic_manifest.parent
    rows = pd.read_csv(synthetic_manifest, dtype=str, keep_default_na=False)
    cohort = read_manifest(synthetic_manifest)
    assert find_near_duplicates(cohort.cases)[0] == []  # 30 different images: no pair
    source = next(c for c in cohort if c.split == "train")
    # an exact copy in the external cohort, and a re-encoded, re-windowed copy in the internal test split
    copy = tmp_path / "copy.png"
    shutil.copy(source.image, copy)
    pixels = read_image(source.image, source.case_id).array.astype(float)
    near = write_png(tmp_path / "near.png", (pixels * 0.85 + 15).clip(0, 255).astype(np.uint8))
    mask = source.masks[0]
    extra = pd.DataFrame(
        [
            {"case_id": "dup_exact", "image": str(copy), "mask": str(mask), "label": source.label,
             "split": "test", "cohort": "external"},
            {"case_id": "dup_near", "image": str(near), "mask": str(mask), "label": source.label,
             "split": "test", "cohort": "internal"},
        ]
    )  # fmt: skip
    manifest = folder / "with_duplicates.csv"
    pd.concat([rows, extra]).to_csv(manifest, index=False)
    cohort = read_manifest(manifest)
    pairs, failures = find_near_duplicates(cohort.cases)
    assert failures == []
    found = {frozenset((p.case_a, p.case_b)): p for p in pairs}
    assert set(found) == {
        frozenset((source.case_id, "dup_exact")),
        frozenset((source.case_id, "dup_near")),
        frozenset(("dup_exact", "dup_near")),
    }
    exact = found[frozenset((source.case_id, "dup_exact"))]
    assert exact.identical and exact.distance == 0 and exact.across_splits
    assert not found[frozenset((source.case_id, "dup_near"))].identical
    text = format_duplicates(pairs)
    assert text.startswith("WARNING: 3 near-duplicate image pair(s) across splits:")
    assert f"{source.case_id} (internal/train)" in text and "dup_exact (external/test)" in text


def test_unreadable_images_are_failures_not_stops(make_case, tmp_path):
    from conftest import write_manifest_rows

    rows = [make_case("a"), make_case("b", seed=1)]
    path = write_manifest_rows(tmp_path / "m.csv", rows)
    cohort = read_manifest(path)
    (tmp_path / "img" / "b.png").write_bytes(b"not a png")
    pairs, failures = find_near_duplicates(cohort.cases)
    assert pairs == [] and [f.case_id for f in failures] == ["b"]
    assert format_duplicates([]) == "near-duplicate images: none"


def test_cohort_command_shows_duplicates_across_splits(synthetic_manifest, tmp_path, capsys):
    from Rad4XCNNLogic.cli import main

    rows = pd.read_csv(synthetic_manifest, dtype=str, keep_default_na=False)
    folder = synthetic_manifest.parent
    for column in ("image", "mask"):
        rows[column] = [str(folder / p) for p in rows[column]]
    first = rows.iloc[0]
    twin = {**first.to_dict(), "case_id": "twin", "split": "test", "cohort": "external"}
    manifest = tmp_path / "m.csv"
    pd.concat([rows, pd.DataFrame([twin])]).to_csv(manifest, index=False)
    assert main(["cohort", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: 1 near-duplicate image pair(s) across splits:" in out
    assert f"{first['case_id']} (internal/" in out and "twin (external/test): identical pixels" in out
    assert main(["cohort", str(manifest), "--no-duplicates"]) == 0
    assert "near-duplicate" not in capsys.readouterr().out
