"""The settings of the cohort part: how cases without a ``split`` are assigned one. Light (no pandas)."""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.infra.settings import option

#: The cohort a manifest's cases belong to when it names none, and the one whose splits train by default.
DEFAULT_COHORT = "internal"
#: The train/val/test shares of the training cohort's cases that have no split.
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass
class SplitConfig:
    """How cases without a ``split`` in the manifest are assigned one."""

    fractions: list[float] = option(
        list(DEFAULT_SPLIT_FRACTIONS), "train/val/test fractions for the training cohort"
    )
    train_cohort: str = option(
        DEFAULT_COHORT, "the cohort that is split; every other cohort is external test data"
    )
