"""The settings of the cohort part: how cases without a ``split`` are assigned one, and how near-duplicate
images and their label conflicts are handled. Light (no pandas)."""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.infra.interval import Interval
from Rad4XCNNLogic.infra.settings import option

#: The cohort a manifest's cases belong to when it names none, and the one whose splits train by default.
DEFAULT_COHORT = "internal"
#: The train/val/test shares of the training cohort's cases that have no split.
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
#: Hamming distance (of the 64 pHash bits) up to which two images count as near-duplicates. Re-encoded,
#: resized, slightly cropped or re-windowed copies of one image stay within a few bits; different images of
#: one organ differ by about half of them (~32).
DEFAULT_DUPLICATE_DISTANCE = 6
#: What a near-duplicate pair with two different labels does: ``train`` puts both into the training split
#: (cases that cannot go there, e.g. of an external cohort or with a given val/test split, are left out of
#: the evaluation), ``keep`` leaves them where the split puts them, ``drop`` leaves both out, ``stop`` ends
#: the run with the list.
LABEL_CONFLICT_POLICIES = ("train", "keep", "drop", "stop")


@dataclass
class SplitConfig:
    """How cases without a ``split`` in the manifest are assigned one."""

    fractions: list[float] = option(
        list(DEFAULT_SPLIT_FRACTIONS), "train/val/test fractions for the training cohort"
    )
    train_cohort: str = option(
        DEFAULT_COHORT, "the cohort that is split; every other cohort is external test data"
    )
    group_duplicates: bool = option(
        True,
        "keep near-duplicate images (pHash distance <= duplicate_distance) on one side of the split, the "
        "cross-validation folds and the bootstrap, as one patient's (false: patients only)",
    )
    duplicate_distance: int = option(
        DEFAULT_DUPLICATE_DISTANCE,
        "largest pHash Hamming distance (of 64 bits) at which two images count as near-duplicates",
        interval=Interval(0, 64),
    )
    label_conflicts: str = option(
        "train",
        "a near-duplicate pair with different labels: train (both into the training split; left out of "
        "evaluation where they cannot go there), keep, drop (both), stop",
        choices=LABEL_CONFLICT_POLICIES,
    )
