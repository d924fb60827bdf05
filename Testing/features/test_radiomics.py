"""The radiomics engine: presets, agreement with PyRadiomics, cache, processes, Dask, bad input, CLI."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import re
from dataclasses import astuple

import numpy as np
import pandas as pd
import pytest
from conftest import blob_image_and_mask, write_manifest_rows, write_png

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.imageio import Image2D, write_image
from Rad4XCNNLogic.cohort.manifest import read_manifest
from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features import radiomics as rf
from Rad4XCNNLogic.features.radiomics import PAPER_FEATURE_COUNT, extract_radiomics
from Rad4XCNNLogic.features.radiomics_params import preset_path, resolve_params
from Rad4XCNNLogic.features.radiomics_result import side_files, write_radiomics
from Rad4XCNNLogic.names import parse_radiomic_name

pytest.importorskip("radiomics")
# pykwalify (PyRadiomics' schema check) loads its extensions with a call Python deprecates
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

WAVELET_2D = {"wavelet-LL", "wavelet-LH", "wavelet-HL", "wavelet-HH"}


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cohort_manifest(tmp_path_factory):
    """Eight small synthetic cases (96 x 128 PNG), one of them without a lesion."""
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("radiomics_cohort")
    manifest = make_synthetic_cohort(out, n=8, seed=11, shape=(96, 128))
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame["has_lesion"] = "true"
    frame.loc[frame.index[-1], "has_lesion"] = "false"  # the mask is not empty, but the case is "normal"
    frame.to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def cohort(cohort_manifest):
    return read_manifest(cohort_manifest)


@pytest.fixture(scope="module")
def serial(cohort):
    return extract_radiomics(cohort, "paper", jobs=1, progress=False)


def _direct(image_path, mask_path, params):
    """PyRadiomics called directly on the files, as its documentation shows."""
    from radiomics import featureextractor

    extractor = featureextractor.RadiomicsFeatureExtractor(str(preset_path(params)))
    result = extractor.execute(str(image_path), str(mask_path), label=255)
    return {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


def _max_relative_difference(ours: pd.Series, theirs: dict) -> float:
    a = ours.to_numpy(dtype=float)
    b = np.array([theirs[k] for k in ours.index])
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)))


def _bad_cohort(tmp_path, make_case, cases: dict[str, np.ndarray | None], **row_extra):
    """Write one good case per key with the mask replaced by the given array (None: the blob's mask)."""
    rows = []
    for i, (case_id, mask) in enumerate(cases.items()):
        row = make_case(case_id, seed=i, shape=(60, 80), **row_extra.get(case_id, {}))
        if mask is not None:
            write_png(tmp_path / row["mask"], mask)
        rows.append(row)
    return read_manifest(write_manifest_rows(tmp_path / "m.csv", rows))


# -------------------------------------------------------------------------------------------- presets
def test_paper_preset_gives_474_named_features_on_a_2d_case(serial):
    features = serial.features
    assert features.shape == (7, PAPER_FEATURE_COUNT)  # the case without a lesion is left out
    parts = [astuple(parse_radiomic_name(c))[1:] for c in features.columns]
    assert {p[0] for p in parts} == {"original"} | WAVELET_2D
    assert sum(p[1] == "shape2D" for p in parts) == 9
    for image_type in {"original"} | WAVELET_2D:
        assert sum(p[0] == image_type and p[1] != "shape2D" for p in parts) == 93
    assert "original_glcm_Contrast" in features.columns and "wavelet-HH_ngtdm_Busyness" in features.columns
    assert features.notna().all().all()
    assert (serial.diagnostics["Image-original_Dimensionality"] == "2D").all()


def test_extended_preset_has_the_four_2d_wavelet_bands_and_log(cohort):
    result = extract_radiomics(cohort.cases[:1], "extended", jobs=1, progress=False)
    image_types = {parse_radiomic_name(c).image_type for c in result.features.columns}
    assert image_types >= WAVELET_2D
    assert "wavelet-L" not in image_types and "wavelet-H" not in image_types  # what force2D would give
    assert {f"log-sigma-{s}-0-mm-3D" for s in (1, 2, 3, 5)} <= image_types
    assert result.features.shape == (1, 9 + 14 * 93)


@pytest.mark.parametrize("params", ["paper", "extended"])
def test_values_equal_a_direct_pyradiomics_call(cohort, serial, params):
    case = cohort.cases[0]
    if params == "paper":
        ours = serial.features.loc[case.case_id]
    else:
        ours = extract_radiomics([case], params, jobs=1, progress=False).features.loc[case.case_id]
    theirs = _direct(case.image, case.masks[0], params)
    assert list(ours.index) == list(theirs)  # same names, same order
    assert _max_relative_difference(ours, theirs) < 1e-9


def test_pixel_surface_uses_the_pixel_spacing(tmp_path):
    image, mask = blob_image_and_mask((60, 80), box=(10, 20, 40, 50))
    geometry = Image2D(image.astype(np.float32), spacing=(0.5, 0.8))
    write_image(tmp_path / "img.nrrd", image, like=geometry)
    write_image(tmp_path / "msk.nrrd", (mask > 0).astype(np.uint8), like=geometry)
    manifest = write_manifest_rows(
        tmp_path / "m.csv", [{"case_id": "a", "image": "img.nrrd", "mask": "msk.nrrd"}]
    )
    result = extract_radiomics(read_manifest(manifest), "paper", jobs=1, progress=False)
    expected = (mask > 0).sum() * 0.5 * 0.8
    assert result.features.loc["a", "original_shape2D_PixelSurface"] == pytest.approx(expected, rel=1e-12)
    assert result.diagnostics.loc["a", "Image-original_Spacing"] == "(0.5, 0.8)"


def test_resolve_params_presets_and_user_files(tmp_path):
    paper = resolve_params("paper")
    assert paper.is_preset and paper.path == preset_path("paper") and paper.setting["binCount"] == 32
    assert resolve_params(paper) is paper
    # a user's file is used as it is; comments and layout do not change its hash
    own = tmp_path / "own.yaml"
    own.write_text(
        "# mine\nsetting: {binWidth: 10, label: 255}\nimageType: {Original: {}}\nfeatureClass: {glcm: }\n"
    )
    other = tmp_path / "other.yaml"
    other.write_text(
        "setting:\n  label: 255\n  binWidth: 10\nimageType:\n  Original: {}\nfeatureClass:\n  glcm:\n"
    )
    p = resolve_params(own)
    assert (p.name, p.setting) == ("own.yaml", {"binWidth": 10, "label": 255})
    assert p.sha256 == resolve_params(str(other)).sha256 != paper.sha256
    assert p.pyradiomics_config()["setting"]["label"] == 1  # masks are 0/1
    assert resolve_params("extended").sha256 != paper.sha256


def test_a_users_yaml_is_extracted_as_written(cohort, tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text(
        "setting: {binWidth: 10}\nimageType: {Original: {}}\nfeatureClass: {firstorder: [Mean, Entropy]}\n"
    )
    result = extract_radiomics(cohort.cases[:2], own, jobs=1, progress=False)
    assert sorted(result.features.columns) == ["original_firstorder_Entropy", "original_firstorder_Mean"]
    assert result.settings["params"] == "own.yaml" and result.settings["setting"] == {"binWidth": 10}


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "neither a preset"),
        ("setting: [1, 2", "is not valid YAML at line"),
        ("- a\n- b\n", "must hold a mapping"),
        ("settings: {binWidth: 5}\n", "unknown section 'settings'"),
        ("setting: {binWidth: wide}\n", "is not valid for PyRadiomics"),
    ],
)
def test_bad_params_fail_with_one_line(cohort, tmp_path, text, message):
    path = tmp_path / "p.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(Rad4XCNNError, match=re.escape(message)) as exc:
        extract_radiomics(cohort.cases[:1], path if text is not None else "papr", jobs=1, progress=False)
    assert "\n" not in str(exc.value)


def test_force2d_in_a_users_file_is_warned_about(cohort, tmp_path, caplog):
    own = tmp_path / "f2d.yaml"
    own.write_text(
        "setting: {force2D: true}\nimageType: {Original: {}}\nfeatureClass: {firstorder: [Mean]}\n"
    )
    with caplog.at_level(logging.WARNING, logger="Rad4XCNNLogic"):
        extract_radiomics(cohort.cases[:1], own, jobs=1, progress=False)
    assert "force2D" in caplog.text and "LL/LH/HL/HH" in caplog.text


def test_pyradiomics_is_quiet_and_the_root_logger_untouched(cohort):
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    extract_radiomics(cohort.cases[:1], "paper", jobs=1, progress=False)
    import radiomics

    assert radiomics.logger.level == logging.WARNING
    assert (root.level, list(root.handlers)) == before


# ---------------------------------------------------------------------------------------------- cache
def test_cached_rerun_is_identical_and_does_not_call_pyradiomics(cohort, serial, tmp_path, monkeypatch):
    from radiomics import featureextractor

    first = extract_radiomics(cohort, "paper", jobs=1, cache_dir=tmp_path / "cache", progress=False)
    assert (first.cache_hits, first.cache_misses) == (0, 7)
    pd.testing.assert_frame_equal(first.features, serial.features)
    paths1 = write_radiomics(first, tmp_path / "run1" / "radiomics.csv")

    def refuse(*args, **kwargs):
        raise AssertionError("PyRadiomics was called on a cached case")

    monkeypatch.setattr(featureextractor.RadiomicsFeatureExtractor, "execute", refuse)
    again = extract_radiomics(cohort, "paper", jobs=1, cache_dir=tmp_path / "cache", progress=False)
    assert (again.cache_hits, again.cache_misses) == (7, 0)
    pd.testing.assert_frame_equal(again.features, first.features, check_exact=True)
    pd.testing.assert_frame_equal(again.diagnostics, first.diagnostics, check_exact=True)
    paths2 = write_radiomics(again, tmp_path / "run2" / "radiomics.csv")
    for role in ("features", "diagnostics", "failures", "quality"):
        assert paths1[role].read_bytes() == paths2[role].read_bytes(), role


def test_cache_recomputes_only_what_changed_or_is_missing(cohort, tmp_path):
    cache = tmp_path / "cache"
    # an interrupted run: only the first three cases reached the cache
    partial = extract_radiomics(cohort.cases[:3], "paper", jobs=1, cache_dir=cache, progress=False)
    assert partial.cache_misses == 3
    resumed = extract_radiomics(cohort, "paper", jobs=1, cache_dir=cache, progress=False)
    assert (resumed.cache_hits, resumed.cache_misses) == (3, 4)
    # other parameters: nothing of the cache applies
    own = tmp_path / "own.yaml"
    own.write_text("setting: {binCount: 16}\nimageType: {Original: {}}\nfeatureClass: {firstorder: [Mean]}\n")
    other = extract_radiomics(cohort.cases[:2], own, jobs=1, cache_dir=cache, progress=False)
    assert (other.cache_hits, other.cache_misses) == (0, 2)
    # an edited mask: only that case is computed again
    case = cohort.cases[1]
    mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(case.masks[0]))
    edited = mask.copy()
    rows, cols = np.nonzero(edited)
    edited[rows[0], cols[0]] = 0
    tmp_mask = tmp_path / "edited_mask.png"
    write_png(tmp_mask, edited)
    from dataclasses import replace

    cases = [replace(c, masks=(tmp_mask,)) if c.case_id == case.case_id else c for c in cohort.cases]
    after = extract_radiomics(cases, "paper", jobs=1, cache_dir=cache, progress=False)
    assert (after.cache_hits, after.cache_misses) == (6, 1)
    surface = after.features.loc[case.case_id, "original_shape2D_PixelSurface"]
    assert surface == resumed.features.loc[case.case_id, "original_shape2D_PixelSurface"] - 1


def _extract_into(manifest, cache, out, queue):
    try:
        result = extract_radiomics(read_manifest(manifest), "paper", jobs=1, cache_dir=cache, progress=False)
        write_radiomics(result, out)
        queue.put("ok")
    except BaseException as exc:  # reported to the test
        queue.put(repr(exc))


def test_two_processes_writing_one_cache_at_once(cohort_manifest, serial, tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    cache = tmp_path / "cache"
    outs = [tmp_path / f"run{i}" / "radiomics.csv" for i in (1, 2)]
    procs = [ctx.Process(target=_extract_into, args=(cohort_manifest, cache, o, queue)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [queue.get(timeout=5) for _ in procs] == ["ok", "ok"]
    for out in outs:
        written = pd.read_csv(out, index_col=0)
        pd.testing.assert_frame_equal(written, serial.features, check_names=False, check_index_type=False)
    assert not list(cache.rglob("*.tmp"))
    again = extract_radiomics(
        read_manifest(cohort_manifest), "paper", jobs=1, cache_dir=cache, progress=False
    )
    assert again.cache_hits == 7


# --------------------------------------------------------------------------------- processes and Dask
def test_parallel_results_equal_serial_ones(cohort, serial):
    parallel = extract_radiomics(cohort, "paper", jobs=2, chunk_size=1, progress=False)
    assert list(parallel.features.index) == list(serial.features.index)  # the cohort's order
    pd.testing.assert_frame_equal(parallel.features, serial.features, check_exact=True)
    assert parallel.features.columns.tolist() == serial.features.columns.tolist()


def test_column_order_does_not_depend_on_the_case_order(cohort, serial):
    backwards = extract_radiomics(list(reversed(cohort.cases[:3])), "paper", jobs=1, progress=False)
    assert backwards.features.columns.tolist() == serial.features.columns.tolist()
    assert backwards.features.index.tolist() == [c.case_id for c in reversed(cohort.cases[:3])]


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster


def test_dask_results_equal_local_ones(cohort, serial, dask_cluster):
    from distributed import Client

    by_address = extract_radiomics(
        cohort, "paper", scheduler=dask_cluster.scheduler_address, chunk_size=2, progress=False
    )
    pd.testing.assert_frame_equal(by_address.features, serial.features, check_exact=True)
    with Client(dask_cluster, set_as_default=False) as client:
        by_client = extract_radiomics(cohort.cases[:3], "paper", scheduler=client, progress=False)
        assert client.status == "running"  # a client we were given is not closed
    pd.testing.assert_frame_equal(by_client.features, serial.features.iloc[:3], check_exact=True)


def test_cli_scheduler_option(cohort_manifest, serial, dask_cluster, tmp_path, capsys):
    out = tmp_path / "radiomics.csv"
    args = ["radiomics", "--manifest", str(cohort_manifest), "--out", str(out), "--no-cache"]
    assert main([*args, "--scheduler", dask_cluster.scheduler_address]) == 0
    assert "7 of 7 cases extracted, 1 without a lesion left out" in capsys.readouterr().out
    written = pd.read_csv(out, index_col=0)
    np.testing.assert_array_equal(written.to_numpy(), serial.features.to_numpy())


def test_unreachable_scheduler_is_a_one_line_error(cohort, monkeypatch):
    monkeypatch.setattr(rf, "DASK_CONNECT_TIMEOUT", "0.5s")
    with pytest.raises(
        Rad4XCNNError, match=re.escape("cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    ):
        extract_radiomics(cohort.cases[:1], "paper", scheduler="tcp://127.0.0.1:9", progress=False)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_cases_are_failures_and_the_run_goes_on(tmp_path, make_case):
    shape = (60, 80)
    one_pixel = np.zeros(shape, np.uint8)
    one_pixel[30, 40] = 255
    line = np.zeros(shape, np.uint8)
    line[30, 20:60] = 255
    tiny = np.zeros(shape, np.uint8)
    tiny[30:33, 40:43] = 255
    empty = np.zeros(shape, np.uint8)
    cohort = _bad_cohort(
        tmp_path,
        make_case,
        {"good": None, "one_pixel": one_pixel, "line": line, "tiny": tiny, "empty": empty, "good2": None},
    )
    (tmp_path / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    cohort.cases.append(
        __import__("dataclasses").replace(
            cohort["good"], case_id="corrupt", image=tmp_path / "img" / "corrupt.png"
        )
    )
    vanished = tmp_path / "img" / "vanished.png"
    vanished.write_bytes((tmp_path / "img" / "good.png").read_bytes())
    cohort.cases.append(__import__("dataclasses").replace(cohort["good"], case_id="vanished", image=vanished))
    vanished.unlink()  # deleted after the manifest was read
    result = extract_radiomics(cohort, "paper", jobs=2, chunk_size=1, progress=False)
    assert list(result.features.index) == ["good", "good2"]
    problems = {f.case_id: f.problem for f in result.failures}
    assert {f.stage for f in result.failures} == {"radiomics"}
    assert "single voxel" in problems["one_pixel"]
    assert "too few dimensions" in problems["line"]
    assert "too small (minimum size: 15, ROI size: 9" in problems["tiny"]
    assert "mask is empty" in problems["empty"]
    assert "cannot read image corrupt.png" in problems["corrupt"]
    assert problems["vanished"] == f"cannot read {vanished}: No such file or directory"
    paths = write_radiomics(result, tmp_path / "out" / "radiomics.csv")
    failures = pd.read_csv(paths["failures"], index_col=0)
    assert sorted(failures.index) == sorted(problems)
    assert failures.loc["line", "problem"] == problems["line"]


def test_cases_without_lesion_are_left_out_unless_asked(tmp_path, make_case):
    empty = np.zeros((60, 80), np.uint8)
    cohort = _bad_cohort(
        tmp_path, make_case, {"lesion": None, "normal": empty}, normal={"has_lesion": "false"}
    )
    default = extract_radiomics(cohort, "paper", jobs=1, progress=False)
    assert list(default.features.index) == ["lesion"] and not default.failures
    everything = extract_radiomics(cohort, "paper", jobs=1, progress=False, lesion_only=False)
    assert [(f.case_id, f.problem) for f in everything.failures] == [
        ("normal", "mask is empty (no lesion pixel): no radiomic features")
    ]


def test_nan_features_are_reported_per_feature(tmp_path, make_case, caplog):
    # a lesion whose pixels have no lesion neighbour: its co-occurrence matrix (GLCM) is empty
    sparse = np.zeros((60, 80), np.uint8)
    sparse[10:40:2, 20:60:2] = 255
    cohort = _bad_cohort(tmp_path, make_case, {"good": None, "sparse": sparse, "good2": None})
    with caplog.at_level(logging.WARNING, logger="Rad4XCNNLogic"):
        result = extract_radiomics(cohort, "paper", jobs=1, progress=False)
    assert not result.failures and len(result.features) == 3
    glcm = [c for c in result.features.columns if parse_radiomic_name(c).feature_class == "glcm"]
    assert len(glcm) == 5 * 24
    assert result.nonfinite.to_dict() == dict.fromkeys(glcm, 1)
    assert result.features.loc["sparse", glcm].isna().all()
    assert "case sparse: 120 of 474 radiomic features are NaN or infinite" in caplog.text
    quality = result.quality
    assert quality.loc[glcm, "n_nan"].eq(1).all() and quality["n_inf"].eq(0).all()


def test_constant_features_are_flagged(tmp_path, make_case):
    # the same lesion outline in three different images: every shape feature is constant
    cohort = _bad_cohort(tmp_path, make_case, {"a": None, "b": None, "c": None})
    result = extract_radiomics(cohort, "paper", jobs=1, progress=False)
    shape = [c for c in result.features.columns if parse_radiomic_name(c).feature_class == "shape2D"]
    assert set(shape) <= set(result.constant)
    assert "original_firstorder_Mean" not in result.constant
    assert result.quality.loc[shape, "constant"].all()
    single = extract_radiomics(cohort.cases[:1], "paper", jobs=1, progress=False)
    assert single.constant == []  # one case: nothing to compare


def test_bad_jobs_and_chunk_size(cohort):
    with pytest.raises(Rad4XCNNError, match="jobs must be at least 1"):
        extract_radiomics(cohort, "paper", jobs=0, progress=False)
    with pytest.raises(Rad4XCNNError, match="chunk_size must be at least 1"):
        extract_radiomics(cohort, "paper", chunk_size=0, progress=False)


# -------------------------------------------------------------------------------------- outputs and CLI
def test_write_radiomics_outputs(serial, tmp_path):
    from Rad4XCNNLogic.errors import CaseFailure

    manifest_failure = CaseFailure("x9", "manifest", "image file not found: x9.png")
    paths = write_radiomics(serial, tmp_path / "radiomics.csv", extra_failures=[manifest_failure])
    assert paths == side_files(tmp_path / "radiomics.csv")
    assert paths["diagnostics"].name == "radiomics_diagnostics.csv"
    written = pd.read_csv(paths["features"], index_col=0)
    assert written.index.name == "case_id"
    np.testing.assert_array_equal(written.to_numpy(), serial.features.to_numpy())
    assert list(written.columns) == list(serial.features.columns)
    assert not any(c.startswith("diagnostics") for c in written.columns)
    diagnostics = pd.read_csv(paths["diagnostics"], index_col=0)
    assert {"image_sha256", "mask_sha256", "Mask-original_VoxelNum"} <= set(diagnostics.columns)
    assert pd.read_csv(paths["failures"], index_col=0).loc["x9", "stage"] == "manifest"
    settings = json.loads(paths["settings"].read_text())
    assert settings["params"] == "paper" and settings["params_sha256"] == resolve_params("paper").sha256
    assert settings["setting"]["binCount"] == 32 and settings["pyradiomics"].startswith("3.")
    assert settings["summary"]["features"] == 474 and settings["summary"]["failed"] == 1
    assert pd.read_csv(paths["quality"], index_col=0).shape == (474, 3)


def test_progress_events_reach_a_parent_process(cohort, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAD4XCNN_PROGRESS", "jsonl")
    extract_radiomics(cohort.cases[:2], "paper", jobs=1, progress=True)
    events = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert events[-1] == {
        "event": "progress",
        "stage": "radiomics",
        "done": 2,
        "total": 2,
        "message": "radiomics",
    }


def test_cli_radiomics_with_cache_and_failures(tmp_path, make_case, capsys):
    rows = [make_case("a", seed=1), make_case("b", seed=2), make_case("gone", seed=3)]
    (tmp_path / rows[2]["image"]).unlink()
    manifest = write_manifest_rows(tmp_path / "m.csv", rows)
    out = tmp_path / "run" / "radiomics.csv"
    argv = ["radiomics", "--manifest", str(manifest), "--out", str(out), "--jobs", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "radiomics (paper, 474 features): 2 of 2 cases extracted; 0 from the cache, 2 computed" in printed
    assert "1 case(s) failed" in printed
    assert pd.read_csv(side_files(out)["failures"], index_col=0).loc["gone", "stage"] == "manifest"
    assert (out.parent / ".rad4xcnn_cache").is_dir()
    assert main(argv) == 0
    assert "2 from the cache, 0 computed" in capsys.readouterr().out


def test_cli_fails_in_one_line_when_no_case_works(tmp_path, make_case, capsys):
    row = make_case("a")
    empty = np.zeros((60, 80), np.uint8)
    empty[5, 5] = 255
    write_png(tmp_path / row["mask"], empty)
    manifest = write_manifest_rows(tmp_path / "m.csv", [row])
    out = tmp_path / "radiomics.csv"
    assert main(["radiomics", "--manifest", str(manifest), "--out", str(out), "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert "rad4xcnn: error: no case gave radiomic features" in err
    assert side_files(out)["failures"].is_file()
    assert main(["radiomics", "--manifest", str(manifest), "--out", str(out), "--params", "nope"]) == 1
    assert "neither a preset" in capsys.readouterr().err


def test_importing_the_module_does_not_import_pyradiomics():
    import subprocess
    import sys

    code = (
        "import sys, Rad4XCNNLogic.features.radiomics\n"
        "print('radiomics' in sys.modules, 'dask' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_pixel_types_handed_to_pyradiomics():
    assert rf.pixels_for_pyradiomics(np.array([[0.0, 255.0]], np.float32)).dtype == np.uint8
    assert rf.pixels_for_pyradiomics(np.array([[-1024.0, 3000.0]], np.float32)).dtype == np.int16
    assert rf.pixels_for_pyradiomics(np.array([[0.0, 70000.0]], np.float32)).dtype == np.int32
    fractional = rf.pixels_for_pyradiomics(np.array([[0.5, 2.0]], np.float32))
    assert fractional.dtype == np.float64 and fractional[0, 0] == 0.5


def test_float_images_match_pyradiomics_on_float64(tmp_path):
    """Non-integer grey values go in as float64 (float32 would shift the wavelet features by ~1e-5)."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    image, mask = blob_image_and_mask((60, 80))
    values = image.astype(np.float32) / 7.0
    geometry = Image2D(values, spacing=(0.3, 0.3))
    write_image(tmp_path / "img.nrrd", values, like=geometry)
    write_image(tmp_path / "msk.nrrd", (mask > 0).astype(np.uint8), like=geometry)
    manifest = write_manifest_rows(
        tmp_path / "m.csv", [{"case_id": "f", "image": "img.nrrd", "mask": "msk.nrrd"}]
    )
    ours = extract_radiomics(read_manifest(manifest), "paper", jobs=1, progress=False).features.loc["f"]
    img = sitk.Cast(sitk.ReadImage(str(tmp_path / "img.nrrd")), sitk.sitkFloat64)
    msk = sitk.ReadImage(str(tmp_path / "msk.nrrd"))
    direct = featureextractor.RadiomicsFeatureExtractor(str(preset_path("paper"))).execute(img, msk)
    theirs = {k: float(v) for k, v in direct.items() if not k.startswith("diagnostics_")}
    assert _max_relative_difference(ours, theirs) < 1e-9
