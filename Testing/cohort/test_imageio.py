"""Readers for every supported format, geometry, grey conversion and mask checks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from Rad4XCNNLogic.cohort.imageio import LUMA_WEIGHTS, Image2D, read_image, read_mask, to_grey, write_image
from Rad4XCNNLogic.errors import CaseError


def _sitk_image(array, spacing=(0.3, 0.7), origin=(-12.5, 4.0)):
    img = sitk.GetImageFromArray(array, isVector=array.ndim == 3)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


@pytest.fixture
def grey():
    return np.random.default_rng(0).integers(0, 255, size=(37, 53)).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_8bit_formats_read_exactly(tmp_path, grey, suffix):
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(path))
    img = read_image(path)
    assert img.array.dtype == np.float32
    assert img.shape == (37, 53)
    np.testing.assert_array_equal(img.array, grey.astype(np.float32))


def test_jpeg_reads_close_to_source(tmp_path):
    smooth = np.tile(np.linspace(20, 230, 64, dtype=np.float64), (48, 1)).astype(np.uint8)
    path = tmp_path / "img.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(smooth), str(path))
    img = read_image(path)
    assert img.shape == (48, 64)
    assert np.abs(img.array - smooth).mean() < 3.0


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_geometry_kept_for_formats_that_store_it(tmp_path, suffix):
    array = np.random.default_rng(1).normal(100, 10, (30, 40)).astype(np.float32)
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(_sitk_image(array), str(path))
    img = read_image(path)
    np.testing.assert_allclose(img.spacing, (0.3, 0.7), rtol=1e-6)
    np.testing.assert_allclose(img.origin, (-12.5, 4.0), rtol=1e-6)
    np.testing.assert_allclose(img.array, array, rtol=1e-6)


def test_single_frame_dicom(tmp_path, grey):
    img = sitk.GetImageFromArray(grey.astype(np.int16))
    img.SetSpacing((0.25, 0.4))
    path = tmp_path / "img.dcm"
    sitk.WriteImage(img, str(path))
    read = read_image(path)
    assert read.shape == grey.shape
    np.testing.assert_array_equal(read.array, grey.astype(np.float32))
    np.testing.assert_allclose(read.spacing, (0.25, 0.4), rtol=1e-6)


def test_one_slice_volume_becomes_2d(tmp_path, grey):
    vol = sitk.GetImageFromArray(grey[None].astype(np.float32))
    vol.SetSpacing((0.5, 0.6, 2.0))
    vol.SetOrigin((1.0, 2.0, 3.0))
    path = tmp_path / "vol.nrrd"
    sitk.WriteImage(vol, str(path))
    img = read_image(path)
    assert img.shape == grey.shape
    assert img.spacing == (0.5, 0.6)
    assert img.origin == (1.0, 2.0)


def test_multi_frame_volume_is_refused_naming_the_case(tmp_path):
    vol = sitk.GetImageFromArray(np.zeros((3, 10, 12), np.float32))
    path = tmp_path / "vol.nrrd"
    sitk.WriteImage(vol, str(path))
    with pytest.raises(CaseError, match=r"^case c7: image vol\.nrrd is a 3D volume"):
        read_image(path, case_id="c7")


def test_rgb_becomes_grey_by_luma(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, size=(20, 30, 3)).astype(np.uint8)
    path = tmp_path / "rgb.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    img = read_image(path)
    expected = rgb.astype(np.float64) @ np.asarray(LUMA_WEIGHTS)
    np.testing.assert_allclose(img.array, expected, atol=1e-4)


def test_grey_stored_as_rgb_is_taken_exactly(grey):
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    np.testing.assert_array_equal(to_grey(rgba), grey.astype(np.float32))


def test_missing_and_unreadable_images_name_the_case(tmp_path):
    with pytest.raises(CaseError, match=r"^case a1: image file not found"):
        read_image(tmp_path / "nope.png", case_id="a1")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(CaseError, match=r"^case a2: cannot read image broken\.png"):
        read_image(bad, case_id="a2")


def test_masks_are_merged(tmp_path):
    a = np.zeros((10, 12), np.uint8)
    b = np.zeros((10, 12), np.uint8)
    a[1:3, 1:3] = 255
    b[6:9, 5:10] = 1
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(pa))
    sitk.WriteImage(sitk.GetImageFromArray(b), str(pb))
    merged = read_mask([pa, pb], shape=(10, 12))
    assert merged.dtype == bool
    assert merged.sum() == 4 + 15


def test_non_binary_mask_is_refused(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[1:3, 1:3] = 1
    m[5:7, 5:7] = 2
    p = tmp_path / "m.png"
    sitk.WriteImage(sitk.GetImageFromArray(m), str(p))
    with pytest.raises(CaseError, match=r"^case x: mask m\.png is not binary: 3 distinct values"):
        read_mask(p, case_id="x")


def test_mask_of_another_size_is_refused(tmp_path):
    p = tmp_path / "m.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.uint8)), str(p))
    with pytest.raises(CaseError, match=r"mask m\.png has size 12x10 but the image is 13x10"):
        read_mask(p, shape=(10, 13), case_id="x")


def test_write_image_keeps_geometry(tmp_path):
    ref = Image2D(np.zeros((8, 9), np.float32), spacing=(0.2, 0.3), origin=(5.0, -1.0))
    out = write_image(tmp_path / "cam.nrrd", np.ones((8, 9), np.float32), like=ref)
    back = read_image(out)
    assert back.spacing == pytest.approx((0.2, 0.3))
    assert back.origin == pytest.approx((5.0, -1.0))
    assert back.array.sum() == 72
