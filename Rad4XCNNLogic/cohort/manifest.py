"""The cohort manifest (README, "Data: the cohort manifest"): read, validate, split and write it, and
load its cases.

A manifest is a UTF-8 CSV with the columns ``case_id``, ``image``, ``mask`` (required) and ``label``,
``split``, ``cohort``, ``has_lesion``, ``patient_id`` (optional; cases of one patient are kept on one side of
every split). Bad rows do not stop a load: they become
:class:`~Rad4XCNNLogic.errors.CaseFailure` records naming the case and the problem, and the good cases load.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from Rad4XCNNLogic.cohort.imageio import Image2D, read_image, read_mask
from Rad4XCNNLogic.cohort.settings import DEFAULT_COHORT, DEFAULT_SPLIT_FRACTIONS
from Rad4XCNNLogic.cohort.volumes import Volume, image_info, read_volume, read_volume_mask
from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError, first_line

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("case_id", "image", "mask")
OPTIONAL_COLUMNS = ("label", "split", "cohort", "has_lesion", "patient_id", "split_group")
SPLITS = ("train", "val", "test")
MASK_SEPARATOR = ";"
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class Case:
    """One row of a manifest, with paths resolved against the manifest's folder.

    ``has_lesion`` is False for cases without a lesion (e.g. BUSI's ``normal`` class): their mask may be
    empty, and lesion analyses (radiomics, ROI crops, correlations) leave them out by default.
    ``patient_id`` groups the images of one patient (None: the case is its own patient).
    ``split_group`` is the unit a split keeps whole (patients joined by near-duplicate images, written by
    the cohort stage; None: the patient).
    """

    case_id: str
    image: Path
    masks: tuple[Path, ...]
    label: str | None = None
    split: str | None = None
    cohort: str = DEFAULT_COHORT
    has_lesion: bool = True
    split_assigned: bool = False
    extra: dict = field(default_factory=dict, compare=False)
    patient_id: str | None = None
    split_group: str | None = None
    #: 2 (an image) or 3 (a volume: three axes of more than one voxel, or a DICOM series folder), read
    #: from the file's header when the manifest is read; None when it was not read.
    dims: int | None = field(default=None, compare=False)
    #: The voxel spacing (x, y[, z]) in mm from the header, when read.
    spacing: tuple[float, ...] | None = field(default=None, compare=False)

    @property
    def patient(self) -> str:
        """The patient this case belongs to: ``patient_id``, or the case itself when none is given."""
        return self.patient_id if self.patient_id else self.case_id

    @property
    def group(self) -> str:
        """What splits, cross-validation folds and the bootstrap keep whole: ``split_group``, else the
        patient."""
        return self.split_group if self.split_group else self.patient

    def load(self) -> LoadedCase:
        """Read the image and the merged mask, and check them; raises :class:`CaseError` on bad input.

        A volume (see :attr:`dims`) is read as a :class:`~Rad4XCNNLogic.cohort.volumes.Volume` with its
        mask checked against its geometry; anything else as a 2D image.
        """
        dims = self.dims
        if dims is None:
            info = image_info(self.image) if self.image.exists() else None
            dims = info[0] if info else 2
        image: Image2D | Volume
        if dims == 3:
            image = read_volume(self.image, self.case_id)
            mask = read_volume_mask(self.masks, image, self.case_id)
        else:
            image = read_image(self.image, self.case_id)
            mask = read_mask(self.masks, image.shape, self.case_id)
        if self.has_lesion and not mask.any():
            raise CaseError(
                self.case_id,
                "mask is empty (no lesion pixel); mark the case has_lesion=false if it has no lesion",
            )
        return LoadedCase(self, image, mask)


@dataclass(frozen=True)
class LoadedCase:
    """A case with its pixels: the grey image (or volume) with geometry and the boolean lesion mask."""

    case: Case
    image: Image2D | Volume
    mask: np.ndarray

    @property
    def case_id(self) -> str:
        return self.case.case_id


@dataclass
class Cohort:
    """The good cases of a manifest and the failures of the bad ones."""

    cases: list[Case]
    failures: list[CaseFailure] = field(default_factory=list)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __getitem__(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise KeyError(case_id)

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def subset(
        self,
        keep: Iterable[str] | None = None,
        *,
        split: str | None = None,
        cohort: str | None = None,
        lesion_only: bool = False,
    ) -> Cohort:
        """A cohort of the cases that match every filter given (the failures are kept)."""
        wanted = None if keep is None else set(keep)
        cases = [
            c
            for c in self.cases
            if (wanted is None or c.case_id in wanted)
            and (split is None or c.split == split)
            and (cohort is None or c.cohort == cohort)
            and (not lesion_only or c.has_lesion)
        ]
        return Cohort(cases, list(self.failures), self.source)

    def lesion_cases(self) -> Cohort:
        """The cases with a lesion: what radiomics, deep features and correlations use by default."""
        return self.subset(lesion_only=True)

    @property
    def labels(self) -> list[str]:
        """The class names present, sorted."""
        return sorted({c.label for c in self.cases if c.label is not None})

    @property
    def cohorts(self) -> list[str]:
        """The cohort names present, the default (internal) first."""
        names = {c.cohort for c in self.cases}
        return sorted(names, key=lambda n: (n != DEFAULT_COHORT, n))

    def frame(self, relative_to: str | os.PathLike | None = None):
        """The cohort as a pandas DataFrame indexed by case_id (paths relative to ``relative_to``)."""
        import pandas as pd

        rows = []
        for c in self.cases:
            rows.append(
                {
                    "case_id": c.case_id,
                    "image": _rel(c.image, relative_to),
                    "mask": MASK_SEPARATOR.join(_rel(m, relative_to) for m in c.masks),
                    "label": c.label or "",
                    "split": c.split or "",
                    "cohort": c.cohort,
                    "has_lesion": "true" if c.has_lesion else "false",
                    "patient_id": c.patient_id or "",
                    "split_group": c.split_group or "",
                    **{k: v for k, v in c.extra.items() if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS},
                }
            )
        columns = list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        frame = pd.DataFrame(rows)
        if frame.empty:
            frame = pd.DataFrame(columns=columns)
        return frame.set_index("case_id")

    def summary(self) -> dict:
        """Counts by cohort, split and label, and the number of failures."""
        table: dict[str, dict[str, dict[str, int]]] = {}
        for c in self.cases:
            per = table.setdefault(c.cohort, {}).setdefault(c.split or "unassigned", {})
            key = c.label if c.label is not None else "unlabelled"
            per[key] = per.get(key, 0) + 1
        return {
            "cases": len(self.cases),
            "with_lesion": sum(c.has_lesion for c in self.cases),
            "labels": dict(Counter(c.label or "unlabelled" for c in self.cases)),
            "by_cohort_split_label": table,
            "failures": len(self.failures),
            **self.geometry(),
        }

    @property
    def dims(self) -> int | None:
        """3 for a cohort of volumes, 2 for one of images, None when no header was read."""
        found = {c.dims for c in self.cases if c.dims is not None}
        return max(found) if found else None

    def geometry(self) -> dict:
        """``dims`` and, for volumes, the range of each spacing axis (mm) over the cases."""
        if self.dims != 3:
            return {}
        spacings = np.array([c.spacing for c in self.cases if c.spacing is not None], dtype=float)
        ranges = [[float(spacings[:, a].min()), float(spacings[:, a].max())] for a in range(3)]
        return {"dims": 3, "spacing_range": ranges}

    def iter_loaded(
        self, failures: list[CaseFailure] | None = None, stage: str = "load"
    ) -> Iterator[LoadedCase]:
        """Load each case in turn; a case that fails is appended to ``failures`` (or raises if None)."""
        for case in self.cases:
            try:
                yield case.load()
            except CaseError as exc:
                if failures is None:
                    raise
                failures.append(CaseFailure(case.case_id, stage, exc.problem))
                log.warning("%s", exc)


def _rel(path: Path, relative_to: str | os.PathLike | None) -> str:
    if relative_to is None:
        return os.fspath(path)
    try:
        return Path(os.path.relpath(path, Path(relative_to).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return os.fspath(path)


def _parse_bool(text: str) -> bool | None:
    t = text.strip().lower()
    if t == "" or t in _TRUE:
        return True
    if t in _FALSE:
        return False
    return None


def read_manifest(
    path: str | os.PathLike,
    *,
    check_files: bool = True,
    check_images: bool = False,
    assign_split: bool = True,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    train_cohort: str | Sequence[str] = DEFAULT_COHORT,
    require_images: bool = True,
) -> Cohort:
    """Read and validate a manifest; bad rows become failures and the good cases are returned.

    Parameters
    ----------
    path : the manifest CSV. Relative paths in it are taken from its folder.
    check_files : check that every image and mask file exists.
    check_images : also read every case (readable, same size, binary mask, lesion not empty). Slower.
    assign_split : give a seeded, stratified split to cases whose ``split`` is empty
        (see :func:`assign_splits`).
    seed, fractions, train_cohort : passed to :func:`assign_splits`.
    require_images : False for a manifest of labels only (classifying a feature table: ``case_id``,
        ``label``, ``split``, ``cohort``, ``patient_id``): ``image`` and ``mask`` may then be absent.

    Raises
    ------
    Rad4XCNNError
        when the file cannot be read as CSV or lacks a required column.

    Examples
    --------
    >>> cohort = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> len(cohort), [str(f) for f in cohort.failures]  # doctest: +SKIP
    (198, ['case b12: mask file not found: masks/b12.png [manifest]', ...])
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise Rad4XCNNError(f"manifest not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = first_line(exc)
        raise Rad4XCNNError(f"manifest {path.name} is not a readable UTF-8 CSV: {first}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in (REQUIRED_COLUMNS if require_images else ("case_id",)) if c not in frame.columns]
    if missing:
        raise Rad4XCNNError(
            f"manifest {path.name} lacks the required column(s) {', '.join(missing)}; "
            f"found: {', '.join(frame.columns) or 'none'}"
        )
    if frame.empty:
        raise Rad4XCNNError(f"manifest {path.name} has no cases (a header and no rows)")
    root = path.resolve().parent
    cases: list[Case] = []
    failures: list[CaseFailure] = []
    ids = [str(v).strip() for v in frame["case_id"]]
    counts = Counter(ids)
    for row_number, (case_id, (_, row)) in enumerate(zip(ids, frame.iterrows(), strict=True), start=2):

        def fail(problem: str, cid: str = case_id) -> None:
            failures.append(CaseFailure(cid, "manifest", problem))

        if not case_id:
            fail(f"row {row_number} has an empty case_id", f"row{row_number}")
            continue
        if counts[case_id] > 1:
            fail(f"duplicate case_id ({counts[case_id]} rows use it; row {row_number} left out)")
            continue
        values = {k: str(row.get(k, "")).strip() for k in frame.columns}
        split = values.get("split", "").lower() or None
        if split is not None and split not in SPLITS:
            fail(f"unknown split {values['split']!r} (expected one of {', '.join(SPLITS)}, or empty)")
            continue
        has_lesion = _parse_bool(values.get("has_lesion", ""))
        if has_lesion is None:
            fail(f"has_lesion must be true or false, got {values['has_lesion']!r}")
            continue
        if not values.get("image") and require_images:
            fail("no image file given")
            continue
        mask_names = [m.strip() for m in values.get("mask", "").split(MASK_SEPARATOR) if m.strip()]
        if not mask_names and require_images:
            fail("no mask file given")
            continue
        image = _resolve(root, values.get("image") or ".")
        masks = tuple(_resolve(root, m) for m in mask_names)
        if check_files and require_images:
            # a folder image is a DICOM series; its masks are files
            absent = [p for p in (image, *masks) if not (p.is_file() or (p is image and p.is_dir()))]
            if absent:
                kind = "image" if absent[0] == image else "mask"
                fail(f"{kind} file not found: {absent[0]}")
                continue
        extra = {k: v for k, v in values.items() if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        cases.append(
            Case(
                case_id=case_id,
                image=image,
                masks=masks,
                label=values.get("label") or None,
                split=split,
                cohort=values.get("cohort") or DEFAULT_COHORT,
                has_lesion=has_lesion,
                extra=extra,
                patient_id=values.get("patient_id") or None,
                split_group=values.get("split_group") or None,
            )
        )
    if check_files and require_images:
        cases = _with_dimensions(cases, path.name)
    elif require_images:
        cases = _with_first_dimensions(cases)
    cohort = Cohort(cases, failures, path)
    if check_images:
        cohort = validate_images(cohort)
    if assign_split:
        cohort.cases = assign_splits(cohort.cases, fractions=fractions, seed=seed, train_cohort=train_cohort)
        straddling = patients_across_splits(cohort.cases)
        if straddling:
            log.warning(
                "%d patient(s) have cases in more than one split (from the manifest's own splits): %s",
                len(straddling),
                "; ".join(f"{p} ({', '.join(w)})" for p, w in list(straddling.items())[:10]),
            )
    for failure in cohort.failures:
        log.warning("%s", failure)
    return cohort


def _with_first_dimensions(cases: list[Case]) -> list[Case]:
    """Every case with the dimensionality of the first image whose header can be read, for a manifest read
    without checking its files (a run's cohort.csv, checked when the run read it: one kind per cohort), so
    that volumes are known as volumes; cases unchanged when no header can be read."""
    for case in cases:
        info = image_info(case.image) if case.image.exists() else None
        if info is not None:
            return [c if c.dims is not None else replace(c, dims=info[0]) for c in cases]
    return cases


def _with_dimensions(cases: list[Case], manifest: str) -> list[Case]:
    """Each case with its dimensionality read from its image header; 2D and 3D mixed is an error."""
    result = []
    for case in cases:
        info = image_info(case.image)
        result.append(replace(case, dims=info[0], spacing=info[1]) if info else case)
    flat = next((c for c in result if c.dims == 2), None)
    deep = next((c for c in result if c.dims == 3), None)
    if flat is not None and deep is not None:
        raise Rad4XCNNError(
            f"manifest {manifest} mixes 2D images and 3D volumes (case {flat.case_id} is 2D, case "
            f"{deep.case_id} is 3D); analyse them in separate runs"
        )
    return result


def _resolve(root: Path, text: str) -> Path:
    p = Path(os.path.expanduser(text))
    return Path(os.path.normpath(p if p.is_absolute() else root / p))


def validate_images(cohort: Cohort) -> Cohort:
    """Read every case; those that fail move to the cohort's failures with the reason."""
    good: list[Case] = []
    failures = list(cohort.failures)
    for case in cohort.cases:
        try:
            case.load()
        except CaseError as exc:
            failures.append(CaseFailure(case.case_id, "manifest", exc.problem))
            continue
        good.append(case)
    return Cohort(good, failures, cohort.source)


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into counts proportional to ``fractions`` (largest remainder, exact total)."""
    total = float(sum(fractions))
    quotas = [n * f / total for f in fractions]
    counts = [int(np.floor(q)) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def assign_splits(
    cases: Sequence[Case],
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    train_cohort: str | Sequence[str] = DEFAULT_COHORT,
) -> list[Case]:
    """Give a split to every case whose ``split`` is empty; splits already given are kept.

    The rule: in the training cohort (``internal`` by default) the cases without a split are divided into
    train/val/test in the proportions ``fractions``, stratified by label (each label's cases shuffled with
    ``seed`` after sorting by case_id, so the result does not depend on row order); cases of every other
    cohort are external validation data and get ``test``. ``train_cohort`` may name several cohorts (e.g.
    the cohorts of a two-phase training): each is split the same way, on its own.

    Groups (:attr:`Case.group`: the ``split_group``, else the ``patient_id``) are never divided: a group's
    cases are shuffled and assigned as one unit (stratified by the group's most common label), so the
    proportions hold in cases up to one group's size; a case whose group already has cases with a split
    given in the manifest takes that split. Without patient ids or groups every case is its own unit and
    the result is the per-case split.

    Examples
    --------
    >>> cases = assign_splits(cohort.cases, fractions=(0.7, 0.1, 0.2), seed=0)  # doctest: +SKIP
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise Rad4XCNNError(f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
    split_here = {train_cohort} if isinstance(train_cohort, str) else set(train_cohort)
    assigned: dict[str, str] = {}
    given: dict[str, set[str]] = {}
    for c in cases:
        if c.split is not None and c.cohort in split_here:
            given.setdefault(c.group, set()).add(c.split)
    pending = sorted(
        (c for c in cases if c.split is None and c.cohort in split_here), key=lambda c: c.case_id
    )
    units: dict[str, list[Case]] = {}
    for c in pending:
        if len(given.get(c.group, ())) == 1:
            assigned[c.case_id] = next(iter(given[c.group]))  # join the group's other cases
        else:
            units.setdefault(c.group, []).append(c)
    by_label: dict[tuple[str, str], list[list[Case]]] = {}
    for members in units.values():
        labels = Counter(c.label or "" for c in members)
        label = sorted(labels, key=lambda lab: (-labels[lab], lab))[0]
        by_label.setdefault((members[0].cohort, label), []).append(members)
    rng = np.random.default_rng(seed)
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        counts = _allocate(sum(len(u) for u in group), fractions)
        bounds = np.cumsum(counts)
        filled = 0
        for idx in order:
            # the split where the middle of this unit's run of cases falls: exact for single cases
            middle = filled + len(group[idx]) / 2.0
            split = SPLITS[min(int(np.searchsorted(bounds, middle, side="right")), len(SPLITS) - 1)]
            filled += len(group[idx])
            for c in group[idx]:
                assigned[c.case_id] = split
    result = []
    for c in cases:
        if c.split is not None:
            result.append(c)
        elif c.cohort in split_here:
            result.append(replace(c, split=assigned[c.case_id], split_assigned=True))
        else:
            result.append(replace(c, split="test", split_assigned=True))
    return result


def patients_across_splits(cases: Iterable[Case]) -> dict[str, list[str]]:
    """Patients whose cases lie in more than one (cohort, split): patient id -> the sorted places.

    A patient on two sides of a split lets the classifier be scored on a patient it was trained on.

    Examples
    --------
    >>> a = Case("a", Path("a.png"), (), split="train", patient_id="p1")
    >>> b = Case("b", Path("b.png"), (), split="test", patient_id="p1")
    >>> patients_across_splits([a, b])
    {'p1': ['internal/test', 'internal/train']}
    """
    places: dict[str, set[str]] = {}
    for c in cases:
        if c.patient_id:
            places.setdefault(c.patient_id, set()).add(f"{c.cohort}/{c.split or 'unassigned'}")
    return {p: sorted(where) for p, where in sorted(places.items()) if len(where) > 1}


def write_manifest(cohort: Cohort | Sequence[Case], path: str | os.PathLike) -> Path:
    """Write cases as a manifest CSV (paths relative to the manifest's folder), atomically."""
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    path = Path(path)
    if not isinstance(cohort, Cohort):
        cohort = Cohort(list(cohort))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv_atomic(path, cohort.frame(relative_to=path.parent))


def format_summary(cohort: Cohort) -> str:
    """A short human-readable table of the cohort: cases per cohort, split and label, and the failures."""
    lines = []
    summary = cohort.summary()
    labels = sorted(summary["labels"])
    header = f"{'cohort':<12}{'split':<12}" + "".join(f"{lab:>12}" for lab in labels) + f"{'total':>10}"
    lines.append(header)
    for name in cohort.cohorts:
        splits = summary["by_cohort_split_label"].get(name, {})
        for split in [*SPLITS, "unassigned"]:
            if split not in splits:
                continue
            per = splits[split]
            lines.append(
                f"{name:<12}{split:<12}"
                + "".join(f"{per.get(lab, 0):>12}" for lab in labels)
                + f"{sum(per.values()):>10}"
            )
    lines.append(
        f"{summary['cases']} cases ({summary['with_lesion']} with a lesion), {summary['failures']} left out"
    )
    if summary.get("dims") == 3:
        spacing = " x ".join(
            f"{lo:.3g}" if abs(hi - lo) < 1e-9 else f"{lo:.3g}-{hi:.3g}"
            for lo, hi in summary["spacing_range"]
        )
        lines.append(f"3D volumes, voxel spacing {spacing} mm")
    lines.extend(f"  left out: {f}" for f in cohort.failures)
    return "\n".join(lines)
