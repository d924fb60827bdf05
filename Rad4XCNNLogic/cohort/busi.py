"""Turn a folder in the public BUSI layout, or one of its common re-packagings, into a cohort manifest.

BUSI (Al-Dhabyani et al., 2020) has one sub-folder per class (``benign/``, ``malignant/``, ``normal/``),
images named ``<class> (N).png`` and their masks ``<class> (N)_mask.png``, ``<class> (N)_mask_1.png``, ...
side by side. Re-packaged copies often put each class's images and masks in sub-folders
(``<class>/images/`` with ``<class>/masks/`` or ``<class>/mask/``; mask names with or without ``_mask``).
A folder holding a single folder in either layout (``archive/Dataset_BUSI_with_GT/``) is read through it.
Several masks of one image are joined with ``;`` (the cohort layer merges them: their union). ``normal``
cases have empty masks: they are kept with ``has_lesion=false`` so that lesion analyses leave them out by
default.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from Rad4XCNNLogic.cohort.manifest import Case, Cohort, write_manifest
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError

log = logging.getLogger(__name__)

NO_LESION_CLASSES = ("normal",)
#: The layouts :func:`scan_busi` reads, as it names them.
SIDE_BY_SIDE = "BUSI layout (<class>/<class> (N).png beside its _mask files)"
SUBFOLDERS = "re-packaged layout (<class>/images with <class>/masks or <class>/mask)"
_IMAGE_FOLDERS = ("images", "image", "imgs")
_MASK_FOLDERS = ("masks", "mask", "labels", "gt")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_MASK_RE = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\((\d+)\)\s*$")


@dataclass
class BusiImport:
    """What an import found: the cohort, and the files it could not pair."""

    cohort: Cohort
    multi_mask_cases: list[str] = field(default_factory=list)
    #: the layouts found (:data:`SIDE_BY_SIDE`, :data:`SUBFOLDERS`)
    layouts: list[str] = field(default_factory=list)
    #: (width, height) of every image; the modes (``RGB``, ``L``, ``1``, ``RGBA``...) of images and masks
    sizes: list[tuple[int, int]] = field(default_factory=list)
    image_modes: Counter = field(default_factory=Counter)
    mask_modes: Counter = field(default_factory=Counter)

    def describe(self) -> list[str]:
        """Lines for people: the layout, the size range and how channels are read."""
        lines = [f"layout: {', '.join(self.layouts) or 'none found'}"]
        if self.sizes:
            widths, heights = [w for w, _ in self.sizes], [h for _, h in self.sizes]
            lines.append(
                f"image sizes: {min(widths)}-{max(widths)} wide, {min(heights)}-{max(heights)} high "
                f"({len(set(self.sizes))} distinct sizes; kept native, resized only for the networks)"
            )

        def modes(counter: Counter) -> str:
            return ", ".join(f"{m} {n}" for m, n in sorted(counter.items())) or "none"

        lines.append(
            f"image modes: {modes(self.image_modes)} (colour read as grey: equal channels through the first, "
            "else BT.601 luma; alpha dropped)"
        )
        lines.append(
            f"mask modes: {modes(self.mask_modes)} (1-bit and L as they are; RGB/RGBA 0/255 through the "
            "first channel, alpha dropped unless it alone draws the lesion; several masks of an image: union)"
        )
        return lines


def _case_id(label: str, stem: str) -> str:
    number = _NUMBER_RE.search(stem)
    if number:
        return f"{label}_{int(number.group(1)):03d}"
    return re.sub(r"[^0-9A-Za-z]+", "_", f"{label}_{stem}").strip("_")


def _natural_key(text: str) -> list:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def _find_root(root: Path) -> Path:
    """``root``, or the single folder inside it that holds the class folders (an unpacked archive)."""
    subs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))]
    if len(subs) == 1 and not any(
        f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES for f in subs[0].iterdir()
    ):
        inner = [d for d in subs[0].iterdir() if d.is_dir()]
        if inner and not any(d.name.lower() in _IMAGE_FOLDERS + _MASK_FOLDERS for d in inner):
            log.info("reading the BUSI folder inside %s: %s", root, subs[0].name)
            return subs[0]
    return root


def _sub(folder: Path, names: tuple[str, ...]) -> Path | None:
    for d in sorted(folder.iterdir()):
        if d.is_dir() and d.name.lower() in names:
            return d
    return None


def _class_files(class_dir: Path) -> tuple[str, dict[str, Path], dict[str, list[tuple[int, Path]]]]:
    """(layout, image stem -> file, image stem -> its [(k, mask file)]) of one class folder."""
    images: dict[str, Path] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    image_dir, mask_dir = _sub(class_dir, _IMAGE_FOLDERS), _sub(class_dir, _MASK_FOLDERS)
    layout = SUBFOLDERS if image_dir is not None and mask_dir is not None else SIDE_BY_SIDE

    def files(folder: Path):
        return (f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)

    if layout == SUBFOLDERS:
        images = {f.stem: f for f in files(image_dir)}
        for f in files(mask_dir):
            m = _MASK_RE.match(f.stem)
            stem, k = (m.group("stem"), int(m.group("k") or 0)) if m else (f.stem, 0)
            masks.setdefault(stem, []).append((k, f))
        return layout, images, masks
    for f in files(class_dir):
        m = _MASK_RE.match(f.stem)
        if m:
            masks.setdefault(m.group("stem"), []).append((int(m.group("k") or 0), f))
        else:
            images[f.stem] = f
    return layout, images, masks


def scan_busi(root: str | os.PathLike) -> BusiImport:
    """Pair BUSI images with their masks, class by class (either layout, :data:`SIDE_BY_SIDE` or
    :data:`SUBFOLDERS`); unpaired files become failures. The images' sizes and the files' modes are read
    from their headers for the summary."""
    from Rad4XCNNLogic.cohort.imageio import image_info

    root = Path(root)
    if not root.is_dir():
        raise Rad4XCNNError(f"BUSI folder not found: {root}")
    root = _find_root(root)
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name.lower()
    )
    if not class_dirs:
        raise Rad4XCNNError(f"{root} holds no class sub-folders (expected benign/, malignant/, normal/)")
    cases: list[Case] = []
    failures: list[CaseFailure] = []
    result = BusiImport(Cohort(cases, failures, None))
    seen_ids: set[str] = set()
    for class_dir in class_dirs:
        label = class_dir.name.strip().lower()
        layout, images, masks = _class_files(class_dir)
        if not images:
            log.warning("class folder %s holds no images; skipped", class_dir)
            continue
        if layout not in result.layouts:
            result.layouts.append(layout)
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
                result.multi_mask_cases.append(case_id)
            info = image_info(images[stem])
            if info is not None:
                result.sizes.append(info[:2])
                result.image_modes[info[2]] += 1
            for _, mask in found:
                mask_info = image_info(mask)
                result.mask_modes[mask_info[2] if mask_info else "unreadable"] += 1
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
    return result


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
