"""The whole Rad4XCNN run: cohort → fine-tuning → deep features → radiomics → explanation → classification
→ CAMs → report, writing the run folder of DESIGN.md §4.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from Rad4XCNNLogic import __version__
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError
from Rad4XCNNLogic.infra.environment import device_info, package_versions
from Rad4XCNNLogic.infra.progress import emit
from Rad4XCNNLogic.infra.storage import file_sha256, settings_hash, write_csv_atomic, write_json_atomic
from Rad4XCNNLogic.run.config import RunConfig

log = logging.getLogger(__name__)

#: Bump when a stage's outputs change for the same inputs, so that old run folders recompute it.
STAGE_VERSIONS = {
    "cohort": 1,
    "train": 1,
    "deep": 1,
    "radiomics": 1,
    "explain": 1,
    "classify": 1,
    "cam": 1,
    "report": 1,
}
STAGES = tuple(STAGE_VERSIONS)
#: Which stages each stage reads from.
DEPENDS = {
    "cohort": (),
    "train": ("cohort",),
    "deep": ("cohort", "train"),
    "radiomics": ("cohort",),
    "explain": ("cohort", "deep", "radiomics"),
    "classify": ("cohort", "deep", "radiomics", "explain"),
    "cam": ("cohort", "train"),
    "report": ("cohort", "train", "deep", "radiomics", "explain", "classify", "cam"),
}
STATE_FILE = ".rad4xcnn/state.json"


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

    def __init__(self, config: RunConfig, *, progress: bool = True, force: bool = False):
        if not config.manifest:
            raise Rad4XCNNError("configuration: manifest: a cohort manifest is required (--manifest)")
        if not config.out:
            raise Rad4XCNNError("configuration: out: a run folder is required (--out)")
        self.cfg = config
        self.out = Path(config.out)
        self.progress = progress
        self.force = force
        self.records: dict[str, StageRecord] = {name: StageRecord(name) for name in STAGES}
        self.state: _RunState | None = None
        self.started = _now()

    # ----------------------------------------------------------------------------------------- helpers
    def path(self, rel: str) -> Path:
        return self.out / rel

    def _upstream(self, stage: str) -> dict[str, dict[str, str]]:
        assert self.state is not None
        return {dep: self.state.output_hashes(dep) for dep in DEPENDS[stage]}

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
        record.status, record.seconds, record.error = "failed", seconds, _one_line(exc)
        assert self.state is not None
        self.state.forget(name)
        log.debug("stage %s failed:\n%s", name, traceback.format_exc())
        log.error("%s", record.line())
        emit("stage-end", name, status="failed", seconds=record.seconds, message=record.error)

    def _run_stage(
        self, name: str, settings: dict, compute: Callable[[], dict], started: float | None = None
    ) -> None:
        """Run one stage unless it is up to date; ``compute`` returns its summary with ``outputs``.

        ``started`` counts work done before the fingerprint could be known (reading and hashing inputs)."""
        assert self.state is not None
        record = self.records[name]
        # The report is written whatever failed: it shows the failures.
        blocked = (
            []
            if name == "report"
            else [d for d in DEPENDS[name] if self.records[d].status in ("failed", "blocked")]
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
                "version": STAGE_VERSIONS[name],
                "settings": settings,
                "inputs": self._upstream(name),
            }
        )
        record.fingerprint = fingerprint
        emit("stage-start", name)
        start = time.perf_counter() if started is None else started
        saved = None if self.force else self.state.fresh(name, fingerprint, self.out)
        if saved is not None:
            record.status = "cached"
            record.summary = dict(saved.get("summary", {}))
            record.outputs = sorted(saved.get("outputs", {}))
            record.failures = list(saved.get("failures", []))
        else:
            self.state.forget(name)
            try:
                summary = compute()
            except Exception as exc:  # any failure ends this stage only; the traceback goes to run.log
                self._fail(name, exc, time.perf_counter() - start)
                return
            outputs = {rel: file_sha256(self.out / rel) for rel in summary.pop("outputs", [])}
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

    # ----------------------------------------------------------------------------------------- stages
    def _cohort(self):
        from Rad4XCNNLogic.cohort.manifest import read_manifest, write_manifest

        started = time.perf_counter()
        manifest = Path(self.cfg.manifest)
        cohort = read_manifest(
            manifest,
            check_images=True,
            seed=self.cfg.seed,
            fractions=self.cfg.split.fractions,
            train_cohort=self.cfg.split.train_cohort,
        )
        if not cohort.cases:
            raise Rad4XCNNError(f"manifest {manifest.name}: no usable case ({len(cohort.failures)} left out)")
        inputs = {
            "manifest": file_sha256(manifest),
            "cases": {
                c.case_id: {"image": file_sha256(c.image), "masks": [file_sha256(m) for m in c.masks]}
                for c in cohort.cases
            },
        }
        self.inputs = inputs
        settings = {
            "inputs": inputs,
            "seed": self.cfg.seed,
            "split": asdict(self.cfg.split),
            "lesion_only": self.cfg.lesion_only,
        }

        def compute() -> dict:
            import pandas as pd

            write_manifest(cohort, self.path("cohort.csv"))
            frame = pd.DataFrame(
                [f.to_dict() for f in cohort.failures], columns=["case_id", "stage", "problem"]
            )
            write_csv_atomic(self.path("cohort_failures.csv"), frame, index=False)
            summary = cohort.summary()
            summary["text"] = (
                f"{summary['cases']} cases ({summary['with_lesion']} with a lesion), "
                f"{summary['failures']} left out"
            )
            summary["outputs"] = ["cohort.csv", "cohort_failures.csv"]
            summary["failures"] = cohort.failures
            return summary

        self._run_stage("cohort", settings, compute, started)

    def load_cohort(self):
        from Rad4XCNNLogic.cohort.manifest import read_manifest

        cohort = read_manifest(self.path("cohort.csv"), assign_split=False)
        return cohort.lesion_cases() if self.cfg.lesion_only else cohort

    def trained_checkpoint(self, name: str) -> Path:
        """Where the training stage writes the fine-tuned checkpoint of backbone ``name``."""
        return self.path(f"models/{name}.pt")

    def _train(self):
        tc = self.cfg.training
        trained = [(m.label or m.name, m.name) for m in self.cfg.models if m.weights == "trained"]
        if not trained:
            self._skip("train", "no model has weights: trained")
            return
        settings = {
            "training": asdict(tc),
            "models": trained,
            "margin": self.cfg.deep.margin,
            "seed": self.cfg.seed,
            "train_cohort": self.cfg.split.train_cohort,
            "finetune": file_sha256(tc.finetune_manifest) if tc.finetune_manifest else None,
        }

        def compute() -> dict:
            import pandas as pd

            from Rad4XCNNLogic.cohort.manifest import read_manifest
            from Rad4XCNNLogic.features.training import train_model

            common = dict(
                device=self.cfg.device,
                epochs=tc.epochs,
                batch_size=tc.batch_size,
                lr=tc.learning_rate,
                patience=tc.patience,
                input_size=tc.input_size,
                margin=self.cfg.deep.margin,
                seed=self.cfg.seed,
                progress=self.progress,
            )
            second = None
            if tc.finetune_manifest:
                second = read_manifest(tc.finetune_manifest, seed=self.cfg.seed)
            history, failures, models, texts = [], [], {}, []
            for label, name in trained:
                out = self.trained_checkpoint(label)
                result = train_model(
                    self.load_cohort(),
                    name,
                    out=out,
                    pretrained=tc.pretrained,
                    train_cohort=self.cfg.split.train_cohort,
                    **common,
                )
                history += [dict(h, model=label, phase="train") for h in result.history]
                failures += list(result.failures)
                if second is not None:
                    first_auc = result.best_val_auc
                    phase2 = second.lesion_cases() if self.cfg.lesion_only else second
                    result = train_model(phase2, name, out=out, weights=out, **common)
                    history += [dict(h, model=label, phase="finetune") for h in result.history]
                    failures += list(second.failures) + list(result.failures)
                    log.info(
                        "%s fine-tuned on %s: validation AUC %.3f (first phase %.3f)",
                        label,
                        Path(tc.finetune_manifest).name,
                        result.best_val_auc,
                        first_auc,
                    )
                models[label] = {
                    "best_val_auc": result.best_val_auc,
                    "best_epoch": result.best_epoch,
                    "epochs_run": len(result.history),
                    "classes": result.class_names,
                }
                texts.append(f"{label} val AUC {result.best_val_auc:.3f} (epoch {result.best_epoch})")
            write_csv_atomic(self.path("training_history.csv"), pd.DataFrame(history), index=False)
            return {
                "models": models,
                "text": "; ".join(texts),
                "outputs": [f"models/{label}.pt" for label, _ in trained] + ["training_history.csv"],
                "failures": failures,
            }

        self._run_stage("train", settings, compute)

    def _model_weights(self, model) -> tuple[str | None, bool, str | None]:
        """(weights path, pretrained flag, weights hash) of a configured backbone."""
        if model.weights is None:
            return None, False, None
        if model.weights == "imagenet":
            return None, True, "imagenet"
        if model.weights == "trained":
            return str(self.trained_checkpoint(model.label or model.name)), False, "trained"
        path = Path(model.weights)
        if not path.is_file():
            raise Rad4XCNNError(f"weights file not found for {model.name}: {path}")
        return str(path), False, file_sha256(path)

    def _deep(self):
        models = [(m, *self._model_weights(m)) for m in self.cfg.models]
        settings = {
            "models": [dict(asdict(m), weights_hash=h) for m, _, _, h in models],
            "deep": {k: v for k, v in asdict(self.cfg.deep).items() if k != "num_workers"},
            "seed": self.cfg.seed,
        }

        def compute() -> dict:
            import pandas as pd

            from Rad4XCNNLogic.features.deep import extract_deep_features

            cohort = self.load_cohort()
            frames, failures, per_model = [], [], {}
            for model, weights, pretrained, _ in models:
                result = extract_deep_features(
                    cohort,
                    model.name,
                    weights,
                    pretrained=pretrained,
                    device=self.cfg.device,
                    batch_size=self.cfg.deep.batch_size,
                    num_workers=self.cfg.deep.num_workers,
                    margin=self.cfg.deep.margin,
                    input_size=self.cfg.deep.input_size,
                    stage=model.stage,
                    cache_dir=self.path("cache"),
                    progress=self.progress,
                    seed=self.cfg.seed,
                    include_normal=not self.cfg.lesion_only,
                )
                label = model.label or model.name
                features = result.features
                if label != model.name:  # the engine names columns by architecture: rename to the label
                    features = features.rename(columns=lambda c, n=model.name, lab=label: lab + c[len(n) :])
                frames.append(features)
                failures += result.failures
                per_model[label] = {
                    "features": int(result.features.shape[1]),
                    "cases": int(result.features.shape[0]),
                    "settings": result.settings,
                }
            features = pd.concat(frames, axis=1, join="inner")
            features.index.name = "case_id"
            write_csv_atomic(self.path("deep_features.csv"), features, float_format="%.9g")
            write_json_atomic(self.path("deep_features.json"), per_model)
            names = ", ".join(f"{n} ({v['features']})" for n, v in per_model.items())
            return {
                "models": per_model,
                "cases": int(features.shape[0]),
                "features": int(features.shape[1]),
                "text": f"{features.shape[0]} cases x {features.shape[1]} deep features: {names}",
                "outputs": ["deep_features.csv", "deep_features.json"],
                "failures": failures,
            }

        self._run_stage("deep", settings, compute)

    def _radiomics(self):
        from Rad4XCNNLogic.features.radiomics import resolve_params

        params = resolve_params(self.cfg.radiomics.params)
        settings = {"params": params.sha256, "lesion_only": self.cfg.lesion_only}

        def compute() -> dict:
            from Rad4XCNNLogic.features.radiomics import extract_radiomics, write_radiomics

            result = extract_radiomics(
                self.load_cohort(),
                params,
                jobs=self.cfg.radiomics.jobs,
                cache_dir=self.path("cache"),
                scheduler=self.cfg.radiomics.scheduler,
                progress=self.progress,
                lesion_only=self.cfg.lesion_only,
            )
            if result.features.empty:
                raise Rad4XCNNError(f"no case gave radiomic features ({len(result.failures)} failed)")
            written = write_radiomics(result, self.path("radiomics.csv"))
            summary = result.summary()
            summary["text"] = (
                f"{summary['extracted']} cases x {summary['features']} features "
                f"({params.name}); {summary['failed']} failed, {summary['cache_hits']} from cache"
            )
            summary["outputs"] = [str(Path(p).relative_to(self.out)) for p in written.values()]
            summary["failures"] = result.failures
            return summary

        self._run_stage("radiomics", settings, compute)

    def _explain(self):
        ec = self.cfg.explain
        settings = {"explain": asdict(ec), "seed": self.cfg.seed}

        def compute() -> dict:
            from Rad4XCNNLogic.explain.correlation import read_feature_table
            from Rad4XCNNLogic.explain.explanation import explain, write_explanation

            deep = read_feature_table(self.path("deep_features.csv"), "deep feature")
            rad = read_feature_table(self.path("radiomics.csv"), "radiomic feature")
            result = explain(
                deep,
                rad,
                ec.thresholds[0],
                fdr=ec.fdr,
                permutations=ec.permutations,
                bootstrap=ec.bootstrap,
                seed=self.cfg.seed,
                progress=self.progress,
            )
            written = write_explanation(result, self.out)
            by_threshold = _threshold_table(result, ec.thresholds)
            write_csv_atomic(self.path("explained_by_threshold.csv"), by_threshold, index=False)
            outputs = [str(Path(p).relative_to(self.out)) for p in written.values()]
            outputs.append("explained_by_threshold.csv")
            outputs += self._replicability(deep, rad, result.threshold)
            s = result.summary()
            frac = s["fraction_explained"]
            return {
                "threshold": result.threshold,
                "fdr": ec.fdr,
                "n_cases": s["n_cases"],
                "n_pairs_kept": s["n_pairs_kept"],
                "n_explained": s["n_explained"],
                "fraction_explained": frac,
                "permutation_threshold": s["permutation_threshold"],
                "suggested_M": s["suggested_M"],
                "text": (
                    f"M={result.threshold:g}: {s['n_explained']} of {s['n_deep_features']} deep features "
                    f"explained ({0 if frac is None else 100 * frac:.0f}%), {s['n_pairs_kept']} pairs"
                    + (
                        f"; permutation threshold {s['permutation_threshold']:.2f}"
                        if s["permutation_threshold"] is not None
                        else ""
                    )
                ),
                "outputs": outputs,
            }

        self._run_stage("explain", settings, compute)

    def _replicability(self, deep, rad, threshold: float) -> list[str]:
        import pandas as pd

        from Rad4XCNNLogic.explain.explanation import replicate, write_replicability

        cohort = self.load_cohort()
        groups = pd.Series({c.case_id: c.cohort for c in cohort.cases})
        groups = groups[groups.index.isin(deep.index) & groups.index.isin(rad.index)]
        counts = groups.value_counts()
        if (counts >= 10).sum() < 2:
            log.info("replicability: needs two cohorts of at least 10 cases; found %s", counts.to_dict())
            return []
        rep = replicate(deep, rad, groups, threshold, fdr=self.cfg.explain.fdr, progress=self.progress)
        written = write_replicability(rep, self.path("replicability"))
        return [str(Path(p).relative_to(self.out)) for p in written.values()]

    def _classify(self):
        cc = self.cfg.classification
        if not cc.enabled:
            self._skip("classify", "classification.enabled is false")
            return
        settings = {
            "classification": asdict(cc),
            "seed": self.cfg.seed,
            "train_cohort": self.cfg.split.train_cohort,
        }

        def compute() -> dict:
            import pandas as pd

            from Rad4XCNNLogic.classify.classifiers import (
                classify,
                infer_feature_sets,
                read_explained,
                write_classification,
            )
            from Rad4XCNNLogic.explain.correlation import read_feature_table
            from Rad4XCNNLogic.explain.explanation import load_explanation, rank_by_importance

            deep = read_feature_table(self.path("deep_features.csv"), "deep feature")
            rad = read_feature_table(self.path("radiomics.csv"), "radiomic feature")
            features = deep.join(rad, how="inner")
            explained = read_explained(self.path("explanations.csv"))
            sets = {
                name: cols
                for name, cols in infer_feature_sets(features.columns, explained).items()
                if _feature_set_kind(name) in cc.feature_sets
            }
            if not sets:
                raise Rad4XCNNError(f"classification: no feature set left of {cc.feature_sets}")
            cohort = self.load_cohort()
            result = classify(
                features,
                cohort,
                feature_sets=sets,
                classifiers=cc.classifiers,
                positive=cc.positive,
                seed=self.cfg.seed,
                cv_folds=cc.cv_folds,
                n_bootstrap=cc.n_bootstrap,
                train_cohort=self.cfg.split.train_cohort,
                progress=self.progress,
            )
            written = write_classification(result, self.out)
            outputs = [str(Path(p).relative_to(self.out)) for p in written.values()]
            deep_sets = [n for n in sets if _feature_set_kind(n) == "deep"]
            imp = result.importances
            imp = imp[imp["feature_set"].isin(deep_sets)]
            if not imp.empty:
                # One ranking per backbone (importances of different feature sets are not comparable), by
                # permutation importance, or by the models' own where no single feature moves the AUC.
                explanation = load_explanation(self.out)
                parts = []
                for name, part in imp.groupby("feature_set", sort=False):
                    perm = part[part["method"] == "permutation"]
                    method = "permutation" if (perm["importance_mean"] > 0).any() else "model"
                    chosen = part[part["method"] == method]
                    if chosen.empty:
                        continue
                    ranked_set = rank_by_importance(explanation, chosen)
                    parts.append(ranked_set.assign(feature_set=name, importance_method=method))
                if parts:
                    write_csv_atomic(self.path("explanations_by_importance.csv"), pd.concat(parts))
                    outputs.append("explanations_by_importance.csv")
            metrics = result.metrics
            internal = metrics[metrics["evaluated_on"] == "internal-test"]
            best = internal.sort_values("auc", ascending=False).head(1)
            text = f"{len(sets)} feature sets x {len(cc.classifiers)} classifiers"
            if not best.empty:
                row = best.iloc[0]
                text += (
                    f"; best internal-test AUC {row['auc']:.3f} ({row['feature_set']}, {row['classifier']})"
                )
            return {
                "feature_sets": {k: len(v) for k, v in sets.items()},
                "classes": result.classes,
                "counts": result.counts,
                "task_failures": result.task_failures,
                "text": text,
                "outputs": outputs,
                "failures": result.failures,
            }

        self._run_stage("classify", settings, compute)

    def _cam_checkpoint(self) -> tuple[str, Path] | None:
        """(model name, checkpoint) of the backbone whose CAMs are computed: one with a classifier head."""
        for model in self.cfg.models:
            label = model.label or model.name
            if self.cfg.cam.model not in (None, label):
                continue
            if model.weights == "trained":
                return label, self.trained_checkpoint(label)
            if model.weights not in (None, "imagenet") and _is_rad4xcnn_checkpoint(Path(model.weights)):
                return label, Path(model.weights)
        return None

    def _cam(self):
        camc = self.cfg.cam
        chosen = self._cam_checkpoint() if camc.enabled else None
        if chosen is None or not camc.methods:
            self._skip(
                "cam",
                "cam.enabled is false"
                if not camc.enabled
                else "no backbone with a classifier: use weights: trained, or a rad4xcnn checkpoint",
            )
            return
        model_name, checkpoint = chosen
        trained = checkpoint == self.trained_checkpoint(model_name)
        settings = {
            "cam": asdict(camc),
            "model": model_name,
            "seed": self.cfg.seed,
            "checkpoint": "trained" if trained else file_sha256(checkpoint),
        }

        def compute() -> dict:
            import shutil
            import tempfile

            from Rad4XCNNLogic.cam.maps import compute_cams, write_cams

            cohort = self.load_cohort()
            cases = camc.cases or gallery_cases(
                cohort, camc.gallery, self.cfg.seed, self.cfg.split.train_cohort
            )
            # Maps are written into a fresh folder that replaces cam/ only once every map is done, so that a
            # failed run keeps the previous maps and a new gallery leaves no stale ones.
            staging = Path(tempfile.mkdtemp(prefix=".cam-", dir=self.out))
            try:
                result = compute_cams(
                    cohort,
                    checkpoint,
                    methods=camc.methods,
                    cases=cases,
                    device=self.cfg.device,
                    batch_size=camc.batch_size,
                    out_dir=staging,
                    seed=self.cfg.seed,
                    progress=self.progress,
                )
                write_cams(result, staging, maps=False)
                final = self.path("cam")
                if final.exists():
                    shutil.rmtree(final)
                (staging / "cam").rename(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            metrics = result.metrics
            text = f"{metrics['case_id'].nunique()} cases x {len(camc.methods)} methods ({model_name})"
            if "pointing_hit" in metrics and len(metrics):
                rates = metrics.groupby("method", sort=False)["pointing_hit"].mean()
                text += "; pointing game " + ", ".join(f"{m} {v:.2f}" for m, v in rates.items())
            return {
                "model": model_name,
                "cases": cases,
                "methods": camc.methods,
                "text": text,
                "outputs": sorted(str(p.relative_to(self.out)) for p in final.rglob("*") if p.is_file()),
                "failures": result.failures,
            }

        self._run_stage("cam", settings, compute)

    def _report(self):
        settings = {
            "report": asdict(self.cfg.report),
            # what ran and what failed, not computed-or-cached: a fully cached run keeps its report
            "outcomes": {
                n: (r.status if r.status in ("failed", "blocked", "skipped") else "done", r.error)
                for n, r in self.records.items()
                if n != "report"
            },
        }

        def compute() -> dict:
            from Rad4XCNNLogic.run.report import write_report

            self._write_run_json()
            write_report(self.out, self.cfg, self.records, self.collect_failures())
            return {"text": f"{self.path('report.html')}", "outputs": ["report.html"]}

        self._run_stage("report", settings, compute)

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

    def _write_run_json(self) -> None:
        info = {
            "rad4xcnn": __version__,
            "started": self.started,
            "finished": _now(),
            "command": sys.argv,
            "config": self.cfg.to_dict(),
            "versions": package_versions(),
            "device": device_info(self.cfg.device),
            "seeds": {"seed": self.cfg.seed},
            "inputs": getattr(self, "inputs", None),
            "stages": {n: asdict(r) for n, r in self.records.items()},
            "timings_s": {n: round(r.seconds, 3) for n, r in self.records.items()},
            "failures": [f.to_dict() for f in self.collect_failures()],
        }
        write_json_atomic(self.path("run.json"), info)

    def run(self) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = _RunState(self.out)
        handler = logging.FileHandler(self.path("run.log"), encoding="utf-8")
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
            self._cohort()  # without a cohort nothing can run: its errors end the run
            for name, step in (
                ("train", self._train),
                ("deep", self._deep),
                ("radiomics", self._radiomics),
                ("explain", self._explain),
                ("classify", self._classify),
                ("cam", self._cam),
                ("report", self._report),
            ):
                try:
                    step()
                except Exception as exc:  # a bad setting found while preparing the stage (a missing file...)
                    self._fail(name, exc)
        finally:
            self._write_run_json()
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


# ------------------------------------------------------------------------------------------------ helpers
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, Rad4XCNNError) else f"{type(exc).__name__}: {text}"


def _feature_set_kind(name: str) -> str:
    if name.startswith("explained-"):
        return "explained"
    if name.endswith("+radiomic"):
        return "combined"
    if name == "radiomic":
        return "radiomic"
    return "deep"


def _threshold_table(result, thresholds) -> Any:
    import pandas as pd

    from Rad4XCNNLogic.explain.explanation import model_of

    rows = []
    for m in thresholds:
        at = result if m == result.threshold else result.with_threshold(m)
        table = at.explanations
        for model, group in table.groupby(table.index.map(model_of)):
            rows.append(
                {
                    "model": model,
                    "threshold": m,
                    "fdr": at.fdr,
                    "n_deep_features": len(group),
                    "n_explained": int((group["status"] == "explained").sum()),
                    "fraction_explained": float((group["status"] == "explained").mean()),
                    "n_pairs": int(group["n_partners"].sum()),
                }
            )
    return pd.DataFrame(rows)


def gallery_cases(cohort, n: int, seed: int = 0, train_cohort: str = "internal") -> list[str]:
    """``n`` test cases for the CAM gallery: the internal test split first, then the other cohorts, taking
    the classes in turn, chosen reproducibly by ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    test = [c for c in cohort.cases if c.split == "test"] or list(cohort.cases)
    chosen: list[str] = []
    for internal in (True, False):
        pool = sorted((c for c in test if (c.cohort == train_cohort) == internal), key=lambda c: c.case_id)
        by_label: dict[str, list[str]] = {}
        for c in pool:
            by_label.setdefault(c.label or "", []).append(c.case_id)
        queues = {label: [str(i) for i in rng.permutation(ids)] for label, ids in sorted(by_label.items())}
        while len(chosen) < n and any(queues.values()):
            for label in sorted(queues):
                if queues[label] and len(chosen) < n:
                    chosen.append(queues[label].pop(0))
    return chosen


def _is_rad4xcnn_checkpoint(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        from Rad4XCNNLogic.features.backbones import read_weights_file

        _, meta = read_weights_file(path)
    except Exception:  # not a checkpoint we can read: treated as plain weights
        return False
    return meta is not None


def _flatten(written) -> list[Path]:
    if isinstance(written, dict):
        out = []
        for v in written.values():
            out.extend(_flatten(v))
        return out
    if isinstance(written, (list, tuple)):
        return [Path(p) for p in written]
    return [Path(written)]


def demo_config(out: str | os.PathLike, manifest: str | os.PathLike, seed: int = 0) -> RunConfig:
    """The demo's settings: the whole pipeline on the synthetic cohort in a few minutes on a 2-core CPU.

    A ResNet18 is fine-tuned from random initialisation (no download) at 128 px and compared with the same
    architecture left random; the rest follows the paper at a smaller scale.
    """
    from Rad4XCNNLogic.run.config import config_from_dict

    return config_from_dict(
        {
            "manifest": str(manifest),
            "out": str(out),
            "seed": seed,
            "training": {
                "pretrained": False,
                "epochs": 12,
                "batch_size": 16,
                "patience": 5,
                "input_size": 128,
                "learning_rate": 1e-3,
            },
            "models": [
                {"name": "resnet18", "weights": "trained"},
                {"name": "resnet18", "label": "resnet18-random", "weights": None},
            ],
            "deep": {"input_size": 128},
            "explain": {"thresholds": [0.6, 0.7, 0.8], "fdr": 0.05, "permutations": 200, "bootstrap": 100},
            "classification": {"cv_folds": 3, "n_bootstrap": 200},
            "cam": {"methods": ["gradcam", "eigencam", "scorecam"], "gallery": 4, "batch_size": 64},
        }
    )
