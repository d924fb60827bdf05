"""ROI helpers: bounding box, square crop with padding, resize and the inverse mapping."""

from __future__ import annotations

import numpy as np
import pytest

from Rad4XCNNLogic.cohort.roi import SquareCrop, lesion_bbox, resize


def test_bbox():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert lesion_bbox(m) == (2, 3, 5, 9)
    with pytest.raises(ValueError, match="empty"):
        lesion_bbox(np.zeros((4, 4), bool))


def test_square_crop_with_margin_is_centred():
    crop = SquareCrop.around_box((10, 20, 30, 60), (100, 120), margin=0.25)
    assert crop.side == 60  # longer side 40, plus 25% on each side
    assert (crop.top, crop.left) == (-10, 10)
    assert crop.padding == (10, 0, 0, 0)
    assert crop.box_in_image == (0, 10, 50, 70)


def test_crop_pads_outside_the_image():
    image = np.arange(20, dtype=np.float32).reshape(4, 5) + 1
    crop = SquareCrop(top=-1, left=3, side=3, image_shape=(4, 5))
    window = crop.crop(image, fill=-7)
    expected = np.array([[-7, -7, -7], [4, 5, -7], [9, 10, -7]], dtype=np.float32)
    np.testing.assert_array_equal(window, expected)


def test_resize_keeps_constants_and_is_antialiased():
    np.testing.assert_allclose(resize(np.full((50, 70), 3.0), (20, 10)), 3.0, rtol=1e-6)
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    small = resize(checker, (8, 8))
    assert np.abs(small - 0.5).max() < 0.05  # averaged, not sampled


def test_round_trip_maps_the_crop_box_back_exactly_for_a_non_square_image():
    mask = np.zeros((90, 140), bool)
    mask[70:88, 100:138] = True  # near the bottom-right corner: the square crop needs padding
    crop = SquareCrop.around_mask(mask, margin=0.2)
    assert any(p > 0 for p in crop.padding)
    back = crop.from_input(np.ones((224, 224), np.float32), interpolation="nearest")
    r0, c0, r1, c1 = crop.box_in_image
    expected = np.zeros(mask.shape, np.float32)
    expected[r0:r1, c0:c1] = 1
    np.testing.assert_array_equal(back, expected)


def test_round_trip_of_image_content():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(80, 50)).astype(np.float32)
    crop = SquareCrop(top=10, left=5, side=40, image_shape=(80, 50))
    x = crop.to_input(image, 40)  # same size: no resampling
    back = crop.from_input(x, fill=np.nan)
    np.testing.assert_array_equal(back[10:50, 5:45], image[10:50, 5:45])
    assert np.isnan(back[:10]).all() and np.isnan(back[50:]).all()


def test_input_coordinates_map_to_image_coordinates():
    crop = SquareCrop(top=-10, left=20, side=100, image_shape=(200, 300))
    r, c = crop.input_to_image(np.array([0, 49.5, 99]), np.array([0, 49.5, 99]), 100)
    np.testing.assert_allclose(r, [-10, 39.5, 89])
    np.testing.assert_allclose(c, [20, 69.5, 119])
    r, _ = crop.input_to_image(np.array([-0.5, 49.5]), np.array([0, 0]), 50)  # edge of a 2x zoom
    np.testing.assert_allclose(r, [-10.5, 89.5])


def test_whole_image_crop():
    crop = SquareCrop.whole_image((30, 50))
    assert crop.side == 50 and crop.top == -10 and crop.left == 0
    assert crop.box_in_image == (0, 0, 30, 50)
