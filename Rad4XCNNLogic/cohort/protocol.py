"""The validation protocol over one manifest: which cohorts train the network (in phases), which cohort the
classifiers learn on, which cases evaluate - and the check that no case used for training, by case id or by
image content, is scored as held out.

The paper's protocol (Prinzi et al.): phase 1 trains on BUSI, phase 2 fine-tunes on the in-house training
set, the classifiers learn on the in-house cohort, and a third cohort validates externally::

    phases = [TrainingPhase("busi"), TrainingPhase("palermo")]
    protocol = Protocol(phases, classification_cohort="palermo")
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from Rad4XCNNLogic.cohort.manifest import SPLITS, Case, Cohort
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

#: ``evaluated_on`` of the classification cohort's test split (as in ``classification.csv``).
INTERNAL_TEST = "internal-test"


@dataclass(frozen=True)
class TrainingPhase:
    """One phase of network training: the cohort it learns from and the splits it uses (fit on ``train``,
    early-stop on ``val``: both count as used for training)."""

    cohort: str
    splits: tuple[str, ...] = ("train", "val")

    @classmethod
    def parse(cls, spec: str | Mapping) -> TrainingPhase:
        """A phase from a cohort name or a mapping ``{cohort: NAME, splits: [train, val]}``.

        Examples
        --------
        >>> TrainingPhase.parse({"cohort": "palermo", "splits": ["train"]})
        TrainingPhase(cohort='palermo', splits=('train',))
        """
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, Mapping) or "cohort" not in spec:
            raise Rad4XCNNError(f"a training phase needs a cohort, e.g. {{cohort: busi}}; got {spec!r}")
        unknown = sorted(set(spec) - {"cohort", "splits"})
        if unknown:
            raise Rad4XCNNError(
                f"training phase: unknown key(s) {', '.join(unknown)} (expected cohort, splits)"
            )
        splits = tuple(str(s) for s in spec.get("splits") or ("train", "val"))
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise Rad4XCNNError(f"training phase on {spec['cohort']}: unknown split(s) {', '.join(bad)}")
        return cls(str(spec["cohort"]), splits)


@dataclass(frozen=True)
class Protocol:
    """Which cohorts train the network, which trains the classifiers, and which evaluate.

    Parameters
    ----------
    phases : the network's training phases, in order (empty: no network training).
    classification_cohort : the cohort whose train (+val) split trains the classifiers and whose test split
        is the internal test (``internal-test``).
    evaluate_on : the external cohorts (their test or unassigned cases); None: every cohort that is neither
        the classification cohort nor used by a training phase.
    """

    phases: tuple[TrainingPhase, ...] = ()
    classification_cohort: str = "internal"
    evaluate_on: tuple[str, ...] | None = None
    classifier_splits: tuple[str, ...] = field(default=("train", "val"))

    def split_cohorts(self) -> list[str]:
        """Cohorts whose cases without a split get train/val/test: the classification cohort and every
        training phase's cohort (any other cohort is external test data)."""
        names = [self.classification_cohort, *(p.cohort for p in self.phases)]
        return list(dict.fromkeys(names))

    def evaluation_cohorts(self, cohorts: Iterable[str]) -> list[str]:
        """The external cohorts evaluated, of the cohorts present."""
        present = list(dict.fromkeys(cohorts))
        if self.evaluate_on is not None:
            missing = [c for c in self.evaluate_on if c not in present]
            if missing:
                raise Rad4XCNNError(
                    f"evaluation cohort(s) {', '.join(missing)} not in the manifest ({', '.join(present)})"
                )
            return [c for c in self.evaluate_on if c != self.classification_cohort]
        trained = {p.cohort for p in self.phases}
        return [c for c in present if c != self.classification_cohort and c not in trained]

    def check_cohorts(self, cohorts: Iterable[str]) -> None:
        """Raise when a cohort named by the protocol is not in the manifest."""
        present = list(dict.fromkeys(cohorts))
        for name in [self.classification_cohort, *(p.cohort for p in self.phases)]:
            if name not in present:
                raise Rad4XCNNError(
                    f"protocol: cohort {name!r} is not in the manifest ({', '.join(present)})"
                )

    def phase_cases(self, cohort: Cohort | Sequence[Case], phase: TrainingPhase) -> list[Case]:
        """The cases one phase learns from."""
        cases = cohort.cases if isinstance(cohort, Cohort) else cohort
        return [c for c in cases if c.cohort == phase.cohort and c.split in phase.splits]

    def trained_cases(self, cohort: Cohort | Sequence[Case]) -> list[Case]:
        """Every case some training phase learns from (each once)."""
        seen: dict[str, Case] = {}
        for phase in self.phases:
            for c in self.phase_cases(cohort, phase):
                seen.setdefault(c.case_id, c)
        return list(seen.values())

    def evaluation_sets(self, cohort: Cohort | Sequence[Case]) -> dict[str, list[Case]]:
        """``internal-test`` (the classification cohort's test split) and each external cohort's test or
        unassigned cases, by ``evaluated_on`` name."""
        cases = list(cohort.cases if isinstance(cohort, Cohort) else cohort)
        sets = {
            INTERNAL_TEST: [c for c in cases if c.cohort == self.classification_cohort and c.split == "test"]
        }
        for name in self.evaluation_cohorts(c.cohort for c in cases):
            sets[name] = [c for c in cases if c.cohort == name and c.split in ("test", None)]
        return {k: v for k, v in sets.items() if v}


@dataclass(frozen=True)
class Leak:
    """A case used for training found in an evaluation set: the same case id or the same image."""

    trained: str
    evaluated: str
    evaluated_on: str
    how: str  # "case id" or "image"

    def __str__(self) -> str:
        if self.how == "case id":
            return f"{self.trained} (in {self.evaluated_on})"
        return f"{self.trained} = {self.evaluated} (same image, in {self.evaluated_on})"


def find_leaks(
    trained: Iterable[Case],
    evaluation_sets: Mapping[str, Iterable[Case]],
    image_hashes: Mapping[str, str] | None = None,
    *,
    by_id: bool = True,
) -> list[Leak]:
    """Training cases found in evaluation sets, by case id (unless ``by_id`` is False: cases of another
    manifest, whose ids mean nothing here) and, with ``image_hashes`` (case id -> content hash of the
    pixels, :func:`~Rad4XCNNLogic.cohort.duplicates.content_hash`), by identical image.

    Examples
    --------
    >>> from pathlib import Path
    >>> a, b = Case("a", Path("a.png"), ()), Case("b", Path("b.png"), ())
    >>> [str(x) for x in find_leaks([a], {"external": [a, b]}, {"a": "h1", "b": "h1"})]
    ['a (in external)', 'a = b (same image, in external)']
    """
    trained = list(trained)
    trained_ids = {c.case_id for c in trained} if by_id else set()
    by_hash: dict[str, str] = {}
    if image_hashes:
        for c in trained:
            if c.case_id in image_hashes:
                by_hash.setdefault(image_hashes[c.case_id], c.case_id)
    leaks = []
    for name, members in evaluation_sets.items():
        for c in members:
            if c.case_id in trained_ids:
                leaks.append(Leak(c.case_id, c.case_id, name, "case id"))
            elif image_hashes and image_hashes.get(c.case_id) in by_hash:
                leaks.append(Leak(by_hash[image_hashes[c.case_id]], c.case_id, name, "image"))
    return leaks


def check_no_leakage(
    protocol: Protocol,
    cohort: Cohort | Sequence[Case],
    *,
    hash_images: bool = True,
    extra_trained: Iterable[Case] = (),
) -> dict[str, str]:
    """Stop (raise :class:`Rad4XCNNError`, one line naming the cases) if a case used to train the network
    is in an evaluation set, by case id or - reading the images - by identical pixels.

    ``extra_trained`` are training cases from elsewhere (e.g. a second manifest that fine-tunes); their
    images are compared too. Returns the image hashes computed (case id -> SHA-256 of the pixels).

    Examples
    --------
    >>> check_no_leakage(Protocol((TrainingPhase("busi"),), "palermo"), cohort)  # doctest: +SKIP
    """
    trained = protocol.trained_cases(cohort)
    extra = list(extra_trained)
    sets = protocol.evaluation_sets(cohort)
    hashes: dict[str, str] = {}
    extra_hashes: dict[str, str] = {}
    if hash_images and (trained or extra) and sets:
        from Rad4XCNNLogic.cohort.duplicates import hash_cases

        wanted = {c.case_id: c for c in trained}
        for members in sets.values():
            wanted.update({c.case_id: c for c in members})
        computed, failures = hash_cases(wanted.values())
        hashes = {h.case_id: h.sha256 for h in computed}
        if extra:
            # another manifest's ids may repeat this one's: key its hashes apart
            more, more_failures = hash_cases(extra)
            extra_hashes = {f"\0{h.case_id}": h.sha256 for h in more}
            failures += more_failures
        for failure in failures:
            log.warning("leakage check: %s", failure)
    leaks = find_leaks(trained, sets, hashes)
    if extra:
        from dataclasses import replace

        keyed = [replace(c, case_id=f"\0{c.case_id}") for c in extra]
        found = find_leaks(keyed, sets, {**hashes, **extra_hashes}, by_id=False)
        leaks += [replace(x, trained=x.trained.lstrip("\0") + " (fine-tuning manifest)") for x in found]
    if leaks:
        shown = "; ".join(map(str, leaks[:10])) + (" ..." if len(leaks) > 10 else "")
        raise Rad4XCNNError(
            f"leakage: {len(leaks)} evaluation case(s) were used to train the network: {shown}; "
            "take them out of the training phases or of the evaluation sets"
        )
    return hashes
