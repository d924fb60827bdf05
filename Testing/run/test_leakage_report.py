"""The report's near-duplicate section: thumbnails of the closest pairs and of every label conflict, with
escaped captions, from a run folder's duplicates.csv."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cohort"))

from busi_like import make_busi_like

from Rad4XCNNLogic.cohort.busi import import_busi
from Rad4XCNNLogic.cohort.grouping import grouping_summary, read_grouped
from Rad4XCNNLogic.run.leakage_report import duplicates_section


def test_duplicates_section_shows_thumbnails_and_conflicts(tmp_path):
    root = make_busi_like(tmp_path / "busi")
    import_busi(root, tmp_path / "busi.csv")
    run = tmp_path / "run"
    run.mkdir()
    grouping = read_grouped(tmp_path / "busi.csv", seed=0)
    summary = grouping_summary(grouping, run / "duplicates.csv")
    section = duplicates_section(run, summary)
    rows = section["duplicate_rows"]
    assert len(rows) == 2 and sum(r["conflict"] for r in rows) == 1
    conflict = next(r for r in rows if r["conflict"])
    assert conflict["caption"].startswith("benign_003 (benign, internal/train) ~ malignant_006 (malignant")
    assert all(img and img.startswith("iVBOR") for r in rows for img in r["images"])  # PNG, base64
    assert (
        "1 label conflict(s)" in section["duplicates_note"] and "training split" in section["duplicates_note"]
    )

    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("Rad4XCNNLogic.run", "data"), autoescape=select_autoescape(["j2"]))
    rows[0]["caption"] = "<script>x</script>"
    html = env.get_template("report.html.j2").render(duplicates_note="n", duplicate_rows=rows)
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
