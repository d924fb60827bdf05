"""The report's near-duplicate and split-luck parts, from the run folder's ``duplicates.csv`` (the closest
pairs and every label conflict, with small inline thumbnails) and ``repeated_splits.csv`` (the best
classifier of each feature set over repeated splits, grouped and as if ungrouped).
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run.results import read_optional_csv

log = logging.getLogger(__name__)

#: The closest pairs shown with thumbnails (every label conflict is shown as well).
CLOSEST_SHOWN = 8
#: The thumbnails' longest side, in pixels.
THUMBNAIL = 128


def thumbnail(path: Path, size: int = THUMBNAIL) -> str | None:
    """A small grey PNG of an image file, base64 for an ``<img src="data:...">``; None if unreadable."""
    import numpy as np
    from PIL import Image

    from Rad4XCNNLogic.cohort.imageio import read_image
    from Rad4XCNNLogic.errors import CaseError

    try:
        grey = read_image(path).array
    except CaseError as exc:
        log.warning("no thumbnail: %s", exc)
        return None
    low, high = np.percentile(grey, [1, 99]) if grey.size else (0.0, 1.0)
    scaled = np.clip((grey - low) / max(float(high - low), 1e-9), 0, 1) * 255
    img = Image.fromarray(scaled.astype(np.uint8), "L")
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def duplicates_section(out: Path, cohort_summary: dict | None = None) -> dict[str, Any]:
    """``duplicate_rows`` (closest pairs, then the label conflicts not among them: captions and
    thumbnails) and ``duplicates_note``; empty when the run has no ``duplicates.csv``."""
    table = read_optional_csv(out / RunFiles.DUPLICATES, dtype=str, keep_default_na=False)
    if table is None:
        return {}
    n_pairs = len(table)
    if not n_pairs:
        return {"duplicates_note": "No near-duplicate images were found."}
    conflict = table["conflict"].str.lower() == "true"
    across = table["across_splits"].str.lower() == "true"
    clusters = table["cluster"].replace("", None).nunique()
    note = (
        f"{n_pairs} near-duplicate image pair(s) (pHash distance up to the setting split.duplicate_distance) "
        f"in {clusters} cluster(s); {int(conflict.sum())} label conflict(s); {int(across.sum())} pair(s) "
        "across splits."
    )
    external = table["place_a"].str.split("/").str[0] != table["place_b"].str.split("/").str[0]
    if external.any():
        note += f" {int(external.sum())} pair(s) join two cohorts (an external cohort overlaps another)."
    if cohort_summary and cohort_summary.get("label_conflict_action"):
        note += f" Label conflicts: {cohort_summary['label_conflict_action']}."
    if cohort_summary and cohort_summary.get("grouped") is False:
        note += " Near-duplicates were NOT kept together (split.group_duplicates is false)."
    shown = list(range(min(CLOSEST_SHOWN, n_pairs))) + [i for i in range(n_pairs) if conflict.iloc[i]]
    rows = []
    for i in dict.fromkeys(shown):
        r = table.iloc[i]
        caption = (
            f"{r['case_a']} ({r['label_a'] or 'no label'}, {r['place_a']}) ~ {r['case_b']} "
            f"({r['label_b'] or 'no label'}, {r['place_b']}): distance {r['distance']}"
            + (", LABEL CONFLICT" if conflict.iloc[i] else "")
        )
        images = [thumbnail(out / r[column]) if r.get(column) else None for column in ("image_a", "image_b")]
        rows.append({"caption": caption, "images": images, "conflict": bool(conflict.iloc[i])})
    return {"duplicate_rows": rows, "duplicates_note": note}


def repeated_section(out: Path, fine_tuned: bool) -> dict[str, Any]:
    """``repeated_table`` (a DataFrame: mean, spread and the headline split's place, grouped and as if
    ungrouped, side by side) and ``repeated_note``; empty when the run has no ``repeated_splits.csv``."""
    import pandas as pd

    from Rad4XCNNLogic.classify.repeated import GROUPED, UNGROUPED, summarise_repeats

    table = read_optional_csv(out / RunFiles.REPEATED_SPLITS)
    if table is None or not len(table):
        return {}
    metrics = read_optional_csv(out / RunFiles.CLASSIFICATION)
    summary = summarise_repeats(table, metrics)

    def cell(row) -> str:
        return f"{row.mean_auc:.3f} ± {row.sd_auc:.3f} ({row.min_auc:.3f}-{row.max_auc:.3f}, n={row.repeats})"

    rows = []
    for (fs, clf), part in summary.groupby(["feature_set", "classifier"], sort=False):
        by = {r.grouping: r for r in part.itertuples()}
        grouped = by.get(GROUPED)
        line = {"feature set": fs, "classifier": clf}
        line["headline AUC (internal test)"] = f"{part['headline_auc'].iloc[0]:.3f}"
        line["grouped: mean ± sd (range)"] = cell(grouped) if grouped is not None else ""
        line["headline's place among grouped"] = (
            f"{grouped.headline_rank:.0%} of repeats at or below it" if grouped is not None else ""
        )
        if UNGROUPED in by:
            line["as if ungrouped: mean ± sd (range)"] = cell(by[UNGROUPED])
            if grouped is not None:
                line["leakage (ungrouped - grouped mean)"] = (
                    f"{by[UNGROUPED].mean_auc - grouped.mean_auc:+.3f}"
                )
        rows.append(line)
    note = (
        f"The best classifier of each feature set (by CV AUC) refitted with its chosen hyper-parameters on "
        f"{int(table['seed'].nunique())} new splits of the training cohort (same shares, new seeds; no new "
        "search) and scored on each new test split (repeated_splits.csv). Grouped splits keep patients and "
        "near-duplicate clusters whole, as the headline split does; 'as if ungrouped' splits the same cases "
        "by patient only, as if the near-duplicates were unknown."
    )
    if fine_tuned:
        note += (
            " The deep feature sets' repeated figures reuse features from a network fine-tuned on the "
            "headline split, so they are optimistic; the radiomic sets' are exact."
        )
    else:
        note += " The deep features come from networks not fine-tuned here: every figure is exact."
    return {"repeated_table": pd.DataFrame(rows), "repeated_note": note}
