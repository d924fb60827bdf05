"""A stage of a run on the files a user names: what a stage command (``rad4xcnn explain``, ``classify``,
...) hands to the stage's plan function in place of the run (:class:`~Rad4XCNNLogic.run.runner.Pipeline`),
so that the command and ``rad4xcnn run`` do the same work with the same settings (docs/ARCHITECTURE.md,
"Stages").

The plan functions read from the run: ``cfg``, ``out``, ``progress``, ``path(name)`` (a file of the run
folder, :class:`~Rad4XCNNLogic.names.RunFiles`), ``load_cohort()``, ``controls()``,
``replication_cohort(cohort)``, ``more_features`` and, here only, ``start_weights`` (training). Here
``path`` gives the user's file for each name the stage reads (None for an optional one left out) and a
file of ``out`` for what it writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from Rad4XCNNLogic.errors import Rad4XCNNError, UsageError
from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run.stages import BY_NAME, Skip, read_run_manifest, run_protocol

Where = str | os.PathLike | None


class StageOnFiles:
    """Stage ``stage`` of a run with configuration ``cfg`` on ``files`` (RunFiles name -> the user's file;
    None: left out), writing into ``out``. ``checks``: how the manifest is read (``read_manifest``'s
    ``check_files``, ``require_images``); ``cohorts``: another manifest whose cohorts the explanation is
    replicated between; ``more_features``: other feature tables to classify (``[NAME=]FILE``)."""

    def __init__(
        self,
        stage: str,
        cfg,
        files: Mapping[str, Where],
        out: str | os.PathLike,
        *,
        progress: bool = True,
        checks: Mapping[str, bool] | None = None,
        cohorts: Where = None,
        more_features: Sequence[str] = (),
        configured: bool = False,
        start_weights: Mapping[str, str] | None = None,
        split: str | None = None,
    ):
        self.stage = BY_NAME[stage]
        self.cfg = cfg
        self.out = Path(os.path.abspath(out))
        self.progress = progress
        self.files = {name: None if where is None else Path(where) for name, where in files.items()}
        self.checks = dict(checks or {"check_files": False})
        self.cohorts = cohorts
        self.more_features = list(more_features)
        #: whether the backbones come from a configuration file (else from the tables' column names)
        self.configured = configured
        #: backbone key -> the weights its fine-tuning starts from (``rad4xcnn train --weights FILE``; the
        #: run starts from ``training.pretrained``)
        self.start_weights = dict(start_weights or {})
        #: only the manifest's cases of this split (``rad4xcnn cam --split``); None: every case
        self.split = split
        self._cohort = None
        #: the manifest's cases left out for having no lesion (known once the cohort is read)
        self.without_lesion = 0

    def path(self, name: str) -> Path | None:
        """The user's file for ``name`` (None: an optional file left out), else ``out``'s file ``name``."""
        if name in self.files:
            return self.files[name]
        if name in self.stage.reads:
            raise UsageError(f"{self.stage.name}: no file given for {name}")
        return self.out / name

    def load_cohort(self):
        """The cases of the user's manifest, read as the run's cohort stage reads it (cases without a split
        get the run's), lesion cases only unless asked; None without a manifest."""
        where = self.files.get(RunFiles.COHORT)
        if where is None:
            return None
        if self._cohort is None:
            cohort = read_run_manifest(self.cfg, where, **self.checks)
            self._cohort = cohort.lesion_cases() if self.cfg.lesion_only else cohort
            if self.split is not None:
                self._cohort = self._cohort.subset(split=self.split)
            self.without_lesion = len(cohort) - len(self._cohort)
        return self._cohort

    def controls(self) -> dict[str, str] | None:
        """Backbone -> its random-weights control: the configuration file's; without one, the controls
        that the tables name (``<key>-random``)."""
        return self.cfg.controls() if self.configured else None

    def replication_cohort(self, cohort):
        """The cohort whose cohorts the explanation is replicated between: ``cohorts``, else ``cohort``."""
        if self.cohorts is None:
            return cohort
        return read_run_manifest(self.cfg, self.cohorts, check_files=False)

    def compute(self) -> dict:
        """The stage's plan, computed: its summary (``outputs``, ``failures``, ``text`` and the private
        result objects)."""
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            plan = self.stage.plan(self)
        except Skip as reason:
            raise Rad4XCNNError(
                f"{self.stage.name}: the configuration leaves this stage out: {reason}"
            ) from None
        return plan.compute()


def check_protocol(run: StageOnFiles) -> None:
    """Refuse a manifest without the cohorts the run's protocol names, as the run's cohort stage does."""
    cohort = run.load_cohort()
    if cohort is not None:
        run_protocol(run.cfg).check_cohorts(cohort.cohorts)
