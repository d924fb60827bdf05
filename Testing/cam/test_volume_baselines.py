"""The baseline "shuffled within the lesion" of a volume's slices shuffles within the lesion's cross-section
on each slice, not within the in-plane box of the whole lesion that the slice window is cut around."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from Rad4XCNNLogic.cam import faithfulness, maps
from Rad4XCNNLogic.cam.settings import CamConfig
from Rad4XCNNLogic.cam.volumes import compute_cam_volumes, lesion_measures
from Rad4XCNNLogic.cohort.manifest import Case
from Rad4XCNNLogic.features.backbones import build_backbone
from Rad4XCNNLogic.features.slices import volume_inputs

SPACING = (1.0, 0.25, 2.0)  # x, y, z in mm: a window's samples skip rows of voxels (y: 0.25 mm)


def _nearest(plane: np.ndarray, window) -> np.ndarray:
    """The plane's voxel nearest each sample of the window (none outside the plane)."""
    rows, cols = (np.floor(c + 0.5).astype(int) for c in window.coordinates())
    inside = (rows >= 0) & (rows < plane.shape[0]) & (cols >= 0) & (cols < plane.shape[1])
    out = np.zeros(rows.shape, bool)
    out[inside] = plane[rows[inside], cols[inside]]
    return out


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    """A volume whose lesion runs obliquely over three slices (3 x 3 mm on each, in a 13 x 9 mm box) and
    touches a fourth in one voxel on a row of voxels that the window's samples step over."""
    folder = tmp_path_factory.mktemp("oblique")
    mask = np.zeros((6, 64, 24), np.uint8)  # z, y, x
    for k in range(3):
        mask[1 + k, 8 + 12 * k : 20 + 12 * k, 3 + 5 * k : 6 + 5 * k] = 1
    net = build_backbone("test_resnet", num_classes=2, input_size=32)
    config = net.preprocess
    case = Case("oblique", folder / "oblique.nrrd", (folder / "oblique_mask.nrrd",), label="benign", dims=3)
    _write(case.masks[0], mask)
    _write(case.image, mask * 900.0)
    window = volume_inputs(case.load(), config)[1][0]  # one window per case: the single voxel moves none
    sampled = np.floor(window.coordinates()[0][:, 0] + 0.5).astype(int)
    skipped = next(r for r in range(8, 44) if r not in sampled)
    mask[4, skipped, 9] = 1
    image = mask * 900.0 + np.random.default_rng(0).normal(0.0, 30.0, mask.shape)
    _write(case.masks[0], mask)
    _write(case.image, image)
    return case, net


def _write(path, array) -> None:
    img = sitk.GetImageFromArray(np.asarray(array))
    img.SetSpacing(SPACING)
    sitk.WriteImage(img, str(path), True)


def test_slices_shuffle_within_their_own_cross_section(oblique, tmp_path, monkeypatch):
    case, net = oblique
    calls, shuffles = [], []
    real_scores, real_shuffle = faithfulness.faithfulness_scores, faithfulness.shuffled_within

    def scores_spy(net_, x, chosen, input_maps, masks, *args, **kwargs):
        out = real_scores(net_, x, chosen, input_maps, masks, *args, **kwargs)
        calls.append((list(masks), out))
        return out

    def shuffle_spy(cams, masks, seed=0):
        out = real_shuffle(cams, masks, seed)
        shuffles.append((np.asarray(cams), list(masks), out))
        return out

    flag_masks = []
    real_flags = maps.map_flags

    def flags_spy(raw, cam, mask=None, box=None, **kwargs):
        flag_masks.append(mask)
        return real_flags(raw, cam, mask, box, **kwargs)

    monkeypatch.setattr(faithfulness, "faithfulness_scores", scores_spy)
    monkeypatch.setattr(faithfulness, "shuffled_within", shuffle_spy)
    monkeypatch.setattr(maps, "map_flags", flags_spy)
    section = CamConfig(methods=["eigencam"], target_layer="layer2", randomisation="none", deletion_steps=2)
    result = compute_cam_volumes([case], net, section, device="cpu", out_dir=tmp_path, progress=False)

    loaded = case.load()
    grey, windows = volume_inputs(loaded, net.preprocess)
    expected = [_nearest(np.take(loaded.mask, w.index, axis=w.axis), w) for w in windows]
    used = [m for masks, _ in calls for m in masks]
    assert len(used) == len(windows) == 4
    size = net.preprocess.input_size
    margin = net.preprocess.margin
    lo = round(size * margin / (1 + 2 * margin))
    box = (size - 2 * lo) ** 2  # the pixels of the slice's 2D mask, the lesion's in-plane box
    for k in range(3):
        assert used[k] is not None and np.array_equal(used[k], expected[k])  # the slice's cross-section
        assert 0 < expected[k].sum() < box / 4  # much smaller than the box
        assert grey[k][used[k]].mean() > grey[k][~used[k]].mean() + 0.5  # where the bright lesion is
    assert not expected[3].any() and used[3] is None  # the window's samples miss the lesion on slice 4
    # the sanity flags ("outside": no energy in the lesion) read the same cross-sections
    assert all(np.array_equal(m, e) for m, e in zip(flag_masks[:3], expected[:3], strict=True))
    assert flag_masks[3] is None
    shuffled = np.concatenate([out["eigencam"]["road_combined_shuffled"] for _, out in calls])
    assert np.isfinite(shuffled[:3]).all() and np.isnan(shuffled[3])  # as a 2D case without lesion

    pairs = [(cam, new) for cams, _, out in shuffles for cam, new in zip(cams, out, strict=True)]
    assert len(pairs) == 3
    for (cam, new), lesion in zip(pairs, expected[:3], strict=True):
        assert np.array_equal(new[~lesion], cam[~lesion])  # unmoved outside the slice's lesion
        assert sorted(new[lesion]) == sorted(cam[lesion]) and not np.array_equal(new, cam)

    row = result.metrics.iloc[0]
    assert row["road_combined_shuffled"] == pytest.approx(float(np.mean(shuffled[:3])), rel=1e-5)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cam" / "oblique_eigencam.nrrd")))
    measures = lesion_measures(volume, loaded.mask, volume > -1)  # the 3D lesion's, not the slices' boxes
    assert row["energy_inside"] == pytest.approx(measures["energy_inside"], rel=1e-3)
    assert row["pointing_hit"] == measures["pointing_hit"]


def test_a_lesion_off_the_input_grid_is_refused(oblique):
    from Rad4XCNNLogic.cam.maps import compute_cams
    from Rad4XCNNLogic.errors import Rad4XCNNError

    case, net = oblique
    lesions = {"oblique": np.ones((3, 3), bool)}
    with pytest.raises(Rad4XCNNError, match=r"case oblique: its lesion on the input is \(3, 3\)"):
        compute_cams([case], net, CamConfig(methods=["eigencam"]), device="cpu", input_lesions=lesions)
