"""3D volumes: the formats read with their geometry, DICOM series, the mask's geometry checked, one-line
errors naming the case, 2D and 3D not mixed, and the synthetic 3D cohort."""

from __future__ import annotations

import contextlib
import locale

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from Rad4XCNNLogic.cohort.manifest import Case, format_summary, read_manifest
from Rad4XCNNLogic.cohort.volumes import Volume, read_volume
from Rad4XCNNLogic.errors import CaseError, Rad4XCNNError
from Testing.conftest import write_manifest_rows, write_png

SPACING = (0.7, 0.7, 2.5)
ORIGIN = (-10.0, 5.0, 30.0)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _volume(array, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _case_arrays(seed=0, shape=(8, 20, 24)):
    rng = np.random.default_rng(seed)
    image = rng.integers(-100, 300, size=shape).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 5:12, 6:15] = 1
    return image, mask


def _write_case(root, case_id, suffix=".nrrd", mask_spacing=SPACING, mask_shape=None, empty=False):
    image, mask = _case_arrays()
    if mask_shape is not None:
        mask = np.zeros(mask_shape, np.uint8)
        mask[1:3, 1:4, 1:4] = 1
    if empty:
        mask[:] = 0
    (root / "img").mkdir(exist_ok=True)
    (root / "msk").mkdir(exist_ok=True)
    sitk.WriteImage(_volume(image), str(root / "img" / f"{case_id}{suffix}"), True)
    sitk.WriteImage(_volume(mask, spacing=mask_spacing), str(root / "msk" / f"{case_id}{suffix}"), True)
    return {
        "case_id": case_id,
        "image": f"img/{case_id}{suffix}",
        "mask": f"msk/{case_id}{suffix}",
        "label": "a",
    }


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz", ".mha", ".mhd"])
def test_volume_formats_keep_voxels_and_geometry(tmp_path, suffix):
    row = _write_case(tmp_path, "ct01", suffix)
    manifest = write_manifest_rows(tmp_path / "m.csv", [row])
    cohort = read_manifest(manifest)
    assert cohort.cases[0].dims == 3
    loaded = cohort.cases[0].load()
    image, mask = _case_arrays()
    assert isinstance(loaded.image, Volume)
    np.testing.assert_array_equal(loaded.image.array, image.astype(np.float32))
    np.testing.assert_array_equal(loaded.mask, mask.astype(bool))
    np.testing.assert_allclose(loaded.image.spacing, SPACING, rtol=1e-6)
    if suffix.startswith(".nii"):  # NIfTI stores orientation in RAS: SimpleITK gives it back in LPS
        return
    np.testing.assert_allclose(loaded.image.origin, ORIGIN, rtol=1e-6)
    np.testing.assert_allclose(loaded.image.direction, DIRECTION, atol=1e-6)


def test_mask_geometry_mismatch_is_one_line_naming_case_and_difference(tmp_path):
    rows = [
        _write_case(tmp_path, "ct01", mask_spacing=(0.7, 0.7, 2.0)),
        _write_case(tmp_path, "ct02", mask_shape=(8, 20, 20)),
        _write_case(tmp_path, "ct03", empty=True),
        _write_case(tmp_path, "ct04"),
    ]
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows), check_images=True)
    assert cohort.case_ids == ["ct04"]
    problems = {f.case_id: f.problem for f in cohort.failures}
    assert problems["ct01"] == "mask ct01.nrrd spacing (0.7, 0.7, 2) differs from the image's (0.7, 0.7, 2.5)"
    assert problems["ct02"] == "mask ct02.nrrd size (20, 20, 8) differs from the image's (24, 20, 8)"
    assert problems["ct03"].startswith("mask is empty")
    assert all("\n" not in p for p in problems.values())


def test_two_d_and_three_d_in_one_manifest_is_refused(tmp_path):
    image, mask = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    mask[5:10, 5:10] = 255
    write_png(tmp_path / "img" / "us01.png", image)
    write_png(tmp_path / "msk" / "us01.png", mask)
    rows = [
        {"case_id": "us01", "image": "img/us01.png", "mask": "msk/us01.png", "label": "a"},
        _write_case(tmp_path, "ct01"),
    ]
    with pytest.raises(
        Rad4XCNNError, match=r"mixes 2D images and 3D volumes \(case us01 is 2D, case ct01 is 3D\)"
    ):
        read_manifest(write_manifest_rows(tmp_path / "m.csv", rows))


@contextlib.contextmanager
def _keep_locale():
    """GDCM's DICOM writer sets the C locale (reading does not): restore it for the tests after these."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series(folder, array, spacing=SPACING, skip=None):
    with _keep_locale():
        _write_slices(folder, array, spacing, skip)


def _write_slices(folder, array, spacing, skip):
    folder.mkdir(parents=True)
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(array.shape[0]):
        if k == skip:
            continue
        z = ORIGIN[2] + k * spacing[2]
        slice_img = sitk.GetImageFromArray(array[k : k + 1])
        slice_img.SetSpacing(spacing)
        slice_img.SetOrigin((ORIGIN[0], ORIGIN[1], z))
        for tag, value in (
            ("0020|000e", uid),
            ("0020|000d", uid + ".1"),
            ("0008|0060", "CT"),
            ("0020|0032", f"{ORIGIN[0]}\\{ORIGIN[1]}\\{z}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(k + 1)),
            ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
            ("0018|0050", str(spacing[2])),
        ):
            slice_img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_img)


def test_dicom_series_folder_is_read_and_a_missing_slice_refused(tmp_path):
    image, mask = _case_arrays()
    _write_series(tmp_path / "ct01", image)
    _write_series(tmp_path / "ct02", image, skip=4)
    whole = read_volume(tmp_path / "ct01", "ct01")
    np.testing.assert_array_equal(whole.array, image.astype(np.float32))
    np.testing.assert_allclose(whole.spacing, SPACING, rtol=1e-4)
    with pytest.raises(
        CaseError, match=r"^case ct02: image series ct02 has uneven slice gaps .*a slice is missing$"
    ):
        read_volume(tmp_path / "ct02", "ct02")
    # the manifest takes the folder as the image; the mask lies on the series' grid
    mask_img = _volume(mask, spacing=whole.spacing, origin=whole.origin, direction=whole.direction)
    sitk.WriteImage(mask_img, str(tmp_path / "ct01_mask.nrrd"))
    rows = [{"case_id": "ct01", "image": "ct01", "mask": "ct01_mask.nrrd", "label": "a"}]
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows), check_images=True)
    assert cohort.case_ids == ["ct01"] and cohort.cases[0].dims == 3


def test_summary_names_volumes_and_spacing(tmp_path):
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes

    manifest = make_synthetic_volumes(tmp_path, n=4, shape=(24, 24, 10), spacing=(0.8, 0.8, 2.0), seed=1)
    cohort = read_manifest(manifest)
    assert cohort.summary()["dims"] == 3
    assert cohort.summary()["spacing_range"] == [[0.8, 0.8], [0.8, 0.8], [2.0, 2.0]]
    assert "3D volumes, voxel spacing 0.8 x 0.8 x 2 mm" in format_summary(cohort)
    factors = pd.read_csv(manifest.parent / "factors.csv", index_col="case_id")
    loaded = cohort.cases[0].load()
    voxel = loaded.image.voxel_volume
    assert loaded.mask.sum() * voxel == pytest.approx(factors.loc[cohort.case_ids[0], "lesion_volume_mm3"])
    # same seed, same files
    again = make_synthetic_volumes(tmp_path / "again", n=4, shape=(24, 24, 10), seed=1)
    assert (tmp_path / "images" / "vol0001.nrrd").read_bytes() == (
        again.parent / "images" / "vol0001.nrrd"
    ).read_bytes()
    # read without checking the files (a stage command reading a run's cohort.csv): still volumes, known
    # from the first header, so that splitting skips the 2D image hash and training takes 3D inputs
    unchecked = read_manifest(manifest, check_files=False)
    assert unchecked.dims == 3 and all(c.dims == 3 for c in unchecked.cases)
    (tmp_path / "images" / "vol0001.nrrd").unlink()
    assert read_manifest(manifest, check_files=False).dims == 3  # the first readable header decides


def test_two_d_cases_keep_their_reading(tmp_path, make_case):
    manifest = write_manifest_rows(tmp_path / "m.csv", [make_case("us01")])
    case = read_manifest(manifest).cases[0]
    assert case.dims == 2 and "dims" not in read_manifest(manifest).summary()
    assert type(case.load().image).__name__ == "Image2D"
    assert Case("x", case.image, case.masks).load().image.shape == (60, 80)  # no header read beforehand


def test_a_multi_frame_dicom_file_stays_a_refused_2d_case(tmp_path, make_case):
    image, _ = _case_arrays()
    with _keep_locale():
        sitk.WriteImage(sitk.GetImageFromArray(image.astype(np.uint8)), str(tmp_path / "clip.dcm"))
    row = make_case("us01")
    manifest = write_manifest_rows(tmp_path / "m.csv", [row, {**row, "case_id": "clip", "image": "clip.dcm"}])
    cohort = read_manifest(manifest, check_images=True)
    assert cohort.case_ids == ["us01"]
    assert "multi-frame DICOM" in cohort.failures[0].problem
