"""Deep-feature extraction over a cohort: preprocessing, determinism, batching, cache, CSV and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import write_manifest_rows

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from Rad4XCNNLogic.cohort.manifest import read_manifest  # noqa: E402
from Rad4XCNNLogic.cohort.roi import SquareCrop  # noqa: E402
from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402
from Rad4XCNNLogic.features.backbones import PreprocessConfig, build_backbone  # noqa: E402
from Rad4XCNNLogic.features.deep import extract_deep_features, write_deep_features  # noqa: E402
from Rad4XCNNLogic.features.preprocessing import (  # noqa: E402
    forward_with_backoff,
    grey_input,
    is_out_of_memory,
    preprocess_case,
    scale_intensity,
)

SMALL = {"model": "resnet18", "input_size": 64, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Ten synthetic cases, two of them without a lesion (has_lesion=false)."""
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("deep")
    return read_manifest(make_synthetic_cohort(out, n=10, seed=2, shape=(96, 128), normal_fraction=0.2))


def test_scale_intensity_rules():
    np.testing.assert_allclose(scale_intensity(np.array([[0, 51, 255]])), [[0, 0.2, 1]])
    np.testing.assert_allclose(scale_intensity(np.array([[0.0, 0.5]])), [[0, 0.5]])  # already in [0, 1]
    sixteen_bit = np.array([[100, 300, 1100]])  # beyond 255: min..max
    np.testing.assert_allclose(scale_intensity(sixteen_bit), [[0, 0.2, 1]])
    np.testing.assert_allclose(scale_intensity(np.array([[0, 51]]), "minmax"), [[0, 1]])
    assert scale_intensity(np.full((2, 2), 7.0), "minmax").max() == 0


def test_preprocess_case_matches_crop_and_normalisation(cohort):
    case = cohort.lesion_cases().cases[0]
    loaded = case.load()
    config = PreprocessConfig.for_model("resnet50", input_size=96, margin=0.2)
    x, crop = preprocess_case(loaded, config)
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32
    assert crop == SquareCrop.around_mask(loaded.mask, 0.2)
    grey, _ = grey_input(loaded, config)
    for c in range(3):  # every channel is the same grey crop, normalised by the channel's mean and std
        np.testing.assert_allclose(x[c].numpy() * config.std[c] + config.mean[c], grey, atol=1e-5)
    expected = crop.to_input(loaded.image.array / 255.0, 96, "bicubic")
    np.testing.assert_allclose(grey, expected, atol=1e-5)


def test_same_image_gives_same_features_and_normal_cases_are_left_out(cohort):
    first = extract_deep_features(cohort, **SMALL)
    second = extract_deep_features(cohort, **SMALL)
    lesion_ids = [c.case_id for c in cohort.cases if c.has_lesion]
    assert len(lesion_ids) == 8
    assert list(first.features.index) == lesion_ids
    assert first.features.index.name == "case_id"
    assert np.array_equal(first.features.to_numpy(), second.features.to_numpy())
    assert first.features.shape == (8, 512) and first.failures == []
    s = first.settings
    assert (s["device"], s["dtype"], s["channels_last"], s["random_init"]) == ("cpu", "float32", False, True)
    assert s["preprocess"]["input_size"] == 64 and s["weights"]["seed"] == 0
    with_normal = extract_deep_features(cohort, include_normal=True, **SMALL)
    assert list(with_normal.features.index) == cohort.case_ids
    np.testing.assert_array_equal(with_normal.features.loc[lesion_ids].to_numpy(), first.features.to_numpy())


def test_batch_size_and_workers_do_not_change_features(cohort):
    one = extract_deep_features(cohort, batch_size=1, num_workers=0, **SMALL)
    many = extract_deep_features(cohort, batch_size=5, num_workers=2, **SMALL)
    assert many.settings["num_workers"] == 2
    np.testing.assert_allclose(one.features.to_numpy(), many.features.to_numpy(), rtol=1e-5, atol=1e-6)


def test_features_equal_the_models_own_forward(cohort):
    backbone = build_backbone("resnet18", input_size=64)
    result = extract_deep_features(cohort, backbone, device="cpu", progress=False)
    case = cohort.lesion_cases().cases[3]
    x, _ = preprocess_case(case.load(), backbone.preprocess)
    with torch.inference_mode():
        direct = backbone.model.forward_features(x[None]).mean(dim=(2, 3))[0].numpy()
    np.testing.assert_allclose(result.features.loc[case.case_id].to_numpy(), direct, rtol=1e-5, atol=1e-6)


def test_stage_features_and_csv(cohort, tmp_path):
    result = extract_deep_features(cohort, stage=2, **SMALL)
    assert result.features.shape == (8, 128)
    assert result.features.columns[0] == "resnet18_stage2_0"
    out = write_deep_features(result, tmp_path / "deep_features.csv")
    back = pd.read_csv(out, index_col=0)
    assert back.index.name == "case_id" and list(back.columns) == list(result.features.columns)
    np.testing.assert_allclose(back.to_numpy(), result.features.to_numpy(), rtol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_reuses_finished_cases(cohort, tmp_path):
    cache = tmp_path / "cache"
    first = extract_deep_features(cohort, cache_dir=cache, **SMALL)
    assert (first.cache_hits, first.computed) == (0, 8)
    again = extract_deep_features(cohort, cache_dir=cache, **SMALL)
    assert (again.cache_hits, again.computed) == (8, 0)
    assert np.array_equal(first.features.to_numpy(), again.features.to_numpy())
    other_margin = extract_deep_features(cohort, cache_dir=cache, margin=0.3, **SMALL)
    assert other_margin.cache_hits == 0
    assert not np.allclose(other_margin.features.to_numpy(), first.features.to_numpy())
    other_seed = extract_deep_features(cohort, cache_dir=cache, seed=1, **SMALL)
    assert other_seed.cache_hits == 0


def test_bad_cases_are_recorded_and_the_run_goes_on(tmp_path, make_case, caplog):
    rows = [
        make_case("good", shape=(60, 80), box=(20, 30, 40, 60)),
        # the lesion fills the image, so the square crop with its margin is larger than the image: padded
        make_case("small_image", shape=(40, 40), box=(2, 2, 38, 38)),
        make_case("tiny", shape=(6, 6), box=(1, 1, 5, 5)),  # too few pixels for a model input
        make_case("corrupt"),
    ]
    (tmp_path / rows[3]["image"]).write_bytes(b"this is not a PNG file")
    cohort = read_manifest(write_manifest_rows(tmp_path / "m.csv", rows))
    with caplog.at_level(logging.WARNING):
        result = extract_deep_features(cohort, margin=0.25, batch_size=2, **SMALL)
    assert list(result.features.index) == ["good", "small_image"]
    assert np.isfinite(result.features.to_numpy()).all()
    problems = {f.case_id: f for f in result.failures}
    assert set(problems) == {"tiny", "corrupt"}
    assert all(f.stage == "deep" for f in result.failures)
    assert "holds only 6x6 image pixels (image 6x6); at least 8x8 are needed" in problems["tiny"].problem
    assert "cannot read image corrupt.png" in problems["corrupt"].problem
    assert "case tiny:" in caplog.text

    config = PreprocessConfig.for_model("resnet18", input_size=64, margin=0.25)
    grey, crop = grey_input(cohort["small_image"].load(), config)
    assert crop.side > 40 and any(crop.padding)
    assert grey[:4, :4].max() == 0.0  # the corner lies outside the image: zero padding


def test_no_lesion_case_at_all_is_an_error(cohort):
    normals = [c for c in cohort.cases if not c.has_lesion]
    with pytest.raises(Rad4XCNNError, match="all 2 cases have no lesion"):
        extract_deep_features(normals, **SMALL)
    with pytest.raises(Rad4XCNNError, match="batch size must be at least 1"):
        extract_deep_features(cohort, batch_size=0, **SMALL)


def test_out_of_memory_halves_the_batch_and_keeps_going(caplog):
    calls = []

    def forward(x):  # a device that holds at most 3 images at once
        calls.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 2

    x = torch.arange(10.0)
    with caplog.at_level(logging.WARNING):
        out, chunk = forward_with_backoff(forward, x, 16)
    assert torch.equal(out, x * 2)
    assert chunk == 2
    assert calls == [10, 8, 4, 2, 2, 2, 2, 2]
    assert "out of memory on cpu with a batch of 16; retrying with 8" in caplog.text
    out, chunk = forward_with_backoff(forward, x, chunk)  # later batches start at the size that worked
    assert chunk == 2 and torch.equal(out, x * 2)

    def always(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(Rad4XCNNError, match="out of memory on cpu even with a batch of 1 image"):
        forward_with_backoff(always, x, 4)

    def broken(x):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        forward_with_backoff(broken, x, 4)
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
