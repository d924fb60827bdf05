"""Turn a folder in the public BUSI layout into a cohort manifest.

BUSI (Al-Dhabyani et al., 2020) has one sub-folder per class (``benign/``, ``malignant/``, ``normal/``),
images named ``<class> (N).png`` and their masks ``<class> (N)_mask.png``, ``<class> (N)_mask_1.png``, ...
Several masks of one image are joined with ``;`` (the cohort layer merges them). ``normal`` cases have
empty masks: they are kept with ``has_lesion=false`` so that lesion analyses leave them out by default.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from Rad4XCNNLogic.cohort.manifest import Case, Cohort, write_manifest
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError

log = logging.getLogger(__name__)

NO_LESION_CLASSES = ("normal",)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_MASK_RE = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\((\d+)\)\s*$")


@dataclass
class BusiImport:
    """What an import found: the cohort, and the files it could not pair."""

    cohort: Cohort
    multi_mask_cases: list[str] = field(default_factory=list)


def _case_id(label: str, stem: str) -> str:
    number = _NUMBER_RE.search(stem)
    if number:
        return f"{label}_{int(number.group(1)):03d}"
    return re.sub(r"[^0-9A-Za-z]+", "_", f"{label}_{stem}").strip("_")


def _natural_key(text: str) -> list:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def scan_busi(root: str | os.PathLike) -> BusiImport:
    """Pair BUSI images with their masks, class by class; unpaired files become failures."""
    root = Path(root)
    if not root.is_dir():
        raise Rad4XCNNError(f"BUSI folder not found: {root}")
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name.lower()
    )
    if not class_dirs:
        raise Rad4XCNNError(f"{root} holds no class sub-folders (expected benign/, malignant/, normal/)")
    cases: list[Case] = []
    failures: list[CaseFailure] = []
    multi: list[str] = []
    seen_ids: set[str] = set()
    for class_dir in class_dirs:
        label = class_dir.name.strip().lower()
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for f in class_dir.iterdir():
            if not f.is_file() or f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            m = _MASK_RE.match(f.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append((int(m.group("k") or 0), f))
            else:
                images[f.stem] = f
        if not images:
            log.warning("class folder %s holds no images; skipped", class_dir)
        for stem in sorted(images, key=_natural_key):
            case_id = _case_id(label, stem)
            if case_id in seen_ids:
                failures.append(CaseFailure(case_id, "import", f"two images map to this id ({stem})"))
                continue
            seen_ids.add(case_id)
            found = sorted(masks.pop(stem, []))
            if not found:
                failures.append(CaseFailure(case_id, "import", f"no mask file for image {images[stem].name}"))
                continue
            if len(found) > 1:
                multi.append(case_id)
            cases.append(
                Case(
                    case_id=case_id,
                    image=images[stem],
                    masks=tuple(p for _, p in found),
                    label=label,
                    has_lesion=label not in NO_LESION_CLASSES,
                )
            )
        for stem, orphan in sorted(masks.items()):
            failures.append(
                CaseFailure(_case_id(label, stem), "import", f"mask {orphan[0][1].name} has no image")
            )
    return BusiImport(Cohort(cases, failures, None), multi)


def import_busi(root: str | os.PathLike, out: str | os.PathLike) -> BusiImport:
    """Scan a BUSI folder and write its manifest to ``out`` (paths relative to the manifest's folder).

    Examples
    --------
    >>> result = import_busi("Dataset_BUSI_with_GT", "busi_manifest.csv")  # doctest: +SKIP
    >>> len(result.cohort)  # doctest: +SKIP
    780
    """
    result = scan_busi(root)
    if not result.cohort.cases:
        raise Rad4XCNNError(f"no image with a mask found under {root}")
    write_manifest(result.cohort, out)
    for failure in result.cohort.failures:
        log.warning("%s", failure)
    return result
