"""The work of each stage, once: a function per stage that reads the files it is given and writes its
outputs beside them. ``rad4xcnn run`` calls it on the run folder's files (:mod:`Rad4XCNNLogic.run.stages`);
the stage commands (``rad4xcnn deep``, ``explain``, ``classify``, ...) call it on the files a user names, so
both write the same files in the same places (docs/ARCHITECTURE.md, "One implementation per stage").

Each function returns the stage's summary: counts for ``run.json``, a one-line ``text``, the ``outputs``
written (paths) and the per-case ``failures``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic
from Rad4XCNNLogic.names import RunFiles, control_pairs, feature_set_kind, model_of, relabel_deep_columns
from Rad4XCNNLogic.run.config import CamConfig, ClassificationConfig, DeepConfig, ExplainConfig

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainJob:
    """One backbone to fine-tune: its label (file names), timm name, checkpoint and starting weights (None:
    ``training.pretrained`` says, ImageNet's or a seeded random start)."""

    label: str
    model: str | None
    checkpoint: Path
    weights: str | None = None


def train_stage(
    cohort,
    jobs: Sequence[TrainJob],
    history_csv: Path,
    *,
    training,
    deep: DeepConfig,
    device: str,
    seed: int,
    train_cohort: str | None,
    include_normal: bool = False,
    finetune=None,
    progress: bool = True,
) -> dict:
    """Fine-tune each job's backbone (then, with ``finetune``, a second phase on that cohort); writes each
    checkpoint and ``training_history.csv``."""
    import pandas as pd

    from Rad4XCNNLogic.features.training import train_model

    common = dict(
        device=device,
        margin=deep.margin,
        include_normal=include_normal,
        num_workers=deep.num_workers,
        seed=seed,
        progress=progress,
        planes=deep.planes,
        max_slices=deep.max_slices,
    )
    history, failures, models, texts = [], [], {}, []
    for job in jobs:
        result = train_model(
            cohort,
            job.model,
            training,
            out=job.checkpoint,
            weights=job.weights,
            train_cohort=train_cohort,
            **common,
        )
        history += [dict(h, model=job.label, phase="train") for h in result.history]
        failures += list(result.failures)
        if finetune is not None:
            first_auc = result.best_val_auc
            result = train_model(
                finetune, job.model, training, out=job.checkpoint, weights=job.checkpoint, **common
            )
            history += [dict(h, model=job.label, phase="finetune") for h in result.history]
            failures += list(finetune.failures) + list(result.failures)
            log.info(
                "%s fine-tuned: validation AUC %.3f (first phase %.3f)",
                job.label,
                result.best_val_auc,
                first_auc,
            )
        models[job.label] = {
            "best_val_auc": result.best_val_auc,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "classes": result.class_names,
            "settings": result.settings,
        }
        texts.append(f"{job.label} val AUC {result.best_val_auc:.3f} (epoch {result.best_epoch})")
    write_csv_atomic(history_csv, pd.DataFrame(history), index=False)
    return {
        "models": models,
        "text": "; ".join(texts),
        "outputs": [job.checkpoint for job in jobs] + [history_csv],
        "failures": failures,
    }


# ----------------------------------------------------------------------------------------- deep features
@dataclass(frozen=True)
class DeepJob:
    """One backbone whose deep features are extracted: label (column prefix; None: the architecture), timm
    name (None: the checkpoint's), weights file, ImageNet weights, pooled stage, or pooled layers."""

    label: str | None
    model: str | None
    weights: str | None = None
    pretrained: bool = False
    stage: int | None = None
    layers: tuple[str, ...] | None = None


def deep_stage(
    cohort,
    jobs: Sequence[DeepJob],
    out_csv: Path,
    *,
    deep: DeepConfig,
    device: str,
    seed: int,
    cache_dir: Path | None,
    include_normal: bool = False,
    progress: bool = True,
) -> dict:
    """Deep features of every backbone, joined on the cases all of them have; writes ``out_csv`` and its
    settings beside it (``deep_features.json``)."""
    import pandas as pd

    from Rad4XCNNLogic.features.deep import extract_deep_features

    frames, failures, per_model = [], [], {}
    for job in jobs:
        result = extract_deep_features(
            cohort,
            job.model,
            job.weights,
            pretrained=job.pretrained,
            device=device,
            batch_size=deep.batch_size,
            num_workers=deep.num_workers,
            margin=deep.margin,
            input_size=deep.input_size,
            stage=job.stage,
            layers=job.layers,
            dtype=deep.dtype,
            cache_dir=cache_dir,
            progress=progress,
            seed=seed,
            include_normal=include_normal,
            planes=deep.planes,
            max_slices=deep.max_slices,
        )
        features = result.features
        architecture = result.settings["model"]
        label = job.label or architecture
        if label != architecture:  # the engine names columns by architecture: rename to the label
            features = features.set_axis(relabel_deep_columns(features.columns, architecture, label), axis=1)
        frames.append(features)
        failures += result.failures
        per_model[label] = {
            "features": int(features.shape[1]),
            "cases": int(features.shape[0]),
            "cache_hits": result.cache_hits,
            "computed": result.computed,
            "settings": result.settings,
        }
    features = pd.concat(frames, axis=1, join="inner")
    features.index.name = "case_id"
    out_csv = Path(out_csv)
    side = out_csv.with_name(RunFiles.side_file(out_csv.name, ".json"))
    write_csv_atomic(out_csv, features, float_format="%.9g")
    write_json_atomic(side, per_model)
    names = ", ".join(f"{n} ({v['features']})" for n, v in per_model.items())
    return {
        "models": per_model,
        "cases": int(features.shape[0]),
        "features": int(features.shape[1]),
        "text": f"{features.shape[0]} cases x {features.shape[1]} deep features: {names}",
        "outputs": [out_csv, side],
        "failures": failures,
    }


# --------------------------------------------------------------------------------------------- radiomics
def radiomics_stage(
    cohort,
    out_csv: Path,
    *,
    radiomics,
    cache_dir: Path | None,
    lesion_only: bool = True,
    progress: bool = True,
) -> dict:
    """PyRadiomics features of every lesion case; writes ``out_csv`` and its side files (diagnostics,
    failures, quality, settings). Fails when no case gives features."""
    from Rad4XCNNLogic.features.radiomics import extract_radiomics
    from Rad4XCNNLogic.features.radiomics_params import resolve_params, with_resampling
    from Rad4XCNNLogic.features.radiomics_result import write_radiomics

    params = with_resampling(resolve_params(radiomics.params), radiomics.resample_spacing)
    result = extract_radiomics(
        cohort,
        params,
        jobs=radiomics.jobs,
        cache_dir=cache_dir,
        scheduler=radiomics.scheduler,
        progress=progress,
        lesion_only=lesion_only,
    )
    written = write_radiomics(result, out_csv, extra_failures=getattr(cohort, "failures", ()))
    if result.features.empty:
        raise Rad4XCNNError(
            f"no case gave radiomic features ({len(result.failures)} failed); the reasons are in "
            f"{written['failures']}"
        )
    summary = result.summary()
    summary.update(
        nonfinite=list(result.nonfinite),
        constant=list(result.constant),
        text=(
            f"{summary['extracted']} cases x {summary['features']} features ({result.settings['params']}); "
            f"{summary['failed']} failed, {summary['cache_hits']} from cache"
        ),
        outputs=list(written.values()),
        failures=result.failures,
        paths={role: str(path) for role, path in written.items()},
    )
    return summary


# ------------------------------------------------------------------------------------------- explanation
TEST_CASES_WARNING = (
    "explain.cases all: the test cases are among the cases explained, so their labels (through the strata) "
    "and their features shape which deep features count as explained, and the classifiers' explained set is "
    "then measured on them; use explain.cases train for a held-out claim"
)


def explain_stage(
    deep_csv: Path,
    radiomics_csv: Path,
    out_dir: Path,
    *,
    explain: ExplainConfig,
    seed: int,
    cohort=None,
    manifest=None,
    train_cohort: str = "internal",
    controls: dict[str, str] | None = None,
    importances: Any = None,
    progress: bool = True,
) -> dict:
    """Correlate deep with radiomic features and explain each deep feature at every M of ``explain``.

    Writes the explanation (``correlations.csv``, ``explanations.csv``, ``coverage.csv``, the matrices,
    ``explanation.json``), ``explained_by_threshold.csv``, ``replicability/`` when ``cohort`` holds two
    cohorts of at least 10 cases, and ``explanations_by_importance.csv`` when ``importances`` (the
    classification stage's table) is given.

    With ``manifest`` (a cohort: its label, cohort, split and any other column), the explanation holds
    within the strata of ``explain.stratify`` (confounded pairs flagged), and with ``explain.cases`` train
    it comes from the train and val cases of ``train_cohort`` only: its kept pairs are then re-measured on
    the internal test split and every other cohort (``heldout.csv``, ``heldout_pairs.csv``). Each backbone
    beside its random-weights control gives ``control_coverage.csv``: ``controls`` (backbone -> control, as
    a run's configuration pairs them; ``{}``: none), or None: the controls named by the control label."""
    from Rad4XCNNLogic.explain.correlation import read_feature_table
    from Rad4XCNNLogic.explain.explanation import explain as explain_features
    from Rad4XCNNLogic.explain.explanation import write_explanation
    from Rad4XCNNLogic.explain.heldout import remeasure, split_cases

    out_dir = Path(out_dir)
    deep = read_feature_table(deep_csv, "deep feature")
    rad = read_feature_table(radiomics_csv, "radiomic feature")
    frame = manifest.frame() if manifest is not None else None
    # Without a manifest there are neither strata nor splits: the paper's pooled rule on every case (the
    # explain command says so).
    held_sets = None
    used_deep, used_rad = deep, rad
    if frame is not None and explain.cases == "train":
        training, held_sets = split_cases(frame, train_cohort)
        used_deep, used_rad = deep[deep.index.isin(training)], rad[rad.index.isin(training)]
        held_sets = held_sets[held_sets.index.isin(deep.index) & held_sets.index.isin(rad.index)]
    test_cases_warning = TEST_CASES_WARNING if frame is not None and explain.cases == "all" else None
    strata, held_strata, held_sets = _strata_of_cases_used(frame, explain, used_deep, used_rad, held_sets)
    result = explain_features(used_deep, used_rad, explain, strata=strata, seed=seed, progress=progress)
    result.settings["cases"] = explain.cases if frame is not None else "all"
    result.settings["test_cases_explained"] = test_cases_warning is not None
    if test_cases_warning:  # said once the explanation exists, not before an error that stops it
        log.warning("%s", test_cases_warning)
    outputs = list(write_explanation(result, out_dir).values())
    outputs.append(
        write_csv_atomic(
            out_dir / RunFiles.EXPLAINED_BY_THRESHOLD,
            threshold_table(result, explain.thresholds),
            index=False,
        )
    )
    held = None
    if held_sets is not None and len(held_sets):
        held = remeasure(
            result,
            deep,
            rad,
            held_sets,
            strata=held_strata,
            backend=explain.backend,
            min_stratum=explain.min_stratum,
        )
        outputs += list(held.write(out_dir).values())
    control_table, verdicts = _control_comparison(
        result, used_deep, used_rad, strata, controls, explain, seed
    )
    if control_table is not None:
        outputs.append(write_csv_atomic(out_dir / RunFiles.CONTROL_COVERAGE, control_table, index=False))
    if verdicts or test_cases_warning:  # the claims made after the explanation was written
        summary_path = out_dir / "explanation.json"
        stored = json.loads(summary_path.read_text(encoding="utf-8"))
        stored.update(control_verdicts=verdicts, test_cases_warning=test_cases_warning)
        write_json_atomic(summary_path, stored)
    replicability = None
    if cohort is not None:
        replicability = _replicability(deep, rad, cohort, result.threshold, explain, out_dir, progress)
        if replicability is not None:
            outputs += replicability[1]
    if importances is not None:
        outputs += write_by_importance(result, importances, out_dir)
    s = result.summary()
    text = _explain_text(result, s, held, verdicts)
    return {
        "threshold": result.threshold,
        "fdr": explain.fdr,
        **{k: s[k] for k in ("n_cases", "n_pairs_kept", "n_explained", "fraction_explained", "rule")},
        "cases": result.settings["cases"],
        "n_confounded": s.get("n_confounded"),
        "n_attenuated": s.get("n_attenuated"),
        "n_reversed": s.get("n_reversed"),
        "n_explained_fwer": s["n_explained_fwer"],
        "n_explained_pooled": s.get("n_explained_pooled"),
        "control_verdicts": verdicts,
        "test_cases_warning": test_cases_warning,
        "permutation_threshold": s["permutation_threshold"],
        "suggested_M": s["suggested_M"],
        "suggested_M_by_model": s["suggested_M_by_model"],
        "heldout": None if held is None else held.summary.to_dict(orient="records"),
        "text": text,
        "outputs": outputs,
        "result": result,
        "replicability": None if replicability is None else replicability[0],
        "control_coverage": control_table,
    }


def _explain_text(result, s: dict, held, verdicts: list[dict]) -> str:
    """The explain stage's one-paragraph summary."""
    frac = s["fraction_explained"]
    where = "within " + ",".join(s["strata"]["columns"]) if "strata" in s else "pooled"
    text = (
        f"M={result.threshold:g}: {s['n_explained']} of {s['n_deep_features']} deep features explained "
        f"({0 if frac is None else 100 * frac:.0f}%) {where}, {s['n_pairs_kept']} pairs"
    )
    if "n_confounded" in s:
        text += (
            f"; {s['n_confounded']} confounded, {s['n_attenuated']} attenuated, {s['n_reversed']} reversed "
            f"(pooled rule alone: {s['n_explained_pooled']} explained)"
        )
    if s["n_explained_fwer"] is not None:
        text += f"; {s['n_explained_fwer']} explained above the permutation threshold (feature-level FWER)"
    for verdict in verdicts:
        text += f"; {verdict['text']}"
    if held is not None:
        text += "; held out: " + ", ".join(
            f"{r.set} {r.n_replicated}/{r.n_measured} replicated" for r in held.summary.itertuples()
        )
    if s["permutation_threshold"] is not None:
        text += f"; permutation threshold {s['permutation_threshold']:.2f}"
    return text


def _strata_of_cases_used(frame, explain: ExplainConfig, deep, rad, held_sets):
    """(strata of the cases explained, strata of the held-out cases, the held-out sets left with a stratum).

    Only the cases used are read: a blank label on a case never used (an external case without features)
    does not stop the explanation; a held-out case without one is left out of the re-measurement."""
    from Rad4XCNNLogic.explain.strata import stratum_labels

    if frame is None or not explain.stratify:
        return None, None, held_sets
    strata = stratum_labels(frame, explain.stratify, cases=deep.index.intersection(rad.index))
    held_strata = None
    if held_sets is not None and len(held_sets):
        held_strata = stratum_labels(frame, explain.stratify, cases=held_sets.index, skip_blank=True)
        held_sets = held_sets[held_sets.index.isin(held_strata.index)]
    return strata, held_strata, held_sets


def _control_comparison(result, deep, rad, strata, controls, explain: ExplainConfig, seed: int):
    """(control_coverage table with the gain's bootstrap interval, verdicts at the primary M), or (None, [])
    when no backbone has its random-weights control here."""
    import numpy as np
    import pandas as pd

    from Rad4XCNNLogic.explain.claims import control_gain_bootstrap, control_verdicts
    from Rad4XCNNLogic.explain.explanation import coverage_curve
    from Rad4XCNNLogic.explain.heldout import coverage_against_control

    pairs = control_pairs(sorted(set(result.coverage["model"])), controls)
    if not pairs:
        return None, []
    coverage = result.coverage
    if not np.isclose(coverage["M"].astype(float), result.threshold).any():  # the verdict's M, off the grid
        stat, q = (result.correlation.rho, result.correlation.q)
        if result.within is not None:
            stat, q = result.within.rho, result.within.q
        extra = coverage_curve(
            stat, [result.threshold], deep_features=result.correlation.deep_features, q=q, fdr=result.fdr
        )
        coverage = pd.concat([coverage, extra]).sort_values(["model", "M"], kind="stable")
    table = coverage_against_control(coverage, pairs)
    if not explain.control_bootstrap:
        return table, []
    intervals = control_gain_bootstrap(
        result,
        deep,
        rad,
        pairs,
        sorted(set(table["M"])),
        n_boot=explain.control_bootstrap,
        strata=strata,
        seed=seed,
        estimates=table,
    )
    table = table.merge(intervals, on=["model", "control", "M"], how="left")
    verdicts = control_verdicts(table, result.threshold)
    for verdict in verdicts:
        (log.info if verdict["specific"] else log.warning)("control: %s", verdict["text"])
    return table, verdicts


def _replicability(
    deep, rad, cohort, threshold: float, explain: ExplainConfig, out_dir: Path, progress: bool
):
    """(result, written paths) of the explanation's replicability between cohorts, or None when fewer than
    two cohorts have 10 cases."""
    import pandas as pd

    from Rad4XCNNLogic.explain.explanation import replicate, write_replicability

    groups = pd.Series({c.case_id: c.cohort for c in cohort.cases}, dtype=object)
    groups = groups[groups.index.isin(deep.index) & groups.index.isin(rad.index)]
    counts = groups.value_counts()
    if (counts >= 10).sum() < 2:
        log.info("replicability: needs two cohorts of at least 10 cases; found %s", counts.to_dict())
        return None
    rep = replicate(deep, rad, groups, threshold, fdr=explain.fdr, backend=explain.backend, progress=progress)
    written = write_replicability(rep, out_dir / RunFiles.REPLICABILITY)
    return rep, list(written.values())


def threshold_table(result, thresholds: Sequence[float]):
    """Per backbone and M: deep features (varying, constant, left out), how many are explained (the fraction
    over the varying ones, as in ``coverage.csv``), the pairs kept and, with strata, how many deep features
    are reversed, confounded and attenuated."""
    import pandas as pd

    rows = []
    for m in thresholds:
        at = result if m == result.threshold else result.with_threshold(m)
        table = at.explanations
        for model, group in table.groupby(table.index.map(model_of)):
            # One denominator, as in coverage.csv: the deep features that vary; the constant ones (and
            # those left out for missing values) are counted apart.
            constant = int((group["status"] == "zero variance").sum())
            left_out = int((group["status"] == "left out").sum())
            varying = len(group) - constant - left_out
            explained = int((group["status"] == "explained").sum())
            rows.append(
                {
                    "model": model,
                    "threshold": m,
                    "fdr": at.fdr,
                    "n_deep_features": len(group),
                    "n_constant": constant,
                    "n_left_out": left_out,
                    "n_varying": varying,
                    "n_explained": explained,
                    "fraction_explained": explained / varying if varying else float("nan"),
                    "n_pairs": int(group["n_partners"].sum()),
                    **(
                        {
                            f"n_{k}": int((group["status"] == k).sum())
                            for k in ("reversed", "confounded", "attenuated")
                        }
                        if at.within is not None
                        else {}
                    ),
                }
            )
    return pd.DataFrame(rows)


def write_by_importance(explanation, importances, out_dir: Path) -> list[Path]:
    """Write ``explanations_by_importance.csv`` (see :func:`rank_by_backbone`) into ``out_dir``: the one
    writer of that table, for the explain stage given importances and for the classify stage of a run.
    Returns the path written, or nothing when no deep feature set has importances."""
    ranked = rank_by_backbone(explanation, importances)
    if ranked is None:
        return []
    return [write_csv_atomic(Path(out_dir) / RunFiles.BY_IMPORTANCE, ranked)]


def rank_by_backbone(explanation, importances):
    """The explained deep features ranked by the classifiers' importances, one ranking per backbone (deep
    feature set): importances of different feature sets are not comparable. Permutation importances are
    used, or the models' own where no single feature moves the AUC. None when no deep set has any."""
    import pandas as pd

    from Rad4XCNNLogic.explain.explanation import rank_by_importance

    imp = importances[importances["feature_set"].map(feature_set_kind) == "deep"]
    parts = []
    for name, part in imp.groupby("feature_set", sort=False):
        perm = part[part["method"] == "permutation"]
        method = "permutation" if (perm["importance_mean"] > 0).any() else "model"
        chosen = part[part["method"] == method]
        if not chosen.empty:
            ranked = rank_by_importance(explanation, chosen)
            parts.append(ranked.assign(feature_set=name, importance_method=method))
    return pd.concat(parts) if parts else None


# ---------------------------------------------------------------------------------------- classification
def classify_stage(
    features,
    cohort,
    out_dir: Path,
    *,
    classification: ClassificationConfig,
    seed: int,
    train_cohort: str | None,
    explained=None,
    feature_failures: Sequence = (),
    progress: bool = True,
    evaluate_on: Sequence[str] | None = None,
) -> dict:
    """Train and validate every classifier on the feature sets of ``classification.feature_sets`` (kinds),
    and every set of other named features (a table of clinical variables, another tool's features);
    writes ``classification.csv``, ``roc.csv``, ``importances.csv``, ``predictions.csv``,
    ``comparisons.csv`` and ``classification.json``. ``evaluate_on``: the external cohorts (default
    ``classification.evaluate_on``, or every other cohort)."""
    from Rad4XCNNLogic.classify.classifiers import classify, resolve_feature_sets, write_classification
    from Rad4XCNNLogic.classify.comparisons import select_by_cv

    sets = {
        name: cols
        for name, cols in resolve_feature_sets(features, None, explained).items()
        if feature_set_kind(name) in classification.feature_sets or feature_set_kind(name) == "other"
    }
    if not sets:
        raise Rad4XCNNError(
            f"classification: no feature set of the kinds {', '.join(classification.feature_sets)} in the "
            "feature tables"
        )
    if evaluate_on is not None:  # the protocol's cohorts, resolved by the caller
        classification = dataclasses.replace(classification, evaluate_on=list(evaluate_on))
    result = classify(
        features,
        cohort,
        classification,
        feature_sets=sets,
        feature_failures=feature_failures,
        seed=seed,
        train_cohort=train_cohort,
        progress=progress,
    )
    written = write_classification(result, out_dir)
    started = time.perf_counter()
    written.update(_repeated_splits(features, cohort, result, out_dir, classification, seed))
    text = f"{len(sets)} feature sets x {len(classification.classifiers)} classifiers"
    if "repeated_splits" in written:
        text += f" (+ repeated splits, {time.perf_counter() - started:.1f} s)"
    # the best model is chosen by its cross-validated AUC on the training data, never by a test AUC
    chosen = select_by_cv(result.metrics).sort_values("cv_auc", ascending=False, kind="stable").head(1)
    if not chosen.empty:
        row = chosen.iloc[0]
        tested = result.metrics[
            (result.metrics["feature_set"] == row["feature_set"])
            & (result.metrics["classifier"] == row["classifier"])
        ]
        text += (
            f"; best by CV AUC {row['cv_auc']:.3f}: {row['feature_set']}, {row['classifier']} ("
            + ", ".join(f"{r.evaluated_on} AUC {r.auc:.3f}" for r in tested.itertuples())
            + ")"
        )
    return {
        "feature_sets": {k: len(v) for k, v in sets.items()},
        "classes": result.classes,
        "counts": result.counts,
        "task_failures": result.task_failures,
        "text": text,
        "outputs": list(written.values()),
        "failures": result.failures,
        "result": result,
    }


def _repeated_splits(
    features, cohort, result, out_dir: Path, classification: ClassificationConfig, seed: int
) -> dict:
    """``repeated_splits.csv`` (split luck and leakage: :mod:`Rad4XCNNLogic.classify.repeated`)."""
    from Rad4XCNNLogic.classify.repeated import repeated_splits

    repeats = classification.repeated_splits
    if repeats <= 0:
        return {}
    table = repeated_splits(features, cohort, result, repeats=repeats, seed=seed, jobs=classification.jobs)
    return {"repeated_splits": write_csv_atomic(Path(out_dir) / RunFiles.REPEATED_SPLITS, table, index=False)}


# ------------------------------------------------------------------------------------------------- CAMs
def cam_stage(
    cohort,
    checkpoint,
    out_dir: Path,
    *,
    cam: CamConfig,
    device: str,
    seed: int,
    cases: Sequence[str] | None = None,
    model: str | None = None,
    progress: bool = True,
    deep: DeepConfig | None = None,
) -> dict:
    """Saliency maps of ``cases`` (default: every case) with each method of ``cam``, and their metrics,
    into ``<out_dir>/cam/`` (for volumes, map volumes from the slices ``deep`` chooses). The maps go to a
    fresh folder that replaces ``cam/`` only once every map is done, so that a failed run keeps the
    previous maps and a new gallery leaves no stale ones."""
    from Rad4XCNNLogic.cam.volumes import compute_maps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cam-", dir=out_dir))
    final = out_dir / RunFiles.CAM
    try:
        # compute_cams writes each case's maps as it goes and the tables at the end: once.
        result = compute_maps(
            cohort,
            checkpoint,
            cam,
            deep=deep,
            model=model,
            cases=cases,
            device=device,
            out_dir=staging,
            seed=seed,
            progress=progress,
        )
        if final.exists():
            shutil.rmtree(final)
        (staging / RunFiles.CAM).rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    metrics = result.metrics
    s = result.settings
    n_cases = metrics["case_id"].nunique() if len(metrics) else 0
    text = f"{n_cases} cases x {len(cam.methods)} methods ({s['model']})"
    if "pointing_hit" in metrics and len(metrics):
        rates = metrics.groupby("method", sort=False)["pointing_hit"].mean()
        text += "; pointing game " + ", ".join(f"{m} {v:.2f}" for m, v in rates.items())
    flagged = len(result.flagged)
    if flagged:
        text += f"; {flagged} flagged map(s) left out of the agreement"
    return {
        "model": s["model"],
        "cases": list(cases) if cases is not None else sorted(metrics["case_id"].unique().tolist()),
        "methods": list(cam.methods),
        "text": text,
        "outputs": sorted(p for p in final.rglob("*") if p.is_file()),
        "failures": result.failures,
        "result": result,
    }
