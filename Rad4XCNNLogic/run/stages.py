"""The stages of a run, as records in one list: name, version, the stages it reads from, and how it is
planned (its settings, the fingerprint of what it reads, and its work). Adding a stage is one entry in
:data:`STAGES` and one plan function; the work itself is in :mod:`Rad4XCNNLogic.run.work`, shared with the
stage commands (docs/ARCHITECTURE.md, "Stages").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.features.settings import IMAGENET, TRAINED
from Rad4XCNNLogic.infra.storage import file_sha256, write_csv_atomic
from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run import work

if TYPE_CHECKING:  # pragma: no cover - typing only
    from Rad4XCNNLogic.run.runner import Pipeline


class Skip(Exception):
    """The configuration leaves this stage out; the message says why."""


@dataclass
class Plan:
    """A stage ready to run: the settings its fingerprint covers, and its work (which returns the summary
    with ``outputs`` and ``failures``). ``started`` counts work done while planning (reading, hashing)."""

    settings: dict
    compute: Callable[[], dict]
    started: float | None = None
    #: keys of the summary that only the caller in this process reads (result objects for a stage command's
    #: terminal summary): ``rad4xcnn run`` leaves them out of ``run.json``
    private: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One stage of a run."""

    name: str
    #: bumped when the stage's outputs change for the same inputs, so that old run folders recompute it
    version: int
    depends: tuple[str, ...]
    plan: Callable[[Pipeline], Plan]
    #: runs even when a stage it reads from failed (the report shows the failures)
    always: bool = False
    #: the run-folder files it reads (names of :class:`~Rad4XCNNLogic.names.RunFiles`), each written by a
    #: stage of ``depends``
    reads: tuple[str, ...] = ()
    #: the run-folder files it always writes (some stages add optional ones, e.g. ``heldout.csv``)
    writes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------- cohort
def run_protocol(cfg):
    """The run's validation protocol (:class:`~Rad4XCNNLogic.cohort.protocol.Protocol`): the network's
    training phases (``training.phases``; one phase on ``split.train_cohort`` when a model is trained and
    none are given), the classifiers' cohort (``split.train_cohort``) and ``classification.evaluate_on``."""
    from Rad4XCNNLogic.cohort.protocol import Protocol, TrainingPhase

    phases = tuple(TrainingPhase(name) for name in cfg.training.phases)
    if not phases and any(m.weights_kind == TRAINED for m in cfg.models):
        phases = (TrainingPhase(cfg.split.train_cohort),)
    evaluate_on = cfg.classification.evaluate_on
    return Protocol(phases, cfg.split.train_cohort, None if evaluate_on is None else tuple(evaluate_on))


def read_run_manifest(cfg, path: str | os.PathLike, **checks):
    """``path`` read as a run's cohort stage reads its manifest: cases without a split get the seeded,
    stratified split of the run's protocol (``split.fractions``, ``seed``, the cohorts that are split), so a
    stage command given the run's manifest works on the run's cases. ``checks``: ``read_manifest``'s
    ``check_files``, ``check_images``, ``require_images``. Near-duplicate images and patients are split as
    groups (:mod:`Rad4XCNNLogic.cohort.grouping`; a run's ``cohort.csv`` carries them as ``split_group``)."""
    return read_run_grouping(cfg, path, **checks).cohort


def read_run_grouping(cfg, path: str | os.PathLike, **checks):
    """:func:`read_run_manifest` with the near-duplicate pairs and label conflicts found on the way."""
    from Rad4XCNNLogic.cohort.grouping import read_grouped

    return read_grouped(
        path, cfg.split, seed=cfg.seed, train_cohort=run_protocol(cfg).split_cohorts(), **checks
    )


def plan_cohort(run: Pipeline) -> Plan:
    from Rad4XCNNLogic.cohort.manifest import read_manifest, write_manifest
    from Rad4XCNNLogic.cohort.protocol import check_no_leakage

    started = time.perf_counter()
    cfg = run.cfg
    manifest = Path(cfg.manifest)
    protocol = run_protocol(cfg)
    grouping = read_run_grouping(cfg, manifest, check_images=True)
    cohort = grouping.cohort
    if not cohort.cases:
        raise Rad4XCNNError(f"manifest {manifest.name}: no usable case ({len(cohort.failures)} left out)")
    protocol.check_cohorts(cohort.cohorts)
    if any(m.weights_kind == TRAINED for m in cfg.models):
        # a case that trained the network and is scored as held out stops the run here, before any work
        extra = []
        if cfg.training.finetune_manifest:
            second = read_manifest(cfg.training.finetune_manifest, seed=cfg.seed)
            extra = [c for c in second.cases if c.split in ("train", "val")]
        check_no_leakage(protocol, cohort, extra_trained=extra)
    inputs = {
        "manifest": file_sha256(manifest),
        "cases": {
            c.case_id: {"image": file_sha256(c.image), "masks": [file_sha256(m) for m in c.masks]}
            for c in cohort.cases
        },
    }
    run.inputs = inputs
    settings = {
        "inputs": inputs,
        "seed": cfg.seed,
        "split": asdict(cfg.split),
        "split_cohorts": protocol.split_cohorts(),
        "lesion_only": cfg.lesion_only,
    }

    def compute() -> dict:
        import pandas as pd

        write_manifest(cohort, run.path(RunFiles.COHORT))
        frame = pd.DataFrame([f.to_dict() for f in cohort.failures], columns=["case_id", "stage", "problem"])
        write_csv_atomic(run.path(RunFiles.COHORT_FAILURES), frame, index=False)
        from Rad4XCNNLogic.cohort.grouping import grouping_summary

        summary = cohort.summary()
        summary["text"] = (
            f"{summary['cases']} cases ({summary['with_lesion']} with a lesion), "
            f"{summary['failures']} left out"
        )
        # near-duplicates: split groups, label conflicts, duplicates.csv; kept in run.json
        found = grouping_summary(grouping, run.path(RunFiles.DUPLICATES))
        summary["text"] += "; " + found.pop("text")
        summary.update(found)
        summary["outputs"] = [
            run.path(RunFiles.COHORT),
            run.path(RunFiles.COHORT_FAILURES),
            run.path(RunFiles.DUPLICATES),
        ]
        summary["failures"] = cohort.failures
        return summary

    return Plan(settings, compute, started)


# --------------------------------------------------------------------------------------------- training
def plan_train(run: Pipeline) -> Plan:
    cfg = run.cfg
    tc = cfg.training
    trained = [m for m in cfg.models if m.weights_kind == TRAINED]
    if not trained:
        raise Skip("no model has weights: trained")
    settings = {
        "training": asdict(tc),
        "models": [(m.key, m.name) for m in trained],
        "deep": {"margin": cfg.deep.margin},
        "seed": cfg.seed,
        "train_cohort": cfg.split.train_cohort,
        "phases": list(tc.phases),
        "finetune": file_sha256(tc.finetune_manifest) if tc.finetune_manifest else None,
    }
    if len(tc.phases) > 2:
        raise Rad4XCNNError(f"training.phases: at most two phases are supported, got {len(tc.phases)}")
    if tc.phases and tc.finetune_manifest:
        raise Rad4XCNNError("training: give either phases or finetune_manifest, not both")
    first_cohort = tc.phases[0] if tc.phases else cfg.split.train_cohort

    def compute() -> dict:
        from Rad4XCNNLogic.cohort.manifest import read_manifest

        finetune = None
        if tc.finetune_manifest:
            finetune = read_manifest(tc.finetune_manifest, seed=cfg.seed)
            finetune = finetune.lesion_cases() if cfg.lesion_only else finetune
        elif len(tc.phases) == 2:
            # the second phase: the same manifest, that cohort's train split (val early-stops)
            finetune = run.load_cohort().subset(cohort=tc.phases[1])
        start = run.start_weights  # a file a backbone starts from (train --weights), else pretrained or not
        jobs = [
            work.TrainJob(
                m.key,
                m.name,
                run.path(RunFiles.checkpoint(m.key)),
                weights=start.get(m.key),
            )
            for m in trained
        ]
        return work.train_stage(
            run.load_cohort(),
            jobs,
            run.path(RunFiles.TRAINING_HISTORY),
            training=tc,
            deep=cfg.deep,
            device=cfg.device,
            seed=cfg.seed,
            train_cohort=first_cohort,
            include_normal=not cfg.lesion_only,
            finetune=finetune,
            progress=run.progress,
        )

    return Plan(settings, compute)


# ---------------------------------------------------------------------------------------- deep features
def _deep_job(run: Pipeline, model) -> tuple[work.DeepJob, str | None]:
    """The extraction job of a configured backbone, and what identifies its weights (for the fingerprint)."""
    where = {"stage": model.stage, "layers": tuple(model.layers) or None}
    if model.weights_kind == "random":
        return work.DeepJob(model.key, model.name, **where), None
    if model.weights_kind == IMAGENET:
        return work.DeepJob(model.key, model.name, pretrained=True, **where), IMAGENET
    if model.weights_kind == TRAINED:
        checkpoint = str(run.path(RunFiles.checkpoint(model.key)))
        return work.DeepJob(model.key, model.name, checkpoint, **where), TRAINED
    path = Path(model.weights)
    if not path.is_file():
        raise Rad4XCNNError(f"weights file not found for {model.name}: {path}")
    return work.DeepJob(model.key, model.name, str(path), **where), file_sha256(path)


def plan_deep(run: Pipeline) -> Plan:
    cfg = run.cfg
    jobs = [(m, *_deep_job(run, m)) for m in cfg.deep_models()]
    settings = {
        "models": [dict(asdict(m), weights_hash=h) for m, _, h in jobs],
        "deep": {k: v for k, v in asdict(cfg.deep).items() if k != "num_workers"},
        "seed": cfg.seed,
    }

    def compute() -> dict:
        return work.deep_stage(
            run.load_cohort(),
            [job for _, job, _ in jobs],
            run.path(RunFiles.DEEP),
            deep=cfg.deep,
            device=cfg.device,
            seed=cfg.seed,
            cache_dir=run.path(RunFiles.CACHE),
            include_normal=not cfg.lesion_only,
            progress=run.progress,
        )

    return Plan(settings, compute)


# -------------------------------------------------------------------------------------------- radiomics
def plan_radiomics(run: Pipeline) -> Plan:
    from Rad4XCNNLogic.features.radiomics_params import resolve_params, with_resampling

    cfg = run.cfg
    params = with_resampling(resolve_params(cfg.radiomics.params), cfg.radiomics.resample_spacing)
    settings = {"params": params.sha256, "lesion_only": cfg.lesion_only}

    def compute() -> dict:
        summary = work.radiomics_stage(
            run.load_cohort(),
            run.path(RunFiles.RADIOMICS),
            radiomics=cfg.radiomics,
            cache_dir=run.path(RunFiles.CACHE),
            lesion_only=cfg.lesion_only,
            progress=run.progress,
        )
        return summary

    return Plan(settings, compute, private=("nonfinite", "constant", "paths"))


# ------------------------------------------------------------------------------------------- explanation
def plan_explain(run: Pipeline) -> Plan:
    cfg = run.cfg
    settings = {
        "explain": asdict(cfg.explain),
        "seed": cfg.seed,
        "train_cohort": cfg.split.train_cohort,
        "controls": cfg.controls(),
    }

    def compute() -> dict:
        cohort = run.load_cohort()
        summary = work.explain_stage(
            run.path(RunFiles.DEEP),
            run.path(RunFiles.RADIOMICS),
            run.out,
            explain=cfg.explain,
            seed=cfg.seed,
            cohort=run.replication_cohort(cohort),
            manifest=cohort,
            train_cohort=cfg.split.train_cohort,
            controls=run.controls(),
            progress=run.progress,
        )
        return summary

    return Plan(settings, compute, private=("result", "replicability", "control_coverage"))


# ---------------------------------------------------------------------------------------- classification
def plan_classify(run: Pipeline) -> Plan:
    cfg = run.cfg
    cc = cfg.classification
    if not cc.enabled:
        raise Skip("classification.enabled is false")
    protocol = run_protocol(cfg)
    settings = {
        "classification": asdict(cc),
        "seed": cfg.seed,
        "train_cohort": cfg.split.train_cohort,
        "phases": [p.cohort for p in protocol.phases],
    }

    def compute() -> dict:
        from Rad4XCNNLogic.classify.classifiers import read_explained, read_feature_tables
        from Rad4XCNNLogic.explain.explanation import load_explanation

        # a stage command may leave a table out, and add other feature tables (--features)
        tables = [p for p in (run.path(RunFiles.DEEP), run.path(RunFiles.RADIOMICS)) if p is not None]
        features, missing = read_feature_tables([*tables, *run.more_features])
        explanations = run.path(RunFiles.EXPLANATIONS)
        cohort = run.load_cohort()
        summary = work.classify_stage(
            features,
            cohort,
            run.out,
            evaluate_on=protocol.evaluation_cohorts(cohort.cohorts),
            classification=cc,
            seed=cfg.seed,
            train_cohort=cfg.split.train_cohort,
            explained=None if explanations is None else read_explained(explanations),
            feature_failures=missing,
            progress=run.progress,
        )
        # Which explained features the classifiers rely on: written here, where the importances appear.
        importances = summary["result"].importances
        folder = None if explanations is None else explanations.parent
        if folder is not None and (folder / RunFiles.EXPLANATION).is_file():
            summary["outputs"] += work.write_by_importance(load_explanation(folder), importances, run.out)
        return summary

    return Plan(settings, compute, private=("result",))


# ------------------------------------------------------------------------------------------------- CAMs
def _is_rad4xcnn_checkpoint(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        from Rad4XCNNLogic.features.backbones import read_weights_file

        _, meta = read_weights_file(path)
    except Exception:  # not a checkpoint we can read: treated as plain weights
        return False
    return meta is not None


def cam_checkpoint(run: Pipeline) -> tuple[str, Path] | None:
    """(label, checkpoint) of the backbone whose CAMs are computed: one with a classifier head."""
    for model in run.cfg.models:
        if run.cfg.cam.model not in (None, model.key):
            continue
        if model.weights_kind == TRAINED:
            return model.key, run.path(RunFiles.checkpoint(model.key))
        if model.weights_kind == "file" and _is_rad4xcnn_checkpoint(Path(model.weights)):
            return model.key, Path(model.weights)
    return None


def plan_cam(run: Pipeline) -> Plan:
    cfg = run.cfg
    camc = cfg.cam
    if not camc.enabled:
        raise Skip("cam.enabled is false")
    chosen = cam_checkpoint(run)
    if chosen is None or not camc.methods:
        raise Skip("no backbone with a classifier: use weights: trained, or a rad4xcnn checkpoint")
    label, checkpoint = chosen
    trained = checkpoint == run.path(RunFiles.checkpoint(label))
    settings = {
        "cam": asdict(camc),
        # the lesion slices of volumes (2.5D) that are mapped
        "slices": {"planes": cfg.deep.planes, "max_slices": cfg.deep.max_slices},
        "model": label,
        "seed": cfg.seed,
        "checkpoint": "trained" if trained else file_sha256(checkpoint),
    }

    def compute() -> dict:
        cohort = run.load_cohort()
        cases = camc.cases or gallery_cases(cohort, camc.gallery, cfg.seed, cfg.split.train_cohort)
        summary = work.cam_stage(
            cohort,
            checkpoint,
            run.out,
            cam=camc,
            device=cfg.device,
            seed=cfg.seed,
            cases=cases,
            progress=run.progress,
            deep=cfg.deep,
        )
        summary["model"] = label
        return summary

    return Plan(settings, compute, private=("result",))


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


# ----------------------------------------------------------------------------------------------- report
def plan_report(run: Pipeline) -> Plan:
    settings = {
        "report": asdict(run.cfg.report),
        # what ran and what failed, not computed-or-cached: a fully cached run keeps its report
        "outcomes": {
            n: (r.status if r.status in ("failed", "blocked", "skipped") else "done", r.error)
            for n, r in run.records.items()
            if n != "report"
        },
        # 'rad4xcnn probe --out RUN' writes these beside the stages' files: a new one remakes the report
        "probes": {
            name: file_sha256(run.path(name))
            for name in (RunFiles.PROBES, RunFiles.CKA, RunFiles.CONCEPTS)
            if run.path(name).is_file()
        },
    }

    def compute() -> dict:
        from Rad4XCNNLogic.run.report import write_report

        run.write_run_json()
        write_report(run.out, run.cfg, run.records, run.collect_failures())
        return {"text": str(run.path(RunFiles.REPORT)), "outputs": [run.path(RunFiles.REPORT)]}

    return Plan(settings, compute)


F = RunFiles
#: The stages, in the order they run.
STAGES: tuple[Stage, ...] = (
    Stage("cohort", 2, (), plan_cohort, writes=(F.COHORT, F.COHORT_FAILURES, F.DUPLICATES)),
    Stage("train", 1, ("cohort",), plan_train, reads=(F.COHORT,), writes=(F.MODELS, F.TRAINING_HISTORY)),
    Stage("deep", 2, ("cohort", "train"), plan_deep, reads=(F.COHORT, F.MODELS), writes=(F.DEEP,)),
    Stage("radiomics", 1, ("cohort",), plan_radiomics, reads=(F.COHORT,), writes=(F.RADIOMICS,)),
    Stage(
        "explain", 4, ("cohort", "deep", "radiomics"), plan_explain,
        reads=(F.COHORT, F.DEEP, F.RADIOMICS),
        writes=(F.CORRELATIONS, F.EXPLANATIONS, F.EXPLANATION, F.COVERAGE, F.EXPLAINED_BY_THRESHOLD),
    ),
    Stage(
        "classify", 2, ("cohort", "deep", "radiomics", "explain"), plan_classify,
        reads=(F.COHORT, F.DEEP, F.RADIOMICS, F.EXPLANATIONS), writes=(F.CLASSIFICATION, F.IMPORTANCES),
    ),
    Stage("cam", 3, ("cohort", "train"), plan_cam, reads=(F.COHORT, F.MODELS), writes=(F.CAM,)),
    Stage(
        "report", 1, ("cohort", "train", "deep", "radiomics", "explain", "classify", "cam"), plan_report,
        always=True,
        reads=(F.COHORT, F.TRAINING_HISTORY, F.DEEP, F.RADIOMICS, F.EXPLANATIONS, F.CLASSIFICATION, F.CAM),
        writes=(F.REPORT,),
    ),
)  # fmt: skip
BY_NAME = {stage.name: stage for stage in STAGES}
