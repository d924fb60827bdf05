"""The SampleData module's synthetic case and cohort on slicer-core: paired, labelled, exportable."""

from __future__ import annotations

import pytest
import slicer  # noqa: F401  a missing slicer-core must fail loudly, not skip
from Rad4XCNNLib import bridge, masks, sampledata


def test_the_sample_cohort_is_a_scene_cohort_the_engine_reads(tmp_path):
    from Rad4XCNNLogic.cohort.manifest import read_manifest

    bridge.headless_slicer()
    pairs = sampledata.load_cases(3, seed=1)
    assert [p.case_id for p in pairs] == ["synthetic 01", "synthetic 02", "synthetic 03"]
    assert [p.label for p in pairs] == ["benign", "malignant", "benign"]
    assert all(masks.mask_from_segment(p.segmentation, None, p.volume).any() for p in pairs)
    assert bridge.image_from_volume_node(pairs[0].volume).spacing == (0.1, 0.1)
    cohort = read_manifest(masks.export_scene_cohort(pairs, tmp_path), check_images=True)
    assert len(cohort) == 3 and not cohort.failures
    # the SampleData button calls the downloader with its source: one more case, a new name
    (one,) = sampledata.downloader(1)("source")
    assert one.case_id == "synthetic case" and one.volume.GetAttribute("Rad4XCNN.label") == "benign"
    with pytest.raises(ValueError, match="at least one case"):
        sampledata.load_cases(0)


def test_registration_with_the_sampledata_module():
    calls = []
    names = sampledata.register(lambda **kwargs: calls.append(kwargs), "icon.png")
    assert names == ["Rad4XCNN synthetic case", "Rad4XCNN synthetic cohort"]
    assert [c["sampleName"] for c in calls] == names
    assert {c["category"] for c in calls} == {"Rad4XCNN"} and calls[0]["thumbnailFileName"] == "icon.png"
    bridge.headless_slicer()
    assert len(calls[1]["customDownloader"]("source")) == 12  # the cohort's button: twelve cases


def test_reload_brings_back_edited_library_code():
    """The module's Reload reloads Rad4XCNNLib too (a changed helper takes effect without a restart)."""
    import Rad4XCNNLib
    from Rad4XCNNLib import guistate, plots  # noqa: F401  plots imports tables

    guistate.RESULT_BUTTONS = {}
    reloaded = Rad4XCNNLib.reload_library()
    assert "Rad4XCNNLib.guistate" in reloaded and guistate.RESULT_BUTTONS["showRhoPlotButton"] == "RhoChart"
    # each module after those it imports: tables before plots, bridge before masks
    assert reloaded.index("Rad4XCNNLib.tables") < reloaded.index("Rad4XCNNLib.plots")
    assert reloaded.index("Rad4XCNNLib.bridge") < reloaded.index("Rad4XCNNLib.masks")
