"""Cohorts of volumes with anisotropic spacing through the pipeline: 3D radiomics with an exact voxel
volume, 2.5D deep features of every case, and CAM volumes in each image's geometry; once through
``rad4xcnn run`` with a configuration file, once through the 3D demo profile (``rad4xcnn demo --dims 3``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.synthetic3d import make_synthetic_volumes

SPACING = (0.6, 0.9, 2.5)


def test_a_cohort_of_volumes_runs_end_to_end(tmp_path):
    manifest = make_synthetic_volumes(tmp_path / "cohort", n=16, seed=4, shape=(32, 32, 12), spacing=SPACING)
    settings = {
        "manifest": str(manifest),
        "out": str(tmp_path / "run"),
        "device": "cpu",
        "control": "none",
        "training": {"pretrained": False, "epochs": 1, "batch_size": 8, "input_size": 64, "patience": 1},
        "models": [{"name": "resnet18", "weights": "trained"}],
        "deep": {"input_size": 64, "max_slices": 2},
        "radiomics": {"jobs": 1},
        "explain": {"thresholds": [0.6, 0.8], "fdr": 0.05, "permutations": 20, "bootstrap": 5},
        "classification": {"classifiers": ["rf"], "cv_folds": 2, "n_bootstrap": 5, "repeated_splits": 1},
        "cam": {"methods": ["eigencam"], "gallery": 2, "randomisation": "none", "faithfulness": False},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert main(["run", str(config)]) == 0
    run = tmp_path / "run"

    radiomics = pd.read_csv(run / "radiomics.csv", index_col=0)
    factors = pd.read_csv(manifest.parent / "factors.csv", index_col=0)
    np.testing.assert_allclose(
        radiomics["original_shape_VoxelVolume"], factors.loc[radiomics.index, "lesion_volume_mm3"], rtol=1e-9
    )
    deep = pd.read_csv(run / "deep_features.csv", index_col=0)
    cohort = pd.read_csv(manifest)
    assert sorted(deep.index) == sorted(cohort["case_id"]) and np.isfinite(deep.to_numpy()).all()
    side = json.loads((run / "deep_features.json").read_text())
    assert side["resnet18"]["settings"]["volumes"]["pooling"] == ["mean", "max"]

    maps = sorted((run / "cam").glob("*_eigencam.nrrd"))
    assert len(maps) == 2
    images = dict(zip(cohort["case_id"], cohort["image"], strict=True))
    for path in maps:
        case_id = path.name.removesuffix("_eigencam.nrrd")
        image = sitk.ReadImage(str(manifest.parent / images[case_id]))
        cam = sitk.ReadImage(str(path))
        assert cam.GetSize() == image.GetSize()
        np.testing.assert_allclose(cam.GetSpacing(), SPACING)
        np.testing.assert_allclose(cam.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(cam.GetDirection(), image.GetDirection())


def test_the_3d_demo_runs_every_stage_on_volumes(tmp_path, capsys):
    from Rad4XCNNLogic.cohort.volumes import read_volume

    out = tmp_path / "demo3d"
    assert main(["demo", "--dims", "3", "--n", "16", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "feature maps: 4 in" in printed
    run = out / "run"
    state = json.loads((run / "run.json").read_text())
    assert {name: s["status"] for name, s in state["stages"].items()} == dict.fromkeys(
        ["cohort", "train", "deep", "radiomics", "explain", "classify", "cam", "report"], "computed"
    )
    radiomics = pd.read_csv(run / "radiomics.csv", index_col=0)
    factors = pd.read_csv(out / "cohort" / "factors.csv", index_col=0)
    np.testing.assert_allclose(
        radiomics["original_shape_VoxelVolume"], factors.loc[radiomics.index, "lesion_volume_mm3"], rtol=1e-9
    )
    assert not any(c.startswith("original_shape2D") for c in radiomics.columns)
    deep = pd.read_csv(run / "deep_features.csv", index_col=0)
    assert len(deep) == 16 and np.isfinite(deep.to_numpy()).all()
    cohort = pd.read_csv(out / "cohort" / "manifest.csv")
    images = dict(zip(cohort["case_id"], cohort["image"], strict=True))
    maps = sorted((run / "cam").glob("*_gradcam.nrrd"))
    assert 2 <= len(maps) <= 4  # the gallery: up to 4 of the test split's cases
    for path in maps:
        image = read_volume(out / "cohort" / images[path.name.removesuffix("_gradcam.nrrd")])
        cam = read_volume(path)
        assert cam.array.shape == image.array.shape and cam.spacing == pytest.approx(image.spacing)
        assert cam.origin == pytest.approx(image.origin)
    assert len(sorted((run / "featuremaps").glob("*.nrrd"))) == 4
