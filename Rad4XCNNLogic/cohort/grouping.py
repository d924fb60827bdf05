"""Split groups: the units that the train/validation/test split, the cross-validation folds and the bootstrap
keep whole (README, "Near-duplicate images and split groups").

A group is a connected component of the graph whose edges are "same patient" (``patient_id``, or a given
``split_group``) and "near-duplicate images" (pHash distance <= ``split.duplicate_distance``): the same scan
cropped slightly differently in two files is, for a classifier, one case, and must not be trained on and
scored. A near-duplicate pair with two different labels is a *label conflict*, handled by
``split.label_conflicts``. The cohort stage computes the groups before the split and writes them as the
``split_group`` column of the run's ``cohort.csv``, which every later stage and stage command reads.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from Rad4XCNNLogic.cohort.duplicates import DuplicatePair, ImageHashes, find_near_duplicates
from Rad4XCNNLogic.cohort.manifest import Case, Cohort, assign_splits, read_manifest
from Rad4XCNNLogic.cohort.settings import SplitConfig
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError

log = logging.getLogger(__name__)

#: A split group above this many cases (and 5% of the split cohorts) is warned about.
LARGE_GROUP = 10
#: The columns of ``duplicates.csv``: one row per near-duplicate pair.
DUPLICATE_COLUMNS = (
    "case_a", "case_b", "distance", "identical", "label_a", "label_b", "conflict",
    "place_a", "place_b", "across_splits", "cluster", "image_a", "image_b",
)  # fmt: skip
_EVALUATION_SPLITS = ("val", "test")


def _components(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Node -> the smallest node of its connected component (union-find)."""
    parent = {n: n for n in nodes}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: root(n) for n in parent}


def near_duplicate_clusters(pairs: Iterable[DuplicatePair]) -> dict[str, str]:
    """Case id -> its near-duplicate cluster (named by its smallest case id), for the cases of some pair.

    Examples
    --------
    >>> p = [DuplicatePair("b", "c", 1, False, "", ""), DuplicatePair("a", "b", 3, False, "", "")]
    >>> near_duplicate_clusters(p)
    {'a': 'a', 'b': 'a', 'c': 'a'}
    """
    pairs = list(pairs)
    nodes = sorted({p.case_a for p in pairs} | {p.case_b for p in pairs})
    return _components(nodes, [(p.case_a, p.case_b) for p in pairs])


def split_groups(cases: Sequence[Case], pairs: Iterable[DuplicatePair] = ()) -> dict[str, str]:
    """Case id -> its split group: the connected component over "same group" (:attr:`Case.group`: the
    given ``split_group`` or the patient) and near-duplicate edges, named by its smallest
    :attr:`Case.group` (a case alone keeps its own group).

    Examples
    --------
    >>> from pathlib import Path
    >>> cs = [Case("a", Path("a"), (), patient_id="p1"), Case("b", Path("b"), (), patient_id="p1"),
    ...       Case("c", Path("c"), ()), Case("d", Path("d"), ())]
    >>> split_groups(cs, [DuplicatePair("b", "c", 2, False, "", "")])
    {'a': 'c', 'b': 'c', 'c': 'c', 'd': 'd'}
    """
    ids = {c.case_id for c in cases}
    group_of = {c.case_id: c.group for c in cases}
    nodes = sorted(set(group_of.values()))
    edges = [(group_of[p.case_a], group_of[p.case_b]) for p in pairs if p.case_a in ids and p.case_b in ids]
    component = _components(nodes, edges)
    return {c.case_id: component[group_of[c.case_id]] for c in cases}


def label_conflicts(pairs: Iterable[DuplicatePair], cases: Iterable[Case]) -> list[DuplicatePair]:
    """The near-duplicate pairs whose two cases carry different (non-empty) labels."""
    label = {c.case_id: c.label for c in cases}
    return [
        p for p in pairs if label.get(p.case_a) and label.get(p.case_b) and label[p.case_a] != label[p.case_b]
    ]


def conflict_text(pair: DuplicatePair, cases_by_id: dict[str, Case]) -> str:
    """``benign_085 (benign) ~ malignant_052 (malignant), pHash distance 2``."""
    a, b = cases_by_id.get(pair.case_a), cases_by_id.get(pair.case_b)
    return (
        f"{pair.case_a} ({a.label if a else '?'}) ~ {pair.case_b} ({b.label if b else '?'}), "
        f"pHash distance {pair.distance}"
    )


@dataclass
class Grouping:
    """A cohort split by groups, with what was found on the way."""

    cohort: Cohort
    #: every near-duplicate pair, its places (cohort/split) those of the final split
    pairs: list[DuplicatePair] = field(default_factory=list)
    #: the pairs with two different labels, and what was done about them
    conflicts: list[DuplicatePair] = field(default_factory=list)
    conflict_action: str = ""
    #: case id -> near-duplicate cluster (cases of some pair only)
    clusters: dict[str, str] = field(default_factory=dict)
    #: pairs joining a case of a split cohort to one of another (external) cohort
    external_overlap: list[DuplicatePair] = field(default_factory=list)
    grouped: bool = True
    hashed: bool = True
    #: the size of a split group large enough to be warned about (0: none)
    largest_group: int = 0
    #: case id -> image file, of every case searched (those a label conflict left out too)
    images: dict[str, Path] = field(default_factory=dict)

    @property
    def across_splits(self) -> list[DuplicatePair]:
        return [p for p in self.pairs if p.across_splits]

    def frame(self, relative_to: str | os.PathLike | None = None):
        """The pairs as the rows of ``duplicates.csv`` (:data:`DUPLICATE_COLUMNS`; image paths relative to
        ``relative_to`` when given)."""
        import pandas as pd

        def image(case_id: str) -> str:
            path = self.images.get(case_id)
            if path is None:
                return ""
            if relative_to is None:
                return os.fspath(path)
            try:
                return Path(os.path.relpath(path, Path(relative_to).resolve())).as_posix()
            except ValueError:  # another drive on Windows
                return os.fspath(path)

        labels = {c.case_id: c.label or "" for c in self.cohort.cases}
        conflicting = {(p.case_a, p.case_b) for p in self.conflicts}
        rows = [
            {
                "case_a": p.case_a,
                "case_b": p.case_b,
                "distance": p.distance,
                "identical": p.identical,
                "label_a": labels.get(p.case_a, ""),
                "label_b": labels.get(p.case_b, ""),
                "conflict": (p.case_a, p.case_b) in conflicting,
                "place_a": p.place_a,
                "place_b": p.place_b,
                "across_splits": p.across_splits,
                "cluster": self.clusters.get(p.case_a, ""),
                "image_a": image(p.case_a),
                "image_b": image(p.case_b),
            }
            for p in self.pairs
        ]
        return pd.DataFrame(rows, columns=list(DUPLICATE_COLUMNS))

    def text(self) -> str:
        """One line for the run's summary."""
        if not self.hashed:
            return "near-duplicate images: not searched (no image read)"
        n_clusters = len(set(self.clusters.values()))
        parts = [f"{len(self.pairs)} near-duplicate pair(s) in {n_clusters} cluster(s)"]
        parts.append(
            "kept on one side of the split" if self.grouped else "NOT grouped (split.group_duplicates)"
        )
        if self.across_splits:
            parts.append(f"WARNING: {len(self.across_splits)} pair(s) across splits")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} label conflict(s): {self.conflict_action}")
        if self.external_overlap:
            parts.append(f"{len(self.external_overlap)} pair(s) shared with an external cohort")
        if self.largest_group:
            parts.append(f"WARNING: one split group holds {self.largest_group} cases")
        return "; ".join(parts)


def _resolve_conflicts(cases, conflicts, policy: str, split_here: set[str]):
    """(cases, failures, action): the cases after ``policy`` is applied to the label conflicts."""
    by_id = {c.case_id: c for c in cases}
    listing = "; ".join(conflict_text(p, by_id) for p in conflicts[:10]) + (
        " ..." if len(conflicts) > 10 else ""
    )
    if policy == "stop":
        raise Rad4XCNNError(
            f"{len(conflicts)} label conflict(s) (near-duplicate images with different labels): {listing}; "
            "correct the labels, or set split.label_conflicts to train, keep or drop"
        )
    if policy == "keep":
        return cases, [], "kept where the split puts them (split.label_conflicts: keep)"
    partner = {}
    for p in conflicts:
        partner.setdefault(p.case_a, []).append(p)
        partner.setdefault(p.case_b, []).append(p)
    failures = []
    if policy == "drop":
        for cid, found in sorted(partner.items()):
            failures.append(
                CaseFailure(cid, "duplicates", f"label conflict: {conflict_text(found[0], by_id)}")
            )
        kept = [c for c in cases if c.case_id not in partner]
        return kept, failures, "both cases left out (split.label_conflicts: drop)"
    kept = []
    for c in cases:
        if c.case_id not in partner:
            kept.append(c)
        elif c.cohort in split_here and c.split in (None, "train"):
            kept.append(replace(c, split="train", split_assigned=c.split is None))
        else:
            problem = f"label conflict, left out of evaluation: {conflict_text(partner[c.case_id][0], by_id)}"
            failures.append(CaseFailure(c.case_id, "duplicates", problem))
    return (
        kept,
        failures,
        "put into the training split, left out of every evaluation set (split.label_conflicts: train)",
    )


def group_and_split(
    cohort: Cohort,
    settings: SplitConfig | None = None,
    *,
    seed: int = 0,
    train_cohort: str | Sequence[str] | None = None,
    hashes: Sequence[ImageHashes] | None = None,
) -> Grouping:
    """Find the near-duplicates of an unsplit cohort, apply the label-conflict policy, compute the split
    groups and assign the split by group (:func:`~Rad4XCNNLogic.cohort.manifest.assign_splits`).

    Parameters
    ----------
    cohort : read with ``assign_split=False``.
    settings : ``split`` settings (fractions, train_cohort, group_duplicates, duplicate_distance,
        label_conflicts); the defaults when None.
    train_cohort : the cohorts that are split (default: ``settings.train_cohort``).
    hashes : the images' hashes if already computed.

    Raises
    ------
    Rad4XCNNError
        with ``label_conflicts: stop`` and a label conflict.

    Examples
    --------
    >>> grouping = group_and_split(read_manifest("manifest.csv", assign_split=False))  # doctest: +SKIP
    >>> grouping.text()  # doctest: +SKIP
    '12 near-duplicate pair(s) in 9 cluster(s); kept on one side of the split; 1 label conflict(s): ...'
    """
    settings = settings or SplitConfig()
    if train_cohort is None:
        train_cohort = settings.train_cohort
    split_here = {train_cohort} if isinstance(train_cohort, str) else set(train_cohort)
    cases = list(cohort.cases)
    failures = list(cohort.failures)
    if cohort.dims == 3:  # the perceptual hash reads 2D images
        log.info("near-duplicate images: not searched (the cohort holds 3D volumes)")
        pairs, hash_failures = [], []
    else:
        pairs, hash_failures = find_near_duplicates(
            cases, max_distance=settings.duplicate_distance, hashes=hashes, warn=False
        )
    for failure in hash_failures:
        log.warning("%s (not searched for near-duplicates)", failure)
    conflicts = label_conflicts(pairs, cases)
    action = ""
    if conflicts:
        cases, dropped, action = _resolve_conflicts(cases, conflicts, settings.label_conflicts, split_here)
        failures += dropped
        log.warning(
            "%d label conflict(s) (near-duplicate images with different labels), %s: %s",
            len(conflicts),
            action,
            "; ".join(conflict_text(p, {c.case_id: c for c in cohort.cases}) for p in conflicts[:10]),
        )
    kept_ids = {c.case_id for c in cases}
    pairs = [p for p in pairs if p.case_a in kept_ids and p.case_b in kept_ids]
    groups = split_groups(cases, pairs if settings.group_duplicates else ())
    cases = [replace(c, split_group=groups[c.case_id]) for c in cases]
    # a group with a conflicting case forced into train goes there whole
    trained = {groups[c.case_id] for c in cases if c.split == "train" and c.split_assigned}
    cases = [
        replace(c, split="train", split_assigned=True)
        if c.split is None and c.cohort in split_here and c.split_group in trained
        else c
        for c in cases
    ]
    cases = assign_splits(cases, fractions=settings.fractions, seed=seed, train_cohort=train_cohort)
    by_id = {c.case_id: c for c in cases}
    pairs = [replace(p, place_a=_place(by_id[p.case_a]), place_b=_place(by_id[p.case_b])) for p in pairs]
    external = [
        p for p in pairs if (by_id[p.case_a].cohort in split_here) != (by_id[p.case_b].cohort in split_here)
    ]
    result = Grouping(
        Cohort(cases, failures, cohort.source),
        pairs,
        conflicts,
        action,
        near_duplicate_clusters(pairs),
        external,
        grouped=settings.group_duplicates,
        images={c.case_id: c.image for c in cohort.cases},
    )
    sizes = Counter(c.split_group for c in cases if c.cohort in split_here)
    if sizes and settings.group_duplicates:
        name, size = sizes.most_common(1)[0]
        if size > max(LARGE_GROUP, 0.05 * sum(sizes.values())):
            # chained near-duplicates (a ~ b ~ c ...) can join many scans: the split shares then drift
            log.warning(
                "split group %s holds %d of %d cases (chained near-duplicates?): the split's shares may "
                "drift; a smaller split.duplicate_distance splits it",
                name,
                size,
                sum(sizes.values()),
            )
            result.largest_group = size
    if result.across_splits:
        log.warning(
            "%d near-duplicate image pair(s) across splits%s: %s",
            len(result.across_splits),
            "" if settings.group_duplicates else " (split.group_duplicates is off)",
            "; ".join(map(str, result.across_splits[:10])),
        )
    if external:
        log.warning(
            "%d near-duplicate pair(s) join the training cohort to an external one: %s",
            len(external),
            "; ".join(map(str, external[:10])),
        )
    return result


def _place(case: Case) -> str:
    return f"{case.cohort}/{case.split or 'unassigned'}"


def read_grouped(
    path: str | os.PathLike,
    settings: SplitConfig | None = None,
    *,
    seed: int = 0,
    train_cohort: str | Sequence[str] | None = None,
    **checks,
) -> Grouping:
    """A manifest read and split by groups: :func:`read_manifest` (``checks``: ``check_files``,
    ``check_images``, ``require_images``) then :func:`group_and_split`. Without ``check_images``, a
    manifest whose split cohorts' cases all have a split (e.g. a run's ``cohort.csv``, with its
    ``split_group`` column) is not hashed again: nothing is left to assign."""
    settings = settings or SplitConfig()
    if train_cohort is None:
        train_cohort = settings.train_cohort
    split_here = {train_cohort} if isinstance(train_cohort, str) else set(train_cohort)
    cohort = read_manifest(path, assign_split=False, **checks)
    pending = any(c.split is None and c.cohort in split_here for c in cohort.cases)
    # images read anyway (check_images) are always searched; otherwise only when a split is to be assigned
    searched = checks.get("check_images") or pending
    if not searched or not checks.get("require_images", True):
        cases = assign_splits(
            cohort.cases, fractions=settings.fractions, seed=seed, train_cohort=train_cohort
        )
        return Grouping(Cohort(cases, cohort.failures, cohort.source), hashed=False)
    return group_and_split(cohort, settings, seed=seed, train_cohort=train_cohort)


def write_duplicates(grouping: Grouping, path: str | os.PathLike) -> Path:
    """``duplicates.csv``: every near-duplicate pair (:data:`DUPLICATE_COLUMNS`), closest first."""
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    path = Path(path)
    write_csv_atomic(path, grouping.frame(path.parent), index=False)
    return path


def grouping_summary(grouping: Grouping, duplicates_csv: str | os.PathLike) -> dict:
    """What the cohort stage records of the grouping: writes ``duplicates.csv`` and returns the entries of
    the stage's summary (``near_duplicates``, the pairs across splits, the label conflicts, the overlap
    with external cohorts, and ``text``)."""
    write_duplicates(grouping, duplicates_csv)
    by_id = {c.case_id: c for c in grouping.cohort.cases}
    return {
        "near_duplicates": len(grouping.pairs),
        "near_duplicate_clusters": len(set(grouping.clusters.values())),
        "near_duplicates_across_splits": [str(p) for p in grouping.across_splits],
        "label_conflicts": [conflict_text(p, by_id) for p in grouping.conflicts],
        "label_conflict_action": grouping.conflict_action,
        "external_overlap": [str(p) for p in grouping.external_overlap],
        "grouped": grouping.grouped,
        "text": grouping.text(),
    }


def format_conflicts(conflicts: Sequence[DuplicatePair], cases: Iterable[Case], limit: int = 50) -> list[str]:
    """Lines listing label conflicts: both case ids, both labels, the distance."""
    by_id = {c.case_id: c for c in cases}
    lines = [f"LABEL CONFLICTS: {len(conflicts)} near-duplicate pair(s) with different labels:"]
    lines += [f"  {conflict_text(p, by_id)}" for p in conflicts[:limit]]
    if len(conflicts) > limit:
        lines.append(f"  ... and {len(conflicts) - limit} more")
    return lines if conflicts else []


def format_grouping(grouping: Grouping, original: Iterable[Case] = (), limit: int = 20) -> str:
    """Lines for people: the near-duplicate clusters, the pairs left across splits, the label conflicts
    (``original``: the cases before the conflict policy, for the labels of cases it left out)."""
    if not grouping.hashed:
        return "near-duplicate images: not searched"
    lines = [grouping.text()]
    across = grouping.across_splits
    if across:
        lines.append(f"WARNING: {len(across)} near-duplicate image pair(s) across splits:")
        lines += [f"  {p}" for p in across[:limit]]
    closest = [p for p in grouping.pairs if not p.across_splits][:limit]
    if closest:
        lines.append(
            f"closest near-duplicate pairs within one split (of {len(grouping.pairs) - len(across)}):"
        )
        lines += [f"  {p}" for p in closest]
    lines += format_conflicts(grouping.conflicts, [*original, *grouping.cohort.cases])
    if grouping.conflicts:
        lines.append(f"  -> {grouping.conflict_action}")
    if grouping.external_overlap:
        lines.append(f"near-duplicates shared with an external cohort: {len(grouping.external_overlap)}")
        lines += [f"  {p}" for p in grouping.external_overlap[:limit]]
    return "\n".join(lines)
