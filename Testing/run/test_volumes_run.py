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

    # one case against the run (what the Slicer module's "Explain one case" runs): its map is a volume too
    first = cohort.iloc[[0]].assign(image=lambda f: [str(manifest.parent / p) for p in f["image"]])
    first["mask"] = [str(manifest.parent / p) for p in first["mask"]]
    first.to_csv(tmp_path / "one.csv", index=False)
    case_argv = [
        "case",
        "--manifest",
        str(tmp_path / "one.csv"),
        "--run",
        str(run),
        "--out",
        str(tmp_path / "one"),
    ]
    case_argv += ["--weights", str(run / "models" / "resnet18.pt"), "--cam", "eigencam", "--device", "cpu"]
    assert main(case_argv) == 0

    maps = sorted((run / "cam").glob("*_eigencam.nrrd"))
    assert len(maps) == 2
    maps.append(tmp_path / "one" / "cam" / f"{first['case_id'].iloc[0]}_eigencam.nrrd")
    images = dict(zip(cohort["case_id"], cohort["image"], strict=True))
    for path in maps:
        case_id = path.name.removesuffix("_eigencam.nrrd")
        image = sitk.ReadImage(str(manifest.parent / images[case_id]))
        cam = sitk.ReadImage(str(path))
        assert cam.GetSize() == image.GetSize()
        np.testing.assert_allclose(cam.GetSpacing(), SPACING)
        np.testing.assert_allclose(cam.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(cam.GetDirection(), image.GetDirection())


def test_the_3d_demo_settings_run_every_stage_on_volumes(tmp_path):
    """The 3D demo (``rad4xcnn demo --dims 3``) runs the pipeline above with its own budgets: every stage is
    configured (a fine-tuned backbone with its control, classifiers, CAM methods), the run folder is the one
    given. (Run end to end by hand: 24 volumes in 97 s on 2 loaded cores; the pipeline itself is tested
    above.)"""
    from Rad4XCNNLogic.run.demo3d import demo3d_config

    manifest = make_synthetic_volumes(tmp_path / "cohort", n=4, seed=1, shape=(16, 16, 8))
    cfg = demo3d_config(tmp_path / "run", manifest)
    assert [m.weights for m in cfg.models] == ["trained"]
    assert cfg.controls() == {"resnet18": "resnet18-random"}
    assert cfg.classification.enabled and cfg.cam.enabled and cfg.cam.methods
    assert cfg.deep.input_size == cfg.training.input_size
    assert str(cfg.out) == str(tmp_path / "run")
