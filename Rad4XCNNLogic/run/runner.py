"""The runner of a whole Rad4XCNN run: the stages of :mod:`Rad4XCNNLogic.run.stages` in order, writing the
run folder (docs/ARCHITECTURE.md) with ``run.json`` and ``run.log``.

Each stage has a fingerprint: its settings and the content hashes of the files it reads. A stage whose
fingerprint and outputs are unchanged is not recomputed, so a re-run with nothing changed recomputes nothing
and a changed setting recomputes only the stages it affects; per-case caches inside the feature stages let
an interrupted run continue where it stopped. A stage that fails keeps everything written before it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.errors import CaseFailure, UsageError, describe_exception
from Rad4XCNNLogic.infra.environment import device_info, package_versions
from Rad4XCNNLogic.infra.progress import emit
from Rad4XCNNLogic.infra.storage import file_sha256, settings_hash, write_json_atomic
from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run.config import RunConfig
from Rad4XCNNLogic.run.stages import STAGES, Plan, Skip, Stage

log = logging.getLogger(__name__)

STATE_FILE = RunFiles.STATE


@dataclass
class StageRecord:
    """What happened to one stage in this run (kept in ``run.json``)."""

    name: str
    status: str = "pending"  # computed | cached | skipped (by the configuration) | failed | blocked
    seconds: float = 0.0
    fingerprint: str | None = None
    summary: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        """The one-line summary printed for people."""
        text = self.summary.get("text", "")
        if self.status == "failed":
            text = f"FAILED: {self.error}"
        elif self.status in ("skipped", "blocked"):
            text = self.error or self.status
        return f"{self.name:<10} {self.status:<8} {self.seconds:7.1f} s  {text}".rstrip()


@dataclass
class RunResult:
    """The outcome of :func:`run_pipeline`."""

    out: Path
    stages: dict[str, StageRecord]
    failures: list[CaseFailure]

    @property
    def ok(self) -> bool:
        """True when no stage failed."""
        return not self.failed_stages

    @property
    def failed_stages(self) -> list[StageRecord]:
        return [r for r in self.stages.values() if r.status == "failed"]

    @property
    def report(self) -> Path:
        return self.out / "report.html"


class _RunState:
    """The fingerprints and output hashes of the stages finished in a run folder."""

    def __init__(self, out: Path):
        self.path = out / STATE_FILE
        try:
            self.data: dict = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def fresh(self, stage: str, fingerprint: str, out: Path) -> dict | None:
        """The saved record of ``stage`` if its fingerprint matches and its outputs are unchanged."""
        saved = self.data.get(stage)
        if not saved or saved.get("fingerprint") != fingerprint:
            return None
        for rel, digest in saved.get("outputs", {}).items():
            path = out / rel
            if not path.is_file() or file_sha256(path) != digest:
                return None
        return saved

    def output_hashes(self, stage: str) -> dict[str, str]:
        return dict(self.data.get(stage, {}).get("outputs", {}))

    def record(
        self, stage: str, fingerprint: str, outputs: dict[str, str], summary: dict, failures: list[dict]
    ) -> None:
        self.data[stage] = {
            "fingerprint": fingerprint,
            "outputs": outputs,
            "summary": summary,
            "failures": failures,
            "finished": _now(),
        }
        write_json_atomic(self.path, self.data)

    def forget(self, stage: str) -> None:
        if self.data.pop(stage, None) is not None:
            write_json_atomic(self.path, self.data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _failure_dicts(failures) -> list[dict]:
    return [f.to_dict() if isinstance(f, CaseFailure) else dict(f) for f in failures]


class Pipeline:
    """Runs the stages of one configuration in its run folder; see :func:`run_pipeline`."""

    #: feature tables classified besides the run's own (a stage command's ``--features``; none in a run)
    more_features: tuple = ()

    def __init__(self, config: RunConfig, *, progress: bool = True, force: bool = False):
        if not config.manifest:
            raise UsageError("configuration: manifest: a cohort manifest is required (--manifest)")
        if not config.out:
            raise UsageError("configuration: out: a run folder is required (--out)")
        self.cfg = config
        # absolute from here on: the stages name their outputs relative to it, whatever the working directory
        self.out = Path(os.path.abspath(config.out))
        self.progress = progress
        self.force = force
        self.records: dict[str, StageRecord] = {stage.name: StageRecord(stage.name) for stage in STAGES}
        self.inputs: dict | None = None
        self.state: _RunState | None = None
        #: backbone key -> a weights file its fine-tuning starts from; a run starts every backbone from
        #: ``training.pretrained`` (``rad4xcnn train --weights FILE`` gives one)
        self.start_weights: dict[str, str] = {}
        self.started = _now()

    # ----------------------------------------------------------------------------------------- helpers
    def path(self, rel: str) -> Path:
        """A file of the run folder (see :class:`~Rad4XCNNLogic.names.RunFiles`)."""
        return self.out / rel

    def _relative(self, path: str | os.PathLike) -> str:
        return Path(os.path.abspath(path)).relative_to(self.out).as_posix()

    def _skip(self, name: str, reason: str) -> None:
        """Record that the configuration leaves stage ``name`` out (and forget its earlier outputs)."""
        record = self.records[name]
        record.status, record.error = "skipped", reason
        assert self.state is not None
        self.state.forget(name)
        log.info("%s", record.line())

    def _fail(self, name: str, exc: BaseException, seconds: float = 0.0) -> None:
        """Record that stage ``name`` failed; the stages that need it will be blocked, the others run."""
        record = self.records[name]
        record.status, record.seconds, record.error = "failed", seconds, describe_exception(exc)
        assert self.state is not None
        self.state.forget(name)
        log.debug("stage %s failed:\n%s", name, traceback.format_exc())
        log.error("%s", record.line())
        emit("stage-end", name, status="failed", seconds=record.seconds, message=record.error)

    def _run_stage(self, stage: Stage, plan: Plan) -> None:
        """Run one planned stage unless it is up to date (same fingerprint, outputs unchanged)."""
        assert self.state is not None
        name = stage.name
        record = self.records[name]
        blocked = (
            []
            if stage.always
            else [d for d in stage.depends if self.records[d].status in ("failed", "blocked")]
        )
        if blocked:
            record.status = "blocked"
            why = "failed" if self.records[blocked[0]].status == "failed" else "could not run"
            record.error = f"needs {blocked[0]}, which {why}"
            self.state.forget(name)
            log.info("%s", record.line())
            return
        fingerprint = settings_hash(
            {
                "stage": name,
                "version": stage.version,
                "settings": plan.settings,
                "inputs": {dep: self.state.output_hashes(dep) for dep in stage.depends},
            }
        )
        record.fingerprint = fingerprint
        emit("stage-start", name)
        start = time.perf_counter() if plan.started is None else plan.started
        saved = None if self.force else self.state.fresh(name, fingerprint, self.out)
        if saved is not None:
            record.status = "cached"
            record.summary = dict(saved.get("summary", {}))
            record.outputs = sorted(saved.get("outputs", {}))
            record.failures = list(saved.get("failures", []))
        else:
            self.state.forget(name)
            try:
                summary = plan.compute()
            except Exception as exc:  # any failure ends this stage only; the traceback goes to run.log
                self._fail(name, exc, time.perf_counter() - start)
                return
            for key in plan.private:
                summary.pop(key, None)
            written = [self._relative(p) for p in summary.pop("outputs", [])]
            outputs = {rel: file_sha256(self.out / rel) for rel in written}
            failures = _failure_dicts(summary.pop("failures", []))
            record.status = "computed"
            record.summary = summary
            record.outputs = sorted(outputs)
            record.failures = failures
            self.state.record(name, fingerprint, outputs, summary, failures)
        record.seconds = time.perf_counter() - start
        log.info("%s", record.line())
        emit(
            "stage-end",
            name,
            status=record.status,
            seconds=round(record.seconds, 3),
            message=record.summary.get("text", ""),
        )

    def load_cohort(self):
        """The run's cohort as the cohort stage froze it (``cohort.csv``), lesion cases only unless asked."""
        from Rad4XCNNLogic.cohort.manifest import read_manifest

        cohort = read_manifest(self.path(RunFiles.COHORT), assign_split=False)
        return cohort.lesion_cases() if self.cfg.lesion_only else cohort

    def controls(self) -> dict[str, str]:
        """Backbone -> its random-weights control, as the configuration pairs them."""
        return self.cfg.controls()

    def replication_cohort(self, cohort):
        """The cohort whose cohorts the explanation is replicated between: the run's own."""
        return cohort

    # -------------------------------------------------------------------------------------------- run
    def collect_failures(self) -> list[CaseFailure]:
        seen, failures = set(), []
        for record in self.records.values():
            for f in record.failures:
                key = (f["case_id"], f["stage"], f["problem"])
                if key not in seen:
                    seen.add(key)
                    failures.append(CaseFailure(**f))
        return failures

    def write_run_json(self) -> None:
        """Write ``run.json``: configuration, versions, device, seeds, inputs, stages, timings, failures."""
        info = {
            "rad4xcnn": __version__,
            "started": self.started,
            "finished": _now(),
            "command": sys.argv,
            "config": self.cfg.to_dict(),
            "versions": package_versions(),
            "device": device_info(self.cfg.device),
            "seeds": {"seed": self.cfg.seed},
            "inputs": self.inputs,
            "stages": {n: asdict(r) for n, r in self.records.items()},
            "timings_s": {n: round(r.seconds, 3) for n, r in self.records.items()},
            "failures": [f.to_dict() for f in self.collect_failures()],
        }
        write_json_atomic(self.path(RunFiles.RUN), info)

    def run(self) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = _RunState(self.out)
        handler = logging.FileHandler(self.path(RunFiles.LOG), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        root = logging.getLogger("Rad4XCNNLogic")
        previous_level = root.level
        root.addHandler(handler)
        if root.getEffectiveLevel() > logging.DEBUG:
            root.setLevel(logging.DEBUG)
            for h in root.handlers:
                if h is not handler and h.level == logging.NOTSET:
                    h.setLevel(previous_level or logging.INFO)
        log.info("Rad4XCNN %s: run folder %s", __version__, self.out)
        try:
            for stage in STAGES:
                try:
                    plan = stage.plan(self)
                except Skip as reason:
                    self._skip(stage.name, str(reason))
                    continue
                except Exception as exc:  # a bad setting found while planning the stage (a missing file...)
                    if stage is STAGES[0]:
                        raise  # without a cohort nothing can run: its errors end the run
                    self._fail(stage.name, exc)
                    continue
                self._run_stage(stage, plan)
        finally:
            self.write_run_json()
            root.removeHandler(handler)
            handler.close()
            root.setLevel(previous_level)
        return RunResult(self.out, dict(self.records), self.collect_failures())


def run_pipeline(config: RunConfig, *, progress: bool = True, force: bool = False) -> RunResult:
    """Run every stage of ``config`` in its run folder, reusing what is up to date.

    Examples
    --------
    >>> from Rad4XCNNLogic.run.config import load_config
    >>> result = run_pipeline(load_config("paper.yaml"))  # doctest: +SKIP
    >>> [r.line() for r in result.stages.values()]  # doctest: +SKIP
    """
    return Pipeline(config, progress=progress, force=force).run()


def demo_config(out: str | os.PathLike, manifest: str | os.PathLike, seed: int = 0) -> RunConfig:
    """The demo's settings: the whole pipeline on the synthetic cohort in under 3 minutes on a 2-core CPU.

    Every stage and every check runs, with budgets that fit a demo (BENCHMARKS.md, "Pipeline", has the
    profile behind them): a ResNet18 fine-tuned from random initialisation (no download) at 112 px for at
    most 8 epochs and compared with the same architecture left random; the CAMs of layer3 (256 channels:
    half the forward passes of ScoreCAM and its randomisation test, and 7 x 7 maps instead of 4 x 4); the
    explanation, its permutation test, the classifiers' intervals and repeated splits with fewer resamples
    than a study would use. Relative paths are taken from the working directory.
    """
    from Rad4XCNNLogic.run.config import load_config

    return load_config(
        None,
        {
            "manifest": str(manifest),
            "out": str(out),
            "seed": seed,
            "training": {
                "pretrained": False,
                "epochs": 8,
                "batch_size": 16,
                "patience": 3,
                "input_size": 112,
                "learning_rate": 1e-3,
            },
            "models": [
                {"name": "resnet18", "weights": "trained"},
                {"name": "resnet18", "label": "resnet18-random", "weights": None},
            ],
            "deep": {"input_size": 112},
            "explain": {"thresholds": [0.6, 0.7, 0.8], "fdr": 0.05, "permutations": 200, "bootstrap": 100},
            "classification": {"cv_folds": 3, "n_bootstrap": 200, "repeated_splits": 5},
            "cam": {
                "methods": ["gradcam", "eigencam", "scorecam"],
                "gallery": 4,
                "batch_size": 64,
                "target_layer": "layer3",
            },
        },
    )
