"""The work of the probe stage (``rad4xcnn probe``): where each radiomic concept lives in the network, by
ridge probes against a control, representation similarity and concept directions. Kept apart from
:mod:`Rad4XCNNLogic.run.work` (the pipeline's stages) for size; the same contract holds: it reads the files
it is given and writes its outputs into the folder it is given.
"""

from __future__ import annotations

import logging
from pathlib import Path

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic
from Rad4XCNNLogic.names import RunFiles
from Rad4XCNNLogic.run.config import ProbeConfig

log = logging.getLogger(__name__)


def probe_stage(
    deep_csv: Path,
    radiomics_csv: Path,
    cohort,
    out_dir: Path,
    *,
    probe: ProbeConfig,
    seed: int,
    train_cohort: str | None = None,
    control_csv: Path | None = None,
    checkpoint: Path | None = None,
    concept_layer: str | None = None,
    target_class: str | None = None,
) -> dict:
    """Where each radiomic concept lives: ridge probes of every radiomic feature from every (backbone, layer)
    against the control network's same layer (``probes.csv``, settings in ``probes.json``), and linear CKA
    with its permutation baseline (``cka.csv``). Training and held-out cases follow ``cohort``'s splits
    (:func:`~Rad4XCNNLogic.explain.probes.probe_cases`).

    With a fine-tuned ``checkpoint``, also the classifier's sensitivity to the most selective concepts of
    ``concept_layer`` (``<model>.<layer>`` of the deep table, the checkpoint's features; default: the last
    layer probed of the first backbone) on the held-out cases (``concepts.csv``)."""
    import numpy as np

    from Rad4XCNNLogic.explain.correlation import read_feature_table
    from Rad4XCNNLogic.explain.probes import (
        PROBE_COLUMNS,
        layer_groups,
        match_controls,
        probe_cases,
        rank_concepts,
        run_probes,
    )
    from Rad4XCNNLogic.explain.similarity import cka_table

    out_dir = Path(out_dir)
    deep = read_feature_table(deep_csv, "deep feature")
    rad = read_feature_table(radiomics_csv, "radiomic feature")
    control = None if control_csv is None else read_feature_table(control_csv, "control deep feature")
    train, held = probe_cases(cohort, train_cohort)
    result = run_probes(
        deep,
        rad,
        train,
        held,
        probe,
        control=control,
        seed=seed,
        groups={c.case_id: c.group for c in cohort.cases},  # near-duplicates and patients share a fold
    )
    # the backbones probed (not the controls inside the deep table) are compared by CKA
    control_table, ctrl_groups, _ = match_controls(deep, control)
    groups = {key: cols for key, cols in layer_groups(deep.columns).items() if key in result.pairs}
    cka = cka_table(
        deep,
        rad,
        groups,
        control=control_table,
        control_pairs=result.pairs,
        control_groups=ctrl_groups,
        permutations=probe.permutations,
        seed=seed,
    )
    probes = result.probes
    chosen = probes["penalty"].value_counts().sort_index()
    edge = probes["penalty"].isin([min(probe.penalties), max(probe.penalties)]).mean()
    settings = dict(
        result.settings,
        penalty_chosen={f"{k:g}": int(v) for k, v in chosen.items()},
        share_at_grid_edge=float(edge),
        cka_permutations=int(probe.permutations),
    )
    outputs = [
        write_csv_atomic(out_dir / RunFiles.PROBES, probes[list(PROBE_COLUMNS)], index=False),
        write_json_atomic(out_dir / RunFiles.PROBES_SETTINGS, settings),
        write_csv_atomic(out_dir / RunFiles.CKA, cka, index=False),
    ]
    # the most selective concept is chosen on the training folds' CV error, then measured held out
    best = rank_concepts(probes).head(1)
    text = f"{probes['radiomic_feature'].nunique()} radiomic features x {len(result.pairs)} layers"
    if not best.empty and np.isfinite(best["selectivity"].iloc[0]):
        row = best.iloc[0]
        text += (
            f"; most selective by CV of {result.settings['searched']} searched: {row['radiomic_feature']} "
            f"in {row['model']}.{row['layer']} (held-out R² {row['r2']:.2f}, control "
            f"{row['r2_control']:.2f}, selectivity {row['selectivity']:+.2f} "
            f"[{row['selectivity_ci_low']:+.2f}, {row['selectivity_ci_high']:+.2f}])"
        )
    concepts = None
    if checkpoint is not None and not _one_input_per_case(cohort, checkpoint):
        log.warning(
            "concept sensitivity left out: the checkpoint's 2D network sees each volume as several slices "
            "(2.5D), and the sensitivity needs one input per case (a native 3D network has one)"
        )
    elif checkpoint is not None:
        from Rad4XCNNLogic.explain.concepts import concept_sensitivity

        model, layer = _concept_layer(list(result.pairs), concept_layer)
        held_ids = set(held)
        concepts = concept_sensitivity(
            result.probes,
            deep,
            rad,
            train,
            [c for c in cohort.cases if c.case_id in held_ids and c.case_id in deep.index],
            checkpoint,
            model=model,
            layer=layer,
            concepts=probe.concepts,
            target_class=target_class,
            random=probe.random_directions,
            seed=seed,
        )
        outputs.append(write_csv_atomic(out_dir / RunFiles.CONCEPTS, concepts, index=False))
    return {
        "concepts": concepts,
        "train_cases": result.settings["train_cases"],
        "heldout_cases": result.settings["heldout_cases"],
        "layers": result.settings["layers"],
        "text": text,
        "outputs": outputs,
        "failures": [],
        "probes": probes,
        "cka": cka,
    }


def _concept_layer(probed: list[tuple[str, str]], wanted: str | None) -> tuple[str, str]:
    """(model, layer) of ``<model>.<layer>`` (or ``<model>`` alone: its pre-logits) among the probed layers;
    None: the last layer probed of the first backbone."""
    from Rad4XCNNLogic.names import FINAL_LAYER

    if wanted is None:
        first = probed[0][0]
        return [key for key in probed if key[0] == first][-1]
    model, _, layer = wanted.partition(".")
    key = (model, layer or FINAL_LAYER)
    if key not in probed:
        known = ", ".join(f"{m}.{lay}" for m, lay in probed)
        raise Rad4XCNNError(f"concept layer {wanted!r} was not probed; the layers probed are {known}")
    return key


def _one_input_per_case(cohort, checkpoint: Path) -> bool:
    """Whether the checkpoint's network sees each case as one input: 2D images, or volumes through a
    native 3D network (not volumes through a 2D network, 2.5D)."""
    from Rad4XCNNLogic.features.backbones import read_weights_file
    from Rad4XCNNLogic.features.volume_nets import is_volume_net

    if not any(case.dims == 3 for case in cohort.cases):
        return True
    meta = read_weights_file(checkpoint)[1] or {}
    return is_volume_net(str(meta.get("model_name")))
