"""The BUSI importer on a small BUSI-shaped folder made here."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob_image_and_mask, write_png

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.busi import import_busi
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.errors import Rad4XCNNError


@pytest.fixture
def busi_folder(tmp_path):
    root = tmp_path / "Dataset_BUSI_with_GT"
    for label, numbers in (("benign", [1, 2, 10]), ("malignant", [1, 3]), ("normal", [1, 2])):
        for n in numbers:
            image, mask = blob_image_and_mask(seed=n)
            write_png(root / label / f"{label} ({n}).png", np.stack([image] * 3, axis=-1))  # RGB like BUSI
            write_png(root / label / f"{label} ({n})_mask.png", mask if label != "normal" else mask * 0)
    second = np.zeros((60, 80), np.uint8)
    second[2:6, 2:6] = 255
    write_png(root / "benign" / "benign (2)_mask_1.png", second)
    write_png(root / "malignant" / "malignant (9)_mask.png", second)  # a mask without an image
    image, _ = blob_image_and_mask()
    write_png(root / "malignant" / "malignant (4).png", image)  # an image without a mask
    (root / "benign" / "notes.txt").write_text("ignored")
    return root


def test_import_pairs_images_and_masks(busi_folder, tmp_path):
    out = tmp_path / "out" / "busi.csv"
    result = import_busi(busi_folder, out)
    ids = result.cohort.case_ids
    assert ids == [
        "benign_001",
        "benign_002",
        "benign_010",
        "malignant_001",
        "malignant_003",
        "normal_001",
        "normal_002",
    ]
    assert result.multi_mask_cases == ["benign_002"]
    problems = {f.case_id: f.problem for f in result.cohort.failures}
    assert problems == {
        "malignant_004": "no mask file for image malignant (4).png",
        "malignant_009": "mask malignant (9)_mask.png has no image",
    }

    cohort = read_manifest(out, check_images=True)
    assert cohort.case_ids == ids and not cohort.failures
    two = cohort["benign_002"]
    assert [m.name for m in two.masks] == ["benign (2)_mask.png", "benign (2)_mask_1.png"]
    assert two.load().mask.sum() == 20 * 30 + 16
    assert [c.case_id for c in cohort if not c.has_lesion] == ["normal_001", "normal_002"]
    assert cohort.lesion_cases().case_ids == ids[:5]
    assert {c.label for c in cohort} == {"benign", "malignant", "normal"}


def test_cli_import(busi_folder, tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert main(["import-busi", str(busi_folder), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "7 cases (2 without a lesion" in text and "1 with several masks" in text
    # the fixture draws benign/malignant/normal (1) from one seed, and benign/normal (2) from another:
    # identical images, 3 + 1 pairs, listed
    assert "WARNING: 4 near-duplicate image pair(s); a split may put them on two sides:" in text
    assert "benign_001 (internal/unassigned) ~ malignant_001 (internal/unassigned): identical pixels" in text
    assert out.is_file()


def test_not_a_busi_folder(tmp_path, capsys):
    with pytest.raises(Rad4XCNNError, match="BUSI folder not found"):
        import_busi(tmp_path / "absent", tmp_path / "m.csv")
    (tmp_path / "flat").mkdir()
    assert main(["import-busi", str(tmp_path / "flat"), "--out", str(tmp_path / "m.csv")]) == 1
    assert "holds no class sub-folders" in capsys.readouterr().err
