"""The settings of the cohort part: how cases without a ``split`` are assigned one. Light (no pandas)."""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.infra.settings import option


@dataclass
class SplitConfig:
    """How cases without a ``split`` in the manifest are assigned one."""

    fractions: list[float] = option([0.7, 0.1, 0.2], "train/val/test fractions for the training cohort")
    train_cohort: str = option(
        "internal", "the cohort that is split; every other cohort is external test data"
    )
