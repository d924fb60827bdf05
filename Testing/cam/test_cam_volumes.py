"""CAM volumes (2.5D): slice-wise maps put back into each volume, written in the image's own geometry, with
the checks aggregated per case and the lesion measured inside the 3D lesion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from Rad4XCNNLogic.cam.settings import CamConfig
from Rad4XCNNLogic.cam.volumes import compute_cam_volumes, lesion_measures
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.features.slices import lesion_slices

ORIGIN = (-40.0, 12.5, 30.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def moved_volumes(tmp_path_factory):
    """Three synthetic volumes (anisotropic spacing) moved to a non-identity origin and direction."""
    from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes

    out = tmp_path_factory.mktemp("camvol")
    manifest = make_synthetic_volumes(out, n=3, seed=5, shape=(32, 32, 12), spacing=(0.6, 0.9, 2.5))
    frame = pd.read_csv(manifest)
    for column in ("image", "mask"):
        for name in frame[column]:
            img = sitk.ReadImage(str(out / name))
            img.SetOrigin(ORIGIN)
            img.SetDirection(DIRECTION)
            sitk.WriteImage(img, str(out / name), True)
    return read_manifest(manifest)


def test_map_volumes_lie_in_the_image_geometry(moved_volumes, tmp_path):
    section = CamConfig(methods=["eigencam"], randomisation="all", deletion_steps=2)
    from Rad4XCNNLogic.features.backbones import build_backbone

    net = build_backbone("resnet18", num_classes=2, input_size=64)  # a tiny random classifier
    result = compute_cam_volumes(
        moved_volumes, net, section, device="cpu", out_dir=tmp_path, max_slices=2, progress=False
    )
    metrics = result.metrics
    assert sorted(metrics["case_id"].unique()) == moved_volumes.case_ids  # one row per case, not per slice
    assert len(metrics) == len(moved_volumes)
    for case in moved_volumes.cases:
        loaded = case.load()
        image = sitk.ReadImage(str(case.image))
        path = tmp_path / "cam" / f"{case.case_id}_eigencam.nrrd"
        cam = sitk.ReadImage(str(path))
        assert cam.GetSize() == image.GetSize()
        np.testing.assert_allclose(cam.GetSpacing(), (0.6, 0.9, 2.5))
        np.testing.assert_allclose(cam.GetOrigin(), ORIGIN)
        np.testing.assert_allclose(cam.GetDirection(), DIRECTION)
        array = sitk.GetArrayFromImage(cam)
        processed = lesion_slices(loaded.mask, 0, 2)
        others = [z for z in range(array.shape[0]) if z not in processed]
        assert array[processed].max() > 0 and not array[others].any()  # 0 outside the processed slices
        row = metrics[(metrics["case_id"] == case.case_id) & (metrics["method"] == "eigencam")].iloc[0]
        assert row["slices"] == len(processed)
        expected = lesion_measures(array, loaded.mask, array > -1)["energy_inside"]
        assert row["energy_inside"] == pytest.approx(expected, rel=1e-3)  # measured inside the 3D lesion
        assert np.isfinite(row["road_combined"]) and np.isfinite(row["randomisation_similarity"])
    assert set(result.randomisation["case_id"]) == set(moved_volumes.case_ids)
    written = pd.read_csv(tmp_path / "cam" / "cam_metrics.csv")
    assert {"slices", "flagged_slices"} <= set(written.columns)


def test_lesion_measures_count_the_3d_lesion():
    cam = np.zeros((4, 5, 5))
    cam[2, 2, 2] = 2.0  # the peak, inside the lesion on slice 2
    cam[0, 0, 0] = 2.0  # as much outside, on another slice
    mask = np.zeros(cam.shape, bool)
    mask[1:3, 1:4, 1:4] = True
    covered = np.zeros(cam.shape, bool)
    covered[1:3] = True
    measures = lesion_measures(cam, mask, covered)
    assert measures["energy_inside"] == pytest.approx(0.5)
    assert measures["energy_chance"] == pytest.approx(18 / 50)
    assert lesion_measures(np.zeros_like(cam), mask, covered)["pointing_hit"] != 1.0
